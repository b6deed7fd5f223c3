"""Reading PDB and PDBx/mmCIF files: the one PDB/PDBx rule set of pyslice.

Which files are PDBx: the suffixes of :data:`PDBX_SUFFIXES` (``.cif``, ``.mmcif``, ``.pdbx``, any
case); every other file is PDB. Every reader uses :func:`file_format`: ``Protein.from_file``, the
packing metrics and the command line.

Two ways to read:

- :func:`read_structure` (``Protein.from_pdb`` / ``from_pdbx`` / ``from_file``): parse, clean,
  complete with pdbfixer and add hydrogens, the steps below;
- :func:`parse_structure` (the packing metrics): parse only, the atoms as the file has them (step 1
  below, nothing removed, nothing rebuilt).

Both refuse a missing, empty, binary or truncated file with a ValueError (FileNotFoundError for a
missing path) naming it. Units are OpenMM's: positions in nm.

What :func:`read_structure` does, in order:

1. OpenMM parses the file (``PDBFile`` / ``PDBxFile``, through pdbfixer). Alternate locations:
   every atom keeps the position of its *first* record in the file (usually altloc A), whatever
   the occupancies; where altlocs hold different residue types (microheterogeneity) the residue
   type of the first record wins. The crystal unit cell (CRYST1) is dropped: a Protein is one
   molecule, not a periodic crystal.
2. Non-standard residues that pdbfixer knows (its substitution table and MODRES records, e.g.
   MSE -> MET) become the standard residue; their extra atoms are removed and missing ones rebuilt.
3. Water (unless ``keep_water``), ions, ligands, sugars and nucleic acids are removed, and so are
   caps (ACE, NME, NH2) that are not peptide-bonded to the chain. A residue that is neither a
   standard amino acid nor a cap but sits *inside* a peptide chain (it has N, CA and C and is
   peptide-bonded to a neighbour) is an unknown residue: a ValueError naming it, or with
   ``unknown="freeze"`` it stays, with its atoms, and is never movable. amber14 has no template for
   it, so ``ForceField.createSystem`` (and every energy built from it) refuses such a protein:
   freeze is for looking at structures, not for computing energies.
4. Every amino acid must have its backbone atoms N, CA and C: pdbfixer cannot rebuild a backbone,
   so a residue without them is a ValueError naming it (a missing O or OXT is rebuilt). The one
   exception: remains of residues at the ends of chains or beside missing residues (a jump in the
   residue numbers), e.g. the C and O left where a domain was cut out of a larger chain, are
   dropped; they have no side chain to sample.
5. Missing residues (gaps in the chain) are *not* rebuilt: the chain is split at every break (a
   C(i)-N(i+1) distance over 0.2 nm), and each piece gets charged termini (COO- with OXT, NH3+),
   keeping the chain id. A piece of a single amino acid, which no amber14 template describes, is
   removed. Bonds between chains (disulfides) are kept; a CONECT bond of an atom to itself (a
   disulfide with a crystal symmetry mate) is dropped, leaving a free cysteine.
6. pdbfixer adds missing heavy atoms (side chains, OXT) from its templates.
7. ``Modeller.addHydrogens(forcefield, pH=ph)`` adds the hydrogens: protonation states at the pH,
   CYX for disulfide-bonded cysteines (bonds from SSBOND/CONECT records and SG-SG proximity),
   HID or HIE for neutral histidines by hydrogen bonding. Residue names stay the PDB names (HIS,
   CYS): the variant shows in the hydrogens present. Hydrogens already in the file are kept (never
   removed, never moved); that is what makes a file pyslice wrote read back exactly. OpenMM places
   new hydrogens from random starts before minimising them; the random state is seeded here, so
   reading a file twice gives the same protein.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import numpy as np

from pyslice import _checks
from pyslice.structure.forcefields import (
    DEFAULT_FORCEFIELD,
    ForceFieldFiles,
    forcefield_files,
    load_forcefield,
)
from pyslice.structure.residues import AMINO_ACIDS, BACKBONE, CAPS, WATER, atom_index

if TYPE_CHECKING:
    from openmm.app import ForceField, Topology

__all__ = [
    "PDBX_SUFFIXES",
    "PathOrFile",
    "file_format",
    "parse_structure",
    "read_structure",
    "read_text",
]

#: File suffixes (compared lower-case) of PDBx/mmCIF files; every other file is read as PDB.
PDBX_SUFFIXES = (".cif", ".mmcif", ".pdbx")
# A peptide C-N bond is 0.133 nm; anything over 0.2 nm is a chain break.
_PEPTIDE_BOND_MAX_NM = 0.2
# Seed for OpenMM's random hydrogen starts and pdbfixer's relaxation: reading is reproducible.
_SEED = 20240601

PathOrFile = str | os.PathLike | IO[str]
Format = Literal["pdb", "pdbx"]
_KIND = {"pdb": "PDB", "pdbx": "PDBx/mmCIF"}


def file_format(path: str | os.PathLike) -> Format:
    """``"pdbx"`` for a path whose suffix is in :data:`PDBX_SUFFIXES` (any case), else ``"pdb"``."""
    return "pdbx" if Path(path).suffix.lower() in PDBX_SUFFIXES else "pdb"


def read_structure(
    source: PathOrFile,
    fmt: Format,
    *,
    ph: float = 7.0,
    forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
    keep_water: bool = False,
    unknown: Literal["error", "freeze"] = "error",
) -> tuple[Topology, object, tuple[str, ...]]:
    """Read, clean, complete and protonate one structure (the steps of the module docstring).

    source: a path or an open text file; fmt: ``"pdb"`` or ``"pdbx"``. Returns the topology, its
    positions (an OpenMM Quantity) and the force-field files the hydrogens were built for.
    """
    ph = _checks.check_float("ph", ph)
    if not 0.0 <= ph <= 14.0:
        raise ValueError(f"ph must be in [0, 14], got {ph}")
    files = forcefield_files(forcefield)
    if not isinstance(keep_water, bool):
        raise TypeError(f"keep_water must be a bool, got {type(keep_water).__name__}")
    if unknown not in ("error", "freeze"):
        raise ValueError(f"unknown must be 'error' or 'freeze', got {unknown!r}")
    if fmt not in _KIND:
        raise ValueError(f"fmt must be 'pdb' or 'pdbx', got {fmt!r}")
    name, text = read_text(source, "path_or_file")
    topology, positions = _complete(text, fmt, name, ph, files, keep_water, unknown)
    return topology, positions, files


def parse_structure(path: str | os.PathLike, argname: str = "path") -> tuple[Topology, np.ndarray]:
    """The topology and ``(N, 3) float64`` positions (nm) of a PDB/PDBx file as it is: first model,
    first alternate location, nothing removed or rebuilt (:func:`file_format` picks the parser).
    Messages name the file as ``argname (path)``."""
    from openmm import unit
    from openmm.app import PDBFile, PDBxFile

    fmt = file_format(path)
    name, text = read_text(path, argname)
    name = f"{argname} ({name})"
    _check_text(text, fmt, name)
    try:
        parsed = (PDBFile if fmt == "pdb" else PDBxFile)(io.StringIO(text))
        positions = parsed.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    except Exception as exc:  # parsers raise anything from IndexError to KeyError
        raise _unreadable(exc, name, fmt) from None
    return parsed.topology, np.asarray(positions, dtype=np.float64)


def _check_text(text: str, fmt: Format, name: str) -> None:
    """Refuse an empty file and, for PDB, a truncated one, before any parser sees it."""
    if not text.strip():
        raise ValueError(f"{name}: the file is empty")
    if fmt == "pdb":
        _check_pdb_records(text, name)


def _unreadable(exc: BaseException, name: str, fmt: Format) -> ValueError:
    """The error for a file the OpenMM parser rejected."""
    kind = _KIND[fmt]
    if "no atoms" in str(exc):
        return ValueError(f"{name}: no atoms found (is it a {kind} file?)")
    return ValueError(f"{name}: could not be read as {kind}: {_checks.exception_summary(exc)}")


def read_text(source: PathOrFile, argname: str) -> tuple[str, str]:
    """(a name for messages, the whole text) from a path or an open text file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            if path.exists():
                raise ValueError(f"{argname}: {path} is not a file")
            raise FileNotFoundError(f"{argname}: no such file: {path}")
        try:
            return str(path), path.read_text()
        except UnicodeDecodeError:
            raise ValueError(
                f"{argname}: {path} is not a text file (PDB and PDBx files are text)"
            ) from None
    if hasattr(source, "read"):
        text = source.read()
        if isinstance(text, bytes):
            try:
                text = text.decode()
            except UnicodeDecodeError:
                raise ValueError(f"{argname}: not a text file") from None
        if not isinstance(text, str):
            raise TypeError(f"{argname}.read() must return text, got {type(text).__name__}")
        return str(getattr(source, "name", "<file>")), text
    raise TypeError(f"{argname} must be a path or an open text file, got {type(source).__name__}")


def _check_pdb_records(text: str, name: str) -> None:
    """Catch a cut-off file early: every ATOM/HETATM record must reach its coordinates (54
    columns), and a last line without a newline must be a whole record (element column, 78)."""
    lines = text.splitlines()
    if not any(line.startswith(("ATOM", "HETATM")) for line in lines):
        raise ValueError(f"{name}: no atoms found (no ATOM or HETATM records: is it a PDB file?)")
    for number, line in enumerate(lines, start=1):
        if not line.startswith(("ATOM", "HETATM")):
            continue
        last = number == len(lines) and not text.endswith("\n")
        if len(line) < 54 or (last and len(line.rstrip()) < 78):
            raise ValueError(
                f"{name}: line {number} is an incomplete {line[:6].strip()} record "
                f"({len(line)} characters): the file looks truncated"
            )


def _complete(
    text: str,
    fmt: Format,
    name: str,
    ph: float,
    files: tuple[str, ...],
    keep_water: bool,
    unknown: str,
) -> tuple[Topology, list]:
    """Parse, clean, complete and protonate one structure (the steps of the module docstring)."""
    from openmm.app import Modeller
    from pdbfixer import PDBFixer

    _check_text(text, fmt, name)
    with _reproducible(_SEED) as platform:
        try:
            handle = io.StringIO(text)
            if fmt == "pdb":
                fixer = PDBFixer(pdbfile=handle, platform=platform)
            else:
                fixer = PDBFixer(pdbxfile=handle, platform=platform)
        except Exception as exc:  # parsers raise anything from IndexError to KeyError
            raise _unreadable(exc, name, fmt) from None
        fixer.topology.setPeriodicBoxVectors(None)

        fixer.findNonstandardResidues()
        # MODRES records also list standard residues (glycosylation sites: ASN -> ASN); replacing
        # those would only strip their deposited hydrogens.
        fixer.nonstandardResidues = [
            (residue, new) for residue, new in fixer.nonstandardResidues if residue.name != new
        ]
        fixer.replaceNonstandardResidues()
        topology, positions = _clean(fixer.topology, fixer.positions, name, keep_water, unknown)
        fixer.topology, fixer.positions = topology, positions

        # Gaps are not rebuilt (the chains were split at them), so no missing residues.
        fixer.missingResidues = {}
        try:
            fixer.findMissingAtoms()
            fixer.addMissingAtoms(seed=_SEED)
        except Exception as exc:
            raise ValueError(
                f"{name}: pdbfixer could not add missing atoms: {_checks.exception_summary(exc)}"
            ) from None

        # Residues left that are not amino acids, caps or water are the frozen unknown ones.
        frozen = [
            r
            for r in fixer.topology.residues()
            if r.name not in AMINO_ACIDS and r.name not in CAPS and r.name != WATER
        ]
        modeller = Modeller(fixer.topology, fixer.positions)
        # With an unknown residue the force field cannot build a System: OpenMM's generic
        # hydrogen placement stands in for the force-field minimisation.
        forcefield = None if frozen else _OnlyWhenAdding(load_forcefield(files), modeller.topology)
        try:
            modeller.addHydrogens(forcefield, pH=ph, platform=platform)
        except Exception as exc:
            raise ValueError(
                f"{name}: adding hydrogens with forcefield {files!r} failed: "
                f"{_checks.exception_summary(exc)}"
            ) from None
        return modeller.topology, modeller.positions


class _OnlyWhenAdding:
    """The force field, as ``Modeller.addHydrogens`` uses it: to build a System in which it
    minimises the hydrogens it added. Where it added none (a file pyslice wrote, read back), that
    System would move nothing, so an empty one stands in and the costly build is skipped."""

    def __init__(self, forcefield: ForceField, topology: Topology) -> None:
        self._forcefield = forcefield
        self._n_atoms = topology.getNumAtoms()

    def createSystem(self, topology: Topology, **kwargs):
        import openmm

        if topology.getNumAtoms() != self._n_atoms:
            return self._forcefield.createSystem(topology, **kwargs)
        system = openmm.System()
        for _ in range(self._n_atoms):
            system.addParticle(0.0)
        return system

    def __getattr__(self, name: str):
        return getattr(self._forcefield, name)


@contextlib.contextmanager
def _reproducible(seed: int):
    """Make reading give the same protein every time. OpenMM's addHydrogens starts hydrogens from
    Python's global ``random`` (seeded here, then restored), and the minimisations of OpenMM and
    pdbfixer run on a platform that sums forces in a fixed order: the CPU platform on one thread
    (several threads sum in a varying order, and a minimisation turns the last bits into hydrogens
    0.1 nm apart), else Reference. Yields that platform."""
    import openmm

    state = random.getstate()
    random.seed(seed)
    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    platform = openmm.Platform.getPlatformByName("CPU" if "CPU" in names else "Reference")
    threads = platform.getPropertyDefaultValue("Threads") if "CPU" in names else None
    if threads is not None:
        platform.setPropertyDefaultValue("Threads", "1")
    try:
        yield platform
    finally:
        random.setstate(state)
        if threads is not None:
            platform.setPropertyDefaultValue("Threads", threads)


def _clean(topology: Topology, positions, name: str, keep_water: bool, unknown: str):
    """A new topology without the removed residues, split at chain breaks; checks backbones."""
    from openmm import unit
    from openmm.app import Topology

    xyz = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
    kinds = _classify(topology, xyz)
    _mark_fragments(topology, kinds)
    for residue in topology.residues():
        kind = kinds[residue]
        if kind == "unknown" and unknown == "error":
            label = _checks.describe_residue(residue)
            raise ValueError(
                f"{name}: unknown residue {label} (not a standard amino acid, and pdbfixer has no "
                "replacement for it); pass unknown='freeze' to keep it frozen"
            )
        missing = _missing_backbone(residue) if kind == "amino" else []
        if missing:
            raise ValueError(
                f"{name}: {_checks.describe_residue(residue)} is missing backbone atom(s) "
                f"{', '.join(missing)}; pdbfixer cannot rebuild a backbone"
            )
    keep = {"amino", "cap", "unknown"} | ({"water"} if keep_water else set())

    # Pieces: runs of kept residues of a chain joined by peptide bonds; each becomes a chain.
    pieces: list[tuple[object, list]] = []
    for chain in topology.chains():
        previous = None  # the last polymer residue kept
        waters: list | None = None
        for residue in chain.residues():
            kind = kinds[residue]
            if kind not in keep:
                continue
            if kind == "water":  # the waters of one chain stay together
                if waters is None:
                    waters = []
                    pieces.append((chain, waters))
                waters.append(residue)
                continue
            if previous is not None and _peptide_bonded(previous, residue, xyz):
                pieces[-1][1].append(residue)
            else:
                pieces.append((chain, [residue]))
            previous = residue
    pieces = [(c, rs) for c, rs in pieces if not _lone_residue(rs, kinds)]
    if not any(kinds[r] == "amino" for _, rs in pieces for r in rs):
        found = _residue_census(topology)
        raise ValueError(f"{name}: not a protein: no amino-acid residues (found {found})")

    new = Topology()
    new_positions = []
    atom_map = {}
    for chain, residues in pieces:
        new_chain = new.addChain(chain.id)
        for residue in residues:
            new_residue = new.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            for atom in residue.atoms():
                atom_map[atom] = new.addAtom(atom.name, atom.element, new_residue, atom.id)
                new_positions.append(xyz[atom.index])
    chain_of = {atom_map[a]: atom_map[a].residue.chain for a in atom_map}
    for bond in topology.bonds():
        a, b = atom_map.get(bond.atom1), atom_map.get(bond.atom2)
        # A bond across a chain break (a long "peptide bond" over a gap) is dropped with the break;
        # disulfides and other cross-links between chains are kept.
        # A self-bond (CONECT to itself: a disulfide with a crystal symmetry mate) is dropped too.
        if a is None or b is None or a is b:
            continue
        if chain_of[a] is not chain_of[b] and {a.name, b.name} == {"C", "N"}:
            continue
        new.addBond(a, b, bond.type, bond.order)
    return new, unit.Quantity(np.asarray(new_positions), unit.nanometer)


def _classify(topology: Topology, xyz: np.ndarray) -> dict:
    """Residue -> 'amino', 'cap' (peptide-bonded ACE/NME/NH2), 'water', 'unknown' (amino-acid-like
    and peptide-bonded to a neighbour) or 'other' (ligands, ions, nucleic acids, loose caps)."""
    kinds = {}
    for chain in topology.chains():
        residues = list(chain.residues())
        for i, residue in enumerate(residues):
            linked = (i > 0 and _peptide_bonded(residues[i - 1], residue, xyz)) or (
                i + 1 < len(residues) and _peptide_bonded(residue, residues[i + 1], xyz)
            )
            if residue.name in AMINO_ACIDS:
                kinds[residue] = "amino"
            elif residue.name == WATER:
                kinds[residue] = "water"
            elif residue.name in CAPS:
                kinds[residue] = "cap" if linked else "other"
            else:
                backbone = not _missing_backbone(residue)
                kinds[residue] = "unknown" if backbone and linked else "other"
    return kinds


def _mark_fragments(topology: Topology, kinds: dict) -> None:
    """Mark as 'fragment' the amino acids without N, CA or C at the ends of chains and beside
    missing residues (a jump in residue numbers): the remains of residues cut off where a domain
    was excised or a loop is disordered. They carry no side chain and cannot be completed."""
    for chain in topology.chains():
        amino = [r for r in chain.residues() if kinds[r] == "amino"]
        segments, start = [], 0
        for i in range(1, len(amino) + 1):
            if i == len(amino) or _numbering_gap(amino[i - 1], amino[i]):
                segments.append(amino[start:i])
                start = i
        for segment in segments:
            for ordered in (segment, segment[::-1]):
                for residue in ordered:
                    if kinds[residue] == "fragment" or not _missing_backbone(residue):
                        break
                    kinds[residue] = "fragment"


def _numbering_gap(first, second) -> bool:
    try:
        return int(second.id) - int(first.id) > 1
    except ValueError:  # PDBx ids need not be numbers
        return False


def _missing_backbone(residue) -> list[str]:
    names = {atom.name for atom in residue.atoms()}
    return [a for a in BACKBONE if a not in names]


def _peptide_bonded(first, second, xyz: np.ndarray) -> bool:
    c = atom_index(first, ("C",))
    n = atom_index(second, ("N",))
    if c is None or n is None:
        return False
    return float(np.linalg.norm(xyz[c] - xyz[n])) <= _PEPTIDE_BOND_MAX_NM


def _lone_residue(residues: list, kinds: dict) -> bool:
    """A chain piece of one amino acid: no amber14 template (zwitterion) describes it."""
    return len(residues) == 1 and kinds[residues[0]] == "amino"


def _residue_census(topology: Topology) -> str:
    counts: dict[str, int] = {}
    for residue in topology.residues():
        counts[residue.name] = counts.get(residue.name, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{count} {name}" for name, count in top) or "nothing"
