// Bindings and argument checks for the fused Metropolis-Hastings step (decision:
// pyslice/metropolis.h; launchers: cpu/metropolis.cpp, cuda/metropolis.cu).
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings.h"
#include "metropolis_ops.h"

namespace pyslice {
namespace {

constexpr uint64_t kMaxUint64 = 0xFFFFFFFFFFFFFFFFull;
constexpr uint64_t kMaxStep = (1ull << 63) - 1;  // the stream keeps 31 bits of step div 2^32

double check_beta(const py::object& beta_obj) {
  const double beta = beta_obj.cast<double>();
  if (!std::isfinite(beta) || beta <= 0.0) {
    throw py::value_error("beta must be finite and > 0, got " + args::repr_of(beta_obj));
  }
  return beta;
}

// A float32 or float64 array named `name` with `ndim` dims; `is_double` tells which.
py::array float_array(const py::object& value, const char* name, py::ssize_t ndim, bool writable,
                      bool& is_double) {
  is_double = args::is_float64_array(value);
  return is_double ? args::float64_array(value, name, ndim, writable)
                   : args::float32_array(value, name, ndim, writable);
}

void require_shape(const py::array& array, const char* name, py::ssize_t rows,
                   py::ssize_t cols = -1) {
  const bool ok = array.shape(0) == rows && (cols < 0 || array.shape(1) == cols);
  if (!ok) {
    throw py::value_error(std::string(name) + " has shape " + args::shape_string(array) +
                          ", which does not match the chain state (" + std::to_string(rows) +
                          (cols < 0 ? "" : ", " + std::to_string(cols)) + ")");
  }
}

template <typename Chi, typename Energy>
MetropolisArrays<Chi, Energy> host_arrays(py::array& chi, const py::array& chi_new,
                                          py::array& energy, const py::array& energy_new,
                                          py::array& log_weight, const py::array& log_weight_new,
                                          py::array& latent, const py::array& latent_new,
                                          py::array& accepted_count, py::array& accepted) {
  return MetropolisArrays<Chi, Energy>{
      static_cast<Chi*>(chi.mutable_data()),
      static_cast<const Chi*>(chi_new.data()),
      static_cast<Energy*>(energy.mutable_data()),
      static_cast<const Energy*>(energy_new.data()),
      static_cast<Energy*>(log_weight.mutable_data()),
      static_cast<const Energy*>(log_weight_new.data()),
      static_cast<int64_t*>(latent.mutable_data()),
      static_cast<const int64_t*>(latent_new.data()),
      static_cast<int64_t*>(accepted_count.mutable_data()),
      static_cast<uint8_t*>(accepted.mutable_data()),
      chi.shape(0),
      chi.shape(1),
      latent.shape(1)};
}

void metropolis_step_cpu(const py::object& chi_obj, const py::object& chi_new_obj,
                         const py::object& energy_obj, const py::object& energy_new_obj,
                         const py::object& log_weight_obj, const py::object& log_weight_new_obj,
                         const py::object& latent_obj, const py::object& latent_new_obj,
                         const py::object& accepted_count_obj, const py::object& accepted_obj,
                         const py::object& beta_obj, const py::object& seed_obj,
                         const py::object& step_obj) {
  bool chi_double = false, chi_new_double = false, e_double = false, other_double = false;
  py::array chi = float_array(chi_obj, "chi", 2, true, chi_double);
  const py::array chi_new = float_array(chi_new_obj, "chi_new", 2, false, chi_new_double);
  py::array energy = float_array(energy_obj, "energy", 1, true, e_double);
  if (chi_new_double != chi_double) throw py::type_error("chi_new must have chi's dtype");
  const auto same_energy_dtype = [&](const py::object& value, const char* name, bool writable) {
    py::array array = float_array(value, name, 1, writable, other_double);
    if (other_double != e_double) {
      throw py::type_error(std::string(name) + " must have energy's dtype");
    }
    return array;
  };
  const py::array energy_new = same_energy_dtype(energy_new_obj, "energy_new", false);
  py::array log_weight = same_energy_dtype(log_weight_obj, "log_weight", true);
  const py::array log_weight_new = same_energy_dtype(log_weight_new_obj, "log_weight_new", false);
  py::array latent = args::int64_array(latent_obj, "latent", 2, true);
  const py::array latent_new = args::int64_array(latent_new_obj, "latent_new", 2, false);
  py::array accepted_count = args::int64_array(accepted_count_obj, "accepted_count", 1, true);
  py::array accepted =
      args::typed_array(accepted_obj, "accepted", py::dtype::of<bool>(), "bool", 1, true);

  const py::ssize_t n = chi.shape(0);
  require_shape(chi_new, "chi_new", n, chi.shape(1));
  for (const auto& [array, name] : {std::pair<const py::array*, const char*>{&energy, "energy"},
                                    {&energy_new, "energy_new"},
                                    {&log_weight, "log_weight"},
                                    {&log_weight_new, "log_weight_new"},
                                    {&accepted_count, "accepted_count"},
                                    {&accepted, "accepted"}}) {
    require_shape(*array, name, n);
  }
  require_shape(latent, "latent", n);
  require_shape(latent_new, "latent_new", n, latent.shape(1));
  const double beta = check_beta(beta_obj);
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const uint64_t step = args::to_uint64(step_obj, "step", kMaxStep, "[0, 2**63)");
  if (n == 0) return;

  py::gil_scoped_release release;
  if (chi_double && e_double) {
    metropolis_step_cpu_launch(host_arrays<double, double>(chi, chi_new, energy, energy_new,
                                                           log_weight, log_weight_new, latent,
                                                           latent_new, accepted_count, accepted),
                               beta, seed, step);
  } else if (chi_double) {
    metropolis_step_cpu_launch(host_arrays<double, float>(chi, chi_new, energy, energy_new,
                                                          log_weight, log_weight_new, latent,
                                                          latent_new, accepted_count, accepted),
                               beta, seed, step);
  } else if (e_double) {
    metropolis_step_cpu_launch(host_arrays<float, double>(chi, chi_new, energy, energy_new,
                                                          log_weight, log_weight_new, latent,
                                                          latent_new, accepted_count, accepted),
                               beta, seed, step);
  } else {
    metropolis_step_cpu_launch(host_arrays<float, float>(chi, chi_new, energy, energy_new,
                                                         log_weight, log_weight_new, latent,
                                                         latent_new, accepted_count, accepted),
                               beta, seed, step);
  }
}

#if defined(PYSLICE_WITH_CUDA)
template <typename T>
T* pointer(const py::dict& ptrs, const char* name) {
  const uint64_t value = args::to_uint64(ptrs[name], name, kMaxUint64, "[0, 2**64)");
  if (value % alignof(T) != 0) {
    throw py::value_error(std::string(name) + " must be aligned to " +
                          std::to_string(alignof(T)) + " bytes");
  }
  return reinterpret_cast<T*>(static_cast<uintptr_t>(value));
}

template <typename Chi, typename Energy>
MetropolisArrays<Chi, Energy> device_arrays(const py::dict& p, int64_t n, int64_t n_chi,
                                            int64_t n_latent) {
  return MetropolisArrays<Chi, Energy>{
      pointer<Chi>(p, "chi"),           pointer<const Chi>(p, "chi_new"),
      pointer<Energy>(p, "energy"),     pointer<const Energy>(p, "energy_new"),
      pointer<Energy>(p, "log_weight"), pointer<const Energy>(p, "log_weight_new"),
      pointer<int64_t>(p, "latent"),    pointer<const int64_t>(p, "latent_new"),
      pointer<int64_t>(p, "accepted_count"), pointer<uint8_t>(p, "accepted"),
      n, n_chi, n_latent};
}
#endif

void metropolis_step_cuda(const py::dict& pointers, const py::object& n_obj,
                          const py::object& n_chi_obj, const py::object& n_latent_obj,
                          const py::object& chi_double_obj, const py::object& energy_double_obj,
                          const py::object& beta_obj, const py::object& seed_obj,
                          const py::object& step_obj, const py::object& stream_obj) {
#if defined(PYSLICE_WITH_CUDA)
  const int64_t n = args::to_int64(n_obj, "n_chains", 0);
  const int64_t n_chi = args::to_int64(n_chi_obj, "n_chi", 0);
  const int64_t n_latent = args::to_int64(n_latent_obj, "n_latent", 0);
  const bool chi_double = args::to_bool(chi_double_obj, "chi_double");
  const bool e_double = args::to_bool(energy_double_obj, "energy_double");
  const double beta = check_beta(beta_obj);
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const uint64_t step = args::to_uint64(step_obj, "step", kMaxStep, "[0, 2**63)");
  auto* stream = reinterpret_cast<void*>(static_cast<uintptr_t>(
      args::to_uint64(stream_obj, "stream", kMaxUint64, "[0, 2**64)")));
  for (const char* name : {"chi", "chi_new", "energy", "energy_new", "log_weight",
                           "log_weight_new", "latent", "latent_new", "accepted_count",
                           "accepted"}) {
    if (!pointers.contains(name)) {
      throw py::value_error(std::string("pointers must contain '") + name + "'");
    }
  }
  if (n == 0) return;
  py::gil_scoped_release release;
  if (chi_double && e_double) {
    metropolis_step_cuda_launch(device_arrays<double, double>(pointers, n, n_chi, n_latent), beta,
                                seed, step, stream);
  } else if (chi_double) {
    metropolis_step_cuda_launch(device_arrays<double, float>(pointers, n, n_chi, n_latent), beta,
                                seed, step, stream);
  } else if (e_double) {
    metropolis_step_cuda_launch(device_arrays<float, double>(pointers, n, n_chi, n_latent), beta,
                                seed, step, stream);
  } else {
    metropolis_step_cuda_launch(device_arrays<float, float>(pointers, n, n_chi, n_latent), beta,
                                seed, step, stream);
  }
#else
  (void)pointers, (void)n_obj, (void)n_chi_obj, (void)n_latent_obj, (void)chi_double_obj;
  (void)energy_double_obj, (void)beta_obj, (void)seed_obj, (void)step_obj, (void)stream_obj;
  throw std::runtime_error("pyslice._C was built without CUDA");
#endif
}

}  // namespace

void register_metropolis(py::module_& m) {
  m.def("metropolis_step_cpu", &metropolis_step_cpu, py::arg("chi"), py::arg("chi_new"),
        py::arg("energy"), py::arg("energy_new"), py::arg("log_weight"),
        py::arg("log_weight_new"), py::arg("latent"), py::arg("latent_new"),
        py::arg("accepted_count"), py::arg("accepted"), py::arg("beta"), py::arg("seed"),
        py::arg("step"),
        R"doc(Fused batched Metropolis-Hastings step on numpy arrays, in place (see
csrc/include/pyslice/metropolis.h). chi, chi_new: (B, n_chi) float32|float64; energy,
energy_new, log_weight, log_weight_new: (B,) float32|float64 (one dtype); latent, latent_new:
(B, n_latent) int64; accepted_count: (B,) int64; accepted: (B,) bool, written for every chain.
beta > 0; seed in [0, 2**64); step in [0, 2**63).)doc");
  m.def("metropolis_step_cuda", &metropolis_step_cuda, py::arg("pointers"), py::arg("n_chains"),
        py::arg("n_chi"), py::arg("n_latent"), py::arg("chi_double"), py::arg("energy_double"),
        py::arg("beta"), py::arg("seed"), py::arg("step"), py::arg("stream"),
        R"doc(The CUDA version on raw device pointers: ``pointers`` maps the array names of
metropolis_step_cpu to ints (data_ptr()); runs on ``stream`` without synchronising.)doc");
}

}  // namespace pyslice
