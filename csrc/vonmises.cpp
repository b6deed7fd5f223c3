// Bindings of the von Mises mixture sampler (maths: pyslice/vonmises.h; launchers:
// cpu/vonmises.cpp, cuda/vonmises.cu) and of the Philox generator.
#include <cstdint>

#include "bindings.h"
#include "pyslice/philox.h"
#include "vonmises_ops.h"

namespace pyslice {
namespace {

void sample_mixture(Device device, void* stream, const py::object& table_obj,
                    const py::object& out_obj, const py::object& seed_obj,
                    const py::object& offset_obj, const py::object& base_obj,
                    const py::object& pi_periodic_obj) {
  Signature sig("sample_mixture", device);
  const Tensor table = sig.tensor(table_obj, "table", {DType::kFloat32}, "6 R K");
  if (sig.dim('R') == 0 || sig.dim('K') == 0) {
    throw py::value_error("table must have rows >= 1 and n_components >= 1, got shape " +
                          table.shape_string());
  }
  const Tensor out = sig.tensor(out_obj, "out", {DType::kFloat32}, "*", kOutput);
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const auto offset =
      static_cast<uint32_t>(args::to_uint64(offset_obj, "offset", kMaxUint32, "[0, 2**32)"));
  const uint64_t base = args::to_uint64(base_obj, "base", kMaxStep, "[0, 2**63)");
  const bool pi_periodic = args::to_bool(pi_periodic_obj, "pi_periodic");
  const int64_t rows = sig.dim('R');
  const int64_t n_components = sig.dim('K');
  const int64_t n = out.numel();
  if (n == 0) return;
  if (device == Device::kCPU) {
    py::gil_scoped_release release;
    sample_mixture_cpu_launch(table.ptr<const float>(), rows, n_components, out.ptr<float>(), n,
                              seed, offset, base, pi_periodic);
    return;
  }
#if defined(PYSLICE_WITH_CUDA)
  const int cuda_device = sig.cuda_device();
  py::gil_scoped_release release;
  sample_mixture_cuda_launch(table.ptr<const float>(), rows, n_components, out.ptr<float>(), n,
                             seed, offset, base, pi_periodic, cuda_device, stream);
#else
  (void)stream;
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
  def_op(m, "sample_mixture", &sample_mixture,
         "table: Tensor, out: Tensor, seed: int, offset: int, base: int, pi_periodic: bool",
         R"doc(
Fill ``out`` with one draw per element from von Mises mixtures. Element ``i`` uses row
``i % rows`` of the table and Philox counter ``(e mod 2**32, e div 2**32, offset, round)``,
``e = base + i``, with key ``seed``: the result depends only on (table, seed, offset, base + i),
never on threads or grid.

table: (6, rows, n_components) float32 (fields: cdf, loc, kappa, s - 1, s + 1, sigma; see
    pyslice/reference.py), rows >= 1, n_components >= 1.
out: (n,) float32 (n may be 0); angles in [-pi, pi).
seed: int in [0, 2**64). offset: int in [0, 2**32). base: int in [0, 2**63). pi_periodic: bool.
)doc",
         "table", "out", "seed", "offset", "base", "pi_periodic");

  m.def("philox4x32_10", &philox4x32_10_binding, py::arg("c0"), py::arg("c1"), py::arg("c2"),
        py::arg("c3"), py::arg("k0"), py::arg("k1"),
        R"doc(philox4x32_10(c0: int, c1: int, c2: int, c3: int, k0: int, k1: int) -> tuple[int, int, int, int]

Philox-4x32-10 of counter (c0, c1, c2, c3) and key (k0, k1), each an int in [0, 2**32): the
generator of csrc/include/pyslice/philox.h, for cross-checking other implementations.
)doc");
}

}  // namespace pyslice
