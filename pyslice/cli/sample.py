"""``pyslice sample``, the main job: Boltzmann-sample the side chains of a structure (or of a
built-in peptide) and write the ensemble, structures, a trajectory, a summary and a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pyslice.cli.common import (
    DEFAULT_SEQUENCE,
    add_command,
    default_device,
    device_name,
    load_structure,
    make_proposal,
    non_negative_int,
    output_folder,
    positive_int,
)

#: The files a run writes (and whose leftover temporaries a new run removes).
OUTPUTS = ("ensemble.npz", "structures.pdb", "trajectory.dcd", "summary.json", "report.png")


def _check_model(path: str) -> None:
    """Fail early (before the structure is read) on a --model file that is not a transformer."""
    from pyslice.models.transformer import SideChainTransformer

    if not Path(path).is_file():
        raise FileNotFoundError(f"--model: no such file: {path}")
    try:
        SideChainTransformer.load(path)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"--model {path}: not a pyslice transformer file ({type(exc).__name__}: {first})"
        ) from None


def run(args: argparse.Namespace) -> int:
    from pyslice.energy import ForceFieldEnergy
    from pyslice.io.files import remove_stale_temporaries
    from pyslice.io.report import write_outputs
    from pyslice.mcmc import Sampler, SamplingInterrupted

    # Every option is checked before the (slow) structure reading.
    device = args.device
    if args.model is not None:
        if args.proposal != "transformer":
            raise ValueError("--model: a transformer file needs --proposal transformer")
        _check_model(args.model)
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0 kelvin, got {args.temperature}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    for name in (*OUTPUTS, checkpoint.name):
        remove_stale_temporaries(out / name)
    if args.restart and checkpoint.exists():
        checkpoint.unlink()
        print(f"--restart: removed {checkpoint}")

    forcefield = tuple(args.forcefield)
    protein = load_structure(args.structure, forcefield)
    n_movable = len({int(r) for r in protein.chi_index[:, 0]}) if protein.n_chi else 0
    print(
        f"structure: {protein.n_residues} residues, {protein.n_atoms} atoms; {n_movable} movable "
        f"residues with {protein.n_chi} chi angles"
    )
    energy = ForceFieldEnergy(protein, forcefield=forcefield, device=device)
    proposal = make_proposal(args.proposal, protein, energy.device, args.model)
    sampler = Sampler(
        protein,
        energy,
        proposal=proposal,
        temperature=args.temperature,
        n_chains=args.chains,
        seed=args.seed,
        device=device,
    )
    if checkpoint.exists():
        print(f"resuming from {checkpoint}")
    start = time.perf_counter()
    try:
        ensemble = sampler.run(
            args.steps,
            warmup=args.warmup,
            thin=args.thin,
            progress=not args.quiet,
            checkpoint=checkpoint,
        )
    except SamplingInterrupted as stop:
        print(
            f"pyslice: {stop}: run the same command again to resume it (--restart discards it)",
            file=sys.stderr,
        )
        return stop.exit_status
    except ValueError as error:
        if str(error).startswith("checkpoint:"):
            raise ValueError(f"{error} (or run again with --restart)") from None
        raise
    elapsed = time.perf_counter() - start
    done_here = sampler.steps_this_run * args.chains
    extra = {
        "input": args.structure or f"built-in peptide {DEFAULT_SEQUENCE}",
        "proposal": args.proposal,
        "model": args.model,
        "forcefield": list(forcefield),
        "device": str(device),
        "seconds": elapsed,
        "resumed_at_step": sampler.resumed_at,
        "chain_steps_per_second": done_here / max(elapsed, 1e-12),
    }
    print("writing the outputs ...", flush=True)
    paths, summary = write_outputs(
        ensemble, protein, out, proposal=sampler.proposal, extra=extra, progress=not args.quiet
    )
    checkpoint.unlink(missing_ok=True)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in ensemble.acceptance.items())
    print(f"sampled {ensemble.n_draws} draws x {ensemble.n_chains} chains in {elapsed:.1f} s")
    print(f"acceptance: {acc}")

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    print(
        f"R-hat max {fmt(summary['rhat_max'], '.3f')}, bulk ESS min "
        f"{fmt(summary['ess_bulk_min'], '.0f')}, mean energy "
        f"{fmt(summary['energy_mean'], '.1f')} kJ/mol"
    )
    if not summary["converged"]:
        print(
            f"NOT CONVERGED: {summary['convergence_problems']}. The ensemble is not yet a "
            "sample of the Boltzmann distribution: run more steps (--steps), more chains "
            "(--chains), or a learned proposal (--proposal library).",
            file=sys.stderr,
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "sample",
        help="Boltzmann-sample side chains (built-in peptide when no STRUCTURE is given)",
    )
    parser.add_argument(
        "structure",
        nargs="?",
        default=None,
        metavar="STRUCTURE",
        help="PDB or PDBx/mmCIF file (default: a built-in peptide)",
    )
    parser.add_argument("--chains", type=positive_int, default=256)
    parser.add_argument(
        "--steps", type=positive_int, default=500, help="recorded steps after warm-up"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=200, help="adaptation steps, not recorded"
    )
    parser.add_argument("--thin", type=positive_int, default=1)
    parser.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    parser.add_argument(
        "--proposal", choices=("uniform", "library", "transformer"), default="uniform"
    )
    parser.add_argument(
        "--forcefield",
        nargs="+",
        default=["amber14-all.xml"],
        help="OpenMM force-field XML files (default amber14-all.xml)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="transformer file for --proposal transformer (default: the shipped model; e.g. one "
        "aligned by pyslice train era)",
    )
    parser.add_argument("--device", type=device_name, default=default_device())
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", type=output_folder, default="pyslice-out", help="output folder")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard a checkpoint left in --out by an interrupted run instead of resuming it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
