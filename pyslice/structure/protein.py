"""The Protein: one structure with hydrogens (an OpenMM topology and its positions), its backbone
dihedrals, its side chains as chi angles (through the builder), and PDB/DCD writers.

Reading files lives in :mod:`pyslice.structure.reading` (the PDB/PDBx rules), ideal peptides in
:mod:`pyslice.structure.ideal`. Units are OpenMM's: positions in nm, angles in radians, wrapped to
[-pi, pi).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pyslice import _checks
from pyslice.geometry.angles import dihedral_numpy
from pyslice.geometry.builder import SideChainBuilder
from pyslice.io.files import atomic_write
from pyslice.structure.forcefields import DEFAULT_FORCEFIELD, ForceFieldFiles, forcefield_files
from pyslice.structure.ideal import ideal_peptide
from pyslice.structure.reading import PathOrFile, file_format, read_structure
from pyslice.structure.residues import AMINO_ACIDS, BACKBONE, CAPS, WATER, atom_index

if TYPE_CHECKING:
    from openmm.app import Topology

__all__ = ["Protein"]


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
        forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
    ) -> None:
        self._topology = _checks.check_topology("topology", topology)
        self._positions = _checks.positions_tensor("positions", positions, topology.getNumAtoms())
        self._forcefield = forcefield_files(forcefield)
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
        forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
        keep_water: bool = False,
        unknown: Literal["error", "freeze"] = "error",
        movable: Iterable[int] | None = None,
    ) -> Protein:
        """Read a PDB file (a path or an open text file), complete it and add hydrogens.

        See :mod:`pyslice.structure.reading` for each step. ``forcefield`` names the OpenMM XML
        files the hydrogens are built for (the default, amber14, has no water model: add one, e.g.
        ``("amber14-all.xml", "amber14/tip3pfb.xml")``, with ``keep_water=True``). ``movable``
        holds residue indices of the *returned* protein (after waters and ligands are removed);
        None means every standard amino acid. Multi-model files: the first model is read.

        Raises:
            FileNotFoundError: the path does not exist.
            ValueError: the file is empty, truncated, not a protein, has a residue without its
                backbone atoms, or an unknown residue (with ``unknown="error"``).
        """
        topology, positions, files = read_structure(
            path_or_file,
            "pdb",
            ph=ph,
            forcefield=forcefield,
            keep_water=keep_water,
            unknown=unknown,
        )
        return cls(topology, positions, movable=movable, forcefield=files)

    @classmethod
    def from_pdbx(
        cls,
        path_or_file: PathOrFile,
        *,
        ph: float = 7.0,
        forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
        keep_water: bool = False,
        unknown: Literal["error", "freeze"] = "error",
        movable: Iterable[int] | None = None,
    ) -> Protein:
        """Read a PDBx/mmCIF file; otherwise exactly :meth:`from_pdb`."""
        topology, positions, files = read_structure(
            path_or_file,
            "pdbx",
            ph=ph,
            forcefield=forcefield,
            keep_water=keep_water,
            unknown=unknown,
        )
        return cls(topology, positions, movable=movable, forcefield=files)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> Protein:
        """:meth:`from_pdbx` for PDBx paths (``.cif``, ``.mmcif``, ``.pdbx``, any case: the rule of
        :func:`pyslice.structure.reading.file_format`), :meth:`from_pdb` otherwise (``kwargs`` go to
        the reader)."""
        reader = cls.from_pdbx if file_format(path) == "pdbx" else cls.from_pdb
        return reader(path, **kwargs)

    @classmethod
    def from_sequence(
        cls,
        seq: str,
        backbone: str | tuple[object, object] = "helix",
        *,
        ph: float = 7.0,
        forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
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
        topology, positions, files = ideal_peptide(seq, backbone, ph=ph, forcefield=forcefield)
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
                if r.name not in CAPS and r.name != WATER
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
            _checks.positions_tensor("positions", positions, self.n_atoms),
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
            if any(name not in atoms for name in BACKBONE):  # a topology built elsewhere
                continue
            n_i, ca_i, c_i = atoms["N"], atoms["CA"], atoms["C"]
            prev_c = _bonded_atom(bonded, n_i, "C", residue)
            next_n = _bonded_atom(bonded, c_i, "N", residue)
            if prev_c is not None:
                index[i, 0] = (prev_c.index, n_i, ca_i, c_i)
                prev_ca = atom_index(prev_c.residue, ("CA", "CH3"))
                if prev_ca is not None:
                    index[i, 2] = (prev_ca, prev_c.index, n_i, ca_i)
            if next_n is not None:
                index[i, 1] = (n_i, ca_i, c_i, next_n.index)
        # Undefined angles (index -1) are computed on atom 0 and then replaced by NaN.
        valid = (index >= 0).all(axis=-1)
        angles = dihedral_numpy(self._positions.numpy()[np.where(index >= 0, index, 0)])
        return torch.from_numpy(np.where(valid, angles, np.nan))

    # ---------------------------------------------------------------- side chains

    @property
    def builder(self) -> SideChainBuilder:
        """The batched side-chain builder for this protein's movable residues (made once)."""
        if self._builder is None:
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

        batch, single = self._batch("positions", positions)

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
        batch, _ = self._batch("positions", positions)

        def write(file: IO[bytes]) -> None:
            dcd = DCDFile(file, self._topology, 1.0 * unit.picosecond)
            for frame in batch:
                dcd.writeModel(unit.Quantity(frame, unit.nanometer))

        atomic_write(path, "wb", write)

    def _batch(self, name: str, positions: object) -> tuple[np.ndarray, bool]:
        """``(B, N, 3) float64`` numpy positions from None, ``(N, 3)`` or ``(B, N, 3)``, and
        whether they are one conformation (None or ``(N, 3)``)."""
        if positions is None:
            return self._positions.numpy()[None], True
        tensor, single = _checks.positions_batch(name, positions, self.n_atoms)
        tensor = tensor.to(torch.float64)
        if tensor.shape[0] == 0:
            raise ValueError(
                f"{name} must hold at least one frame, got shape {tuple(tensor.shape)}"
            )
        _checks.require_finite(name, tensor)
        return tensor.detach().cpu().numpy(), single


def _movable_residues(residues: list, movable: Iterable[int] | None) -> tuple[int, ...]:
    """The movable residue indices: every standard amino acid by default, else those asked for,
    each of which must be a standard amino acid."""
    amino = [r.index for r in residues if r.name in AMINO_ACIDS]
    if movable is None:
        return tuple(amino)
    chosen = _checks.index_set("movable", movable, len(residues))
    allowed = set(amino)
    for index in chosen:
        if index not in allowed:
            raise ValueError(
                f"movable: residue {index} ({_checks.describe_residue(residues[index])}) is not "
                "a standard amino acid and cannot move"
            )
    return chosen


def _bonded_atom(bonded: dict, index: int, name: str, residue: Any) -> Any:
    """The atom called ``name`` in another residue bonded to atom ``index``, or None."""
    for other in bonded.get(index, ()):
        if other.name == name and other.residue is not residue:
            return other
    return None
