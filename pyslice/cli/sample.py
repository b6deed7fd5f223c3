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
    checked_device,
    default_device,
    load_structure,
    make_proposal,
    non_negative_int,
    positive_int,
)


def run(args: argparse.Namespace) -> int:
    from pyslice.energy import ForceFieldEnergy
    from pyslice.io.report import write_outputs
    from pyslice.mcmc import Sampler

    device = checked_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if args.model is not None:
        if args.proposal != "transformer":
            raise ValueError("--model: a transformer file needs --proposal transformer")
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"--model: no such file: {args.model}")
    forcefield = tuple(args.forcefield)
    protein = load_structure(args.structure, forcefield)
    print(
        f"structure: {protein.n_residues} residues, {protein.n_atoms} atoms, "
        f"{protein.n_chi} chi angles in {len(protein.movable)} movable residues"
    )
    energy = ForceFieldEnergy(protein, forcefield=forcefield, device=device)
    proposal = make_proposal(args.proposal, protein, device, args.model)
    sampler = Sampler(
        protein,
        energy,
        proposal=proposal,
        temperature=args.temperature,
        n_chains=args.chains,
        seed=args.seed,
        device=device,
    )
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
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
    except KeyboardInterrupt:
        print(
            f"pyslice: interrupted; the run is saved in {checkpoint}: run the same command again "
            "to resume it",
            file=sys.stderr,
        )
        return 130
    elapsed = time.perf_counter() - start
    chain_steps = (args.steps + args.warmup) * args.chains
    extra = {
        "input": args.structure or f"built-in peptide {DEFAULT_SEQUENCE}",
        "proposal": args.proposal,
        "forcefield": list(forcefield),
        "device": str(device),
        "seconds": elapsed,
        "chain_steps_per_second": chain_steps / max(elapsed, 1e-12),
    }
    paths = write_outputs(ensemble, protein, out, proposal=sampler.proposal, extra=extra)
    checkpoint.unlink(missing_ok=True)
    summary = ensemble.summary()
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
        "--steps", type=non_negative_int, default=500, help="recorded steps after warm-up"
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
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pyslice-out", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
