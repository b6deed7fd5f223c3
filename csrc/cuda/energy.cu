// CUDA launchers for the force-field energy: the maths lives in pyslice/energy.h.
//
// Full energy, many conformations per launch, no host synchronisation:
//   pair_kernel    grid (row tiles, B): thread = atom i of the tile; partner tiles j >= i's tile are
//                  staged in shared memory; exceptions are skipped by walking i's sorted partner
//                  list alongside the increasing j. One (Coulomb, LJ) partial per block.
//   bonded_kernel  grid (item blocks, B): thread = one bond, angle, torsion or exception.
//   reduce_kernel  adds each conformation's partials in a fixed order (deterministic, no atomics).
// Delta: mark the moved atoms of each row (mark[b, atom] = column + 1), one block per (moved atom,
// conformation) sums its pairs and the bonded terms it owns, then reduce and unmark.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "energy_ops.h"
#include "pyslice/energy.h"

namespace pyslice {
namespace {

using energy::Tables;
using energy::Vec3;

constexpr int kTile = 128;
constexpr int kItemThreads = 256;

template <typename T>
__device__ __forceinline__ Vec3 at(const T* conformation, int64_t atom) {
  const T* p = conformation + 3 * atom;
  return {static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2])};
}

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
__device__ __forceinline__ void pair(const Tables<T>& t, T r2, T qq, T sigma, T eps4, T& c, T& l) {
  if (t.cutoff > 0) {
    energy::pair_terms<true, T>(r2, qq, sigma, eps4, static_cast<T>(t.cutoff * t.cutoff),
                                static_cast<T>(t.krf), static_cast<T>(t.crf), c, l);
  } else {
    energy::pair_terms<false, T>(r2, qq, sigma, eps4, T(0), T(0), T(0), c, l);
  }
}

template <typename T>
__global__ void __launch_bounds__(kTile)
    pair_kernel(Tables<T> t, const T* __restrict__ positions, double* __restrict__ partial) {
  __shared__ T sx[kTile], sy[kTile], sz[kTile], sq[kTile], ss[kTile], se[kTile];
  __shared__ double scratch[kTile / 32];
  const int64_t n = t.n_atoms;
  const int64_t b = blockIdx.y;
  const int64_t tile = blockIdx.x;
  const int64_t i = tile * kTile + threadIdx.x;
  const T* conf = positions + b * n * 3;
  const bool active = i < n;
  T xi = 0, yi = 0, zi = 0, qi = 0, si = 0, ei = 0;
  int64_t next = 0, end = 0;  // walk over i's sorted exception partners
  if (active) {
    xi = conf[3 * i];
    yi = conf[3 * i + 1];
    zi = conf[3 * i + 2];
    qi = t.charge[i];
    si = t.half_sigma[i];
    ei = t.two_sqrt_eps[i];
    next = t.excl_ptr[i];
    end = t.excl_ptr[i + 1];
  }
  double coulomb = 0.0, lj = 0.0;
  for (int64_t start = tile * kTile; start < n; start += kTile) {
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
    const int count = static_cast<int>(n - start < kTile ? n - start : kTile);
    for (int k = 0; k < count; ++k) {
      const int64_t j = start + k;
      if (j <= i) continue;
      while (next < end && t.excl_idx[next] < j) ++next;
      if (next < end && t.excl_idx[next] == j) continue;
      const T dx = sx[k] - xi, dy = sy[k] - yi, dz = sz[k] - zi;
      T c, l;
      pair(t, dx * dx + dy * dy + dz * dz, qi * sq[k], si + ss[k], ei * se[k], c, l);
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

// Bonds, angles, torsions, then exceptions: item k of conformation b; adds into e[5].
template <typename T>
__device__ void bonded_item(const Tables<T>& t, const T* conf, int64_t k, double* e) {
  if (k < t.n_bonds) {
    const int64_t* a = t.bond_atoms + 2 * k;
    e[energy::kBond] += energy::bond_energy(at(conf, a[0]), at(conf, a[1]), t.bond_params + 2 * k);
    return;
  }
  k -= t.n_bonds;
  if (k < t.n_angles) {
    const int64_t* a = t.angle_atoms + 3 * k;
    e[energy::kAngle] += energy::angle_energy(at(conf, a[0]), at(conf, a[1]), at(conf, a[2]),
                                              t.angle_params + 2 * k);
    return;
  }
  k -= t.n_angles;
  if (k < t.n_torsions) {
    const int64_t* a = t.torsion_atoms + 4 * k;
    e[energy::kTorsion] += energy::torsion_energy(at(conf, a[0]), at(conf, a[1]), at(conf, a[2]),
                                                  at(conf, a[3]), t.torsion_params + 3 * k);
    return;
  }
  k -= t.n_torsions;
  if (k < t.n_exceptions) {
    const int64_t* a = t.exc_atoms + 2 * k;
    const Vec3 d = energy::sub(at(conf, a[0]), at(conf, a[1]));
    double c, l;
    energy::exception_terms(energy::dot(d, d), t.exc_params + 3 * k, c, l);
    e[energy::kCoulomb] += c;
    e[energy::kLennardJones] += l;
  }
}

template <typename T>
__global__ void __launch_bounds__(kItemThreads)
    bonded_kernel(Tables<T> t, const T* __restrict__ positions, double* __restrict__ partial) {
  __shared__ double scratch[kItemThreads / 32];
  const int64_t b = blockIdx.y;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kItemThreads + threadIdx.x;
  const int64_t items = t.n_bonds + t.n_angles + t.n_torsions + t.n_exceptions;
  double e[energy::kNumTerms] = {0, 0, 0, 0, 0};
  if (k < items) bonded_item(t, positions + b * t.n_atoms * 3, k, e);
  for (int term = 0; term < energy::kNumTerms; ++term) {
    const double total = block_sum(e[term], scratch);
    if (threadIdx.x == 0) partial[(b * gridDim.x + blockIdx.x) * energy::kNumTerms + term] = total;
  }
}

// out[b, :] = sum over the pair partials (Coulomb, LJ) and the bonded partials (5 terms).
__global__ void reduce_kernel(const double* __restrict__ pairs, int64_t n_pair_parts,
                              const double* __restrict__ bonded, int64_t n_bonded_parts,
                              int64_t batch, double* __restrict__ out) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= batch * energy::kNumTerms) return;
  const int64_t b = id / energy::kNumTerms;
  const int term = static_cast<int>(id % energy::kNumTerms);
  double total = 0.0;
  for (int64_t k = 0; k < n_bonded_parts; ++k) {
    total += bonded[(b * n_bonded_parts + k) * energy::kNumTerms + term];
  }
  if (pairs != nullptr && (term == energy::kCoulomb || term == energy::kLennardJones)) {
    for (int64_t k = 0; k < n_pair_parts; ++k) {
      total += pairs[(b * n_pair_parts + k) * 2 + (term - energy::kCoulomb)];
    }
  }
  out[id] = total;
}

int64_t pair_tiles(int64_t n) { return (n + kTile - 1) / kTile; }
int64_t item_blocks(int64_t items) { return items > 0 ? (items + kItemThreads - 1) / kItemThreads : 1; }

template <typename T>
void launch_energy(const Tables<T>& t, const T* positions, int64_t batch, double* out,
                   double* workspace, void* stream_handle) {
  if (batch == 0) return;
  const int device =
      cuda::common_device({{positions, "positions_ptr"}, {out, "out_ptr"}, {workspace, "workspace_ptr"}});
  cuda::DeviceGuard guard(device);
  auto stream = static_cast<cudaStream_t>(stream_handle);
  if (batch > 65535) throw std::invalid_argument("batch must be <= 65535 per launch");
  const int64_t tiles = pair_tiles(t.n_atoms);
  const int64_t items = t.n_bonds + t.n_angles + t.n_torsions + t.n_exceptions;
  const int64_t blocks = item_blocks(items);
  double* pairs = workspace;
  double* bonded = workspace + batch * tiles * 2;
  if (tiles > 0) {
    pair_kernel<T><<<dim3(tiles, batch), kTile, 0, stream>>>(t, positions, pairs);
    cuda::check(cudaGetLastError(), "launching pair_kernel");
  }
  bonded_kernel<T><<<dim3(blocks, batch), kItemThreads, 0, stream>>>(t, positions, bonded);
  cuda::check(cudaGetLastError(), "launching bonded_kernel");
  const int64_t outputs = batch * energy::kNumTerms;
  reduce_kernel<<<(outputs + 255) / 256, 256, 0, stream>>>(tiles > 0 ? pairs : nullptr, tiles,
                                                           bonded, blocks, batch, out);
  cuda::check(cudaGetLastError(), "launching reduce_kernel");
}

// mark[b, moved[b, k]] = value ? k + 1 : 0 for the valid entries.
__global__ void mark_kernel(const int64_t* __restrict__ moved, int64_t batch, int64_t n_moved,
                            int64_t n_atoms, int32_t* __restrict__ mark, bool set) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= batch * n_moved) return;
  const int64_t atom = moved[id];
  if (atom < 0) return;
  const int64_t b = id / n_moved;
  mark[b * n_atoms + atom] = set ? static_cast<int32_t>(id % n_moved) + 1 : 0;
}

template <typename T>
__device__ __forceinline__ bool first_moved(const int64_t* atoms, int width, int64_t atom,
                                            const int32_t* mark) {
  for (int k = 0; k < width; ++k) {
    if (mark[atoms[k]] != 0) return atoms[k] == atom;
  }
  return false;
}

template <typename T>
__global__ void __launch_bounds__(kTile)
    delta_kernel(Tables<T> t, const T* __restrict__ positions, const T* __restrict__ new_positions,
                 const int64_t* __restrict__ moved, int64_t n_moved,
                 const int32_t* __restrict__ marks, double* __restrict__ partial) {
  __shared__ double scratch[kTile / 32];
  const int64_t n = t.n_atoms;
  const int64_t k = blockIdx.x;
  const int64_t b = blockIdx.y;
  const int64_t i = moved[b * n_moved + k];
  const T* old_conf = positions + b * n * 3;
  const T* new_conf = new_positions + b * n * 3;
  const int32_t* mark = marks + b * n;
  double e[energy::kNumTerms] = {0, 0, 0, 0, 0};
  if (i >= 0) {
    const T xo = old_conf[3 * i], yo = old_conf[3 * i + 1], zo = old_conf[3 * i + 2];
    const T xn = new_conf[3 * i], yn = new_conf[3 * i + 1], zn = new_conf[3 * i + 2];
    const T qi = t.charge[i], si = t.half_sigma[i], ei = t.two_sqrt_eps[i];
    int64_t next = t.excl_ptr[i];
    const int64_t end = t.excl_ptr[i + 1];
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (j == i) continue;
      while (next < end && t.excl_idx[next] < j) ++next;
      if (next < end && t.excl_idx[next] == j) continue;
      const int32_t mj = mark[j];
      if (mj != 0 && mj - 1 < k) continue;  // a moved pair is owned by its earlier column
      const T* pj_old = old_conf + 3 * j;
      const T* pj_new = mj != 0 ? new_conf + 3 * j : pj_old;
      const T qq = qi * t.charge[j], sigma = si + t.half_sigma[j], eps4 = ei * t.two_sqrt_eps[j];
      T cn, ln, co, lo;
      T dx = pj_new[0] - xn, dy = pj_new[1] - yn, dz = pj_new[2] - zn;
      pair(t, dx * dx + dy * dy + dz * dz, qq, sigma, eps4, cn, ln);
      dx = pj_old[0] - xo, dy = pj_old[1] - yo, dz = pj_old[2] - zo;
      pair(t, dx * dx + dy * dy + dz * dz, qq, sigma, eps4, co, lo);
      e[energy::kCoulomb] += static_cast<double>(cn) - static_cast<double>(co);
      e[energy::kLennardJones] += static_cast<double>(ln) - static_cast<double>(lo);
    }
    auto now = [&](int64_t atom) { return at(mark[atom] != 0 ? new_conf : old_conf, atom); };
    auto before = [&](int64_t atom) { return at(old_conf, atom); };
    for (int64_t q = t.exc_ptr[i] + threadIdx.x; q < t.exc_ptr[i + 1]; q += blockDim.x) {
      const int64_t x = t.exc_idx[q];
      const int64_t* a = t.exc_atoms + 2 * x;
      if (!first_moved<T>(a, 2, i, mark)) continue;
      energy::exception_delta(now(a[0]), now(a[1]), before(a[0]), before(a[1]),
                              t.exc_params + 3 * x, e[energy::kCoulomb], e[energy::kLennardJones]);
    }
    for (int64_t q = t.bond_ptr[i] + threadIdx.x; q < t.bond_ptr[i + 1]; q += blockDim.x) {
      const int64_t x = t.bond_idx[q];
      const int64_t* a = t.bond_atoms + 2 * x;
      if (!first_moved<T>(a, 2, i, mark)) continue;
      const double* p = t.bond_params + 2 * x;
      e[energy::kBond] += energy::bond_energy(now(a[0]), now(a[1]), p) -
                          energy::bond_energy(before(a[0]), before(a[1]), p);
    }
    for (int64_t q = t.angle_ptr[i] + threadIdx.x; q < t.angle_ptr[i + 1]; q += blockDim.x) {
      const int64_t x = t.angle_idx[q];
      const int64_t* a = t.angle_atoms + 3 * x;
      if (!first_moved<T>(a, 3, i, mark)) continue;
      const double* p = t.angle_params + 2 * x;
      e[energy::kAngle] += energy::angle_energy(now(a[0]), now(a[1]), now(a[2]), p) -
                           energy::angle_energy(before(a[0]), before(a[1]), before(a[2]), p);
    }
    for (int64_t q = t.torsion_ptr[i] + threadIdx.x; q < t.torsion_ptr[i + 1]; q += blockDim.x) {
      const int64_t x = t.torsion_idx[q];
      const int64_t* a = t.torsion_atoms + 4 * x;
      if (!first_moved<T>(a, 4, i, mark)) continue;
      const double* p = t.torsion_params + 3 * x;
      e[energy::kTorsion] +=
          energy::torsion_energy(now(a[0]), now(a[1]), now(a[2]), now(a[3]), p) -
          energy::torsion_energy(before(a[0]), before(a[1]), before(a[2]), before(a[3]), p);
    }
  }
  for (int term = 0; term < energy::kNumTerms; ++term) {
    const double total = block_sum(e[term], scratch);
    if (threadIdx.x == 0) partial[(b * n_moved + k) * energy::kNumTerms + term] = total;
  }
}

template <typename T>
void launch_delta(const Tables<T>& t, const T* positions, const T* new_positions,
                  const int64_t* moved, int64_t batch, int64_t n_moved, double* out,
                  double* workspace, int32_t* mark, void* stream_handle) {
  if (batch == 0) return;
  const int device = cuda::common_device({{positions, "positions_ptr"},
                                          {new_positions, "new_positions_ptr"},
                                          {out, "out_ptr"}});
  cuda::DeviceGuard guard(device);
  auto stream = static_cast<cudaStream_t>(stream_handle);
  if (batch > 65535) throw std::invalid_argument("batch must be <= 65535 per launch");
  if (n_moved == 0) {
    cuda::check(cudaMemsetAsync(out, 0, sizeof(double) * batch * energy::kNumTerms, stream),
                "cudaMemsetAsync");
    return;
  }
  const int64_t entries = batch * n_moved;
  const unsigned int mark_blocks = static_cast<unsigned int>((entries + 255) / 256);
  mark_kernel<<<mark_blocks, 256, 0, stream>>>(moved, batch, n_moved, t.n_atoms, mark, true);
  cuda::check(cudaGetLastError(), "launching mark_kernel");
  delta_kernel<T><<<dim3(n_moved, batch), kTile, 0, stream>>>(t, positions, new_positions, moved,
                                                              n_moved, mark, workspace);
  cuda::check(cudaGetLastError(), "launching delta_kernel");
  mark_kernel<<<mark_blocks, 256, 0, stream>>>(moved, batch, n_moved, t.n_atoms, mark, false);
  cuda::check(cudaGetLastError(), "launching mark_kernel");
  const int64_t outputs = batch * energy::kNumTerms;
  reduce_kernel<<<(outputs + 255) / 256, 256, 0, stream>>>(nullptr, 0, workspace, n_moved, batch,
                                                           out);
  cuda::check(cudaGetLastError(), "launching reduce_kernel");
}

}  // namespace

int64_t energy_cuda_workspace(int64_t n_atoms, int64_t n_items, int64_t batch) {
  return batch * (pair_tiles(n_atoms) * 2 + item_blocks(n_items) * energy::kNumTerms);
}

int64_t energy_delta_cuda_workspace(int64_t n_moved, int64_t batch) {
  return batch * n_moved * energy::kNumTerms;
}

void energy_cuda_launch(const energy::Tables<float>& tables, const float* positions, int64_t batch,
                        double* out, double* workspace, void* stream) {
  launch_energy(tables, positions, batch, out, workspace, stream);
}
void energy_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                        int64_t batch, double* out, double* workspace, void* stream) {
  launch_energy(tables, positions, batch, out, workspace, stream);
}
void energy_delta_cuda_launch(const energy::Tables<float>& tables, const float* positions,
                              const float* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, double* workspace, int32_t* mark,
                              void* stream) {
  launch_delta(tables, positions, new_positions, moved, batch, n_moved, out, workspace, mark,
               stream);
}
void energy_delta_cuda_launch(const energy::Tables<double>& tables, const double* positions,
                              const double* new_positions, const int64_t* moved, int64_t batch,
                              int64_t n_moved, double* out, double* workspace, int32_t* mark,
                              void* stream) {
  launch_delta(tables, positions, new_positions, moved, batch, n_moved, out, workspace, mark,
               stream);
}

}  // namespace pyslice
