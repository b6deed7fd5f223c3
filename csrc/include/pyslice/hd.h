// PYSLICE_HD: the qualifiers of functions shared by the CPU (C++) and CUDA paths.
#pragma once

#if defined(__CUDACC__)
#define PYSLICE_HD __host__ __device__ __forceinline__
#else
#define PYSLICE_HD inline
#endif
