"""Philox-4x32-10 in Triton: the same function as csrc/include/pyslice/philox.h and
pyslice.reference.philox4x32_10 (all are checked against the Random123 known answers)."""

import triton
import triton.language as tl

_MUL0: tl.constexpr = 0xD2511F53
_MUL1: tl.constexpr = 0xCD9E8D57
_WEYL0: tl.constexpr = 0x9E3779B9
_WEYL1: tl.constexpr = 0xBB67AE85


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """uint32 counter words and key words -> four uint32 words."""
    for _ in tl.static_range(10):
        prev0 = c0
        prev2 = c2
        c0 = tl.umulhi(_MUL1, prev2) ^ c1 ^ k0
        c2 = tl.umulhi(_MUL0, prev0) ^ c3 ^ k1
        c1 = _MUL1 * prev2
        c3 = _MUL0 * prev0
        k0 = k0 + _WEYL0
        k1 = k1 + _WEYL1
    return c0, c1, c2, c3


@triton.jit
def uniform_from_bits(word):
    """Top 24 bits -> float32 in [0, 1), exact."""
    return (word >> 8).to(tl.float32) * 5.9604644775390625e-08


@triton.jit(do_not_specialize=["k0", "k1"])
def _philox_kernel(counter_ptr, out_ptr, n, k0, k1, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    c0 = tl.load(counter_ptr + 4 * idx, mask=mask, other=0).to(tl.uint32)
    c1 = tl.load(counter_ptr + 4 * idx + 1, mask=mask, other=0).to(tl.uint32)
    c2 = tl.load(counter_ptr + 4 * idx + 2, mask=mask, other=0).to(tl.uint32)
    c3 = tl.load(counter_ptr + 4 * idx + 3, mask=mask, other=0).to(tl.uint32)
    key0 = tl.full([BLOCK], k0, tl.int64).to(tl.uint32)
    key1 = tl.full([BLOCK], k1, tl.int64).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, key0, key1)
    tl.store(out_ptr + 4 * idx, w0.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * idx + 1, w1.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * idx + 2, w2.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * idx + 3, w3.to(tl.int64), mask=mask)


def philox(counters, k0: int, k1: int):
    """Test entry point: counters (n, 4) int64 in [0, 2^32) -> (n, 4) int64 words."""
    import torch

    counters = counters.contiguous()
    out = torch.empty_like(counters)
    n = counters.shape[0]
    block = 64
    _philox_kernel[(triton.cdiv(n, block),)](counters, out, n, k0, k1, BLOCK=block)
    return out
