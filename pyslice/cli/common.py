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


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (messages say so, not the function's name)."""
    return _integer(text, 1, "a whole number >= 1")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _integer(text, 0, "a whole number >= 0")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(text: str) -> str:
    """An argparse type: a torch device that exists here ('cpu', 'cuda', 'cuda:1')."""
    from pyslice import _checks

    try:
        _checks.check_device("device", text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("device ")) from None
    return text


def output_folder(text: str) -> str:
    """An argparse type: a folder to write into (created if missing, not an existing file)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


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
