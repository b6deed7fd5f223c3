// CUDA launcher for the side-chain builder: the schedule only; the move lives in pyslice/build.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "build_ops.h"
#include "common.cuh"
#include "pyslice/build.h"

namespace pyslice {
namespace {

constexpr int kThreads = 128;

// One block per conformation (grid-stride over conformations). Its threads first copy the
// reference, then take the moves of each level in turn; a level's moves touch distinct atoms and
// never an axis atom of that level (build.h), so they run in parallel, and the barrier makes the
// level's writes visible to the next.
template <typename T>
__global__ void __launch_bounds__(kThreads) build_kernel(build::BuildArgs<T> a) {
  const int64_t stride = 3 * a.n_atoms;
  for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
    T* out = a.out + b * stride;
    const T* chi = a.chi + b * a.n_chi;
    for (int64_t i = threadIdx.x; i < stride; i += blockDim.x) out[i] = a.positions[i];
    __syncthreads();
    for (int level = 0; level < build::kLevels; ++level) {
      build::RotationCache<T> cache;
      for (int64_t m = a.level_start[level] + threadIdx.x; m < a.level_start[level + 1];
           m += blockDim.x) {
        build::apply_move(a, out, chi, m, cache);
      }
      __syncthreads();
    }
  }
}

template <typename T>
void build_cuda(const build::BuildArgs<T>& a, int device, void* stream) {
  if (a.batch == 0 || a.n_atoms == 0) return;
  cuda::DeviceGuard guard(device);
  // One block per conformation, at most 16 resident blocks per SM; the loop covers the rest.
  const unsigned int blocks = cuda::grid_size(a.batch * kThreads, kThreads, 16, device);
  build_kernel<T><<<blocks, kThreads, 0, cuda::stream_of(stream)>>>(a);
  cuda::check_launch("build_kernel");
}

}  // namespace

void build_cuda_launch(const build::BuildArgs<float>& args, int device, void* stream) {
  build_cuda(args, device, stream);
}
void build_cuda_launch(const build::BuildArgs<double>& args, int device, void* stream) {
  build_cuda(args, device, stream);
}

}  // namespace pyslice
