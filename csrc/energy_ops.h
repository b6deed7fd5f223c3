// Launchers of the force-field energy (no pybind11, no CUDA headers here). csrc/energy.cpp checks
// the arguments and calls these; they trust what they are given (tables: pyslice/energy.h).
#pragma once
#include <cstdint>

#include "pyslice/energy.h"

namespace pyslice {

// out[b, term] (B, 5) float64 = per-term energy of conformation b of positions (B, N, 3), in
// parallel (OpenMP) over (conformation, block of rows); deterministic (fixed blocks, ordered sums).
void energy_cpu_launch(const energy::Tables<float>& tables, const float* positions, int64_t batch,
                       double* out);
void energy_cpu_launch(const energy::Tables<double>& tables, const double* positions,
                       int64_t batch, double* out);

// out[b, term] = E(positions[b] with rows moved[b] from new_positions[b]) - E(positions[b]), from
// the terms that touch a moved atom. moved: (B, M) int64, -1 = padding, unique per row.
void energy_delta_cpu_launch(const energy::Tables<float>& tables, const float* positions,
                             const float* new_positions, const int64_t* moved, int64_t batch,
                             int64_t n_moved, double* out);
void energy_delta_cpu_launch(const energy::Tables<double>& tables, const double* positions,
                             const double* new_positions, const int64_t* moved, int64_t batch,
                             int64_t n_moved, double* out);

#if defined(PYSLICE_WITH_CUDA)
// The same on CUDA device `device` (every pointer device memory there, tables included), on
// `stream`, without host synchronisation; batches beyond the grid's y limit run in chunks.
// workspace: energy::energy_workspace_bytes / delta_workspace_bytes bytes, 8-byte aligned, any
// contents. Throw std::runtime_error with the CUDA error string when a CUDA call fails.
void energy_cuda_launch(const energy::Tables<float>& tables, const float* positions, int64_t batch,
                        double* out, void* workspace, int device, void* stream);
void energy_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                        int64_t batch, double* out, void* workspace, int device, void* stream);
void energy_delta_cuda_launch(const energy::Tables<float>& tables, const float* positions,
                              const float* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, void* workspace, int device,
                              void* stream);
void energy_delta_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                              const double* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, void* workspace, int device,
                              void* stream);
#endif

}  // namespace pyslice
