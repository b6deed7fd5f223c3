// What the bindings ask of the CUDA runtime (csrc/cuda/device.cu; no pybind11, no CUDA headers).
#pragma once
#include <utility>
#include <vector>

namespace pyslice {

#if defined(PYSLICE_WITH_CUDA)
// Number of usable CUDA devices; 0 when there is no driver or no device.
int cuda_device_count();

// Throws std::invalid_argument unless every non-null pointer is CUDA device (or managed) memory on
// `device`; std::runtime_error when the CUDA runtime cannot tell (no driver, no device).
void check_device_pointers(int device,
                           const std::vector<std::pair<const void*, const char*>>& pointers);
#endif

}  // namespace pyslice
