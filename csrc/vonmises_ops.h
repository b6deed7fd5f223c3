// Launchers of the von Mises mixture sampler (no pybind11, no CUDA headers here).
// csrc/vonmises.cpp checks the arguments and calls these; they trust what they are given.
#pragma once
#include <cstdint>

namespace pyslice {

// out[i] = sample_mixture_element(table, rows, n_components, i, seed, offset, base, pi_periodic)
// for 0 <= i < n, in parallel with OpenMP (schedule static). Host pointers; table is
// (6, rows, n_components) float32 contiguous. Call without the GIL.
void sample_mixture_cpu_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                               int64_t n, uint64_t seed, uint32_t offset, uint64_t base,
                               bool pi_periodic);

#if defined(PYSLICE_WITH_CUDA)
// The same on CUDA device `device`: a grid-stride kernel (256 threads per block) on `stream` (a
// cudaStream_t); no host synchronisation. std::runtime_error when a CUDA call fails.
void sample_mixture_cuda_launch(const float* table, int64_t rows, int64_t n_components, float* out,
                                int64_t n, uint64_t seed, uint32_t offset, uint64_t base,
                                bool pi_periodic, int device, void* stream);
#endif

}  // namespace pyslice
