// Launchers of the side-chain builder (no pybind11, no CUDA headers here). csrc/build.cpp checks
// the arguments and calls these (tables and maths: csrc/include/pyslice/build.h).
#pragma once
#include <cstdint>

#include "pyslice/build.h"

namespace pyslice {

// out[b] = the reference with every chi rotated to chi[b], for each conformation b, in parallel
// over conformations (OpenMP). Host pointers; call without the GIL.
void build_cpu_launch(const build::BuildArgs<float>& args);
void build_cpu_launch(const build::BuildArgs<double>& args);

#if defined(PYSLICE_WITH_CUDA)
// The same on CUDA device `device`: one block per conformation (grid-stride), its threads over the
// moves of each level, on `stream` (a cudaStream_t); no host synchronisation. Every pointer is
// device memory (tables included); level_start is the host copy in args. std::runtime_error with
// the CUDA error string when a CUDA call fails.
void build_cuda_launch(const build::BuildArgs<float>& args, int device, void* stream);
void build_cuda_launch(const build::BuildArgs<double>& args, int device, void* stream);
#endif

}  // namespace pyslice
