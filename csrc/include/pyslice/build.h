// Side-chain building by rotation about chi bonds: the maths shared by csrc/cpu and csrc/cuda.
//
// The torch reference (pyslice/geometry.py: build_reference) evaluates the same expressions in the
// same order, so the paths agree to rounding.
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

namespace pyslice {
namespace build {

constexpr int kLevels = 4;  // chi1 .. chi4

// Overloads that resolve to the float or double C functions on the host and on the device.
PYSLICE_HD float sqrt_of(float x) { return sqrtf(x); }
PYSLICE_HD double sqrt_of(double x) { return sqrt(x); }
PYSLICE_HD float floor_of(float x) { return floorf(x); }
PYSLICE_HD double floor_of(double x) { return floor(x); }
PYSLICE_HD float sin_of(float x) { return sinf(x); }
PYSLICE_HD double sin_of(double x) { return sin(x); }
PYSLICE_HD float cos_of(float x) { return cosf(x); }
PYSLICE_HD double cos_of(double x) { return cos(x); }

template <typename T>
struct Pi {
  static constexpr T value = static_cast<T>(3.14159265358979323846);
  static constexpr T twice = static_cast<T>(6.28318530717958647692);
};

// x wrapped to [-pi, pi): the rotation angle stays small, so sin/cos keep their precision for
// any real chi (chi + 2 pi k builds the same structure).
template <typename T>
PYSLICE_HD T wrap_angle(T x) {
  const T pi = Pi<T>::value;
  const T two_pi = Pi<T>::twice;
  T r = x - two_pi * floor_of((x + pi) / two_pi);
  if (r >= pi) r -= two_pi;
  if (r < -pi) r += two_pi;
  return r;
}

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

}  // namespace build
}  // namespace pyslice
