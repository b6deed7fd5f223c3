"""Energy Rank Alignment (ERA): align a generator with Boltzmann statistics from energies alone.

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

import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pyslice import _checks
from pyslice._io import atomic_write
from pyslice.distributions import _von_mises_log_density
from pyslice.proposals import MixtureProposal, derive_seed

if TYPE_CHECKING:
    from pyslice.targets import ChiTarget

__all__ = [
    "ERALog",
    "ERATrainer",
    "MixturePolicy",
    "era_loss",
    "independence_acceptance",
]


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


# ------------------------------------------------------------------------------------ trainer


class MixturePolicy(torch.nn.Module):
    """A trainable product of grouped von Mises mixtures (the learnable twin of
    :class:`~pyslice.proposals.MixtureProposal`): a policy for :class:`ERATrainer`.

    ``log_prob(chi)`` is differentiable in the parameters; ``proposal()`` gives the frozen
    MixtureProposal (for sampling and for MH); ``sample(n, seed=...)`` draws angles.
    """

    def __init__(self, proposal: MixtureProposal) -> None:
        super().__init__()
        if not isinstance(proposal, MixtureProposal):
            raise TypeError(f"proposal must be a MixtureProposal, got {type(proposal).__name__}")
        self.register_buffer("group", proposal.group.clone())
        self.register_buffer("pi_periodic", proposal.pi_periodic.clone())
        self.logits = torch.nn.Parameter(proposal.logits.clone())
        self.loc = torch.nn.Parameter(proposal.loc.clone())
        # kappa = softplus(raw): positive and smooth; inverse softplus of the start values.
        kappa = proposal.concentration.clamp_min(1e-6)
        self.raw_concentration = torch.nn.Parameter(kappa + torch.log(-torch.expm1(-kappa)))
        self.dtype = proposal.dtype

    @property
    def concentration(self) -> torch.Tensor:
        return F.softplus(self.raw_concentration)

    def proposal(self) -> MixtureProposal:
        return MixtureProposal(
            self.group,
            self.logits.detach(),
            self.loc.detach(),
            self.concentration.detach(),
            self.pi_periodic,
            dtype=self.dtype,
        )

    def log_prob(self, chi: torch.Tensor) -> torch.Tensor:
        """(n,) float64 log q(chi), differentiable in the parameters."""
        x = chi.to(torch.float64)
        x = torch.where(self.pi_periodic, 2.0 * x, x).unsqueeze(-1)
        per_column = _von_mises_log_density(x, self.loc, self.concentration)  # (n, n_chi, K)
        logits = self.logits - torch.logsumexp(self.logits, dim=1, keepdim=True)
        joint = logits.expand(chi.shape[0], -1, -1).index_add(1, self.group, per_column)
        return torch.logsumexp(joint, dim=2).sum(1)

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        return self.proposal().sample(n, seed=seed).chi


def independence_acceptance(log_weight: torch.Tensor) -> float:
    """Expected acceptance of independence MH with proposal q at stationarity, from the
    importance log-weights ``log p~(x_i) - log q(x_i)`` of draws x_i ~ q (p unnormalised):
    E_{x~p, x'~q}[min(1, w(x')/w(x))] estimated by self-normalised importance sampling."""
    lw = log_weight.to(torch.float64).flatten()
    lw = lw[torch.isfinite(lw)]
    if lw.numel() == 0:
        return float("nan")
    weights = torch.softmax(lw, dim=0)  # x ~ p via self-normalised weights
    ratio = (lw.unsqueeze(0) - lw.unsqueeze(1)).clamp_max(0.0).exp()  # [i, j] = min(1, w_j/w_i)
    return float((weights.unsqueeze(1) * ratio).sum() / lw.numel())


@dataclass
class ERALog:
    """One logged step: ``step``, ``loss``, ``mean_energy`` of the model's draws (kJ/mol) and
    the model's estimated independence-MH ``acceptance`` as a proposal."""

    step: int
    loss: float
    mean_energy: float
    acceptance: float


class ERATrainer:
    """Fine-tune ``model`` toward exp(-beta U) from energies alone (ERA, formula 5).

    Each step draws ``2 * pairs`` configurations from the frozen ``reference_model``, scores them
    with ``energy`` (a callable chi -> (n,) kJ/mol, or a :class:`~pyslice.targets.ChiTarget`),
    pairs them, and takes one optimiser step on :func:`era_loss`. ``model`` and
    ``reference_model`` are policies: ``sample(n, seed=...) -> chi`` and a ``log_prob(chi)``
    differentiable in the model's parameters (e.g. :class:`MixturePolicy`, or the transformer's
    policy). ``gamma`` > 0 keeps the model near the reference: the minimiser is
    pi* proportional to exp(-beta U / (1 + gamma)) pi_ref^(gamma / (1 + gamma)).

    Every ``log_every`` steps it logs the loss, the mean energy of ``eval_samples`` model draws
    and their estimated independence-MH acceptance (:func:`independence_acceptance`).
    ``checkpoint``: a path written every ``checkpoint_every`` steps (model, optimiser, step, log);
    :meth:`train` resumes from it and continues bit-identically (draws are keyed by seed and step).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        reference_model: torch.nn.Module,
        energy: Callable[[torch.Tensor], torch.Tensor] | ChiTarget,
        *,
        temperature: float = 300.0,
        gamma: float = 0.0,
        pairs: int = 256,
        lr: float = 1e-2,
        seed: int = 0,
        eval_samples: int = 512,
        log_every: int = 10,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Callable[[int], float] | None = None,
    ) -> None:
        from pyslice.sampler import BOLTZMANN_KJ_PER_MOL_K

        if model is reference_model:
            raise ValueError("reference_model must be a separate (frozen) copy of the model")
        for name, policy in (("model", model), ("reference_model", reference_model)):
            if not (callable(getattr(policy, "sample", None)) and callable(policy.log_prob)):
                raise TypeError(f"{name} must have sample(n, seed=...) and log_prob(chi)")
        temperature = _checks.check_float("temperature", temperature, positive=True)
        self.beta = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * temperature)
        self.gamma = _checks.check_float("gamma", gamma, low=0.0)
        self.pairs = _checks.check_int("pairs", pairs, low=1)
        self.seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
        self.eval_samples = _checks.check_int("eval_samples", eval_samples, low=2)
        self.log_every = _checks.check_int("log_every", log_every, low=1)
        self.model = model
        self.reference_model = reference_model
        for parameter in reference_model.parameters():
            parameter.requires_grad_(False)
        self.energy = _energy_function(energy)
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.scheduler = scheduler
        self.step = 0
        self.history: list[ERALog] = []

    def loss_on(self, chi: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """The ERA loss of pairs (chi[:P], chi[P:]) with their energies."""
        half = chi.shape[0] // 2
        logp = self.model.log_prob(chi)
        with torch.no_grad():
            logp_ref = self.reference_model.log_prob(chi)
        return era_loss(
            logp[:half],
            logp[half : 2 * half],
            logp_ref[:half],
            logp_ref[half : 2 * half],
            energy[:half],
            energy[half : 2 * half],
            beta=self.beta,
            gamma=self.gamma,
        )

    def evaluate(self, seed: int) -> tuple[float, float]:
        """(mean energy, estimated MH acceptance) of ``eval_samples`` draws of the model."""
        with torch.no_grad():
            chi = self.model.sample(self.eval_samples, seed=seed)
            energy = self.energy(chi)
            log_weight = -self.beta * energy - self.model.log_prob(chi)
        finite = torch.isfinite(energy)
        mean = float(energy[finite].mean()) if bool(finite.any()) else float("nan")
        return mean, independence_acceptance(log_weight)

    def train(
        self,
        n_steps: int,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 50,
        progress: bool = False,
    ) -> list[ERALog]:
        """Run until ``n_steps`` steps in total have been taken (resuming from ``checkpoint``
        when it exists); returns the history."""
        n_steps = _checks.check_int("n_steps", n_steps, low=0)
        checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, low=1)
        path = None if checkpoint is None else Path(checkpoint)
        if path is not None and path.exists():
            self.load_checkpoint(path)
        while self.step < n_steps:
            key = derive_seed(self.seed, self.step, 0x657261)
            with torch.no_grad():
                chi = self.reference_model.sample(2 * self.pairs, seed=key)
                energy = self.energy(chi)
            keep = torch.isfinite(energy)
            if int(keep.sum()) < 2:
                raise ValueError(
                    f"step {self.step}: fewer than 2 reference draws have a finite energy"
                )
            chi, energy = chi[keep], energy[keep]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_on(chi, energy)
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"step {self.step}: the ERA loss is not finite ({float(loss)})")
            loss.backward()
            if self.scheduler is not None:
                factor = float(self.scheduler(self.step))
                for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                    group["lr"] = base * factor
            self.optimizer.step()
            self.step += 1
            if self.step % self.log_every == 0:
                mean, acceptance = self.evaluate(derive_seed(self.seed, self.step, 0x6576616C))
                entry = ERALog(self.step, float(loss.detach()), mean, acceptance)
                self.history.append(entry)
                if progress:
                    print(
                        f"ERA step {entry.step}: loss {entry.loss:.4f}, <U> "
                        f"{entry.mean_energy:.1f} kJ/mol, MH acceptance {entry.acceptance:.3f}",
                        file=sys.stderr,
                    )
            if path is not None and (self.step % checkpoint_every == 0 or self.step == n_steps):
                self.save_checkpoint(path)
        return self.history

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        payload = {
            "format": "pyslice-era-1",
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": [vars(entry) for entry in self.history],
            "settings": {
                "beta": self.beta,
                "gamma": self.gamma,
                "pairs": self.pairs,
                "seed": self.seed,
            },
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, "wb", lambda file: file.write(buffer.getvalue()))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "pyslice-era-1":
            raise ValueError(f"checkpoint: {path} is not a pyslice ERA checkpoint")
        mine = {"beta": self.beta, "gamma": self.gamma, "pairs": self.pairs, "seed": self.seed}
        if payload["settings"] != mine:
            raise ValueError(
                f"checkpoint: {path} was written with {payload['settings']}, not {mine}"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.history = [ERALog(**entry) for entry in payload["history"]]


def _energy_function(energy: object) -> Callable[[torch.Tensor], torch.Tensor]:
    from pyslice.targets import ChiTarget

    if isinstance(energy, ChiTarget):
        return lambda chi: energy.energy(chi.to(energy.dtype))[0]
    if callable(energy):
        return energy
    raise TypeError(f"energy must be callable or a ChiTarget, got {type(energy).__name__}")
