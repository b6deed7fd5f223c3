"""Computes the ideal-geometry templates of :mod:`pyslice.geometry.templates` from amber14, by the
recipe in that module's docstring. ``tools/make_ideal_geometry.py`` writes the result to the shipped
``pyslice/data/ideal_geometry.json``; a test checks that the shipped file equals a fresh
computation. Needs OpenMM and pdbfixer (its residue templates); about ten seconds."""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyslice.geometry.angles import place_atom
from pyslice.geometry.chis import CHI_ATOMS, RESIDUE_ALIASES
from pyslice.geometry.templates import (
    BACKBONE_ATOMS,
    ROTORS,
    SYMMETRIES,
    UNSAMPLED,
    VARIANTS,
    Template,
    bond_angle,
    template_from_json,
    template_to_json,
    torsion_of,
    wrap,
)

if TYPE_CHECKING:
    import openmm
    from openmm import app

__all__ = ["compute_templates", "same_templates", "templates_json"]

# Variants whose aromatic ring is made exactly mirror-symmetric (its partners are equivalent).
_MIRRORED = frozenset({"PHE", "TYR"})
# Variants that Modeller.addHydrogens sets explicitly (CYM is its CYX without a disulfide).
_HYDROGEN_VARIANTS = {"ASP", "ASH", "CYS", "CYX", "GLU", "GLH", "HID", "HIE", "HIP", "LYS", "LYN"}
# How far a relaxed dihedral may lie from the exact value it is set to (a wrong assumption about
# the chemistry, not round-off, would exceed it).
_SNAP_TOLERANCE = math.radians(10.0)
_MINIMIZE_TOLERANCE = 1e-6  # kJ/mol/nm
# The starting backbone (Engh & Huber; the relaxation then moves every atom): nm and degrees.
_N_CA, _CA_C, _C_N, _C_O = 0.1458, 0.1525, 0.1329, 0.1231
_N_CA_C, _CA_C_N, _C_N_CA, _CA_C_O = 111.2, 116.2, 121.7, 120.1
_STRAND = (-120.0, 130.0)  # phi, psi
_PRO_PHI = -63.0
# Stereocentres of L amino acids and IUPAC names of prochiral methyls: these dihedrals have this
# sign in deposited structures (checked on every template).
_CHIRALITY = {
    "*": (("C", "N", "CA", "CB"), -1.0),
    "ILE": (("CA", "CG1", "CB", "CG2"), 1.0),  # (2S, 3S)
    "THR": (("CA", "OG1", "CB", "CG2"), 1.0),  # (2S, 3R)
    "VAL": (("CA", "CG1", "CB", "CG2"), -1.0),
    "LEU": (("CB", "CD1", "CG", "CD2"), -1.0),
}
# NH2 hydrogens named ...1: their dihedral from the N's grandparent (deposited structures: the
# amide's HD21 / HE21 cis to the oxygen, ARG's HH11 / HH21 cis to NE). Equivalent in amber.
_NH2_FIRST = {"HD21": math.pi, "HE21": math.pi, "HH11": 0.0, "HH21": 0.0}


def compute_templates(forcefield: Sequence[str] = ("amber14-all.xml",)) -> dict[str, Template]:
    """Every variant's template, computed afresh (see the templates module docstring)."""
    from openmm import app

    ff = app.ForceField(*forcefield)
    topology, xyz, residues = _variant_peptide(ff)
    system = ff.createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    r0, theta0 = _equilibrium_values(system)
    relaxed = _relax(system, topology, xyz)
    return {v: _template(v, residues[v], relaxed, r0, theta0) for v in VARIANTS}


def templates_json(computed: dict[str, Template], forcefield: Sequence[str]) -> dict[str, Any]:
    """The shipped file's content for ``computed`` (what ``load_templates`` reads)."""
    import openmm

    return {
        "format": 1,
        "source": "pyslice.geometry.ideal_geometry.compute_templates",
        "forcefield": list(forcefield),
        "openmm": openmm.__version__,
        "templates": {v: template_to_json(t) for v, t in computed.items()},
    }


def same_templates(a: dict[str, Template], b: dict[str, Template], tolerance: float = 1e-9) -> bool:
    """True when two template sets agree: the same variants, atoms and names, and every number
    within ``tolerance`` (the computation is reproducible to ~1e-15, not bit for bit)."""

    def close(x: object, y: object) -> bool:
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return len(x) == len(y) and all(close(p, q) for p, q in zip(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, float) and isinstance(y, float):
            return abs(x - y) <= tolerance
        return x == y

    return list(a) == list(b) and all(
        close(template_to_json(a[v]), template_to_json(b[v])) for v in a
    )


# -------------------------------------------------------------------------------- the peptide


def _variant_peptide(ff: app.ForceField):
    """G-X-G-Y-...-G with one residue per variant (and CYX's disulfide partner last), with
    hydrogens: topology, positions (nm, float64) and the residue of each variant.

    The start: an ideal beta-strand backbone (Engh & Huber lengths and angles) and each side chain
    from pdbfixer's residue template, superposed on N, CA, C (a rotation: L stays L). Not
    ``Protein.from_sequence``, nor pdbfixer's completion of a bare backbone: both can invert CA
    (and ILE / THR CB) when pdbfixer minimises the side chains it adds.
    """
    import openmm
    from openmm import app, unit

    order = (*VARIANTS, "CYX")
    names = ["GLY"] + [n for v in order for n in (RESIDUE_ALIASES.get(v, v), "GLY")]
    pdb = app.PDBFile(io.StringIO(_start_pdb(names)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    all_residues = list(modeller.topology.residues())
    picked = [all_residues[1 + 2 * k] for k in range(len(order))]
    cyx = [r for r, v in zip(picked, order) if v == "CYX"]
    modeller.topology.addBond(*(next(a for a in r.atoms() if a.name == "SG") for r in cyx))
    variants: list[str | None] = [None] * len(all_residues)
    for residue, v in zip(picked, order):
        if v in _HYDROGEN_VARIANTS or v == "CYM":
            variants[residue.index] = "CYX" if v == "CYM" else v
    platform = openmm.Platform.getPlatformByName("Reference")
    with _seeded(0):  # addHydrogens starts new hydrogens from Python's global random state
        modeller.addHydrogens(ff, variants=variants, platform=platform)
    residues = list(modeller.topology.residues())
    by_variant = {v: residues[r.index] for r, v in zip(picked[: len(VARIANTS)], VARIANTS)}
    xyz = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer), dtype=np.float64)
    return modeller.topology, xyz, by_variant


def _start_pdb(names: list[str]) -> str:
    """PDB text of the starting peptide (heavy atoms; see :func:`_variant_peptide`)."""
    import pdbfixer
    from openmm import app, unit

    folder = os.path.join(os.path.dirname(pdbfixer.__file__), "templates")
    rad = math.radians
    backbone = [np.array([0.0, 0.0, 0.0]), np.array([_N_CA, 0.0, 0.0])]
    angle = math.pi - rad(_N_CA_C)
    backbone.append(backbone[1] + _CA_C * np.array([math.cos(angle), math.sin(angle), 0.0]))
    lines: list[str] = []
    for i, name in enumerate(names):
        if i > 0:
            n, ca, c = backbone[-3:]
            phi = rad(_PRO_PHI if name == "PRO" else _STRAND[0])
            backbone.append(place_atom(n, ca, c, _C_N, rad(_CA_C_N), rad(_STRAND[1])))
            backbone.append(place_atom(ca, c, backbone[-1], _N_CA, rad(_C_N_CA), math.pi))
            backbone.append(place_atom(c, backbone[-2], backbone[-1], _CA_C, rad(_N_CA_C), phi))
        n, ca, c = backbone[-3:]
        atoms = {"N": n, "CA": ca, "C": c}
        atoms["O"] = place_atom(n, ca, c, _C_O, rad(_CA_C_O), rad(_STRAND[1]) + math.pi)
        if i == len(names) - 1:
            atoms["OXT"] = place_atom(n, ca, c, _C_O, rad(_CA_C_O), rad(_STRAND[1]))
        template = app.PDBFile(os.path.join(folder, f"{name}.pdb"))
        xyz = np.asarray(template.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        found = {a.name: xyz[a.index] for a in template.topology.atoms()}
        rotation, shift = _superpose(np.stack([found[k] for k in ("N", "CA", "C")]), n, ca, c)
        for atom, position in found.items():
            if atom not in atoms:
                atoms[atom] = position @ rotation.T + shift
        for atom, position in atoms.items():
            x, y, z = 10.0 * position  # nm -> Angstrom
            lines.append(
                f"ATOM  {len(lines) + 1:5d}  {atom:<3s} {name} A{i + 1:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {atom[0]:>2s}"
            )
    return "\n".join([*lines, "TER", "END"]) + "\n"


def _superpose(
    moving: np.ndarray, n: np.ndarray, ca: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The proper rotation and shift that best put ``moving`` (3, 3) onto N, CA, C (Kabsch)."""
    target = np.stack([n, ca, c])
    mc, tc = moving.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((moving - mc).T @ (target - tc))
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    rotation = vt.T @ flip @ u.T
    return rotation, tc - mc @ rotation.T


@contextlib.contextmanager
def _seeded(seed: int):
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _equilibrium_values(system: openmm.System) -> tuple[dict, dict]:
    """amber's r0 by atom pair and theta0 by (end, middle, end) triple, both orders."""
    import openmm

    r0: dict[tuple[int, int], float] = {}
    theta0: dict[tuple[int, int, int], float] = {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                r0[i, j] = r0[j, i] = float(length._value)
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                i, j, m, angle, _ = force.getAngleParameters(k)
                theta0[i, j, m] = theta0[m, j, i] = float(angle._value)
    return r0, theta0


def _relax(system: openmm.System, topology: app.Topology, xyz: np.ndarray) -> np.ndarray:
    """Positions minimised under the bonded terms that shape a residue, every atom free: bonds,
    angles, impropers, the proper torsions about bonds between two trigonal C / N atoms (they
    keep amide, guanidinium and aromatic groups planar) and those about a bond of a five-membered
    ring (they pucker PRO's). Other proper torsions are left out: in the peptide they strain the
    angles at CA by up to 3 degrees."""
    import openmm
    from openmm import unit

    residue_of = [atom.residue.index for atom in topology.atoms()]
    bonded = {frozenset((x.index, y.index)) for x, y in topology.bonds()}
    neighbours: list[set[int]] = [set() for _ in range(topology.getNumAtoms())]
    for x, y in topology.bonds():
        neighbours[x.index].add(y.index)
        neighbours[y.index].add(x.index)
    trigonal = [
        len(neighbours[a.index]) == 3 and a.element.symbol in ("C", "N") for a in topology.atoms()
    ]

    def shaping(i: int, j: int, m: int, n: int) -> bool:
        if not all(frozenset(p) in bonded for p in ((i, j), (j, m), (m, n))):
            return True  # an improper
        return (trigonal[j] and trigonal[m]) or in_five_ring(j, m)

    def in_five_ring(j: int, m: int) -> bool:  # the bond j-m closes a five-membered ring
        return any(
            neighbours[x] & neighbours[y] - {j, m}
            for x in neighbours[j] - {m}
            for y in neighbours[m] - {j}
        )

    def local(*atoms: int) -> bool:  # terms across the disulfide join distant residues
        span = [residue_of[i] for i in atoms]
        return max(span) - min(span) <= 1

    relax = openmm.System()
    for i in range(system.getNumParticles()):
        relax.addParticle(system.getParticleMass(i))
    bonds, angles, torsions = (
        openmm.HarmonicBondForce(),
        openmm.HarmonicAngleForce(),
        openmm.PeriodicTorsionForce(),
    )
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, kb = force.getBondParameters(k)
                if local(i, j):
                    bonds.addBond(i, j, length, kb)
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                i, j, m, angle, ka = force.getAngleParameters(k)
                if local(i, j, m):
                    angles.addAngle(i, j, m, angle, ka)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):
                i, j, m, n, period, phase, kt = force.getTorsionParameters(k)
                if local(i, j, m, n) and shaping(i, j, m, n):
                    torsions.addTorsion(i, j, m, n, period, phase, kt)
    for force in (bonds, angles, torsions):
        relax.addForce(force)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(relax, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(unit.Quantity(xyz, unit.nanometer))
    openmm.LocalEnergyMinimizer.minimize(context, _MINIMIZE_TOLERANCE, 0)
    state = context.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


# -------------------------------------------------------------------------------- one template


class _Residue:
    """One residue's names, bonds and chemistry (sp2 atoms, rings), with mutable positions."""

    def __init__(self, residue: app.Residue, xyz: np.ndarray) -> None:
        atoms = list(residue.atoms())
        self.index = {a.name: a.index for a in atoms}
        self.pos = {a.name: xyz[a.index].copy() for a in atoms}
        self.element = {a.name: a.element.symbol for a in atoms}
        self.nbrs: dict[str, list[str]] = {a.name: [] for a in atoms}
        self.degree = dict.fromkeys(self.nbrs, 0)
        for x, y in residue.bonds():
            for p, q in ((x, y), (y, x)):
                if p.residue is residue:
                    self.degree[p.name] += 1
                    if q.residue is residue:
                        self.nbrs[p.name].append(q.name)
        self.placed = [n for n in self.nbrs if n not in BACKBONE_ATOMS]

    def key(self, name: str) -> tuple[bool, str]:
        return (self.element[name] == "H", name)

    def tree(self) -> tuple[dict[str, str], dict[str, int], list[str]]:
        """Parent, level and breadth-first order of the placed atoms, from CA."""
        parent: dict[str, str] = {}
        level = {"CA": 0}
        order: list[str] = []
        seen = {n for n in self.nbrs if n in BACKBONE_ATOMS}
        queue = deque(["CA"])
        while queue:
            x = queue.popleft()
            for y in sorted(self.nbrs[x], key=self.key):
                if y not in seen:
                    seen.add(y)
                    parent[y], level[y] = x, level[x] + 1
                    order.append(y)
                    queue.append(y)
        if set(order) != set(self.placed):
            raise RuntimeError(f"atoms not reached from CA: {set(self.placed) - set(order)}")
        return parent, level, order

    def rings(self, parent: dict[str, str]) -> list[set[str]]:
        tree = {frozenset((p, c)) for c, p in parent.items()}
        rings = []
        for x in self.placed:
            for y in self.nbrs[x]:
                if frozenset((x, y)) in tree or (y in self.placed and y < x):
                    continue
                px, py = _path(x, parent), _path(y, parent)
                common = set(px) & set(py)
                ring = {n for n in px + py if n not in common}
                if common:
                    ring.add(next(n for n in px if n in common))
                rings.append(ring)
        return rings

    def sp2(self, name: str, aromatic: set[str]) -> bool:
        """Planar: aromatic, a carbon with three neighbours, or an N with three bonded to one."""
        if name in aromatic:
            return True
        trigonal = self.degree[name] == 3
        if self.element[name] == "C":
            return trigonal
        return (
            self.element[name] == "N"
            and trigonal
            and any(self.element[m] == "C" and self.degree[m] == 3 for m in self.nbrs[name])
        )

    def name_methylenes(self, parent: dict[str, str]) -> None:
        """Give each CH2's hydrogens their IUPAC names, as in deposited structures: the one named
        ...2 has a negative dihedral (c's parent, c's other heavy neighbour, c, H) (GLY: N, C, CA,
        HA2). addHydrogens names them as they fall; the two are equivalent in amber."""
        for c in self.placed + ["CA"]:
            hs = sorted(n for n in self.nbrs[c] if self.element[n] == "H")
            up = parent.get(c, "N")
            heavy = [n for n in self.nbrs[c] if self.element[n] != "H" and n != up]
            if (
                len(hs) == 2
                and len(heavy) == 1
                and torsion_of(self.pos, (up, heavy[0], c, hs[0])) > 0
            ):
                self.pos[hs[0]], self.pos[hs[1]] = self.pos[hs[1]], self.pos[hs[0]]

    def flatten(self, aromatic: set[str], mirrored: bool) -> None:
        """Project the aromatic system (ring atoms and their neighbours) onto its plane; with
        ``mirrored``, make it exactly symmetric about the axis through CG and the ring centre."""
        group = sorted(aromatic | {m for r in aromatic for m in self.nbrs[r]})
        points = np.stack([self.pos[n] for n in group])
        centre = points.mean(0)
        normal = np.linalg.svd(points - centre)[2][2]
        for n in group:
            self.pos[n] = self.pos[n] - float(np.dot(self.pos[n] - centre, normal)) * normal
        if not mirrored:
            return
        origin = self.pos["CG"]
        ex = np.mean([self.pos[n] for n in aromatic], axis=0) - origin
        ex /= np.linalg.norm(ex)
        ey = np.cross(normal, ex)
        xy = {n: (float(np.dot(self.pos[n] - origin, ex)), float(np.dot(self.pos[n] - origin, ey)))
              for n in group}  # fmt: skip
        for n in group:
            partner = n[:-1] + ("2" if n.endswith("1") else "1")
            if n[-1] in "12" and partner in xy:
                (x1, y1), (x2, y2) = xy[n], xy[partner]
                x, y = 0.5 * (x1 + x2), 0.5 * (y1 - y2)
            else:
                x, y = xy[n][0], 0.0
            self.pos[n] = origin + x * ex + y * ey


def _path(name: str, parent: dict[str, str]) -> list[str]:
    out = [name]
    while out[-1] in parent:
        out.append(parent[out[-1]])
    return out


def _template(
    variant: str,
    residue: app.Residue,
    xyz: np.ndarray,
    r0: dict[tuple[int, int], float],
    theta0: dict[tuple[int, int, int], float],
) -> Template:
    res = _Residue(residue, xyz)
    parent_name = RESIDUE_ALIASES.get(variant, variant)
    parent, level, order = res.tree()
    columns = [(f"chi{k + 1}", "chi", q) for k, q in enumerate(CHI_ATOMS.get(parent_name, ()))]
    if variant in ROTORS:
        columns.append((f"rotor {ROTORS[variant][3]}", "rotor", ROTORS[variant]))
    axes = {}
    for name, _, (a, b, c, d) in columns:
        if parent.get(d) != c or parent.get(c) != b or a not in res.nbrs[b]:
            raise RuntimeError(f"{variant} column {name} does not follow the tree")
        axes[b, c] = (name, a)
    for quad, sign in (_CHIRALITY[k] for k in ("*", parent_name) if k in _CHIRALITY):
        if all(n in res.pos for n in quad) and torsion_of(res.pos, quad) * sign < 0:
            raise RuntimeError(f"{variant}: wrong chirality (dihedral {'-'.join(quad)})")
    res.name_methylenes(parent)
    rings = res.rings(parent)
    ring_atoms = set().union(*rings)
    aromatic = set().union(*(r for r in rings if all(res.degree[n] <= 3 for n in r)))
    if aromatic:
        res.flatten(aromatic, variant in _MIRRORED)
    ideal = {name: torsion_of(res.pos, q) for name, _, q in columns}
    # Planar atoms whose three theta0 do not sum to 360 degrees take the relaxed compromise.
    strained = set()
    for c in res.placed:
        nbrs = [res.index[n] for n in res.nbrs[c]]
        if res.sp2(c, aromatic) and len(nbrs) == 3:
            x, y, z = nbrs
            total = theta0[x, res.index[c], y] + theta0[y, res.index[c], z]
            if abs(total + theta0[x, res.index[c], z] - 2.0 * math.pi) > 1e-6:
                strained.add(c)

    refs: dict[str, tuple[tuple[str, str, str], str | None]] = {}
    for d in order:
        c = parent[d]
        if c == "CA":
            refs[d] = (("C", "N", "CA"), None)
            continue
        b = parent[c]
        name, a = axes.get((b, c), (None, "N" if b == "CA" else parent[b]))
        refs[d] = ((a, b, c), name)

    # Torsions (column offsets where a column applies), measured, then made exact by group.
    torsion = {}
    for d, (abc, col) in refs.items():
        t = torsion_of(res.pos, (*abc, d))
        torsion[d] = 0.0 if col and d == _column_atom(columns, col) else t
        if col and d != _column_atom(columns, col):
            torsion[d] = wrap(t - ideal[col])
    groups: dict[tuple[str, str, str], list[str]] = {}
    for d in order:
        groups.setdefault(refs[d][0], []).append(d)
    for (_, b, c), members in groups.items():
        col = refs[members[0]][1]
        try:
            _snap_group(res, variant, b, c, members, col, columns, torsion, aromatic, ring_atoms)
        except RuntimeError as exc:
            raise RuntimeError(f"{variant}, atoms {members} placed from {b}-{c}: {exc}") from None

    entries = []
    for d in order:
        (a, b, c), col = refs[d]
        i = [res.index[n] for n in (b, c, d)]
        bond, angle = r0[i[1], i[2]], theta0[i[0], i[1], i[2]]
        if c in ring_atoms:
            bond = float(np.linalg.norm(res.pos[d] - res.pos[c]))
        if c in ring_atoms or c in strained:
            angle = bond_angle(res.pos[b], res.pos[c], res.pos[d])
        entries.append([d, a, b, c, bond, angle, torsion[d], col, level[d]])
    if variant in _MIRRORED:  # partners get their twin's values, not a round-off copy
        by_atom = {e[0]: e for e in entries}
        for e in entries:
            twin = by_atom.get(e[0][:-1] + "1") if e[0].endswith("2") else None
            if twin is not None and e[3] in aromatic:
                e[4], e[5] = twin[4], twin[5]

    rank = {n: k for k, n in enumerate(("N", "CA", "C", *order))}
    bonds = [
        [x, y, r0[res.index[x], res.index[y]]]
        for x in rank
        for y in res.nbrs[x]
        if rank[x] < rank.get(y, -1) and (x in res.placed or y in res.placed)
    ]
    name_of = {i: n for n, i in res.index.items()}
    angles = []
    for (i, j, m), value in sorted(theta0.items()):
        triple = [name_of.get(k) for k in (i, j, m)]
        if None not in triple and i < m and any(n in res.placed for n in triple):
            angles.append([*triple, value])
    periodicity = {}
    for sym in SYMMETRIES.get(variant, ()):
        for name, shift in sym:
            periodicity[name] = round(2.0 * math.pi / shift)
    data = {
        "parent": parent_name,
        "entries": entries,
        "columns": [
            [name, kind, list(q), periodicity.get(name, 1), variant not in UNSAMPLED, ideal[name]]
            for name, kind, q in columns
        ],
        "symmetries": [[list(s) for s in sym] for sym in SYMMETRIES.get(variant, ())],
        "bonds": bonds,
        "angles": angles,
        "backbone": [res.pos[n].tolist() for n in ("N", "CA", "C")],
    }
    return template_from_json(variant, data)


def _column_atom(columns: list, name: str) -> str:
    return next(q[3] for n, _, q in columns if n == name)


def _snap_group(
    res: _Residue,
    variant: str,
    b: str,
    c: str,
    members: list[str],
    col: str | None,
    columns: list,
    torsion: dict[str, float],
    aromatic: set[str],
    ring_atoms: set[str],
) -> None:
    """Set the exact dihedrals of one group of atoms placed from the same (a, b, c)."""
    hydrogens = [d for d in members if res.element[d] == "H"]
    heavy = [d for d in members if res.element[d] != "H"]
    if col is not None and _column_atom(columns, col) in members:
        first = _column_atom(columns, col)
    else:
        first = members[0]
    if res.sp2(c, aromatic):
        # Planar: partners exactly pi apart; across two sp2 atoms the dihedral is 0 or pi.
        if len(members) > 2:
            raise RuntimeError(f"{variant}: sp2 atom {c} with {len(members)} children")
        named = [d for d in members if d in _NH2_FIRST]
        if named:
            first = named[0]
            torsion[first] = wrap(_NH2_FIRST[first])
        elif col is None and res.sp2(b, aromatic):
            torsion[first] = _snap(torsion[first], round(torsion[first] / math.pi) * math.pi)
        for d in members:
            if d != first:
                torsion[d] = (
                    wrap(torsion[first] + math.pi)
                    if named
                    else _snap(torsion[d], torsion[first] + math.pi)
                )
    elif c in ring_atoms:
        return  # proline's puckered ring keeps its relaxed geometry
    elif res.element[c] == "O" and res.sp2(b, aromatic) and col is None:
        # The carboxylic acid of ASH / GLH: syn, H cis to the other oxygen (trans to the carbon).
        (d,) = members
        torsion[d] = -math.pi  # pi, in [-pi, pi)
    elif len(hydrogens) == 3:
        sign = 1.0 if wrap(torsion[hydrogens[1]] - torsion[hydrogens[0]]) > 0 else -1.0
        if first in hydrogens and col is not None:
            hydrogens.remove(first)
            hydrogens.insert(0, first)
        step = sign * 2.0 * math.pi / 3.0
        tolerance = _SNAP_TOLERANCE
        if col is not None:
            base = torsion[hydrogens[0]]
        else:
            # Staggered: one hydrogen anti to a, the others 60 degrees either side of a. The
            # relaxation has no term that turns the group, so it lies where it started.
            mean = _circular_mean([torsion[h] - k * step for k, h in enumerate(hydrogens)])
            third = 2.0 * math.pi / 3.0
            base = math.pi / 3.0 + round((mean - math.pi / 3.0) / third) * third
            tolerance = math.pi / 3.0
        for k, h in enumerate(hydrogens):
            torsion[h] = _snap(torsion[h], base + k * step, tolerance)
    elif len(hydrogens) == 2 and (len(heavy) == 1 or (not heavy and c == "CA")):
        centre = torsion[heavy[0]] if heavy else 0.0  # GLY: mirror about the N-CA-C plane
        dev = [wrap(torsion[h] - centre) for h in hydrogens]
        if dev[0] * dev[1] >= 0 or abs(abs(dev[0]) - abs(dev[1])) > _SNAP_TOLERANCE:
            raise RuntimeError(f"{variant}: hydrogens {hydrogens} are not mirror images")
        half = 0.5 * (abs(dev[0]) + abs(dev[1]))
        torsion[hydrogens[0]] = wrap(centre + math.copysign(half, dev[0]))
        torsion[hydrogens[1]] = wrap(centre - math.copysign(half, dev[0]))


def _snap(measured: float, exact: float, tolerance: float = _SNAP_TOLERANCE) -> float:
    exact = wrap(exact)
    if abs(wrap(measured - exact)) > tolerance:
        raise RuntimeError(
            f"a relaxed dihedral {math.degrees(measured):.2f} deg is far from the exact "
            f"{math.degrees(exact):.2f} deg it should be"
        )
    return exact


def _circular_mean(values: list[float]) -> float:
    return math.atan2(sum(math.sin(v) for v in values), sum(math.cos(v) for v in values))
