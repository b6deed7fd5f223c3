// CPU launcher for the side-chain builder: the schedule only; the move lives in pyslice/build.h.
#include <algorithm>
#include <cstdint>

#include "build_ops.h"
#include "pyslice/build.h"

namespace pyslice {
namespace {

template <typename T>
void build_cpu(const build::BuildArgs<T>& a) {
  const int64_t stride = 3 * a.n_atoms;
  // One conformation per iteration: each is independent, so the result does not depend on the
  // number of threads or the schedule. Dynamic chunks: on a shared machine a descheduled thread
  // does not hold up the others' share. Small batches stay on the calling thread.
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel for schedule(dynamic, 8) if (a.batch * (stride + a.level_start[4]) >= 32768)
#endif
  for (int64_t b = 0; b < a.batch; ++b) {
    T* out = a.out + b * stride;
    const T* chi = a.chi + b * a.n_chi;
    std::copy(a.positions, a.positions + stride, out);
    // Level by level, serially within a conformation: each chi's rotation is made once, from the
    // positions as they stand after the lower levels.
    for (int level = 0; level < build::kLevels; ++level) {
      build::RotationCache<T> cache;
      for (int64_t m = a.level_start[level]; m < a.level_start[level + 1]; ++m) {
        build::apply_move(a, out, chi, m, cache);
      }
    }
  }
}

}  // namespace

void build_cpu_launch(const build::BuildArgs<float>& args) { build_cpu(args); }
void build_cpu_launch(const build::BuildArgs<double>& args) { build_cpu(args); }

}  // namespace pyslice
