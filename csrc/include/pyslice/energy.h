// Force-field energy terms, one pair / bond / angle / torsion per call: the maths shared by
// csrc/cpu/energy.cpp and csrc/cuda/energy.cu. pyslice/energy.py (torch reference) evaluates the
// same expressions; its module docstring states the formulas and how they match OpenMM.
//
// Precision: pair terms in T (float or double: the positions' dtype); bonded terms and exceptions
// (O(N) per conformation) always in double; every sum in double.
#pragma once
#include <cmath>
#include <cstdint>

#include "pyslice/hd.h"

namespace pyslice {
namespace energy {

// Columns of the (B, 5) per-term output (pyslice.energy.TERMS).
enum Term { kBond = 0, kAngle = 1, kTorsion = 2, kCoulomb = 3, kLennardJones = 4, kNumTerms = 5 };

// Tables (pyslice.energy.EnergyTables, same names); the launchers trust their sizes.
// T is the pair dtype; bonded/exception parameters are double; indices int64.
template <typename T>
struct Tables {
  int64_t n_atoms;
  const T* charge;        // (N,) q sqrt(K)
  const T* half_sigma;    // (N,) sigma / 2
  const T* two_sqrt_eps;  // (N,) 2 sqrt(eps)
  const int64_t* excl_ptr;  // (N + 1,) CSR of sorted exception partners (skipped by pair sums)
  const int64_t* excl_idx;
  int64_t n_exceptions;
  const int64_t* exc_atoms;  // (E, 2)
  const double* exc_params;  // (E, 3): K qq, sigma, 4 eps
  const int64_t* exc_ptr;    // per-atom CSR of exception indices
  const int64_t* exc_idx;
  int64_t n_bonds;
  const int64_t* bond_atoms;   // (nb, 2)
  const double* bond_params;   // (nb, 2): k, r0
  const int64_t* bond_ptr;
  const int64_t* bond_idx;
  int64_t n_angles;
  const int64_t* angle_atoms;  // (na, 3)
  const double* angle_params;  // (na, 2): k, theta0
  const int64_t* angle_ptr;
  const int64_t* angle_idx;
  int64_t n_torsions;
  const int64_t* torsion_atoms;  // (nt, 4)
  const double* torsion_params;  // (nt, 3): k, phase, periodicity
  const int64_t* torsion_ptr;
  const int64_t* torsion_idx;
  double cutoff;  // 0: NoCutoff; else r_c (nm), reaction field constants krf, crf
  double krf;
  double crf;
};

// r^2 floor (nm^2): coincident atoms give a huge (or +inf) energy, never NaN.
template <typename T>
PYSLICE_HD T min_r2() {
  return T(1e-30);
}

PYSLICE_HD float hd_sqrt(float x) { return sqrtf(x); }
PYSLICE_HD double hd_sqrt(double x) { return sqrt(x); }

// Coulomb and Lennard-Jones of one plain pair at squared distance r2 (nm^2). qq = K q_i q_j,
// sigma = sigma_ij, eps4 = 4 eps_ij. kCutoff: OpenMM CutoffNonPeriodic (reaction field, both
// terms zero at r >= r_c, cutoff2 = r_c^2). Written branch-free so the CPU loop vectorises.
template <bool kCutoff, typename T>
PYSLICE_HD void pair_terms(T r2, T qq, T sigma, T eps4, T cutoff2, T krf, T crf, T& coulomb,
                           T& lj) {
  r2 = r2 > min_r2<T>() ? r2 : min_r2<T>();
  const T inv_r = T(1) / hd_sqrt(r2);
  const T sr2 = sigma * sigma * (inv_r * inv_r);
  const T sr6 = sr2 * sr2 * sr2;
  // eps = 0 (amber's hydroxyl H): exactly 0, also where sr6 overflowed (0 * inf would be NaN).
  lj = eps4 != T(0) ? eps4 * sr6 * (sr6 - T(1)) : T(0);
  if (kCutoff) {
    const bool inside = r2 < cutoff2;
    coulomb = inside ? qq * (inv_r + krf * r2 - crf) : T(0);
    lj = inside ? lj : T(0);
  } else {
    coulomb = qq * inv_r;
  }
}

struct Vec3 {
  double x, y, z;
};

PYSLICE_HD Vec3 sub(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
PYSLICE_HD double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
PYSLICE_HD Vec3 cross(Vec3 a, Vec3 b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// Exception (K qq, sigma, 4 eps) at squared distance r2: plain Coulomb and LJ, no cutoff.
PYSLICE_HD void exception_terms(double r2, const double* params, double& coulomb, double& lj) {
  r2 = r2 > min_r2<double>() ? r2 : min_r2<double>();
  const double inv_r = 1.0 / sqrt(r2);
  const double sr2 = params[1] * params[1] * (inv_r * inv_r);
  const double sr6 = sr2 * sr2 * sr2;
  lj = params[2] != 0.0 ? params[2] * sr6 * (sr6 - 1.0) : 0.0;
  coulomb = params[0] * inv_r;
}



// Change of an exception's (Coulomb, LJ) when its atoms go from (a0, b0) to (a1, b1); added to
// coulomb and lj.
PYSLICE_HD void exception_delta(Vec3 a1, Vec3 b1, Vec3 a0, Vec3 b0, const double* params,
                                double& coulomb, double& lj) {
  double c1, l1, c0, l0;
  const Vec3 d1 = sub(a1, b1);
  const Vec3 d0 = sub(a0, b0);
  exception_terms(dot(d1, d1), params, c1, l1);
  exception_terms(dot(d0, d0), params, c0, l0);
  coulomb += c1 - c0;
  lj += l1 - l0;
}

// 1/2 k (r - r0)^2 with params (k, r0).
PYSLICE_HD double bond_energy(Vec3 a, Vec3 b, const double* params) {
  const Vec3 d = sub(a, b);
  const double dr = sqrt(dot(d, d)) - params[1];
  return 0.5 * params[0] * dr * dr;
}

// 1/2 k (theta - theta0)^2, theta the angle a-b-c from atan2 (accurate near 0 and pi).
PYSLICE_HD double angle_energy(Vec3 a, Vec3 b, Vec3 c, const double* params) {
  const Vec3 u = sub(a, b);
  const Vec3 v = sub(c, b);
  const Vec3 w = cross(u, v);
  const double dtheta = atan2(sqrt(dot(w, w)), dot(u, v)) - params[1];
  return 0.5 * params[0] * dtheta * dtheta;
}

// k (1 + cos(n phi - phase)) with params (k, phase, n); phi the IUPAC dihedral a-b-c-d.
PYSLICE_HD double torsion_energy(Vec3 a, Vec3 b, Vec3 c, Vec3 d, const double* params) {
  const Vec3 b1 = sub(b, a);
  const Vec3 b2 = sub(c, b);
  const Vec3 b3 = sub(d, c);
  const Vec3 n1 = cross(b1, b2);
  const Vec3 n2 = cross(b2, b3);
  const double phi = atan2(sqrt(dot(b2, b2)) * dot(b1, n2), dot(n1, n2));
  return params[0] * (1.0 + cos(params[2] * phi - params[1]));
}

}  // namespace energy
}  // namespace pyslice
