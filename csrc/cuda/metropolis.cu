// CUDA launcher of the fused Metropolis-Hastings step: the decision lives in pyslice/metropolis.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "metropolis_ops.h"
#include "pyslice/metropolis.h"

namespace pyslice {
namespace {

constexpr int kThreads = 256;

template <typename Chi, typename Energy>
__global__ void __launch_bounds__(kThreads)
    metropolis_step_kernel(MetropolisArrays<Chi, Energy> a, uint64_t seed, uint64_t step,
                           uint64_t chain_offset) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < a.n_chains;
       b += stride) {
    metropolis_chain_step(a, b, seed, step, chain_offset);
  }
}

}  // namespace

template <typename Chi, typename Energy>
void metropolis_step_cuda_launch(const MetropolisArrays<Chi, Energy>& a, uint64_t seed,
                                 uint64_t step, uint64_t chain_offset, int device, void* stream) {
  if (a.n_chains == 0) return;
  cuda::DeviceGuard guard(device);
  const unsigned int blocks = cuda::grid_size(a.n_chains, kThreads, 8, device);
  metropolis_step_kernel<Chi, Energy>
      <<<blocks, kThreads, 0, cuda::stream_of(stream)>>>(a, seed, step, chain_offset);
  cuda::check_launch("metropolis_step_kernel");
}

template void metropolis_step_cuda_launch<float, float>(const MetropolisArrays<float, float>&,
                                                        uint64_t, uint64_t, uint64_t, int, void*);
template void metropolis_step_cuda_launch<float, double>(const MetropolisArrays<float, double>&,
                                                         uint64_t, uint64_t, uint64_t, int, void*);
template void metropolis_step_cuda_launch<double, float>(const MetropolisArrays<double, float>&,
                                                         uint64_t, uint64_t, uint64_t, int, void*);
template void metropolis_step_cuda_launch<double, double>(const MetropolisArrays<double, double>&,
                                                          uint64_t, uint64_t, uint64_t, int, void*);

}  // namespace pyslice
