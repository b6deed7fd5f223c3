"""Residue names: the vocabulary the readers, ideal peptides and the metrics share (no OpenMM
import). How messages name a residue or an atom: :mod:`pyslice._checks` (``describe_residue``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AMINO_ACIDS",
    "BACKBONE",
    "CAPS",
    "ONE_TO_THREE",
    "WATER",
    "atom_index",
]

#: Three-letter to one-letter codes of the 20 standard amino acids.
AMINO_ACIDS: dict[str, str] = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip
#: One-letter to three-letter codes of the 20 standard amino acids.
ONE_TO_THREE: dict[str, str] = {one: three for three, one in AMINO_ACIDS.items()}
#: Terminal caps that amber14 parametrises; kept, never movable.
CAPS = frozenset({"ACE", "NME", "NH2"})
#: The residue name of water in PDB files and OpenMM topologies.
WATER = "HOH"
#: The backbone atoms every amino acid must have (pdbfixer cannot rebuild them).
BACKBONE = ("N", "CA", "C")


def atom_index(residue: Any, names: Sequence[str]) -> int | None:
    """Index of the first atom of ``residue`` whose name is in ``names``, or None."""
    for atom in residue.atoms():
        if atom.name in names:
            return atom.index
    return None
