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

The side-chain transformer
--------------------------
:class:`~pyslice.models.transformer.TransformerPolicy` makes the transformer a *conditional*
policy, as the
sampler uses it: the context x is a sampler state with a random block of residues masked, y the
block's chis, and ERA aligns q(y | x) with exp(-beta U(x, y)) in every context, which is the
target of independence block moves. ``pyslice train --era`` (:func:`main`) takes the contexts from
a short random-walk run of the structure and, by default, aligns blocks of one residue. Why one:
on bpti, aligning blocks of 1, 4 and 16 residues at once made one-residue proposals *worse*
(acceptance 0.12 -> 0.06 after 300 steps), because the reference's multi-residue draws mostly
clash (1e4 to 1e15 kJ/mol), so their preferences are all-or-nothing and their gradients swamp the
informative pairs. Aligned on single residues, acceptance rose about 2x for one residue and 5-9x
for four (``benchmarks/results/era-bpti-cpu-x86_64-2core.json``). An aligned model is specific to
its structure, force field and temperature.
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
import torch.nn.functional as F

from pyslice import _checks
from pyslice.distributions import von_mises_log_density
from pyslice.io.files import atomic_write
from pyslice.proposals import MixtureProposal, derive_seed

if TYPE_CHECKING:
    from pyslice.mcmc.targets import ChiTarget

__all__ = [
    "ERALog",
    "ERATrainer",
    "MixturePolicy",
    "era_loss",
    "independence_acceptance",
    "sampler_contexts",
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
        per_column = von_mises_log_density(x, self.loc, self.concentration)  # (n, n_chi, K)
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
    and takes one optimiser step on :func:`era_loss`. ``model`` and ``reference_model`` are
    policies of one of two kinds:

    - unconditional: ``sample(n, seed=...) -> chi (n, n_chi)`` and ``log_prob(chi)``,
      differentiable in the model's parameters (e.g. :class:`MixturePolicy`);
    - conditional (the context x of the method): ``sample_grouped(n_groups, group_size, seed=...)
      -> (chi, condition)`` whose rows come in ``n_groups`` consecutive runs of ``group_size`` that
      share a context, and ``log_prob(chi, condition)`` (a policy with both methods says which
      kind it is by a ``conditional`` attribute; e.g.
      :class:`~pyslice.models.transformer.TransformerPolicy`: a block of residues given the others).
      Pairs are then drawn within a context, as the method requires.

    A pair with a non-finite energy is dropped. ``gamma`` > 0 keeps the model near the reference:
    the minimiser is pi* proportional to exp(-beta U / (1 + gamma)) pi_ref^(gamma / (1 + gamma)).

    Every ``log_every`` steps it logs the loss, the mean energy of ``eval_samples`` model draws
    and their estimated independence-MH acceptance (:func:`independence_acceptance`; for a
    conditional policy, ``eval_contexts`` contexts of ``eval_samples // eval_contexts`` draws each,
    the acceptance averaged over contexts).
    ``checkpoint``: a path written every ``checkpoint_every`` steps (model, optimiser, step, log);
    :meth:`train` resumes from it and continues bit-identically (draws are keyed by seed and step);
    ``identity`` (plain values, e.g. the structure and block sizes) is stored with the settings and
    must match on resume.
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
        eval_contexts: int = 8,
        log_every: int = 10,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Callable[[int], float] | None = None,
        identity: dict | None = None,
    ) -> None:
        from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K

        for name, policy in (("model", model), ("reference_model", reference_model)):
            draws = callable(getattr(policy, "sample", None)) or callable(
                getattr(policy, "sample_grouped", None)
            )
            if not (draws and callable(getattr(policy, "log_prob", None))):
                raise TypeError(
                    f"{name} must have sample(n, seed=...) or sample_grouped(n_groups, "
                    "group_size, seed=...), and log_prob"
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
        if _conditional(model) and self.eval_contexts > self.eval_samples // 2:
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
        self, chi: torch.Tensor, energy: torch.Tensor, condition: object = None
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
        n_groups = self.eval_contexts if _conditional(self.model) else 1
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
    policy: torch.nn.Module, n_groups: int, group_size: int, seed: int
) -> tuple[torch.Tensor, object]:
    """(chi, condition) of ``n_groups`` runs of ``group_size`` draws sharing a context
    (condition None for an unconditional policy, whose draws need no shared context)."""
    if _conditional(policy):
        return policy.sample_grouped(n_groups, group_size, seed=seed)
    return policy.sample(n_groups * group_size, seed=seed), None


def _conditional(policy: torch.nn.Module) -> bool:
    """Whether ``policy`` draws in contexts (``sample_grouped``; a policy with both kinds of
    draws says which it is by a ``conditional`` attribute)."""
    return callable(getattr(policy, "sample_grouped", None)) and bool(
        getattr(policy, "conditional", True)
    )


def _log_prob(policy: torch.nn.Module, chi: torch.Tensor, condition: object) -> torch.Tensor:
    return policy.log_prob(chi) if condition is None else policy.log_prob(chi, condition)


def _select(condition: object, keep: torch.Tensor) -> object:
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


# ------------------------------------------------------------------- the transformer, end to end


def sampler_contexts(
    protein: object,
    energy: object,
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


def main(argv: list[str] | None = None) -> int:
    """ERA fine-tuning of a SideChainTransformer on one structure (``pyslice train --era``)."""
    import argparse
    import copy
    import json
    import time

    from pyslice.energy.forcefield import ForceFieldEnergy
    from pyslice.mcmc.targets import ProteinTarget
    from pyslice.models.transformer.model import SideChainTransformer, TransformerPolicy
    from pyslice.structure.protein import Protein

    parser = argparse.ArgumentParser(
        prog="pyslice train --era --",
        description="Align a side-chain transformer with exp(-U/kT) of one structure by Energy "
        "Rank Alignment: pairs of block proposals given sampler states, ranked by energy.",
    )
    parser.add_argument("--structure", default=None, help="PDB/mmCIF (default: built-in peptide)")
    parser.add_argument("--model", default=None, help="starting model (default: the shipped one)")
    parser.add_argument("--out", default="transformer-era.pt", help="aligned model file to write")
    parser.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=[1],
        help="block sizes (residues) the conditional policy is aligned for (default 1: see "
        "pyslice.models.era's docstring); 0: whole side-chain sets from backbone and sequence "
        "alone",
    )
    parser.add_argument("--context-chains", type=int, default=256)
    parser.add_argument("--context-steps", type=int, default=500, help="random-walk steps")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--gamma", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="resumable training state")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--eval-contexts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(_checks.check_int("--threads", args.threads, low=1))
    conditional = args.blocks != [0]
    if conditional and min(args.blocks) < 1:
        raise ValueError(f"--blocks: sizes must be >= 1, or a single 0; got {args.blocks}")

    if args.structure is None:
        from pyslice.cli.common import DEFAULT_SEQUENCE

        protein = Protein.from_sequence(DEFAULT_SEQUENCE)
        source = f"built-in peptide {DEFAULT_SEQUENCE}"
    else:
        path = Path(args.structure)
        if not path.is_file():
            raise FileNotFoundError(f"--structure: no such file: {path}")
        protein = Protein.from_file(path)
        source = str(path)
    model = (
        SideChainTransformer.default()
        if args.model is None
        else SideChainTransformer.load(args.model)
    )
    energy = ForceFieldEnergy(protein)
    start = time.perf_counter()
    contexts = None
    if conditional:
        contexts = _checkpoint_contexts(args.checkpoint)
        if contexts is None:
            contexts = sampler_contexts(
                protein,
                energy,
                n_chains=args.context_chains,
                steps=args.context_steps,
                temperature=args.temperature,
                seed=args.seed,
            )
        print(f"contexts: {contexts.shape[0]} states ({time.perf_counter() - start:.0f} s)")
    blocks = args.blocks if conditional else None
    reference = TransformerPolicy(model, protein, block_sizes=blocks, contexts=contexts)
    policy = TransformerPolicy(copy.deepcopy(model), protein, block_sizes=blocks, contexts=contexts)
    trainer = ERATrainer(
        policy,
        reference,
        ProteinTarget(protein, energy),
        temperature=args.temperature,
        gamma=args.gamma,
        pairs=args.pairs,
        lr=args.lr,
        seed=args.seed,
        eval_samples=args.eval_samples,
        eval_contexts=args.eval_contexts if conditional else 1,
        log_every=args.log_every,
        identity={"structure": source, "model": args.model, "blocks": list(args.blocks)},
    )
    before = trainer.evaluate(derive_seed(args.seed, 0, 0x6576616C))
    print(f"start: median U {before[1]:.1f} kJ/mol, MH acceptance {before[2]:.4f}")
    history = trainer.train(
        args.steps,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        progress=True,
    )
    seconds = time.perf_counter() - start
    aligned = policy.model
    aligned.provenance = {
        "base": model.provenance,
        "era": {
            "command": "pyslice train --era -- " + " ".join(sys.argv[1:] if argv is None else argv),
            "structure": source,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
            "start": {"median_energy": before[1], "acceptance": before[2]},
            "history": [vars(entry) for entry in history],
            "seconds": round(seconds, 1),
            "torch": torch.__version__,
        },
    }
    aligned.save(args.out)
    print(json.dumps(aligned.provenance["era"]["history"][-1:], indent=1))
    print(f"ERA: {trainer.step} steps in {seconds:.0f} s; wrote {args.out}")
    return 0


def _checkpoint_contexts(path: str | None) -> torch.Tensor | None:
    """The context states saved in an ERA checkpoint of a conditional policy (so a resumed run
    aligns on the same states), or None."""
    if path is None or not Path(path).exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("model", {}) if isinstance(payload, dict) else {}
    contexts = state.get("contexts")
    return contexts if isinstance(contexts, torch.Tensor) else None


if __name__ == "__main__":
    raise SystemExit(main())
