"""Side-chain packing metrics: compare a predicted structure with the native one.

``evaluate(predicted, native)`` takes two structures of the same protein on the same backbone
(``Protein`` objects, or paths to PDB / PDBx files) and returns a JSON-ready dict:

- **chi accuracy**: a chi angle is correct when it is within ``threshold`` (20 degrees by default,
  inclusive) of the native's. The difference is wrapped to [-180, 180); for the pi-periodic chis of
  :data:`pyslice.geometry.PI_PERIODIC` (ASP chi2, GLU chi3, PHE chi2, TYR chi2) it is folded modulo
  180 degrees, since a half turn gives the same side chain. No other chi is folded: LEU, VAL, ILE
  and ARG are not symmetric under any chi rotation. ``chi1``, ``chi1+2``, ``chi1+2+3`` and
  ``chi1+2+3+4`` are the fractions of residues with at least k chis whose first k are all correct;
  ``all`` is the fraction of individual chi angles that are correct.
- **rotamer recovery**: the fraction of residues whose chis are all correct.
- **side-chain RMSD** (nm), per residue and pooled over all atoms: the heavy atoms other than N,
  CA, C, O and OXT (so CB counts), present in both structures, in the given frames (no
  superposition: the two share a backbone; ``backbone_rmsd_nm`` shows whether they do). Each
  residue's deviation is minimised over the renamings of chemically equivalent atoms: PHE and TYR
  (CD1/CD2 with CE1/CE2), ASP (OD1/OD2), GLU (OE1/OE2) and ARG (NH1/NH2). LEU CD1/CD2 and VAL
  CG1/CG2 are *not* swapped: they are prochiral, told apart by the stereochemistry of CG / CB.
- **clashes**: pairs of heavy atoms, at least one of them a side-chain atom (as above), closer
  than 100%, 90% and 80% of the sum of their Bondi (1964) van der Waals radii (C 1.70, N 1.55,
  O 1.52, S 1.80, Se 1.90 Angstrom), leaving out pairs within three bonds of each other in the
  covalent graph (1-2, 1-3 and 1-4 pairs, also across peptide and disulfide bonds; bonds from the
  topology). Counted in both structures, over the atoms of the matched residues only (no water
  or ligands), so the native's count is the reference for the predicted one.

Which residues count: residues are matched by chain id, residue number and insertion code; the
names must agree (protonation variants such as HIE/HID and CYX count as HIS and CYS; MSE counts
as MET with SE as SD), otherwise a ValueError names the first mismatch. Residues present in only
one of the structures are left out and listed under ``unmatched``. Chi and RMSD metrics cover the
matched residues with chi definitions (the 18 types of :data:`pyslice.geometry.CHI_ATOMS`, PRO
included); chi k of a residue counts only where its four atoms exist in both structures.

Reading paths: :func:`pyslice.structure.reading.parse_structure` (PDBx for ``.cif``, ``.mmcif`` and
``.pdbx``, the rule of every pyslice reader; PDB otherwise), first model, first alternate location,
*without* completion: missing atoms stay missing (they are left out, never rebuilt), hydrogens are
ignored. Protein objects are used as they are.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyslice import _checks
from pyslice.geometry.angles import dihedral_numpy
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, parent_residue_name
from pyslice.structure.reading import parse_structure
from pyslice.structure.residues import AMINO_ACIDS

__all__ = [
    "BONDI_RADII_NM",
    "CLASH_FRACTIONS",
    "SYMMETRIC_ATOMS",
    "DEFAULT_THRESHOLD",
    "clash_count",
    "evaluate",
    "format_report",
]

#: Bondi (1964) van der Waals radii in nm of the heavy elements of amino acids.
BONDI_RADII_NM: dict[str, float] = {"C": 0.170, "N": 0.155, "O": 0.152, "S": 0.180, "Se": 0.190}
#: Clash thresholds, as fractions of the sum of the two van der Waals radii.
CLASH_FRACTIONS: tuple[float, ...] = (1.0, 0.9, 0.8)
#: Chemically equivalent atom names per residue type: swapping every pair of a residue's list at
#: once gives the same molecule (a half turn of the last chi for PHE/TYR/ASP/GLU; the guanidinium
#: NH1/NH2 for ARG).
SYMMETRIC_ATOMS: dict[str, tuple[tuple[str, str], ...]] = {
    "PHE": (("CD1", "CD2"), ("CE1", "CE2")),
    "TYR": (("CD1", "CD2"), ("CE1", "CE2")),
    "ASP": (("OD1", "OD2"),),
    "GLU": (("OE1", "OE2"),),
    "ARG": (("NH1", "NH2"),),
}

_BACKBONE = frozenset({"N", "CA", "C", "O", "OXT"})
_BACKBONE_RMSD_ATOMS = ("N", "CA", "C", "O")
# Modified residues read as their parent, with atom renames.
_MODIFIED = {"MSE": ("MET", {"SE": "SD"})}
DEFAULT_THRESHOLD = 20.0
_ORDER_KEYS = ("chi1", "chi1+2", "chi1+2+3", "chi1+2+3+4")


# --------------------------------------------------------------------------------------------
# Structures as residues of named heavy atoms
# --------------------------------------------------------------------------------------------


@dataclass
class _Residue:
    key: tuple[str, str, str]  # chain id, residue number, insertion code
    name: str  # parent type (HIE -> HIS, MSE -> MET)
    atoms: dict[str, int]  # heavy-atom name -> row in _Structure.xyz

    def label(self) -> str:
        return _checks.residue_label(*self.key, self.name)


@dataclass
class _Structure:
    label: str
    xyz: np.ndarray  # (n_heavy, 3) nm
    element: list[str]
    residues: list[_Residue] = field(default_factory=list)
    bonds: list[tuple[int, int]] = field(default_factory=list)  # heavy-atom rows


def _is_hydrogen(atom: Any) -> bool:
    if atom.element is not None:
        return atom.element.symbol in ("H", "D")
    name = atom.name.lstrip("0123456789")
    return name.startswith(("H", "D"))


def _element(atom: Any) -> str:
    if atom.element is not None:
        return atom.element.symbol
    return atom.name.lstrip("0123456789")[:1]


def _load(source: object, label: str) -> _Structure:
    """The amino-acid heavy atoms of a Protein-like object (``.topology``/``.positions``) or a
    PDB/PDBx path."""
    if isinstance(source, (str, os.PathLike)):
        topology, positions = parse_structure(source, label)
        name = f"{label} ({os.fspath(source)})"
    elif hasattr(source, "topology") and hasattr(source, "positions"):
        topology = source.topology  # type: ignore[attr-defined]
        positions = source.positions  # type: ignore[attr-defined]
        name = label
    else:
        raise TypeError(
            f"{label} must be a pyslice.Protein or a path to a PDB/PDBx file, "
            f"got {type(source).__name__}"
        )
    n_atoms = topology.getNumAtoms()
    xyz = _checks.positions_tensor(f"{label} positions", positions, n_atoms).numpy()

    rows: list[int] = []
    row_of: dict[int, int] = {}
    element: list[str] = []
    residues: list[_Residue] = []
    seen: dict[tuple[str, str, str], _Residue] = {}
    for residue in topology.residues():
        parent = parent_residue_name(residue.name)
        renames: dict[str, str] = {}
        if parent in _MODIFIED:
            parent, renames = _MODIFIED[parent]
        if parent not in AMINO_ACIDS:
            continue
        chain = residue.chain.id if residue.chain is not None else ""
        key = (str(chain), str(residue.id), (residue.insertionCode or "").strip())
        res = _Residue(key, parent, {})
        if key in seen:
            raise ValueError(f"{name}: two residues are numbered {res.label()}")
        seen[key] = res
        for atom in residue.atoms():
            if _is_hydrogen(atom):
                continue
            atom_name = renames.get(atom.name, atom.name)
            if atom_name in res.atoms:
                continue  # a duplicated name: keep the first
            row_of[atom.index] = len(rows)
            res.atoms[atom_name] = len(rows)
            rows.append(atom.index)
            element.append(_element(atom))
        residues.append(res)
    if not residues:
        raise ValueError(f"{name}: no amino-acid residues found (is it a protein structure?)")
    bonds = []
    for a, b in topology.bonds():
        if a.index in row_of and b.index in row_of:
            bonds.append((row_of[a.index], row_of[b.index]))
    return _Structure(name, xyz[rows].copy(), element, residues, bonds)


def _match(
    predicted: _Structure, native: _Structure
) -> tuple[list[tuple[_Residue, _Residue]], dict[str, list[str]]]:
    by_key = {r.key: r for r in predicted.residues}
    pairs = []
    for res in native.residues:
        other = by_key.get(res.key)
        if other is None:
            continue
        if other.name != res.name:
            chain, number, icode = res.key
            raise ValueError(
                f"predicted and native differ at chain {chain or '?'} residue {number}{icode}: "
                f"{other.name} in the predicted structure, {res.name} in the native; they must "
                "be the same protein"
            )
        pairs.append((other, res))
    if not pairs:
        raise ValueError(
            "predicted and native have no residue in common (residues are matched by chain id, "
            "residue number and insertion code)"
        )
    native_keys = {r.key for r in native.residues}
    unmatched = {
        "predicted_only": [r.label() for r in predicted.residues if r.key not in native_keys],
        "native_only": [r.label() for r in native.residues if r.key not in by_key],
    }
    return pairs, unmatched


# --------------------------------------------------------------------------------------------
# Chi angles and RMSD
# --------------------------------------------------------------------------------------------


def _chis(structure: _Structure, residue: _Residue) -> list[float | None]:
    """The residue's chi angles (radians); None where one of the four atoms is missing."""
    quads = CHI_ATOMS[residue.name]
    present = [all(name in residue.atoms for name in quad) for quad in quads]
    rows = [[residue.atoms[name] for name in quad] for quad, ok in zip(quads, present) if ok]
    angles = iter(dihedral_numpy(structure.xyz[np.array(rows, dtype=np.int64).reshape(-1, 4)]))
    return [float(next(angles)) if ok else None for ok in present]


def _chi_error(predicted: float, native: float, pi_periodic: bool) -> float:
    """|predicted - native| in radians, wrapped (and folded modulo pi when pi-periodic)."""
    period = math.pi if pi_periodic else 2.0 * math.pi
    d = math.remainder(predicted - native, period)
    return abs(d)


def _sidechain_sq(
    predicted: _Structure, p_res: _Residue, native: _Structure, n_res: _Residue
) -> tuple[float, float, int]:
    """(min squared-deviation sum over symmetric renamings, the sum without renaming, n atoms)."""
    names = [a for a in n_res.atoms if a not in _BACKBONE and a in p_res.atoms]
    if not names:
        return 0.0, 0.0, 0
    nat = native.xyz[[n_res.atoms[a] for a in names]]

    def sq(mapping: dict[str, str]) -> float:
        pred = predicted.xyz[[p_res.atoms[mapping.get(a, a)] for a in names]]
        return float(((pred - nat) ** 2).sum())

    plain = sq({})
    best = plain
    pairs = SYMMETRIC_ATOMS.get(n_res.name, ())
    if pairs and all(a in names and b in names for a, b in pairs):
        swap = {}
        for a, b in pairs:
            swap[a], swap[b] = b, a
        best = min(best, sq(swap))
    return best, plain, len(names)


# --------------------------------------------------------------------------------------------
# Clashes
# --------------------------------------------------------------------------------------------


def _within_three_bonds(n_atoms: int, bonds: Iterable[tuple[int, int]]) -> list[set[int]]:
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for a, b in bonds:
        neighbours[a].append(b)
        neighbours[b].append(a)
    near: list[set[int]] = []
    for start in range(n_atoms):
        found = {start: 0}
        queue = deque([start])
        while queue:
            atom = queue.popleft()
            if found[atom] == 3:
                continue
            for other in neighbours[atom]:
                if other not in found:
                    found[other] = found[atom] + 1
                    queue.append(other)
        found.pop(start)
        near.append(set(found))
    return near


def clash_count(
    xyz: np.ndarray,
    element: Sequence[str],
    sidechain: np.ndarray,
    bonds: Iterable[tuple[int, int]],
    fractions: Sequence[float] = CLASH_FRACTIONS,
) -> list[int]:
    """Clashing pairs for each fraction (the rule of the module docstring).

    xyz: (n, 3) heavy-atom positions in nm; element: symbol per atom (radius from
    :data:`BONDI_RADII_NM`, 0.17 nm for anything else); sidechain: (n,) bool, pairs need at least
    one side-chain atom; bonds: covalent bonds as pairs of rows. Returns one count per fraction.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    sidechain = np.asarray(sidechain, dtype=bool)
    radius = np.array([BONDI_RADII_NM.get(e, BONDI_RADII_NM["C"]) for e in element])
    near = _within_three_bonds(n, bonds)
    counts = [0] * len(fractions)
    rows = np.flatnonzero(sidechain)
    reach = 2.0 * float(radius.max(initial=0.0)) * max(fractions, default=0.0)
    chunk = 256
    for start in range(0, len(rows), chunk):
        i = rows[start : start + chunk]
        d2 = ((xyz[i, None, :] - xyz[None, :, :]) ** 2).sum(-1)  # (c, n)
        # Each unordered pair once: a side-chain/side-chain pair from its lower row only.
        keep = (d2 < reach * reach) & ~(sidechain[None, :] & (np.arange(n)[None, :] <= i[:, None]))
        for a, b in zip(*np.nonzero(keep)):
            ia = int(i[a])
            jb = int(b)
            if jb == ia or jb in near[ia]:
                continue
            d = math.sqrt(d2[a, b])
            limit = radius[ia] + radius[jb]
            for k, f in enumerate(fractions):
                if d < f * limit:
                    counts[k] += 1
    return counts


def _clashes(structure: _Structure, residues: list[_Residue]) -> dict[str, int]:
    rows = sorted(row for r in residues for row in r.atoms.values())
    index = {row: k for k, row in enumerate(rows)}
    sidechain = np.zeros(len(rows), dtype=bool)
    for r in residues:
        for name, row in r.atoms.items():
            sidechain[index[row]] = name not in _BACKBONE
    bonds = [(index[a], index[b]) for a, b in structure.bonds if a in index and b in index]
    element = [structure.element[row] for row in rows]
    counts = clash_count(structure.xyz[rows], element, sidechain, bonds)
    return {f"{round(100 * f)}%": c for f, c in zip(CLASH_FRACTIONS, counts)}


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _fraction(good: int, total: int) -> float | None:
    return good / total if total else None


def evaluate(
    predicted: object, native: object, *, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Packing metrics of ``predicted`` against ``native`` (see the module docstring).

    Args:
        predicted, native: ``pyslice.Protein`` objects (anything with ``.topology`` and
            ``.positions`` in nm) or paths to PDB / PDBx files.
        threshold: chi tolerance in degrees, in (0, 180].

    Returns a JSON-ready dict: ``n_matched`` residues and ``n_evaluated`` (with chi definitions),
    ``unmatched`` (labels of residues in only one structure), ``threshold_degrees``,
    ``chi_accuracy`` and ``chi_counts`` (keys ``chi1``, ``chi1+2``, ``chi1+2+3``, ``chi1+2+3+4``,
    ``all``; accuracy None where nothing counts), ``rotamer_recovery`` with
    ``rotamer_recovery_count``, ``rmsd_nm`` (symmetry-corrected, pooled over atoms),
    ``rmsd_no_symmetry_nm``, ``backbone_rmsd_nm``, ``clashes`` (``predicted``/``native``: pair
    counts keyed ``"100%"``, ``"90%"``, ``"80%"``) and ``per_residue`` (one dict per evaluated
    residue: chain, residue, name, chi angles in degrees, chi errors, correct flags, recovered,
    rmsd_nm, n_atoms).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: an unreadable structure, residue names that differ at the same position, no
            residue in common, non-finite positions, a bad threshold.
        TypeError: an input that is neither a structure nor a path.
    """
    threshold = _checks.check_float("threshold", threshold)
    if not 0.0 < threshold <= 180.0:
        raise ValueError(f"threshold must be in (0, 180] degrees, got {threshold}")
    tol = math.radians(threshold)
    pred = _load(predicted, "predicted")
    nat = _load(native, "native")
    pairs, unmatched = _match(pred, nat)

    order_good = [0] * 4
    order_total = [0] * 4
    chi_good = chi_total = 0
    recovered = recovered_total = 0
    sq_sum = sq_plain_sum = 0.0
    n_atoms_total = 0
    per_residue: list[dict[str, Any]] = []
    for p_res, n_res in pairs:
        if n_res.name not in CHI_ATOMS:
            continue
        p_chi, n_chi = _chis(pred, p_res), _chis(nat, n_res)
        periodic = PI_PERIODIC[n_res.name]
        errors: list[float | None] = []
        correct: list[bool | None] = []
        for pc, nc, per in zip(p_chi, n_chi, periodic):
            if pc is None or nc is None:
                errors.append(None)
                correct.append(None)
                continue
            err = _chi_error(pc, nc, per)
            errors.append(math.degrees(err))
            correct.append(err <= tol + 1e-12)
            chi_total += 1
            chi_good += int(err <= tol + 1e-12)
        for k in range(len(correct)):
            first = correct[: k + 1]
            if any(c is None for c in first):
                break
            order_total[k] += 1
            order_good[k] += int(all(first))
        complete = all(c is not None for c in correct)
        if complete:
            recovered_total += 1
            recovered += int(all(correct))
        best, plain, n_atoms = _sidechain_sq(pred, p_res, nat, n_res)
        sq_sum += best
        sq_plain_sum += plain
        n_atoms_total += n_atoms
        chain, number, icode = n_res.key
        per_residue.append(
            {
                "chain": chain,
                "residue": f"{number}{icode}",
                "name": n_res.name,
                "chi_predicted": [None if c is None else math.degrees(c) for c in p_chi],
                "chi_native": [None if c is None else math.degrees(c) for c in n_chi],
                "chi_error_degrees": errors,
                "chi_correct": correct,
                "recovered": bool(all(correct)) if complete else None,
                "rmsd_nm": math.sqrt(best / n_atoms) if n_atoms else None,
                "n_atoms": n_atoms,
            }
        )

    bb_sq, bb_n = 0.0, 0
    for p_res, n_res in pairs:
        for name in _BACKBONE_RMSD_ATOMS:
            if name in p_res.atoms and name in n_res.atoms:
                d = pred.xyz[p_res.atoms[name]] - nat.xyz[n_res.atoms[name]]
                bb_sq += float(d @ d)
                bb_n += 1

    accuracy = {key: _fraction(order_good[k], order_total[k]) for k, key in enumerate(_ORDER_KEYS)}
    accuracy["all"] = _fraction(chi_good, chi_total)
    counts = dict(zip(_ORDER_KEYS, order_total))
    counts["all"] = chi_total
    matched_pred = [p for p, _ in pairs]
    matched_nat = [n for _, n in pairs]
    return {
        "predicted": pred.label,
        "native": nat.label,
        "n_matched": len(pairs),
        "n_evaluated": len(per_residue),
        "unmatched": unmatched,
        "threshold_degrees": threshold,
        "chi_accuracy": accuracy,
        "chi_counts": counts,
        "rotamer_recovery": _fraction(recovered, recovered_total),
        "rotamer_recovery_count": recovered_total,
        "rmsd_nm": math.sqrt(sq_sum / n_atoms_total) if n_atoms_total else None,
        "rmsd_no_symmetry_nm": math.sqrt(sq_plain_sum / n_atoms_total) if n_atoms_total else None,
        "rmsd_atoms": n_atoms_total,
        "backbone_rmsd_nm": math.sqrt(bb_sq / bb_n) if bb_n else None,
        "clashes": {
            "predicted": _clashes(pred, matched_pred),
            "native": _clashes(nat, matched_nat),
        },
        "per_residue": per_residue,
    }


# --------------------------------------------------------------------------------------------
# Report and command line
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def _angstrom(value_nm: float | None) -> str:
    return "n/a" if value_nm is None else f"{10.0 * value_nm:.3f} A"


def format_report(result: dict[str, Any], per_residue: bool = False) -> str:
    """A readable table of an :func:`evaluate` result."""
    lines = [
        f"predicted: {result['predicted']}",
        f"native:    {result['native']}",
        f"residues matched {result['n_matched']}, with chi angles {result['n_evaluated']}",
    ]
    for side in ("predicted_only", "native_only"):
        left = result["unmatched"][side]
        if left:
            shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
            lines.append(f"  left out ({side.replace('_', ' ')}): {len(left)}: {shown}")
    lines.append(f"backbone RMSD {_angstrom(result['backbone_rmsd_nm'])} (no superposition)")
    lines.append("")
    lines.append(f"chi accuracy (within {result['threshold_degrees']:g} degrees)")
    for key in (*_ORDER_KEYS, "all"):
        count = result["chi_counts"][key]
        if count:
            unit = "chi angles" if key == "all" else "residues"
            lines.append(
                f"  {key:12s} {_percent(result['chi_accuracy'][key]):>7s}  ({count} {unit})"
            )
    lines.append(
        f"rotamer recovery {_percent(result['rotamer_recovery'])} "
        f"({result['rotamer_recovery_count']} residues)"
    )
    lines.append(
        f"side-chain RMSD  {_angstrom(result['rmsd_nm'])} (without symmetric renaming "
        f"{_angstrom(result['rmsd_no_symmetry_nm'])}; {result['rmsd_atoms']} atoms)"
    )
    lines.append("")
    keys = list(result["clashes"]["predicted"])
    lines.append("clashes (heavy-atom pairs closer than f x Bondi radii sum)")
    lines.append("  " + " " * 10 + "".join(f"{k:>8s}" for k in keys))
    for side in ("predicted", "native"):
        counts = result["clashes"][side]
        lines.append(f"  {side:10s}" + "".join(f"{counts[k]:>8d}" for k in keys))
    if per_residue:
        lines.append("")
        lines.append(f"  {'chain':5s} {'res':>5s} {'name':4s}  {'chi errors (deg)':28s} RMSD (A)")
        for r in result["per_residue"]:
            errs = " ".join("  -  " if e is None else f"{e:5.1f}" for e in r["chi_error_degrees"])
            rmsd = "n/a" if r["rmsd_nm"] is None else f"{10.0 * r['rmsd_nm']:.3f}"
            mark = "" if r["recovered"] is None else (" ok" if r["recovered"] else " x")
            lines.append(
                f"  {r['chain']:5s} {r['residue']:>5s} {r['name']:4s}  {errs:28s} {rmsd}{mark}"
            )
    return "\n".join(lines)
