// The batched Metropolis-Hastings decision, shared by csrc/cpu/metropolis.cpp and
// csrc/cuda/metropolis.cu; pyslice/reference.py (metropolis_step) is the same in torch.
//
// Chain b moves from state x to the proposed x' with probability
//   min(1, exp(-beta (U(x') - U(x)) + w(x') - w(x))),
// where w is each state's log-weight: -log q(x) for an independence proposal q, 0 for a
// symmetric move, log r(k|x) - log q(k, x) for a lifted move with latent labels k. The decision
// is made in double precision from one uniform u in (0, 1) (52 bits, never 0) per (chain, step):
//   Philox key = seed, counter = (chain mod 2^32, chain div 2^32, step mod 2^32,
//                                 kMetropolisStream | (step div 2^32)),
// a stream disjoint from the samplers' (their fourth counter word is a round number < 2^31).
// `chain` is the chain's GLOBAL index (chain_offset + b), so chains split over processes take
// the decisions one process would. beta is per chain (replica exchange: a temperature ladder).
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
  return log(uniform_open(words.w[0], words.w[1]));  // finite: u in (0, 1)
}

PYSLICE_HD bool metropolis_accept(double log_uniform, double beta, double energy,
                                  double energy_new, double log_weight, double log_weight_new) {
  const double log_accept = -beta * (energy_new - energy) + (log_weight_new - log_weight);
  return log_uniform < log_accept;  // false for NaN
}

// The chain state and its proposal, all arrays contiguous, B chains. Updated in place where a
// chain accepts: chi (B, n_chi), energy (B,), log_weight (B,), latent (B, n_latent) int64 and
// accepted_count (B,) int64 (+1); accepted (B,) uint8 is written for every chain; beta (B,)
// float64 is each chain's 1/kT.
template <typename Chi, typename Energy>
struct MetropolisArrays {
  Chi* chi;
  const Chi* chi_new;
  Energy* energy;
  const Energy* energy_new;
  Energy* log_weight;
  const Energy* log_weight_new;
  int64_t* latent;
  const int64_t* latent_new;
  int64_t* accepted_count;
  uint8_t* accepted;
  const double* beta;
  int64_t n_chains;
  int64_t n_chi;
  int64_t n_latent;
};

// Decide chain b and, if it accepts, copy its proposal into the state: the whole step of one
// chain, run by the CPU loop and by each CUDA thread.
template <typename Chi, typename Energy>
PYSLICE_HD void metropolis_chain_step(const MetropolisArrays<Chi, Energy>& a, int64_t b,
                                      uint64_t seed, uint64_t step, uint64_t chain_offset) {
  const double log_u = metropolis_log_uniform(seed, chain_offset + static_cast<uint64_t>(b), step);
  const bool accept = metropolis_accept(log_u, a.beta[b], a.energy[b], a.energy_new[b],
                                        a.log_weight[b], a.log_weight_new[b]);
  a.accepted[b] = accept ? 1 : 0;
  if (!accept) return;
  for (int64_t j = 0; j < a.n_chi; ++j) a.chi[b * a.n_chi + j] = a.chi_new[b * a.n_chi + j];
  for (int64_t j = 0; j < a.n_latent; ++j) {
    a.latent[b * a.n_latent + j] = a.latent_new[b * a.n_latent + j];
  }
  a.energy[b] = a.energy_new[b];
  a.log_weight[b] = a.log_weight_new[b];
  a.accepted_count[b] += 1;
}

}  // namespace pyslice
