// Philox-4x32-10 counter-based generator (Salmon et al., SC'11), shared by the CPU and CUDA paths.
// The torch reference (pyslice/reference.py) and the Triton kernel (kernels/philox.py) implement the
// same function; tests check all of them against the published known-answer vectors.
#pragma once
#include <cstdint>

#include "pyslice/hd.h"

namespace pyslice {

struct Philox4 {
  uint32_t w[4];
};

PYSLICE_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

// Counter (c0, c1, c2, c3), key (k0, k1) -> four independent 32-bit words.
PYSLICE_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                 uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kMul0, c0, hi0, lo0);
    mulhilo32(kMul1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Top 24 bits -> a float in [0, 1), exact in float32, identical on every backend.
PYSLICE_HD float uniform_from_bits(uint32_t word) {
  return static_cast<float>(word >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

// Two words -> a double in the open interval (0, 1): 52 random bits m (the top 26 of each word),
// u = (m + 1/2) 2^-52, the midpoints of a 2^-52 grid. Every value is exact in double, none is 0
// (log u is finite) or 1. pyslice/_random.py uniform_open is the same.
PYSLICE_HD double uniform_open(uint32_t high, uint32_t low) {
  const uint64_t m = (static_cast<uint64_t>(high >> 6) << 26) | (low >> 6);
  return (static_cast<double>(m) + 0.5) * 2.220446049250313e-16;  // 2^-52
}

}  // namespace pyslice
