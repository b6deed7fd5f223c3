"""Ideal internal-coordinate templates (pyslice.geometry.templates, ideal_geometry).

Every variant's template is checked for what it promises: its atoms are amber14's, its built
geometry has the template's own bonds and angles and lies within the stated distance of amber's
r0 / theta0, rings close, stereochemistry is L, symmetric partners are exact, the columns are the
issue's (names, kinds, periodicities, what they move); and the shipped file equals a fresh
computation.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from openmm import app

import pyslice
from pyslice.geometry.chis import CHI_ATOMS, RESIDUE_ALIASES
from pyslice.geometry.ideal_geometry import compute_templates, same_templates
from pyslice.geometry.templates import (
    BACKBONE_ATOMS,
    VARIANTS,
    amber_deviations,
    bond_angle,
    load_templates,
    residue_variant,
    template,
    template_to_json,
    templates,
    torsion_of,
    variant_of,
    wrap,
)

# The largest deviations of each template's built geometry from amber's r0 (nm) and theta0
# (degrees), as tools/make_ideal_geometry.py reports them, rounded up. Where amber's angles cannot
# all hold (the 5-rings of HIS and PRO, TRP's ring junctions, ASH / GLH's carboxyl carbon, the CA
# of a backbone whose N-CA-C angle is amber's) the relaxed compromise deviates.
AMBER_BOUNDS = {
    "HID": (0.00092, 12.9), "HIE": (0.00078, 13.7), "HIP": (0.00037, 13.2),
    "PRO": (0.00026, 7.25), "TRP": (0.00034, 5.1), "TYR": (0.00005, 1.8),
    "PHE": (1e-10, 1.8), "ASH": (1e-12, 3.25), "GLH": (1e-12, 3.25),
    "CYX": (1e-12, 2.0), "MET": (1e-12, 2.0), "GLY": (1e-12, 0.35),
}  # fmt: skip
DEFAULT_BOUND = (1e-12, 0.9)  # every other variant: bonds exact, angles at CA within 0.9 degrees
CLOSURES = {
    "PHE": {("CE2", "CZ")},
    "TYR": {("CE2", "CZ")},
    "HID": {("NE2", "CE1")},
    "HIE": {("NE2", "CE1")},
    "HIP": {("NE2", "CE1")},
    "TRP": {("NE1", "CE2"), ("CZ3", "CH2")},
    "PRO": {("N", "CD")},
}
ROTOR_COLUMNS = {
    "SER": "rotor HG",
    "THR": "rotor HG1",
    "CYS": "rotor HG",
    "TYR": "rotor HH",
    "LYS": "rotor HZ1",
    "LYN": "rotor HZ1",
}
PERIODIC = {("ASP", "chi2"): 2, ("GLU", "chi3"): 2, ("PHE", "chi2"): 2, ("TYR", "chi2"): 2}
PERIODIC |= {("TYR", "rotor HH"): 2, ("LYS", "rotor HZ1"): 3}


def _peptide_residues() -> dict[str, app.Residue]:
    """One residue per default variant, from pyslice's own reader (PDB names, hydrogens at pH 7)."""
    protein = pyslice.Protein.from_sequence("GACDEFGHIKLMNPQRSTVWYG")
    return {variant_of(r): r for r in protein.topology.residues()}


def test_every_variant_is_shipped_with_its_atoms():
    shipped = templates()
    assert tuple(shipped) == VARIANTS
    for variant, t in shipped.items():
        assert t.variant == variant
        assert t.parent == RESIDUE_ALIASES.get(variant, variant)
        assert not set(t.atoms) & BACKBONE_ATOMS
        assert len(set(t.atoms)) == len(t.atoms)
        # Parents are placed before children, level by level.
        placed = {"N", "CA", "C"}
        for e in t.entries:
            assert {e.a, e.b, e.c} <= placed, (variant, e.atom)
            placed.add(e.atom)
        assert [e.level for e in t.entries] == sorted(e.level for e in t.entries)
    # The atoms of pyslice's residues (PDB names) are exactly the templates' plus the backbone.
    for variant, residue in _peptide_residues().items():
        names = {a.name for a in residue.atoms()} - BACKBONE_ATOMS
        assert names == set(shipped[variant].atoms), variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_built_geometry_is_the_templates_and_near_amber(variant):
    t = template(variant)
    positions = t.place()
    for e in t.entries:
        bond = np.linalg.norm(positions[e.atom] - positions[e.c])
        assert bond == pytest.approx(e.bond, abs=1e-12)
        angle = bond_angle(positions[e.b], positions[e.c], positions[e.atom])
        assert angle == pytest.approx(e.angle, abs=1e-10)
    dev = amber_deviations(t, positions)
    bond_bound, angle_bound = AMBER_BOUNDS.get(variant, DEFAULT_BOUND)
    assert dev["bond"] <= bond_bound
    assert math.degrees(dev["angle"]) <= angle_bound
    # Rings close: the bonds the tree leaves out are the rings' and come out near r0.
    assert set(t.closures) == CLOSURES.get(variant, set())
    assert dev["closure_bond"] <= max(bond_bound, 1e-12)
    # Any backbone works: the residue hangs from its own N, CA, C.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = t.place(np.asarray(t.backbone) @ q.T + 1.0)
    for e in t.entries:
        d = np.linalg.norm(rotated[e.atom] - rotated[e.c])
        assert d == pytest.approx(e.bond, abs=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_stereochemistry_and_names_follow_deposited_structures(variant):
    positions = template(variant).place()
    if "CB" in positions:  # L amino acids
        assert torsion_of(positions, ("C", "N", "CA", "CB")) < -1.9
    signs = {
        "ILE": (("CA", "CG1", "CB", "CG2"), 1),
        "THR": (("CA", "OG1", "CB", "CG2"), 1),
        "VAL": (("CA", "CG1", "CB", "CG2"), -1),
        "LEU": (("CB", "CD1", "CG", "CD2"), -1),
    }
    if template(variant).parent in signs:
        quad, sign = signs[template(variant).parent]
        assert torsion_of(positions, quad) * sign > 1.9
    # CH2 hydrogens: the one named ...2 has a negative dihedral (parent, heavy, C, H2).
    t = template(variant)
    parent = {e.atom: e.c for e in t.entries} | {"CA": "N"}
    for c in ["CA", *t.atoms]:
        twins = [e.atom for e in t.entries if e.c == c and e.atom[0] == "H" and e.atom[-1] in "23"]
        heavy = [e.atom for e in t.entries if e.c == c and e.atom[0] != "H"]
        heavy += ["C"] if c == "CA" else []
        if len(twins) == 2 and len(heavy) == 1 and c != "N":
            assert torsion_of(positions, (parent[c], heavy[0], c, min(twins))) < 0, (variant, c)


def test_symmetric_partners_are_exact():
    def entry(variant, atom):
        return next(e for e in template(variant).entries if e.atom == atom)

    for variant, (x, y) in {"ASP": ("OD1", "OD2"), "GLU": ("OE1", "OE2")}.items():
        a, b = entry(variant, x), entry(variant, y)
        assert (a.a, a.b, a.c, a.bond, a.angle) == (b.a, b.b, b.c, b.bond, b.angle)
        assert abs(wrap(b.torsion - a.torsion)) == math.pi
    for variant in ("PHE", "TYR"):
        for one, two in (("CD1", "CD2"), ("CE1", "CE2"), ("HD1", "HD2"), ("HE1", "HE2")):
            a, b = entry(variant, one), entry(variant, two)
            assert (a.bond, a.angle) == (b.bond, b.angle), (variant, one)
        positions = template(variant).place()
        # CZ lies on the ring's axis: the same distance from both sides.
        for one, two in (("CE1", "CE2"), ("CD1", "CD2")):
            d1 = np.linalg.norm(positions["CZ"] - positions[one])
            d2 = np.linalg.norm(positions["CZ"] - positions[two])
            assert d1 == pytest.approx(d2, abs=1e-14)
    offsets = sorted(entry("LYS", h).torsion for h in ("HZ1", "HZ2", "HZ3"))
    assert offsets == pytest.approx([-2 * math.pi / 3, 0.0, 2 * math.pi / 3], abs=1e-15)
    assert {entry("LYS", h).bond for h in ("HZ1", "HZ2", "HZ3")} == {entry("LYS", "HZ1").bond}
    assert {entry("LYS", h).angle for h in ("HZ1", "HZ2", "HZ3")} == {entry("LYS", "HZ1").angle}


@pytest.mark.parametrize("variant", VARIANTS)
def test_columns_are_the_chis_and_the_proton_rotors(variant):
    t = template(variant)
    chis = CHI_ATOMS.get(t.parent, ())
    names = [f"chi{k + 1}" for k in range(len(chis))]
    names += [ROTOR_COLUMNS[variant]] if variant in ROTOR_COLUMNS else []
    assert [c.name for c in t.columns] == names
    for k, col in enumerate(t.columns):
        assert col.kind == ("chi" if k < len(chis) else "rotor")
        if k < len(chis):
            assert col.atoms == chis[k]
        assert col.periodicity == PERIODIC.get((variant, col.name), 1)
        assert col.sampled == (variant not in ("PRO", "CYX"))
        # The column's own atom sits at the column's value; it and its subtree move.
        positions = t.place(values={col.name: 1.234})
        assert torsion_of(positions, col.atoms) == pytest.approx(1.234, abs=1e-12)
        assert col.atoms[3] in col.moves
        turned = t.place(values={col.name: 1.234 + 1.0})
        moved = {n for n in t.atoms if np.linalg.norm(turned[n] - positions[n]) > 1e-9}
        assert moved <= set(col.moves)
        # What it places but does not move lies on its axis (PHE / TYR CZ, HZ, OH).
        b, c = positions[col.atoms[1]], positions[col.atoms[2]]
        axis = (c - b) / np.linalg.norm(c - b)
        for n in set(col.moves) - moved:
            assert np.linalg.norm(np.cross(positions[n] - b, axis)) < 1e-12, (variant, n)
    # Symmetries name the variant's own columns; periodicities follow from them.
    for sym in t.symmetries:
        for name, shift in sym:
            assert t.column(name).periodicity == round(2 * math.pi / shift)


def test_nothing_asymmetric_is_flagged():
    for variant in ("HID", "HIE", "HIP", "ASN", "GLN", "ASH", "GLH", "LYN", "CYS", "SER", "THR"):
        t = template(variant)
        assert t.symmetries == ()
        assert all(c.periodicity == 1 for c in t.columns), variant


def test_residue_variant_reads_the_hydrogens():
    assert residue_variant("HIS", ["HD1"]) == "HID"
    assert residue_variant("HIS", ["HE2"]) == "HIE"
    assert residue_variant("HIS", ["HD1", "HE2"]) == "HIP"
    assert residue_variant("HIE", ["HD1", "HE2"]) == "HIP"  # the atoms decide
    assert residue_variant("ASP", ["OD1", "OD2", "HD2"]) == "ASH"
    assert residue_variant("ASP", ["OD1", "OD2"]) == "ASP"
    assert residue_variant("GLU", ["HE2"]) == "GLH"
    assert residue_variant("LYS", ["HZ1", "HZ2", "HZ3"]) == "LYS"
    assert residue_variant("LYS", ["HZ1", "HZ2"]) == "LYN"  # OpenMM's names
    assert residue_variant("LYS", ["HZ2", "HZ3"]) == "LYN"  # amber's
    assert residue_variant("CYS", ["SG", "HG"]) == "CYS"
    assert residue_variant("CYS", ["SG"]) == "CYM"
    assert residue_variant("CYS", ["SG"], disulfide=True) == "CYX"
    assert residue_variant("TRP", ["CB"]) == "TRP"
    with pytest.raises(ValueError, match="neither HD1 nor HE2"):
        residue_variant("HIS", ["CB"])
    with pytest.raises(ValueError, match="MSE"):
        residue_variant("MSE", ["CB"])
    with pytest.raises(TypeError, match="name"):
        residue_variant(3, ["CB"])


def test_variant_of_sees_disulfides():
    protein = pyslice.Protein.from_sequence("GCG")
    assert [variant_of(r) for r in protein.topology.residues()] == ["GLY", "CYS", "GLY"]
    modeller = app.Modeller(protein.topology, _quantity(protein))
    modeller.add(protein.topology, _quantity(protein, shift=2.0))
    cys = [r for r in modeller.topology.residues() if r.name == "CYS"]
    sg = [next(a for a in r.atoms() if a.name == "SG") for r in cys]
    modeller.topology.addBond(*sg)
    modeller.delete([a for r in cys for a in r.atoms() if a.name == "HG"])
    cys = [r for r in modeller.topology.residues() if r.name == "CYS"]
    assert [variant_of(r) for r in cys] == ["CYX", "CYX"]


def _quantity(protein, shift: float = 0.0):
    from openmm import unit

    return unit.Quantity(protein.positions.numpy() + shift, unit.nanometer)


def test_lookup_and_loading_errors(tmp_path):
    with pytest.raises(ValueError, match="variant must be one of"):
        template("HIS")
    t = template("SER")
    with pytest.raises(KeyError, match="rotor HH"):
        t.column("rotor HH")
    with pytest.raises(KeyError, match="chi9"):
        t.place(values={"chi9": 0.0})
    with pytest.raises(ValueError, match=r"backbone must have shape \(3, 3\)"):
        t.place(np.zeros((4, 3)))
    path = tmp_path / "geometry.json"
    path.write_text(json.dumps({"format": 99, "templates": {}}))
    with pytest.raises(ValueError, match="unknown ideal-geometry format 99"):
        load_templates(str(path))
    path.write_text(json.dumps({"format": 1, "templates": {"SER": template_to_json(t)}}))
    assert load_templates(str(path))["SER"] == t


def test_shipped_file_equals_a_fresh_computation():
    fresh = compute_templates(("amber14-all.xml",))
    assert same_templates(fresh, templates())
    changed = dict(fresh)
    changed["SER"] = dataclasses.replace(fresh["SER"], entries=fresh["SER"].entries[:-1])
    assert not same_templates(changed, templates())
