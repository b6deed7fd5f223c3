"""The Energy Rank Alignment loss (DESIGN.md, formula 5) and the acceptance estimate ERA is
judged by.

For a context x and two candidates y, y' drawn from a frozen reference policy pi_ref:

    target preference  p  = sigmoid(beta (U(x, y') - U(x, y)))           (lower energy preferred)
    model preference   q  = sigmoid((1 + gamma) [log pi(y|x) - log pi(y'|x)]
                                    - gamma [log pi_ref(y|x) - log pi_ref(y'|x)])
    loss               = KL(Bernoulli(p) || Bernoulli(q)),  averaged over pairs.

Each pair's term is minimised where q = p, so the minimiser is

    pi*(y|x) proportional to exp(-beta / (1 + gamma) U(x, y) + gamma / (1 + gamma) log pi_ref(y|x)),

the Boltzmann distribution itself for gamma = 0 (gamma > 0 regularises toward pi_ref).
Reference: S. Chennakesavalu, F. Hu, S. Ibarraran, G. M. Rotskoff, "Energy Rank Alignment: using
preference optimization to search chemical space at scale" (2024).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pyslice import _checks

__all__ = ["era_loss", "independence_acceptance"]


def era_loss(
    logp_y: torch.Tensor,
    logp_y2: torch.Tensor,
    logp_ref_y: torch.Tensor,
    logp_ref_y2: torch.Tensor,
    energy_y: torch.Tensor,
    energy_y2: torch.Tensor,
    beta: float | torch.Tensor,
    gamma: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The ERA loss of a batch of pairs (y, y').

    All tensors broadcast to one batch shape ``(B,)``: ``logp_*`` are log-probabilities of y and
    y' under the trained model and the frozen reference, ``energy_*`` their energies (kJ/mol
    when ``beta`` is 1/kT in mol/kJ). ``gamma >= 0`` weighs the reference.

    The divergence is KL(target || model): the target preference comes first, as in the
    method's statement. (Published implementations differ in this order; with the target first,
    the gradient with respect to the model's logit difference is simply q - p.) Computed from
    log-sigmoids, so it stays finite for any energy gap. Gradients flow only through ``logp_y``
    and ``logp_y2`` (the target and the reference terms are constants).

    ``reduction``: "mean" (default), "sum" or "none" (per pair).
    """
    gamma = _checks.check_float("gamma", gamma, low=0.0)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    named = {
        "logp_y": logp_y,
        "logp_y2": logp_y2,
        "logp_ref_y": logp_ref_y,
        "logp_ref_y2": logp_ref_y2,
        "energy_y": energy_y,
        "energy_y2": energy_y2,
    }
    for name, value in named.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(value).__name__}")
    for name in ("logp_ref_y", "logp_ref_y2", "energy_y", "energy_y2"):
        _checks.require_finite(name, named[name])
    beta_t = torch.as_tensor(beta, dtype=logp_y.dtype, device=logp_y.device)
    if not bool(torch.isfinite(beta_t).all()) or bool((beta_t <= 0).any()):
        raise ValueError(f"beta must be finite and > 0, got {beta}")

    target_logit = beta_t * (energy_y2 - energy_y).detach()
    model_logit = (1.0 + gamma) * (logp_y - logp_y2) - gamma * (logp_ref_y - logp_ref_y2).detach()
    p = torch.sigmoid(target_logit)
    # KL(Bern(p) || Bern(q)) = p [log p - log q] + (1 - p) [log(1 - p) - log(1 - q)]
    per_pair = p * (F.logsigmoid(target_logit) - F.logsigmoid(model_logit)) + (1.0 - p) * (
        F.logsigmoid(-target_logit) - F.logsigmoid(-model_logit)
    )
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    return per_pair


def independence_acceptance(log_weight: torch.Tensor) -> float:
    """Expected acceptance of independence MH with proposal q at stationarity, from the
    importance log-weights ``log p~(x_i) - log q(x_i)`` of draws x_i ~ q (p unnormalised):
    E_{x~p, x'~q}[min(1, w(x')/w(x))] estimated by self-normalised importance sampling."""
    lw = log_weight.to(torch.float64).flatten()
    # NaN is undefined and dropped; -inf (a draw p never accepts, e.g. a clash) stays: as a
    # proposal it counts, with acceptance 0.
    lw = lw[~torch.isnan(lw) & (lw < math.inf)]
    n = lw.numel()
    if n < 2 or not bool(torch.isfinite(lw).any()):
        return float("nan")
    weights = torch.softmax(lw, dim=0)  # x ~ p via self-normalised weights
    ratio = (lw.unsqueeze(0) - lw.unsqueeze(1)).clamp_max(0.0).exp()  # [i, j] = min(1, w_j/w_i)
    # -inf - -inf is NaN where both draws have weight 0: no contribution. The diagonal (a draw
    # proposed against itself, ratio 1) is left out: it would floor the estimate at 1/n.
    ratio = torch.nan_to_num(ratio, nan=0.0).fill_diagonal_(0.0)
    return float((weights.unsqueeze(1) * ratio).sum() / (n - 1))
