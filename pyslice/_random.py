"""The one module of pyslice's randomness: counter-based Philox-4x32-10 streams.

Every random number of a sampling run (move choices, block choices, random-walk steps, proposal
components and angles, Metropolis uniforms) is a pure function of

    (seed, purpose, global chain index, step, position)

— never of a stateful generator. A run is therefore reproducible from its seed, equal on 1 or N
ranks (chains are keyed by their *global* index, not by the rank that owns them), equal on CPU
and CUDA up to the last bits of the floating-point maths, and two purposes or two steps never
share a stream. Uniforms lie in the open interval (0, 1): never exactly 0 (log u is finite) nor 1.

Streams: the Philox key is ``derive_seed(seed, purpose, ...)``; the counter of chain c, block j is
(c mod 2^32, c div 2^32, j, 0). Each counter gives four 32-bit words, two uniforms (52 bits each).
The compiled kernels implement the same generator (csrc/include/pyslice/philox.h,
kernels/philox.py); the tests check all of them against the published known-answer vectors.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "categorical",
    "derive_seed",
    "normal",
    "philox4x32_10",
    "uniform",
    "uniform_open",
    "uniform_from_bits",
]

MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
_MUL0, _MUL1 = 0xD2511F53, 0xCD9E8D57
_WEYL0, _WEYL1 = 0x9E3779B9, 0xBB67AE85


def derive_seed(seed: int, *words: int) -> int:
    """A 64-bit Philox key derived from ``seed`` and integer ``words`` (a splitmix64 chain).

    Distinct word tuples give unrelated keys: every purpose, move and step gets its own stream.
    """
    # The seed is mixed alone first (the leading 0): added straight to the first word, (seed, w)
    # and (seed + 1, w - 1) gave the same key.
    state = seed & _MASK64
    for word in (0, *words, len(words)):
        state = (state + 0x9E3779B97F4A7C15 + (word & _MASK64)) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * b`` for a 32-bit constant and int64 words < 2^32.

    The 64-bit product does not fit int64, so it is assembled from 16-bit halves.
    """
    a_hi, a_lo = a >> 16, a & 0xFFFF
    b_hi, b_lo = b >> 16, b & 0xFFFF
    low = a_lo * b_lo
    mid = a_hi * b_lo + a_lo * b_hi
    low_sum = low + ((mid & 0xFFFF) << 16)
    hi = a_hi * b_hi + (mid >> 16) + (low_sum >> 32)
    return hi, low_sum & MASK32


def philox4x32_10(
    c0: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    c3: torch.Tensor,
    k0: int,
    k1: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox-4x32-10 (Salmon et al., SC'11) on int64 tensors holding 32-bit words.

    ``c0..c3``: broadcastable int64 tensors with values in [0, 2^32); ``k0, k1``: the key words.
    Returns the four output words as int64 tensors in [0, 2^32).
    """
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_MUL0, c0)
        hi1, lo1 = _mulhilo32(_MUL1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _WEYL0) & MASK32
        k1 = (k1 + _WEYL1) & MASK32
    return c0, c1, c2, c3


def uniform_from_bits(word: torch.Tensor) -> torch.Tensor:
    """Top 24 bits of a 32-bit word -> float32 in [0, 1), exact (the sampling kernels' draws)."""
    return (word >> 8).to(torch.float32) * (2.0**-24)


def uniform_open(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Two 32-bit words -> float64 in the open interval (0, 1): 52 random bits m (the top 26 of
    each word), u = (m + 1/2) 2^-52, the midpoints of a 2^-52 grid. Every value is exact in
    float64; none is 0 (log u is finite) or 1. The compiled kernels use the same expression
    (csrc/include/pyslice/philox.h)."""
    m = ((high >> 6) << 26) | (low >> 6)
    return (m.to(torch.float64) + 0.5) * (2.0**-52)


def _key_words(key: int) -> tuple[int, int]:
    key &= _MASK64
    return key & MASK32, key >> 32


def uniform(key: int, chains: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n)`` float64 uniforms in (0, 1): row b belongs to the global chain ``chains[b]``.

    ``key``: a stream key from :func:`derive_seed`; ``chains: (B,)`` int64 global chain indices
    (< 2^63). Row b depends only on (key, chains[b], n), not on the other rows.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chains = chains.to(torch.int64)
    blocks = (n + 1) // 2
    device = chains.device
    c0 = (chains & MASK32).unsqueeze(1)
    c1 = (chains >> 32).unsqueeze(1)
    c2 = torch.arange(blocks, dtype=torch.int64, device=device).unsqueeze(0)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, torch.zeros_like(c2), *_key_words(key))
    pairs = torch.stack([uniform_open(w0, w1), uniform_open(w2, w3)], dim=-1)  # (B, blocks, 2)
    return pairs.reshape(chains.shape[0], 2 * blocks)[:, :n]


def normal(key: int, chains: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n)`` float64 standard normals (Box-Muller on :func:`uniform`), keyed like it."""
    half = (n + 1) // 2
    u = uniform(key, chains, 2 * half).reshape(chains.shape[0], half, 2)
    radius = torch.sqrt(-2.0 * torch.log(u[..., 0]))
    angle = (2.0 * math.pi) * u[..., 1]
    out = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return out.reshape(chains.shape[0], 2 * half)[:, :n]


def categorical(u: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Indices drawn by inverting the CDF of ``softmax(log_probs)`` (last dim) with the uniforms
    ``u`` (shape ``log_probs.shape[:-1]``); -inf entries are never drawn."""
    probs = torch.softmax(log_probs, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)[..., :-1]
    index = (u.unsqueeze(-1) >= cdf).sum(-1)
    # A cumulative sum that rounds to just below 1 must not hand u near 1 to trailing zero-weight
    # components: cap at the last index with positive weight.
    positions = torch.arange(probs.shape[-1], device=probs.device)
    last = torch.where(probs > 0, positions, 0).amax(-1)
    return torch.minimum(index, last)
