// CUDA launcher of the fused Metropolis-Hastings step: the decision lives in pyslice/metropolis.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "metropolis_ops.h"
#include "pyslice/metropolis.h"

namespace pyslice {
namespace {

constexpr int kThreads = 256;

template <typename Chi, typename Energy>
__global__ void __launch_bounds__(kThreads)
    metropolis_step_kernel(MetropolisArrays<Chi, Energy> a, double beta, uint64_t seed,
                           uint64_t step) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < a.n_chains;
       b += stride) {
    metropolis_chain_step(a, b, beta, seed, step);
  }
}

}  // namespace

template <typename Chi, typename Energy>
void metropolis_step_cuda_launch(const MetropolisArrays<Chi, Energy>& a, double beta,
                                 uint64_t seed, uint64_t step, void* stream) {
  if (a.n_chains == 0) return;
  // One device must hold every buffer (empty buffers may be null and are skipped).
  const void* buffers[] = {a.chi, a.chi_new, a.energy, a.energy_new, a.log_weight, a.log_weight_new, a.latent, a.latent_new, a.accepted_count, a.accepted};
  const char* names[] = {"chi", "chi_new", "energy", "energy_new", "log_weight", "log_weight_new", "latent", "latent_new", "accepted_count", "accepted"};
  int device = -1;
  for (int i = 0; i < 10; ++i) {
    if (buffers[i] == nullptr) continue;
    const int here = cuda::device_of(buffers[i], names[i]);
    if (device >= 0 && here != device) {
      throw std::invalid_argument(std::string(names[i]) + " is on another CUDA device than chi");
    }
    device = here;
  }
  cuda::DeviceGuard guard(device);
  const unsigned int blocks = cuda::grid_size(a.n_chains, kThreads, 8, device);
  metropolis_step_kernel<Chi, Energy>
      <<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a, beta, seed, step);
  cuda::check(cudaGetLastError(), "launching metropolis_step_kernel");
}

template void metropolis_step_cuda_launch<float, float>(const MetropolisArrays<float, float>&,
                                                        double, uint64_t, uint64_t, void*);
template void metropolis_step_cuda_launch<float, double>(const MetropolisArrays<float, double>&,
                                                         double, uint64_t, uint64_t, void*);
template void metropolis_step_cuda_launch<double, float>(const MetropolisArrays<double, float>&,
                                                         double, uint64_t, uint64_t, void*);
template void metropolis_step_cuda_launch<double, double>(const MetropolisArrays<double, double>&,
                                                          double, uint64_t, uint64_t, void*);

}  // namespace pyslice
