"""What the subcommands share: the parser class, option types, reading the input structure and
choosing a proposal. Errors raised here reach the user as one line (:func:`pyslice.cli.main`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

if TYPE_CHECKING:
    from pyslice.proposals import Proposal
    from pyslice.structure import Protein

#: The built-in input of ``pyslice sample``: a 15-residue peptide with 14 different side-chain
#: types (36 chi angles), built as an ideal alpha helix with charged termini.
DEFAULT_SEQUENCE = "EKLFWVQDYRSTKMH"


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other pyslice error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser that also accepts ``--debug`` after the subcommand's name."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def checked_device(text: str) -> torch.device:
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    return device


def load_structure(path: str | None, forcefield: tuple[str, ...]) -> Protein:
    """The input structure, or the built-in peptide when ``path`` is None."""
    from pyslice.structure import Protein

    if path is None:
        print(f"input: built-in peptide {DEFAULT_SEQUENCE} (ideal helix)")
        return Protein.from_sequence(DEFAULT_SEQUENCE, forcefield=forcefield)
    if not Path(path).is_file():
        raise FileNotFoundError(f"STRUCTURE: no such file: {path}")
    return Protein.from_file(path, forcefield=forcefield)


def make_proposal(
    kind: str, protein: Protein, device: torch.device, model: str | None = None
) -> Proposal | None:
    """The proposal named on the command line (None: the Sampler's default, uniform angles)."""
    if kind == "uniform":
        return None
    if kind == "library":
        from pyslice.models.rotamers import RotamerLibrary

        return RotamerLibrary.default().proposal(protein, device=device)
    from pyslice.models.transformer import SideChainTransformer

    if model is not None:
        return SideChainTransformer.load(model).proposal(protein, device=device)
    return SideChainTransformer.default().proposal(protein, device=device)
