"""Parallel MCMC: chain state and the fused Metropolis-Hastings step.

Every chain b holds a state (chi, energy U, log-weight w, latent labels). A move proposes
(chi', U', w', labels') for all chains at once; the fused step accepts chain b with probability

    min(1, exp(-beta (U' - U) + w' - w)),

so one kernel serves every move type through the log-weight convention:

- independence proposal q:             w(x) = -log q(x)
- symmetric move (random walk):         w(x) = 0
- lifted move, proposal q(k, x) with latent labels k and a normalised conditional r(k | x):
                                         w(k, x) = log r(k | x) - log q(k, x)

(../shared/DESIGN.md, formula 4). The uniforms come from Philox (seed, chain, step) on every
backend, so a run is reproducible from its seed and CPU, CUDA and the torch reference take the same
decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyslice import _checks, backends

__all__ = ["ChainState", "metropolis_step"]

_MAX_STEP = 2**63


@dataclass
class ChainState:
    """The state of B parallel chains (updated in place by :func:`metropolis_step`).

    ``chi: (B, n_chi)`` float32/float64 radians; ``energy: (B,)`` kJ/mol and ``log_weight: (B,)``
    (one float dtype); ``latent: (B, n_latent)`` int64 labels (n_latent may be 0);
    ``accepted: (B,)`` int64 acceptance counts. All on one device, contiguous.
    """

    chi: torch.Tensor
    energy: torch.Tensor
    log_weight: torch.Tensor
    latent: torch.Tensor
    accepted: torch.Tensor

    @classmethod
    def create(
        cls,
        chi: torch.Tensor,
        energy: torch.Tensor,
        log_weight: torch.Tensor | None = None,
        latent: torch.Tensor | None = None,
    ) -> ChainState:
        """A fresh state (zero log-weights, no latent labels, zero counts unless given)."""
        chi = chi.contiguous().clone()
        energy = energy.contiguous().clone()
        n = chi.shape[0]
        if log_weight is None:
            log_weight = torch.zeros_like(energy)
        if latent is None:
            latent = torch.zeros(n, 0, dtype=torch.int64, device=chi.device)
        state = cls(
            chi,
            energy,
            log_weight.contiguous().clone(),
            latent.contiguous().clone(),
            torch.zeros(n, dtype=torch.int64, device=chi.device),
        )
        state.validate()
        return state

    @property
    def n_chains(self) -> int:
        return self.chi.shape[0]

    def validate(self) -> None:
        """Shapes, dtypes, device and contiguity, with messages naming the field."""
        if self.chi.dim() != 2 or not self.chi.is_floating_point():
            raise ValueError(
                f"state.chi must be a (B, n_chi) float tensor, got {tuple(self.chi.shape)} "
                f"{self.chi.dtype}"
            )
        n = self.chi.shape[0]
        for name in ("energy", "log_weight"):
            value = getattr(self, name)
            if value.shape != (n,) or value.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"state.{name} must be ({n},) float32/float64, got "
                    f"{tuple(value.shape)} {value.dtype}"
                )
        if self.log_weight.dtype != self.energy.dtype:
            raise ValueError("state.log_weight must have state.energy's dtype")
        if self.latent.dim() != 2 or self.latent.shape[0] != n or self.latent.dtype != torch.int64:
            raise ValueError(
                f"state.latent must be ({n}, n_latent) int64, got "
                f"{tuple(self.latent.shape)} {self.latent.dtype}"
            )
        if self.accepted.shape != (n,) or self.accepted.dtype != torch.int64:
            raise ValueError(f"state.accepted must be ({n},) int64")
        for name in ("chi", "energy", "log_weight", "latent", "accepted"):
            value = getattr(self, name)
            if value.device != self.chi.device:
                raise ValueError(
                    f"state.{name} is on {value.device}, state.chi on {self.chi.device}"
                )
            if not value.is_contiguous():
                raise ValueError(f"state.{name} must be contiguous (it is updated in place)")


def metropolis_step(
    state: ChainState,
    chi_new: torch.Tensor,
    energy_new: torch.Tensor,
    log_weight_new: torch.Tensor | None = None,
    latent_new: torch.Tensor | None = None,
    *,
    beta: float | torch.Tensor,
    seed: int,
    step: int,
    chain_offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """Accept or reject one proposal per chain and update ``state`` in place.

    ``chi_new: (B, n_chi)``, ``energy_new: (B,)``, ``log_weight_new: (B,)`` (default zeros: a
    symmetric move), ``latent_new: (B, n_latent)`` (default: the current labels). ``beta`` =
    1/kT in mol/kJ, one number or ``(B,)`` per chain (a temperature ladder); ``seed`` in
    [0, 2^64), ``step`` in [0, 2^63) and ``chain_offset`` (the global index of chain 0, for chains
    split over processes) select the uniforms: u in (0, 1) with 52 random bits, never 0. Returns
    the (B,) bool mask of accepted chains. A NaN proposal energy or weight is rejected, never
    accepted; an infinite current energy (a clash) is left by any finite proposal.
    """
    state.validate()
    device = state.chi.device
    beta = _per_chain_beta(beta, state.n_chains, device)
    seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
    step = _checks.check_int("step", step, low=0, high=_MAX_STEP)
    chain_offset = _checks.check_int("chain_offset", chain_offset, low=0, high=_MAX_STEP)
    if log_weight_new is None:
        log_weight_new = torch.zeros_like(state.log_weight)
    if latent_new is None:
        latent_new = state.latent
    expected = {
        "chi_new": (state.chi, chi_new),
        "energy_new": (state.energy, energy_new),
        "log_weight_new": (state.log_weight, log_weight_new),
        "latent_new": (state.latent, latent_new),
    }
    for name, (current, proposed) in expected.items():
        if not isinstance(proposed, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(proposed).__name__}")
        if proposed.shape != current.shape:
            raise ValueError(
                f"{name} must have shape {tuple(current.shape)}, got {tuple(proposed.shape)}"
            )
        if proposed.device != device:
            raise ValueError(f"{name} is on {proposed.device}, the state on {device}")
    chi_new = chi_new.to(state.chi.dtype).contiguous()
    energy_new = energy_new.to(state.energy.dtype).contiguous()
    log_weight_new = log_weight_new.to(state.energy.dtype).contiguous()
    latent_new = latent_new.to(torch.int64).contiguous()
    impl = backends.select("metropolis_step", device, state.chi.dtype, backend)
    return impl(
        state.chi,
        chi_new,
        state.energy,
        energy_new,
        state.log_weight,
        log_weight_new,
        state.latent,
        latent_new,
        state.accepted,
        beta,
        seed,
        step,
        chain_offset,
    )


def _per_chain_beta(beta: float | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """(n,) float64 on ``device``: one positive finite 1/kT per chain."""
    if isinstance(beta, torch.Tensor):
        if beta.shape not in ((), (n,)):
            raise ValueError(f"beta must be a number or have shape ({n},), got {tuple(beta.shape)}")
        if beta.device != device:
            raise ValueError(f"beta is on {beta.device}, the state on {device}")
        values = beta.to(torch.float64).expand(n).contiguous()
        # A value check reads the data: outside pyslice's own hot paths only.
        if _checks.values_checked() and not bool((torch.isfinite(values) & (values > 0)).all()):
            raise ValueError("beta must be finite and > 0 for every chain")
        return values
    value = _checks.check_float("beta", beta, positive=True)
    return torch.full((n,), value, dtype=torch.float64, device=device)
