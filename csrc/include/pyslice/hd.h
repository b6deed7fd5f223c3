// PYSLICE_HD: the qualifiers of functions shared by the CPU (C++) and CUDA paths.
#pragma once

#if defined(__CUDACC__)
#define PYSLICE_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Forced, so that the maths inlines into the SIMD loops that call it (also into the AVX2 clones
// of csrc/cpu/energy.cpp, where GCC would otherwise keep an out-of-line call and not vectorise).
#define PYSLICE_HD inline __attribute__((always_inline))
#else
#define PYSLICE_HD inline
#endif
