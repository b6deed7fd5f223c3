// CUDA launcher for the side-chain builder: the maths lives in pyslice/build.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "build_ops.h"
#include "cuda/common.cuh"
#include "pyslice/build.h"

namespace pyslice {
namespace {

constexpr int kThreads = 128;

// One block per conformation (grid-stride over conformations). Its threads first copy the
// reference, then take the moves of each level in turn; a level's moves touch distinct atoms and
// never an axis atom of that level (build.h), so they run in parallel, and the barrier makes the
// level's writes visible to the next. Each move recomputes its chi's rotation: cheaper than a
// shared-memory table whose size would depend on the protein.
template <typename T>
__global__ void __launch_bounds__(kThreads) build_kernel(BuildArgs<T> a) {
  const int64_t stride = 3 * a.n_atoms;
  for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
    T* out = a.out + b * stride;
    const T* chi = a.chi + b * a.n_chi;
    for (int64_t i = threadIdx.x; i < stride; i += blockDim.x) out[i] = a.positions[i];
    __syncthreads();
    for (int level = 0; level < build::kLevels; ++level) {
      for (int64_t m = a.level_start[level] + threadIdx.x; m < a.level_start[level + 1];
           m += blockDim.x) {
        const int64_t j = a.move_chi[m];
        const int64_t atom = a.move_atom[m];
        // The host cannot read device tables to check them: a bad index is skipped here, so a
        // malformed table gives a wrong structure, never an out-of-bounds access.
        if (j < 0 || j >= a.n_chi || atom < 0 || atom >= a.n_atoms) continue;
        const int64_t axis_b = a.axis[2 * j];
        const int64_t axis_c = a.axis[2 * j + 1];
        if (axis_b < 0 || axis_b >= a.n_atoms || axis_c < 0 || axis_c >= a.n_atoms) continue;
        const build::Rotation<T> rotation = build::chi_rotation(out, chi, a.chi_ref, a.axis, j);
        build::rotate_point(rotation, out + 3 * atom);
      }
      __syncthreads();
    }
  }
}

// The device of the buffers (std::invalid_argument if they are not all on one). Buffers of size 0
// are never read and may be null: they are left out. (Not a template: nvcc's host pass
// mishandles this braced list inside one.)
int buffers_device(const void* out, const void* positions, const void* chi, const void* chi_ref,
                   const void* axis, const void* move_atom, const void* move_chi, bool has_chi,
                   bool has_moves) {
  return cuda::common_device({{out, "out_ptr"},
                              {positions, "positions_ptr"},
                              {has_chi ? chi : nullptr, "chi_ptr"},
                              {has_chi ? chi_ref : nullptr, "chi_ref_ptr"},
                              {has_chi ? axis : nullptr, "axis_ptr"},
                              {has_moves ? move_atom : nullptr, "move_atom_ptr"},
                              {has_moves ? move_chi : nullptr, "move_chi_ptr"}});
}

template <typename T>
void build_cuda(const BuildArgs<T>& a, void* stream) {
  if (a.batch == 0 || a.n_atoms == 0) return;
  const int64_t n_moves = a.level_start[build::kLevels];
  const int device = buffers_device(a.out, a.positions, a.chi, a.chi_ref, a.axis, a.move_atom,
                                    a.move_chi, a.n_chi > 0, n_moves > 0);
  cuda::DeviceGuard guard(device);
  // One block per conformation, at most 16 resident blocks per SM; the loop covers the rest.
  const unsigned int blocks = cuda::grid_size(a.batch * kThreads, kThreads, 16, device);
  build_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  cuda::check(cudaGetLastError(), "launching build_kernel");
}

}  // namespace

void build_cuda_launch(const BuildArgs<float>& args, void* stream) { build_cuda(args, stream); }
void build_cuda_launch(const BuildArgs<double>& args, void* stream) { build_cuda(args, stream); }

}  // namespace pyslice
