// CPU launchers for the force-field energy: the schedule only; every term's maths and the bonded
// and delta loop bodies live in pyslice/energy.h.
//
// Full energy: the conformations are transposed to SoA (x, y, z rows) so that the inner loop over
// partner atoms j is a unit-stride SIMD loop; exceptions are skipped in that loop by a per-thread
// row mask (keep[j] = 0 for the exception partners of atom i, set and reset per row: O(partners)),
// and evaluated exactly on their own. Work items are (conformation, block of rows), so one large
// conformation also uses every core; partial sums are stored per item and added in a fixed order:
// results do not depend on the number of threads.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "energy_ops.h"
#include "pyslice/energy.h"

namespace pyslice {
namespace {

using energy::Tables;

constexpr int64_t kRowBlock = 32;

// sum over j in [j0, n) of keep[j] * (Coulomb, LJ)(atom i at (xi, yi, zi), atom j): the hot loop.
// A row is summed in T (full-width SIMD: float rows stay float) and added to the double totals;
// a float row of ~1e3 terms keeps ~1e-6 relative accuracy, the float32 path's own precision.
template <bool kCutoff, typename T>
__attribute__((always_inline)) inline void pair_row_body(const Tables<T>& t, const T* x,
                                                         const T* y, const T* z, const T* keep,
                                                         int64_t i, T xi, T yi, T zi, int64_t j0,
                                                         int64_t n, double& coulomb, double& lj) {
  const T qi = t.charge[i];
  const T si = t.half_sigma[i];
  const T ei = t.two_sqrt_eps[i];
  const T cutoff2 = static_cast<T>(t.cutoff * t.cutoff);
  const T krf = static_cast<T>(t.krf);
  const T crf = static_cast<T>(t.crf);
  const T* q = t.charge;
  const T* s = t.half_sigma;
  const T* e = t.two_sqrt_eps;
  T c_sum = T(0), l_sum = T(0);
#pragma omp simd reduction(+ : c_sum, l_sum)
  for (int64_t j = j0; j < n; ++j) {
    const T dx = x[j] - xi;
    const T dy = y[j] - yi;
    const T dz = z[j] - zi;
    T c, l;
    energy::pair_terms<kCutoff, T>(dx * dx + dy * dy + dz * dz,
                                   energy::combine(qi, si, ei, q[j], s[j], e[j]), cutoff2, krf,
                                   crf, c, l);
    // A select, not a product: an excluded pair may overlap (inf) and 0 * inf is NaN.
    c_sum += keep[j] != T(0) ? keep[j] * c : T(0);
    l_sum += keep[j] != T(0) ? keep[j] * l : T(0);
  }
  coulomb += static_cast<double>(c_sum);
  lj += static_cast<double>(l_sum);
}

// The hot loop compiled twice, for AVX2 and for the baseline ISA; the loader picks the clone by
// CPU feature (GCC function multi-versioning; not "arch=", which tests the CPU model), so the
// module runs on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PYSLICE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PYSLICE_CLONES
#endif
#define PYSLICE_PAIR_ROW(NAME, CUT, T)                                                          \
  PYSLICE_CLONES void NAME(const Tables<T>& t, const T* x, const T* y, const T* z,            \
                           const T* keep, int64_t i, T xi, T yi, T zi, int64_t j0, int64_t n,  \
                           double& coulomb, double& lj) {                                     \
    pair_row_body<CUT, T>(t, x, y, z, keep, i, xi, yi, zi, j0, n, coulomb, lj);               \
  }
PYSLICE_PAIR_ROW(pair_row_cut_f32, true, float)
PYSLICE_PAIR_ROW(pair_row_nocut_f32, false, float)
PYSLICE_PAIR_ROW(pair_row_cut_f64, true, double)
PYSLICE_PAIR_ROW(pair_row_nocut_f64, false, double)
#undef PYSLICE_PAIR_ROW

void pair_row(const Tables<float>& t, const float* x, const float* y, const float* z,
              const float* keep, int64_t i, float xi, float yi, float zi, int64_t j0,
              double& coulomb, double& lj) {
  (t.cutoff > 0 ? pair_row_cut_f32 : pair_row_nocut_f32)(t, x, y, z, keep, i, xi, yi, zi, j0,
                                                         t.n_atoms, coulomb, lj);
}

void pair_row(const Tables<double>& t, const double* x, const double* y, const double* z,
              const double* keep, int64_t i, double xi, double yi, double zi, int64_t j0,
              double& coulomb, double& lj) {
  (t.cutoff > 0 ? pair_row_cut_f64 : pair_row_nocut_f64)(t, x, y, z, keep, i, xi, yi, zi, j0,
                                                         t.n_atoms, coulomb, lj);
}

// keep[j] = value for the exception partners j of atom i.
template <typename T>
void set_partners(const Tables<T>& t, int64_t i, T* keep, T value) {
  for (int64_t k = t.excl_ptr[i]; k < t.excl_ptr[i + 1]; ++k) keep[t.excl_idx[k]] = value;
}

template <typename T>
void energy_cpu(const Tables<T>& t, const T* positions, int64_t batch, double* out) {
  const int64_t n = t.n_atoms;
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
  const int64_t items = batch * blocks;
  const int64_t bonded_items = energy::n_bonded_items(t);
  std::vector<T> soa(static_cast<size_t>(batch * 3 * n));
  std::vector<double> partial(static_cast<size_t>(items * 2), 0.0);
  std::fill(out, out + batch * energy::kNumTerms, 0.0);
  // Small jobs run on one thread: starting a team costs more than they do (and far more when
  // the machine is oversubscribed).
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel if (batch * n * n >= (int64_t{1} << 20))
#endif
  {
    std::vector<T> keep(static_cast<size_t>(n), T(1));
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int64_t b = 0; b < batch; ++b) {
      const T* conf = positions + b * n * 3;
      T* s = soa.data() + b * 3 * n;
      for (int64_t i = 0; i < n; ++i) {
        s[i] = conf[3 * i];
        s[n + i] = conf[3 * i + 1];
        s[2 * n + i] = conf[3 * i + 2];
      }
      double* o = out + b * energy::kNumTerms;
      for (int64_t k = 0; k < bonded_items; ++k) energy::bonded_item(t, conf, k, o);
    }
    // Triangular rows: early blocks cost more; dynamic scheduling balances them.
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / blocks;
      const int64_t i0 = (item % blocks) * kRowBlock;
      const int64_t i1 = std::min(n, i0 + kRowBlock);
      const T* x = soa.data() + b * 3 * n;
      const T* y = x + n;
      const T* z = y + n;
      double coulomb = 0.0, lj = 0.0;
      for (int64_t i = i0; i < i1; ++i) {
        set_partners(t, i, keep.data(), T(0));
        pair_row(t, x, y, z, keep.data(), i, x[i], y[i], z[i], i + 1, coulomb, lj);
        set_partners(t, i, keep.data(), T(1));
      }
      partial[2 * item] = coulomb;
      partial[2 * item + 1] = lj;
    }
  }
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t k = 0; k < blocks; ++k) {
      out[b * energy::kNumTerms + energy::kCoulomb] += partial[2 * (b * blocks + k)];
      out[b * energy::kNumTerms + energy::kLennardJones] += partial[2 * (b * blocks + k) + 1];
    }
  }
}

template <typename T>
void energy_delta_cpu(const Tables<T>& t, const T* positions, const T* new_positions,
                      const int64_t* moved, int64_t batch, int64_t n_moved, double* out) {
  const int64_t n = t.n_atoms;
  std::fill(out, out + batch * energy::kNumTerms, 0.0);
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp parallel if (batch * n_moved * n >= (int64_t{1} << 18))
#endif
  {
    std::vector<int32_t> mark(static_cast<size_t>(n), 0);  // moved atom -> its column + 1
    std::vector<T> keep(static_cast<size_t>(n), T(1));     // 0 for moved atoms (and partners)
    std::vector<T> soa(static_cast<size_t>(3 * n));
    std::vector<int64_t> list;
    list.reserve(static_cast<size_t>(n_moved));
#if defined(PYSLICE_WITH_OPENMP)
#pragma omp for schedule(dynamic, 4)
#endif
    for (int64_t b = 0; b < batch; ++b) {
      const energy::Move<T> move{positions + b * n * 3, new_positions + b * n * 3, mark.data()};
      double* o = out + b * energy::kNumTerms;
      list.clear();
      for (int64_t k = 0; k < n_moved; ++k) {
        const int64_t atom = moved[b * n_moved + k];
        if (atom < 0 || mark[atom] != 0) continue;  // padding (duplicates are rejected upstream)
        mark[atom] = static_cast<int32_t>(k) + 1;
        keep[atom] = T(0);
        list.push_back(atom);
      }
      if (!list.empty()) {
        T* x = soa.data();
        T* y = x + n;
        T* z = y + n;
        for (int64_t i = 0; i < n; ++i) {
          x[i] = move.old_conf[3 * i];
          y[i] = move.old_conf[3 * i + 1];
          z[i] = move.old_conf[3 * i + 2];
        }
        double c_new = 0.0, c_old = 0.0, l_new = 0.0, l_old = 0.0;
        for (size_t m = 0; m < list.size(); ++m) {
          const int64_t i = list[m];
          // (moved i, unmoved j) plain pairs: old and new rows against the same environment.
          set_partners(t, i, keep.data(), T(0));
          const T* pn = move.new_conf + 3 * i;
          pair_row(t, x, y, z, keep.data(), i, pn[0], pn[1], pn[2], 0, c_new, l_new);
          pair_row(t, x, y, z, keep.data(), i, x[i], y[i], z[i], 0, c_old, l_old);
          for (int64_t k = t.excl_ptr[i]; k < t.excl_ptr[i + 1]; ++k) {
            const int64_t j = t.excl_idx[k];
            keep[j] = mark[j] != 0 ? T(0) : T(1);
          }
          // (moved i, moved j after i in the list) plain pairs, each once.
          for (size_t m2 = m + 1; m2 < list.size(); ++m2) {
            const int64_t j = list[m2];
            if (std::binary_search(t.excl_idx + t.excl_ptr[i], t.excl_idx + t.excl_ptr[i + 1],
                                   j)) {
              continue;
            }
            double cn, ln, co, lo;
            energy::plain_pair(t, i, j, pn, move.new_conf + 3 * j, cn, ln);
            energy::plain_pair(t, i, j, move.old_conf + 3 * i, move.old_conf + 3 * j, co, lo);
            c_new += cn;
            l_new += ln;
            c_old += co;
            l_old += lo;
          }
          energy::owned_terms_delta(t, move, i, 0, 1, o);
        }
        o[energy::kCoulomb] += c_new - c_old;
        o[energy::kLennardJones] += l_new - l_old;
      }
      for (const int64_t atom : list) {
        mark[atom] = 0;
        keep[atom] = T(1);
      }
    }
  }
}

}  // namespace

void energy_cpu_launch(const energy::Tables<float>& tables, const float* positions, int64_t batch,
                       double* out) {
  energy_cpu(tables, positions, batch, out);
}
void energy_cpu_launch(const energy::Tables<double>& tables, const double* positions,
                       int64_t batch, double* out) {
  energy_cpu(tables, positions, batch, out);
}
void energy_delta_cpu_launch(const energy::Tables<float>& tables, const float* positions,
                             const float* new_positions, const int64_t* moved, int64_t batch,
                             int64_t n_moved, double* out) {
  energy_delta_cpu(tables, positions, new_positions, moved, batch, n_moved, out);
}
void energy_delta_cpu_launch(const energy::Tables<double>& tables, const double* positions,
                             const double* new_positions, const int64_t* moved, int64_t batch,
                             int64_t n_moved, double* out) {
  energy_delta_cpu(tables, positions, new_positions, moved, batch, n_moved, out);
}

}  // namespace pyslice
