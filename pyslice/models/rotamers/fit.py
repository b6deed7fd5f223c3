"""The EM fit of the rotamer library: one mixture of product-von Mises components per residue
type (one component = one rotamer), then refitted per (phi, psi) bin.

Per type (:func:`fit_residue_type`, called by :meth:`~pyslice.models.rotamers.RotamerLibrary.fit`):

1. *Components (backbone-independent).* Every chi gets wells: g+, t, g- (60, 180, -60 degrees) for
   the three-fold sp3-sp3 chis, and for the others (sp2 ends: ARG chi4, ASN/ASP/HIS/PHE/TRP/TYR
   chi2, GLN/GLU chi3, PRO's ring) the means of a 1-D :meth:`VonMisesMixture.fit_bic` (up to four
   components, kept at >= 3 % weight, merged when closer than 40 degrees). Each residue falls in the
   cell of its nearest wells; the populated cells start the joint EM (one component per cell, means
   and concentrations from the cell's points). **K is chosen by a population threshold**, not BIC:
   after EM, components lighter than ``min_fraction`` (0.5 % of the data, and at least 10 rows) are
   dropped and EM is rerun, until every component holds at least that much. A rotamer is a
   physically distinct well; with tens of thousands of rows, BIC would rather keep adding
   components that model the non-von-Mises shape inside a well, which a proposal does not need.
   ``max_components`` caps K, keeping the most populated cells.
2. *Backbone dependence.* The (phi, psi) torus is cut into ``n_bins`` x ``n_bins`` bins (18 x 18:
   20 degrees). In each bin the same components are refitted by a weighted EM whose row weights
   are a von Mises kernel in phi and psi around the bin centre, and whose parameters are *shrunk
   toward the backbone-independent fit* by conjugate priors: a Dirichlet prior on the weights and
   the von Mises conjugate prior on each (mu, kappa), together worth ``prior_strength`` (2.5) rows
   of the backbone-independent mixture per component. That is a MAP-EM (monotone, like EM),
   started from the backbone-independent fit: a bin with thousands of kernel-weighted rows
   follows its data; a bin in an empty corner of the Ramachandran plot stays at the
   backbone-independent mixture. The kernel's width shrinks with the data like a 2-D bandwidth,
   ``10 (20000 / n)^(1/6)`` degrees clipped to [10, 20] (10 for Top8000's types, about 14-15 for
   top240's). Settings were chosen by held-out log-likelihood (80/20 split, mean log p of the
   held-out rows at their own bin; gains over the backbone-independent mixture, nats/row):

   ==================================  =====  ===========  ===========  ===========
   bins, kernel width, prior per comp  LYS    HIS (2000)   ARG (3000)   MET (2500)
   ==================================  =====  ===========  ===========  ===========
   12 x 12, 20 deg, 20 rows in all     0.32   0.28         0.10         --
   12 x 12, 10 deg, 2.5                0.36   0.33         0.15         0.21
   12 x 12, 15 deg, 2.5                0.33   0.33         0.16         0.18
   18 x 18, 10 deg, 2.5                0.38   0.34         0.16         0.18
   18 x 18, 15 deg, 2.5                0.37   0.33         0.18         0.19
   18 x 18, 15 deg, 5                  0.36   0.31         0.19         0.19
   ==================================  =====  ===========  ===========  ===========

   (LYS: all 27888 training rows; the others subsampled to top240-like sizes.) Narrow kernels win
   with much data, wider kernels and stronger priors with little (hence the rule); 18 x 18 bins
   gain a little over 12 x 12 and keep the file under 2 MB. Differences of about 0.02 are noise.
3. Parameters are rounded to float32 (the file's precision) by
   :class:`~pyslice.models.rotamers.ResidueRotamers`, so save/load round trips exactly.

Concentrations are capped at :data:`KAPPA_MAX` (500, a 2.6 degree spread): tighter wells are a
sample-size artefact and would make a proposal brittle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from pyslice import _checks
from pyslice.distributions import (
    VonMisesMixture,
    concentration_from_resultant,
    keep_emptied_components,
    mean_resultant_length,
)
from pyslice.geometry.angles import wrap_angle
from pyslice.geometry.chis import PI_PERIODIC

__all__ = [
    "KAPPA_MAX",
    "THREE_FOLD",
    "BackboneDependentFit",
    "fit_residue_type",
    "fit_rotamer_mixture",
    "kernel_width_degrees",
]

#: Concentration cap of the fit (a 2.6-degree spread).
KAPPA_MAX = 500.0
_LOG_2PI = math.log(2.0 * math.pi)
_DEG = math.pi / 180.0

#: Chis about a bond between two sp3 atoms: three staggered wells (g+, t, g-). The others are
#: next to an sp2 group (or in proline's ring); their wells come from the data.
THREE_FOLD: dict[str, tuple[bool, ...]] = {
    "ARG": (True, True, True, False),
    "ASN": (True, False),
    "ASP": (True, False),
    "CYS": (True,),
    "GLN": (True, True, False),
    "GLU": (True, True, False),
    "HIS": (True, False),
    "ILE": (True, True),
    "LEU": (True, True),
    "LYS": (True, True, True, True),
    "MET": (True, True, True),
    "PHE": (True, False),
    "PRO": (False, False),
    "SER": (True,),
    "THR": (True,),
    "TRP": (True, False),
    "TYR": (True, False),
    "VAL": (True,),
}
_STAGGERED = (60.0 * _DEG, math.pi, -60.0 * _DEG)
#: Per-bin EM: kernel mass above which a bin's rows are thinned, and the iteration cap.
BIN_MAX_ROWS = 4000
BIN_MAX_ITER = 60
#: Per-bin EM: rows lighter than this (kernel weight) are thinned (see _fit_bins).
THIN_WEIGHT = 0.01

Params = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class BackboneDependentFit(NamedTuple):
    """The fit of one residue type (C chis, K components, an n x n backbone grid), float64:
    ``logits (K,)``, ``loc, concentration (C, K)`` (backbone-independent) and ``bin_logits (n, n,
    K)``, ``bin_loc, bin_concentration (n, n, C, K)``; pi-periodic chis on the doubled angle."""

    logits: torch.Tensor
    loc: torch.Tensor
    concentration: torch.Tensor
    bin_logits: torch.Tensor
    bin_loc: torch.Tensor
    bin_concentration: torch.Tensor


def fit_residue_type(
    name: str,
    data: Mapping[str, np.ndarray],
    *,
    max_components: int,
    seed: int,
    n_bins: int,
    kernel_width: float | None,
    prior_strength: float,
    min_fraction: float,
) -> BackboneDependentFit:
    """The backbone-independent and the per-bin mixtures of residue type ``name`` (a parent name
    of :data:`THREE_FOLD`) from its rows ``data`` (``chi (N, C)``, ``phi, psi (N,)`` radians; NaN
    phi or psi: the row joins the backbone-independent fit only). See the module docstring."""
    chi = torch.as_tensor(data["chi"], dtype=torch.float64)
    phi = torch.as_tensor(data["phi"], dtype=torch.float64)
    psi = torch.as_tensor(data["psi"], dtype=torch.float64)
    defined = torch.isfinite(phi) & torch.isfinite(psi)
    periodic = PI_PERIODIC[name]
    wells = [_STAGGERED if three else None for three in THREE_FOLD[name]]
    logits, loc, kappa = fit_rotamer_mixture(
        chi,
        periodic,
        wells=wells,
        max_components=max_components,
        min_fraction=min_fraction,
        seed=seed,
    )
    bins = _fit_bins(
        chi,
        periodic,
        phi,
        psi,
        (logits, loc, kappa),
        n_bins=n_bins,
        kernel_width=kernel_width_degrees(kernel_width, int(defined.sum())) * _DEG,
        prior_strength=prior_strength,
        seed=seed,
    )
    return BackboneDependentFit(logits, loc, kappa, *bins)


def kernel_width_degrees(width: float | None, n_rows: int) -> float:
    """The backbone kernel's width in degrees: ``width``, or the rule 10 (20000 / n)^(1/6)
    clipped to [10, 20] (a 2-D bandwidth shrinks like n^(-1/6))."""
    if width is not None:
        return width
    return min(20.0, max(10.0, 10.0 * (20000.0 / max(n_rows, 1)) ** (1.0 / 6.0)))


def fit_rotamer_mixture(
    chi: object,
    pi_periodic: Sequence[bool] | None = None,
    *,
    weights: object = None,
    wells: Sequence[Sequence[float] | None] | None = None,
    max_components: int = 48,
    min_fraction: float = 0.005,
    min_count: float = 10.0,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit a mixture of product-von Mises components (one component = one rotamer) to
    ``chi: (N, C)`` radians by EM, K chosen by a population threshold.

    Args:
        chi: the data, one residue per row.
        pi_periodic: ``(C,)`` flags; those columns are fitted on the doubled angle.
        weights: ``(N,)`` non-negative row weights (default 1).
        wells: per column, the candidate well centres (radians, of the chi itself), or None to
            place them from a 1-D :meth:`VonMisesMixture.fit_bic` of that column (up to four,
            kept at >= 3 % weight, merged within 40 degrees). Default: None for every column.
        max_components: cap on K (the most populated cells start EM).
        min_fraction, min_count: a component must keep at least ``max(min_count, min_fraction *
            total weight)`` of the weight; lighter ones are dropped and EM is rerun.
        seed: seed of the 1-D fits.
        max_iter, tol: EM stops when the mean log-likelihood per unit weight changes by < tol.

    Returns:
        ``logits (K,)`` (normalised log-weights, heaviest first), ``loc (C, K)`` and
        ``concentration (C, K)``, float64; pi-periodic columns describe the doubled angle.
    """
    x = _checks.as_float_tensor("chi", chi).to("cpu", torch.float64)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"chi must have shape (N, C) with N, C >= 1, got {tuple(x.shape)}")
    _checks.require_finite("chi", x)
    n, c = x.shape
    if pi_periodic is None:
        pi_periodic = [False] * c
    periodic = torch.as_tensor(list(pi_periodic), dtype=torch.bool)
    if periodic.shape != (c,):
        raise ValueError(f"pi_periodic must have {c} flags, got {tuple(periodic.shape)}")
    if weights is None:
        w = torch.ones(n, dtype=torch.float64)
    else:
        w = _checks.as_float_tensor("weights", weights).to("cpu", torch.float64).reshape(-1)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {tuple(w.shape)}")
        _checks.require_finite("weights", w)
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
    if wells is None:
        wells = [None] * c
    if len(wells) != c:
        raise ValueError(f"wells must have one entry per column ({c}), got {len(wells)}")
    max_components = _checks.check_int("max_components", max_components, low=1)
    min_fraction = _checks.check_float("min_fraction", min_fraction, low=0.0)
    min_count = _checks.check_float("min_count", min_count, low=0.0)
    y = torch.where(periodic, 2.0 * x, x)

    # Well centres per column, on the (doubled where periodic) angle y.
    centres = []
    for col in range(c):
        if wells[col] is not None:
            given = torch.as_tensor(list(wells[col]), dtype=torch.float64)
            if given.numel() == 0:
                raise ValueError(f"wells[{col}] must hold at least one angle")
            centres.append(wrap_angle(2.0 * given if bool(periodic[col]) else given))
        else:
            centres.append(_data_wells(y[:, col], w, seed + col))

    # Cells of nearest wells; the populated ones start EM.
    cell = torch.zeros(n, dtype=torch.int64)
    for col in range(c):
        nearest = torch.cos(y[:, col, None] - centres[col][None, :]).argmax(1)
        cell = cell * centres[col].numel() + nearest
    cells, inverse = torch.unique(cell, return_inverse=True)
    mass = torch.zeros(cells.numel(), dtype=torch.float64).index_add_(0, inverse, w)
    total = float(w.sum())
    threshold = max(min_count, min_fraction * total)
    order = torch.argsort(mass, descending=True)
    keep = order[mass[order] >= threshold][:max_components]
    if keep.numel() == 0:
        keep = order[:1]
    resp = (inverse[:, None] == keep[None, :]).to(torch.float64)  # (N, K) hard assignment
    params = _m_step_joint(y, w[None], resp[None])

    while True:
        params, _ = _joint_em(y, w[None], params, max_iter=max_iter, tol=tol)
        weight = torch.exp(params[0][0]) * total
        light = weight < threshold
        if bool(light.all()):  # too little data for the threshold: keep the heaviest
            light = weight < weight.max()
        if not bool(light.any()):
            break
        params = tuple(p[..., ~light] for p in params)
        params = (params[0] - torch.logsumexp(params[0], -1, keepdim=True), *params[1:])
    log_w, loc, kappa = (p[0] for p in params)
    order = torch.argsort(log_w, descending=True)
    return log_w[order], wrap_angle(loc[:, order]), kappa[:, order]


def _data_wells(y: torch.Tensor, w: torch.Tensor, seed: int) -> torch.Tensor:
    """Well centres of one column from a 1-D BIC-chosen von Mises mixture (on y)."""
    n_max = min(4, max(1, y.shape[0] // 10))
    mixture, _ = VonMisesMixture.fit_bic(
        y.to(torch.float64),
        max_components=n_max,
        weights=w,
        seed=seed,
        n_init=2,
        max_iter=100,
        tol=1e-6,
    )
    probs = mixture.probs.reshape(-1)
    locs = mixture.loc.reshape(-1)
    order = torch.argsort(probs, descending=True)
    chosen: list[float] = []
    for k in order.tolist():
        if float(probs[k]) < 0.03 and chosen:
            continue
        angle = float(locs[k])
        if all(math.cos(angle - a) < math.cos(40.0 * _DEG) for a in chosen):
            chosen.append(angle)
    return torch.tensor(chosen, dtype=torch.float64)


def _features(y: torch.Tensor) -> torch.Tensor:
    """(..., N, 2C): cos and sin of every column of ``y: (..., N, C)``."""
    return torch.cat([torch.cos(y), torch.sin(y)], dim=-1)


def _e_step_joint(
    features: torch.Tensor, w: torch.Tensor, params: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood (S,) and responsibilities (S, N, K) of S weighted data sets: ``features``
    (N, 2C) rows shared by all sets, or (S, N, 2C) rows of their own; ``w: (S, N)``.

    log vM(y; mu, kappa) = kappa cos(y - mu) - kappa - log 2pi - log i0e(kappa), and
    kappa cos(y - mu) = (kappa cos mu) cos y + (kappa sin mu) sin y: one matmul for all columns.
    """
    log_w, loc, kappa = params  # (S, K), (S, C, K), (S, C, K)
    coef = torch.cat([kappa * torch.cos(loc), kappa * torch.sin(loc)], dim=1)  # (S, 2C, K)
    const = (-kappa - _LOG_2PI - torch.log(torch.special.i0e(kappa))).sum(1)  # (S, K)
    joint = torch.matmul(features, coef)  # (S, N, K)
    joint += (log_w + const)[:, None, :]
    # A softmax in place (torch.logsumexp allocates several (S, N, K) temporaries).
    top = joint.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    resp = joint.sub_(top).exp_()
    norm = resp.sum(-1, keepdim=True)
    resp /= norm
    point = (top + torch.log(norm)).squeeze(-1)
    point = torch.where(w > 0, point, 0.0)
    return (w * point).sum(-1), resp


def _m_step_joint(
    y: torch.Tensor,
    w: torch.Tensor,
    resp: torch.Tensor,
    previous: Params | None = None,
    prior: tuple[torch.Tensor, Params] | None = None,
    features: torch.Tensor | None = None,
) -> Params:
    """M-step of every data set (S of them): weights, means and kappas of each column.

    ``prior = (strength (S,), (log_w0 (K,), loc0 (C, K), kappa0 (C, K)))``: conjugate priors worth
    ``strength`` rows of the mixture ``(log_w0, loc0, kappa0)`` (Dirichlet on the weights, the von
    Mises conjugate prior on each mean and kappa): pseudo-mass ``strength alpha0_k`` with
    resultant ``strength alpha0_k A(kappa0) e^{i mu0}`` join each component's statistics.
    """
    if features is None:
        features = _features(y)
    c = y.shape[-1]
    weighted = resp.mul_(w[:, :, None])  # (S, N, K), in place: resp is not used again
    mass = weighted.sum(1)  # (S, K)
    stats = torch.matmul(weighted.transpose(1, 2), features)  # (S, K, 2C)
    cos_sum = stats[:, :, :c].transpose(1, 2)  # (S, C, K)
    sin_sum = stats[:, :, c:].transpose(1, 2)
    total = w.sum(1, keepdim=True)
    if prior is not None:
        strength, (log_w0, loc0, kappa0) = prior
        pseudo = strength[:, None] * torch.exp(log_w0)[None, :]  # (S, K)
        length = mean_resultant_length(kappa0)[None] * pseudo[:, None, :]  # (S, C, K)
        cos_sum = cos_sum + length * torch.cos(loc0)[None]
        sin_sum = sin_sum + length * torch.sin(loc0)[None]
        mass = mass + pseudo
        total = total + strength[:, None]
    loc = torch.atan2(sin_sum, cos_sum)
    resultant = torch.sqrt(cos_sum * cos_sum + sin_sum * sin_sum) / mass[:, None, :].clamp_min(
        1e-300
    )
    kappa = concentration_from_resultant(resultant).clamp(max=KAPPA_MAX)
    log_w = torch.log(mass / total)
    empty = (mass <= 1e-12 * total)[:, None, :].expand_as(loc)
    loc, kappa = keep_emptied_components(empty, loc, kappa, previous)
    return log_w, loc, kappa


def _joint_em(
    y: torch.Tensor,
    w: torch.Tensor,
    params: Params,
    *,
    max_iter: int,
    tol: float,
    prior: tuple[torch.Tensor, Params] | None = None,
) -> tuple[Params, torch.Tensor]:
    """EM (MAP-EM with ``prior``) for S weighted data sets ``w: (S, N)`` over the rows ``y: (N, C)``
    from ``params``; stops when every set's log-likelihood per unit weight changes by < tol.
    Returns the parameters and the final log-likelihoods (S,)."""
    features = _features(y)
    total = w.sum(1)
    if prior is not None:
        total = total + prior[0]
    previous_ll = None
    log_lik = torch.zeros(w.shape[0], dtype=torch.float64)
    for _ in range(max_iter):
        log_lik, resp = _e_step_joint(features, w, params)
        if prior is not None:
            log_lik = log_lik + _prior_log_density(params, prior)
        if previous_ll is not None and bool(
            ((log_lik - previous_ll).abs() <= tol * total.clamp_min(1e-300)).all()
        ):
            break
        previous_ll = log_lik
        params = _m_step_joint(y, w, resp, previous=params, prior=prior, features=features)
    return params, log_lik


def _prior_log_density(params: Params, prior: tuple[torch.Tensor, Params]) -> torch.Tensor:
    """(S,) log of the conjugate priors (up to a constant), so MAP-EM's objective is monitored."""
    log_w, loc, kappa = params
    strength, (log_w0, loc0, kappa0) = prior
    pseudo = strength[:, None] * torch.exp(log_w0)[None, :]
    length = mean_resultant_length(kappa0)[None] * pseudo[:, None, :]
    vm = length * kappa * torch.cos(loc - loc0[None]) - pseudo[:, None, :] * (
        kappa + torch.log(torch.special.i0e(kappa))
    )
    finite_w = torch.where(torch.isfinite(log_w), log_w, 0.0)
    return (pseudo * finite_w).sum(1) + vm.sum((1, 2))


def _fit_bins(
    chi: torch.Tensor,
    pi_periodic: Sequence[bool],
    phi: torch.Tensor,
    psi: torch.Tensor,
    global_params: Params,
    *,
    n_bins: int,
    kernel_width: float,
    prior_strength: float,
    seed: int = 0,
    max_rows: int = BIN_MAX_ROWS,
    max_iter: int = BIN_MAX_ITER,
    tol: float = 1e-7,
    max_elements: int = 8_000_000,
) -> Params:
    """Per-bin MAP-EM (kernel-weighted rows, priors at the backbone-independent fit):
    ``(n, n, K)``, ``(n, n, C, K)``, ``(n, n, C, K)``.

    Each bin's rows are thinned without bias: row i (kernel weight w_i) is kept with probability
    p_i = min(1, w_i / tau) and then weighs w_i / p_i, with tau = max(THIN_WEIGHT, M / max_rows)
    for a bin of kernel mass M. The sufficient statistics keep their expectation; far rows (tiny
    weights) mostly drop out, and a dense bin keeps about ``max_rows`` rows (thousands of effective
    rows, plenty for K components).
    """
    periodic = torch.as_tensor(list(pi_periodic), dtype=torch.bool)
    y = torch.where(periodic, 2.0 * chi, chi)
    log_w0, loc0, kappa0 = global_params
    k = log_w0.shape[0]
    c = y.shape[1]
    defined = torch.isfinite(phi) & torch.isfinite(psi)
    y, phi, psi = y[defined], phi[defined], psi[defined]
    centres = -math.pi + (torch.arange(n_bins, dtype=torch.float64) + 0.5) * (2 * math.pi / n_bins)
    grid_phi, grid_psi = torch.meshgrid(centres, centres, indexing="ij")
    grid_phi, grid_psi = grid_phi.reshape(-1), grid_psi.reshape(-1)
    s_total = grid_phi.numel()
    out_w = log_w0.expand(s_total, k).clone()
    out_loc = loc0.expand(s_total, c, k).clone()
    out_kappa = kappa0.expand(s_total, c, k).clone()
    generator = torch.Generator().manual_seed(seed)
    kernel_kappa = 1.0 / (kernel_width * kernel_width)
    rows: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for s in range(s_total):
        w = torch.exp(
            kernel_kappa * (torch.cos(phi - grid_phi[s]) - 1.0)
            + kernel_kappa * (torch.cos(psi - grid_psi[s]) - 1.0)
        )
        # Unbiased thinning: a row of weight w_i < tau stays with probability w_i / tau and then
        # weighs tau, so the expected statistics are unchanged.
        tau = max(THIN_WEIGHT, float(w.sum()) / max_rows)
        p = (w / tau).clamp(max=1.0)
        keep = torch.rand(w.shape, generator=generator, dtype=torch.float64) < p
        w = w / p
        index = torch.nonzero(keep).squeeze(1)
        rows.append(index)
        weights.append(w[index])
    order = sorted(range(s_total), key=lambda s: rows[s].numel())
    start = 0
    while start < s_total:
        # Bins of similar size together, padded to the largest (padding weighs 0).
        width = max(1, rows[order[start]].numel())
        stop = start
        while stop < s_total:
            width = max(width, rows[order[stop]].numel(), 1)
            if (stop - start + 1) * width * k > max_elements and stop > start:
                break
            stop += 1
        chunk = order[start:stop]
        width = max(max(rows[s].numel() for s in chunk), 1)
        index = torch.zeros(len(chunk), width, dtype=torch.int64)
        w = torch.zeros(len(chunk), width, dtype=torch.float64)
        for j, s in enumerate(chunk):
            index[j, : rows[s].numel()] = rows[s]
            w[j, : rows[s].numel()] = weights[s]
        start = stop
        if y.shape[0] == 0:
            continue  # no backbone information at all: every bin is the global fit
        s = len(chunk)
        strength = torch.full((s,), prior_strength * k, dtype=torch.float64)
        params = (out_w[chunk], out_loc[chunk], out_kappa[chunk])
        params, _ = _joint_em(
            y[index], w, params, max_iter=max_iter, tol=tol, prior=(strength, global_params)
        )
        out_w[chunk], out_loc[chunk], out_kappa[chunk] = params
    shape = (n_bins, n_bins)
    return (
        out_w.reshape(*shape, k),
        wrap_angle(out_loc).reshape(*shape, c, k),
        out_kappa.reshape(*shape, c, k),
    )
