// Internal launchers for the von Mises mixture sampler (no pybind11, no CUDA headers here).
// csrc/vonmises.cpp checks the arguments and calls these; they trust what they are given.
#pragma once
#include <cstdint>

namespace pyslice {

// out[i] = sample_mixture_element(table, rows, n_components, i, seed, offset, pi_periodic)
// for 0 <= i < n, in parallel with OpenMP (schedule static). Host pointers; table is
// (6, rows, n_components) float32 contiguous. Call without the GIL.
void sample_mixture_cpu_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                               int64_t n, uint64_t seed, uint32_t offset, bool pi_periodic);

#if defined(PYSLICE_WITH_CUDA)
// The same on the GPU: a grid-stride kernel (256 threads per block) on `stream` (a cudaStream_t),
// launched on the device that owns `out`; no host synchronisation. Throws std::invalid_argument
// when a pointer is not device memory (or the two live on different devices) and
// std::runtime_error with the CUDA error string when a CUDA call or the launch fails.
void sample_mixture_cuda_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                                int64_t n, uint64_t seed, uint32_t offset, bool pi_periodic,
                                void* stream);

// Number of usable CUDA devices; 0 when there is no driver or no device.
int cuda_device_count();
#endif

}  // namespace pyslice
