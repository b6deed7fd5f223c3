"""Side-chain geometry: chi and residue-type definitions (``chis``), the batched side-chain builder
(``builder``), and the one home of angle wrapping, dihedrals and atom placement (``angles``)."""

from pyslice.geometry.angles import dihedral
from pyslice.geometry.builder import BuildTables, SideChainBuilder, build_reference
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, RESIDUE_ALIASES, parent_residue_name

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
