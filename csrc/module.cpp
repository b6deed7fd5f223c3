// pyslice._C: the compiled module. Each op file registers its functions (register_<op>).
#include <string>

#include "bindings.h"

#if defined(PYSLICE_WITH_OPENMP)
#include <omp.h>
#endif

#include "device.h"
#include "pyslice/energy.h"

#define PYSLICE_STRINGIFY_(x) #x
#define PYSLICE_STRINGIFY(x) PYSLICE_STRINGIFY_(x)

#ifndef PYSLICE_VERSION
#define PYSLICE_VERSION "unknown"
#endif
#ifndef PYSLICE_COMPILER
#define PYSLICE_COMPILER "unknown"
#endif
#ifndef PYSLICE_CXX_STANDARD
#define PYSLICE_CXX_STANDARD "unknown"
#endif
#ifndef PYSLICE_OPENMP_VERSION
#define PYSLICE_OPENMP_VERSION ""
#endif
#ifndef PYSLICE_CUDA_VERSION
#define PYSLICE_CUDA_VERSION ""
#endif
#ifndef PYSLICE_CUDA_ARCHS
#define PYSLICE_CUDA_ARCHS ""
#endif
#ifndef PYSLICE_BUILD_TYPE
#define PYSLICE_BUILD_TYPE "unknown"
#endif

namespace {
namespace py = pybind11;

using pyslice::kCudaCompiled;

constexpr bool kOpenMP =
#if defined(PYSLICE_WITH_OPENMP)
    true;
#else
    false;
#endif

py::object none_if_empty(const std::string& text) {
  if (text.empty()) return py::none();
  return py::str(text);
}

py::list split_commas(const std::string& text) {
  py::list items;
  std::string::size_type start = 0;
  while (start < text.size()) {
    std::string::size_type end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) items.append(py::str(text.substr(start, end - start)));
    start = end + 1;
  }
  return items;
}

py::dict build_info() {
  py::dict info;
  info["version"] = PYSLICE_VERSION;
  info["compiler"] = PYSLICE_COMPILER;
  info["cxx_standard"] = PYSLICE_CXX_STANDARD;
  info["openmp"] = kOpenMP;
  info["openmp_version"] = kOpenMP ? none_if_empty(PYSLICE_OPENMP_VERSION) : py::none();
  info["cuda"] = kCudaCompiled;
  info["cuda_version"] = kCudaCompiled ? none_if_empty(PYSLICE_CUDA_VERSION) : py::none();
  info["cuda_architectures"] = split_commas(PYSLICE_CUDA_ARCHS);
  info["build_type"] = PYSLICE_BUILD_TYPE;
  info["pybind11_version"] = PYSLICE_STRINGIFY(PYBIND11_VERSION_MAJOR) "." PYSLICE_STRINGIFY(
      PYBIND11_VERSION_MINOR) "." PYSLICE_STRINGIFY(PYBIND11_VERSION_PATCH);
  return info;
}

int num_threads() {
#if defined(PYSLICE_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int cuda_device_count() {
#if defined(PYSLICE_WITH_CUDA)
  return pyslice::cuda_device_count();
#else
  return 0;
#endif
}

// The ops of this module (each registered as <op>_cpu and <op>_cuda).
constexpr const char* kOps[] = {"sample_mixture", "metropolis_step", "build_sidechains", "energy",
                                "energy_delta"};

// The one workspace rule: an op that needs scratch memory takes a uint8 `workspace` view of this
// many bytes, which the caller allocates (pyslice._native, with torch); the compiled code
// allocates no device memory of its own. Sizes come from the op's header.
int64_t workspace_size(const py::object& op_obj, const py::object& device_obj,
                       const py::object& shape_obj) {
  namespace args = pyslice::args;
  if (!py::isinstance<py::str>(op_obj)) {
    throw py::type_error("op must be a str, got " + args::type_name(op_obj));
  }
  const std::string op = op_obj.cast<std::string>();
  bool known = false;
  std::string names;
  for (const char* name : kOps) {
    known = known || op == name;
    names += (names.empty() ? "" : ", ") + std::string(name);
  }
  if (!known) {
    throw py::value_error("op must be one of " + names + ", got " + args::repr_of(op_obj));
  }
  const std::string device =
      py::isinstance<py::str>(device_obj) ? device_obj.cast<std::string>() : std::string();
  if (device != "cpu" && device != "cuda") {
    throw py::value_error("device must be 'cpu' or 'cuda', got " + args::repr_of(device_obj));
  }
  if (!py::isinstance<py::tuple>(shape_obj) && !py::isinstance<py::list>(shape_obj)) {
    throw py::type_error("shape must be a tuple of ints, got " + args::type_name(shape_obj));
  }
  const auto shape = py::reinterpret_borrow<py::sequence>(shape_obj);
  const bool energy_op = op == "energy" || op == "energy_delta";
  const size_t rank = energy_op ? 3 : 0;
  if (py::len(shape) != rank) {
    throw py::value_error("shape must have " + std::to_string(rank) + " entries for " + op +
                          (energy_op ? " (batch, n_atoms, " +
                                           std::string(op == "energy" ? "n_items" : "n_moved") +
                                           ")"
                                     : std::string()) +
                          ", got " + args::repr_of(shape_obj));
  }
  if (!energy_op || device == "cpu") return 0;
  int64_t s[3];
  for (int k = 0; k < 3; ++k) s[k] = args::to_int64(shape[k], "shape", 0);
  return op == "energy" ? pyslice::energy::energy_workspace_bytes(s[0], s[1], s[2])
                        : pyslice::energy::delta_workspace_bytes(s[0], s[1], s[2]);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyslice's compiled kernels (C++/OpenMP, and CUDA when built with it). "
            "Import it through pyslice._compiled, never directly.";
  m.attr("__version__") = PYSLICE_VERSION;
  // The arguments are taken as Python objects and checked by hand (messages that name the
  // argument), so pybind11's generated signatures would say "object": each docstring's first line
  // is the signature instead.
  py::options options;
  options.disable_function_signatures();

  m.def("build_info", &build_info,
        "build_info() -> dict[str, object]\n\n"
        "What this module was built with: version, compiler, cxx_standard, openmp, "
        "openmp_version, cuda, cuda_version, cuda_architectures, build_type, pybind11_version.");
  m.def("cuda_compiled", []() { return kCudaCompiled; },
        "cuda_compiled() -> bool\n\n"
        "True when the CUDA kernels were compiled in (a GPU may still be missing at run time).");
  m.def("num_threads", &num_threads,
        "num_threads() -> int\n\n"
        "OpenMP's maximum number of threads (omp_get_max_threads); 1 without OpenMP.");
  m.def("cuda_device_count", &cuda_device_count,
        "cuda_device_count() -> int\n\n"
        "CUDA devices visible to this module's (static) CUDA runtime; 0 without CUDA, driver or "
        "device.");

  m.def("workspace_size", &workspace_size, py::arg("op"), py::arg("device"), py::arg("shape"),
        "workspace_size(op: str, device: str, shape: tuple[int, ...]) -> int\n\n"
        "Bytes of the uint8 `workspace` view that <op>_<device> takes: (batch, n_atoms, n_items) "
        "for 'energy' (n_items: bonds + angles + torsions + exceptions), (batch, n_atoms, "
        "n_moved) for 'energy_delta', () for the ops that take no workspace (0). 0 on the CPU.");

  pyslice::register_tensor(m);
  pyslice::register_vonmises(m);
  pyslice::register_energy(m);
  pyslice::register_build(m);
  pyslice::register_metropolis(m);
}
