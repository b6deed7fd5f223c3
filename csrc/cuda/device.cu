// The CUDA runtime queries of the bindings (csrc/device.h).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common.cuh"
#include "device.h"

namespace pyslice {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so that later calls start clean
    return 0;
  }
  return count;
}

void check_device_pointers(int device,
                           const std::vector<std::pair<const void*, const char*>>& pointers) {
  bool any = false;
  for (const auto& entry : pointers) any = any || entry.first != nullptr;
  if (!any) return;  // only empty buffers: nothing is read or written
  const int holder = cuda::common_device(pointers);
  if (holder != device) {
    throw std::invalid_argument("the tensors are described as on cuda:" + std::to_string(device) +
                                " but their memory is on cuda:" + std::to_string(holder));
  }
}

}  // namespace pyslice
