// CPU launcher for the side-chain builder: the maths lives in pyslice/build.h.
#include <algorithm>
#include <cstdint>

#include "build_ops.h"
#include "pyslice/build.h"

namespace pyslice {
namespace {

template <typename T>
void build_cpu(const BuildArgs<T>& a) {
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
    // Serially within a conformation, each chi's rotation is made once, from the positions
    // as they stand after the lower levels.
    for (int level = 0; level < build::kLevels; ++level) {
      int64_t current = -1;
      build::Rotation<T> rotation{};
      for (int64_t m = a.level_start[level]; m < a.level_start[level + 1]; ++m) {
        const int64_t j = a.move_chi[m];
        if (j != current) {
          rotation = build::chi_rotation(out, chi, a.chi_ref, a.axis, j);
          current = j;
        }
        build::rotate_point(rotation, out + 3 * a.move_atom[m]);
      }
    }
  }
}

}  // namespace

void build_cpu_launch(const BuildArgs<float>& args) { build_cpu(args); }
void build_cpu_launch(const BuildArgs<double>& args) { build_cpu(args); }

}  // namespace pyslice
