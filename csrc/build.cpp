// Bindings of the side-chain builder (maths: pyslice/build.h; launchers: cpu/build.cpp,
// cuda/build.cu).
#include <cstdint>
#include <string>

#include "bindings.h"
#include "build_ops.h"
#include "pyslice/build.h"

namespace pyslice {
namespace {

constexpr int kOffsets = build::kLevels + 1;

// Every entry of the int64 host view in [0, high).
void check_indices(const Tensor& t, const char* name, int64_t high, const char* what) {
  const auto* data = t.ptr<const int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (data[i] < 0 || data[i] >= high) {
      throw py::value_error(std::string(name) + " must hold " + what + " indices in [0, " +
                            std::to_string(high) + "), got " + std::to_string(data[i]) +
                            " at flat position " + std::to_string(i));
    }
  }
}

struct BuildViews {
  Tensor positions, chi, chi_ref, axis, move_atom, move_chi, out;
};

template <typename T>
void launch(const BuildViews& v, const int64_t* level_start, Device device, int cuda_device,
            void* stream) {
  build::BuildArgs<T> a{};
  a.positions = v.positions.ptr<const T>();
  a.chi = v.chi.ptr<const T>();
  a.chi_ref = v.chi_ref.ptr<const T>();
  a.axis = v.axis.ptr<const int64_t>();
  a.move_atom = v.move_atom.ptr<const int64_t>();
  a.move_chi = v.move_chi.ptr<const int64_t>();
  for (int i = 0; i < kOffsets; ++i) a.level_start[i] = level_start[i];
  a.out = v.out.ptr<T>();
  a.batch = v.chi.shape[0];
  a.n_atoms = v.positions.shape[0];
  a.n_chi = v.chi.shape[1];
  py::gil_scoped_release release;
  if (device == Device::kCPU) {
    build_cpu_launch(a);
    return;
  }
#if defined(PYSLICE_WITH_CUDA)
  build_cuda_launch(a, cuda_device, stream);
#else
  (void)cuda_device, (void)stream;
#endif
}

void build_sidechains(Device device, void* stream, const py::object& positions_obj,
                      const py::object& chi_obj, const py::object& chi_ref_obj,
                      const py::object& axis_obj, const py::object& move_atom_obj,
                      const py::object& move_chi_obj, const py::object& level_start_obj,
                      const py::object& out_obj) {
  Signature sig("build_sidechains", device);
  BuildViews v;
  // The dtype of positions decides; every other float view must match it.
  v.positions = sig.tensor(positions_obj, "positions", {DType::kFloat32, DType::kFloat64}, "N 3");
  const DType dtype = v.positions.dtype;
  v.chi = sig.tensor(chi_obj, "chi", {dtype}, "B C");
  v.chi_ref = sig.tensor(chi_ref_obj, "chi_ref", {dtype}, "C");
  v.axis = sig.tensor(axis_obj, "axis", {DType::kInt64}, "C 2");
  v.move_atom = sig.tensor(move_atom_obj, "move_atom", {DType::kInt64}, "M");
  v.move_chi = sig.tensor(move_chi_obj, "move_chi", {DType::kInt64}, "M");
  static_assert(kOffsets == 5, "the level_start pattern");
  const Tensor level_start =
      sig.tensor(level_start_obj, "level_start", {DType::kInt64}, "5", kHostInput);
  v.out = sig.tensor(out_obj, "out", {dtype}, "B N 3", kOutput);

  const int64_t n_atoms = sig.dim('N');
  const int64_t n_moves = sig.dim('M');
  const auto* offsets = level_start.ptr<const int64_t>();
  bool ok = offsets[0] == 0 && offsets[kOffsets - 1] == n_moves;
  for (int i = 1; i < kOffsets; ++i) ok = ok && offsets[i] >= offsets[i - 1];
  if (!ok) {
    std::string values;
    for (int i = 0; i < kOffsets; ++i) values += (i ? ", " : "") + std::to_string(offsets[i]);
    throw py::value_error("level_start must be non-decreasing offsets from 0 to the number of "
                          "moves (" + std::to_string(n_moves) + "), got [" + values + "]");
  }
  // Host tables are checked entry by entry; device tables cannot be read from here, and the
  // kernel skips a move with a bad index instead (build::apply_move).
  if (device == Device::kCPU) {
    check_indices(v.axis, "axis", n_atoms, "atom");
    check_indices(v.move_atom, "move_atom", n_atoms, "atom");
    check_indices(v.move_chi, "move_chi", sig.dim('C'), "chi");
  }
  if (sig.dim('B') == 0 || n_atoms == 0) return;
  const int cuda_device = device == Device::kCUDA ? sig.cuda_device() : -1;
  if (dtype == DType::kFloat64) {
    launch<double>(v, offsets, device, cuda_device, stream);
  } else {
    launch<float>(v, offsets, device, cuda_device, stream);
  }
}

}  // namespace

void register_build(py::module_& m) {
  def_op(m, "build_sidechains", &build_sidechains,
         "positions: Tensor, chi: Tensor, chi_ref: Tensor, axis: Tensor, move_atom: Tensor, "
         "move_chi: Tensor, level_start: Tensor, out: Tensor",
         R"doc(
Rebuild ``batch`` conformations of one structure from its reference positions by rotating
every chi bond to the target angle (table layout: csrc/include/pyslice/build.h). The result does
not depend on the thread count or the grid.

positions: (n_atoms, 3) reference positions; chi: (batch, n_chi) target angles (radians, any
real value); chi_ref: (n_chi,) reference angles; out: (batch, n_atoms, 3). All four float32, or
all float64 (the dtype of positions decides).
axis: (n_chi, 2) int64 atom indices (b, c) of each chi bond; move_atom, move_chi: (n_moves,)
int64, the atom rotated by each move and its chi; level_start: (5,) int64 offsets of the moves
of chi levels 1..4 (0 first, n_moves last), a CPU tensor on every device. CPU tables are checked
entry by entry; on CUDA a move with a bad index is skipped, never read out of bounds.
)doc",
         "positions", "chi", "chi_ref", "axis", "move_atom", "move_chi", "level_start", "out");
}

}  // namespace pyslice
