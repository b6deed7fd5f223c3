"""``pyslice pack``: repack every side chain of a structure (absent, partial or present) to the
lowest energy found, and write one PDB keeping the input's chain ids and numbering."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyslice.cli.common import (
    add_command,
    default_device,
    device_name,
    load_structure,
    make_proposal,
    non_negative_int,
    positive_int,
)


def run(args: argparse.Namespace) -> int:
    from pyslice import __version__
    from pyslice.energy import ForceFieldEnergy
    from pyslice.io.files import prepend_lines
    from pyslice.models.rotamers import RotamerLibrary
    from pyslice.packing import keep_residues, pack, residue_selection

    out = Path(args.output)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"-o: folder {out.parent} does not exist")
    if args.model is not None and args.proposal != "transformer":
        raise ValueError("--model: a transformer file needs --proposal transformer")
    forcefield = tuple(args.forcefield)
    start = time.perf_counter()
    protein = load_structure(args.structure, forcefield)
    kept = residue_selection(protein, args.keep) if args.keep else []
    if kept:
        protein = keep_residues(protein, kept)
    print(
        f"structure: {protein.n_residues} residues, {protein.n_atoms} atoms; packing "
        f"{len({int(r) for r in protein.chi_index[:, 0]})} residues ({protein.n_chi} chi angles)"
        + (f", {len(kept)} kept as in the input" if kept else "")
    )
    energy = ForceFieldEnergy(protein, forcefield=forcefield, device=args.device)
    library = RotamerLibrary.default().proposal(protein, device=energy.device)
    search = make_proposal(args.proposal, protein, energy.device, args.model)
    stages = 6
    result = pack(
        protein,
        energy,
        library,
        search_proposal=search,
        n_chains=args.chains,
        steps_per_stage=max(1, args.steps // stages),
        n_stages=stages,
        seed=args.seed,
        progress=not args.quiet,
    )
    result.protein.to_pdb(out)
    settings = (
        f"chains {args.chains}, steps {args.steps}, proposal {args.proposal}, seed {args.seed}"
    )
    prepend_lines(
        out,
        [
            f"REMARK 999 PACKED BY PYSLICE {__version__}",
            f"REMARK 999 ENERGY {result.energy:.2f} KJ/MOL (START {result.start_energy:.4g})",
            f"REMARK 999 FORCE FIELD {' '.join(forcefield)}",
            f"REMARK 999 SETTINGS {settings}",
        ],
    )
    print(
        f"packed in {time.perf_counter() - start:.0f} s: U = {result.energy:.1f} kJ/mol "
        f"(most probable rotamers: {result.start_energy:.4g}); wrote {out}"
    )
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "pack",
        help="repack all side chains of a structure to the lowest energy found (like FASPR)",
    )
    parser.add_argument("structure", metavar="STRUCTURE", help="PDB or PDBx/mmCIF file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pdb", help="output PDB")
    parser.add_argument("--chains", type=positive_int, default=64)
    parser.add_argument(
        "--steps", type=positive_int, default=360, help="annealing steps (over 6 stages)"
    )
    parser.add_argument("--proposal", choices=("library", "transformer"), default="library")
    parser.add_argument("--model", default=None, help="transformer file (--proposal transformer)")
    parser.add_argument(
        "--keep",
        default=None,
        metavar="RESIDUES",
        help="residues left as in the input, e.g. A:10,A:15-20 or 42",
    )
    parser.add_argument(
        "--forcefield",
        nargs="+",
        default=["amber14-all.xml"],
        help="OpenMM force-field XML files (default amber14-all.xml)",
    )
    parser.add_argument("--device", type=device_name, default=default_device())
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=run)
