"""Readers of the open data the rotamer library (and the transformer) learn from.

- ``top8000/rota8000-*.csv``: the Richardson Lab Top8000 rotamer rows (CC BY 4.0), already
  filtered by its authors (B <= 40, RSCC >= 0.7, no clashes): :func:`read_top8000`.
- ``structures/top240/*.pdb`` (and any PDB file): residues count as data only where every chi
  atom was *deposited* (pdbfixer rebuilds missing side chains from templates; those angles are not
  data) and no deposited heavy atom of the residue has a B-factor above :data:`B_FACTOR_MAX`
  (Top8000's residue filter): :func:`deposited_atoms`, :func:`chi_atoms_deposited`,
  :func:`structure_rows`, :func:`read_structures`.

The data folder is found through :func:`resolve_data_dir` (the ``PYSLICE_DATA`` setting); nothing is
ever copied into the package.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyslice._data import ENV_VAR
from pyslice._data import data_dir as _default_data_dir
from pyslice.geometry.angles import dihedral, wrap_angle
from pyslice.geometry.chis import CHI_ATOMS, parent_residue_name

if TYPE_CHECKING:
    from pyslice.structure.protein import Protein

__all__ = [
    "B_FACTOR_MAX",
    "TOP240",
    "TOP8000_FILES",
    "chi_atoms_deposited",
    "deposited_atoms",
    "read_structures",
    "read_top8000",
    "resolve_data_dir",
    "sha256_file",
    "sha256_files",
    "structure_files",
    "structure_rows",
]

#: Residues with a deposited heavy atom above this B-factor are not data (Top8000's filter).
B_FACTOR_MAX = 40.0

#: Top8000 files per residue type (all must exist for the type to come from Top8000).
TOP8000_FILES: dict[str, tuple[str, ...]] = {
    "ARG": ("rota8000-arg-1m.csv", "rota8000-arg-1p.csv", "rota8000-arg-1t.csv"),
    "CYS": ("rota8000-cys-noss.csv",),
    "GLN": ("rota8000-gln.csv",),
    "HIS": ("rota8000-his.csv",),
    "LYS": ("rota8000-lys.csv",),
    "MET": ("rota8000-met.csv",),
    "TRP": ("rota8000-trp.csv",),
}
#: The structures of every type Top8000 does not cover, relative to the data folder.
TOP240 = Path("structures") / "top240"

#: A data set's rows: ``chi (N, C)``, ``phi (N,)``, ``psi (N,)`` float64 radians in [-pi, pi).
Rows = dict[str, np.ndarray]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data folder: ``data_dir``, or the ``PYSLICE_DATA`` setting (else ``../shared/data``)
    when None. FileNotFoundError when it does not exist."""
    if data_dir is None:
        path = _default_data_dir(required=True)
        if path is None:  # required=True raises instead; this narrows the type
            raise FileNotFoundError(f"pyslice data folder not found (set {ENV_VAR})")
        return path
    if not isinstance(data_dir, (str, Path)):
        raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data_dir: folder {path} not found (it should hold top8000/ and structures/; the "
            f"default comes from {ENV_VAR})"
        )
    return path.resolve()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_files(paths: Sequence[Path]) -> str:
    """One digest of the files' names and contents (sorted by name)."""
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        digest.update(p.name.encode())
        digest.update(sha256_file(p).encode())
    return digest.hexdigest()


def read_top8000(path: Path, n_chi: int) -> Rows:
    """The rows of a Top8000 file with all ``n_chi`` chis defined (phi or psi may be NaN)."""
    values = []
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 3 + n_chi:
            continue
        wanted = fields[1 : 3 + n_chi]
        if any(f.strip() == "NULL" for f in wanted[2:]):
            continue
        try:
            values.append([float(f) if f.strip() != "NULL" else np.nan for f in wanted])
        except ValueError:
            continue  # a header or malformed line
    table = np.radians(np.asarray(values, dtype=np.float64).reshape(-1, 2 + n_chi))
    table = wrap_angle(torch.from_numpy(table)).numpy()
    return {"chi": table[:, 2:], "phi": table[:, 0], "psi": table[:, 1]}


def structure_files(root: Path, structures: Iterable[str | Path] | None) -> list[Path]:
    """The top240 files named by ``structures`` (names such as ``"1a2p"`` or ``"1a2p.pdb"``, or
    paths), or all of them when None."""
    folder = root / TOP240
    if structures is None:
        if not folder.is_dir():
            raise FileNotFoundError(f"structure folder {folder} not found")
        paths = sorted(folder.glob("*.pdb"))
        if not paths:
            raise FileNotFoundError(f"no .pdb files in {folder}")
        return paths
    if isinstance(structures, (str, Path)):
        structures = [structures]
    paths = []
    for item in structures:
        if not isinstance(item, (str, Path)):
            raise TypeError(f"structures must hold file names or paths, got {type(item).__name__}")
        candidates = [Path(item), folder / str(item), folder / f"{item}.pdb"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"structures: {item!s} not found (looked in {folder})")
        paths.append(found)
    return paths


def deposited_atoms(text: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """(chain, resSeq, iCode) -> {atom name: B-factor} of the first model's first altlocs of a
    PDB file's text."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for line in text.splitlines():
        record = line[:6]
        if record.startswith("ENDMDL"):
            break
        if record not in ("ATOM  ", "HETATM") or len(line) < 27:
            continue
        try:
            b = float(line[60:66])
        except ValueError:
            b = 0.0
        key = (line[21], line[22:26].strip(), line[26])
        out.setdefault(key, {}).setdefault(line[12:16].strip(), b)
    return out


def chi_atoms_deposited(parent: str, found: Mapping[str, float] | None) -> bool:
    """Whether a residue of type ``parent`` is data: every chi atom in ``found`` (its deposited
    atoms, :func:`deposited_atoms`; None: not deposited) and no deposited heavy atom above
    :data:`B_FACTOR_MAX`."""
    if found is None or any(a not in found for quad in CHI_ATOMS[parent] for a in quad):
        return False
    heavy = [b for name, b in found.items() if not name.startswith("H")]
    return not heavy or max(heavy) <= B_FACTOR_MAX


def structure_rows(protein: Protein, text: str) -> dict[str, list[tuple[np.ndarray, float, float]]]:
    """Per parent type, (chi, phi, psi) of the residues of ``protein`` (read from the PDB file
    ``text``) that are data (:func:`chi_atoms_deposited`)."""
    deposited = deposited_atoms(text)
    backbone = protein.backbone_dihedrals().numpy()
    xyz = protein.positions
    quads, owners = [], []
    for residue in protein.topology.residues():
        parent = parent_residue_name(residue.name)
        if parent not in CHI_ATOMS:
            continue
        atoms = {a.name: a.index for a in residue.atoms()}
        found = deposited.get((residue.chain.id, residue.id, residue.insertionCode or " "))
        names = {n for quad in CHI_ATOMS[parent] for n in quad}
        if any(n not in atoms for n in names) or not chi_atoms_deposited(parent, found):
            continue
        owners.append((parent, residue.index, len(CHI_ATOMS[parent])))
        quads.extend([atoms[n] for n in quad] for quad in CHI_ATOMS[parent])
    out: dict[str, list] = {}
    if not quads:
        return out
    index = torch.tensor(quads, dtype=torch.int64)
    chi = dihedral(xyz[index[:, 0]], xyz[index[:, 1]], xyz[index[:, 2]], xyz[index[:, 3]]).numpy()
    start = 0
    for parent, r, n in owners:
        out.setdefault(parent, []).append(
            (chi[start : start + n], float(backbone[r, 0]), float(backbone[r, 1]))
        )
        start += n
    return out


def read_structures(
    paths: Sequence[Path],
    wanted: set[str],
    failed: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Rows]:
    """The rows of the residue types ``wanted`` in the PDB files ``paths``. Files that do not
    read are recorded in ``failed`` (name -> first line of the error) and skipped."""
    from pyslice.structure.protein import Protein

    collected: dict[str, list] = {name: [] for name in wanted}
    for i, path in enumerate(paths):
        t0 = time.time()
        try:
            # unknown="freeze": a non-standard residue (a ligand inside a chain) stays, frozen;
            # the standard residues around it still count.
            protein = Protein.from_pdb(path, unknown="freeze")
        except ValueError as exc:
            failed[path.name] = str(exc).splitlines()[0]
            say(f"skipped {path.name}: {failed[path.name]}")
            continue
        found = structure_rows(protein, path.read_text())
        for name in wanted:
            collected[name].extend(found.get(name, []))
        say(f"read {path.name} ({i + 1}/{len(paths)}) in {time.time() - t0:.1f} s")
    out = {}
    for name, items in collected.items():
        n_chi = len(CHI_ATOMS[name])
        out[name] = {
            "chi": np.asarray([c for c, _, _ in items], dtype=np.float64).reshape(-1, n_chi),
            "phi": np.asarray([p for _, p, _ in items], dtype=np.float64),
            "psi": np.asarray([s for _, _, s in items], dtype=np.float64),
        }
    return out
