"""Protein structures: read PDB/PDBx files through OpenMM and pdbfixer, build ideal peptides, write
PDB and DCD files.

Units are OpenMM's: positions in nm, angles in radians, wrapped to [-pi, pi).

What reading does, in order (``Protein.from_pdb`` / ``Protein.from_pdbx``):

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
import functools
import io
import math
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pyslice import _checks
from pyslice.io.files import atomic_write

if TYPE_CHECKING:
    from openmm.app import ForceField, Topology

    from pyslice.geometry.builder import SideChainBuilder

__all__ = ["AMINO_ACIDS", "CAPS", "DEFAULT_FORCEFIELD", "Protein"]

#: Three-letter to one-letter codes of the 20 standard amino acids.
AMINO_ACIDS: dict[str, str] = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip
_ONE_TO_THREE = {one: three for three, one in AMINO_ACIDS.items()}
#: Terminal caps that amber14 parametrises; kept, never movable.
CAPS = frozenset({"ACE", "NME", "NH2"})
DEFAULT_FORCEFIELD = ("amber14-all.xml",)
_WATER = "HOH"
_BACKBONE = ("N", "CA", "C")
# A peptide C-N bond is 0.133 nm; anything over 0.2 nm is a chain break.
_PEPTIDE_BOND_MAX_NM = 0.2
# Seed for OpenMM's random hydrogen starts and pdbfixer's relaxation: reading is reproducible.
_SEED = 20240601

# Engh & Huber (1991) backbone geometry (nm, degrees) for Protein.from_sequence.
_N_CA, _CA_C, _C_N, _C_O = 0.1458, 0.1525, 0.1329, 0.1231
_N_CA_C, _CA_C_N, _C_N_CA, _CA_C_O = 111.2, 116.2, 121.7, 120.1
_HELIX = (-57.0, -47.0)
_EXTENDED = (180.0, 180.0)
# Proline's ring ties phi near -63 degrees; the presets use that value for every proline.
_PRO_PHI = -63.0
_PRO_PHI_TOLERANCE = 45.0

PathOrFile = str | os.PathLike | IO[str]


# --------------------------------------------------------------------------------------------
# The Protein
# --------------------------------------------------------------------------------------------


class Protein:
    """One protein structure with hydrogens: an OpenMM topology and its positions.

    Build one with :meth:`from_pdb`, :meth:`from_pdbx` or :meth:`from_sequence`; the constructor
    takes a ready topology (for example from ``openmm.app.Modeller``) as it is.

    Attributes:
        topology: ``openmm.app.Topology``; atom ``i`` of the topology is row ``i`` of positions.
        positions: ``(N, 3) float64`` tensor, nm (a copy on every access).
        forcefield: the OpenMM force-field files the hydrogens were built for.
        movable: indices of the residues whose side chains may move (standard amino acids only;
            the :attr:`builder` moves those with chi angles, so not GLY, ALA, nor PRO, whose ring
            it keeps, nor a cysteine in a disulfide).
    """

    def __init__(
        self,
        topology: Topology,
        positions: object,
        *,
        movable: Iterable[int] | None = None,
        forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
    ) -> None:
        from openmm.app import Topology

        if not isinstance(topology, Topology):
            raise TypeError(
                f"topology must be an openmm.app.Topology, got {type(topology).__name__}"
            )
        self._topology = topology
        self._positions = _positions_tensor("positions", positions, topology.getNumAtoms())
        self._forcefield = _forcefield_files(forcefield)
        self._residues = list(topology.residues())
        self._movable = _movable_residues(self._residues, movable)
        self._builder: SideChainBuilder | None = None

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_pdb(
        cls,
        path_or_file: PathOrFile,
        *,
        ph: float = 7.0,
        forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
        keep_water: bool = False,
        unknown: Literal["error", "freeze"] = "error",
        movable: Iterable[int] | None = None,
    ) -> Protein:
        """Read a PDB file (a path or an open text file), complete it and add hydrogens.

        See the module docstring for each step. ``forcefield`` names the OpenMM XML files the
        hydrogens are built for (the default, amber14, has no water model: add one, e.g.
        ``("amber14-all.xml", "amber14/tip3pfb.xml")``, with ``keep_water=True``). ``movable``
        holds residue indices of the *returned* protein (after waters and ligands are removed);
        None means every standard amino acid. Multi-model files: the first model is read.

        Raises:
            FileNotFoundError: the path does not exist.
            ValueError: the file is empty, truncated, not a protein, has a residue without its
                backbone atoms, or an unknown residue (with ``unknown="error"``).
        """
        return cls._read(path_or_file, "pdb", ph, forcefield, keep_water, unknown, movable)

    @classmethod
    def from_pdbx(
        cls,
        path_or_file: PathOrFile,
        *,
        ph: float = 7.0,
        forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
        keep_water: bool = False,
        unknown: Literal["error", "freeze"] = "error",
        movable: Iterable[int] | None = None,
    ) -> Protein:
        """Read a PDBx/mmCIF file; otherwise exactly :meth:`from_pdb`."""
        return cls._read(path_or_file, "pdbx", ph, forcefield, keep_water, unknown, movable)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> Protein:
        """:meth:`from_pdbx` for ``.cif``/``.pdbx`` paths, :meth:`from_pdb` otherwise
        (``kwargs`` go to the reader)."""
        suffix = Path(path).suffix.lower()
        reader = cls.from_pdbx if suffix in (".cif", ".pdbx") else cls.from_pdb
        return reader(path, **kwargs)

    @classmethod
    def from_sequence(
        cls,
        seq: str,
        backbone: str | tuple[object, object] = "helix",
        *,
        ph: float = 7.0,
        forcefield: str | Sequence[str] = DEFAULT_FORCEFIELD,
        movable: Iterable[int] | None = None,
    ) -> Protein:
        """A single-chain peptide with ideal geometry and charged termini (NH3+ ... COO-).

        Args:
            seq: one-letter codes of the 20 standard amino acids, at least two (amber14 has no
                template for a lone zwitterionic residue), e.g. ``"ACDEFGHIKLMNPQRSTVWY"``.
            backbone: ``"helix"`` (phi, psi = -57, -47 degrees), ``"extended"`` (180, 180), or a
                pair ``(phi, psi)`` in radians, each a number or ``(len(seq),)`` values. phi of the
                first residue has no effect; psi of the last orients its carboxylate. The presets
                give every proline phi = -63 degrees (its ring allows nothing else); explicit values
                for a proline must lie within 45 degrees of that. omega is 180 degrees (trans).

        Geometry: the backbone (N, CA, C, O) comes from Engh & Huber bond lengths and angles; the
        side chains come from pdbfixer's templates and the hydrogens from OpenMM; then every atom
        except N, CA and C is relaxed onto the force field's equilibrium bond lengths and angles
        (its HarmonicBondForce and HarmonicAngleForce only), so phi, psi and omega are exactly as
        asked and bond lengths match the force field's r0 within 0.0013 nm (the largest deviations
        are on the backbone, where Engh & Huber and amber differ, and in proline's ring).
        Side-chain chi angles are those of the templates; set them with :meth:`build`. Residues
        are numbered from 1 in chain A.
        """
        if not isinstance(seq, str):
            raise TypeError(f"seq must be a str of one-letter codes, got {type(seq).__name__}")
        for i, letter in enumerate(seq):
            if letter not in _ONE_TO_THREE:
                raise ValueError(
                    f"seq: unknown one-letter code {letter!r} at position {i} (expected one of "
                    f"{''.join(sorted(_ONE_TO_THREE))})"
                )
        if len(seq) < 2:
            raise ValueError(
                f"seq must hold at least 2 residues (amber14 has no template for a lone "
                f"zwitterionic amino acid), got {len(seq)}"
            )
        phi, psi = _backbone_angles(seq, backbone)
        backbone_xyz = _ideal_backbone(phi, psi)
        text = _backbone_pdb(seq, backbone_xyz)
        protein = cls._read(io.StringIO(text), "pdb", ph, forcefield, False, "error", movable)
        # The backbone went through PDB text (1e-4 nm): put back the exact positions.
        positions = protein._positions.numpy().copy()
        for atom in protein.topology.atoms():
            if atom.name in _BACKBONE_ATOMS:
                positions[atom.index] = backbone_xyz[
                    atom.residue.index, _BACKBONE_ATOMS.index(atom.name)
                ]
        positions = _relax_to_equilibrium(protein.topology, positions, protein.forcefield)
        return protein.with_positions(positions)

    @classmethod
    def _read(
        cls,
        source: PathOrFile,
        fmt: Literal["pdb", "pdbx"],
        ph: float,
        forcefield: str | Sequence[str],
        keep_water: bool,
        unknown: str,
        movable: Iterable[int] | None,
    ) -> Protein:
        ph = _checks.check_float("ph", ph)
        if not 0.0 <= ph <= 14.0:
            raise ValueError(f"ph must be in [0, 14], got {ph}")
        files = _forcefield_files(forcefield)
        if not isinstance(keep_water, bool):
            raise TypeError(f"keep_water must be a bool, got {type(keep_water).__name__}")
        if unknown not in ("error", "freeze"):
            raise ValueError(f"unknown must be 'error' or 'freeze', got {unknown!r}")
        name, text = _read_text(source, "path_or_file")
        topology, positions = _complete(text, fmt, name, ph, files, keep_water, unknown)
        return cls(topology, positions, movable=movable, forcefield=files)

    # ---------------------------------------------------------------- basic attributes

    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def positions(self) -> torch.Tensor:
        """``(N, 3) float64`` positions, nm (a copy: :meth:`with_positions` changes them)."""
        return self._positions.clone()

    @property
    def forcefield(self) -> tuple[str, ...]:
        return self._forcefield

    @property
    def n_atoms(self) -> int:
        return self._topology.getNumAtoms()

    @property
    def n_residues(self) -> int:
        return len(self._residues)

    @property
    def residue_names(self) -> list[str]:
        """Residue names in topology order (PDB names: HIS and CYS whatever their variant)."""
        return [r.name for r in self._residues]

    @property
    def sequence(self) -> str:
        """One-letter sequence, chains separated by '/'; caps and water left out, others 'X'."""
        chains = []
        for chain in self._topology.chains():
            letters = [
                AMINO_ACIDS.get(r.name, "X")
                for r in chain.residues()
                if r.name not in CAPS and r.name != _WATER
            ]
            if letters:
                chains.append("".join(letters))
        return "/".join(chains)

    @property
    def movable(self) -> tuple[int, ...]:
        """Indices of the residues whose side chains may move, ascending."""
        return self._movable

    def with_positions(self, positions: object) -> Protein:
        """The same protein (topology, movable residues) at new ``(N, 3)`` positions in nm."""
        return type(self)(
            self._topology,
            _positions_tensor("positions", positions, self.n_atoms),
            movable=self._movable,
            forcefield=self._forcefield,
        )

    def __repr__(self) -> str:
        seq = self.sequence
        if len(seq) > 40:
            seq = seq[:37] + "..."
        return f"Protein(n_residues={self.n_residues}, n_atoms={self.n_atoms}, sequence={seq!r})"

    # ---------------------------------------------------------------- dihedrals

    def backbone_dihedrals(self) -> torch.Tensor:
        """``(n_residues, 3) float64``: phi, psi, omega of every residue in radians, [-pi, pi).

        phi(i) = C(i-1)-N(i)-CA(i)-C(i), psi(i) = N(i)-CA(i)-C(i)-N(i+1) and omega(i) =
        CA(i-1)-C(i-1)-N(i)-CA(i), the peptide bond *before* residue i (the one that is cis
        before a cis-proline). Neighbours count only when peptide-bonded in the topology (an ACE cap
        stands in with its CH3, an NME cap with its N). NaN where undefined: phi and omega at chain
        starts, psi at chain ends, all three for caps, water and unknown residues.
        """
        n = len(self._residues)
        index = np.full((n, 3, 4), -1, dtype=np.int64)
        bonded: dict[int, list] = {}
        for a, b in self._topology.bonds():
            bonded.setdefault(a.index, []).append(b)
            bonded.setdefault(b.index, []).append(a)
        for i, residue in enumerate(self._residues):
            if residue.name not in AMINO_ACIDS:
                continue
            atoms = {atom.name: atom.index for atom in residue.atoms()}
            if any(name not in atoms for name in _BACKBONE):  # a topology built elsewhere
                continue
            n_i, ca_i, c_i = atoms["N"], atoms["CA"], atoms["C"]
            prev_c = _bonded_atom(bonded, n_i, "C", residue)
            next_n = _bonded_atom(bonded, c_i, "N", residue)
            if prev_c is not None:
                index[i, 0] = (prev_c.index, n_i, ca_i, c_i)
                prev_ca = _atom_named(prev_c.residue, ("CA", "CH3"))
                if prev_ca is not None:
                    index[i, 2] = (prev_ca, prev_c.index, n_i, ca_i)
            if next_n is not None:
                index[i, 1] = (n_i, ca_i, c_i, next_n.index)
        return torch.from_numpy(_dihedrals(self._positions.numpy(), index))

    # ---------------------------------------------------------------- side chains

    @property
    def builder(self) -> SideChainBuilder:
        """The batched side-chain builder for this protein's movable residues (made once)."""
        if self._builder is None:
            from pyslice.geometry.builder import SideChainBuilder

            self._builder = SideChainBuilder(
                self._topology, self._positions, movable=list(self._movable)
            )
        return self._builder

    @property
    def n_chi(self) -> int:
        return self.builder.n_chi

    @property
    def chi_index(self) -> torch.Tensor:
        """``(n_chi, 2) int64``: residue index and chi number (0-based) of each chi angle."""
        return self.builder.chi_index

    @property
    def pi_periodic(self) -> torch.Tensor:
        """``(n_chi,) bool``: chi angles whose density repeats every pi (ASP chi2, PHE chi2...)."""
        return self.builder.pi_periodic

    def chi_angles(self) -> torch.Tensor:
        """``(n_chi,)``: the side-chain dihedrals of the movable residues, radians."""
        return self.builder.chi_angles()

    def build(self, chi: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """``(B, N, 3)`` positions in nm with the side chains set to ``chi: (B, n_chi)`` radians."""
        return self.builder.build(chi, backend=backend)

    # ---------------------------------------------------------------- writers

    def to_pdb(self, path: str | os.PathLike, positions: object = None) -> None:
        """Write a PDB file: one model for ``(N, 3)`` positions (default: this protein's), or one
        MODEL/ENDMDL block per row of a ``(B, N, 3)`` batch. Positions in nm. The file appears
        whole or not at all (written to a temporary file beside it, then renamed)."""
        from openmm import unit
        from openmm.app import PDBFile

        single = positions is None or _ndim(positions) == 2
        batch = self._batch("positions", positions)

        def write(file: IO[str]) -> None:
            PDBFile.writeHeader(self._topology, file)
            for k, frame in enumerate(batch):
                quantity = unit.Quantity(frame, unit.nanometer)
                model = None if single else k + 1
                PDBFile.writeModel(self._topology, quantity, file, modelIndex=model, keepIds=True)
            PDBFile.writeFooter(self._topology, file)

        atomic_write(path, "w", write)

    def to_dcd(self, path: str | os.PathLike, positions: object) -> None:
        """Write a DCD trajectory: one frame per row of ``(B, N, 3)`` positions (or one frame for
        ``(N, 3)``), nm (DCD stores Angstrom). The nominal time step is 1 ps. Atomic like
        :meth:`to_pdb`."""
        from openmm import unit
        from openmm.app import DCDFile

        if positions is None:
            raise ValueError("positions must be given: (B, N, 3) or (N, 3) in nm, got None")
        batch = self._batch("positions", positions)

        def write(file: IO[bytes]) -> None:
            dcd = DCDFile(file, self._topology, 1.0 * unit.picosecond)
            for frame in batch:
                dcd.writeModel(unit.Quantity(frame, unit.nanometer))

        atomic_write(path, "wb", write)

    def _batch(self, name: str, positions: object) -> np.ndarray:
        """``(B, N, 3) float64`` numpy positions from None, ``(N, 3)`` or ``(B, N, 3)``."""
        if positions is None:
            return self._positions.numpy()[None]
        tensor = _checks.as_float_tensor(name, positions, dtype=torch.float64)
        n = self.n_atoms
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tuple(tensor.shape[1:]) != (n, 3):
            raise ValueError(
                f"{name} must have shape (N, 3) or (B, N, 3) with N = {n} atoms, "
                f"got {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise ValueError(
                f"{name} must hold at least one frame, got shape {tuple(tensor.shape)}"
            )
        _checks.require_finite(name, tensor)
        return tensor.detach().cpu().numpy()


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _ndim(value: object) -> int:
    return value.ndim if hasattr(value, "ndim") else np.ndim(value)


def _positions_tensor(name: str, positions: object, n_atoms: int) -> torch.Tensor:
    """A contiguous ``(n_atoms, 3) float64`` CPU copy of positions in nm (Quantity accepted)."""
    from openmm import unit

    if unit.is_quantity(positions):
        positions = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
    tensor = _checks.as_float_tensor(name, positions, dtype=torch.float64)
    if tuple(tensor.shape) != (n_atoms, 3):
        raise ValueError(
            f"{name} must have shape ({n_atoms}, 3) (one row per atom, nm), "
            f"got {tuple(tensor.shape)}"
        )
    _checks.require_finite(name, tensor)
    return tensor.detach().to("cpu").clone().contiguous()


def _forcefield_files(forcefield: object) -> tuple[str, ...]:
    if isinstance(forcefield, (str, os.PathLike)):
        forcefield = (forcefield,)
    if not isinstance(forcefield, Sequence) or not forcefield:
        raise TypeError(
            f"forcefield must be a non-empty sequence of OpenMM XML file names, got {forcefield!r}"
        )
    files = tuple(os.fspath(f) if isinstance(f, os.PathLike) else f for f in forcefield)
    if not all(isinstance(f, str) for f in files):
        raise TypeError(f"forcefield must hold file names (str), got {forcefield!r}")
    return files


@functools.lru_cache(maxsize=8)
def _load_forcefield(files: tuple[str, ...]) -> ForceField:
    from openmm.app import ForceField

    try:
        return ForceField(*files)
    except Exception as exc:  # OpenMM raises plain Exception/ValueError/OSError here
        raise ValueError(f"forcefield {files!r} could not be loaded: {_first_line(exc)}") from None


def _movable_residues(residues: list, movable: Iterable[int] | None) -> tuple[int, ...]:
    amino = [r.index for r in residues if r.name in AMINO_ACIDS]
    if movable is None:
        return tuple(amino)
    if isinstance(movable, (str, bytes)) or not isinstance(movable, Iterable):
        raise TypeError(
            f"movable must be None or an iterable of residue indices, got {type(movable).__name__}"
        )
    allowed = set(amino)
    chosen = set()
    for value in movable:
        index = _checks.check_int("movable", value, low=0, high=len(residues))
        if index not in allowed:
            r = residues[index]
            raise ValueError(
                f"movable: residue {index} ({_describe(r)}) is not a standard amino acid and "
                "cannot move"
            )
        chosen.add(index)
    return tuple(sorted(chosen))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _describe(residue) -> str:
    """'chain A residue 45 LYS' (PDB chain id, residue number with insertion code, name)."""
    icode = (residue.insertionCode or "").strip()
    return f"chain {residue.chain.id or '?'} residue {residue.id}{icode} {residue.name}"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read_text(source: PathOrFile, argname: str) -> tuple[str, str]:
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
            raise ValueError(f"{path}: not a text file (PDB and PDBx files are text)") from None
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
    fmt: str,
    name: str,
    ph: float,
    files: tuple[str, ...],
    keep_water: bool,
    unknown: str,
) -> tuple[Topology, list]:
    """Parse, clean, complete and protonate one structure (the steps of the module docstring)."""
    from openmm.app import Modeller
    from pdbfixer import PDBFixer

    if not text.strip():
        raise ValueError(f"{name}: the file is empty")
    if fmt == "pdb":
        _check_pdb_records(text, name)
    with _reproducible(_SEED) as platform:
        kind = "PDB" if fmt == "pdb" else "PDBx/mmCIF"
        try:
            handle = io.StringIO(text)
            if fmt == "pdb":
                fixer = PDBFixer(pdbfile=handle, platform=platform)
            else:
                fixer = PDBFixer(pdbxfile=handle, platform=platform)
        except Exception as exc:  # parsers raise anything from IndexError to KeyError
            if "no atoms" in str(exc):
                raise ValueError(f"{name}: no atoms found (is it a {kind} file?)") from None
            raise ValueError(f"{name}: could not be read as {kind}: {_first_line(exc)}") from None
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
                f"{name}: pdbfixer could not add missing atoms: {_first_line(exc)}"
            ) from None

        # Residues left that are not amino acids, caps or water are the frozen unknown ones.
        frozen = [
            r
            for r in fixer.topology.residues()
            if r.name not in AMINO_ACIDS and r.name not in CAPS and r.name != _WATER
        ]
        modeller = Modeller(fixer.topology, fixer.positions)
        # With an unknown residue the force field cannot build a System: OpenMM's generic
        # hydrogen placement stands in for the force-field minimisation.
        forcefield = None if frozen else _OnlyWhenAdding(_load_forcefield(files), modeller.topology)
        try:
            modeller.addHydrogens(forcefield, pH=ph, platform=platform)
        except Exception as exc:
            raise ValueError(
                f"{name}: adding hydrogens with forcefield {files!r} failed: {_first_line(exc)}"
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
            raise ValueError(
                f"{name}: unknown residue {_describe(residue)} (not a standard amino acid, and "
                "pdbfixer has no replacement for it); pass unknown='freeze' to keep it frozen"
            )
        missing = _missing_backbone(residue) if kind == "amino" else []
        if missing:
            raise ValueError(
                f"{name}: {_describe(residue)} is missing backbone atom(s) "
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
            elif residue.name == _WATER:
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
    return [a for a in _BACKBONE if a not in names]


def _peptide_bonded(first, second, xyz: np.ndarray) -> bool:
    c = _atom_named(first, ("C",))
    n = _atom_named(second, ("N",))
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


def _atom_named(residue, names: Sequence[str]) -> int | None:
    for atom in residue.atoms():
        if atom.name in names:
            return atom.index
    return None


def _bonded_atom(bonded: dict, index: int, name: str, residue):
    """The atom called ``name`` in another residue bonded to atom ``index``, or None."""
    for other in bonded.get(index, ()):
        if other.name == name and other.residue is not residue:
            return other
    return None


def _dihedrals(xyz: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, [-pi, pi)) of atom quadruples ``index (..., 4)``; -1 gives NaN."""
    valid = (index >= 0).all(axis=-1)
    p = xyz[np.where(index >= 0, index, 0)]
    b0 = p[..., 0, :] - p[..., 1, :]
    b1 = p[..., 2, :] - p[..., 1, :]
    b2 = p[..., 3, :] - p[..., 2, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
        # The outer bonds' components perpendicular to the central one.
        v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
        w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
        angle = np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))
    angle = np.where(angle >= math.pi, angle - 2 * math.pi, angle)
    return np.where(valid, angle, np.nan)


# --------------------------------------------------------------------------------------------
# Ideal peptides
# --------------------------------------------------------------------------------------------


def _backbone_angles(seq: str, backbone: object) -> tuple[np.ndarray, np.ndarray]:
    """(phi, psi) in radians, ``(len(seq),)`` each, from a preset name or explicit values."""
    n = len(seq)
    is_pro = np.array([letter == "P" for letter in seq])
    if isinstance(backbone, str):
        presets = {"helix": _HELIX, "extended": _EXTENDED}
        if backbone not in presets:
            raise ValueError(
                f"backbone must be 'helix', 'extended' or a (phi, psi) pair in radians, "
                f"got {backbone!r}"
            )
        phi_deg, psi_deg = presets[backbone]
        phi = np.where(is_pro, math.radians(_PRO_PHI), math.radians(phi_deg))
        return phi, np.full(n, math.radians(psi_deg))
    if not isinstance(backbone, (tuple, list)) or len(backbone) != 2:
        raise ValueError(
            "backbone must be 'helix', 'extended' or a (phi, psi) pair in radians, "
            f"got {type(backbone).__name__}"
            + (f" of length {len(backbone)}" if isinstance(backbone, (tuple, list)) else "")
        )
    angles = []
    for label, value in zip(("phi", "psi"), backbone):
        tensor = _checks.as_float_tensor(f"backbone {label}", value, dtype=torch.float64)
        if tensor.ndim == 0:
            tensor = tensor.expand(n)
        if tuple(tensor.shape) != (n,):
            raise ValueError(
                f"backbone {label} must be a number or have shape ({n},) (one per residue), "
                f"got {tuple(tensor.shape)}"
            )
        _checks.require_finite(f"backbone {label}", tensor)
        angles.append(tensor.numpy().copy())
    phi, psi = angles
    for i in np.flatnonzero(is_pro):
        if i == 0:  # the first residue's phi does not exist
            continue
        off = math.degrees(math.remainder(phi[i] - math.radians(_PRO_PHI), 2 * math.pi))
        if abs(off) > _PRO_PHI_TOLERANCE:
            raise ValueError(
                f"backbone phi of proline {i} is {math.degrees(phi[i]):.1f} degrees; its ring "
                f"allows only about {_PRO_PHI:.0f} +- {_PRO_PHI_TOLERANCE:.0f}"
            )
    return phi, psi


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float):
    """Atom d with |cd| = bond, angle bcd = angle and dihedral abcd = torsion (NeRF; radians)."""
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    local = (
        -math.cos(angle),
        math.sin(angle) * math.cos(torsion),
        math.sin(angle) * math.sin(torsion),
    )
    return c + bond * (local[0] * bc + local[1] * m + local[2] * n)


_BACKBONE_ATOMS = ("N", "CA", "C", "O")


def _ideal_backbone(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """``(n, 4, 3)`` N, CA, C, O positions (nm) of an ideal trans peptide with these angles."""
    rad = math.radians
    xyz = np.zeros((len(phi), 4, 3))
    angle = math.pi - rad(_N_CA_C)
    xyz[0, 1] = (_N_CA, 0.0, 0.0)
    xyz[0, 2] = xyz[0, 1] + _CA_C * np.array([math.cos(angle), math.sin(angle), 0.0])
    for i in range(len(phi)):
        if i > 0:
            n, ca, c = xyz[i - 1, :3]
            xyz[i, 0] = _place(n, ca, c, _C_N, rad(_CA_C_N), psi[i - 1])
            xyz[i, 1] = _place(ca, c, xyz[i, 0], _N_CA, rad(_C_N_CA), math.pi)
            xyz[i, 2] = _place(c, xyz[i, 0], xyz[i, 1], _CA_C, rad(_N_CA_C), phi[i])
        xyz[i, 3] = _place(*xyz[i, :3], _C_O, rad(_CA_C_O), psi[i] + math.pi)
    return xyz


def _backbone_pdb(seq: str, xyz: np.ndarray) -> str:
    """PDB text of the backbone atoms ``xyz (n, 4, 3)`` (nm) of chain A, numbered from 1."""
    lines = []
    for i, letter in enumerate(seq):
        for k, atom in enumerate(_BACKBONE_ATOMS):
            x, y, z = 10.0 * xyz[i, k]  # nm -> Angstrom
            lines.append(
                f"ATOM  {4 * i + k + 1:5d}  {atom:<3s} {_ONE_TO_THREE[letter]} A{i + 1:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {atom[0]}"
            )
    lines += ["TER", "END"]
    return "\n".join(lines) + "\n"


def _relax_to_equilibrium(
    topology: Topology, positions: np.ndarray, files: tuple[str, ...]
) -> np.ndarray:
    """Positions (nm) minimised under the force field's bonds and angles only, N/CA/C held fixed."""
    import openmm
    from openmm import app, unit

    system = _load_forcefield(files).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    for k in reversed(range(system.getNumForces())):
        force = system.getForce(k)
        if not isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce)):
            system.removeForce(k)
    for atom in topology.atoms():
        if atom.residue.name in AMINO_ACIDS and atom.name in _BACKBONE:
            system.setParticleMass(atom.index, 0.0)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(unit.Quantity(positions, unit.nanometer))
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
