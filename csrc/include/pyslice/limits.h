// Limits shared by the bindings and the launchers: the one home of these numbers.
#pragma once
#include <cstdint>

namespace pyslice {

constexpr uint64_t kMaxUint32 = 0xFFFFFFFFull;          // 2**32 - 1: Philox words, offsets
constexpr uint64_t kMaxUint64 = 0xFFFFFFFFFFFFFFFFull;  // 2**64 - 1: seeds, addresses, streams
// The Metropolis stream keeps 31 bits of step div 2**32 (pyslice/metropolis.h): steps < 2**63.
constexpr uint64_t kMaxStep = (uint64_t{1} << 63) - 1;
// CUDA's gridDim.y (and z) limit: launchers that put the batch on y launch in chunks of this.
constexpr int64_t kMaxGridY = 65535;

}  // namespace pyslice
