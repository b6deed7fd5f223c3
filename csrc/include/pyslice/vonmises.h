// von Mises mixture sampling, one draw per call: the maths shared by csrc/cpu and csrc/cuda.
//
// The same algorithm, operation for operation, lives in pyslice/reference.py (torch) and
// kernels/vonmises.py (Triton); the comments name the steps so the three can be read side by side.
//
// Stream layout (per output element i, Philox key = seed, e = base + i its stream index):
//   counter = (e mod 2^32, e div 2^32, offset, round)
// `base` places a batch inside a larger one: elements of chains split over processes draw the
// streams one process would.
//   round 0: w0 -> mixture component, w1 -> sign bit (31) and half-turn bit (30, pi-periodic only),
//            w2, w3 -> first proposal (u, v)
//   round r >= 1: w0, w1 -> proposal r (u, v)
// Components are described by a table (see pyslice/reference.py: mixture_table):
//   cdf (cumulative weights), loc, kappa, s - 1, s + 1 (Best-Fisher envelope), sigma (wrapped normal).
#pragma once
#include <cmath>
#include <cstdint>

#include "pyslice/math.h"
#include "pyslice/philox.h"

namespace pyslice {

// Below: uniform; above: wrapped normal with matched mean resultant length (KS error < 3e-6).
constexpr float kKappaUniform = 1e-8f;
constexpr float kKappaWrappedNormal = 1e4f;
constexpr float kPi = Pi<float>::value;
constexpr float kTwoPi = Pi<float>::twice;
constexpr float kHalfPi = Pi<float>::half;

// Table field order in the (6, rows, K) float32 table.
enum TableField { kCdf = 0, kLoc = 1, kKappa = 2, kSMinus1 = 3, kSPlus1 = 4, kSigma = 5 };

// 2 asin(sqrt(h)) for h in [0, 1/2], by the Cephes asinf polynomial (|x| <= 0.5, about 2 ulp).
// Written out rather than calling asinf so that the Triton kernel (whose core language has no
// asin) and the torch reference evaluate exactly the same expression.
PYSLICE_HD float asin_poly(float z) {
  return (((4.2163199048e-2f * z + 2.4181311049e-2f) * z + 4.5470025998e-2f) * z +
          7.4953002686e-2f) * z + 1.6666752422e-1f;
}

PYSLICE_HD float twice_asin_sqrt(float h) {
  if (h <= 0.25f) {
    const float x = sqrtf(h);  // asin(x) with x^2 = h exactly
    return 2.0f * (x + x * h * asin_poly(h));
  }
  // asin(x) = pi/2 - 2 asin(sqrt((1 - x)/2)) for 1/2 < x <= sqrt(1/2): 1 - x >= 0.29, no cancellation
  const float z = 0.5f * (1.0f - sqrtf(h));
  const float r = sqrtf(z);
  return kPi - 4.0f * (r + r * z * asin_poly(z));
}

// theta = acos(W) from half = (1 - W)/2 and its complement (1 + W)/2, both computed without
// cancellation: near theta = pi the complement carries the precision.
PYSLICE_HD float theta_from_halves(float half, float complement) {
  return half <= 0.5f ? twice_asin_sqrt(half) : kPi - twice_asin_sqrt(complement);
}

// One Best-Fisher proposal written without cancellation:
//   1 - Z = 2 sin^2(pi u / 2), 1 + Z = 2 cos^2(pi u / 2), s + Z = (s - 1) + (1 + Z),
//   1 - W = (s - 1)(1 - Z)/(s + Z), 1 + W = (s + 1)(1 + Z)/(s + Z),
//   Y = kappa (s - W) = kappa (s - 1)(s + 1)/(s + Z),
//   theta = acos(W) = 2 asin(sqrt((1 - W)/2)) = pi - 2 asin(sqrt((1 + W)/2)),
// so float32 keeps full relative precision in theta for every kappa (no acos near 1).
PYSLICE_HD bool best_fisher_try(float u, float v, float kappa, float s_minus_1, float s_plus_1,
                                float& theta) {
  const float h = kHalfPi * u;
  const float sin_h = sinf(h);
  const float cos_h = cosf(h);
  const float one_minus_z = 2.0f * (sin_h * sin_h);
  const float one_plus_z = 2.0f * (cos_h * cos_h);
  const float s_plus_z = s_minus_1 + one_plus_z;
  const float half = (s_minus_1 * one_minus_z) / (2.0f * s_plus_z);
  const float complement = (s_plus_1 * one_plus_z) / (2.0f * s_plus_z);
  const float y = ((kappa * s_minus_1) * s_plus_1) / s_plus_z;
  const float vv = 1.0f - v;  // in (0, 1]
  const bool accept = (y * (2.0f - y) - vv >= 0.0f) || (logf(y / vv) + 1.0f - y >= 0.0f);
  theta = theta_from_halves(fminf(half, 1.0f), fminf(complement, 1.0f));
  return accept;
}

// Draws element i of the flattened output. `table` is (6, rows, K) float32 contiguous.
PYSLICE_HD float sample_mixture_element(const float* table, int64_t rows, int64_t n_components,
                                        int64_t i, uint64_t seed, uint32_t offset,
                                        uint64_t base, bool pi_periodic) {
  const uint32_t k0 = static_cast<uint32_t>(seed);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  const uint64_t e = base + static_cast<uint64_t>(i);
  const uint32_t c0 = static_cast<uint32_t>(e);
  const uint32_t c1 = static_cast<uint32_t>(e >> 32);
  Philox4 words = philox4x32_10(c0, c1, offset, 0u, k0, k1);

  // Component: the number of cumulative weights (all but the last) at or below u.
  const int64_t row = i % rows;
  const int64_t field_stride = rows * n_components;
  const float* cdf = table + kCdf * field_stride + row * n_components;
  const float u_component = uniform_from_bits(words.w[0]);
  int64_t k = 0;
  for (int64_t j = 0; j + 1 < n_components; ++j) k += (u_component >= cdf[j]) ? 1 : 0;
  const int64_t at = row * n_components + k;
  const float loc = table[kLoc * field_stride + at];
  const float kappa = table[kKappa * field_stride + at];

  const bool negative = (words.w[1] >> 31) != 0u;
  const bool half_turn = ((words.w[1] >> 30) & 1u) != 0u;
  float u = uniform_from_bits(words.w[2]);
  float v = uniform_from_bits(words.w[3]);

  float delta;
  if (kappa < kKappaUniform) {
    delta = kPi * (2.0f * u - 1.0f);
  } else if (kappa >= kKappaWrappedNormal) {
    const float radius = sqrtf(-2.0f * logf(1.0f - u));
    delta = table[kSigma * field_stride + at] * (radius * cosf(kTwoPi * v));
  } else {
    const float s_minus_1 = table[kSMinus1 * field_stride + at];
    const float s_plus_1 = table[kSPlus1 * field_stride + at];
    float theta = 0.0f;
    uint32_t round = 0;
    while (!best_fisher_try(u, v, kappa, s_minus_1, s_plus_1, theta)) {
      ++round;
      words = philox4x32_10(c0, c1, offset, round, k0, k1);
      u = uniform_from_bits(words.w[0]);
      v = uniform_from_bits(words.w[1]);
    }
    delta = negative ? -theta : theta;
  }
  float x = loc + delta;
  if (pi_periodic) x = 0.5f * x + (half_turn ? kPi : 0.0f);
  return wrap_angle(x);
}

}  // namespace pyslice
