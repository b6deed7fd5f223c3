"""MCMC convergence diagnostics: rank-normalised split R-hat, bulk and tail ESS, autocorrelation.

The estimators are those of Vehtari, Gelman, Simpson, Carpenter and Buerkner, "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", Bayesian
Analysis 16 (2021), computed as ArviZ computes them (the tests compare with ArviZ to 1e-10):

- split chains in halves (an odd draw count drops the middle draw), rank-normalise all draws of a
  quantity jointly (average ranks for ties, Blom's offset 3/8, inverse normal CDF);
- R-hat = max(R-hat of the rank-normalised draws, R-hat of the rank-normalised folded draws
  |x - median|);
- ESS from autocovariances (FFT) with Geyer's initial positive and initial monotone sequences;
  bulk ESS on the rank-normalised split draws, tail ESS the smaller ESS of the indicators
  x <= q5% and x <= q95%.

Layout: ``samples: (draws, chains, *shape)`` (pyslice ensembles store draws first); results have
``shape``. Quantities with fewer than 4 draws (or fewer than 2 chains for R-hat) or with NaN give
NaN. Everything is computed in float64 with numpy; torch tensors are accepted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["autocorrelation", "ess", "rhat"]


def _as_chains_last(samples: object, name: str = "samples") -> tuple[np.ndarray, tuple[int, ...]]:
    """(draws, chains, *shape) -> (P, chains, draws) float64 and the trailing shape."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    array = np.asarray(samples)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (draws, chains, ...), got {array.shape}")
    shape = array.shape[2:]
    # math.prod, not -1: an empty sample (no draws) still has a known number of quantities.
    flat = array.astype(np.float64).reshape(array.shape[0], array.shape[1], math.prod(shape))
    return np.ascontiguousarray(flat.transpose(2, 1, 0)), shape


def _split_chains(x: np.ndarray) -> np.ndarray:
    """(P, C, D) -> (P, 2C, D // 2): first and last halves as separate chains."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half :]], axis=1)


def _average_ranks(row: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank."""
    order = np.argsort(row, kind="stable")
    ordered = row[order]
    boundaries = np.flatnonzero(np.diff(ordered) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [row.size]])
    ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(row.size)
    ranks[order] = ranks_sorted
    return ranks


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each quantity's draws (all chains jointly): (P, C, D) -> (P, C, D)."""
    p, c, d = x.shape
    size = c * d
    ranks = np.stack([_average_ranks(row) for row in x.reshape(p, size)]) if p else x
    probabilities = (ranks - 3.0 / 8.0) / (size - 2.0 * 3.0 / 8.0 + 1.0)
    z = torch.special.ndtri(torch.from_numpy(np.ascontiguousarray(probabilities))).numpy()
    return z.reshape(p, c, d)


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    """Classic (non-split) R-hat of (P, C, D) chains."""
    n = x.shape[-1]
    chain_mean = x.mean(axis=-1)
    within = x.var(axis=-1, ddof=1).mean(axis=-1)
    between = n * chain_mean.var(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance along the last axis by FFT (zero-padded to avoid wrap-around)."""
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n))) if n > 1 else 2
    centred = x - x.mean(axis=-1, keepdims=True)
    spectrum = np.fft.rfft(centred, n=size, axis=-1)
    return np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=-1)[..., :n] / n


def _ess_basic(x: np.ndarray) -> np.ndarray:
    """ESS of (P, C, D) chains with Geyer's initial positive and monotone sequences."""
    p, c, d = x.shape
    out = np.full(p, np.nan)
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    out[constant] = c * d
    todo = ~constant & ~np.isnan(x).any(axis=(1, 2))
    if not todo.any():
        return out
    x = x[todo]
    acov = _autocovariance(x).mean(axis=1)  # (P', D): averaged over chains
    mean_var = acov[:, 0] * d / (d - 1.0)
    var_plus = mean_var * (d - 1.0) / d
    if c > 1:
        var_plus = var_plus + x.mean(axis=-1).var(axis=-1, ddof=1)

    def rho_at(lag: int) -> np.ndarray:
        return 1.0 - (mean_var - acov[:, lag]) / var_plus

    n = x.shape[0]
    rho = np.zeros((n, d))
    rho[:, 0] = 1.0
    rho_even = np.ones(n)
    rho_odd = rho_at(1)
    rho[:, 1] = rho_odd
    # Initial positive sequence: sum pairs of lags while the pair sum stays positive.
    t_end = np.ones(n, dtype=np.int64)
    active = (rho_even + rho_odd > 0.0) & (d > 4)
    t = 1
    while active.any():
        even, odd = rho_at(t + 1), rho_at(t + 2)
        rho_even = np.where(active, even, rho_even)
        rho_odd = np.where(active, odd, rho_odd)
        keep = active & (even + odd >= 0.0)
        rho[keep, t + 1] = even[keep]
        rho[keep, t + 2] = odd[keep]
        t += 2
        t_end[active] = t
        active = active & (t < d - 3) & (rho_even + rho_odd > 0.0)
    max_t = t_end - 2
    rows = np.arange(n)
    improve = rho_even > 0
    rho[rows[improve], max_t[improve] + 1] = rho_even[improve]
    # Initial monotone sequence: pair sums may not increase.
    t = 1
    while t <= max_t.max() - 2:
        go = t <= max_t - 2
        later = rho[:, t + 1] + rho[:, t + 2]
        earlier = rho[:, t - 1] + rho[:, t]
        fix = go & (later > earlier)
        rho[fix, t + 1] = earlier[fix] / 2.0
        rho[fix, t + 2] = earlier[fix] / 2.0
        t += 2
    lags = np.arange(d)
    head = np.where(lags[None, :] <= max_t[:, None], rho, 0.0).sum(axis=1)
    tail = np.where(lags[None, :] == max_t[:, None] + 1, rho, 0.0).sum(axis=1)
    tau = np.maximum(-1.0 + 2.0 * head + tail, 1.0 / np.log10(c * d))
    ess_values = c * d / tau
    ess_values[np.isnan(rho).any(axis=1)] = np.nan
    out[todo] = ess_values
    return out


def _valid(x: np.ndarray, min_chains: int) -> np.ndarray:
    p, c, d = x.shape
    ok = np.full(p, d >= 4 and c >= min_chains)
    return ok & ~np.isnan(x).any(axis=(1, 2))


def rhat(samples: object) -> np.ndarray:
    """Rank-normalised split R-hat: ``samples: (draws, chains, *shape)`` -> ``shape``."""
    x, shape = _as_chains_last(samples)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, min_chains=2)
    if ok.any():
        split = _split_chains(x[ok])
        folded = np.abs(split - np.median(split, axis=(1, 2), keepdims=True))
        out[ok] = np.maximum(_rhat_basic(_z_scale(split)), _rhat_basic(_z_scale(folded)))
    return out.reshape(shape)


def ess(samples: object, kind: str = "bulk") -> np.ndarray:
    """Effective sample size: ``samples: (draws, chains, *shape)`` -> ``shape``.

    ``kind``: "bulk" (rank-normalised), "tail" (min over the 5% and 95% quantile indicators) or
    "mean" (split chains, no rank normalisation).
    """
    if kind not in ("bulk", "tail", "mean"):
        raise ValueError(f"kind must be 'bulk', 'tail' or 'mean', got {kind!r}")
    x, shape = _as_chains_last(samples)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, min_chains=1)
    if ok.any():
        xs = x[ok]
        if kind == "bulk":
            out[ok] = _ess_basic(_z_scale(_split_chains(xs)))
        elif kind == "mean":
            out[ok] = _ess_basic(_split_chains(xs))
        else:
            flat = xs.reshape(xs.shape[0], -1)
            low, high = np.quantile(flat, [0.05, 0.95], axis=1)
            ess_low = _ess_basic(_split_chains((xs <= low[:, None, None]).astype(float)))
            ess_high = _ess_basic(_split_chains((xs <= high[:, None, None]).astype(float)))
            out[ok] = np.minimum(ess_low, ess_high)
    return out.reshape(shape)


def autocorrelation(samples: object, max_lag: int | None = None) -> np.ndarray:
    """Autocorrelation by lag, averaged over chains: ``(draws, chains, *shape)`` ->
    ``(max_lag + 1, *shape)`` (default: every lag). Constant chains give NaN."""
    x, shape = _as_chains_last(samples)
    d = x.shape[-1]
    max_lag = d - 1 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < d:
        raise ValueError(f"max_lag must be in [0, {d}), got {max_lag}")
    acov = _autocovariance(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        acorr = acov / acov[..., :1]
    result = acorr.mean(axis=1)[:, : max_lag + 1]  # (P, lags)
    return result.T.reshape(max_lag + 1, *shape)
