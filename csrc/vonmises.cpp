// Bindings and argument checks for the von Mises mixture sampler (maths: pyslice/vonmises.h;
// launchers: cpu/vonmises.cpp, cuda/vonmises.cu).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings.h"
#include "pyslice/philox.h"
#include "vonmises_ops.h"

namespace pyslice {
namespace {

constexpr uint64_t kMaxUint32 = 0xFFFFFFFFull;
constexpr uint64_t kMaxUint64 = 0xFFFFFFFFFFFFFFFFull;

void sample_mixture_cpu(const py::object& table_obj, const py::object& out_obj,
                        const py::object& seed_obj, const py::object& offset_obj,
                        const py::object& pi_periodic_obj) {
  const py::array table = args::float32_array(table_obj, "table", 3, /*writable=*/false);
  if (table.shape(0) != 6) {
    throw py::value_error("table must have shape (6, rows, n_components), got shape " +
                          args::shape_string(table));
  }
  if (table.shape(1) == 0 || table.shape(2) == 0) {
    throw py::value_error("table must have rows >= 1 and n_components >= 1, got shape " +
                          args::shape_string(table));
  }
  py::array out = args::float32_array(out_obj, "out", 1, /*writable=*/true);
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const auto offset =
      static_cast<uint32_t>(args::to_uint64(offset_obj, "offset", kMaxUint32, "[0, 2**32)"));
  const bool pi_periodic = args::to_bool(pi_periodic_obj, "pi_periodic");
  if (args::overlaps(table, out)) {
    throw py::value_error("out must not share memory with table");
  }

  const int64_t rows = table.shape(1);
  const int64_t n_components = table.shape(2);
  const int64_t n = out.shape(0);
  if (n == 0) return;
  const auto* table_data = static_cast<const float*>(table.data());
  auto* out_data = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  sample_mixture_cpu_launch(table_data, rows, n_components, out_data, n, seed, offset,
                            pi_periodic);
}

void sample_mixture_cuda(const py::object& table_ptr_obj, const py::object& rows_obj,
                         const py::object& n_components_obj, const py::object& out_ptr_obj,
                         const py::object& n_obj, const py::object& seed_obj,
                         const py::object& offset_obj, const py::object& pi_periodic_obj,
                         const py::object& stream_obj) {
#if defined(PYSLICE_WITH_CUDA)
  const uint64_t table_ptr = args::to_uint64(table_ptr_obj, "table_ptr", kMaxUint64, "[0, 2**64)");
  const int64_t rows = args::to_int64(rows_obj, "rows", 1);
  const int64_t n_components = args::to_int64(n_components_obj, "n_components", 1);
  const uint64_t out_ptr = args::to_uint64(out_ptr_obj, "out_ptr", kMaxUint64, "[0, 2**64)");
  const int64_t n = args::to_int64(n_obj, "n", 0);
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const auto offset =
      static_cast<uint32_t>(args::to_uint64(offset_obj, "offset", kMaxUint32, "[0, 2**32)"));
  const bool pi_periodic = args::to_bool(pi_periodic_obj, "pi_periodic");
  const uint64_t stream = args::to_uint64(stream_obj, "stream", kMaxUint64, "[0, 2**64)");
  if (rows > INT64_MAX / 6 / n_components) {
    throw py::value_error("rows * n_components is too large");
  }
  if (n == 0) return;
  if (table_ptr == 0) throw py::value_error("table_ptr must not be 0 (null) when n > 0");
  if (out_ptr == 0) throw py::value_error("out_ptr must not be 0 (null) when n > 0");
  if (table_ptr % alignof(float) != 0 || out_ptr % alignof(float) != 0) {
    throw py::value_error("table_ptr and out_ptr must be aligned to 4 bytes");
  }
  const auto* table = reinterpret_cast<const float*>(static_cast<uintptr_t>(table_ptr));
  auto* out = reinterpret_cast<float*>(static_cast<uintptr_t>(out_ptr));
  auto* stream_handle = reinterpret_cast<void*>(static_cast<uintptr_t>(stream));
  // std::invalid_argument (not device memory) becomes ValueError, std::runtime_error (CUDA
  // errors) RuntimeError: pybind11's standard translation.
  py::gil_scoped_release release;
  sample_mixture_cuda_launch(table, rows, n_components, out, n, seed, offset, pi_periodic,
                             stream_handle);
#else
  (void)table_ptr_obj, (void)rows_obj, (void)n_components_obj, (void)out_ptr_obj, (void)n_obj;
  (void)seed_obj, (void)offset_obj, (void)pi_periodic_obj, (void)stream_obj;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

py::tuple philox4x32_10_binding(const py::object& c0, const py::object& c1, const py::object& c2,
                                const py::object& c3, const py::object& k0,
                                const py::object& k1) {
  auto word = [](const py::object& value, const char* name) {
    return static_cast<uint32_t>(args::to_uint64(value, name, kMaxUint32, "[0, 2**32)"));
  };
  const Philox4 r = philox4x32_10(word(c0, "c0"), word(c1, "c1"), word(c2, "c2"), word(c3, "c3"),
                                  word(k0, "k0"), word(k1, "k1"));
  return py::make_tuple(r.w[0], r.w[1], r.w[2], r.w[3]);
}

}  // namespace

void register_vonmises(py::module_& m) {
  m.def("sample_mixture_cpu", &sample_mixture_cpu, py::arg("table"), py::arg("out"),
        py::arg("seed"), py::arg("offset"), py::arg("pi_periodic"),
        R"doc(sample_mixture_cpu(table: numpy.ndarray, out: numpy.ndarray, seed: int, offset: int, pi_periodic: bool) -> None

Fill ``out`` with one draw per element from von Mises mixtures, in parallel (OpenMP), without
the GIL. Element ``i`` uses row ``i % rows`` of the table and Philox counter
``(i mod 2**32, i div 2**32, offset, round)`` with key ``seed``: the result depends only on
(table, seed, offset, i), never on the number of threads.

table: (6, rows, n_components) float32 numpy array, C-contiguous (fields: cdf, loc, kappa,
    s - 1, s + 1, sigma; see pyslice/reference.py), rows >= 1, n_components >= 1.
out: (n,) float32 numpy array, C-contiguous, writable (n may be 0); angles in [-pi, pi).
seed: int in [0, 2**64). offset: int in [0, 2**32). pi_periodic: bool.
)doc");

  m.def("sample_mixture_cuda", &sample_mixture_cuda, py::arg("table_ptr"), py::arg("rows"),
        py::arg("n_components"), py::arg("out_ptr"), py::arg("n"), py::arg("seed"),
        py::arg("offset"), py::arg("pi_periodic"), py::arg("stream"),
        R"doc(sample_mixture_cuda(table_ptr: int, rows: int, n_components: int, out_ptr: int, n: int, seed: int, offset: int, pi_periodic: bool, stream: int) -> None

The CUDA version of sample_mixture_cpu, on raw device pointers (ints, e.g. tensor.data_ptr()):
table_ptr -> (6, rows, n_components) float32 contiguous, out_ptr -> (n,) float32. Launches a
grid-stride kernel on ``stream`` (an int cudaStream_t, e.g. torch.cuda.current_stream().cuda_stream;
0 is the legacy default stream) on the device that holds out_ptr, and returns without
synchronising. Raises ValueError for bad sizes or pointers that are not device memory,
RuntimeError for CUDA errors, and RuntimeError when pyslice._C was built without CUDA.
)doc");

  m.def("philox4x32_10", &philox4x32_10_binding, py::arg("c0"), py::arg("c1"), py::arg("c2"),
        py::arg("c3"), py::arg("k0"), py::arg("k1"),
        R"doc(philox4x32_10(c0: int, c1: int, c2: int, c3: int, k0: int, k1: int) -> tuple[int, int, int, int]

Philox-4x32-10 of counter (c0, c1, c2, c3) and key (k0, k1), each an int in [0, 2**32): the
generator of csrc/include/pyslice/philox.h, for cross-checking other implementations.
)doc");
}

}  // namespace pyslice
