// Internal launchers for the fused Metropolis-Hastings step (no pybind11, no CUDA headers).
// csrc/metropolis.cpp checks the arguments and calls these; they trust what they are given.
#pragma once
#include <cstdint>

namespace pyslice {

// The chain state and its proposal, all arrays contiguous, B chains. Updated in place where a
// chain accepts: chi (B, n_chi), energy (B,), log_weight (B,), latent (B, n_latent) int64 and
// accepted_count (B,) int64 (+1); accepted (B,) uint8 is written for every chain.
template <typename Chi, typename Energy>
struct MetropolisArrays {
  Chi* chi;
  const Chi* chi_new;
  Energy* energy;
  const Energy* energy_new;
  Energy* log_weight;
  const Energy* log_weight_new;
  int64_t* latent;
  const int64_t* latent_new;
  int64_t* accepted_count;
  uint8_t* accepted;
  int64_t n_chains;
  int64_t n_chi;
  int64_t n_latent;
};

template <typename Chi, typename Energy>
void metropolis_step_cpu_launch(const MetropolisArrays<Chi, Energy>& a, double beta, uint64_t seed,
                                uint64_t step);

#if defined(PYSLICE_WITH_CUDA)
// The same on the GPU, one thread per chain, on `stream`; no host synchronisation.
template <typename Chi, typename Energy>
void metropolis_step_cuda_launch(const MetropolisArrays<Chi, Energy>& a, double beta,
                                 uint64_t seed, uint64_t step, void* stream);
#endif

}  // namespace pyslice
