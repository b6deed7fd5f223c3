// pyslice._C: the compiled module. Each op file registers its functions (register_<op>).
#include <string>

#include "bindings.h"

#if defined(PYSLICE_WITH_OPENMP)
#include <omp.h>
#endif

#if defined(PYSLICE_WITH_CUDA)
#include "vonmises_ops.h"
#endif

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

constexpr bool kCudaCompiled =
#if defined(PYSLICE_WITH_CUDA)
    true;
#else
    false;
#endif

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

  pyslice::register_vonmises(m);
  pyslice::register_energy(m);
  pyslice::register_build(m);
  pyslice::register_metropolis(m);
}
