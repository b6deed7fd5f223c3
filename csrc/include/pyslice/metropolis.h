// The batched Metropolis-Hastings decision, shared by csrc/cpu/metropolis.cpp and
// csrc/cuda/metropolis.cu; pyslice/reference.py (metropolis_step) is the same in torch.
//
// Chain b moves from state x to the proposed x' with probability
//   min(1, exp(-beta (U(x') - U(x)) + w(x') - w(x))),
// where w is each state's log-weight: -log q(x) for an independence proposal q, 0 for a
// symmetric move, log r(k|x) - log q(k, x) for a lifted move with latent labels k. The decision
// is made in double precision from one uniform per (chain, step):
//   Philox key = seed, counter = (chain mod 2^32, chain div 2^32, step mod 2^32,
//                                 kMetropolisStream | (step div 2^32)),
// a stream disjoint from the samplers' (their fourth counter word is a round number < 2^31).
// A NaN log-acceptance (e.g. two infinite energies) rejects; an infinite current energy (a
// clash) is left as soon as a finite proposal arrives.
#pragma once
#include <cmath>
#include <cstdint>

#include "pyslice/hd.h"
#include "pyslice/philox.h"

namespace pyslice {

constexpr uint32_t kMetropolisStream = 0x80000000u;

PYSLICE_HD double metropolis_log_uniform(uint64_t seed, uint64_t chain, uint64_t step) {
  const Philox4 words = philox4x32_10(
      static_cast<uint32_t>(chain), static_cast<uint32_t>(chain >> 32),
      static_cast<uint32_t>(step),
      kMetropolisStream | (static_cast<uint32_t>(step >> 32) & 0x7FFFFFFFu),
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return log(static_cast<double>(uniform_from_bits(words.w[0])));  // log 0 = -inf: u in [0, 1)
}

PYSLICE_HD bool metropolis_accept(double log_uniform, double beta, double energy,
                                  double energy_new, double log_weight, double log_weight_new) {
  const double log_accept = -beta * (energy_new - energy) + (log_weight_new - log_weight);
  return log_uniform < log_accept;  // false for NaN
}

}  // namespace pyslice
