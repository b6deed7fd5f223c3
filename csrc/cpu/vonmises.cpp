// CPU launcher for the von Mises mixture sampler: the maths lives in pyslice/vonmises.h.
#include <cstdint>

#include "pyslice/vonmises.h"
#include "vonmises_ops.h"

namespace pyslice {

void sample_mixture_cpu_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                               int64_t n, uint64_t seed, uint32_t offset, uint64_t base,
                               bool pi_periodic) {
  // Each element depends only on (seed, offset, i): the result does not depend on the number of
  // threads or on the schedule. Small batches stay on the calling thread.
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (n >= 2048)
#endif
  for (int64_t i = 0; i < n; ++i) {
    out[i] = sample_mixture_element(table, rows, n_components, i, seed, offset, base, pi_periodic);
  }
}

}  // namespace pyslice
