// CPU launcher of the fused Metropolis-Hastings step: the decision lives in pyslice/metropolis.h.
#include <cstdint>

#include "metropolis_ops.h"
#include "pyslice/metropolis.h"

namespace pyslice {

template <typename Chi, typename Energy>
void metropolis_step_cpu_launch(const MetropolisArrays<Chi, Energy>& a, uint64_t seed,
                                uint64_t step, uint64_t chain_offset) {
  // Each chain depends only on its own row and (seed, chain, step): thread-count independent.
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (a.n_chains >= 4096)
#endif
  for (int64_t b = 0; b < a.n_chains; ++b) {
    metropolis_chain_step(a, b, seed, step, chain_offset);
  }
}

template void metropolis_step_cpu_launch<float, float>(const MetropolisArrays<float, float>&,
                                                       uint64_t, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<float, double>(const MetropolisArrays<float, double>&,
                                                        uint64_t, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<double, float>(const MetropolisArrays<double, float>&,
                                                        uint64_t, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<double, double>(const MetropolisArrays<double, double>&,
                                                         uint64_t, uint64_t, uint64_t);

}  // namespace pyslice
