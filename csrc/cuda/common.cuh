// Helpers shared by the CUDA launchers (csrc/cuda/*.cu): error checks, the device that holds a set
// of pointers, device guard, stream handle, grid sizing and chunked launches.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pyslice {
namespace cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("pyslice._C: ") + what + " failed: " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

// After a <<<...>>> launch: a bad configuration shows up here, not at the next call.
inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), (std::string("launching ") + kernel).c_str());
}

// The device that holds `ptr`; throws std::invalid_argument when it is not device memory.
inline int device_of(const void* ptr, const char* name) {
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, ptr), "cudaPointerGetAttributes");
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw std::invalid_argument(std::string(name) +
                                " must point to CUDA device (or managed) memory, but it does not");
  }
  return attributes.device;
}

// The one device that holds all the named pointers (null pointers, of empty buffers, are skipped);
// std::invalid_argument when one is not device memory or two live on different devices, and when
// none was given.
inline int common_device(const std::vector<std::pair<const void*, const char*>>& pointers) {
  int device = -1;
  const char* first = nullptr;
  for (const auto& [ptr, name] : pointers) {
    if (ptr == nullptr) continue;
    const int here = device_of(ptr, name);
    if (first != nullptr && here != device) {
      throw std::invalid_argument(std::string(first) + " (device " + std::to_string(device) +
                                  ") and " + name + " (device " + std::to_string(here) +
                                  ") must be on the same CUDA device");
    }
    if (first == nullptr) {
      first = name;
      device = here;
    }
  }
  if (first == nullptr) throw std::invalid_argument("no device pointer was given");
  return device;
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

// The stream the bindings received as an int (0: the legacy default stream).
inline cudaStream_t stream_of(void* handle) { return static_cast<cudaStream_t>(handle); }

// ceil(work / threads) blocks for a one-item-per-thread kernel (work > 0, fits gridDim.x).
inline unsigned int blocks_for(int64_t work, int64_t threads) {
  return static_cast<unsigned int>((work + threads - 1) / threads);
}

// Enough blocks of `threads` to fill the GPU (`per_sm` resident blocks per SM) for `work` items,
// no more: grid-stride loops cover the rest. `device` must be current.
inline unsigned int grid_size(int64_t work, int64_t threads, int64_t per_sm, int device) {
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  const int64_t wanted = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * per_sm;
  return static_cast<unsigned int>(wanted < cap ? wanted : cap);
}

// launch(start, size) for consecutive chunks of at most `limit` of `total` items: for kernels that
// put the batch on a grid dimension with a limit (gridDim.y: kMaxGridY).
template <typename Launch>
void for_each_chunk(int64_t total, int64_t limit, Launch launch) {
  for (int64_t start = 0; start < total; start += limit) {
    launch(start, total - start < limit ? total - start : limit);
  }
}

}  // namespace cuda
}  // namespace pyslice
