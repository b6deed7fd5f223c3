"""The batched side-chain builder (chi definitions: :mod:`pyslice.geometry.chis`).

A side-chain conformation is its vector of chi angles. :class:`SideChainBuilder` turns a batch of
chi vectors back into atom positions: side-chain atoms, hydrogens included, are placed by rotation
about the chi bonds, keeping the structure's own bond lengths and angles; the backbone is untouched.

For chi ``k`` of a residue with atoms ``(a, b, c, d)``, the atoms *downstream* of the bond ``b-c``
are those reachable from ``c`` without passing through ``b``, within the residue (bonds from
``topology.bonds()``). Building applies the chi levels in order 1..4: at level ``k`` every
downstream atom of every level-``k`` chi is rotated (Rodrigues) about the axis ``b -> c`` at its
current position, by ``delta = chi_target - chi_reference`` (wrapped to [-pi, pi)). Rotating chi
``k`` moves the four atoms of chi ``k+1`` rigidly, so its value, and hence its delta, is unchanged:
each delta is fixed once, and any real chi (``chi + 2 pi n``) builds the same structure.

Which residues move:

- the 18 rotameric types of :data:`~pyslice.geometry.chis.CHI_ATOMS` (and their protonation
  variants, e.g. HID, CYX);
- not proline: its chi bonds close a ring through the backbone N, so rotating one would tear
  the ring. Proline is kept as it is in the structure (ring puckers are future work);
- not a residue whose side chain is bonded to another residue (a disulfide-bonded cysteine, with
  a topology bond SG-SG; a glycosylated ASN): rotating it would break that bond;
- not a residue missing a chi atom: left fixed, or a ValueError if it was asked for explicitly.

The builder's own chi columns (``n_chi`` of them) are those of the movable residues, in topology
order, chi 1 first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pyslice import _checks, backends
from pyslice.geometry.angles import dihedral, wrap_angle
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, parent_residue_name

if TYPE_CHECKING:
    from openmm import app

__all__ = ["BuildTables", "SideChainBuilder", "build_reference"]

OP = "sidechain_build"
_LEVELS = 4  # chi1 .. chi4


@dataclass(frozen=True)
class BuildTables:
    """A builder's tables on one device, in one dtype: what op ``sidechain_build`` takes besides
    chi (layout: csrc/include/pyslice/build.h)."""

    positions: torch.Tensor  # (N, 3) reference positions
    chi_ref: torch.Tensor  # (n_chi,) reference chi angles
    axis: torch.Tensor  # (n_chi, 2) int64 atoms (b, c) of each chi bond
    move_atom: torch.Tensor  # (M,) int64 atoms to rotate, level by level
    move_chi: torch.Tensor  # (M,) int64 the chi column that rotates each
    level_start: torch.Tensor  # (5,) int64 level offsets into the moves, always on the CPU


def build_reference(tables: BuildTables, chi: torch.Tensor) -> torch.Tensor:
    """Plain-torch side-chain building, differentiable in ``chi``: the reference of op
    ``sidechain_build`` (the compiled twins: csrc/include/pyslice/build.h, same expressions).

    tables: the builder's tables in chi's dtype, on chi's device; chi: (B, n_chi) targets.
    Returns (B, N, 3).
    """
    axis = tables.axis
    out = tables.positions.expand(chi.shape[0], -1, -1)
    delta = wrap_angle(chi - tables.chi_ref)
    starts = tables.level_start.tolist()
    moved = False
    for lo, hi in zip(starts[:-1], starts[1:]):
        if lo == hi:
            continue
        moved = True
        atoms = tables.move_atom[lo:hi]
        owner = tables.move_chi[lo:hi]
        # All moves of one level at once: they touch distinct atoms, none an axis of the level.
        b = out[:, axis[owner, 0]]
        c = out[:, axis[owner, 1]]
        k = c - b
        k = k * (1.0 / torch.sqrt((k * k).sum(-1, keepdim=True)))
        angle = delta[:, owner].unsqueeze(-1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        v = out[:, atoms] - c
        w = torch.linalg.cross(k, v, dim=-1)
        kv = (k * v).sum(-1, keepdim=True)
        out = out.index_copy(1, atoms, c + ((v * cos + w * sin) + k * (kv * (1.0 - cos))))
    # Without moves `out` is still a broadcast view of the reference: copy it.
    return out.contiguous() if moved else out.clone()


class _Fixed(Exception):
    """A residue with chi definitions that cannot move; ``data_error`` for missing atoms/bonds."""

    def __init__(self, reason: str, data_error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data_error = data_error


class SideChainBuilder:
    """Builds side-chain conformations of one structure from chi angles, in batches.

    Args:
        topology: the structure's ``openmm.app.Topology`` (with its bonds; hydrogens optional).
        positions: (N, 3) reference positions in nm (any float dtype; kept as float64).
        movable: residue indices (topology order) allowed to move; None means every residue that
            can (see the module docstring). Requested residues without chi angles (GLY, ALA,
            ligands) are ignored; a requested proline or side chain bonded to another residue is
            kept fixed and listed in :attr:`fixed_residues`; a requested residue missing a chi
            atom (or a chi bond) is a ValueError naming it.

    Attributes:
        n_chi: number of chi columns (the movable residues' chis).
        chi_index: (n_chi, 2) int64: residue index and chi number (0-based) of each column.
        chi_atoms: (n_chi, 4) int64: the atom indices (a, b, c, d) of each chi.
        chi_residue_names: parent residue type of each column (``HIS`` for HIE).
        pi_periodic: (n_chi,) bool: True where the chi is pi-periodic (ASP chi2, ...).
        n_atoms: N.
        reference_positions: (N, 3) float64 (CPU).
        movable_residues: residue indices that move, in topology order.
        fixed_residues: residue index -> why it does not move, for the residues with chi
            definitions that are kept fixed.
    """

    def __init__(
        self,
        topology: app.Topology,
        positions: torch.Tensor,
        movable: Sequence[int] | None = None,
    ) -> None:
        self.topology = _checks.check_topology("topology", topology)
        self.n_atoms = topology.getNumAtoms()
        self.reference_positions = _checks.positions_tensor("positions", positions, self.n_atoms)

        residues = list(topology.residues())
        requested = (
            None if movable is None else set(_checks.index_set("movable", movable, len(residues)))
        )
        atoms = list(topology.atoms())
        neighbours: list[list[int]] = [[] for _ in range(self.n_atoms)]
        for bond in topology.bonds():
            i, j = bond[0].index, bond[1].index
            neighbours[i].append(j)
            neighbours[j].append(i)

        chi_index, chi_atoms, names, periodic, moved = [], [], [], [], []
        self.movable_residues: tuple[int, ...] = ()
        self.fixed_residues: dict[int, str] = {}
        for residue in residues:
            if requested is not None and residue.index not in requested:
                continue
            parent = parent_residue_name(residue.name)
            if parent not in CHI_ATOMS:
                continue
            try:
                chis = _residue_chis(residue, parent, neighbours, atoms)
            except _Fixed as fixed:
                if fixed.data_error and requested is not None:
                    label = _checks.describe_residue(residue)
                    raise ValueError(
                        f"movable: residue {residue.index} ({label}) cannot move: {fixed.reason}"
                    ) from None
                self.fixed_residues[residue.index] = fixed.reason
                continue
            self.movable_residues += (residue.index,)
            for k, (quad, downstream) in enumerate(chis):
                chi_index.append((residue.index, k))
                chi_atoms.append(quad)
                names.append(parent)
                periodic.append(PI_PERIODIC[parent][k])
                moved.append(downstream)

        self.n_chi = len(chi_index)
        self.chi_index = torch.tensor(chi_index, dtype=torch.int64).reshape(-1, 2)
        self.chi_atoms = torch.tensor(chi_atoms, dtype=torch.int64).reshape(-1, 4)
        self.chi_residue_names: list[str] = names
        self.pi_periodic = torch.tensor(periodic, dtype=torch.bool)
        self._downstream: list[tuple[int, ...]] = moved
        self._chi_ref = self.chi_angles()
        self._tables_cpu64 = self._make_tables()
        self._cache: dict[tuple[torch.device, torch.dtype], BuildTables] = {}

    # ------------------------------------------------------------------------------ tables

    def _make_tables(self) -> BuildTables:
        move_atom: list[int] = []
        move_chi: list[int] = []
        level_start = [0]
        levels = self.chi_index[:, 1].tolist()
        for level in range(_LEVELS):
            axis_atoms: set[int] = set()
            start = len(move_atom)
            for j, chi_level in enumerate(levels):
                if chi_level == level:
                    move_atom.extend(self._downstream[j])
                    move_chi.extend([j] * len(self._downstream[j]))
                    axis_atoms.update(self.chi_atoms[j, 1:3].tolist())
            level_moves = move_atom[start:]
            # The parallel paths rely on this (csrc/include/pyslice/build.h); it holds by
            # construction (residue-local downstream sets), checked once here.
            if len(set(level_moves)) != len(level_moves) or axis_atoms.intersection(level_moves):
                raise RuntimeError(f"chi level {level + 1} moves an atom twice or moves an axis")
            level_start.append(len(move_atom))
        return BuildTables(
            positions=self.reference_positions,
            chi_ref=self._chi_ref,
            axis=self.chi_atoms[:, 1:3].contiguous(),
            move_atom=torch.tensor(move_atom, dtype=torch.int64),
            move_chi=torch.tensor(move_chi, dtype=torch.int64),
            level_start=torch.tensor(level_start, dtype=torch.int64),
        )

    def _tables(self, device: torch.device, dtype: torch.dtype) -> BuildTables:
        key = (device, dtype)
        if key not in self._cache:
            t = self._tables_cpu64
            self._cache[key] = BuildTables(
                positions=t.positions.to(device, dtype).contiguous(),
                chi_ref=t.chi_ref.to(device, dtype).contiguous(),
                axis=t.axis.to(device),
                move_atom=t.move_atom.to(device),
                move_chi=t.move_chi.to(device),
                level_start=t.level_start,
            )
        return self._cache[key]

    # ------------------------------------------------------------------------------ API

    def downstream_atoms(self, j: int) -> tuple[int, ...]:
        """The atom indices that chi column ``j`` rotates (its axis atoms excluded), sorted."""
        j = _checks.check_int("j", j, low=-self.n_chi, high=self.n_chi)
        return self._downstream[j]

    def chi_angles(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Chi angles of the builder's columns, in [-pi, pi).

        positions: (..., N, 3) float (default: the reference positions, float64).
        Returns (..., n_chi) in the dtype and on the device of ``positions``; differentiable.
        """
        if positions is None:
            positions = self.reference_positions
        else:
            positions = _checks.as_float_tensor("positions", positions)
            if positions.ndim < 2 or tuple(positions.shape[-2:]) != (self.n_atoms, 3):
                raise ValueError(
                    f"positions must have shape (..., n_atoms, 3) with n_atoms = {self.n_atoms}, "
                    f"got {tuple(positions.shape)}"
                )
        p = positions[..., self.chi_atoms.to(positions.device), :]  # (..., n_chi, 4, 3)
        return dihedral(p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :])

    def build(self, chi: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """Positions of the structure with its chi angles set to ``chi``.

        chi: (B, n_chi) float32 or float64, finite (any real value: angles are wrapped), B >= 0.
        backend: force an implementation (``reference``, ``cpu``, ``cuda``); default automatic
            (``$PYSLICE_BACKEND``, else the fastest that fits chi's device and dtype). When chi
            requires grad, the differentiable reference is used (forcing another is an error).
        Returns (B, N, 3) in chi's dtype, on chi's device. Atoms no chi moves are the reference's.
        """
        if not isinstance(chi, torch.Tensor):
            raise TypeError(f"chi must be a torch.Tensor, got {type(chi).__name__}")
        if chi.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"chi must have dtype float32 or float64, got {chi.dtype}")
        if chi.ndim != 2 or chi.shape[1] != self.n_chi:
            raise ValueError(
                f"chi must have shape (B, n_chi) with n_chi = {self.n_chi}, got {tuple(chi.shape)}"
            )
        _checks.require_finite("chi", chi)
        if chi.requires_grad and torch.is_grad_enabled():
            forced = backends.requested_backend(backend)
            if forced not in (None, "reference"):
                raise ValueError(
                    f"backend {forced!r} is not differentiable and chi requires grad: use "
                    "backend='reference', or detach chi"
                )
            backend = "reference"
        impl = backends.select(OP, chi.device, chi.dtype, backend)
        return impl(self._tables(chi.device, chi.dtype), chi)

    def __repr__(self) -> str:
        return (
            f"SideChainBuilder(n_atoms={self.n_atoms}, n_chi={self.n_chi}, "
            f"movable_residues={len(self.movable_residues)}, fixed={len(self.fixed_residues)})"
        )


def _residue_chis(
    residue, parent: str, neighbours: list[list[int]], atoms: list
) -> list[tuple[tuple[int, int, int, int], tuple[int, ...]]]:
    """For each chi of the residue: its four atom indices and its downstream atoms (the far axis
    atom excluded: it lies on the axis). Raises _Fixed when the residue cannot move."""
    if parent == "PRO":
        raise _Fixed("proline: its chi bonds close a ring through the backbone N (kept fixed)")
    index = {atom.name: atom.index for atom in residue.atoms()}
    missing = sorted({n for chi in CHI_ATOMS[parent] for n in chi if n not in index})
    if missing:
        raise _Fixed(f"missing chi atom(s) {', '.join(missing)}", data_error=True)
    members = set(index.values())
    name_of = {i: n for n, i in index.items()}
    chis = []
    for k, names in enumerate(CHI_ATOMS[parent]):
        a, b, c, d = (index[n] for n in names)
        for x, y in ((a, b), (b, c), (c, d)):
            if y not in neighbours[x]:
                raise _Fixed(
                    f"chi{k + 1} needs the bond {name_of[x]}-{name_of[y]}, which the topology "
                    "lacks",
                    data_error=True,
                )
        seen = {c}
        stack = [c]
        while stack:
            atom = stack.pop()
            for other in neighbours[atom]:
                if other == b and atom != c:
                    raise _Fixed(f"chi{k + 1} bond {names[1]}-{names[2]} is part of a ring")
                if other == b or other in seen:
                    continue
                if other not in members:
                    raise _Fixed(
                        f"its side chain is bonded to another residue ({name_of[atom]}-"
                        f"{_checks.describe_atom(atoms[other])}), e.g. a disulfide: "
                        "rotating it would break that bond"
                    )
                seen.add(other)
                stack.append(other)
        chis.append(((a, b, c, d), tuple(sorted(seen - {c}))))
    return chis
