"""Chi and residue-type definitions (pyslice.geometry.chis)."""

from __future__ import annotations

from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, parent_residue_name


def test_chi_tables() -> None:
    counts = {"ARG": 4, "ASN": 2, "ASP": 2, "CYS": 1, "GLN": 3, "GLU": 3, "HIS": 2, "ILE": 2}
    counts |= {"LEU": 2, "LYS": 4, "MET": 3, "PHE": 2, "PRO": 2, "SER": 1, "THR": 1, "TRP": 2}
    counts |= {"TYR": 2, "VAL": 1}
    assert {name: len(chis) for name, chis in CHI_ATOMS.items()} == counts
    for name, chis in CHI_ATOMS.items():
        assert chis[0][:3] == ("N", "CA", "CB")
        for first, second in zip(chis[:-1], chis[1:]):
            assert first[1:] == second[:3], name  # consecutive chis share three atoms
    periodic = {(n, k) for n, flags in PI_PERIODIC.items() for k, f in enumerate(flags) if f}
    assert periodic == {("ASP", 1), ("GLU", 2), ("PHE", 1), ("TYR", 1)}
    assert all(len(PI_PERIODIC[n]) == len(CHI_ATOMS[n]) for n in CHI_ATOMS)
    for alias, parent in [("HID", "HIS"), ("HIE", "HIS"), ("HIP", "HIS"), ("CYX", "CYS")]:
        assert parent_residue_name(alias) == parent
    for alias, parent in [("ASH", "ASP"), ("GLH", "GLU"), ("LYN", "LYS"), ("ALA", "ALA")]:
        assert parent_residue_name(alias) == parent
