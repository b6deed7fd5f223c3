// Internal launchers for the side-chain builder (no pybind11, no CUDA headers here).
// csrc/build.cpp checks the arguments and calls these; they trust what they are given
// (table layout: csrc/include/pyslice/build.h).
#pragma once
#include <cstdint>

namespace pyslice {

// Sizes and tables of one build call. T is float or double (positions, chi, chi_ref, out).
template <typename T>
struct BuildArgs {
  const T* positions;      // (n_atoms, 3) reference positions
  const T* chi;            // (batch, n_chi) target angles
  const T* chi_ref;        // (n_chi,) reference angles
  const int64_t* axis;     // (n_chi, 2) atom indices b, c
  const int64_t* move_atom;  // (n_moves,)
  const int64_t* move_chi;   // (n_moves,)
  int64_t level_start[5];  // moves of level L: [level_start[L], level_start[L + 1])
  T* out;                  // (batch, n_atoms, 3)
  int64_t batch;
  int64_t n_atoms;
  int64_t n_chi;
};

// out[b] = the reference with every chi rotated to chi[b], for each conformation b, in parallel
// over conformations (OpenMP). Host pointers; call without the GIL.
void build_cpu_launch(const BuildArgs<float>& args);
void build_cpu_launch(const BuildArgs<double>& args);

#if defined(PYSLICE_WITH_CUDA)
// The same on the GPU: one block per conformation, its threads over the moves of each level, on
// `stream` (a cudaStream_t) and the device that owns `out`; no host synchronisation. All pointers
// are device memory (tables included). Throws std::invalid_argument when a pointer is not device
// memory and std::runtime_error with the CUDA error string when a CUDA call fails.
void build_cuda_launch(const BuildArgs<float>& args, void* stream);
void build_cuda_launch(const BuildArgs<double>& args, void* stream);
#endif

}  // namespace pyslice
