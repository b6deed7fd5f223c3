"""``pyslice fit``: fit the backbone-dependent rotamer library by EM from the open data."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyslice.cli.common import add_command, positive_int


def run(args: argparse.Namespace) -> int:
    from pyslice.models.rotamers import RotamerLibrary

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out: folder {out.parent} does not exist")
    start = time.perf_counter()
    library = RotamerLibrary.fit(
        args.data,
        seed=args.seed,
        max_components=args.max_components,
        residue_types=args.residues,
        progress=not args.quiet,
    )
    library.save(out)
    print(library)
    print(f"fitted in {time.perf_counter() - start:.0f} s; wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "fit",
        help="fit the backbone-dependent rotamer library by EM from the open data",
    )
    parser.add_argument(
        "--data", default=None, help="data folder (default: $PYSLICE_DATA or ../shared/data)"
    )
    parser.add_argument("--out", default="rotamer_library.npz", help="output file (.npz)")
    parser.add_argument(
        "--residues",
        nargs="+",
        default=None,
        metavar="RES",
        help="residue types to fit (default: all 18 with chi angles)",
    )
    parser.add_argument("--max-components", type=positive_int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(handler=run)
