"""Files people open: structures (multi-model PDB), a trajectory (DCD), summary.json, report.png.

Every file is written atomically (a temporary file renamed into place), so an interrupted run
never leaves a half-written ensemble.

Representative conformations: k-means on (cos chi, sin chi) of a subsample of the draws (k-means++
starts, fixed seed); each cluster is represented by its member closest to the centre, ordered by
population. With the lowest-energy draw they make the models of ``structures.pdb``.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyslice.io.files import atomic_write, prepend_lines
from pyslice.mcmc.ensemble import Ensemble

__all__ = [
    "Conformation",
    "model_remarks",
    "plot_report",
    "representatives",
    "write_outputs",
]

#: report.png size in pixels (width, height): figure inches x dpi.
REPORT_SIZE = (1600, 1200)
_REPORT_DPI = 100
_MAX_CHI_PANELS = 24


@dataclass
class Conformation:
    """One draw singled out for the structures file."""

    kind: str  # "lowest_energy" or "representative"
    draw: int
    chain: int
    energy: float
    population: float  # fraction of draws in its cluster (1.0 for lowest_energy: n/a)


def _flat(ensemble: Ensemble) -> tuple[torch.Tensor, torch.Tensor]:
    return ensemble.chi.reshape(-1, ensemble.n_chi), ensemble.energy.reshape(-1)


def representatives(
    ensemble: Ensemble, k: int = 5, max_points: int = 20000, seed: int = 0, iterations: int = 30
) -> list[Conformation]:
    """Up to ``k`` representative draws (see the module docstring), most populated first."""
    chi, energy = _flat(ensemble)
    if chi.shape[0] == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(chi.shape[0], generator=gen)[:max_points]
    x = chi[pick].to(torch.float64)
    points = torch.cat([torch.cos(x), torch.sin(x)], dim=1)
    k = min(k, points.shape[0])
    centres = points[torch.randint(points.shape[0], (1,), generator=gen)]
    while centres.shape[0] < k:  # k-means++ starts
        d2 = torch.cdist(points, centres).min(1).values ** 2
        if float(d2.sum()) == 0.0:
            break
        centres = torch.cat([centres, points[torch.multinomial(d2, 1, generator=gen)]])
    for _ in range(iterations):
        label = torch.cdist(points, centres).argmin(1)
        updated = torch.stack(
            [
                points[label == c].mean(0) if bool((label == c).any()) else centres[c]
                for c in range(centres.shape[0])
            ]
        )
        if torch.allclose(updated, centres):
            break
        centres = updated
    label = torch.cdist(points, centres).argmin(1)
    population = torch.bincount(label, minlength=centres.shape[0]).to(torch.float64)
    population /= population.sum()
    out = []
    for c in torch.argsort(population, descending=True).tolist():
        members = torch.nonzero(label == c).flatten()
        if members.numel() == 0:
            continue
        best = members[torch.cdist(points[members], centres[c : c + 1]).argmin()]
        flat = int(pick[best])
        draw, chain = divmod(flat, ensemble.n_chains)
        out.append(
            Conformation("representative", draw, chain, float(energy[flat]), float(population[c]))
        )
    return out


def _lowest(ensemble: Ensemble) -> Conformation | None:
    _, energy = _flat(ensemble)
    if energy.numel() == 0:
        return None
    flat = int(torch.argmin(energy))
    draw, chain = divmod(flat, ensemble.n_chains)
    return Conformation("lowest_energy", draw, chain, float(energy[flat]), float("nan"))


def write_outputs(
    ensemble: Ensemble,
    protein: Any,
    out_dir: str | os.PathLike,
    *,
    proposal: Any = None,
    n_representatives: int = 5,
    max_frames: int = 2000,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write ensemble.npz, structures.pdb, trajectory.dcd, summary.json and report.png into
    ``out_dir`` (created if missing); returns (name -> path, the summary written).

    structures.pdb: model 1 the lowest-energy draw, then the representatives; REMARK lines at
    the top say which model is which, with energies and cluster populations (summary.json lists
    the same). trajectory.dcd: chain 0's draws in order (thinned to at most ``max_frames``
    frames): a real Markov-chain trajectory to play in a viewer. ``progress`` prints a line per
    file on stdout.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("ensemble.npz", "structures.pdb", "trajectory.dcd", "summary.json", "report.png")
    paths = {name: out / name for name in names}

    def say(text: str) -> None:
        if progress:
            print(f"  {text}", flush=True)

    ensemble.save(paths["ensemble.npz"])
    say(f"{paths['ensemble.npz']}: {ensemble.n_draws} draws x {ensemble.n_chains} chains")
    summary = ensemble.summary()
    say("convergence diagnostics computed")
    picked = [c for c in [_lowest(ensemble), *representatives(ensemble, n_representatives)] if c]
    if picked:
        chi = torch.stack([ensemble.chi[c.draw, c.chain] for c in picked])
        protein.to_pdb(paths["structures.pdb"], protein.build(chi.to(torch.float64)))
        prepend_lines(paths["structures.pdb"], model_remarks(picked))
        say(f"{paths['structures.pdb']}: {len(picked)} models")
        stride = max(1, math.ceil(ensemble.n_draws / max_frames))
        frames = ensemble.chi[::stride, 0].to(torch.float64)
        protein.to_dcd(paths["trajectory.dcd"], protein.build(frames))
        say(f"{paths['trajectory.dcd']}: {frames.shape[0]} frames of chain 0")
    else:
        del paths["structures.pdb"], paths["trajectory.dcd"]
    summary["structures"] = [
        {
            "model": m + 1,
            "kind": c.kind,
            "draw": c.draw,
            "chain": c.chain,
            "energy": c.energy,
            "population": None if math.isnan(c.population) else c.population,
        }
        for m, c in enumerate(picked)
    ]
    summary.update(extra or {})
    text = json.dumps(summary, indent=2, allow_nan=False, default=_json_default)
    atomic_write(paths["summary.json"], "w", lambda file: file.write(text + "\n"))
    say(f"{paths['summary.json']}")
    plot_report(ensemble, paths["report.png"], proposal=proposal)
    say(f"{paths['report.png']}")
    return paths, summary


def model_remarks(picked: list[Conformation]) -> list[str]:
    """PDB REMARK lines (free-text REMARK 999, at most 80 columns) saying what each model of
    structures.pdb is: the lowest-energy draw or a cluster representative with its population."""
    lines = ["REMARK 999 PYSLICE ENSEMBLE: WHAT EACH MODEL OF THIS FILE IS"]
    rank = 0
    for m, c in enumerate(picked, start=1):
        if c.kind == "lowest_energy":
            what = "lowest-energy draw"
        else:
            rank += 1
            what = f"cluster representative {rank} ({100.0 * c.population:.1f}% of draws)"
        lines.append(f"REMARK 999 MODEL {m}: {what}")
        lines.append(f"REMARK 999   draw {c.draw}, chain {c.chain}, U = {c.energy:.2f} kJ/mol")
    return lines


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot_report(ensemble: Ensemble, path: str | os.PathLike, proposal: Any = None) -> None:
    """A one-page PNG (``REPORT_SIZE`` pixels): per-chi histograms with the proposal's marginal
    density overlaid (the first 24 chi columns), the energy trace (mean and spread over chains),
    and acceptance and R-hat per residue."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    width, height = REPORT_SIZE
    figure = Figure(figsize=(width / _REPORT_DPI, height / _REPORT_DPI), dpi=_REPORT_DPI)
    grid = figure.add_gridspec(4, 1, height_ratios=[3.2, 1, 1, 1], hspace=0.55)
    n_panels = min(ensemble.n_chi, _MAX_CHI_PANELS)
    columns = 8
    rows = max(1, math.ceil(n_panels / columns))
    top = grid[0].subgridspec(rows, columns, hspace=0.7, wspace=0.35)
    angles = np.linspace(-math.pi, math.pi, 361)
    chi = ensemble.chi.reshape(-1, ensemble.n_chi).numpy()
    for j in range(n_panels):
        ax = figure.add_subplot(top[j // columns, j % columns])
        if chi.shape[0]:
            ax.hist(
                np.degrees(chi[:, j]),
                bins=36,
                range=(-180, 180),
                density=True,
                color="#4c72b0",
                alpha=0.8,
            )
        if proposal is not None:
            try:
                density = proposal.column_log_prob(torch.from_numpy(angles), j).exp().cpu()
                ax.plot(
                    np.degrees(angles), density.numpy() * math.pi / 180.0, color="#dd8452", lw=1.2
                )
            except NotImplementedError:
                pass
        ax.set_title(ensemble.chi_names[j], fontsize=7)
        ax.set_xticks([-180, 0, 180])
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    if ensemble.n_chi > n_panels:
        figure.text(
            0.99, 0.985, f"first {n_panels} of {ensemble.n_chi} chi angles", ha="right", fontsize=8
        )

    ax = figure.add_subplot(grid[1])
    energy = ensemble.energy.numpy()
    if energy.size:
        steps = np.arange(energy.shape[0])
        mean = energy.mean(1)
        low, high = np.percentile(energy, [10, 90], axis=1)
        ax.fill_between(steps, low, high, color="#4c72b0", alpha=0.25, lw=0)
        ax.plot(steps, mean, color="#4c72b0", lw=1.0)
    ax.set_xlabel("draw", fontsize=8)
    ax.set_ylabel("U (kJ/mol)", fontsize=8)
    ax.set_title("energy: mean and 10-90% over chains", fontsize=9)
    ax.tick_params(labelsize=7)

    groups = np.arange(len(ensemble.group_names))
    ax = figure.add_subplot(grid[2])
    for k, (name, rates) in enumerate(ensemble.group_acceptance.items()):
        ax.bar(
            groups + 0.8 * k / max(1, len(ensemble.group_acceptance)),
            rates.numpy(),
            width=0.8 / max(1, len(ensemble.group_acceptance)),
            label=name,
        )
    ax.set_ylabel("acceptance", fontsize=8)
    ax.set_title("acceptance per residue and move", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    _residue_ticks(ax, ensemble.group_names)

    ax = figure.add_subplot(grid[3])
    rhat = ensemble.rhat() if ensemble.n_draws >= 4 else np.full(ensemble.n_chi, np.nan)
    per_group = np.full(len(groups), np.nan)
    for j, g in enumerate(ensemble.chi_group.tolist()):
        if np.isfinite(rhat[j]):
            per_group[g] = np.fmax(per_group[g], rhat[j])
    ax.bar(groups, per_group, color="#55a868")
    ax.axhline(1.01, color="k", lw=0.8, ls="--")
    ax.set_ylabel("R-hat (max)", fontsize=8)
    ax.set_title("split R-hat per residue (dashed: 1.01)", fontsize=9)
    _residue_ticks(ax, ensemble.group_names)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_REPORT_DPI)
    atomic_write(path, "wb", lambda file: file.write(buffer.getvalue()))


def _residue_ticks(ax: Any, names: list[str]) -> None:
    step = max(1, math.ceil(len(names) / 40))
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=90, fontsize=6)
    ax.tick_params(axis="y", labelsize=7)
