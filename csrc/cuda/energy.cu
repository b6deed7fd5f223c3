// CUDA launchers for the force-field energy: the schedule only; every term's maths and the bonded
// and delta loop bodies live in pyslice/energy.h.
//
// Full energy, many conformations per launch, no host synchronisation:
//   pair_kernel    grid (row tiles, B): thread = atom i of the tile; partner tiles j >= i's tile
//                  are staged in shared memory; exceptions are skipped by walking i's sorted
//                  partner list alongside the increasing j. One (Coulomb, LJ) partial per block.
//   bonded_kernel  grid (item blocks, B): thread = one bond, angle, torsion or exception.
//   reduce_kernel  adds each conformation's partials in a fixed order (deterministic, no atomics).
// Delta: mark the moved atoms of each row (mark[b, atom] = column + 1), one block per (moved atom,
// conformation) sums its pairs and the bonded terms it owns, then reduce.
// B sits on gridDim.y: batches beyond its limit run in chunks that reuse the workspace (one stream:
// a chunk's kernels finish before the next chunk's start).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "energy_ops.h"
#include "pyslice/energy.h"

namespace pyslice {
namespace {

using energy::kItemThreads;
using energy::kNumTerms;
using energy::kPairTile;
using energy::Tables;

// Sum of v over the block (blockDim.x a multiple of 32, <= 1024); the result is valid in thread 0.
__device__ double block_sum(double v, double* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  }
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kPairTile)
    pair_kernel(Tables<T> t, const T* __restrict__ positions, double* __restrict__ partial) {
  __shared__ T sx[kPairTile], sy[kPairTile], sz[kPairTile], sq[kPairTile], ss[kPairTile],
      se[kPairTile];
  __shared__ double scratch[kPairTile / 32];
  const int64_t n = t.n_atoms;
  const int64_t b = blockIdx.y;
  const int64_t tile = blockIdx.x;
  const int64_t i = tile * kPairTile + threadIdx.x;
  const T* conf = positions + b * n * 3;
  const bool active = i < n;
  T xi = 0, yi = 0, zi = 0, qi = 0, si = 0, ei = 0;
  energy::PartnerCursor cursor{t.excl_idx, 0, 0};
  if (active) {
    xi = conf[3 * i];
    yi = conf[3 * i + 1];
    zi = conf[3 * i + 2];
    qi = t.charge[i];
    si = t.half_sigma[i];
    ei = t.two_sqrt_eps[i];
    cursor = energy::partners(t, i);
  }
  double coulomb = 0.0, lj = 0.0;
  for (int64_t start = tile * kPairTile; start < n; start += kPairTile) {
    const int64_t j_load = start + threadIdx.x;
    __syncthreads();
    if (j_load < n) {
      sx[threadIdx.x] = conf[3 * j_load];
      sy[threadIdx.x] = conf[3 * j_load + 1];
      sz[threadIdx.x] = conf[3 * j_load + 2];
      sq[threadIdx.x] = t.charge[j_load];
      ss[threadIdx.x] = t.half_sigma[j_load];
      se[threadIdx.x] = t.two_sqrt_eps[j_load];
    }
    __syncthreads();
    if (!active) continue;
    const int count = static_cast<int>(n - start < kPairTile ? n - start : kPairTile);
    for (int k = 0; k < count; ++k) {
      const int64_t j = start + k;
      if (j <= i || cursor.skip(j)) continue;
      const T dx = sx[k] - xi, dy = sy[k] - yi, dz = sz[k] - zi;
      T c, l;
      energy::pair_terms(t, dx * dx + dy * dy + dz * dz,
                         energy::combine(qi, si, ei, sq[k], ss[k], se[k]), c, l);
      coulomb += static_cast<double>(c);
      lj += static_cast<double>(l);
    }
  }
  const int64_t slot = (b * gridDim.x + tile) * 2;
  const double c_total = block_sum(coulomb, scratch);
  if (threadIdx.x == 0) partial[slot] = c_total;
  const double l_total = block_sum(lj, scratch);
  if (threadIdx.x == 0) partial[slot + 1] = l_total;
}

template <typename T>
__global__ void __launch_bounds__(kItemThreads)
    bonded_kernel(Tables<T> t, const T* __restrict__ positions, double* __restrict__ partial) {
  __shared__ double scratch[kItemThreads / 32];
  const int64_t b = blockIdx.y;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kItemThreads + threadIdx.x;
  double e[kNumTerms] = {0, 0, 0, 0, 0};
  if (k < energy::n_bonded_items(t)) energy::bonded_item(t, positions + b * t.n_atoms * 3, k, e);
  for (int term = 0; term < kNumTerms; ++term) {
    const double total = block_sum(e[term], scratch);
    if (threadIdx.x == 0) partial[(b * gridDim.x + blockIdx.x) * kNumTerms + term] = total;
  }
}

// out[b, :] = sum over the pair partials (Coulomb, LJ) and the bonded partials (5 terms).
__global__ void reduce_kernel(const double* __restrict__ pairs, int64_t n_pair_parts,
                              const double* __restrict__ bonded, int64_t n_bonded_parts,
                              int64_t batch, double* __restrict__ out) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= batch * kNumTerms) return;
  const int64_t b = id / kNumTerms;
  const int term = static_cast<int>(id % kNumTerms);
  double total = 0.0;
  for (int64_t k = 0; k < n_bonded_parts; ++k) {
    total += bonded[(b * n_bonded_parts + k) * kNumTerms + term];
  }
  if (pairs != nullptr && (term == energy::kCoulomb || term == energy::kLennardJones)) {
    for (int64_t k = 0; k < n_pair_parts; ++k) {
      total += pairs[(b * n_pair_parts + k) * 2 + (term - energy::kCoulomb)];
    }
  }
  out[id] = total;
}

template <typename T>
void launch_energy(const Tables<T>& t, const T* positions, int64_t batch, double* out,
                   void* workspace, int device, void* stream_handle) {
  if (batch == 0) return;
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::stream_of(stream_handle);
  const int64_t tiles = energy::pair_tiles(t.n_atoms);
  const int64_t blocks = energy::item_blocks(energy::n_bonded_items(t));
  auto* pairs = static_cast<double*>(workspace);
  double* bonded = pairs + energy::batch_chunk(batch) * tiles * 2;
  cuda::for_each_chunk(batch, kMaxGridY, [&](int64_t start, int64_t size) {
    const T* x = positions + start * t.n_atoms * 3;
    const auto rows = static_cast<unsigned int>(size);
    if (tiles > 0) {
      pair_kernel<T><<<dim3(static_cast<unsigned int>(tiles), rows), kPairTile, 0, stream>>>(
          t, x, pairs);
      cuda::check_launch("pair_kernel");
    }
    bonded_kernel<T><<<dim3(static_cast<unsigned int>(blocks), rows), kItemThreads, 0, stream>>>(
        t, x, bonded);
    cuda::check_launch("bonded_kernel");
    const int64_t outputs = size * kNumTerms;
    reduce_kernel<<<cuda::blocks_for(outputs, 256), 256, 0, stream>>>(
        tiles > 0 ? pairs : nullptr, tiles, bonded, blocks, size, out + start * kNumTerms);
    cuda::check_launch("reduce_kernel");
  });
}

// mark[b, moved[b, k]] = k + 1 for the valid entries (mark zeroed beforehand).
__global__ void mark_kernel(const int64_t* __restrict__ moved, int64_t batch, int64_t n_moved,
                            int64_t n_atoms, int32_t* __restrict__ mark) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= batch * n_moved) return;
  const int64_t atom = moved[id];
  if (atom < 0) return;
  const int64_t b = id / n_moved;
  mark[b * n_atoms + atom] = static_cast<int32_t>(id % n_moved) + 1;
}

template <typename T>
__global__ void __launch_bounds__(kPairTile)
    delta_kernel(Tables<T> t, const T* __restrict__ positions, const T* __restrict__ new_positions,
                 const int64_t* __restrict__ moved, int64_t n_moved,
                 const int32_t* __restrict__ marks, double* __restrict__ partial) {
  __shared__ double scratch[kPairTile / 32];
  const int64_t n = t.n_atoms;
  const int64_t k = blockIdx.x;
  const int64_t b = blockIdx.y;
  const int64_t i = moved[b * n_moved + k];
  const energy::Move<T> m{positions + b * n * 3, new_positions + b * n * 3, marks + b * n};
  double e[kNumTerms] = {0, 0, 0, 0, 0};
  if (i >= 0) {
    // Plain pairs (i, j): j strided over the block, in increasing order per thread.
    energy::PartnerCursor cursor = energy::partners(t, i);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (j == i || cursor.skip(j)) continue;
      const int32_t mj = m.mark[j];
      if (mj != 0 && mj - 1 < k) continue;  // a moved pair is owned by its earlier column
      const T* pj_old = m.old_conf + 3 * j;
      const T* pj_new = mj != 0 ? m.new_conf + 3 * j : pj_old;
      double cn, ln, co, lo;
      energy::plain_pair(t, i, j, m.new_conf + 3 * i, pj_new, cn, ln);
      energy::plain_pair(t, i, j, m.old_conf + 3 * i, pj_old, co, lo);
      e[energy::kCoulomb] += cn - co;
      e[energy::kLennardJones] += ln - lo;
    }
    energy::owned_terms_delta(t, m, i, threadIdx.x, blockDim.x, e);
  }
  for (int term = 0; term < kNumTerms; ++term) {
    const double total = block_sum(e[term], scratch);
    if (threadIdx.x == 0) partial[(b * n_moved + k) * kNumTerms + term] = total;
  }
}

template <typename T>
void launch_delta(const Tables<T>& t, const T* positions, const T* new_positions,
                  const int64_t* moved, int64_t batch, int64_t n_moved, double* out,
                  void* workspace, int device, void* stream_handle) {
  if (batch == 0) return;
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::stream_of(stream_handle);
  if (n_moved == 0) {
    cuda::check(cudaMemsetAsync(out, 0, sizeof(double) * batch * kNumTerms, stream),
                "cudaMemsetAsync");
    return;
  }
  auto* partial = static_cast<double*>(workspace);
  auto* mark = reinterpret_cast<int32_t*>(partial + energy::delta_partial_doubles(batch, n_moved));
  const int64_t n = t.n_atoms;
  cuda::for_each_chunk(batch, kMaxGridY, [&](int64_t start, int64_t size) {
    const T* x = positions + start * n * 3;
    const T* y = new_positions + start * n * 3;
    const int64_t* chunk_moved = moved + start * n_moved;
    cuda::check(cudaMemsetAsync(mark, 0, sizeof(int32_t) * size * n, stream), "cudaMemsetAsync");
    const int64_t entries = size * n_moved;
    mark_kernel<<<cuda::blocks_for(entries, 256), 256, 0, stream>>>(chunk_moved, size, n_moved, n,
                                                                   mark);
    cuda::check_launch("mark_kernel");
    delta_kernel<T><<<dim3(static_cast<unsigned int>(n_moved), static_cast<unsigned int>(size)),
                      kPairTile, 0, stream>>>(t, x, y, chunk_moved, n_moved, mark, partial);
    cuda::check_launch("delta_kernel");
    reduce_kernel<<<cuda::blocks_for(size * kNumTerms, 256), 256, 0, stream>>>(
        nullptr, 0, partial, n_moved, size, out + start * kNumTerms);
    cuda::check_launch("reduce_kernel");
  });
}

}  // namespace

void energy_cuda_launch(const energy::Tables<float>& tables, const float* positions, int64_t batch,
                        double* out, void* workspace, int device, void* stream) {
  launch_energy(tables, positions, batch, out, workspace, device, stream);
}
void energy_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                        int64_t batch, double* out, void* workspace, int device, void* stream) {
  launch_energy(tables, positions, batch, out, workspace, device, stream);
}
void energy_delta_cuda_launch(const energy::Tables<float>& tables, const float* positions,
                              const float* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, void* workspace, int device,
                              void* stream) {
  launch_delta(tables, positions, new_positions, moved, batch, n_moved, out, workspace, device,
               stream);
}
void energy_delta_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                              const double* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, void* workspace, int device,
                              void* stream) {
  launch_delta(tables, positions, new_positions, moved, batch, n_moved, out, workspace, device,
               stream);
}

}  // namespace pyslice
