"""Protein structures: reading and cleaning PDB/PDBx files, ideal peptides from a sequence, writing
PDB and DCD files. The one place that holds the PDB/PDBx rules."""

from pyslice.structure.protein import AMINO_ACIDS, CAPS, DEFAULT_FORCEFIELD, Protein

__all__ = ["AMINO_ACIDS", "CAPS", "DEFAULT_FORCEFIELD", "Protein"]
