// Launchers of the fused Metropolis-Hastings step (no pybind11, no CUDA headers here).
// chi, energy, log_weight, latent, accepted_count: updated in place where a chain accepts.
// csrc/metropolis.cpp checks the arguments and calls these; they trust what they are given.
#pragma once
#include <cstdint>

#include "pyslice/metropolis.h"  // MetropolisArrays

namespace pyslice {

template <typename Chi, typename Energy>
void metropolis_step_cpu_launch(const MetropolisArrays<Chi, Energy>& a, uint64_t seed,
                                uint64_t step, uint64_t chain_offset);

#if defined(PYSLICE_WITH_CUDA)
// The same on CUDA device `device`, one thread per chain (grid-stride), on `stream`; no host
// synchronisation.
template <typename Chi, typename Energy>
void metropolis_step_cuda_launch(const MetropolisArrays<Chi, Energy>& a, uint64_t seed,
                                 uint64_t step, uint64_t chain_offset, int device, void* stream);
#endif

}  // namespace pyslice
