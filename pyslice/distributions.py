"""von Mises and von Mises-mixture distributions over angles, with fused sampling and EM fitting.

Angles are radians; samples are wrapped to [-pi, pi). Shapes follow torch.distributions: a batch
shape in front, mixture components on the last dimension of the parameters.

    p(x | mu, kappa) = exp(kappa cos(x - mu)) / (2 pi I0(kappa))
    p_mix(x)         = sum_k alpha_k p(x | mu_k, kappa_k)

``log I0`` is evaluated as ``log(i0e(kappa)) + kappa`` so every concentration in [0, 1e5] (and
beyond) is exact without overflow. Sampling runs on the backend that ``pyslice.backends`` picks
(Triton on CUDA, C++ on CPU, plain torch as reference), all drawing the same Philox streams, so a
seed gives the same samples everywhere up to float32 rounding. Draws are computed in float32 on
every backend and returned in the parameters' dtype.

A *pi-periodic* mixture describes an angle whose density repeats every pi (ASP chi2, GLU chi3, PHE
and TYR chi2): its parameters describe the doubled angle y = 2x, and p(x) = p_y(2x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pyslice import _checks, backends, reference
from pyslice.geometry.angles import wrap_angle

__all__ = [
    "FitResult",
    "VonMises",
    "VonMisesMixture",
    "concentration_from_resultant",
    "draw_mixture",
    "keep_emptied_components",
    "log_i0",
    "mean_resultant_length",
    "product_component_log_prob",
    "von_mises_log_density",
]

_LOG_2PI = math.log(2.0 * math.pi)
#: Concentrations that EM returns are capped here (a single repeated angle has kappa -> inf).
MAX_FIT_CONCENTRATION = 1e5


def log_i0(kappa: torch.Tensor) -> torch.Tensor:
    """log I0(kappa), overflow-free for any kappa >= 0."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def mean_resultant_length(kappa: torch.Tensor) -> torch.Tensor:
    """A(kappa) = I1(kappa) / I0(kappa), the mean resultant length of a von Mises."""
    return torch.special.i1e(kappa) / torch.special.i0e(kappa)


def von_mises_log_density(x: torch.Tensor, loc: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """log p(x | loc, kappa) of the von Mises density, broadcast over the three arguments.

    The one implementation in pyslice: every mixture, proposal and model density calls it.
    """
    # kappa (cos d - 1) = -2 kappa sin^2(d / 2): no cancellation near the mode at large kappa.
    half = torch.sin(0.5 * (x - loc))
    return -2.0 * kappa * half * half - _LOG_2PI - torch.log(torch.special.i0e(kappa))


def product_component_log_prob(
    x: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor, concentration: torch.Tensor
) -> torch.Tensor:
    """Joint log-density of each component of a mixture of products of von Mises densities.

    A component k spans d angles: log alpha_k + sum_j log vM(x_j; loc_jk, kappa_jk) (one rotamer of
    a residue with d chi angles). ``x: (..., d)``, ``log_weights: (..., K)`` (normalised),
    ``loc, concentration: (..., d, K)``, all broadcast; returns ``(..., K)``. The mixture's
    log-density is its logsumexp over K, the posterior of the component its softmax.
    """
    per_angle = von_mises_log_density(x.unsqueeze(-1), loc, concentration)
    return log_weights + per_angle.sum(-2)


def _check_concentration(concentration: torch.Tensor) -> None:
    if bool(torch.isnan(concentration).any()):
        raise ValueError("concentration must not be NaN")
    if bool((concentration < 0).any()):
        raise ValueError("concentration must be >= 0, got a negative value")
    if bool(torch.isinf(concentration).any()):
        raise ValueError("concentration must be finite")


def _check_angles(name: str, x: object, like: torch.Tensor) -> torch.Tensor:
    x = _checks.as_float_tensor(name, x)
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but the distribution is on {like.device}")
    _checks.require_finite(name, x)
    return x.to(torch.promote_types(x.dtype, like.dtype))


def draw_mixture(
    logits: torch.Tensor,
    loc: torch.Tensor,
    concentration: torch.Tensor,
    sample_shape: object,
    seed: int | None,
    offset: int,
    backend: str | None,
    pi_periodic: bool,
    base: int = 0,
) -> torch.Tensor:
    """Draws from von Mises mixtures through the fused sampling kernel of the selected backend.

    ``logits, loc, concentration: (*batch, K)``; returns ``(*sample_shape, *batch)`` in loc's
    dtype. ``seed``/``offset`` select the counter-based Philox stream (None: a random seed);
    ``pi_periodic``: the parameters describe the doubled angle (see the module docstring);
    ``base``: element i of the flattened output draws from the streams of element base + i (a
    batch that is part of a larger one, e.g. the rows of chains split over processes).
    """
    shape = _checks.sample_shape_of(sample_shape)
    seed = _checks.resolve_seed(seed)
    offset = _checks.check_int("offset", offset, low=0, high=_checks.MAX_OFFSET)
    base = _checks.check_int("base", base, low=0, high=2**63)
    batch_shape = logits.shape[:-1]
    rows = math.prod(batch_shape)
    n = math.prod(shape) * rows
    impl = backends.select("vonmises_sample", loc.device, torch.float32, backend)
    if n == 0:
        return torch.empty((*shape, *batch_shape), dtype=loc.dtype, device=loc.device)
    n_components = logits.shape[-1]
    table = reference.mixture_table(
        logits.reshape(rows, n_components),
        loc.reshape(rows, n_components),
        concentration.reshape(rows, n_components),
    )
    draws = impl(table, n, seed, offset, base, pi_periodic)
    return draws.reshape(*shape, *batch_shape).to(loc.dtype)


class VonMises:
    """von Mises distribution ``VonMises(loc, concentration)`` with any batch shape.

    ``loc``: mean direction (radians); ``concentration``: kappa >= 0 (0 is uniform).
    """

    def __init__(self, loc: torch.Tensor | float, concentration: torch.Tensor | float) -> None:
        loc_t = _checks.as_float_tensor("loc", loc)
        kappa_t = _checks.as_float_tensor("concentration", concentration)
        device, dtype = _checks.common_device_dtype(loc=loc_t, concentration=kappa_t)
        loc_t, kappa_t = _checks.broadcast(loc=loc_t.to(dtype), concentration=kappa_t.to(dtype))
        _checks.require_finite("loc", loc_t)
        _check_concentration(kappa_t)
        self.loc = loc_t
        self.concentration = kappa_t

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape

    @property
    def mean(self) -> torch.Tensor:
        """The mean direction, wrapped to [-pi, pi)."""
        return wrap_angle(self.loc)

    @property
    def circular_variance(self) -> torch.Tensor:
        """1 - A(kappa)."""
        return 1.0 - mean_resultant_length(self.concentration)

    def log_prob(self, x: torch.Tensor | float) -> torch.Tensor:
        """log p(x); ``x`` broadcasts against the batch shape."""
        x = _check_angles("x", x, self.loc)
        return von_mises_log_density(x, self.loc, self.concentration)

    def cdf(self, x: torch.Tensor | float) -> torch.Tensor:
        """P(loc - pi <= X <= x) for x in [loc - pi, loc + pi], extended by F(x + 2 pi) = F(x) + 1
        (scipy.stats.vonmises's convention). Fourier series in float64 with Bessel ratios from a
        backward recurrence; accurate to ~1e-12 for every kappa."""
        x = _check_angles("x", x, self.loc)
        x, loc, kappa = torch.broadcast_tensors(x, self.loc, self.concentration)
        d = (x - loc).to(torch.float64)
        turns = torch.round(d / (2.0 * math.pi))
        d = d - 2.0 * math.pi * turns
        flat_d, flat_k = d.reshape(-1), kappa.reshape(-1).to(torch.float64)
        out = torch.empty_like(flat_d)
        if flat_d.numel():
            n_terms = int(9.0 * math.sqrt(float(flat_k.max())) + 32)
            chunk = max(1, 2**22 // n_terms)
            orders = torch.arange(1, n_terms + 1, dtype=torch.float64, device=d.device)
            for start in range(0, flat_d.numel(), chunk):
                dd, kk = flat_d[start : start + chunk], flat_k[start : start + chunk]
                # r_n = I_n / I_{n-1} = kappa / (2 n + kappa r_{n+1}), from r_{N+1} = 0.
                ratios = torch.zeros(dd.numel(), n_terms, dtype=torch.float64, device=d.device)
                following = torch.zeros_like(kk)
                for n in range(n_terms, 0, -1):
                    following = kk / (2.0 * n + kk * following)
                    ratios[:, n - 1] = following
                coefficients = torch.cumprod(ratios, dim=1)  # I_n / I_0
                series = (coefficients * torch.sin(orders * dd[:, None]) / orders).sum(dim=1)
                out[start : start + chunk] = (dd + math.pi) / (2.0 * math.pi) + series / math.pi
        return (out.reshape(d.shape).clamp(0.0, 1.0) + turns).to(x.dtype)

    def sample(
        self,
        sample_shape: int | Sequence[int] = (),
        seed: int | None = None,
        offset: int = 0,
        backend: str | None = None,
    ) -> torch.Tensor:
        """Draws of shape ``(*sample_shape, *batch_shape)`` in [-pi, pi).

        ``seed`` (0 <= seed < 2^64, None draws one from torch's global generator) and ``offset``
        (0 <= offset < 2^32) select the Philox stream; the same pair gives the same draws.
        ``backend`` forces an implementation (see :mod:`pyslice.backends`).
        """
        ones = torch.zeros((*self.batch_shape, 1), dtype=self.loc.dtype, device=self.loc.device)
        return draw_mixture(
            ones,
            self.loc.unsqueeze(-1),
            self.concentration.unsqueeze(-1),
            sample_shape,
            seed,
            offset,
            backend,
            pi_periodic=False,
        )

    def __repr__(self) -> str:
        return f"VonMises(batch_shape={tuple(self.batch_shape)}, device={self.loc.device})"


@dataclass(frozen=True)
class FitResult:
    """How an EM fit went. ``log_likelihood``: (*batch, n_iter) total weighted log-likelihood of
    the chosen start at each iteration (before that iteration's M-step, the last entry after the
    final one); ``converged``: (*batch,) whether the change fell below ``tol``."""

    log_likelihood: torch.Tensor
    converged: torch.Tensor
    n_iter: int


class VonMisesMixture:
    """Mixture of von Mises distributions.

    ``logits, loc, concentration: (*batch, K)``: unnormalised log-weights (``-inf`` marks an empty
    component), mean directions and concentrations. ``pi_periodic=True`` makes the density repeat
    every pi; the parameters then describe the doubled angle.
    """

    def __init__(
        self,
        logits: torch.Tensor | Sequence[float],
        loc: torch.Tensor | Sequence[float],
        concentration: torch.Tensor | Sequence[float],
        *,
        pi_periodic: bool = False,
    ) -> None:
        logits_t = _checks.as_float_tensor("logits", logits)
        loc_t = _checks.as_float_tensor("loc", loc)
        kappa_t = _checks.as_float_tensor("concentration", concentration)
        device, dtype = _checks.common_device_dtype(
            logits=logits_t, loc=loc_t, concentration=kappa_t
        )
        for name, t in (("logits", logits_t), ("loc", loc_t), ("concentration", kappa_t)):
            if t.dim() == 0:
                raise ValueError(f"{name} must have a component dimension (last), got a scalar")
        logits_t, loc_t, kappa_t = _checks.broadcast(
            logits=logits_t.to(dtype), loc=loc_t.to(dtype), concentration=kappa_t.to(dtype)
        )
        if logits_t.shape[-1] == 0:
            raise ValueError("a mixture needs at least one component (last dimension is 0)")
        if bool(torch.isnan(logits_t).any()) or bool((logits_t == math.inf).any()):
            raise ValueError("logits must not contain NaN or +inf")
        if logits_t.numel() and not bool(torch.isfinite(logits_t).any(dim=-1).all()):
            raise ValueError("logits must give every mixture at least one finite weight")
        _checks.require_finite("loc", loc_t)
        _check_concentration(kappa_t)
        self.logits = logits_t - torch.logsumexp(logits_t, dim=-1, keepdim=True)
        self.loc = loc_t
        self.concentration = kappa_t
        self.pi_periodic = bool(pi_periodic)
        self.fit_result: FitResult | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape[:-1]

    @property
    def n_components(self) -> int:
        return self.loc.shape[-1]

    @property
    def probs(self) -> torch.Tensor:
        """Mixture weights, (*batch, K), summing to 1."""
        return torch.exp(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        """Circular mean direction: atan2 of the mixture's first trigonometric moment. For a
        pi-periodic mixture, the axial mean (half the doubled angle's mean) in [-pi/2, pi/2)."""
        resultant = self.probs * mean_resultant_length(self.concentration)
        angle = torch.atan2(
            (resultant * torch.sin(self.loc)).sum(-1), (resultant * torch.cos(self.loc)).sum(-1)
        )
        return 0.5 * angle if self.pi_periodic else angle

    def _angles(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x if self.pi_periodic else x

    def component_log_prob(self, x: torch.Tensor | float) -> torch.Tensor:
        """log(alpha_k p_k(x)), shape (*broadcast(x, batch), K)."""
        x = _check_angles("x", x, self.loc)
        y = self._angles(x).unsqueeze(-1)
        return self.logits + von_mises_log_density(y, self.loc, self.concentration)

    def log_prob(self, x: torch.Tensor | float) -> torch.Tensor:
        """log p(x); ``x`` broadcasts against the batch shape."""
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def responsibilities(self, x: torch.Tensor | float) -> torch.Tensor:
        """Posterior component probabilities p(k | x), shape (*broadcast(x, batch), K)."""
        return torch.softmax(self.component_log_prob(x), dim=-1)

    def sample(
        self,
        sample_shape: int | Sequence[int] = (),
        seed: int | None = None,
        offset: int = 0,
        backend: str | None = None,
    ) -> torch.Tensor:
        """Draws of shape ``(*sample_shape, *batch_shape)`` in [-pi, pi); one fused kernel picks
        each draw's component and its angle. ``seed``/``offset``/``backend`` as in
        :meth:`VonMises.sample`."""
        return draw_mixture(
            self.logits,
            self.loc,
            self.concentration,
            sample_shape,
            seed,
            offset,
            backend,
            self.pi_periodic,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        moved = VonMisesMixture(
            self.logits.to(device=device, dtype=dtype),
            self.loc.to(device=device, dtype=dtype),
            self.concentration.to(device=device, dtype=dtype),
            pi_periodic=self.pi_periodic,
        )
        moved.fit_result = self.fit_result
        return moved

    def bic(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Bayesian information criterion of data ``x: (*batch, N)``, lower is better:
        ``-2 sum_n w_n log p(x_n) + (3K' - 1) log(sum_n w_n)``, K' counting non-empty components."""
        x, w = _fit_data(x, weights)
        log_lik = (w * self.log_prob(x.movedim(-1, 0).to(self.loc.dtype)).movedim(0, -1)).sum(-1)
        n_params = 3 * torch.isfinite(self.logits).sum(-1) - 1
        return -2.0 * log_lik + n_params * torch.log(w.sum(-1))

    @classmethod
    def fit(
        cls,
        x: torch.Tensor,
        n_components: int,
        weights: torch.Tensor | None = None,
        pi_periodic: bool = False,
        n_init: int = 4,
        max_iter: int = 300,
        tol: float = 1e-8,
        seed: int | None = None,
    ) -> VonMisesMixture:
        """Fit by expectation-maximisation.

        ``x: (N,)`` or ``(*batch, N)`` angles; each batch entry is an independent data set and all
        are fitted at once. ``weights``: same shape, non-negative (0 drops a point, so ragged data
        sets can share one tensor). ``n_init`` k-means++ starts per data set, the best final
        log-likelihood wins. Iterates until the mean log-likelihood per unit weight changes by less
        than ``tol`` for every data set, or ``max_iter``. M-step: alpha = mean responsibility,
        mu = atan2 of weighted sines and cosines, kappa = A^{-1}(R) by Newton from Banerjee's start
        (capped at MAX_FIT_CONCENTRATION). EM never decreases the log-likelihood; the history is in
        ``result.fit_result``. Computation is in float64; parameters come back in x's dtype.
        """
        n_components = _checks.check_int("n_components", n_components, low=1)
        n_init = _checks.check_int("n_init", n_init, low=1)
        max_iter = _checks.check_int("max_iter", max_iter, low=1)
        tol = _checks.check_float("tol", tol, low=0.0)
        out_dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else None
        x, w = _fit_data(x, weights)
        batch_shape, n_points = x.shape[:-1], x.shape[-1]
        y = (2.0 * x if pi_periodic else x).reshape(-1, n_points).to(torch.float64)
        w = w.reshape(-1, n_points).to(torch.float64)
        generator = torch.Generator(device="cpu").manual_seed(_checks.resolve_seed(seed) % 2**63)

        n_sets = y.shape[0]
        y_all = y.repeat_interleave(n_init, dim=0)
        w_all = w.repeat_interleave(n_init, dim=0)
        params = _m_step(
            y_all, w_all, _kmeans_pp_responsibilities(y_all, w_all, n_components, generator)
        )
        history, converged = [], torch.zeros(y_all.shape[0], dtype=torch.bool, device=y.device)
        total_weight = w_all.sum(-1)
        for _ in range(max_iter):
            log_lik, resp = _e_step(y_all, w_all, params)
            history.append(log_lik)
            if len(history) > 1:
                change = (history[-1] - history[-2]).abs() / total_weight
                converged = converged | (change <= tol)
                if bool(converged.all()):
                    break
            params = _m_step(y_all, w_all, resp, previous=params)
        else:
            history.append(_e_step(y_all, w_all, params)[0])

        trace = torch.stack(history, dim=-1).reshape(n_sets, n_init, -1)
        best = trace[:, :, -1].argmax(dim=1)
        pick = torch.arange(n_sets, device=y.device) * n_init + best
        log_w, loc, kappa = (p[pick] for p in params)
        # Heaviest component first: a stable, readable order.
        order = torch.argsort(log_w, dim=-1, descending=True)
        log_w, loc, kappa = (torch.gather(p, -1, order) for p in (log_w, loc, kappa))

        dtype = out_dtype if out_dtype is not None else torch.float32
        shape = (*batch_shape, n_components)
        mixture = cls(
            log_w.reshape(shape).to(dtype),
            torch.atan2(torch.sin(loc), torch.cos(loc)).reshape(shape).to(dtype),
            kappa.reshape(shape).to(dtype),
            pi_periodic=pi_periodic,
        )
        mixture.fit_result = FitResult(
            log_likelihood=trace[torch.arange(n_sets, device=y.device), best].reshape(
                *batch_shape, -1
            ),
            converged=converged.reshape(n_sets, n_init)[
                torch.arange(n_sets, device=y.device), best
            ].reshape(batch_shape),
            n_iter=len(history),
        )
        return mixture

    @classmethod
    def fit_bic(
        cls,
        x: torch.Tensor,
        max_components: int = 6,
        weights: torch.Tensor | None = None,
        **fit_kwargs,
    ) -> tuple[VonMisesMixture, torch.Tensor]:
        """Fit K = 1..max_components and keep, per data set, the K with the lowest BIC.

        Returns the mixture (K = max_components slots; slots beyond a data set's chosen K have
        weight zero, i.e. logits -inf) and the BIC table ``(*batch, max_components)``.
        """
        max_components = _checks.check_int("max_components", max_components, low=1)
        fits = [cls.fit(x, k, weights=weights, **fit_kwargs) for k in range(1, max_components + 1)]
        scores = torch.stack([m.bic(x, weights) for m in fits], dim=-1)
        chosen = scores.argmin(dim=-1)
        padded = []
        for k, m in enumerate(fits, start=1):
            pad = max_components - k
            padded.append(
                (
                    torch.nn.functional.pad(m.logits, (0, pad), value=-math.inf),
                    torch.nn.functional.pad(m.loc, (0, pad)),
                    torch.nn.functional.pad(m.concentration, (0, pad)),
                )
            )
        pick = chosen.unsqueeze(-1).unsqueeze(-1)
        stacked = [torch.stack([p[i] for p in padded], dim=-2) for i in range(3)]
        logits, loc, kappa = (torch.take_along_dim(s, pick, dim=-2).squeeze(-2) for s in stacked)
        return cls(logits, loc, kappa, pi_periodic=fits[0].pi_periodic), scores

    def __repr__(self) -> str:
        return (
            f"VonMisesMixture(batch_shape={tuple(self.batch_shape)}, "
            f"n_components={self.n_components}, pi_periodic={self.pi_periodic}, "
            f"device={self.loc.device})"
        )


def _fit_data(x: object, weights: object) -> tuple[torch.Tensor, torch.Tensor]:
    x = _checks.as_float_tensor("x", x)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(
            f"x must have at least one angle in its last dimension, got {tuple(x.shape)}"
        )
    _checks.require_finite("x", x)
    if weights is None:
        return x, torch.ones_like(x)
    w = _checks.as_float_tensor("weights", weights, device=x.device)
    if w.shape != x.shape:
        raise ValueError(f"weights must have x's shape {tuple(x.shape)}, got {tuple(w.shape)}")
    _checks.require_finite("weights", w)
    if bool((w < 0).any()):
        raise ValueError("weights must be >= 0")
    if bool((w.sum(-1) <= 0).any()):
        raise ValueError("weights must give every data set a positive total weight")
    return x, w.to(x.dtype)


def _kmeans_pp_responsibilities(
    y: torch.Tensor, w: torch.Tensor, n_components: int, generator: torch.Generator
) -> torch.Tensor:
    """Hard assignments to k-means++ centres on the circle (distance 1 - cos), (sets, N, K)."""
    n_sets = y.shape[0]
    rows = torch.arange(n_sets, device=y.device)
    chosen = torch.multinomial(w.cpu(), 1, generator=generator).to(y.device).squeeze(1)
    centres = [y[rows, chosen]]
    distance = 1.0 - torch.cos(y - centres[0][:, None])
    for _ in range(1, n_components):
        score = (w * distance).clamp_min(0.0) + 1e-300 * w
        chosen = torch.multinomial(score.cpu(), 1, generator=generator).to(y.device).squeeze(1)
        centres.append(y[rows, chosen])
        distance = torch.minimum(distance, 1.0 - torch.cos(y - centres[-1][:, None]))
    centre = torch.stack(centres, dim=-1)  # (sets, K)
    nearest = torch.cos(y[:, :, None] - centre[:, None, :]).argmax(dim=-1)
    return torch.nn.functional.one_hot(nearest, n_components).to(y.dtype)


def _e_step(
    y: torch.Tensor, w: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    log_w, loc, kappa = params
    joint = log_w[:, None, :] + von_mises_log_density(
        y[:, :, None], loc[:, None, :], kappa[:, None, :]
    )
    point_log_lik = torch.logsumexp(joint, dim=-1)
    resp = torch.exp(joint - point_log_lik[:, :, None])
    return (w * point_log_lik).sum(-1), resp


def concentration_from_resultant(r: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """kappa with A(kappa) = r (float64), capped at MAX_FIT_CONCENTRATION."""
    r = r.clamp(0.0, 1.0 - 1e-15)
    kappa = (r * (2.0 - r * r) / (1.0 - r * r)).clamp(0.0, MAX_FIT_CONCENTRATION)
    for _ in range(steps):
        a = mean_resultant_length(kappa)
        slope = 1.0 - a * a - a / kappa.clamp_min(1e-12)
        kappa = (kappa - (a - r) / slope.clamp_min(1e-300)).clamp(0.0, MAX_FIT_CONCENTRATION)
    return kappa


def _m_step(
    y: torch.Tensor,
    w: torch.Tensor,
    resp: torch.Tensor,
    previous: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weighted = w[:, :, None] * resp
    mass = weighted.sum(dim=1)
    total = w.sum(dim=1, keepdim=True)
    cos_sum = (weighted * torch.cos(y)[:, :, None]).sum(dim=1)
    sin_sum = (weighted * torch.sin(y)[:, :, None]).sum(dim=1)
    loc = torch.atan2(sin_sum, cos_sum)
    resultant = torch.sqrt(cos_sum * cos_sum + sin_sum * sin_sum) / mass.clamp_min(1e-300)
    kappa = concentration_from_resultant(resultant)
    log_w = torch.log(mass / total)
    loc, kappa = keep_emptied_components(mass <= 1e-12 * total, loc, kappa, previous)
    return log_w, loc, kappa


def keep_emptied_components(
    empty: torch.Tensor,
    loc: torch.Tensor,
    kappa: torch.Tensor,
    previous: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An emptied component (``empty``, broadcast to ``loc``) keeps its last shape: its weight is
    zero, so nothing depends on it (kappa 1 when there is no previous shape)."""
    if previous is not None:
        return torch.where(empty, previous[1], loc), torch.where(empty, previous[2], kappa)
    return loc, torch.where(empty, torch.ones_like(kappa), kappa)
