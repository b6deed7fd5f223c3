"""Fused von Mises mixture sampling in Triton: one kernel picks each draw's component and draws
its angle (Best-Fisher rejection inside the kernel, no host synchronisation, Philox from
(seed, offset)).

It follows csrc/include/pyslice/vonmises.h and pyslice.reference.sample_mixture step for step; the
stream layout and the component table are documented there.
"""

import torch
import triton
import triton.language as tl

from pyslice.kernels.philox import philox4x32_10, uniform_from_bits

_PI: tl.constexpr = 3.141592653589793
_TWO_PI: tl.constexpr = 6.283185307179586
_HALF_PI: tl.constexpr = 1.5707963267948966
_KAPPA_UNIFORM: tl.constexpr = 1e-8
_KAPPA_WRAPPED_NORMAL: tl.constexpr = 1e4


@triton.jit
def _asin_poly(z):
    return (
        ((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2
    ) * z + 1.6666752422e-1


@triton.jit
def _twice_asin_sqrt(h):
    """2 asin(sqrt(h)) for h in [0, 1/2] (Triton's core language has no asin)."""
    x = tl.sqrt_rn(h)
    small = 2.0 * (x + x * h * _asin_poly(h))
    z = 0.5 * (1.0 - x)
    r = tl.sqrt_rn(z)
    large = _PI - 4.0 * (r + r * z * _asin_poly(z))
    return tl.where(h <= 0.25, small, large)


@triton.jit
def _best_fisher_try(u, v, kappa, s_minus_1, s_plus_1):
    h = _HALF_PI * u
    sin_h = tl.sin(h)
    cos_h = tl.cos(h)
    one_minus_z = 2.0 * (sin_h * sin_h)
    one_plus_z = 2.0 * (cos_h * cos_h)
    s_plus_z = s_minus_1 + one_plus_z
    half = (s_minus_1 * one_minus_z) / (2.0 * s_plus_z)
    complement = (s_plus_1 * one_plus_z) / (2.0 * s_plus_z)
    y = ((kappa * s_minus_1) * s_plus_1) / s_plus_z
    vv = 1.0 - v
    accept = (y * (2.0 - y) - vv >= 0.0) | (tl.log(y / vv) + 1.0 - y >= 0.0)
    half = tl.minimum(half, 1.0)
    complement = tl.minimum(complement, 1.0)
    theta = tl.where(half <= 0.5, _twice_asin_sqrt(half), _PI - _twice_asin_sqrt(complement))
    return accept, theta


# Integer arguments equal to 1 would otherwise be specialised into compile-time constants on the
# GPU (and recompiled); the stream words must stay runtime values.
@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset", "base"])
def _sample_mixture_kernel(
    table_ptr,
    out_ptr,
    n,
    rows,
    seed_lo,
    seed_hi,
    offset,
    base,
    N_COMPONENTS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PI_PERIODIC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    e = i + base.to(tl.int64)  # the element's stream index (base places the batch)
    c0 = e.to(tl.uint32)
    c1 = (e >> 32).to(tl.uint32)
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    c2 = zero + offset.to(tl.uint32)
    k0 = zero + seed_lo.to(tl.uint32)
    k1 = zero + seed_hi.to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, zero, k0, k1)

    # Component: the number of cumulative weights (all but the last) at or below u.
    row = i % rows
    field = rows * N_COMPONENTS
    ks = tl.arange(0, BLOCK_K)
    cdf_mask = mask[:, None] & (ks[None, :] < N_COMPONENTS - 1)
    cdf = tl.load(table_ptr + row[:, None] * N_COMPONENTS + ks[None, :], mask=cdf_mask, other=2.0)
    u_component = uniform_from_bits(w0)
    k = tl.sum((u_component[:, None] >= cdf).to(tl.int64), axis=1)
    at = row * N_COMPONENTS + k
    loc = tl.load(table_ptr + field + at, mask=mask, other=0.0)
    kappa = tl.load(table_ptr + 2 * field + at, mask=mask, other=0.0)
    s_minus_1 = tl.load(table_ptr + 3 * field + at, mask=mask, other=1.0)
    s_plus_1 = tl.load(table_ptr + 4 * field + at, mask=mask, other=1.0)
    sigma = tl.load(table_ptr + 5 * field + at, mask=mask, other=0.0)

    negative = (w1 >> 31) != 0
    half_turn = ((w1 >> 30) & 1) != 0
    u = uniform_from_bits(w2)
    v = uniform_from_bits(w3)

    uniform_mode = kappa < _KAPPA_UNIFORM
    wrapped_mode = kappa >= _KAPPA_WRAPPED_NORMAL
    radius = tl.sqrt_rn(-2.0 * tl.log(1.0 - u))
    delta = tl.where(wrapped_mode, sigma * (radius * tl.cos(_TWO_PI * v)), 0.0)
    delta = tl.where(uniform_mode, _PI * (2.0 * u - 1.0), delta)

    # Best-Fisher rejection, each lane until it accepts; the loop ends when the whole block has.
    best_fisher = mask & (kappa >= _KAPPA_UNIFORM) & (kappa < _KAPPA_WRAPPED_NORMAL)
    # Lanes on other paths run the loop body too: give them a harmless envelope (kappa = 1).
    kappa_bf = tl.where(best_fisher, kappa, 1.0)
    s_minus_1 = tl.where(best_fisher, s_minus_1, 1.0)
    s_plus_1 = tl.where(best_fisher, s_plus_1, 3.0)
    active = best_fisher
    theta = tl.zeros([BLOCK], dtype=tl.float32)
    round_ = zero
    while tl.max(active.to(tl.int32), axis=0) > 0:
        accept, trial = _best_fisher_try(u, v, kappa_bf, s_minus_1, s_plus_1)
        theta = tl.where(active & accept, trial, theta)
        active = active & (accept == 0)
        round_ = round_ + 1
        r0, r1, r2, r3 = philox4x32_10(c0, c1, c2, round_, k0, k1)
        u = uniform_from_bits(r0)
        v = uniform_from_bits(r1)
    delta = tl.where(best_fisher, tl.where(negative, -theta, theta), delta)

    x = loc + delta
    if PI_PERIODIC:
        x = 0.5 * x + tl.where(half_turn, _PI, 0.0)
    r = x - _TWO_PI * tl.floor((x + _PI) / _TWO_PI)
    r = tl.where(r >= _PI, r - _TWO_PI, r)
    r = tl.where(r < -_PI, r + _TWO_PI, r)
    tl.store(out_ptr + i, r, mask=mask)


def sample_mixture(
    table: torch.Tensor,
    n: int,
    seed: int,
    offset: int,
    base: int,
    pi_periodic: bool,
    block: int = 1024,
) -> torch.Tensor:
    """``table: (6, rows, K) float32`` -> ``(n,) float32`` draws; see pyslice.reference."""
    table = table.contiguous()
    _, rows, n_components = table.shape
    out = torch.empty(n, dtype=torch.float32, device=table.device)
    if n == 0:
        return out
    grid = (triton.cdiv(n, block),)
    _sample_mixture_kernel[grid](
        table,
        out,
        n,
        rows,
        seed & 0xFFFFFFFF,
        seed >> 32,
        offset,
        base,
        N_COMPONENTS=n_components,
        BLOCK_K=max(triton.next_power_of_2(n_components - 1), 1),
        PI_PERIODIC=pi_periodic,
        BLOCK=block,
    )
    return out
