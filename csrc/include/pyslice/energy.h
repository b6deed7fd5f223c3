// Force-field energy: every term's maths, and every per-item loop body, shared by
// csrc/cpu/energy.cpp and csrc/cuda/energy.cu, which only schedule them (OpenMP loops over
// conformations and row blocks with SIMD pair rows; CUDA blocks over tiles, items and moved atoms).
// pyslice/energy/forcefield.py (torch reference) evaluates the same expressions; its module
// docstring states the formulas and how they match OpenMM.
//
// Precision: pair terms in T (float or double: the positions' dtype); bonded terms and exceptions
// (O(N) per conformation) always in double; every sum in double.
#pragma once
#include <cmath>
#include <cstdint>

#include "pyslice/hd.h"
#include "pyslice/limits.h"
#include "pyslice/math.h"

namespace pyslice {
namespace energy {

// Columns of the (B, 5) per-term output (pyslice.energy.TERMS).
enum Term { kBond = 0, kAngle = 1, kTorsion = 2, kCoulomb = 3, kLennardJones = 4, kNumTerms = 5 };

// Tables (pyslice.energy.EnergyTables, same names and order: kTableNames); the launchers trust
// their sizes and indices (csrc/energy.cpp checks them). T is the pair dtype; bonded/exception
// parameters are double; indices int64.
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

// The order in which the compiled functions take the table tensors (pyslice._C.ENERGY_TABLES).
constexpr int kNumTables = 21;
inline constexpr const char* kTableNames[kNumTables] = {
    "charge",       "half_sigma",    "two_sqrt_eps", "excl_ptr",       "excl_idx",
    "exc_atoms",    "exc_params",    "exc_ptr",      "exc_idx",        "bond_atoms",
    "bond_params",  "bond_ptr",      "bond_idx",     "angle_atoms",    "angle_params",
    "angle_ptr",    "angle_idx",     "torsion_atoms", "torsion_params", "torsion_ptr",
    "torsion_idx"};

// Bonds, angles, torsions, exceptions: the items of the bonded loop, in this order.
template <typename T>
PYSLICE_HD int64_t n_bonded_items(const Tables<T>& t) {
  return t.n_bonds + t.n_angles + t.n_torsions + t.n_exceptions;
}

// ---- pairs ------------------------------------------------------------------------------------

// r^2 floor (nm^2): coincident atoms give a huge (or +inf) energy, never NaN.
template <typename T>
PYSLICE_HD T min_r2() {
  return T(1e-30);
}

// The Lorentz-Berthelot combination of two atoms' table entries: K q_i q_j, sigma_ij, 4 eps_ij.
template <typename T>
struct PairParams {
  T qq, sigma, eps4;
};

template <typename T>
PYSLICE_HD PairParams<T> combine(T qi, T si, T ei, T qj, T sj, T ej) {
  return {qi * qj, si + sj, ei * ej};
}

// Coulomb and Lennard-Jones of one plain pair at squared distance r2 (nm^2). kCutoff: OpenMM
// CutoffNonPeriodic (reaction field, both terms zero at r >= r_c, cutoff2 = r_c^2). Written
// branch-free so that the CPU row loop vectorises.
template <bool kCutoff, typename T>
PYSLICE_HD void pair_terms(T r2, PairParams<T> p, T cutoff2, T krf, T crf, T& coulomb, T& lj) {
  r2 = r2 > min_r2<T>() ? r2 : min_r2<T>();
  const T inv_r = T(1) / sqrt_of(r2);
  const T sr2 = p.sigma * p.sigma * (inv_r * inv_r);
  const T sr6 = sr2 * sr2 * sr2;
  // eps = 0 (amber's hydroxyl H): exactly 0, also where sr6 overflowed (0 * inf would be NaN).
  lj = p.eps4 != T(0) ? p.eps4 * sr6 * (sr6 - T(1)) : T(0);
  if (kCutoff) {
    const bool inside = r2 < cutoff2;
    coulomb = inside ? p.qq * (inv_r + krf * r2 - crf) : T(0);
    lj = inside ? lj : T(0);
  } else {
    coulomb = p.qq * inv_r;
  }
}

// pair_terms with the tables' nonbonded method chosen at run time.
template <typename T>
PYSLICE_HD void pair_terms(const Tables<T>& t, T r2, PairParams<T> p, T& coulomb, T& lj) {
  if (t.cutoff > 0) {
    pair_terms<true, T>(r2, p, static_cast<T>(t.cutoff * t.cutoff), static_cast<T>(t.krf),
                        static_cast<T>(t.crf), coulomb, lj);
  } else {
    pair_terms<false, T>(r2, p, T(0), T(0), T(0), coulomb, lj);
  }
}

// (Coulomb, LJ) of the plain pair (i at pi, j at pj), pi and pj 3-vectors.
template <typename T>
PYSLICE_HD void plain_pair(const Tables<T>& t, int64_t i, int64_t j, const T* pi, const T* pj,
                           double& coulomb, double& lj) {
  const T dx = pj[0] - pi[0];
  const T dy = pj[1] - pi[1];
  const T dz = pj[2] - pi[2];
  T c, l;
  pair_terms(t, dx * dx + dy * dy + dz * dz,
             combine(t.charge[i], t.half_sigma[i], t.two_sqrt_eps[i], t.charge[j],
                     t.half_sigma[j], t.two_sqrt_eps[j]),
             c, l);
  coulomb = static_cast<double>(c);
  lj = static_cast<double>(l);
}

// Walks one atom's sorted exception partners alongside increasing j: skip(j) is true when (i, j)
// is an exception (not a plain pair). O(partners) over a whole row.
struct PartnerCursor {
  const int64_t* idx;
  int64_t next;
  int64_t end;
  PYSLICE_HD bool skip(int64_t j) {
    while (next < end && idx[next] < j) ++next;
    return next < end && idx[next] == j;
  }
};

template <typename T>
PYSLICE_HD PartnerCursor partners(const Tables<T>& t, int64_t i) {
  return {t.excl_idx, t.excl_ptr[i], t.excl_ptr[i + 1]};
}

// ---- bonded terms and exceptions --------------------------------------------------------------

struct Vec3 {
  double x, y, z;
};

PYSLICE_HD Vec3 sub(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
PYSLICE_HD double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
PYSLICE_HD Vec3 cross(Vec3 a, Vec3 b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// Atom `atom` of a conformation (N, 3), in double.
template <typename T>
PYSLICE_HD Vec3 at(const T* conformation, int64_t atom) {
  const T* p = conformation + 3 * atom;
  return {static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2])};
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

// Bonded item k of a conformation (N, 3) (bonds, then angles, torsions, exceptions; see
// n_bonded_items), added into its column of e[kNumTerms]: the body of the bonded loop.
template <typename T>
PYSLICE_HD void bonded_item(const Tables<T>& t, const T* conf, int64_t k, double* e) {
  if (k < t.n_bonds) {
    const int64_t* a = t.bond_atoms + 2 * k;
    e[kBond] += bond_energy(at(conf, a[0]), at(conf, a[1]), t.bond_params + 2 * k);
    return;
  }
  k -= t.n_bonds;
  if (k < t.n_angles) {
    const int64_t* a = t.angle_atoms + 3 * k;
    e[kAngle] += angle_energy(at(conf, a[0]), at(conf, a[1]), at(conf, a[2]),
                              t.angle_params + 2 * k);
    return;
  }
  k -= t.n_angles;
  if (k < t.n_torsions) {
    const int64_t* a = t.torsion_atoms + 4 * k;
    e[kTorsion] += torsion_energy(at(conf, a[0]), at(conf, a[1]), at(conf, a[2]), at(conf, a[3]),
                                  t.torsion_params + 3 * k);
    return;
  }
  k -= t.n_torsions;
  if (k < t.n_exceptions) {
    const int64_t* a = t.exc_atoms + 2 * k;
    const Vec3 d = sub(at(conf, a[0]), at(conf, a[1]));
    double c, l;
    exception_terms(dot(d, d), t.exc_params + 3 * k, c, l);
    e[kCoulomb] += c;
    e[kLennardJones] += l;
  }
}

// ---- delta: the terms that touch a moved atom -------------------------------------------------

// A conformation's move: old and new positions (N, 3) and mark (N,) int32, mark[atom] = the
// atom's column in `moved` + 1, 0 for an atom that stays. Positions after the move: new where
// marked, old elsewhere.
template <typename T>
struct Move {
  const T* old_conf;
  const T* new_conf;
  const int32_t* mark;
  PYSLICE_HD Vec3 now(int64_t atom) const {
    return at(mark[atom] != 0 ? new_conf : old_conf, atom);
  }
  PYSLICE_HD Vec3 before(int64_t atom) const { return at(old_conf, atom); }
};

// True when `atom` is the first moved atom of atoms[0..width): a term that touches several moved
// atoms is counted once, at its first.
PYSLICE_HD bool first_moved(const int64_t* atoms, int width, int64_t atom, const int32_t* mark) {
  for (int k = 0; k < width; ++k) {
    if (mark[atoms[k]] != 0) return atoms[k] == atom;
  }
  return false;
}

// The change of the exceptions, bonds, angles and torsions that moved atom i owns (those whose
// first moved atom is i), added into e[kNumTerms]. Entries lane, lane + lanes, ... of each of i's
// lists: the CPU takes all (0, 1), a CUDA block splits them over its threads.
template <typename T>
PYSLICE_HD void owned_terms_delta(const Tables<T>& t, const Move<T>& m, int64_t i, int64_t lane,
                                  int64_t lanes, double* e) {
  for (int64_t q = t.exc_ptr[i] + lane; q < t.exc_ptr[i + 1]; q += lanes) {
    const int64_t x = t.exc_idx[q];
    const int64_t* a = t.exc_atoms + 2 * x;
    if (!first_moved(a, 2, i, m.mark)) continue;
    double c1, l1, c0, l0;
    const Vec3 d1 = sub(m.now(a[0]), m.now(a[1]));
    const Vec3 d0 = sub(m.before(a[0]), m.before(a[1]));
    exception_terms(dot(d1, d1), t.exc_params + 3 * x, c1, l1);
    exception_terms(dot(d0, d0), t.exc_params + 3 * x, c0, l0);
    e[kCoulomb] += c1 - c0;
    e[kLennardJones] += l1 - l0;
  }
  for (int64_t q = t.bond_ptr[i] + lane; q < t.bond_ptr[i + 1]; q += lanes) {
    const int64_t x = t.bond_idx[q];
    const int64_t* a = t.bond_atoms + 2 * x;
    if (!first_moved(a, 2, i, m.mark)) continue;
    const double* p = t.bond_params + 2 * x;
    e[kBond] += bond_energy(m.now(a[0]), m.now(a[1]), p) -
                bond_energy(m.before(a[0]), m.before(a[1]), p);
  }
  for (int64_t q = t.angle_ptr[i] + lane; q < t.angle_ptr[i + 1]; q += lanes) {
    const int64_t x = t.angle_idx[q];
    const int64_t* a = t.angle_atoms + 3 * x;
    if (!first_moved(a, 3, i, m.mark)) continue;
    const double* p = t.angle_params + 2 * x;
    e[kAngle] += angle_energy(m.now(a[0]), m.now(a[1]), m.now(a[2]), p) -
                 angle_energy(m.before(a[0]), m.before(a[1]), m.before(a[2]), p);
  }
  for (int64_t q = t.torsion_ptr[i] + lane; q < t.torsion_ptr[i + 1]; q += lanes) {
    const int64_t x = t.torsion_idx[q];
    const int64_t* a = t.torsion_atoms + 4 * x;
    if (!first_moved(a, 4, i, m.mark)) continue;
    const double* p = t.torsion_params + 3 * x;
    e[kTorsion] += torsion_energy(m.now(a[0]), m.now(a[1]), m.now(a[2]), m.now(a[3]), p) -
                   torsion_energy(m.before(a[0]), m.before(a[1]), m.before(a[2]),
                                  m.before(a[3]), p);
  }
}

// ---- CUDA scheduling constants and scratch layout (what workspace_size reports) ---------------

constexpr int kPairTile = 128;     // atoms per pair tile = threads per pair block (and delta block)
constexpr int kItemThreads = 256;  // bonded items per block

inline int64_t pair_tiles(int64_t n_atoms) { return (n_atoms + kPairTile - 1) / kPairTile; }
inline int64_t item_blocks(int64_t n_items) {
  return n_items > 0 ? (n_items + kItemThreads - 1) / kItemThreads : 1;
}
inline int64_t batch_chunk(int64_t batch) { return batch < kMaxGridY ? batch : kMaxGridY; }

// CUDA energy: per conformation of a launch chunk, (Coulomb, LJ) per pair tile and 5 terms per
// item block, in doubles.
inline int64_t energy_workspace_bytes(int64_t batch, int64_t n_atoms, int64_t n_items) {
  return batch_chunk(batch) * (pair_tiles(n_atoms) * 2 + item_blocks(n_items) * kNumTerms) *
         static_cast<int64_t>(sizeof(double));
}

// CUDA delta: 5 terms per (conformation, moved column) in doubles, then the (chunk, N) int32 marks.
inline int64_t delta_partial_doubles(int64_t batch, int64_t n_moved) {
  return batch_chunk(batch) * n_moved * kNumTerms;
}
inline int64_t delta_workspace_bytes(int64_t batch, int64_t n_atoms, int64_t n_moved) {
  return delta_partial_doubles(batch, n_moved) * static_cast<int64_t>(sizeof(double)) +
         batch_chunk(batch) * n_atoms * static_cast<int64_t>(sizeof(int32_t));
}

}  // namespace energy
}  // namespace pyslice
