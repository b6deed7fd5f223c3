"""``pyslice train ml`` (maximum-likelihood training of the side-chain transformer) and
``pyslice train era`` (Energy Rank Alignment of it with one structure's Boltzmann distribution)."""

from __future__ import annotations

import argparse
from typing import Any

from pyslice.cli.common import Parser, add_command


def run_ml(args: argparse.Namespace) -> int:
    from pyslice.models.transformer.model import main as train_transformer

    return train_transformer(list(args.options))


def run_era(args: argparse.Namespace) -> int:
    from pyslice.models.era.trainer import main as align_transformer

    return align_transformer(list(args.options))


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train the side-chain transformer: by maximum likelihood (ml) or by ERA (era)",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=Parser)
    for name, handler, text in (
        ("ml", run_ml, "maximum-likelihood training on structures (and sampled draws)"),
        ("era", run_era, "Energy Rank Alignment with one structure's Boltzmann distribution"),
    ):
        # Its options are parsed by the trainer itself (passed through unparsed).
        sub = add_command(kinds, name, help=text, add_help=False)
        sub.set_defaults(handler=handler, passthrough=True)
