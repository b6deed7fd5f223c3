"""The ERA trainer: fine-tunes a :class:`~pyslice.models.era.Policy` toward exp(-beta U) from
energies alone (the loss: :mod:`pyslice.models.era.loss`).

Each step draws pairs from a frozen reference policy, scores them with the energy and takes one
optimiser step on :func:`~pyslice.models.era.era_loss`; it logs the model's estimated
independence-MH acceptance as a proposal and checkpoints so that a resumed run continues bit for
bit. :func:`sampler_contexts` gives a conditional policy its context states from a short
random-walk run. The side-chain transformer's end-to-end alignment with one structure (``pyslice
train era``) is :func:`pyslice.models.transformer.align_transformer`.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pyslice import _checks
from pyslice._random import derive_seed
from pyslice.io.files import atomic_write
from pyslice.models.era.loss import era_loss, independence_acceptance
from pyslice.models.era.policy import Policy

if TYPE_CHECKING:
    from pyslice.energy.forcefield import ForceFieldEnergy
    from pyslice.mcmc.targets import ChiTarget
    from pyslice.structure.protein import Protein

__all__ = ["ERALog", "ERATrainer", "sampler_contexts"]


@dataclass
class ERALog:
    """One logged step: ``step``, ``loss``, ``mean_energy`` and ``median_energy`` of the model's
    draws (kJ/mol; the median is the readable one when some draws clash) and the model's
    estimated independence-MH ``acceptance`` as a proposal."""

    step: int
    loss: float
    mean_energy: float
    acceptance: float
    median_energy: float = math.nan


class ERATrainer:
    """Fine-tune ``model`` toward exp(-beta U) from energies alone (ERA, formula 5).

    Each step draws ``pairs`` pairs of configurations from the frozen ``reference_model``, scores
    them with ``energy`` (a callable chi -> (n,) kJ/mol, or a :class:`~pyslice.mcmc.ChiTarget`)
    and takes one optimiser step on :func:`~pyslice.models.era.era_loss`. ``model`` and
    ``reference_model`` are :class:`~pyslice.models.era.Policy` instances of the same kind:
    unconditional (``sample``, ``log_prob(chi)``; e.g. :class:`~pyslice.models.era.MixturePolicy`)
    or conditional (``sample_grouped``, ``log_prob(chi, condition)``; e.g.
    :class:`~pyslice.models.transformer.TransformerPolicy`: a block of residues given the others),
    whose pairs are then drawn within a context, as the method requires.

    A pair with a non-finite energy is dropped. ``gamma`` > 0 keeps the model near the reference:
    the minimiser is pi* proportional to exp(-beta U / (1 + gamma)) pi_ref^(gamma / (1 + gamma)).

    Every ``log_every`` steps it logs the loss, the mean energy of ``eval_samples`` model draws
    and their estimated independence-MH acceptance
    (:func:`~pyslice.models.era.independence_acceptance`; for a
    conditional policy, ``eval_contexts`` contexts of ``eval_samples // eval_contexts`` draws each,
    the acceptance averaged over contexts).
    ``checkpoint``: a path written every ``checkpoint_every`` steps (model, optimiser, step, log);
    :meth:`train` resumes from it and continues bit-identically (draws are keyed by seed and step);
    ``identity`` (plain values, e.g. the structure and block sizes) is stored with the settings and
    must match on resume.
    """

    def __init__(
        self,
        model: Policy,
        reference_model: Policy,
        energy: Callable[[torch.Tensor], torch.Tensor] | ChiTarget,
        *,
        temperature: float = 300.0,
        gamma: float = 0.0,
        pairs: int = 256,
        lr: float = 1e-2,
        seed: int = 0,
        eval_samples: int = 512,
        eval_contexts: int = 8,
        log_every: int = 10,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Callable[[int], float] | None = None,
        identity: dict | None = None,
    ) -> None:
        from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K

        for name, policy in (("model", model), ("reference_model", reference_model)):
            if not isinstance(policy, Policy):
                raise TypeError(
                    f"{name} must be a pyslice.models.era.Policy, got {type(policy).__name__}"
                )
        if model.conditional != reference_model.conditional:
            raise ValueError(
                "reference_model must be of the model's kind (both conditional or neither)"
            )
        shared = {id(p) for p in model.parameters()} & {id(p) for p in reference_model.parameters()}
        if model is reference_model or shared:
            raise ValueError("reference_model must be a separate (frozen) copy of the model")
        temperature = _checks.check_float("temperature", temperature, positive=True)
        self.beta = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * temperature)
        self.gamma = _checks.check_float("gamma", gamma, low=0.0)
        self.pairs = _checks.check_int("pairs", pairs, low=1)
        self.seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
        self.eval_samples = _checks.check_int("eval_samples", eval_samples, low=2)
        self.eval_contexts = _checks.check_int("eval_contexts", eval_contexts, low=1)
        if model.conditional and self.eval_contexts > self.eval_samples // 2:
            raise ValueError(
                f"eval_contexts must be <= eval_samples // 2 = {self.eval_samples // 2} (two "
                f"draws per context at least), got {eval_contexts}"
            )
        self.log_every = _checks.check_int("log_every", log_every, low=1)
        self.model = model
        self.reference_model = reference_model
        for parameter in reference_model.parameters():
            parameter.requires_grad_(False)
        self.energy = _energy_function(energy)
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.scheduler = scheduler
        self.identity = dict(identity or {})
        self.step = 0
        self.history: list[ERALog] = []

    def loss_on(
        self, chi: torch.Tensor, energy: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ERA loss of the pairs (chi[0::2], chi[1::2]) with their energies (and, for a
        conditional policy, the ``condition`` of every row)."""
        logp = _log_prob(self.model, chi, condition)
        with torch.no_grad():
            logp_ref = _log_prob(self.reference_model, chi, condition)
        return era_loss(
            logp[0::2],
            logp[1::2],
            logp_ref[0::2],
            logp_ref[1::2],
            energy[0::2],
            energy[1::2],
            beta=self.beta,
            gamma=self.gamma,
        )

    def evaluate(self, seed: int) -> tuple[float, float, float]:
        """(mean energy, median energy, estimated MH acceptance) of ``eval_samples`` draws of
        the model."""
        n_groups = self.eval_contexts if self.model.conditional else 1
        size = self.eval_samples // n_groups
        with torch.no_grad():
            chi, condition = _sample(self.model, n_groups, size, seed)
            energy = self.energy(chi)
            log_weight = -self.beta * energy - _log_prob(self.model, chi, condition)
        finite = torch.isfinite(energy)
        mean = float(energy[finite].mean()) if bool(finite.any()) else float("nan")
        median = float(energy.nan_to_num(nan=math.inf, posinf=math.inf).median())
        per_context = [independence_acceptance(lw) for lw in log_weight.view(n_groups, size)]
        # a context none of whose draws has a finite energy accepts nothing
        per_context = [0.0 if math.isnan(a) else a for a in per_context]
        return mean, median, sum(per_context) / n_groups

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
                chi, condition = _sample(self.reference_model, self.pairs, 2, key)
                energy = self.energy(chi)
            keep = torch.isfinite(energy).view(-1, 2).all(1).repeat_interleave(2)
            if not bool(keep.any()):
                raise ValueError(f"step {self.step}: no reference pair has finite energies")
            chi, energy = chi[keep], energy[keep]
            condition = _select(condition, keep)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_on(chi, energy, condition)
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
                mean, median, acceptance = self.evaluate(
                    derive_seed(self.seed, self.step, 0x6576616C)
                )
                entry = ERALog(self.step, float(loss.detach()), mean, acceptance, median)
                self.history.append(entry)
                if progress:
                    print(
                        f"ERA step {entry.step}: loss {entry.loss:.4f}, median U "
                        f"{entry.median_energy:.1f} kJ/mol, MH acceptance {entry.acceptance:.3f}",
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
                **self.identity,
            },
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, "wb", lambda file: file.write(buffer.getvalue()))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "pyslice-era-1":
            raise ValueError(f"checkpoint: {path} is not a pyslice ERA checkpoint")
        mine = {
            "beta": self.beta,
            "gamma": self.gamma,
            "pairs": self.pairs,
            "seed": self.seed,
            **self.identity,
        }
        if payload["settings"] != mine:
            raise ValueError(
                f"checkpoint: {path} was written with {payload['settings']}, not {mine}"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.history = [ERALog(**entry) for entry in payload["history"]]


def _sample(
    policy: Policy, n_groups: int, group_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(chi, condition) of ``n_groups`` runs of ``group_size`` draws sharing a context
    (condition None for an unconditional policy, whose draws need no shared context)."""
    if policy.conditional:
        return policy.sample_grouped(n_groups, group_size, seed=seed)
    return policy.sample(n_groups * group_size, seed=seed), None


def _log_prob(policy: Policy, chi: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    return policy.log_prob(chi, condition) if policy.conditional else policy.log_prob(chi)


def _select(condition: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    """The rows ``keep`` of a condition (a tensor, or None)."""
    if condition is None or bool(keep.all()):
        return condition
    if isinstance(condition, torch.Tensor):
        return condition[keep]
    raise TypeError(f"cannot select rows of a {type(condition).__name__} condition")


def _energy_function(energy: object) -> Callable[[torch.Tensor], torch.Tensor]:
    from pyslice.mcmc.targets import ChiTarget

    if isinstance(energy, ChiTarget):
        return lambda chi: energy.energy(chi.to(energy.device, energy.dtype))[0]
    if callable(energy):
        return energy
    raise TypeError(f"energy must be callable or a ChiTarget, got {type(energy).__name__}")


# ------------------------------------------------------------------- contexts


def sampler_contexts(
    protein: Protein,
    energy: ForceFieldEnergy | None,
    *,
    n_chains: int = 256,
    steps: int = 500,
    temperature: float = 300.0,
    seed: int = 0,
) -> torch.Tensor:
    """Context states for a conditional policy: the chis of ``n_chains`` one-residue random-walk
    chains after ``steps`` warm-up steps (adaptive step sizes) from the structure's own chis, at
    ``temperature``: (n_chains, n_chi), near the states an equilibrated sampler holds."""
    from pyslice.mcmc.moves import RandomWalk
    from pyslice.mcmc.sampler import Sampler

    sampler = Sampler(
        protein,
        energy,
        n_chains=n_chains,
        moves=[RandomWalk("residue")],
        seed=seed,
        temperature=temperature,
    )
    sampler.run(0, warmup=_checks.check_int("steps", steps, low=0), progress=False)
    return sampler.chi.detach().to(torch.float32).cpu().clone()
