"""Sampling speed where users feel it: the Sampler against molecular dynamics with the same energy,
for the same wall time (issue 20).

MD: OpenMM Langevin dynamics of the same protein and force field (amber14, with the same implicit
solvent as pyslice's default energy unless ``--solvent`` says otherwise), HBond constraints, 2 fs,
300 K, 1/ps friction, backbone heavy atoms (N, CA, C, O) restrained harmonically to the structure
(``--restraint`` kJ/mol/nm^2) so that only side chains move, as in the Sampler. Frames every
``--frame-fs``. pyslice: the Sampler with ``--chains`` chains, one-residue random walks mixed
with one-residue independence moves from each proposal (uniform, the rotamer library, the
transformer), recording every step. Both run for ``--seconds`` of wall time after their set-up.

Reported side by side, and as pyslice / MD ratios:

- chi1 rotamer changes per second: a change is a move of a residue's chi1 between the three
  120-degree sectors centred on g+ (60), t (180) and g- (-60 degrees), counted between consecutive
  frames (MD) or recorded draws (pyslice), summed over residues and chains;
- median chi bulk ESS per second: the circular (sin/cos) rank-normalised bulk ESS of every chi
  angle (chi1..chi4 of the movable residues; proton rotors left out), median over the chis, over
  the wall time (MD: one chain, split in halves as usual).

Run from the repository root (needs the shared data, ``PYSLICE_DATA``)::

    python benchmarks/md_vs_sampler.py --seconds 120 \\
        --out benchmarks/results/md-vs-sampler-cpu-x86_64-2core.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pyslice
from pyslice._data import data_dir
from pyslice.geometry.angles import dihedral_numpy
from pyslice.geometry.chis import CHI_ATOMS, parent_residue_name
from pyslice.mcmc import Sampler, diagnostics

SOLVENT_FILES = {"vacuum": (), "gbn2": ("implicit/gbn2.xml",), "obc2": ("implicit/obc2.xml",)}


def chi_quadruples(protein) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(residue, chi k) of every chi of the movable residues, and their atom indices (n, 4)."""
    keys, atoms = [], []
    movable = {int(r) for r in protein.chi_index[:, 0]}
    for residue in protein.topology.residues():
        if residue.index not in movable:
            continue
        names = {a.name: a.index for a in residue.atoms()}
        for k, quad in enumerate(CHI_ATOMS.get(parent_residue_name(residue.name), ())):
            if all(n in names for n in quad):
                keys.append((residue.index, k))
                atoms.append([names[n] for n in quad])
    return keys, np.asarray(atoms, dtype=np.int64)


def chi1_changes(chi: np.ndarray, is_chi1: np.ndarray) -> int:
    """Sector changes of the chi1 columns of ``chi: (draws, chains, n)`` radians."""
    degrees = np.degrees(chi[..., is_chi1]) % 360.0
    sector = np.floor(degrees / 120.0).astype(np.int64)  # [0,120) g+, [120,240) t, [240,360) g-
    return int((sector[1:] != sector[:-1]).sum())


def median_ess(chi: np.ndarray) -> float:
    """Median over chis of the circular bulk ESS of ``chi: (draws, chains, n)``."""
    circular = np.stack([np.sin(chi), np.cos(chi)], axis=-1)
    ess = np.min(diagnostics.ess(circular, kind="bulk"), axis=-1)
    return float(np.nanmedian(ess))


def run_md(protein, args, keys, atoms) -> dict:
    import openmm
    from openmm import app, unit

    files = (*protein.forcefield, *SOLVENT_FILES[args.solvent])
    system = app.ForceField(*files).createSystem(
        protein.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
    )
    restraint = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    restraint.addGlobalParameter("k", args.restraint)
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    reference = protein.positions.numpy()
    for atom in protein.topology.atoms():
        if atom.name in ("N", "CA", "C", "O"):
            restraint.addParticle(atom.index, list(reference[atom.index]))
    system.addForce(restraint)
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond
    )
    integrator.setRandomNumberSeed(args.seed + 1)
    simulation = app.Simulation(
        protein.topology, system, integrator, openmm.Platform.getPlatformByName("CPU")
    )
    simulation.context.setPositions(reference)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed + 1)
    stride = max(1, round(args.frame_fs / 2.0))
    frames = []
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < args.seconds:
        simulation.step(stride)
        steps += stride
        state = simulation.context.getState(getPositions=True)
        frames.append(np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
    wall = time.perf_counter() - start
    xyz = np.stack(frames)  # (frames, N, 3)
    chi = dihedral_numpy(xyz[:, atoms])[:, None, :]  # (frames, 1, n)
    return {"wall_s": wall, "frames": len(frames), "md_steps": steps,
            "simulated_ps": steps * 0.002, "chi": chi}  # fmt: skip


def run_sampler(protein, proposal_kind: str, args, keys) -> dict:
    energy = pyslice.ForceFieldEnergy(protein, solvent=args.solvent)
    if proposal_kind == "uniform":
        proposal = None
    elif proposal_kind == "library":
        proposal = pyslice.RotamerLibrary.default().proposal(protein)
    else:
        proposal = pyslice.SideChainTransformer.default().proposal(protein)
    # the default moves: a one-residue random walk and one-residue independence moves
    sampler = Sampler(protein, energy, proposal=proposal, n_chains=args.chains, seed=args.seed,
                      refresh_every=None)  # fmt: skip
    start = time.perf_counter()
    parts = []
    while time.perf_counter() - start < args.seconds:
        parts.append(sampler.run(args.chunk, progress=False).chi)
    wall = time.perf_counter() - start
    chi = torch.cat(parts).numpy().astype(np.float64)  # (draws, chains, columns)
    index = protein.chi_index.cpu().tolist()
    wanted = {key: n for n, key in enumerate(keys)}
    order = [None] * len(keys)
    for column, (residue, k) in enumerate(index):
        if (residue, k) in wanted and k < 4 and column < chi.shape[-1]:
            order[wanted[(residue, k)]] = column
    columns = [c for c in order if c is not None]
    return {"wall_s": wall, "draws": chi.shape[0], "chain_steps": chi.shape[0] * args.chains,
            "chi": chi[..., columns]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default=None, help="PDB file (default: bpti)")
    parser.add_argument("--seconds", type=float, default=120.0, help="wall time per contestant")
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=20, help="sampler steps per run() call")
    parser.add_argument("--solvent", default=None, choices=tuple(SOLVENT_FILES),
                        help="energy (default: pyslice's default)")  # fmt: skip
    parser.add_argument("--restraint", type=float, default=1e4, help="kJ/mol/nm^2 on N CA C O")
    parser.add_argument("--frame-fs", type=float, default=100.0, help="MD frame interval (fs)")
    parser.add_argument("--proposals", nargs="+", default=["uniform", "library", "transformer"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    path = (
        Path(args.structure)
        if args.structure
        else data_dir(required=True) / "structures" / "bpti.pdb"
    )
    protein = pyslice.Protein.from_file(path)
    if args.solvent is None:
        args.solvent = pyslice.ForceFieldEnergy(protein).solvent
    keys, atoms = chi_quadruples(protein)
    is_chi1 = np.array([k == 0 for _, k in keys])
    rows = []
    md = run_md(protein, args, keys, atoms)
    md_row = {"method": "MD (OpenMM CPU, Langevin 2 fs, backbone restrained)",
              "wall_s": md["wall_s"], "frames": md["frames"], "simulated_ps": md["simulated_ps"],
              "chi1_changes_per_s": chi1_changes(md["chi"], is_chi1) / md["wall_s"],
              "median_ess_per_s": median_ess(md["chi"]) / md["wall_s"]}  # fmt: skip
    rows.append(md_row)
    print(json.dumps(md_row), flush=True)
    for kind in args.proposals:
        result = run_sampler(protein, kind, args, keys)
        row = {"method": f"pyslice Sampler, {kind} proposal", "wall_s": result["wall_s"],
               "draws": result["draws"], "chain_steps": result["chain_steps"],
               "chi1_changes_per_s": chi1_changes(result["chi"], is_chi1) / result["wall_s"],
               "median_ess_per_s": median_ess(result["chi"]) / result["wall_s"]}  # fmt: skip
        for key in ("chi1_changes_per_s", "median_ess_per_s"):
            base = md_row[key]
            row[key.replace("_per_s", "_vs_md")] = row[key] / base if base > 0 else math.inf
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        payload = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "structure": str(path.name),
            "solvent": args.solvent,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_avg_1m": os.getloadavg()[0], "torch": torch.__version__},
            "settings": vars(args),
            "rows": rows,
        }  # fmt: skip
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
