// Bindings and argument checks for the side-chain builder (maths: pyslice/build.h; launchers:
// cpu/build.cpp, cuda/build.cu).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings.h"
#include "build_ops.h"
#include "pyslice/build.h"

namespace pyslice {
namespace {

constexpr uint64_t kMaxUint64 = 0xFFFFFFFFFFFFFFFFull;
constexpr int kOffsets = build::kLevels + 1;

// level_start: (5,) int64 numpy array, 0 = level_start[0] <= ... <= level_start[4] (= n_moves
// when n_moves >= 0). Copied into `offsets`.
void read_level_start(const py::object& value, int64_t n_moves, int64_t* offsets) {
  const py::array array = args::int64_array(value, "level_start", 1, /*writable=*/false);
  if (array.shape(0) != kOffsets) {
    throw py::value_error("level_start must have shape (" + std::to_string(kOffsets) +
                          ",), got shape " + args::shape_string(array));
  }
  const auto* data = static_cast<const int64_t*>(array.data());
  for (int i = 0; i < kOffsets; ++i) offsets[i] = data[i];
  bool ok = offsets[0] == 0 && (n_moves < 0 || offsets[kOffsets - 1] == n_moves);
  for (int i = 1; i < kOffsets; ++i) ok = ok && offsets[i] >= offsets[i - 1];
  if (!ok) {
    throw py::value_error("level_start must be non-decreasing offsets from 0 to the number of "
                          "moves" +
                          (n_moves >= 0 ? " (" + std::to_string(n_moves) + ")" : std::string()) +
                          ", got " + args::repr_of(array.attr("tolist")()));
  }
}

// Every entry of the int64 array in [0, high).
void check_indices(const py::array& array, const char* name, int64_t high, const char* what) {
  const auto* data = static_cast<const int64_t*>(array.data());
  for (py::ssize_t i = 0; i < array.size(); ++i) {
    if (data[i] < 0 || data[i] >= high) {
      throw py::value_error(std::string(name) + " must hold " + what + " indices in [0, " +
                            std::to_string(high) + "), got " + std::to_string(data[i]) +
                            " at flat position " + std::to_string(i));
    }
  }
}

template <typename T>
void build_cpu_typed(const py::object& positions_obj, const py::object& chi_obj,
                     const py::object& chi_ref_obj, const py::object& axis_obj,
                     const py::object& move_atom_obj, const py::object& move_chi_obj,
                     const py::object& level_start_obj, const py::object& out_obj) {
  constexpr bool kDouble = sizeof(T) == sizeof(double);
  const auto floating = kDouble ? args::float64_array : args::float32_array;
  const py::array positions = floating(positions_obj, "positions", 2, /*writable=*/false);
  const py::array chi = floating(chi_obj, "chi", 2, /*writable=*/false);
  const py::array chi_ref = floating(chi_ref_obj, "chi_ref", 1, /*writable=*/false);
  py::array out = floating(out_obj, "out", 3, /*writable=*/true);
  const py::array axis = args::int64_array(axis_obj, "axis", 2, /*writable=*/false);
  const py::array move_atom = args::int64_array(move_atom_obj, "move_atom", 1, false);
  const py::array move_chi = args::int64_array(move_chi_obj, "move_chi", 1, false);

  const int64_t n_atoms = positions.shape(0);
  const int64_t batch = chi.shape(0);
  const int64_t n_chi = chi.shape(1);
  const int64_t n_moves = move_atom.shape(0);
  if (positions.shape(1) != 3) {
    throw py::value_error("positions must have shape (n_atoms, 3), got shape " +
                          args::shape_string(positions));
  }
  if (chi_ref.shape(0) != n_chi) {
    throw py::value_error("chi_ref must have shape (n_chi,) = (" + std::to_string(n_chi) +
                          ",) from chi, got shape " + args::shape_string(chi_ref));
  }
  if (axis.shape(0) != n_chi || axis.shape(1) != 2) {
    throw py::value_error("axis must have shape (n_chi, 2) = (" + std::to_string(n_chi) +
                          ", 2), got shape " + args::shape_string(axis));
  }
  if (move_chi.shape(0) != n_moves) {
    throw py::value_error("move_chi must have the shape of move_atom " +
                          args::shape_string(move_atom) + ", got shape " +
                          args::shape_string(move_chi));
  }
  if (out.shape(0) != batch || out.shape(1) != n_atoms || out.shape(2) != 3) {
    throw py::value_error("out must have shape (batch, n_atoms, 3) = (" + std::to_string(batch) +
                          ", " + std::to_string(n_atoms) + ", 3), got shape " +
                          args::shape_string(out));
  }
  BuildArgs<T> a{};
  read_level_start(level_start_obj, n_moves, a.level_start);
  check_indices(axis, "axis", n_atoms, "atom");
  check_indices(move_atom, "move_atom", n_atoms, "atom");
  check_indices(move_chi, "move_chi", n_chi, "chi");
  for (const auto* input : {&positions, &chi, &chi_ref, &axis, &move_atom, &move_chi}) {
    if (args::overlaps(*input, out)) throw py::value_error("out must not share memory with inputs");
  }

  a.positions = static_cast<const T*>(positions.data());
  a.chi = static_cast<const T*>(chi.data());
  a.chi_ref = static_cast<const T*>(chi_ref.data());
  a.axis = static_cast<const int64_t*>(axis.data());
  a.move_atom = static_cast<const int64_t*>(move_atom.data());
  a.move_chi = static_cast<const int64_t*>(move_chi.data());
  a.out = static_cast<T*>(out.mutable_data());
  a.batch = batch;
  a.n_atoms = n_atoms;
  a.n_chi = n_chi;
  if (batch == 0 || n_atoms == 0) return;
  py::gil_scoped_release release;
  build_cpu_launch(a);
}

void build_sidechains_cpu(const py::object& positions, const py::object& chi,
                          const py::object& chi_ref, const py::object& axis,
                          const py::object& move_atom, const py::object& move_chi,
                          const py::object& level_start, const py::object& out) {
  // The dtype of positions decides; every other float array must match it.
  if (args::is_float64_array(positions)) {
    build_cpu_typed<double>(positions, chi, chi_ref, axis, move_atom, move_chi, level_start, out);
  } else {
    build_cpu_typed<float>(positions, chi, chi_ref, axis, move_atom, move_chi, level_start, out);
  }
}

#if defined(PYSLICE_WITH_CUDA)
template <typename T>
BuildArgs<T> cuda_args(const uint64_t* pointers, int64_t batch, int64_t n_atoms, int64_t n_chi) {
  const auto as = [](uint64_t p) { return reinterpret_cast<void*>(static_cast<uintptr_t>(p)); };
  BuildArgs<T> a{};
  a.positions = static_cast<const T*>(as(pointers[0]));
  a.chi = static_cast<const T*>(as(pointers[1]));
  a.chi_ref = static_cast<const T*>(as(pointers[2]));
  a.axis = static_cast<const int64_t*>(as(pointers[3]));
  a.move_atom = static_cast<const int64_t*>(as(pointers[4]));
  a.move_chi = static_cast<const int64_t*>(as(pointers[5]));
  a.out = static_cast<T*>(as(pointers[6]));
  a.batch = batch;
  a.n_atoms = n_atoms;
  a.n_chi = n_chi;
  return a;
}
#endif

void build_sidechains_cuda(const py::object& positions_ptr, const py::object& chi_ptr,
                           const py::object& chi_ref_ptr, const py::object& axis_ptr,
                           const py::object& move_atom_ptr, const py::object& move_chi_ptr,
                           const py::object& level_start, const py::object& out_ptr,
                           const py::object& batch_obj, const py::object& n_atoms_obj,
                           const py::object& n_chi_obj, const py::object& dtype_obj,
                           const py::object& stream_obj) {
#if defined(PYSLICE_WITH_CUDA)
  const char* names[7] = {"positions_ptr", "chi_ptr",      "chi_ref_ptr", "axis_ptr",
                          "move_atom_ptr", "move_chi_ptr", "out_ptr"};
  const py::object* objects[7] = {&positions_ptr, &chi_ptr,      &chi_ref_ptr, &axis_ptr,
                                  &move_atom_ptr, &move_chi_ptr, &out_ptr};
  uint64_t pointers[7];
  for (int i = 0; i < 7; ++i) {
    pointers[i] = args::to_uint64(*objects[i], names[i], kMaxUint64, "[0, 2**64)");
  }
  const int64_t batch = args::to_int64(batch_obj, "batch", 0);
  const int64_t n_atoms = args::to_int64(n_atoms_obj, "n_atoms", 0);
  const int64_t n_chi = args::to_int64(n_chi_obj, "n_chi", 0);
  if (!py::isinstance<py::str>(dtype_obj)) {
    throw py::type_error("dtype must be a str ('float32' or 'float64'), got " +
                         args::type_name(dtype_obj));
  }
  const std::string dtype = dtype_obj.cast<std::string>();
  if (dtype != "float32" && dtype != "float64") {
    throw py::value_error("dtype must be 'float32' or 'float64', got " + args::repr_of(dtype_obj));
  }
  const uint64_t stream = args::to_uint64(stream_obj, "stream", kMaxUint64, "[0, 2**64)");
  int64_t offsets[kOffsets];
  read_level_start(level_start, /*n_moves=*/-1, offsets);
  const int64_t n_moves = offsets[kOffsets - 1];
  if (n_atoms > 0 && batch > INT64_MAX / 3 / n_atoms) {
    throw py::value_error("batch * n_atoms * 3 is too large");
  }
  if (batch == 0 || n_atoms == 0) return;
  // A buffer that is read must exist; its alignment is that of the element type.
  const int64_t sizes[7] = {n_atoms, batch * n_chi, n_chi, n_chi, n_moves, n_moves, n_atoms};
  const uint64_t float_size = dtype == "float64" ? sizeof(double) : sizeof(float);
  const uint64_t alignments[7] = {float_size, float_size, float_size, sizeof(int64_t),
                                  sizeof(int64_t), sizeof(int64_t), float_size};
  for (int i = 0; i < 7; ++i) {
    if (sizes[i] == 0) {
      pointers[i] = 0;  // never read: the launcher does not check it either
      continue;
    }
    if (pointers[i] == 0) throw py::value_error(std::string(names[i]) + " must not be 0 (null)");
    if (pointers[i] % alignments[i] != 0) {
      throw py::value_error(std::string(names[i]) + " must be aligned to " +
                            std::to_string(alignments[i]) + " bytes");
    }
  }
  auto* stream_handle = reinterpret_cast<void*>(static_cast<uintptr_t>(stream));
  // std::invalid_argument (not device memory) becomes ValueError, std::runtime_error (CUDA
  // errors) RuntimeError: pybind11's standard translation.
  py::gil_scoped_release release;
  if (dtype == "float64") {
    BuildArgs<double> a = cuda_args<double>(pointers, batch, n_atoms, n_chi);
    for (int i = 0; i < kOffsets; ++i) a.level_start[i] = offsets[i];
    build_cuda_launch(a, stream_handle);
  } else {
    BuildArgs<float> a = cuda_args<float>(pointers, batch, n_atoms, n_chi);
    for (int i = 0; i < kOffsets; ++i) a.level_start[i] = offsets[i];
    build_cuda_launch(a, stream_handle);
  }
#else
  (void)positions_ptr, (void)chi_ptr, (void)chi_ref_ptr, (void)axis_ptr, (void)move_atom_ptr;
  (void)move_chi_ptr, (void)level_start, (void)out_ptr, (void)batch_obj, (void)n_atoms_obj;
  (void)n_chi_obj, (void)dtype_obj, (void)stream_obj;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

}  // namespace

void register_build(py::module_& m) {
  m.def("build_sidechains_cpu", &build_sidechains_cpu, py::arg("positions"), py::arg("chi"),
        py::arg("chi_ref"), py::arg("axis"), py::arg("move_atom"), py::arg("move_chi"),
        py::arg("level_start"), py::arg("out"),
        R"doc(build_sidechains_cpu(positions: numpy.ndarray, chi: numpy.ndarray, chi_ref: numpy.ndarray, axis: numpy.ndarray, move_atom: numpy.ndarray, move_chi: numpy.ndarray, level_start: numpy.ndarray, out: numpy.ndarray) -> None

Rebuild ``batch`` conformations of one structure from its reference positions by rotating
every chi bond to the target angle (table layout: csrc/include/pyslice/build.h), in parallel
over conformations (OpenMP), without the GIL. The result does not depend on the thread count.

positions: (n_atoms, 3) reference positions; chi: (batch, n_chi) target angles (radians, any
real value); chi_ref: (n_chi,) reference angles; out: (batch, n_atoms, 3), writable. All four
float32, or all float64 (the dtype of positions decides), C-contiguous.
axis: (n_chi, 2) int64 atom indices (b, c) of each chi bond; move_atom, move_chi: (n_moves,)
int64, the atom rotated by each move and its chi; level_start: (5,) int64 offsets of the moves
of chi levels 1..4 (0 first, n_moves last). Raises TypeError/ValueError naming the argument.
)doc");

  m.def("build_sidechains_cuda", &build_sidechains_cuda, py::arg("positions_ptr"),
        py::arg("chi_ptr"), py::arg("chi_ref_ptr"), py::arg("axis_ptr"), py::arg("move_atom_ptr"),
        py::arg("move_chi_ptr"), py::arg("level_start"), py::arg("out_ptr"), py::arg("batch"),
        py::arg("n_atoms"), py::arg("n_chi"), py::arg("dtype"), py::arg("stream"),
        R"doc(build_sidechains_cuda(positions_ptr: int, chi_ptr: int, chi_ref_ptr: int, axis_ptr: int, move_atom_ptr: int, move_chi_ptr: int, level_start: numpy.ndarray, out_ptr: int, batch: int, n_atoms: int, n_chi: int, dtype: str, stream: int) -> None

The CUDA version of build_sidechains_cpu, on raw device pointers (ints, e.g. tensor.data_ptr())
to contiguous buffers of the same shapes; dtype ('float32' or 'float64') is that of the float
buffers. level_start stays a host (5,) int64 numpy array; n_moves is its last entry. Launches one
block per conformation on ``stream`` (an int cudaStream_t; 0 is the legacy default stream) on the
device that holds the buffers, and returns without synchronising. The device tables cannot be
checked from the host: a bad index there is skipped by the kernel, never read out of bounds.
Raises ValueError for bad sizes or pointers that are not device memory, RuntimeError for CUDA
errors, and RuntimeError when pyslice._C was built without CUDA.
)doc");
}

}  // namespace pyslice
