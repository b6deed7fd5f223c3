"""``pyslice evaluate``: packing metrics of a predicted structure against the native one."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyslice.cli.common import add_command
from pyslice.metrics import DEFAULT_THRESHOLD, evaluate, format_report


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.predicted, args.native, threshold=args.threshold)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result, per_residue=args.per_residue))
    return 0


def threshold_degrees(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of degrees, got {text!r}") from None
    if not 0.0 < value <= 180.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 180] degrees, got {text}")
    return value


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        help="packing metrics of a predicted structure against the native one",
        description=(
            "Compare the side chains of PREDICTED with NATIVE (same protein, same backbone): "
            "chi accuracy, rotamer recovery, side-chain RMSD and clash counts."
        ),
    )
    parser.add_argument("predicted", metavar="PREDICTED", help="PDB or PDBx/mmCIF file")
    parser.add_argument("native", metavar="NATIVE", help="PDB or PDBx/mmCIF file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--threshold",
        type=threshold_degrees,
        default=DEFAULT_THRESHOLD,
        help=f"chi tolerance in degrees (default {DEFAULT_THRESHOLD:g})",
    )
    parser.add_argument(
        "--per-residue", action="store_true", help="also list every residue (table output)"
    )
    parser.set_defaults(handler=run)
