"""Energy Rank Alignment of the side-chain transformer with one structure (``pyslice train era``).

:class:`~pyslice.models.transformer.TransformerPolicy` makes the transformer a *conditional*
policy, as the sampler uses it: the context x is a sampler state with a random block of residues
masked, y the block's chis, and ERA (:mod:`pyslice.models.era`) aligns q(y | x) with
exp(-beta U(x, y)) in every context, which is the target of independence block moves.
:func:`align_transformer` takes the contexts from a short random-walk run of the structure
(:func:`~pyslice.models.era.sampler_contexts`) and, by default, aligns blocks of one residue. Why
one: on bpti, aligning blocks of 1, 4 and 16 residues at once made one-residue proposals *worse*
(acceptance 0.12 -> 0.06 after 300 steps), because the reference's multi-residue draws mostly
clash (1e4 to 1e15 kJ/mol), so their preferences are all-or-nothing and their gradients swamp the
informative pairs. Aligned on single residues, acceptance rose about 2x for one residue and 5-9x
for four (``benchmarks/results/era-bpti-cpu-x86_64-2core.json``). An aligned model is specific to
its structure, force field and temperature.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pyslice._random import derive_seed
from pyslice.energy.forcefield import ForceFieldEnergy
from pyslice.mcmc.targets import ProteinTarget
from pyslice.models.era.trainer import ERATrainer, sampler_contexts
from pyslice.models.transformer.model import SideChainTransformer
from pyslice.models.transformer.policy import TransformerPolicy
from pyslice.structure.protein import Protein

__all__ = ["align_transformer"]


def align_transformer(
    protein: Protein,
    out: str | os.PathLike,
    *,
    source: str,
    model: str | os.PathLike | None = None,
    block_sizes: Sequence[int] | None = (1,),
    context_chains: int = 256,
    context_steps: int = 500,
    steps: int = 800,
    pairs: int = 128,
    lr: float = 1e-4,
    gamma: float = 0.0,
    temperature: float = 300.0,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    log_every: int = 100,
    eval_samples: int = 512,
    eval_contexts: int = 16,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> SideChainTransformer:
    """Align a transformer with exp(-U/kT) of ``protein`` (amber14, vacuum) by ERA and save it
    to ``out``; returns the aligned model.

    ``source`` names the structure (recorded in the provenance and the checkpoint); ``model``:
    the starting model file (None: the shipped one). ``block_sizes``: the residue block sizes the
    conditional policy is aligned for, in contexts from ``context_chains`` random-walk chains
    after ``context_steps`` steps (:func:`~pyslice.models.era.sampler_contexts`); None: an
    unconditional policy (whole side-chain sets from backbone and sequence). ``steps``,
    ``pairs``, ``lr``, ``gamma``, ``temperature``, ``seed``, ``log_every``, ``eval_samples`` and
    ``eval_contexts`` go to :class:`~pyslice.models.era.ERATrainer`. With ``checkpoint`` the run
    resumes from it (its context states too) when it exists; a checkpoint of another structure,
    model or block setting is refused. ``command``: the command line to record; ``log``: where
    messages go (None: nowhere).
    """
    settings = {
        "model": None if model is None else str(model),
        "block_sizes": None if block_sizes is None else list(block_sizes),
        "context_chains": context_chains,
        "context_steps": context_steps,
        "steps": steps,
        "pairs": pairs,
        "lr": lr,
        "gamma": gamma,
        "temperature": temperature,
        "seed": seed,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "eval_samples": eval_samples,
        "eval_contexts": eval_contexts,
    }
    say = log if log is not None else (lambda message: None)
    start_model = (
        SideChainTransformer.default() if model is None else SideChainTransformer.load(model)
    )
    energy = ForceFieldEnergy(protein)
    start = time.perf_counter()
    contexts = None
    if block_sizes is not None:
        contexts = _checkpoint_contexts(checkpoint)
        if contexts is None:
            contexts = sampler_contexts(
                protein,
                energy,
                n_chains=context_chains,
                steps=context_steps,
                temperature=temperature,
                seed=seed,
            )
        say(f"contexts: {contexts.shape[0]} states ({time.perf_counter() - start:.0f} s)")
    reference = TransformerPolicy(start_model, protein, block_sizes=block_sizes, contexts=contexts)
    policy = TransformerPolicy(
        copy.deepcopy(start_model), protein, block_sizes=block_sizes, contexts=contexts
    )
    trainer = ERATrainer(
        policy,
        reference,
        ProteinTarget(protein, energy),
        temperature=temperature,
        gamma=gamma,
        pairs=pairs,
        lr=lr,
        seed=seed,
        eval_samples=eval_samples,
        eval_contexts=eval_contexts if block_sizes is not None else 1,
        log_every=log_every,
        # what a resumed run must share with the checkpoint ([0]: the unconditional policy)
        identity={
            "structure": source,
            "model": settings["model"],
            "blocks": [0] if block_sizes is None else list(block_sizes),
        },
    )
    before = trainer.evaluate(derive_seed(seed, 0, 0x6576616C))
    say(f"start: median U {before[1]:.1f} kJ/mol, MH acceptance {before[2]:.4f}")
    history = trainer.train(
        steps, checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=log is not None
    )
    seconds = time.perf_counter() - start
    aligned = policy.model
    aligned.provenance = {
        "base": start_model.provenance,
        "era": {
            **({"command": command} if command else {}),
            "structure": source,
            "settings": settings,
            "start": {"median_energy": before[1], "acceptance": before[2]},
            "history": [vars(entry) for entry in history],
            "seconds": round(seconds, 1),
            "torch": torch.__version__,
        },
    }
    aligned.save(out)
    say(json.dumps(aligned.provenance["era"]["history"][-1:], indent=1))
    say(f"ERA: {trainer.step} steps in {seconds:.0f} s; wrote {out}")
    return aligned


def _checkpoint_contexts(path: str | os.PathLike | None) -> torch.Tensor | None:
    """The context states saved in an ERA checkpoint of a conditional policy (so a resumed run
    aligns on the same states), or None."""
    if path is None or not Path(path).exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("model", {}) if isinstance(payload, dict) else {}
    contexts = state.get("contexts")
    return contexts if isinstance(contexts, torch.Tensor) else None
