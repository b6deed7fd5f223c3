"""Side-chain geometry: chi definitions, the batched side-chain builder, and the one home of angle
wrapping, dihedrals and atom placement."""

from pyslice.geometry.builder import (
    CHI_ATOMS,
    PI_PERIODIC,
    RESIDUE_ALIASES,
    BuildTables,
    SideChainBuilder,
    build_reference,
    dihedral,
    parent_residue_name,
)

__all__ = [
    "CHI_ATOMS",
    "PI_PERIODIC",
    "RESIDUE_ALIASES",
    "BuildTables",
    "SideChainBuilder",
    "build_reference",
    "dihedral",
    "parent_residue_name",
]
