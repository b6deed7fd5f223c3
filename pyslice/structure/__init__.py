"""Protein structures: reading and cleaning PDB/PDBx files (the one PDB/PDBx rule set, in
``reading``), ideal peptides from a sequence (``ideal``), residue names (``residues``), the
force-field files a structure is built for (``forcefields``), and the Protein (``protein``), which
also writes PDB and DCD files."""

from pyslice.structure.forcefields import DEFAULT_FORCEFIELD
from pyslice.structure.protein import Protein
from pyslice.structure.residues import AMINO_ACIDS, CAPS

__all__ = ["AMINO_ACIDS", "CAPS", "DEFAULT_FORCEFIELD", "Protein"]
