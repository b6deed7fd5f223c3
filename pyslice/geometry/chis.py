"""Chi angles and residue types: which four atoms define each side-chain dihedral, which of them
are pi-periodic by symmetry, and the parent type of OpenMM/Amber residue-name variants.

Pure data (no OpenMM, no torch): the builder, the rotamer library, the transformer and the packing
metrics all read their chi definitions here.
"""

from __future__ import annotations

__all__ = ["CHI_ATOMS", "PI_PERIODIC", "RESIDUE_ALIASES", "parent_residue_name"]

#: Standard chi definitions (IUPAC atom names, as in OpenMM's amber14 topology and the Dunbrack
#: library) for the 18 rotameric residue types. PRO's chis are measured but never rotated.
CHI_ATOMS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "ARG": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "NE"),
        ("CG", "CD", "NE", "CZ"),
    ),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "CE"),
        ("CG", "CD", "CE", "NZ"),
    ),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}

_PI_PERIODIC_CHI = {("ASP", 1), ("GLU", 2), ("PHE", 1), ("TYR", 1)}

#: Per residue type and chi: True where the side chain is symmetric under a half turn of that chi
#: (ASP chi2, GLU chi3, PHE chi2, TYR chi2), so the angle is pi-periodic.
PI_PERIODIC: dict[str, tuple[bool, ...]] = {
    name: tuple((name, k) in _PI_PERIODIC_CHI for k in range(len(chis)))
    for name, chis in CHI_ATOMS.items()
}

#: Residue names OpenMM and Amber use for protonation and bonding variants, and their parent type.
RESIDUE_ALIASES: dict[str, str] = {
    "HID": "HIS",
    "HIE": "HIS",
    "HIP": "HIS",
    "HSD": "HIS",
    "HSE": "HIS",
    "HSP": "HIS",
    "CYX": "CYS",
    "CYM": "CYS",
    "ASH": "ASP",
    "GLH": "GLU",
    "LYN": "LYS",
}


def parent_residue_name(name: str) -> str:
    """The parent type of a residue name (``HIE`` -> ``HIS``); other names come back unchanged."""
    return RESIDUE_ALIASES.get(name, name)
