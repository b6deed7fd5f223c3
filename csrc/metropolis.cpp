// Bindings of the fused Metropolis-Hastings step (decision: pyslice/metropolis.h; launchers:
// cpu/metropolis.cpp, cuda/metropolis.cu).
#include <cstdint>

#include "bindings.h"
#include "metropolis_ops.h"

namespace pyslice {
namespace {

struct StepViews {
  Tensor chi, chi_new, energy, energy_new, log_weight, log_weight_new, latent, latent_new,
      accepted_count, accepted, beta;
};

template <typename Chi, typename Energy>
MetropolisArrays<Chi, Energy> arrays(const StepViews& v) {
  return MetropolisArrays<Chi, Energy>{
      v.chi.ptr<Chi>(),          v.chi_new.ptr<const Chi>(),
      v.energy.ptr<Energy>(),    v.energy_new.ptr<const Energy>(),
      v.log_weight.ptr<Energy>(), v.log_weight_new.ptr<const Energy>(),
      v.latent.ptr<int64_t>(),   v.latent_new.ptr<const int64_t>(),
      v.accepted_count.ptr<int64_t>(), v.accepted.ptr<uint8_t>(),
      v.beta.ptr<const double>(),
      v.chi.shape[0],            v.chi.shape[1],
      v.latent.shape[1]};
}

template <typename Chi, typename Energy>
void launch(const StepViews& v, uint64_t seed, uint64_t step, uint64_t chain_offset,
            Device device, int cuda_device, void* stream) {
  const MetropolisArrays<Chi, Energy> a = arrays<Chi, Energy>(v);
  if (device == Device::kCPU) {
    metropolis_step_cpu_launch(a, seed, step, chain_offset);
    return;
  }
#if defined(PYSLICE_WITH_CUDA)
  metropolis_step_cuda_launch(a, seed, step, chain_offset, cuda_device, stream);
#else
  (void)cuda_device, (void)stream;
#endif
}

void metropolis_step(Device device, void* stream, const py::object& chi,
                     const py::object& chi_new, const py::object& energy,
                     const py::object& energy_new, const py::object& log_weight,
                     const py::object& log_weight_new, const py::object& latent,
                     const py::object& latent_new, const py::object& accepted_count,
                     const py::object& accepted, const py::object& beta,
                     const py::object& seed_obj, const py::object& step_obj,
                     const py::object& chain_offset_obj) {
  Signature sig("metropolis_step", device);
  const auto floats = {DType::kFloat32, DType::kFloat64};
  StepViews v;
  // The dtypes of chi and of energy decide; the proposal and the weights must match them.
  v.chi = sig.tensor(chi, "chi", floats, "B C", kInPlace);
  v.chi_new = sig.tensor(chi_new, "chi_new", {v.chi.dtype}, "B C");
  v.energy = sig.tensor(energy, "energy", floats, "B", kInPlace);
  v.energy_new = sig.tensor(energy_new, "energy_new", {v.energy.dtype}, "B");
  v.log_weight = sig.tensor(log_weight, "log_weight", {v.energy.dtype}, "B", kInPlace);
  v.log_weight_new = sig.tensor(log_weight_new, "log_weight_new", {v.energy.dtype}, "B");
  v.latent = sig.tensor(latent, "latent", {DType::kInt64}, "B L", kInPlace);
  v.latent_new = sig.tensor(latent_new, "latent_new", {DType::kInt64}, "B L");
  v.accepted_count = sig.tensor(accepted_count, "accepted_count", {DType::kInt64}, "B", kInPlace);
  v.accepted = sig.tensor(accepted, "accepted", {DType::kBool}, "B", kOutput);
  // Per chain: finite and > 0 is the caller's guarantee (pyslice.mcmc.metropolis_step checks).
  v.beta = sig.tensor(beta, "beta", {DType::kFloat64}, "B");
  const uint64_t seed = args::to_uint64(seed_obj, "seed", kMaxUint64, "[0, 2**64)");
  const uint64_t step = args::to_uint64(step_obj, "step", kMaxStep, "[0, 2**63)");
  const uint64_t chain_offset =
      args::to_uint64(chain_offset_obj, "chain_offset", kMaxStep, "[0, 2**63)");
  if (sig.dim('B') == 0) return;
  const int cuda_device = device == Device::kCUDA ? sig.cuda_device() : -1;
  const bool chi_double = v.chi.dtype == DType::kFloat64;
  const bool energy_double = v.energy.dtype == DType::kFloat64;
  py::gil_scoped_release release;
  if (chi_double && energy_double) {
    launch<double, double>(v, seed, step, chain_offset, device, cuda_device, stream);
  } else if (chi_double) {
    launch<double, float>(v, seed, step, chain_offset, device, cuda_device, stream);
  } else if (energy_double) {
    launch<float, double>(v, seed, step, chain_offset, device, cuda_device, stream);
  } else {
    launch<float, float>(v, seed, step, chain_offset, device, cuda_device, stream);
  }
}

}  // namespace

void register_metropolis(py::module_& m) {
  def_op(m, "metropolis_step", &metropolis_step,
         "chi: Tensor, chi_new: Tensor, energy: Tensor, energy_new: Tensor, log_weight: Tensor, "
         "log_weight_new: Tensor, latent: Tensor, latent_new: Tensor, accepted_count: Tensor, "
         "accepted: Tensor, beta: Tensor, seed: int, step: int, chain_offset: int",
         R"doc(
Fused batched Metropolis-Hastings step, in place (csrc/include/pyslice/metropolis.h): chain b
takes its proposal when log u < -beta[b] (energy_new - energy) + log_weight_new - log_weight, u in
(0, 1) from Philox (seed, chain_offset + b, step) with 52 random bits; then chi, energy,
log_weight, latent take the proposal's row and accepted_count[b] += 1. accepted[b] is written
for every chain.

chi, chi_new: (B, n_chi) float32|float64 (one dtype); energy, energy_new, log_weight,
log_weight_new: (B,) float32|float64 (one dtype); latent, latent_new: (B, n_latent) int64;
accepted_count: (B,) int64; accepted: (B,) bool; beta: (B,) float64, finite, > 0; seed in
[0, 2**64); step and chain_offset in [0, 2**63).
)doc",
         "chi", "chi_new", "energy", "energy_new", "log_weight", "log_weight_new", "latent",
         "latent_new", "accepted_count", "accepted", "beta", "seed", "step", "chain_offset");
}

}  // namespace pyslice
