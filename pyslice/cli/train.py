"""``pyslice train ml`` (maximum-likelihood training of the side-chain transformer) and
``pyslice train era`` (Energy Rank Alignment of it with one structure's Boltzmann distribution).

The options map one to one onto the keyword arguments of
:func:`pyslice.models.transformer.train_transformer` and
:func:`pyslice.models.transformer.align_transformer`, which do the work; this module only parses,
checks how options combine, and sets the torch threads.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from pyslice.cli.common import DEFAULT_SEQUENCE, Parser, add_command, positive_int

# Namespace entries that are not options of the command line.
_NOT_OPTIONS = {"command", "kind", "handler", "debug"}


def command_line(words: Sequence[str], args: argparse.Namespace, parser: Parser) -> str:
    """The command that reproduces ``args``: ``words`` and every option whose value differs from
    its default (recorded in the trained model's provenance)."""
    parts = list(words)
    for dest, value in vars(args).items():
        if dest in _NOT_OPTIONS or value == parser.get_default(dest):
            continue
        flag = "--" + dest.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list) and value and isinstance(value[0], list):
            for item in value:  # an option given several times (--sampled A B --sampled C D)
                parts += [flag, *map(str, item)]
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_ml(args: argparse.Namespace, parser: Parser) -> int:
    from pyslice.models.transformer import train_transformer

    if args.no_structures and not args.sampled:
        raise ValueError("--no-structures: give the training data with --sampled")
    for option in ("energy_cut", "keep_fraction", "max_records"):
        if getattr(args, option) is not None and not args.sampled:
            raise ValueError(f"--{option.replace('_', '-')}: filters --sampled data; none given")
    if args.no_structures and args.keep_best:
        raise ValueError("--keep-best needs the validation structures (drop --no-structures)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train_transformer(
        args.out,
        data_dir=args.data,
        cache_dir=args.cache,
        checkpoint=args.checkpoint,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_len=args.max_len,
        d_model=args.d_model,
        n_heads=args.heads,
        n_layers=args.layers,
        d_ff=args.d_ff,
        n_components=args.components,
        dropout=args.dropout,
        weight_decay=args.weight_decay,
        noise=(args.noise_nm, args.noise_rad),
        per_crop=args.per_crop,
        keep_best=args.keep_best,
        val_every=args.val_every,
        half=args.half,
        init=args.init,
        sampled=[tuple(pair) for pair in args.sampled],
        energy_cut=args.energy_cut,
        keep_fraction=args.keep_fraction,
        max_records=args.max_records,
        structures=not args.no_structures,
        command=command_line(["pyslice", "train", "ml"], args, parser),
    )
    return 0


def run_era(args: argparse.Namespace, parser: Parser) -> int:
    from pyslice.models.transformer import align_transformer
    from pyslice.structure.protein import Protein

    # [0] asks for the unconditional policy; otherwise every size is a residue count.
    conditional = args.blocks != [0]
    if conditional and min(args.blocks) < 1:
        raise ValueError(f"--blocks: sizes must be >= 1, or a single 0; got {args.blocks}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.structure is None:
        protein = Protein.from_sequence(DEFAULT_SEQUENCE)
        source = f"built-in peptide {DEFAULT_SEQUENCE}"
    else:
        path = Path(args.structure)
        if not path.is_file():
            raise FileNotFoundError(f"--structure: no such file: {path}")
        protein = Protein.from_file(path)
        source = str(path)
    align_transformer(
        protein,
        args.out,
        source=source,
        model=args.model,
        block_sizes=args.blocks if conditional else None,
        context_chains=args.context_chains,
        context_steps=args.context_steps,
        steps=args.steps,
        pairs=args.pairs,
        lr=args.lr,
        gamma=args.gamma,
        temperature=args.temperature,
        seed=args.seed,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        eval_samples=args.eval_samples,
        eval_contexts=args.eval_contexts,
        command=command_line(["pyslice", "train", "era"], args, parser),
    )
    return 0


def _ml_options(parser: Parser) -> None:
    parser.add_argument("--out", default="transformer.pt", help="model file to write")
    parser.add_argument("--data", default=None, help="data folder (default: $PYSLICE_DATA)")
    parser.add_argument("--cache", default=None, help="extracted-tensor cache folder")
    parser.add_argument("--checkpoint", default=None, help="training checkpoint (resumable)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--d-ff", type=int, default=256)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--noise-nm", type=float, default=0.0, help="backbone coordinate noise")
    parser.add_argument("--noise-rad", type=float, default=0.0, help="phi/psi/context chi noise")
    parser.add_argument("--per-crop", action="store_true", help="average the loss per crop")
    parser.add_argument("--keep-best", action="store_true", help="early stopping on validation")
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument(
        "--init", default=None, help="start from this model file (fine-tuning; its architecture)"
    )
    parser.add_argument(
        "--sampled",
        nargs=2,
        action="append",
        default=[],
        metavar=("STRUCTURE", "ENSEMBLE"),
        help="add energy-filtered draws of a pyslice sample run (its structure and ensemble.npz); "
        "repeatable",
    )
    parser.add_argument("--energy-cut", type=float, default=None, help="keep draws <= this kJ/mol")
    parser.add_argument(
        "--keep-fraction", type=float, default=None, help="keep the lowest-energy fraction"
    )
    parser.add_argument("--max-records", type=int, default=None, help="per ensemble, at random")
    parser.add_argument(
        "--no-structures",
        action="store_true",
        help="train on the --sampled data alone (no top240, no validation)",
    )


def _era_options(parser: Parser) -> None:
    parser.add_argument("--structure", default=None, help="PDB/mmCIF (default: built-in peptide)")
    parser.add_argument("--model", default=None, help="starting model (default: the shipped one)")
    parser.add_argument("--out", default="transformer-era.pt", help="aligned model file to write")
    parser.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=[1],
        help="block sizes (residues) the conditional policy is aligned for (default 1: see "
        "pyslice.models.transformer.align); 0: whole side-chain sets from backbone and sequence "
        "alone",
    )
    parser.add_argument("--context-chains", type=int, default=256)
    parser.add_argument("--context-steps", type=int, default=500, help="random-walk steps")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--gamma", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="resumable training state")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--eval-contexts", type=int, default=16)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train the side-chain transformer: by maximum likelihood (ml) or by ERA (era)",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=Parser)
    for name, handler, options, text in (
        (
            "ml",
            run_ml,
            _ml_options,
            "maximum-likelihood training on structures/top240 (and energy-filtered draws of "
            "sampler runs)",
        ),
        (
            "era",
            run_era,
            _era_options,
            "Energy Rank Alignment with exp(-U/kT) of one structure: pairs of block proposals "
            "given sampler states, ranked by energy",
        ),
    ):
        sub = add_command(kinds, name, help=text, description=text)
        options(sub)
        sub.set_defaults(handler=partial(handler, parser=sub))
