"""Maximum-likelihood training of the side-chain transformer, its validation NLL, and the recipe
that trains and saves a model (``pyslice train ml``).

Training (:func:`train_ml`) is maximum likelihood on chi angles of deposited structures: each batch
takes random proteins (spatial crops of ``max_len`` residues around a random centre), masks each
residue with chis with probability r (r uniform per crop, all-masked 15 % of the time) and
minimises -log q of the masked residues' experimental chis (mean per masked residue, or per
crop). Noise on the backbone atoms, phi/psi and context chis, dropout, weight decay and early
stopping on the validation NLL keep the model from memorising the ~200 training structures (which
it does within a few hundred steps without them). Only residues whose chi atoms were all deposited
with B <= 40 are targets or known context; others enter as masked. Data:
:func:`~pyslice.models.transformer.default_datasets`. The shipped model is trained on experimental
structures only.

Measured limits of the shipped model: context lowers the validation NLL by only ~0.01 nats per
residue (the side-chain coupling is learned weakly), and in independence MH against amber14 in
vacuum its block proposals are accepted ~12-17 % of the time for one residue, ~0.2-1 % for four
and not measurably for sixteen (``benchmarks/acceptance.py``): proposals of several residues
mostly clash. Fine-tuned for a few minutes on the lower-energy half of a sampler run of the
structure (energy-filtered sampler data, the published recipe's second stage:
:func:`~pyslice.models.transformer.records_from_ensemble`, ``pyslice train ml --init ... --sampled
...``), it learns that structure's packing: acceptance 0.31-0.32 for one residue, 0.05-0.07 for
four and 0.3-0.5 % for sixteen on bpti and t4-lysozyme, where the rotamer library had none of
38,400 accepted. ERA (:mod:`~pyslice.models.transformer.align`) aligns the block conditionals
with one structure's Boltzmann distribution from energies alone.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyslice import _checks
from pyslice._random import derive_seed
from pyslice.geometry.angles import wrap_angle
from pyslice.io.files import atomic_write
from pyslice.models.transformer.data import (
    VALIDATION_DOMAINS,
    ChiDataset,
    ProteinRecord,
    TokenBatch,
    default_datasets,
    padded_chi,
    sampled_records,
)
from pyslice.models.transformer.model import FORMAT, SideChainTransformer

__all__ = ["evaluate_nll", "train_ml", "train_transformer"]


def _crop(record: ProteinRecord, max_len: int, gen: torch.Generator) -> ProteinRecord:
    """At most ``max_len`` tokens: the nearest (C-alpha distance) to a random centre."""
    n = len(record)
    if n <= max_len:
        return record
    ca = torch.nan_to_num(record.backbone[:, 1], nan=1e3)
    centre = int(torch.randint(n, (1,), generator=gen))
    dist = (ca - ca[centre]).norm(dim=-1)
    index = torch.sort(torch.topk(dist, max_len, largest=False).indices).values
    return record.subset(index)


def _make_batch(
    records: Sequence[ProteinRecord],
    gen: torch.Generator,
    mask_rate: tuple[float, float],
    full_mask_fraction: float,
) -> tuple[TokenBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, chi (B, L, 4), known (B, L), targets (B, L), pi-periodic (B, L, 4)) with a random
    mask per protein; at least one target per protein that has any data."""
    batch = TokenBatch.from_records(records)
    b, length = batch.aa.shape
    chi, ok, periodic = padded_chi(records, batch.aa)
    lo, hi = mask_rate
    rate = lo + (hi - lo) * torch.rand(b, 1, generator=gen)
    full = torch.rand(b, 1, generator=gen) < full_mask_fraction
    rate = torch.where(full, 1.0, rate)
    masked = (torch.rand(b, length, generator=gen) < rate) & batch.has_chi
    targets = masked & ok
    # Guarantee a target: the first data residue in a random order, where none was drawn.
    keys = torch.rand(b, length, generator=gen) + ok.to(torch.float32)
    pick = keys.argmax(1)
    none = ~targets.any(1) & ok.any(1)
    targets[none, pick[none]] = True
    masked = masked | targets
    known = batch.has_chi & ok & ~masked
    return batch, chi, known, targets, periodic


def _augment(
    batch: TokenBatch, chi: torch.Tensor, gen: torch.Generator, noise: tuple[float, float]
) -> tuple[TokenBatch, torch.Tensor]:
    """Training noise against memorising structures: Gaussian noise of ``noise[0]`` nm on the
    backbone atoms, ``noise[1]`` rad on phi, psi and the context chis (targets stay exact)."""
    coord, angle = noise
    if coord <= 0 and angle <= 0:
        return batch, chi
    backbone = batch.backbone + coord * torch.randn(batch.backbone.shape, generator=gen)
    phi = batch.phi + angle * torch.randn(batch.phi.shape, generator=gen)
    psi = batch.psi + angle * torch.randn(batch.psi.shape, generator=gen)
    noisy = chi + angle * torch.randn(chi.shape, generator=gen)
    out = TokenBatch(
        batch.aa, batch.chain, batch.position, backbone, wrap_angle(phi), wrap_angle(psi),
        batch.has_chi, batch.padding,
    )  # fmt: skip
    return out, wrap_angle(noisy)


def _nll(
    model: SideChainTransformer,
    batch: TokenBatch,
    chi: torch.Tensor,
    known: torch.Tensor,
    targets: torch.Tensor,
    *,
    context_chi: torch.Tensor | None = None,
    per_crop: bool = False,
) -> tuple[torch.Tensor, int]:
    """Mean -log q over the target residues (nats per residue; with ``per_crop`` the mean of each
    crop's mean, so context-rich crops with few targets weigh as much as all-masked ones) and
    their number. ``context_chi``: the chis the model sees (default ``chi``)."""
    params = model(batch, chi if context_chi is None else context_chi, known, targets)
    aa = batch.aa[params.rows, params.tokens]
    joint = model.component_log_prob(params, chi[params.rows, params.tokens], aa)
    log_q = torch.logsumexp(joint, dim=1)
    if not per_crop:
        return -log_q.mean(), int(log_q.shape[0])
    b = targets.shape[0]
    sums = log_q.new_zeros(b).index_add(0, params.rows, log_q)
    counts = torch.bincount(params.rows, minlength=b).to(log_q.dtype)
    present = counts > 0
    return -(sums[present] / counts[present]).mean(), int(log_q.shape[0])


def evaluate_nll(
    model: SideChainTransformer,
    dataset: Sequence[ProteinRecord],
    *,
    mask_rate: float = 1.0,
    context: bool = True,
    seed: int = 0,
    max_len: int = 1024,
) -> float:
    """Mean -log q (nats per residue) of a random ``mask_rate`` fraction of each protein's data
    residues (fixed by ``seed``; at least one per protein), given the other residues' chis
    (``context=True``) or given the backbone only (``context=False``: every residue masked).
    Proteins longer than ``max_len`` are cropped around a random centre."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for record in dataset:
            record = _crop(record, max_len, gen)
            batch, chi, known, targets, _ = _make_batch([record], gen, (mask_rate, mask_rate), 0.0)
            if not bool(targets.any()):
                continue
            if not context:
                known = torch.zeros_like(known)
            loss, n = _nll(model, batch, chi, known, targets)
            total += float(loss) * n
            count += n
    model.train(was)
    return total / max(count, 1)


def train_ml(
    model: SideChainTransformer,
    dataset: Sequence[ProteinRecord],
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    mask_rate: tuple[float, float] = (0.02, 1.0),
    full_mask_fraction: float = 0.15,
    max_len: int = 128,
    weight_decay: float = 0.01,
    noise: tuple[float, float] = (0.0, 0.0),
    per_crop: bool = False,
    keep_best: bool = False,
    warmup: int = 100,
    checkpoint_every: int = 100,
    val_dataset: Sequence[ProteinRecord] | None = None,
    val_every: int = 200,
    log_every: int = 50,
    log: Callable[[str], None] | None = print,
) -> dict[str, list]:
    """Maximum-likelihood training: minimise -log q of randomly masked residues' chis.

    Each step draws ``batch_size`` proteins (with replacement), crops each to ``max_len`` tokens
    around a random centre, masks each residue with chis with probability r ~ U(mask_rate) (1 for
    a ``full_mask_fraction`` of the crops) and takes one AdamW step (``lr`` with linear warm-up
    over ``warmup`` steps, then cosine decay to 0 at ``steps``; gradients clipped at norm 1).
    ``noise = (nm, rad)``: Gaussian noise on the backbone atoms and on phi, psi and context chis
    (targets exact), against memorising the few hundred training structures. ``per_crop``:
    average the loss per crop first (context-rich crops, which have few targets, count as much as
    all-masked ones). ``keep_best`` (needs ``val_dataset``): at the end, restore the weights of
    the validation point with the lowest mean of the all-masked and the 10 %-with-context NLL
    (early stopping; that validation NLL is then slightly optimistic).

    Randomness of step t (batch, masks, dropout) is keyed by (seed, t) alone, so a run resumed
    from ``checkpoint`` (written atomically every ``checkpoint_every`` steps and at the end, with
    the optimiser state) continues bit for bit. ``resume=False`` starts afresh (overwriting it).

    Returns the history: ``{"step", "loss"}`` (mean training loss of each logging window) and,
    with ``val_dataset``, ``{"val_step", "val_nll", "val_nll_10", "val_nll_10_context"}``:
    validation NLL per residue of all residues with all masked, and of a fixed 10 % of the
    residues without and with the other 90 % as context (:func:`evaluate_nll`).
    """
    if not isinstance(model, SideChainTransformer):
        raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
    steps = _checks.check_int("steps", steps, low=0)
    batch_size = _checks.check_int("batch_size", batch_size, low=1)
    lr = _checks.check_float("lr", lr, positive=True)
    seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
    checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, low=1)
    data = [r for r in dataset if bool(r.chi_ok.any())]
    if not data:
        raise ValueError("dataset holds no residue with chi data")
    lo, hi = (float(mask_rate[0]), float(mask_rate[1]))
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(
            f"mask_rate must be (low, high) with 0 <= low <= high <= 1, got {mask_rate}"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_nll": [],
                                "val_nll_10": [], "val_nll_10_context": []}  # fmt: skip
    settings = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "mask_rate": [lo, hi], "full_mask_fraction": full_mask_fraction, "max_len": max_len,
        "weight_decay": weight_decay, "warmup": warmup, "n_proteins": len(data),
        "noise": [float(noise[0]), float(noise[1])], "per_crop": bool(per_crop),
        "keep_best": bool(keep_best),
    }  # fmt: skip
    if keep_best and val_dataset is None:
        raise ValueError("keep_best needs a val_dataset")
    best: dict[str, Any] = {"score": math.inf, "step": 0, "model": None}
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and resume and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT + "-training" or state.get("settings") != settings:
            raise ValueError(
                f"checkpoint: {path} was written by a different training run; pass resume=False "
                "or another path"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        best = state["best"]
        start = int(state["step"])
        if log is not None:
            log(f"resumed from {path} at step {start}")

    def schedule(t: int) -> float:
        if t < warmup:
            return lr * (t + 1) / warmup
        return lr * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))

    def save(t: int) -> None:
        if path is None:
            return
        payload = {
            "format": FORMAT + "-training",
            "settings": settings,
            "step": t,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, "wb", lambda f: f.write(buffer.getvalue()))

    window: list[float] = []
    t0 = time.time()
    model.train()
    with torch.random.fork_rng(devices=[]):
        for t in range(start, steps):
            torch.manual_seed(derive_seed(seed, t, 0x64726F) & ((1 << 63) - 1))
            gen = torch.Generator().manual_seed(derive_seed(seed, t) & ((1 << 63) - 1))
            picks = torch.randint(len(data), (batch_size,), generator=gen).tolist()
            records = [_crop(data[i], max_len, gen) for i in picks]
            batch, chi, known, targets, _ = _make_batch(records, gen, (lo, hi), full_mask_fraction)
            batch, context_chi = _augment(batch, chi, gen, noise)
            for group in optimizer.param_groups:
                group["lr"] = schedule(t)
            loss, _ = _nll(
                model, batch, chi, known, targets, context_chi=context_chi, per_crop=per_crop
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window.append(float(loss.detach()))
            done = t + 1
            if done % log_every == 0 or done == steps:
                history["step"].append(done)
                history["loss"].append(sum(window) / len(window))
                window = []
                if log is not None:
                    log(
                        f"step {done}/{steps} loss {history['loss'][-1]:.4f} "
                        f"lr {schedule(t):.2e} ({time.time() - t0:.0f} s)"
                    )
            if val_dataset is not None and (done % val_every == 0 or done == steps):
                v_all = evaluate_nll(model, val_dataset, mask_rate=1.0, seed=seed)
                v_10 = evaluate_nll(model, val_dataset, mask_rate=0.1, context=False, seed=seed)
                v_ctx = evaluate_nll(model, val_dataset, mask_rate=0.1, seed=seed)
                history["val_step"].append(done)
                history["val_nll"].append(v_all)
                history["val_nll_10"].append(v_10)
                history["val_nll_10_context"].append(v_ctx)
                score = 0.5 * (v_all + v_ctx)
                if keep_best and score < best["score"]:
                    best = {
                        "score": score,
                        "step": done,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
                if log is not None:
                    log(
                        f"step {done} val NLL: all masked {v_all:.4f}; 10% of residues "
                        f"{v_10:.4f} without context, {v_ctx:.4f} with the other 90%"
                    )
            if done % checkpoint_every == 0 or done == steps:
                save(done)
    if keep_best and best["model"] is not None:
        model.load_state_dict(best["model"])
        if log is not None:
            log(f"kept the weights of step {best['step']} (best validation)")
    history["best_step"] = [best["step"]] if keep_best else []
    model.eval()
    model.provenance = {
        **model.provenance,
        "training": settings,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return history


def train_transformer(
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    max_len: int = 128,
    d_model: int = 128,
    n_heads: int = 4,
    n_layers: int = 3,
    d_ff: int = 256,
    n_components: int = 16,
    dropout: float = 0.1,
    weight_decay: float = 0.01,
    noise: tuple[float, float] = (0.0, 0.0),
    per_crop: bool = False,
    keep_best: bool = False,
    val_every: int = 250,
    half: bool = False,
    init: str | os.PathLike | None = None,
    sampled: Sequence[tuple[str | os.PathLike, str | os.PathLike]] = (),
    energy_cut: float | None = None,
    keep_fraction: float | None = None,
    max_records: int | None = None,
    structures: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> SideChainTransformer:
    """Train a model by :func:`train_ml` and save it to ``out`` with its provenance (the recipe
    of the shipped model, ``pyslice train ml``); returns the trained model.

    Data: the ``structures/top240`` files of ``data_dir`` for training and the held-out
    validation structures (:func:`~pyslice.models.transformer.default_datasets`; unless
    ``structures=False``), plus the energy-filtered draws of every ``(structure, ensemble)`` pair
    in ``sampled`` (:func:`~pyslice.models.transformer.sampled_records` with ``energy_cut``,
    ``keep_fraction``, ``max_records``). The model is new (``d_model``, ``n_heads``,
    ``n_layers``, ``d_ff``, ``n_components``, ``dropout``; torch seeded with ``seed``) or read
    from ``init`` (fine-tuning; its architecture). The other arguments go to :func:`train_ml`.
    With validation data the validation NLLs of the final weights are recorded in the
    provenance (scored as stored: rounded to float16 when ``half``). ``command``: the command
    line to record; ``log``: where messages go (None: nowhere).
    """
    say = log if log is not None else (lambda message: None)
    t0 = time.time()
    if structures:
        train, val = default_datasets(data_dir, cache_dir=cache_dir, progress=log is not None)
    else:
        train, val = ChiDataset(), None
    extra = sampled_records(
        sampled,
        energy_cut=energy_cut,
        keep_fraction=keep_fraction,
        max_records=max_records,
        seed=seed,
        log=log,
    )
    train = ChiDataset([*train, *extra])
    say(
        f"data: {len(train)} training records ({train.n_residues} residues with chi data; "
        f"{len(extra)} sampled), {len(val) if val else 0} validation"
        f"{f' ({val.n_residues})' if val else ''}; read in {time.time() - t0:.0f} s"
    )
    torch.manual_seed(seed)
    if init is not None:
        model = SideChainTransformer.load(init)
    else:
        model = SideChainTransformer(
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ff=d_ff,
            n_components=n_components,
            dropout=dropout,
        )
    base_provenance = dict(model.provenance)
    t1 = time.time()
    history = train_ml(
        model,
        train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint=checkpoint,
        max_len=max_len,
        weight_decay=weight_decay,
        noise=noise,
        per_crop=per_crop,
        keep_best=keep_best,
        val_dataset=val,
        val_every=val_every,
        log=log,
    )
    seconds = time.time() - t1
    recorded = {"command": command} if command else {}
    if val is None:
        model.provenance = {
            "base": base_provenance,
            **recorded,
            "train_data": [f"{a} {b}" for a, b in sampled],
            "train_records": len(train),
            "history": {"step": history["step"], "loss": history["loss"]},
            "train_seconds": round(seconds),
            "torch": str(torch.__version__),
        }
        model.save(out, half=half)
        say(json.dumps({k: v for k, v in model.provenance.items() if k != "base"}, indent=1))
        return model
    if half:  # score the weights as they are stored
        model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in model.state_dict().items()})  # fmt: skip
    final = {
        "val_nll_all_masked": evaluate_nll(model, val, mask_rate=1.0, seed=seed),
        "val_nll_10pct_no_context": evaluate_nll(
            model, val, mask_rate=0.1, context=False, seed=seed
        ),
        "val_nll_10pct_context": evaluate_nll(model, val, mask_rate=0.1, seed=seed),
    }
    if init is not None:
        model.provenance = {}  # the starting model's goes under "base"
    model.provenance.update(
        {
            **recorded,
            "train_data": "structures/top240 (all files that read)",
            "sampled_data": [f"{a} {b}" for a, b in sampled],
            **({"base": base_provenance} if init is not None else {}),
            "validation_data": [*VALIDATION_DOMAINS, "bpti", "t4-lysozyme"],
            "train_proteins": len(train),
            "train_residues": train.n_residues,
            **final,
            "kept_step": history["best_step"][0] if history["best_step"] else steps,
            "history": {k: history[k] for k in ("val_step", "val_nll", "val_nll_10_context")},
            "train_seconds": round(seconds),
            "torch": str(torch.__version__),
        }
    )
    model.save(out, half=half)
    say(json.dumps(model.provenance, indent=1))
    return model
