// CUDA launcher for the von Mises mixture sampler: the maths lives in pyslice/vonmises.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "pyslice/vonmises.h"
#include "vonmises_ops.h"

namespace pyslice {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    sample_mixture_kernel(const float* __restrict__ table, int64_t rows, int64_t n_components,
                          float* __restrict__ out, int64_t n, uint64_t seed, uint32_t offset,
                          uint64_t base, bool pi_periodic) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = sample_mixture_element(table, rows, n_components, i, seed, offset, base, pi_periodic);
  }
}

}  // namespace

void sample_mixture_cuda_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                                int64_t n, uint64_t seed, uint32_t offset, uint64_t base,
                                bool pi_periodic, int device, void* stream) {
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  // Enough blocks to fill the GPU (8 resident blocks of 256 threads per SM), no more: the
  // grid-stride loop covers the rest. The output does not depend on the grid.
  const unsigned int blocks = cuda::grid_size(n, kThreads, 8, device);
  sample_mixture_kernel<<<blocks, kThreads, 0, cuda::stream_of(stream)>>>(
      table, rows, n_components, out, n, seed, offset, base, pi_periodic);
  cuda::check_launch("sample_mixture_kernel");
}

}  // namespace pyslice
