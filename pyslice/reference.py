"""Plain-torch reference implementations of pyslice's hot operations.

These are part of the product: the fallback on any device, the oracle of the tests and the baseline
of the benchmarks. Each function follows its compiled twin operation for operation:

- Philox-4x32-10 and the uniform conversion: ``csrc/include/pyslice/philox.h`` and
  ``kernels/philox.py``
- von Mises mixture sampling: ``csrc/include/pyslice/vonmises.h``, ``kernels/vonmises.py``

Random streams (one per output element ``i``, stream index e = base + i; Philox key = ``seed``)::

    counter = (e mod 2^32, e div 2^32, offset, round)
    round 0: w0 -> component, w1 -> sign bit 31 and half-turn bit 30, (w2, w3) -> first proposal
    round r >= 1: (w0, w1) -> proposal r

so a draw depends only on (seed, offset, i): same seed, same samples, on every backend.
"""

from __future__ import annotations

import math

import torch

from pyslice._random import MASK32, philox4x32_10, uniform_from_bits, uniform_open
from pyslice.geometry.angles import wrap_angle

__all__ = [
    "KAPPA_UNIFORM",
    "KAPPA_WRAPPED_NORMAL",
    "TABLE_FIELDS",
    "mixture_table",
    "philox4x32_10",
    "sample_mixture",
    "uniform_from_bits",
]


#: Below this concentration a component is sampled as uniform (KS error < kappa / pi).
KAPPA_UNIFORM = 1e-8
#: At and above this concentration a component is sampled as a wrapped normal whose mean
#: resultant length equals I1/I0(kappa); its KS distance to the von Mises is < 3e-6 there,
#: below float32's own angular resolution at that concentration.
KAPPA_WRAPPED_NORMAL = 1e4
#: Rows of the component table, in order.
TABLE_FIELDS = ("cdf", "loc", "kappa", "s_minus_1", "s_plus_1", "sigma")

_PI = math.pi
_TWO_PI = 2.0 * math.pi
_HALF_PI = 0.5 * math.pi


def mixture_table(
    logits: torch.Tensor, loc: torch.Tensor, concentration: torch.Tensor
) -> torch.Tensor:
    """Per-component sampling constants, shared by every backend.

    ``logits, loc, concentration: (rows, K)`` -> ``(6, rows, K) float32`` with the fields of
    ``TABLE_FIELDS``: cumulative weights (last one exactly 1), location, concentration, and the
    Best-Fisher envelope ``s - 1``, ``s + 1`` or the wrapped-normal ``sigma``, computed in float64
    without cancellation:

        q = sqrt(1 + 4 k^2), t = 1 + q, rho = 2 k / (t + sqrt(2 t)),
        1 - rho = (1 + 1/(q + 2 k) + sqrt(2 t)) / (t + sqrt(2 t)),
        s - 1 = (1 - rho)^2 / (2 rho), s + 1 = (1 + rho)^2 / (2 rho),
        sigma^2 = -2 log(I1(k) / I0(k)).
    """
    logits64 = logits.to(torch.float64)
    kappa = concentration.to(torch.float64)
    cdf = torch.softmax(logits64, dim=-1).cumsum(dim=-1)
    cdf[..., -1] = 1.0

    best_fisher = (kappa >= KAPPA_UNIFORM) & (kappa < KAPPA_WRAPPED_NORMAL)
    k = torch.where(best_fisher, kappa, torch.ones_like(kappa))
    q = torch.sqrt(1.0 + 4.0 * k * k)
    t = 1.0 + q
    root = torch.sqrt(2.0 * t)
    rho = 2.0 * k / (t + root)
    one_minus_rho = (1.0 + 1.0 / (q + 2.0 * k) + root) / (t + root)
    s_minus_1 = torch.where(best_fisher, one_minus_rho.square() / (2.0 * rho), 0.0)
    s_plus_1 = torch.where(best_fisher, (1.0 + rho).square() / (2.0 * rho), 0.0)

    wrapped = kappa >= KAPPA_WRAPPED_NORMAL
    kw = torch.where(wrapped, kappa, torch.full_like(kappa, KAPPA_WRAPPED_NORMAL))
    resultant = torch.special.i1e(kw) / torch.special.i0e(kw)
    sigma = torch.where(wrapped, torch.sqrt(-2.0 * torch.log(resultant)), 0.0)

    fields = (cdf, loc.to(torch.float64), kappa, s_minus_1, s_plus_1, sigma)
    return torch.stack([f.expand_as(cdf) for f in fields]).to(torch.float32).contiguous()


def asin_poly(z: torch.Tensor) -> torch.Tensor:
    """Cephes asinf polynomial in z = x^2 (|x| <= 1/2)."""
    return (
        ((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2
    ) * z + 1.6666752422e-1


def twice_asin_sqrt(h: torch.Tensor) -> torch.Tensor:
    """2 asin(sqrt(h)) for h in [0, 1/2], float32, the same expression as the kernels."""
    x = torch.sqrt(h)
    small = 2.0 * (x + x * h * asin_poly(h))
    z = 0.5 * (1.0 - x)
    r = torch.sqrt(z)
    large = _PI - 4.0 * (r + r * z * asin_poly(z))
    return torch.where(h <= 0.25, small, large)


def theta_from_halves(half: torch.Tensor, complement: torch.Tensor) -> torch.Tensor:
    """acos(W) from (1 - W)/2 and (1 + W)/2; near pi the complement carries the precision."""
    return torch.where(half <= 0.5, twice_asin_sqrt(half), _PI - twice_asin_sqrt(complement))


def best_fisher_try(
    u: torch.Tensor,
    v: torch.Tensor,
    kappa: torch.Tensor,
    s_minus_1: torch.Tensor,
    s_plus_1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Best-Fisher proposal per element (cancellation-free form): (accepted, theta)."""
    h = _HALF_PI * u
    sin_h, cos_h = torch.sin(h), torch.cos(h)
    one_minus_z = 2.0 * (sin_h * sin_h)
    one_plus_z = 2.0 * (cos_h * cos_h)
    s_plus_z = s_minus_1 + one_plus_z
    half = (s_minus_1 * one_minus_z) / (2.0 * s_plus_z)
    complement = (s_plus_1 * one_plus_z) / (2.0 * s_plus_z)
    y = ((kappa * s_minus_1) * s_plus_1) / s_plus_z
    vv = 1.0 - v
    accept = (y * (2.0 - y) - vv >= 0.0) | (torch.log(y / vv) + 1.0 - y >= 0.0)
    theta = theta_from_halves(half.clamp(max=1.0), complement.clamp(max=1.0))
    return accept, theta


def sample_mixture(
    table: torch.Tensor, n: int, seed: int, offset: int, base: int, pi_periodic: bool
) -> torch.Tensor:
    """Draw element ``i`` (0 <= i < n) of a flattened sample, row ``i % rows`` of ``table``,
    from the streams of element ``base + i`` (base places the batch inside a larger one).

    ``table: (6, rows, K) float32`` from :func:`mixture_table` -> ``(n,) float32`` in [-pi, pi).
    The rejection loop runs over rounds in Python; that is fine for a reference (the fast paths
    run it per element inside the kernel).
    """
    device = table.device
    _, rows, n_components = table.shape
    i = torch.arange(n, dtype=torch.int64, device=device)
    e = i + base
    c0, c1 = e & MASK32, e >> 32
    c2 = torch.full_like(i, offset)
    k0, k1 = seed & MASK32, seed >> 32
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, torch.zeros_like(i), k0, k1)

    row = i % rows
    flat = table.reshape(6, rows * n_components)
    cdf = table[0].index_select(0, row)[:, : n_components - 1]
    k = (uniform_from_bits(w0).unsqueeze(1) >= cdf).sum(dim=1)
    at = row * n_components + k
    loc, kappa, s_minus_1, s_plus_1, sigma = (flat[f].index_select(0, at) for f in range(1, 6))

    negative = (w1 >> 31) != 0
    half_turn = ((w1 >> 30) & 1) != 0
    u, v = uniform_from_bits(w2), uniform_from_bits(w3)

    delta = torch.zeros(n, dtype=torch.float32, device=device)
    uniform_mode = kappa < KAPPA_UNIFORM
    wrapped_mode = kappa >= KAPPA_WRAPPED_NORMAL
    delta = torch.where(uniform_mode, _PI * (2.0 * u - 1.0), delta)
    radius = torch.sqrt(-2.0 * torch.log(1.0 - u))
    delta = torch.where(wrapped_mode, sigma * (radius * torch.cos(_TWO_PI * v)), delta)

    theta = torch.zeros(n, dtype=torch.float32, device=device)
    active = torch.nonzero(~(uniform_mode | wrapped_mode)).flatten()
    pu, pv = u[active], v[active]
    round_ = 0
    while active.numel() > 0:
        accepted, trial = best_fisher_try(
            pu, pv, kappa[active], s_minus_1[active], s_plus_1[active]
        )
        theta[active[accepted]] = trial[accepted]
        active = active[~accepted]
        round_ += 1
        if active.numel() == 0:
            break
        r0, r1, _, _ = philox4x32_10(
            c0[active], c1[active], c2[active], torch.full_like(active, round_), k0, k1
        )
        pu, pv = uniform_from_bits(r0), uniform_from_bits(r1)
    best_fisher = ~(uniform_mode | wrapped_mode)
    delta = torch.where(best_fisher, torch.where(negative, -theta, theta), delta)

    x = loc + delta
    if pi_periodic:
        x = 0.5 * x + torch.where(half_turn, _PI, 0.0)
    return wrap_angle(x)


#: Fourth Philox counter word of the Metropolis stream (samplers use rounds < 2^31 there).
METROPOLIS_STREAM = 0x80000000


def metropolis_log_uniform(
    seed: int, step: int, n_chains: int, device, chain_offset: int = 0
) -> torch.Tensor:
    """log u for every chain at ``step``: (n_chains,) float64, u in (0, 1) with 52 random bits,
    chain b keyed by its global index ``chain_offset + b``."""
    chain = torch.arange(chain_offset, chain_offset + n_chains, dtype=torch.int64, device=device)
    w0, w1, _, _ = philox4x32_10(
        chain & MASK32,
        chain >> 32,
        torch.full_like(chain, step & MASK32),
        torch.full_like(chain, METROPOLIS_STREAM | ((step >> 32) & 0x7FFFFFFF)),
        seed & MASK32,
        seed >> 32,
    )
    return torch.log(uniform_open(w0, w1))


def metropolis_step(
    chi: torch.Tensor,
    chi_new: torch.Tensor,
    energy: torch.Tensor,
    energy_new: torch.Tensor,
    log_weight: torch.Tensor,
    log_weight_new: torch.Tensor,
    latent: torch.Tensor,
    latent_new: torch.Tensor,
    accepted_count: torch.Tensor,
    beta: torch.Tensor,
    seed: int,
    step: int,
    chain_offset: int,
) -> torch.Tensor:
    """The fused Metropolis-Hastings step (csrc/include/pyslice/metropolis.h), in place.

    Chain b accepts iff log u_b < -beta_b (U' - U) + (w' - w) (float64; NaN rejects) and then
    takes the proposal's chi, energy, log-weight and latent labels, and counts the acceptance;
    ``beta: (B,)`` float64, u_b keyed by the global chain index ``chain_offset + b``.
    Returns the (B,) bool mask of acceptances.
    """
    log_u = metropolis_log_uniform(seed, step, chi.shape[0], chi.device, chain_offset)
    log_accept = -beta * (energy_new.to(torch.float64) - energy.to(torch.float64)) + (
        log_weight_new.to(torch.float64) - log_weight.to(torch.float64)
    )
    accepted = log_u < log_accept
    chi.copy_(torch.where(accepted[:, None], chi_new, chi))
    latent.copy_(torch.where(accepted[:, None], latent_new, latent))
    energy.copy_(torch.where(accepted, energy_new, energy))
    log_weight.copy_(torch.where(accepted, log_weight_new, log_weight))
    accepted_count.add_(accepted.to(accepted_count.dtype))
    return accepted
