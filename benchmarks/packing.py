"""Packing accuracy from the backbone alone: ``pyslice pack`` against the rotamer library's most
probable rotamers, on crystal structures never used to fit anything.

For each structure: its backbone (N, CA, C, O of the first alternate location) is written to a
file, read back like any user input (every side chain rebuilt), packed with ``pyslice.packing.pack``
at the defaults of ``pyslice pack``, and scored against the deposited structure by
``pyslice.evaluate`` (chi accuracy within 20 degrees, rotamer recovery: every chi of a residue
within 20 degrees). The baseline is the library's most probable rotamer per residue (no energy at
all), which packing must beat on every structure. The energy of the packed side chains is compared
with that of the native ones under the same energy (the native's chi angles on the same builder),
which tells whether the search found the native's basin or lower.

Run from the repository root (needs the shared data, ``PYSLICE_DATA``)::

    python benchmarks/packing.py --out benchmarks/results/packing-cpu-x86_64-2core.json

``--structures`` picks the files of ``structures/top240`` (default: a fixed subset of 12 spread
over the sorted list, plus bpti) so the run fits in about 30 minutes on two cores.
Published CASP figures for comparison (rotamer recovery): FASPR 55.8 %, SCWRL4 55.5 %, learned
packers 65-66 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from pyslice import ForceFieldEnergy, Protein, RotamerLibrary, evaluate
from pyslice._data import data_dir
from pyslice.packing import most_probable_rotamers, pack

BACKBONE = ("N", "CA", "C", "O")


def backbone_only(source: Path, target: Path) -> None:
    """Write the backbone atoms (first alternate location) of ``source`` to ``target``."""
    lines = []
    for line in source.read_text().splitlines():
        if line.startswith("HETATM"):
            continue
        side_chain = line[12:16].strip() not in BACKBONE or line[16] not in (" ", "A")
        if line.startswith("ATOM") and side_chain:
            continue
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")


def default_structures(root: Path, count: int) -> list[Path]:
    files = sorted((root / "structures" / "top240").glob("*.pdb"))
    step = max(1, len(files) // count)
    return files[::step][:count] + [root / "structures" / "bpti.pdb"]


def score(predicted: Protein, native: Path) -> dict:
    result = evaluate(predicted, native)
    return {
        "chi1": result["chi_accuracy"]["chi1"],
        "chi12": result["chi_accuracy"]["chi1+2"],
        "rotamer_recovery": result["rotamer_recovery"],
        "rmsd_nm": result["rmsd_nm"],
    }


def run_one(native_path: Path, work: Path, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    backbone = work / f"{native_path.stem}-backbone.pdb"
    backbone_only(native_path, backbone)
    protein = Protein.from_pdb(backbone, unknown="freeze")
    energy = ForceFieldEnergy(protein)
    library = RotamerLibrary.default().proposal(protein)
    baseline_chi = most_probable_rotamers(library)
    baseline = protein.with_positions(protein.build(baseline_chi[None])[0])
    result = pack(protein, energy, library, seed=args.seed, n_chains=args.chains)
    # the native side chains on the same builder and energy
    native = Protein.from_pdb(native_path, unknown="freeze")
    native_energy = None
    if native.n_atoms == protein.n_atoms and native.n_chi == protein.n_chi:
        native_energy = float(ForceFieldEnergy(native)(native.positions[None].float())[0])
    return {
        "structure": native_path.name,
        "residues": protein.n_residues,
        "packed_residues": len({int(r) for r in protein.chi_index[:, 0]}),
        "pack": score(result.protein, native_path),
        "most_probable_rotamer": score(baseline, native_path),
        "energy_packed": result.energy,
        "energy_most_probable": result.start_energy,
        "energy_native": native_energy,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", nargs="*", default=None, help="PDB files (default: subset)")
    parser.add_argument("--count", type=int, default=12, help="size of the default subset")
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    root = data_dir(required=True)
    files = (
        [Path(p) for p in args.structures]
        if args.structures
        else default_structures(root, args.count)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            try:
                row = run_one(path, Path(tmp), args)
            except (ValueError, RuntimeError) as exc:
                print(f"{path.name}: skipped ({exc})", file=sys.stderr)
                continue
            rows.append(row)
            p, b = row["pack"], row["most_probable_rotamer"]
            print(
                f"{row['structure']:12s} {row['packed_residues']:4d} res  pack chi1 "
                f"{100 * p['chi1']:5.1f}% RR {100 * p['rotamer_recovery']:5.1f}%  |  most "
                f"probable chi1 {100 * b['chi1']:5.1f}% RR {100 * b['rotamer_recovery']:5.1f}%  "
                f"| U packed {row['energy_packed']:.4g} native {row['energy_native']}  "
                f"{row['seconds']:.0f} s",
                flush=True,
            )

    def mean(kind: str, key: str) -> float:
        values = [r[kind][key] for r in rows if r[kind][key] is not None]
        return sum(values) / len(values) if values else float("nan")

    summary = {
        "pack_chi1": mean("pack", "chi1"),
        "pack_rotamer_recovery": mean("pack", "rotamer_recovery"),
        "most_probable_chi1": mean("most_probable_rotamer", "chi1"),
        "most_probable_rotamer_recovery": mean("most_probable_rotamer", "rotamer_recovery"),
        "pack_beats_baseline_everywhere": all(
            r["pack"]["rotamer_recovery"] >= r["most_probable_rotamer"]["rotamer_recovery"]
            for r in rows
        ),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        payload = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
            },
            "settings": vars(args),
            "summary": summary,
            "structures": rows,
        }
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
