// CPU launcher of the fused Metropolis-Hastings step: the decision lives in pyslice/metropolis.h.
#include <cstdint>

#include "metropolis_ops.h"
#include "pyslice/metropolis.h"

namespace pyslice {

template <typename Chi, typename Energy>
void metropolis_step_cpu_launch(const MetropolisArrays<Chi, Energy>& a, double beta, uint64_t seed,
                                uint64_t step) {
  // Each chain depends only on its own row and (seed, chain, step): thread-count independent.
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (a.n_chains >= 4096)
#endif
  for (int64_t b = 0; b < a.n_chains; ++b) {
    const double log_u = metropolis_log_uniform(seed, static_cast<uint64_t>(b), step);
    const bool accept = metropolis_accept(log_u, beta, a.energy[b], a.energy_new[b],
                                          a.log_weight[b], a.log_weight_new[b]);
    a.accepted[b] = accept ? 1 : 0;
    if (!accept) continue;
    for (int64_t j = 0; j < a.n_chi; ++j) a.chi[b * a.n_chi + j] = a.chi_new[b * a.n_chi + j];
    for (int64_t j = 0; j < a.n_latent; ++j) {
      a.latent[b * a.n_latent + j] = a.latent_new[b * a.n_latent + j];
    }
    a.energy[b] = a.energy_new[b];
    a.log_weight[b] = a.log_weight_new[b];
    a.accepted_count[b] += 1;
  }
}

template void metropolis_step_cpu_launch<float, float>(const MetropolisArrays<float, float>&,
                                                       double, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<float, double>(const MetropolisArrays<float, double>&,
                                                        double, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<double, float>(const MetropolisArrays<double, float>&,
                                                        double, uint64_t, uint64_t);
template void metropolis_step_cpu_launch<double, double>(const MetropolisArrays<double, double>&,
                                                         double, uint64_t, uint64_t);

}  // namespace pyslice
