// Bindings and argument checks for the force-field energy (maths: pyslice/energy.h; launchers:
// cpu/energy.cpp, cuda/energy.cu). Tables arrive as a dict (pyslice.energy.EnergyTables field
// names -> numpy arrays for the CPU, device pointers for CUDA) plus the scalar fields.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "energy_ops.h"
#include "pyslice/energy.h"

namespace pyslice {
namespace {

constexpr uint64_t kMaxUint64 = 0xFFFFFFFFFFFFFFFFull;

std::string shape_of(const py::array& a) {
  std::string text = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(a.shape(d));
  }
  return text + (a.ndim() == 1 ? ",)" : ")");
}

// A C-contiguous, aligned numpy array of dtype Scalar with `ndim` dims (and `cols` columns when
// ndim == 2 and cols > 0); a ValueError/TypeError naming `name` otherwise. Never converts.
template <typename Scalar>
py::array checked(py::handle value, const std::string& name, py::ssize_t ndim, py::ssize_t cols,
                  bool writable = false) {
  const std::string want = py::str(py::dtype::of<Scalar>()).cast<std::string>();
  if (!py::isinstance<py::array>(value)) {
    throw py::type_error(name + " must be a numpy.ndarray of dtype " + want + ", got " +
                         std::string(Py_TYPE(value.ptr())->tp_name));
  }
  auto a = py::reinterpret_borrow<py::array>(value);
  if (!a.dtype().equal(py::dtype::of<Scalar>())) {
    throw py::type_error(name + " must have dtype " + want + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  if (a.ndim() != ndim || (ndim == 2 && cols > 0 && a.shape(1) != cols)) {
    throw py::value_error(name + " must have " + std::to_string(ndim) + " dimension(s)" +
                          (ndim == 2 && cols > 0 ? " and " + std::to_string(cols) + " columns" : "") +
                          ", got shape " + shape_of(a));
  }
  if ((a.flags() & py::array::c_style) == 0 ||
      (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0) {
    throw py::value_error(name + " must be C-contiguous and aligned");
  }
  if (writable && !a.writeable()) throw py::value_error(name + " must be writable");
  return a;
}

py::handle item(const py::dict& tables, const char* key) {
  if (!tables.contains(key)) {
    throw py::value_error(std::string("tables is missing '") + key + "'");
  }
  return tables[key];
}

// Every index in [0, bound); a ValueError naming the table otherwise (corrupt tables must not
// crash the interpreter).
void check_indices(const py::array& a, int64_t bound, const std::string& name) {
  const auto* p = static_cast<const int64_t*>(a.data());
  for (py::ssize_t k = 0; k < a.size(); ++k) {
    if (p[k] < 0 || p[k] >= bound) {
      throw py::value_error(name + " holds index " + std::to_string(p[k]) + " outside [0, " +
                            std::to_string(bound) + ")");
    }
  }
}

// A CSR (ptr (n + 1,), idx): ptr non-decreasing from 0 to idx.size, idx in [0, bound).
void check_csr(const py::array& ptr, const py::array& idx, int64_t n, int64_t bound,
               const std::string& name) {
  if (ptr.shape(0) != n + 1) {
    throw py::value_error(name + "_ptr must have n_atoms + 1 = " + std::to_string(n + 1) +
                          " entries, got " + std::to_string(ptr.shape(0)));
  }
  const auto* p = static_cast<const int64_t*>(ptr.data());
  if (p[0] != 0 || p[n] != static_cast<int64_t>(idx.shape(0))) {
    throw py::value_error(name + "_ptr must run from 0 to len(" + name + "_idx)");
  }
  for (int64_t k = 0; k < n; ++k) {
    if (p[k + 1] < p[k]) throw py::value_error(name + "_ptr must be non-decreasing");
  }
  check_indices(idx, bound, name + "_idx");
}

// Keeps the arrays alive while their pointers are in use.
template <typename T>
struct CpuTables {
  energy::Tables<T> tables{};
  std::vector<py::array> keep;
};

template <typename T>
CpuTables<T> cpu_tables(const py::dict& d, double cutoff, double krf, double crf) {
  CpuTables<T> out;
  auto& t = out.tables;
  const py::array charge = checked<T>(item(d, "charge"), "tables['charge']", 1, 0);
  const int64_t n = charge.shape(0);
  const py::array half_sigma = checked<T>(item(d, "half_sigma"), "tables['half_sigma']", 1, 0);
  const py::array two_sqrt_eps =
      checked<T>(item(d, "two_sqrt_eps"), "tables['two_sqrt_eps']", 1, 0);
  if (half_sigma.shape(0) != n || two_sqrt_eps.shape(0) != n) {
    throw py::value_error("tables['half_sigma'] and tables['two_sqrt_eps'] must have n_atoms = " +
                          std::to_string(n) + " entries");
  }
  t.n_atoms = n;
  t.charge = static_cast<const T*>(charge.data());
  t.half_sigma = static_cast<const T*>(half_sigma.data());
  t.two_sqrt_eps = static_cast<const T*>(two_sqrt_eps.data());
  out.keep = {charge, half_sigma, two_sqrt_eps};

  auto index_array = [&](const std::string& key, py::ssize_t ndim, py::ssize_t cols) {
    py::array a = checked<int64_t>(item(d, key.c_str()), "tables['" + key + "']", ndim, cols);
    out.keep.push_back(a);
    return a;
  };
  auto param_array = [&](const std::string& key, py::ssize_t cols, int64_t rows) {
    py::array a = checked<double>(item(d, key.c_str()), "tables['" + key + "']", 2, cols);
    if (a.shape(0) != rows) {
      throw py::value_error("tables['" + key + "'] must have " + std::to_string(rows) +
                            " rows (one per term), got " + std::to_string(a.shape(0)));
    }
    out.keep.push_back(a);
    return static_cast<const double*>(a.data());
  };

  const py::array excl_ptr = index_array("excl_ptr", 1, 0);
  const py::array excl_idx = index_array("excl_idx", 1, 0);
  check_csr(excl_ptr, excl_idx, n, n, "excl");
  t.excl_ptr = static_cast<const int64_t*>(excl_ptr.data());
  t.excl_idx = static_cast<const int64_t*>(excl_idx.data());

  struct Term {
    const char* name;
    py::ssize_t width, n_params;
    int64_t* count;
    const int64_t** atoms;
    const double** params;
    const int64_t** ptr;
    const int64_t** idx;
  };
  const Term terms[] = {
      {"exc", 2, 3, &t.n_exceptions, &t.exc_atoms, &t.exc_params, &t.exc_ptr, &t.exc_idx},
      {"bond", 2, 2, &t.n_bonds, &t.bond_atoms, &t.bond_params, &t.bond_ptr, &t.bond_idx},
      {"angle", 3, 2, &t.n_angles, &t.angle_atoms, &t.angle_params, &t.angle_ptr, &t.angle_idx},
      {"torsion", 4, 3, &t.n_torsions, &t.torsion_atoms, &t.torsion_params, &t.torsion_ptr,
       &t.torsion_idx},
  };
  for (const Term& term : terms) {
    const std::string base = term.name;
    const py::array atoms = index_array(base + "_atoms", 2, term.width);
    check_indices(atoms, n, "tables['" + base + "_atoms']");
    *term.count = atoms.shape(0);
    *term.atoms = static_cast<const int64_t*>(atoms.data());
    *term.params = param_array(base + "_params", term.n_params, atoms.shape(0));
    const py::array ptr = index_array(base + "_ptr", 1, 0);
    const py::array idx = index_array(base + "_idx", 1, 0);
    check_csr(ptr, idx, n, atoms.shape(0), base);
    *term.ptr = static_cast<const int64_t*>(ptr.data());
    *term.idx = static_cast<const int64_t*>(idx.data());
  }
  if (!(cutoff >= 0.0)) throw py::value_error("cutoff must be >= 0 (0: no cutoff)");
  t.cutoff = cutoff;
  t.krf = krf;
  t.crf = crf;
  return out;
}

bool is_float64(py::handle positions) {
  if (!py::isinstance<py::array>(positions)) {
    throw py::type_error("positions must be a numpy.ndarray of dtype float32 or float64, got " +
                         std::string(Py_TYPE(positions.ptr())->tp_name));
  }
  return py::reinterpret_borrow<py::array>(positions).dtype().equal(py::dtype::of<double>());
}

py::array check_positions(py::handle value, const char* name, int64_t n, bool f64) {
  py::array a = f64 ? checked<double>(value, name, 3, 0) : checked<float>(value, name, 3, 0);
  if (a.shape(1) != n || a.shape(2) != 3) {
    throw py::value_error(std::string(name) + " must have shape (B, " + std::to_string(n) +
                          ", 3), got " + shape_of(a));
  }
  return a;
}

py::array check_out(py::handle value, int64_t batch) {
  py::array out = checked<double>(value, "out", 2, energy::kNumTerms, /*writable=*/true);
  if (out.shape(0) != batch) {
    throw py::value_error("out must have shape (B, 5) with B = " + std::to_string(batch) +
                          ", got " + shape_of(out));
  }
  return out;
}

template <typename T>
void energy_cpu_typed(const py::dict& tables_dict, const py::object& positions_obj,
                      const py::object& out_obj, double cutoff, double krf, double crf) {
  CpuTables<T> tables = cpu_tables<T>(tables_dict, cutoff, krf, crf);
  const int64_t n = tables.tables.n_atoms;
  const py::array positions = check_positions(positions_obj, "positions", n, sizeof(T) == 8);
  const int64_t batch = positions.shape(0);
  py::array out = check_out(out_obj, batch);
  const auto* x = static_cast<const T*>(positions.data());
  auto* o = static_cast<double*>(out.mutable_data());
  py::gil_scoped_release release;
  energy_cpu_launch(tables.tables, x, batch, o);
}

template <typename T>
void energy_delta_cpu_typed(const py::dict& tables_dict, const py::object& positions_obj,
                            const py::object& new_positions_obj, const py::object& moved_obj,
                            const py::object& out_obj, double cutoff, double krf, double crf) {
  CpuTables<T> tables = cpu_tables<T>(tables_dict, cutoff, krf, crf);
  const int64_t n = tables.tables.n_atoms;
  const py::array positions = check_positions(positions_obj, "positions", n, sizeof(T) == 8);
  const py::array new_positions =
      check_positions(new_positions_obj, "new_positions", n, sizeof(T) == 8);
  const int64_t batch = positions.shape(0);
  if (new_positions.shape(0) != batch) {
    throw py::value_error("new_positions must have the shape of positions");
  }
  const py::array moved = checked<int64_t>(moved_obj, "moved", 2, 0);
  if (moved.shape(0) != batch) {
    throw py::value_error("moved must have shape (B, M) with B = " + std::to_string(batch) +
                          ", got " + shape_of(moved));
  }
  const auto* m = static_cast<const int64_t*>(moved.data());
  for (py::ssize_t k = 0; k < moved.size(); ++k) {
    if (m[k] < -1 || m[k] >= n) {
      throw py::value_error("moved holds " + std::to_string(m[k]) + ", outside [-1, " +
                            std::to_string(n) + ")");
    }
  }
  py::array out = check_out(out_obj, batch);
  const auto* x = static_cast<const T*>(positions.data());
  const auto* y = static_cast<const T*>(new_positions.data());
  auto* o = static_cast<double*>(out.mutable_data());
  const int64_t n_moved = moved.shape(1);
  py::gil_scoped_release release;
  energy_delta_cpu_launch(tables.tables, x, y, m, batch, n_moved, o);
}

void energy_cpu(const py::dict& tables, const py::object& positions, const py::object& out,
                double cutoff, double krf, double crf) {
  if (is_float64(positions)) {
    energy_cpu_typed<double>(tables, positions, out, cutoff, krf, crf);
  } else {
    energy_cpu_typed<float>(tables, positions, out, cutoff, krf, crf);
  }
}

void energy_delta_cpu(const py::dict& tables, const py::object& positions,
                      const py::object& new_positions, const py::object& moved,
                      const py::object& out, double cutoff, double krf, double crf) {
  if (is_float64(positions)) {
    energy_delta_cpu_typed<double>(tables, positions, new_positions, moved, out, cutoff, krf, crf);
  } else {
    energy_delta_cpu_typed<float>(tables, positions, new_positions, moved, out, cutoff, krf, crf);
  }
}

#if defined(PYSLICE_WITH_CUDA)
// Device tables from a dict of pointers (ints) and a dict of sizes; contents are trusted (they
// were checked on the host when the tables were built: pyslice.energy.tables_from_system).
template <typename T>
energy::Tables<T> cuda_tables(const py::dict& ptrs, const py::dict& sizes, double cutoff,
                              double krf, double crf) {
  auto ptr = [&](const char* key) {
    return reinterpret_cast<const void*>(static_cast<uintptr_t>(
        args::to_uint64(item(ptrs, key), key, kMaxUint64, "[0, 2**64)")));
  };
  auto size = [&](const char* key) { return args::to_int64(item(sizes, key), key, 0); };
  energy::Tables<T> t{};
  t.n_atoms = size("n_atoms");
  t.charge = static_cast<const T*>(ptr("charge"));
  t.half_sigma = static_cast<const T*>(ptr("half_sigma"));
  t.two_sqrt_eps = static_cast<const T*>(ptr("two_sqrt_eps"));
  t.excl_ptr = static_cast<const int64_t*>(ptr("excl_ptr"));
  t.excl_idx = static_cast<const int64_t*>(ptr("excl_idx"));
  t.n_exceptions = size("n_exceptions");
  t.exc_atoms = static_cast<const int64_t*>(ptr("exc_atoms"));
  t.exc_params = static_cast<const double*>(ptr("exc_params"));
  t.exc_ptr = static_cast<const int64_t*>(ptr("exc_ptr"));
  t.exc_idx = static_cast<const int64_t*>(ptr("exc_idx"));
  t.n_bonds = size("n_bonds");
  t.bond_atoms = static_cast<const int64_t*>(ptr("bond_atoms"));
  t.bond_params = static_cast<const double*>(ptr("bond_params"));
  t.bond_ptr = static_cast<const int64_t*>(ptr("bond_ptr"));
  t.bond_idx = static_cast<const int64_t*>(ptr("bond_idx"));
  t.n_angles = size("n_angles");
  t.angle_atoms = static_cast<const int64_t*>(ptr("angle_atoms"));
  t.angle_params = static_cast<const double*>(ptr("angle_params"));
  t.angle_ptr = static_cast<const int64_t*>(ptr("angle_ptr"));
  t.angle_idx = static_cast<const int64_t*>(ptr("angle_idx"));
  t.n_torsions = size("n_torsions");
  t.torsion_atoms = static_cast<const int64_t*>(ptr("torsion_atoms"));
  t.torsion_params = static_cast<const double*>(ptr("torsion_params"));
  t.torsion_ptr = static_cast<const int64_t*>(ptr("torsion_ptr"));
  t.torsion_idx = static_cast<const int64_t*>(ptr("torsion_idx"));
  t.cutoff = cutoff;
  t.krf = krf;
  t.crf = crf;
  return t;
}

template <typename P>
P* pointer(const py::object& value, const char* name) {
  const uint64_t p = args::to_uint64(value, name, kMaxUint64, "[0, 2**64)");
  if (p % alignof(P) != 0) throw py::value_error(std::string(name) + " is misaligned");
  return reinterpret_cast<P*>(static_cast<uintptr_t>(p));
}
#endif

void energy_cuda(const py::dict& ptrs, const py::dict& sizes, bool f64,
                 const py::object& positions_ptr, const py::object& batch_obj,
                 const py::object& out_ptr, const py::object& workspace_ptr, double cutoff,
                 double krf, double crf, const py::object& stream_obj) {
#if defined(PYSLICE_WITH_CUDA)
  const int64_t batch = args::to_int64(batch_obj, "batch", 0);
  auto* out = pointer<double>(out_ptr, "out_ptr");
  auto* workspace = pointer<double>(workspace_ptr, "workspace_ptr");
  auto* stream = reinterpret_cast<void*>(static_cast<uintptr_t>(
      args::to_uint64(stream_obj, "stream", kMaxUint64, "[0, 2**64)")));
  if (f64) {
    const auto t = cuda_tables<double>(ptrs, sizes, cutoff, krf, crf);
    const auto* x = pointer<const double>(positions_ptr, "positions_ptr");
    py::gil_scoped_release release;
    energy_cuda_launch(t, x, batch, out, workspace, stream);
  } else {
    const auto t = cuda_tables<float>(ptrs, sizes, cutoff, krf, crf);
    const auto* x = pointer<const float>(positions_ptr, "positions_ptr");
    py::gil_scoped_release release;
    energy_cuda_launch(t, x, batch, out, workspace, stream);
  }
#else
  (void)ptrs, (void)sizes, (void)f64, (void)positions_ptr, (void)batch_obj, (void)out_ptr;
  (void)workspace_ptr, (void)cutoff, (void)krf, (void)crf, (void)stream_obj;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

void energy_delta_cuda(const py::dict& ptrs, const py::dict& sizes, bool f64,
                       const py::object& positions_ptr, const py::object& new_positions_ptr,
                       const py::object& moved_ptr, const py::object& batch_obj,
                       const py::object& n_moved_obj, const py::object& out_ptr,
                       const py::object& workspace_ptr, const py::object& mark_ptr,
                       double cutoff, double krf, double crf, const py::object& stream_obj) {
#if defined(PYSLICE_WITH_CUDA)
  const int64_t batch = args::to_int64(batch_obj, "batch", 0);
  const int64_t n_moved = args::to_int64(n_moved_obj, "n_moved", 0);
  auto* out = pointer<double>(out_ptr, "out_ptr");
  auto* workspace = pointer<double>(workspace_ptr, "workspace_ptr");
  auto* mark = pointer<int32_t>(mark_ptr, "mark_ptr");
  const auto* moved = pointer<const int64_t>(moved_ptr, "moved_ptr");
  auto* stream = reinterpret_cast<void*>(static_cast<uintptr_t>(
      args::to_uint64(stream_obj, "stream", kMaxUint64, "[0, 2**64)")));
  if (f64) {
    const auto t = cuda_tables<double>(ptrs, sizes, cutoff, krf, crf);
    const auto* x = pointer<const double>(positions_ptr, "positions_ptr");
    const auto* y = pointer<const double>(new_positions_ptr, "new_positions_ptr");
    py::gil_scoped_release release;
    energy_delta_cuda_launch(t, x, y, moved, batch, n_moved, out, workspace, mark, stream);
  } else {
    const auto t = cuda_tables<float>(ptrs, sizes, cutoff, krf, crf);
    const auto* x = pointer<const float>(positions_ptr, "positions_ptr");
    const auto* y = pointer<const float>(new_positions_ptr, "new_positions_ptr");
    py::gil_scoped_release release;
    energy_delta_cuda_launch(t, x, y, moved, batch, n_moved, out, workspace, mark, stream);
  }
#else
  (void)ptrs, (void)sizes, (void)f64, (void)positions_ptr, (void)new_positions_ptr;
  (void)moved_ptr, (void)batch_obj, (void)n_moved_obj, (void)out_ptr, (void)workspace_ptr;
  (void)mark_ptr, (void)cutoff, (void)krf, (void)crf, (void)stream_obj;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

int64_t energy_cuda_workspace_size(int64_t n_atoms, int64_t n_items, int64_t batch,
                                   int64_t n_moved, bool delta) {
#if defined(PYSLICE_WITH_CUDA)
  return delta ? energy_delta_cuda_workspace(n_moved, batch)
               : energy_cuda_workspace(n_atoms, n_items, batch);
#else
  (void)n_atoms, (void)n_items, (void)batch, (void)n_moved, (void)delta;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

}  // namespace

void register_energy(py::module_& m) {
  m.def("energy_cpu", &energy_cpu, py::arg("tables"), py::arg("positions"), py::arg("out"),
        py::arg("cutoff"), py::arg("krf"), py::arg("crf"),
        R"doc(energy_cpu(tables: dict, positions: numpy.ndarray, out: numpy.ndarray, cutoff: float, krf: float, crf: float) -> None

Per-term force-field energies, in parallel (OpenMP), without the GIL: out[b] = (bond, angle,
torsion, coulomb, lennard_jones) in kJ/mol of conformation b.

tables: pyslice.energy.EnergyTables fields as numpy arrays (charge, half_sigma, two_sqrt_eps in
    the dtype of positions; parameters float64; atoms, ptr and idx arrays int64), checked here.
positions: (B, N, 3) float32 or float64, C-contiguous (nm). out: (B, 5) float64, writable.
cutoff: 0 for NoCutoff, else r_c (nm) of CutoffNonPeriodic with reaction-field krf, crf.
)doc");
  m.def("energy_delta_cpu", &energy_delta_cpu, py::arg("tables"), py::arg("positions"),
        py::arg("new_positions"), py::arg("moved"), py::arg("out"), py::arg("cutoff"),
        py::arg("krf"), py::arg("crf"),
        R"doc(energy_delta_cpu(tables: dict, positions: numpy.ndarray, new_positions: numpy.ndarray, moved: numpy.ndarray, out: numpy.ndarray, cutoff: float, krf: float, crf: float) -> None

Per-term energy change when the atoms moved[b] (int64 (B, M), -1 = padding, unique per row) go
from positions[b] to new_positions[b] while every other atom stays at positions[b]; only the terms
that touch a moved atom are evaluated (O(M N) per conformation). Arguments as energy_cpu.
)doc");
  m.def("energy_cuda", &energy_cuda, py::arg("ptrs"), py::arg("sizes"), py::arg("f64"),
        py::arg("positions_ptr"), py::arg("batch"), py::arg("out_ptr"), py::arg("workspace_ptr"),
        py::arg("cutoff"), py::arg("krf"), py::arg("crf"), py::arg("stream"),
        R"doc(energy_cuda(ptrs: dict, sizes: dict, f64: bool, positions_ptr: int, batch: int, out_ptr: int, workspace_ptr: int, cutoff: float, krf: float, crf: float, stream: int) -> None

energy_cpu on the GPU: ptrs maps the EnergyTables field names to device pointers, sizes holds
n_atoms, n_exceptions, n_bonds, n_angles, n_torsions; workspace_ptr -> energy_cuda_workspace_size
doubles. Launches on ``stream`` and returns without synchronising.
)doc");
  m.def("energy_delta_cuda", &energy_delta_cuda, py::arg("ptrs"), py::arg("sizes"),
        py::arg("f64"), py::arg("positions_ptr"), py::arg("new_positions_ptr"),
        py::arg("moved_ptr"), py::arg("batch"), py::arg("n_moved"), py::arg("out_ptr"),
        py::arg("workspace_ptr"), py::arg("mark_ptr"), py::arg("cutoff"), py::arg("krf"),
        py::arg("crf"), py::arg("stream"),
        R"doc(energy_delta_cuda(ptrs, sizes, f64, positions_ptr, new_positions_ptr, moved_ptr, batch, n_moved, out_ptr, workspace_ptr, mark_ptr, cutoff, krf, crf, stream) -> None

energy_delta_cpu on the GPU; mark_ptr -> (B, N) int32 zeros (scratch, left zeroed).
)doc");
  m.def("energy_cuda_workspace_size", &energy_cuda_workspace_size, py::arg("n_atoms"),
        py::arg("n_items"), py::arg("batch"), py::arg("n_moved"), py::arg("delta"),
        "energy_cuda_workspace_size(n_atoms: int, n_items: int, batch: int, n_moved: int, "
        "delta: bool) -> int\n\nDoubles of workspace that energy_cuda / energy_delta_cuda need.");
}

}  // namespace pyslice
