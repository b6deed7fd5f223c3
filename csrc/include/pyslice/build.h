// Side-chain building by rotation about chi bonds: the maths shared by csrc/cpu and csrc/cuda.
//
// The torch reference (pyslice/geometry/builder.py: build_reference) evaluates the same expressions
// in the same order, so the paths agree to rounding. csrc/cpu/build.cpp and csrc/cuda/build.cu only
// schedule apply_move (a loop per conformation; a block per conformation).
//
// A structure is rebuilt from its reference positions. Each chi j rotates its downstream atoms
// (those reachable from the chi bond's far atom c without passing its near atom b) about the axis
// b -> c, by delta_j = wrap(chi_j - chi_ref_j); a right-handed rotation about b -> c adds delta_j to
// the dihedral (a, b, c, d). Rotations are applied level by level (all chi1, then all chi2, ...):
// rotating chi k moves the atoms of chi k+1 rigidly, so chi k+1's own delta does not change.
//
// Tables (built once per structure, in Python):
//   axis       (n_chi, 2)  atom indices (b, c) of each chi bond
//   chi_ref    (n_chi,)    chi of the reference structure
//   move_atom  (M,)        atoms to rotate, level by level; within a level, grouped by chi
//   move_chi   (M,)        the chi (column of `chi`) that rotates move_atom[m]
//   level_start[kLevels+1] moves of level L are [level_start[L], level_start[L+1])
// Within one level no atom is moved twice and no moved atom is an axis atom of that level, so the
// moves of a level can run in any order (in parallel on the GPU).
#pragma once
#include <cmath>
#include <cstdint>

#include "pyslice/hd.h"
#include "pyslice/math.h"

namespace pyslice {
namespace build {

constexpr int kLevels = 4;  // chi1 .. chi4

// Rotation by `angle` about the oriented axis through `origin` along unit vector `k`.
template <typename T>
struct Rotation {
  T k[3];
  T origin[3];
  T cos_angle;
  T sin_angle;
};

// The rotation about the axis b -> c (3-vectors) by `angle` (right-handed).
template <typename T>
PYSLICE_HD Rotation<T> make_rotation(const T* b, const T* c, T angle) {
  Rotation<T> r;
  const T k0 = c[0] - b[0];
  const T k1 = c[1] - b[1];
  const T k2 = c[2] - b[2];
  const T inv_norm = static_cast<T>(1) / sqrt_of(k0 * k0 + k1 * k1 + k2 * k2);
  r.k[0] = k0 * inv_norm;
  r.k[1] = k1 * inv_norm;
  r.k[2] = k2 * inv_norm;
  r.origin[0] = c[0];
  r.origin[1] = c[1];
  r.origin[2] = c[2];
  r.cos_angle = cos_of(angle);
  r.sin_angle = sin_of(angle);
  return r;
}

// Rodrigues: x <- c + v cos + (k x v) sin + k (k . v)(1 - cos), v = x - c. In place.
template <typename T>
PYSLICE_HD void rotate_point(const Rotation<T>& r, T* x) {
  const T v0 = x[0] - r.origin[0];
  const T v1 = x[1] - r.origin[1];
  const T v2 = x[2] - r.origin[2];
  const T w0 = r.k[1] * v2 - r.k[2] * v1;
  const T w1 = r.k[2] * v0 - r.k[0] * v2;
  const T w2 = r.k[0] * v1 - r.k[1] * v0;
  const T kv = (r.k[0] * v0 + r.k[1] * v1) + r.k[2] * v2;
  const T one_minus_cos = static_cast<T>(1) - r.cos_angle;
  x[0] = r.origin[0] + ((v0 * r.cos_angle + w0 * r.sin_angle) + r.k[0] * (kv * one_minus_cos));
  x[1] = r.origin[1] + ((v1 * r.cos_angle + w1 * r.sin_angle) + r.k[1] * (kv * one_minus_cos));
  x[2] = r.origin[2] + ((v2 * r.cos_angle + w2 * r.sin_angle) + r.k[2] * (kv * one_minus_cos));
}

// The rotation of chi j in one conformation: `positions` (N, 3) are that conformation's current
// positions, `chi` its (n_chi,) target angles.
template <typename T>
PYSLICE_HD Rotation<T> chi_rotation(const T* positions, const T* chi, const T* chi_ref,
                                    const int64_t* axis, int64_t j) {
  return make_rotation(positions + 3 * axis[2 * j], positions + 3 * axis[2 * j + 1],
                       wrap_angle(chi[j] - chi_ref[j]));
}

// The tables and sizes of one build call. T is float or double (positions, chi, chi_ref, out).
template <typename T>
struct BuildArgs {
  const T* positions;        // (n_atoms, 3) reference positions
  const T* chi;              // (batch, n_chi) target angles
  const T* chi_ref;          // (n_chi,) reference angles
  const int64_t* axis;       // (n_chi, 2) atom indices b, c
  const int64_t* move_atom;  // (n_moves,)
  const int64_t* move_chi;   // (n_moves,)
  int64_t level_start[kLevels + 1];  // moves of level L: [level_start[L], level_start[L + 1])
  T* out;                    // (batch, n_atoms, 3)
  int64_t batch;
  int64_t n_atoms;
  int64_t n_chi;
};

// The rotation of the chi that a caller used last: moves are grouped by chi within a level, and
// no move of a level touches an axis atom of that level, so it holds through the level. Reset it
// (chi = -1) at every level.
template <typename T>
struct RotationCache {
  int64_t chi = -1;
  Rotation<T> rotation{};
};

// Move m of conformation `out` (its positions, (n_atoms, 3)) with targets `chi` (n_chi,): rotate
// atom move_atom[m] about the bond of chi move_chi[m]. The body of both loops. A move whose
// indices fall outside the tables is skipped: a malformed table gives a wrong structure, never an
// out-of-bounds access (the bindings check host tables; device tables cannot be read from there).
template <typename T>
PYSLICE_HD void apply_move(const BuildArgs<T>& a, T* out, const T* chi, int64_t m,
                           RotationCache<T>& cache) {
  const int64_t j = a.move_chi[m];
  const int64_t atom = a.move_atom[m];
  if (j < 0 || j >= a.n_chi || atom < 0 || atom >= a.n_atoms) return;
  if (j != cache.chi) {
    const int64_t b = a.axis[2 * j];
    const int64_t c = a.axis[2 * j + 1];
    if (b < 0 || b >= a.n_atoms || c < 0 || c >= a.n_atoms) return;
    cache.rotation = chi_rotation(out, chi, a.chi_ref, a.axis, j);
    cache.chi = j;
  }
  rotate_point(cache.rotation, out + 3 * atom);
}

}  // namespace build
}  // namespace pyslice
