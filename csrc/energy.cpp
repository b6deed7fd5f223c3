// Bindings of the force-field energy (maths: pyslice/energy.h; launchers: cpu/energy.cpp,
// cuda/energy.cu). The tables arrive as a sequence of views in the order of
// energy::kTableNames (pyslice._C.ENERGY_TABLES), plus the scalar fields cutoff, krf, crf.
#include <array>
#include <cstdint>
#include <string>

#include "bindings.h"
#include "energy_ops.h"
#include "pyslice/energy.h"

namespace pyslice {
namespace {

using energy::kNumTables;
using energy::kTableNames;

// "tables['charge']", ...: argument names for the messages.
const std::array<std::string, kNumTables>& table_labels() {
  static const std::array<std::string, kNumTables> labels = [] {
    std::array<std::string, kNumTables> out;
    for (int k = 0; k < kNumTables; ++k) out[k] = std::string("tables['") + kTableNames[k] + "']";
    return out;
  }();
  return labels;
}

// Every entry of an int64 host view in [0, bound).
void check_indices(const Tensor& t, int64_t bound, const std::string& name) {
  const auto* p = t.ptr<const int64_t>();
  for (int64_t k = 0; k < t.numel(); ++k) {
    if (p[k] < 0 || p[k] >= bound) {
      throw py::value_error(name + " holds index " + std::to_string(p[k]) + " outside [0, " +
                            std::to_string(bound) + ")");
    }
  }
}

// A CSR (ptr (n + 1,), idx) of host views: ptr non-decreasing from 0 to len(idx), idx in
// [0, bound).
void check_csr(const Tensor& ptr, const Tensor& idx, int64_t n, int64_t bound,
               const std::string& base) {
  const std::string ptr_name = "tables['" + base + "_ptr']";
  if (ptr.shape[0] != n + 1) {
    throw py::value_error(ptr_name + " must have n_atoms + 1 = " + std::to_string(n + 1) +
                          " entries, got " + std::to_string(ptr.shape[0]));
  }
  const auto* p = ptr.ptr<const int64_t>();
  if (p[0] != 0 || p[n] != idx.shape[0]) {
    throw py::value_error(ptr_name + " must run from 0 to len(tables['" + base + "_idx'])");
  }
  for (int64_t k = 0; k < n; ++k) {
    if (p[k + 1] < p[k]) throw py::value_error(ptr_name + " must be non-decreasing");
  }
  check_indices(idx, bound, "tables['" + base + "_idx']");
}

// The tables of one call: views checked by `sig` (dtype, shape, device), their contents too when
// they live on the host. T: the dtype of the per-atom pair parameters (that of the positions).
template <typename T>
energy::Tables<T> read_tables(Signature& sig, const py::object& tables_obj, double cutoff,
                              double krf, double crf) {
  if (!py::isinstance<py::list>(tables_obj) && !py::isinstance<py::tuple>(tables_obj)) {
    throw py::type_error("tables must be a list of pyslice._C.Tensor in the order of "
                         "pyslice._C.ENERGY_TABLES, got " + args::type_name(tables_obj));
  }
  const auto items = py::reinterpret_borrow<py::sequence>(tables_obj);
  if (py::len(items) != static_cast<size_t>(kNumTables)) {
    throw py::value_error("tables must hold " + std::to_string(kNumTables) +
                          " views (pyslice._C.ENERGY_TABLES), got " +
                          std::to_string(py::len(items)));
  }
  const auto& labels = table_labels();
  std::array<Tensor, kNumTables> v;
  const DType pair = dtype_of<T>();
  const DType index = DType::kInt64;
  const DType param = DType::kFloat64;
  // (dtype, shape pattern) per table, in kTableNames order. N: atoms; E, O, A, T: exceptions,
  // bonds, angles, torsions; ptr sizes (N + 1) are checked with the CSR below.
  const std::pair<DType, const char*> expected[kNumTables] = {
      {pair, "N"},   {pair, "N"},    {pair, "N"},   {index, "*"},  {index, "*"},
      {index, "E 2"}, {param, "E 3"}, {index, "*"},  {index, "*"},  {index, "O 2"},
      {param, "O 2"}, {index, "*"},   {index, "*"},  {index, "A 3"}, {param, "A 2"},
      {index, "*"},  {index, "*"},    {index, "T 4"}, {param, "T 3"}, {index, "*"},
      {index, "*"}};
  for (int k = 0; k < kNumTables; ++k) {
    v[k] = sig.tensor(items[k], labels[k].c_str(), {expected[k].first}, expected[k].second);
  }
  energy::Tables<T> t{};
  t.n_atoms = sig.dim('N');
  t.charge = v[0].ptr<const T>();
  t.half_sigma = v[1].ptr<const T>();
  t.two_sqrt_eps = v[2].ptr<const T>();
  t.excl_ptr = v[3].ptr<const int64_t>();
  t.excl_idx = v[4].ptr<const int64_t>();
  // Each term: atoms, params, ptr, idx, starting at table `first`.
  struct Term {
    const char* name;
    int first;
    int64_t* count;
    const int64_t** atoms;
    const double** params;
    const int64_t** ptr;
    const int64_t** idx;
  };
  const Term terms[] = {
      {"exc", 5, &t.n_exceptions, &t.exc_atoms, &t.exc_params, &t.exc_ptr, &t.exc_idx},
      {"bond", 9, &t.n_bonds, &t.bond_atoms, &t.bond_params, &t.bond_ptr, &t.bond_idx},
      {"angle", 13, &t.n_angles, &t.angle_atoms, &t.angle_params, &t.angle_ptr, &t.angle_idx},
      {"torsion", 17, &t.n_torsions, &t.torsion_atoms, &t.torsion_params, &t.torsion_ptr,
       &t.torsion_idx},
  };
  for (const Term& term : terms) {
    *term.count = v[term.first].shape[0];
    *term.atoms = v[term.first].template ptr<const int64_t>();
    *term.params = v[term.first + 1].template ptr<const double>();
    *term.ptr = v[term.first + 2].template ptr<const int64_t>();
    *term.idx = v[term.first + 3].template ptr<const int64_t>();
  }
  // Sizes of the CSR pointers on every device; contents where the host can read them (device
  // tables were checked on the host when they were built: pyslice.energy.tables_from_system).
  for (const int k : {3, 7, 11, 15, 19}) {
    if (v[k].shape[0] != t.n_atoms + 1) {
      throw py::value_error(labels[k] + " must have n_atoms + 1 = " +
                            std::to_string(t.n_atoms + 1) + " entries, got " +
                            std::to_string(v[k].shape[0]));
    }
  }
  if (v[0].device == Device::kCPU) {
    check_csr(v[3], v[4], t.n_atoms, t.n_atoms, "excl");
    for (const Term& term : terms) {
      check_indices(v[term.first], t.n_atoms, labels[term.first]);
      check_csr(v[term.first + 2], v[term.first + 3], t.n_atoms, *term.count, term.name);
    }
  }
  if (!(cutoff >= 0.0)) throw py::value_error("cutoff must be >= 0 (0: no cutoff)");
  t.cutoff = cutoff;
  t.krf = krf;
  t.crf = crf;
  return t;
}

// The workspace view: uint8, at least `bytes` long (workspace_size).
Tensor read_workspace(Signature& sig, const py::object& value, int64_t bytes, const char* op,
                      Device device) {
  const Tensor w = sig.tensor(value, "workspace", {DType::kUInt8}, "*", kWorkspace);
  if (w.numel() < bytes) {
    throw py::value_error("workspace must hold at least " + std::to_string(bytes) +
                          " bytes (pyslice._C.workspace_size('" + op + "', '" +
                          device_name(device) + "', ...)), got " + std::to_string(w.numel()));
  }
  return w;
}

template <typename T>
void energy_typed(Device device, void* stream, const py::object& tables_obj,
                  const py::object& positions_obj, const py::object& out_obj,
                  const py::object& workspace_obj, double cutoff, double krf, double crf) {
  Signature sig("energy", device);
  const energy::Tables<T> t = read_tables<T>(sig, tables_obj, cutoff, krf, crf);
  const Tensor positions = sig.tensor(positions_obj, "positions", {dtype_of<T>()}, "B N 3");
  const Tensor out = sig.tensor(out_obj, "out", {DType::kFloat64}, "B 5", kOutput);
  const int64_t batch = sig.dim('B');
  const int64_t bytes =
      device == Device::kCPU
          ? 0
          : energy::energy_workspace_bytes(batch, t.n_atoms, energy::n_bonded_items(t));
  const Tensor workspace = read_workspace(sig, workspace_obj, bytes, "energy", device);
  if (batch == 0) return;
  if (device == Device::kCPU) {
    py::gil_scoped_release release;
    energy_cpu_launch(t, positions.ptr<const T>(), batch, out.ptr<double>());
    return;
  }
#if defined(PYSLICE_WITH_CUDA)
  const int cuda_device = sig.cuda_device();
  py::gil_scoped_release release;
  energy_cuda_launch(t, positions.ptr<const T>(), batch, out.ptr<double>(),
                     workspace.ptr<void>(), cuda_device, stream);
#else
  (void)stream, (void)workspace;
#endif
}

template <typename T>
void energy_delta_typed(Device device, void* stream, const py::object& tables_obj,
                        const py::object& positions_obj, const py::object& new_positions_obj,
                        const py::object& moved_obj, const py::object& out_obj,
                        const py::object& workspace_obj, double cutoff, double krf, double crf) {
  Signature sig("energy_delta", device);
  const energy::Tables<T> t = read_tables<T>(sig, tables_obj, cutoff, krf, crf);
  const DType dtype = dtype_of<T>();
  const Tensor positions = sig.tensor(positions_obj, "positions", {dtype}, "B N 3");
  const Tensor new_positions = sig.tensor(new_positions_obj, "new_positions", {dtype}, "B N 3");
  const Tensor moved = sig.tensor(moved_obj, "moved", {DType::kInt64}, "B M");
  const Tensor out = sig.tensor(out_obj, "out", {DType::kFloat64}, "B 5", kOutput);
  const int64_t batch = sig.dim('B');
  const int64_t n_moved = sig.dim('M');
  const int64_t bytes =
      device == Device::kCPU ? 0 : energy::delta_workspace_bytes(batch, t.n_atoms, n_moved);
  const Tensor workspace = read_workspace(sig, workspace_obj, bytes, "energy_delta", device);
  if (device == Device::kCPU) {
    const auto* m = moved.ptr<const int64_t>();
    for (int64_t k = 0; k < moved.numel(); ++k) {
      if (m[k] < -1 || m[k] >= t.n_atoms) {
        throw py::value_error("moved holds " + std::to_string(m[k]) + ", outside [-1, " +
                              std::to_string(t.n_atoms) + ")");
      }
    }
  }
  if (batch == 0) return;
  if (device == Device::kCPU) {
    py::gil_scoped_release release;
    energy_delta_cpu_launch(t, positions.ptr<const T>(), new_positions.ptr<const T>(),
                            moved.ptr<const int64_t>(), batch, n_moved, out.ptr<double>());
    return;
  }
#if defined(PYSLICE_WITH_CUDA)
  const int cuda_device = sig.cuda_device();
  py::gil_scoped_release release;
  energy_delta_cuda_launch(t, positions.ptr<const T>(), new_positions.ptr<const T>(),
                           moved.ptr<const int64_t>(), batch, n_moved, out.ptr<double>(),
                           workspace.ptr<void>(), cuda_device, stream);
#else
  (void)stream, (void)workspace;
#endif
}

// The dtype of the positions decides the pair dtype; the tables must match it.
void energy_op(Device device, void* stream, const py::object& tables,
            const py::object& positions, const py::object& out, const py::object& workspace,
            const py::object& cutoff, const py::object& krf, const py::object& crf) {
  const double c = args::to_double(cutoff, "cutoff", false);
  const double k = args::to_double(krf, "krf", false);
  const double r = args::to_double(crf, "crf", false);
  if (Signature::dtype(positions, "positions") == DType::kFloat64) {
    energy_typed<double>(device, stream, tables, positions, out, workspace, c, k, r);
  } else {
    energy_typed<float>(device, stream, tables, positions, out, workspace, c, k, r);
  }
}

void energy_delta_op(Device device, void* stream, const py::object& tables,
                  const py::object& positions, const py::object& new_positions,
                  const py::object& moved, const py::object& out, const py::object& workspace,
                  const py::object& cutoff, const py::object& krf, const py::object& crf) {
  const double c = args::to_double(cutoff, "cutoff", false);
  const double k = args::to_double(krf, "krf", false);
  const double r = args::to_double(crf, "crf", false);
  if (Signature::dtype(positions, "positions") == DType::kFloat64) {
    energy_delta_typed<double>(device, stream, tables, positions, new_positions, moved, out,
                               workspace, c, k, r);
  } else {
    energy_delta_typed<float>(device, stream, tables, positions, new_positions, moved, out,
                              workspace, c, k, r);
  }
}

}  // namespace

void register_energy(py::module_& m) {
  py::tuple names(kNumTables);
  for (int k = 0; k < kNumTables; ++k) names[k] = kTableNames[k];
  m.attr("ENERGY_TABLES") = names;
  def_op(m, "energy", &energy_op,
         "tables: Sequence[Tensor], positions: Tensor, out: Tensor, workspace: Tensor, "
         "cutoff: float, krf: float, crf: float",
         R"doc(
Per-term force-field energies: out[b] = (bond, angle, torsion, coulomb, lennard_jones) in
kJ/mol of conformation b.

tables: the pyslice.energy.EnergyTables tensors in the order of ENERGY_TABLES (charge, half_sigma,
    two_sqrt_eps in the dtype of positions; parameters float64; atoms, ptr and idx int64); their
    contents are checked too on the CPU.
positions: (B, N, 3) float32 or float64 (nm). out: (B, 5) float64.
workspace: uint8, workspace_size('energy', device, (B, N, n_items)) bytes (n_items: bonds +
    angles + torsions + exceptions; 0 bytes on the CPU).
cutoff: 0 for NoCutoff, else r_c (nm) of CutoffNonPeriodic with reaction-field krf, crf.
)doc",
         "tables", "positions", "out", "workspace", "cutoff", "krf", "crf");
  def_op(m, "energy_delta", &energy_delta_op,
         "tables: Sequence[Tensor], positions: Tensor, new_positions: Tensor, moved: Tensor, "
         "out: Tensor, workspace: Tensor, cutoff: float, krf: float, crf: float",
         R"doc(
Per-term energy change when the atoms moved[b] go from positions[b] to new_positions[b]
while every other atom stays at positions[b]; only the terms that touch a moved atom are
evaluated (O(M N) per conformation). moved: (B, M) int64, -1 = padding, no atom twice in a row
(checked upstream; on the CPU the range is checked here too). workspace:
workspace_size('energy_delta', device, (B, N, M)) bytes. Other arguments as energy.
)doc",
         "tables", "positions", "new_positions", "moved", "out", "workspace", "cutoff", "krf",
         "crf");
}

}  // namespace pyslice
