// CUDA launcher for the von Mises mixture sampler: the maths lives in pyslice/vonmises.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "pyslice/vonmises.h"
#include "vonmises_ops.h"

namespace pyslice {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    sample_mixture_kernel(const float* __restrict__ table, int64_t rows, int64_t n_components,
                          float* __restrict__ out, int64_t n, uint64_t seed, uint32_t offset,
                          bool pi_periodic) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = sample_mixture_element(table, rows, n_components, i, seed, offset, pi_periodic);
  }
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("pyslice._C: ") + what + " failed: " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

// The device that holds `ptr`; throws std::invalid_argument when it is not device memory.
int device_of(const void* ptr, const char* name) {
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, ptr), "cudaPointerGetAttributes");
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw std::invalid_argument(std::string(name) +
                                " must point to CUDA device (or managed) memory, but it does not");
  }
  return attributes.device;
}

// Makes `device` current for the launch and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

void sample_mixture_cuda_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                                int64_t n, uint64_t seed, uint32_t offset, bool pi_periodic,
                                void* stream) {
  if (n == 0) return;
  const int out_device = device_of(out, "out_ptr");
  const int table_device = device_of(table, "table_ptr");
  if (out_device != table_device) {
    throw std::invalid_argument("table_ptr (device " + std::to_string(table_device) +
                                ") and out_ptr (device " + std::to_string(out_device) +
                                ") must be on the same CUDA device");
  }
  DeviceGuard guard(out_device);
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, out_device),
        "cudaDeviceGetAttribute");
  // Enough blocks to fill the GPU (8 resident blocks of 256 threads per SM), no more: the
  // grid-stride loop covers the rest. The output does not depend on the grid.
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * 8;
  const unsigned int blocks = static_cast<unsigned int>(wanted < cap ? wanted : cap);
  sample_mixture_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      table, rows, n_components, out, n, seed, offset, pi_periodic);
  check(cudaGetLastError(), "launching sample_mixture_kernel");
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so that later calls start clean
    return 0;
  }
  return count;
}

}  // namespace pyslice
