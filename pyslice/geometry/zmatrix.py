"""Batched side-chain building from internal coordinates (NeRF): the torch reference.

:class:`ZMatrixBuilder` places every non-backbone atom of the residues it builds (CB, the CA
hydrogens and the side chain, hydrogens included) from its residue's own N, CA and C, by the
residue variant's :class:`~pyslice.geometry.templates.Template`: atom d from (a, b, c) with bond
|cd|, angle bcd and dihedral abcd (a fixed value, or a column plus an offset). The backbone (N, CA,
C, O, OXT, H, H1-H3) and every residue it does not build keep the input positions.

Two geometries from the same tables:

- ``"ideal"`` (default): bonds, angles and non-column dihedrals are the template's (amber14's
  equilibrium values; see the templates module). Symmetric groups are built exactly symmetric, so
  each column's :attr:`~ZMatrixBuilder.periodicity` and the :attr:`~ZMatrixBuilder.symmetries`
  hold for any energy that treats equivalent atoms alike.
- ``"input"``: every bond, angle and non-column dihedral is measured from the input positions, so
  building at :meth:`~ZMatrixBuilder.column_values` reproduces the input (to ~1e-12 nm in
  float64). No symmetry is claimed (periodicity 1 everywhere): deposited geometry is not symmetric.

Which residues are built: every standard amino acid (its variant from its hydrogens, see
:func:`~pyslice.geometry.templates.residue_variant`) whose atoms are exactly its template's, except
one whose side chain is bonded to another residue other than a disulfide (a glycosylated ASN).
Their columns, in topology order and chi1 first, are the builder's columns, except that proline's
chis (its ring closes through N) and a disulfide-bonded cysteine's chi1 are held at the values
measured from the input, never sampled: their side chains are rebuilt (ideal mode) but not moved.

Building is level by level: the atoms at one depth of their residue's tree (CB and HA are level 1),
across all residues, in one batch of tensor operations; never a Python loop over residues. The full
build places each atom once per level; a block build (:meth:`~ZMatrixBuilder.build_residues`,
some residues per chain) works in per-residue local slots (N, CA, C, then the residue's atoms level
by level, padded to the widest residue at each level). Both use the same NeRF expression, so a
block build equals the full build's rows (to round-off: ~1e-16 nm in float64).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyslice import _checks
from pyslice.geometry.angles import dihedral
from pyslice.geometry.chis import RESIDUE_ALIASES
from pyslice.geometry.templates import (
    BACKBONE_ATOMS,
    VARIANTS,
    bond_angle,
    residue_variant,
    templates,
    wrap,
)

if TYPE_CHECKING:
    from openmm import app

__all__ = [
    "GEOMETRIES",
    "ZMatrixBuilder",
    "ZMatrixTables",
    "build_reference",
    "build_residues_reference",
]

GEOMETRIES = ("ideal", "input")
_PARENTS = frozenset(RESIDUE_ALIASES.get(v, v) for v in VARIANTS)
_LOCAL_BACKBONE = ("N", "CA", "C")  # local slots 0, 1, 2
_PAD_REFS = (2, 0, 1)  # a padding slot is "placed" from (C, N, CA) at zero bond: onto CA


@dataclass(frozen=True)
class ZMatrixTables:
    """A builder's tables in one dtype on one device.

    The full build places M atoms level by level, each once (``place_*``). Block builds use the
    same values per built residue (R of them) in local slots: slots 0-2 are its N, CA, C, slot
    ``3 + k`` its k-th placed slot (K per residue, levels padded to the widest residue); A is the
    most atoms one residue places.
    """

    reference: torch.Tensor  # (N, 3) input positions: what the build starts from
    place_atom: torch.Tensor  # (M,) int64 atom placed, level by level
    place_refs: torch.Tensor  # (M, 3) int64 atoms a, b, c it is placed from
    place_bond: torch.Tensor  # (M,) |cd|, nm
    place_angle: torch.Tensor  # (M,) bcd, radians
    place_torsion: torch.Tensor  # (M,) fixed dihedral, or offset added to the column
    place_column: torch.Tensor  # (M,) int64 builder column, n_columns (a zero column) for none
    place_level_start: torch.Tensor  # (L + 1,) int64 offsets of the levels, always on the CPU
    backbone: torch.Tensor  # (R, 3) int64 atom indices of N, CA, C
    atom: torch.Tensor  # (R, K) int64 atom placed in each slot, -1 for padding
    refs: torch.Tensor  # (R, K, 3) int64 local slots of a, b, c
    bond: torch.Tensor  # (R, K)
    angle: torch.Tensor  # (R, K)
    torsion: torch.Tensor  # (R, K)
    column: torch.Tensor  # (R, K) int64
    level_start: torch.Tensor  # (L + 1,) int64 slot offsets of the levels, always on the CPU
    compact: torch.Tensor  # (R, A) int64 slot k of each of the residue's atoms, -1 padding
    compact_atom: torch.Tensor  # (R, A) int64 its atom index, -1 padding
    residue_row: torch.Tensor  # (n_residues,) int64 row of each topology residue, -1 if not built


def _nerf(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    along: torch.Tensor,
    across: torch.Tensor,
    torsion: torch.Tensor,
) -> torch.Tensor:
    """Atoms d from a, b, c (..., 3): angles.place_atom's frame (bc, m, n) from the plane of
    a, b, c, with ``along = -bond cos(angle)`` and ``across = bond sin(angle)`` (...,)."""
    bc = c - b
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc, dim=-1)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc, dim=-1)
    return c + (
        along.unsqueeze(-1) * bc
        + (across * torch.cos(torsion)).unsqueeze(-1) * m
        + (across * torch.sin(torsion)).unsqueeze(-1) * n
    )


def _with_zero_column(columns: torch.Tensor) -> torch.Tensor:
    # Column n_columns is zero: atoms without a column add nothing to their dihedral.
    return torch.cat([columns, columns.new_zeros((columns.shape[0], 1))], dim=1)


def build_reference(tables: ZMatrixTables, columns: torch.Tensor) -> torch.Tensor:
    """Plain-torch building of every built residue, differentiable in ``columns``.

    tables: in columns' dtype, on columns' device; columns: (B, n_columns). Returns (B, N, 3).
    """
    t = tables
    out = t.reference.expand(columns.shape[0], -1, -1).clone()
    torsion = t.place_torsion + _with_zero_column(columns)[:, t.place_column]  # (B, M)
    along = -t.place_bond * torch.cos(t.place_angle)
    across = t.place_bond * torch.sin(t.place_angle)
    starts = t.place_level_start.tolist()
    for lo, hi in zip(starts[:-1], starts[1:]):
        refs = t.place_refs[lo:hi]
        a, b, c = (out[:, refs[:, k]] for k in range(3))
        out[:, t.place_atom[lo:hi]] = _nerf(a, b, c, along[lo:hi], across[lo:hi], torsion[:, lo:hi])
    return out


def _local_build(tables: ZMatrixTables, columns: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Local slot positions ``(B, S, 3 + K, 3)`` of residues ``rows (B, S)`` (valid rows)."""
    t = tables
    batch, width = rows.shape
    n_slots = t.atom.shape[1]
    local = columns.new_zeros((batch, width, 3 + n_slots, 3))
    local[:, :, :3] = t.reference[t.backbone[rows]]
    column = t.column[rows].reshape(batch, width * n_slots)
    from_columns = torch.gather(_with_zero_column(columns), 1, column)
    torsion = t.torsion[rows] + from_columns.reshape(batch, width, n_slots)
    bond, angle = t.bond[rows], t.angle[rows]
    along = -bond * torch.cos(angle)
    across = bond * torch.sin(angle)
    refs = t.refs[rows]
    bi = torch.arange(batch, device=columns.device).view(batch, 1, 1)
    si = torch.arange(width, device=columns.device).view(1, width, 1)
    starts = t.level_start.tolist()
    for lo, hi in zip(starts[:-1], starts[1:]):
        a, b, c = (local[bi, si, refs[:, :, lo:hi, k]] for k in range(3))
        local[:, :, 3 + lo : 3 + hi] = _nerf(
            a, b, c, along[..., lo:hi], across[..., lo:hi], torsion[..., lo:hi]
        )
    return local


def build_residues_reference(
    tables: ZMatrixTables, columns: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch building of some residues per chain: ``rows (B, S)`` int64 table rows, -1 for
    padding. Returns atom indices ``(B, S * A)`` (-1 padding) and positions ``(B, S * A, 3)``
    (zero at padding), residue by residue in the order of ``rows``."""
    batch, width = rows.shape
    n_atoms = tables.compact.shape[1]
    valid = rows >= 0
    if tables.backbone.shape[0] == 0:  # nothing is built: every row is padding
        atoms = rows.new_full((batch, width * n_atoms), -1)
        return atoms, columns.new_zeros((batch, width * n_atoms, 3))
    safe = rows.clamp(min=0)
    local = _local_build(tables, columns, safe)[:, :, 3:]
    slot = tables.compact[safe]  # (B, S, A)
    keep = valid.unsqueeze(-1) & (slot >= 0)
    index = slot.clamp(min=0).unsqueeze(-1).expand(-1, -1, -1, 3)
    positions = torch.gather(local, 2, index)
    positions = torch.where(keep.unsqueeze(-1), positions, positions.new_zeros(()))
    atoms = torch.where(keep, tables.compact_atom[safe], -1)
    return atoms.reshape(batch, width * n_atoms), positions.reshape(batch, width * n_atoms, 3)


class _Unbuilt(Exception):
    """A residue the builder leaves as it is; ``data_error`` when its atoms do not fit."""

    def __init__(self, reason: str, data_error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data_error = data_error


def _describe(residue: app.Residue) -> str:
    chain = residue.chain.id if residue.chain is not None else "?"
    return f"{residue.name} {residue.id} of chain {chain} (residue index {residue.index})"


class ZMatrixBuilder:
    """Builds side chains from columns (chis and proton rotors) by internal coordinates, in batches.

    Args:
        topology: ``openmm.app.Topology`` with hydrogens and bonds (as ``Protein`` makes it).
        positions: (N, 3) nm; the backbone, the residues not built, and (``"input"``) the
            geometry measured.
        geometry: ``"ideal"`` or ``"input"`` (see the module docstring).
        movable: residue indices to build; None builds every residue that can be built. A
            requested residue whose atoms do not fit its template is a ValueError naming it;
            requested non-amino acids are ignored.

    Attributes:
        n_atoms, n_columns, geometry.
        column_names: ``"chi1"``..``"chi4"``, ``"rotor HG"``, ... per column.
        column_kinds: ``"chi"`` or ``"rotor"`` per column.
        column_residues: (n_columns,) int64 residue index of each column.
        column_atoms: (n_columns, 4) int64 the dihedral each column is.
        periodicity: (n_columns,) int64: shifting column j alone by 2 pi / periodicity[j] leaves
            its marginal unchanged (all 1 with ``"input"``); which shifts are exact symmetries of
            the structure is :attr:`symmetries`.
        symmetries: per residue with one, a tuple of (column, shift) applied together.
        residue_variants: residue index -> amber14 variant, for the built residues.
        built_residues: residue indices built, in topology order.
        fixed_residues: residue index -> why it is left as it is (amino acids only).
        reference_positions: (N, 3) float64 on the CPU.
    """

    def __init__(
        self,
        topology: app.Topology,
        positions: object,
        geometry: str = "ideal",
        movable: Sequence[int] | None = None,
    ) -> None:
        from openmm.app import Topology

        if not isinstance(topology, Topology):
            raise TypeError(
                f"topology must be an openmm.app.Topology, got {type(topology).__name__}"
            )
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.geometry = geometry
        self.n_atoms = topology.getNumAtoms()
        reference = _checks.as_float_tensor("positions", positions).detach()
        if reference.shape != (self.n_atoms, 3):
            raise ValueError(
                f"positions must have shape (n_atoms, 3) = ({self.n_atoms}, 3) for this topology, "
                f"got {tuple(reference.shape)}"
            )
        _checks.require_finite("positions", reference)
        self.reference_positions = reference.to("cpu", torch.float64).contiguous()
        residues = list(topology.residues())
        self.n_residues = len(residues)
        requested = _requested_residues(movable, len(residues))

        partner: dict[int, set[int]] = {}
        for x, y in topology.bonds():
            if x.residue is not y.residue:
                partner.setdefault(x.index, set()).add(y.index)
                partner.setdefault(y.index, set()).add(x.index)
        self.residue_variants: dict[int, str] = {}
        self.fixed_residues: dict[int, str] = {}
        plans = []
        for residue in residues:
            if requested is not None and residue.index not in requested:
                continue
            if RESIDUE_ALIASES.get(residue.name, residue.name) not in _PARENTS:
                continue
            try:
                plans.append((residue, *self._plan(residue, partner)))
            except _Unbuilt as unbuilt:
                if unbuilt.data_error and requested is not None:
                    raise ValueError(
                        f"movable: residue {_describe(residue)} cannot be built: {unbuilt.reason}"
                    ) from None
                self.fixed_residues[residue.index] = unbuilt.reason
        self.built_residues: tuple[int, ...] = tuple(r.index for r, *_ in plans)
        self._make_tables(plans)
        self._cache: dict[tuple[torch.device, torch.dtype], ZMatrixTables] = {}

    # ------------------------------------------------------------------------------ tables

    def _plan(self, residue: app.Residue, partner: dict[int, set[int]]):
        """(variant, name -> atom index) of a residue that can be built; _Unbuilt otherwise."""
        index = {atom.name: atom.index for atom in residue.atoms()}
        sg = index.get("SG")
        disulfide = sg is not None and bool(partner.get(sg))
        try:
            variant = residue_variant(residue.name, index, disulfide)
        except ValueError as exc:
            raise _Unbuilt(str(exc), data_error=True) from None
        tmpl = templates()[variant]
        wanted = set(tmpl.atoms) | set(_LOCAL_BACKBONE)
        present = {n for n in index if n not in BACKBONE_ATOMS} | (set(index) & wanted)
        missing, extra = sorted(wanted - present), sorted(present - wanted)
        if missing or extra:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"unexpected {', '.join(extra)}"] if extra else []
            raise _Unbuilt(
                f"its atoms do not match the {variant} template ({'; '.join(parts)})",
                data_error=True,
            )
        for name in tmpl.atoms:
            if partner.get(index[name]) and not (variant == "CYX" and name == "SG"):
                raise _Unbuilt(f"its side-chain atom {name} is bonded to another residue")
        return variant, index

    def _make_tables(self, plans: list) -> None:
        pos = self.reference_positions
        tmpls = [templates()[variant] for _, variant, _ in plans]
        n_levels = max((e.level for t in tmpls for e in t.entries), default=0)
        width = [0] * (n_levels + 1)
        for t in tmpls:
            for level in range(1, n_levels + 1):
                width[level] = max(width[level], sum(e.level == level for e in t.entries))
        level_start = [0]
        for level in range(1, n_levels + 1):
            level_start.append(level_start[-1] + width[level])
        n_slots = level_start[-1]
        n_compact = max((len(t.entries) for t in tmpls), default=0)
        n_rows = len(plans)

        backbone = torch.zeros((n_rows, 3), dtype=torch.int64)
        atom = torch.full((n_rows, n_slots), -1, dtype=torch.int64)
        refs = torch.tensor(_PAD_REFS, dtype=torch.int64).repeat(n_rows, n_slots, 1)
        bond = torch.zeros((n_rows, n_slots), dtype=torch.float64)
        angle = torch.zeros_like(bond)
        torsion = torch.zeros_like(bond)
        column = torch.zeros((n_rows, n_slots), dtype=torch.int64)  # set to n_columns below
        compact = torch.full((n_rows, n_compact), -1, dtype=torch.int64)
        compact_atom = torch.full_like(compact, -1)
        has_column = torch.zeros((n_rows, n_slots), dtype=torch.bool)
        names: list[str] = []
        kinds: list[str] = []
        col_residue: list[int] = []
        col_atoms: list[list[int]] = []
        periodicity: list[int] = []
        symmetries: list[tuple[tuple[int, float], ...]] = []
        moves: list[tuple[int, ...]] = []
        residue_row = torch.full((self.n_residues,), -1, dtype=torch.int64)

        def torsion_at(idx: Sequence[int]) -> float:
            return float(dihedral(pos[idx[0]], pos[idx[1]], pos[idx[2]], pos[idx[3]]))

        for row, ((residue, variant, index), t) in enumerate(zip(plans, tmpls)):
            residue_row[residue.index] = row
            self.residue_variants[residue.index] = variant
            backbone[row] = torch.tensor([index[n] for n in _LOCAL_BACKBONE])
            slot_of = {n: k for k, n in enumerate(_LOCAL_BACKBONE)}
            filled = [0] * (n_levels + 1)
            for e in t.entries:
                slot_of[e.atom] = 3 + level_start[e.level - 1] + filled[e.level]
                filled[e.level] += 1
            sampled, fixed_value = {}, {}
            for col in t.columns:
                quad = [index[n] for n in col.atoms]
                if col.sampled:
                    sampled[col.name] = len(names)
                    names.append(col.name)
                    kinds.append(col.kind)
                    col_residue.append(residue.index)
                    col_atoms.append(quad)
                    periodicity.append(col.periodicity if self.geometry == "ideal" else 1)
                    moves.append(tuple(sorted(index[n] for n in col.moves)))
                else:
                    fixed_value[col.name] = torsion_at(quad)
            if self.geometry == "ideal":
                for sym in t.symmetries:
                    symmetries.append(tuple((sampled[name], shift) for name, shift in sym))
            for j, e in enumerate(t.entries):
                k = slot_of[e.atom] - 3
                atom[row, k] = index[e.atom]
                refs[row, k] = torch.tensor([slot_of[e.a], slot_of[e.b], slot_of[e.c]])
                compact[row, j], compact_atom[row, j] = k, index[e.atom]
                quad = [index[n] for n in (e.a, e.b, e.c, e.atom)]
                if self.geometry == "ideal":
                    bond[row, k], angle[row, k] = e.bond, e.angle
                    torsion[row, k] = e.torsion + fixed_value.get(e.column, 0.0)
                else:
                    x, y, z = (pos[i].numpy() for i in quad[1:])
                    bond[row, k], angle[row, k] = float(np.linalg.norm(z - y)), bond_angle(x, y, z)
                    torsion[row, k] = torsion_at(quad)
                    if e.column in sampled:  # an offset from the column's measured value
                        column_quad = col_atoms[sampled[e.column]]
                        torsion[row, k] = wrap(torsion_at(quad) - torsion_at(column_quad))
                if e.column in sampled:
                    column[row, k], has_column[row, k] = sampled[e.column], True
        self.n_columns = len(names)
        column[~has_column] = self.n_columns
        self.column_names: list[str] = names
        self.column_kinds: list[str] = kinds
        self.column_residues = torch.tensor(col_residue, dtype=torch.int64)
        self.column_atoms = torch.tensor(col_atoms, dtype=torch.int64).reshape(-1, 4)
        self.periodicity = torch.tensor(periodicity, dtype=torch.int64)
        self.symmetries: list[tuple[tuple[int, float], ...]] = symmetries
        self._moves: list[tuple[int, ...]] = moves
        # The full build's flat lists: each level's real slots, residue by residue.
        global_of_slot = torch.cat([backbone, atom], dim=1)  # local slot -> atom index
        placed = atom.tolist()
        per_level = [
            [(row, k) for row in range(n_rows) for k in range(lo, hi) if placed[row][k] >= 0]
            for lo, hi in zip(level_start[:-1], level_start[1:])
        ]
        flat = [pair for level in per_level for pair in level]
        r, k = torch.tensor(flat, dtype=torch.int64).reshape(-1, 2).unbind(1)
        place_start = torch.tensor([0, *(len(level) for level in per_level)]).cumsum(0)
        self._tables64 = ZMatrixTables(
            reference=pos,
            place_atom=atom[r, k],
            place_refs=global_of_slot[r.unsqueeze(1), refs[r, k]],
            place_bond=bond[r, k],
            place_angle=angle[r, k],
            place_torsion=torsion[r, k],
            place_column=column[r, k],
            place_level_start=place_start,
            backbone=backbone,
            atom=atom,
            refs=refs,
            bond=bond,
            angle=angle,
            torsion=torsion,
            column=column,
            level_start=torch.tensor(level_start, dtype=torch.int64),
            compact=compact,
            compact_atom=compact_atom,
            residue_row=residue_row,
        )

    def tables(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64):
        """The builder's :class:`ZMatrixTables` in ``dtype`` on ``device`` (cached)."""
        key = (torch.device(device), dtype)
        if key not in self._cache:
            t = self._tables64
            moved = {}
            for field in t.__dataclass_fields__:
                value = getattr(t, field)
                if "level_start" not in field:  # the level loops read them on the host
                    value = value.to(key[0])
                    value = value.to(dtype) if value.is_floating_point() else value
                moved[field] = value.contiguous()
            self._cache[key] = ZMatrixTables(**moved)
        return self._cache[key]

    # ------------------------------------------------------------------------------ API

    def moved_atoms(self, j: int) -> tuple[int, ...]:
        """The atom indices whose placement depends on column ``j``, sorted."""
        j = _checks.check_int("j", j, low=-self.n_columns, high=self.n_columns)
        return self._moves[j]

    def column_values(self, positions: object = None) -> torch.Tensor:
        """The columns measured from ``positions`` ((..., N, 3); default the input positions, in
        float64), in [-pi, pi): (..., n_columns) in their dtype, on their device."""
        if positions is None:
            positions = self.reference_positions
        else:
            positions = _checks.as_float_tensor("positions", positions)
            if positions.ndim < 2 or tuple(positions.shape[-2:]) != (self.n_atoms, 3):
                raise ValueError(
                    f"positions must have shape (..., n_atoms, 3) with n_atoms = {self.n_atoms}, "
                    f"got {tuple(positions.shape)}"
                )
        p = positions[..., self.column_atoms.to(positions.device), :]
        return dihedral(p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :])

    def _check_columns(self, columns: object) -> torch.Tensor:
        if not isinstance(columns, torch.Tensor):
            raise TypeError(f"columns must be a torch.Tensor, got {type(columns).__name__}")
        if columns.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"columns must have dtype float32 or float64, got {columns.dtype}")
        if columns.ndim != 2 or columns.shape[1] != self.n_columns:
            raise ValueError(
                f"columns must have shape (B, n_columns) with n_columns = {self.n_columns}, got "
                f"{tuple(columns.shape)}"
            )
        _checks.require_finite("columns", columns)
        return columns

    def build(self, columns: torch.Tensor) -> torch.Tensor:
        """Positions with every built residue placed at ``columns``.

        columns: (B, n_columns) float32 or float64, finite (any real value), B >= 0.
        Returns (B, N, 3) in columns' dtype and device; differentiable in ``columns``.
        """
        columns = self._check_columns(columns)
        return build_reference(self.tables(columns.device, columns.dtype), columns)

    def build_residues(
        self, columns: torch.Tensor, residues: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Only some residues per chain: the rows of a full :meth:`build` for their atoms.

        columns: (B, n_columns) float32 / float64; residues: (B, S) int residue indices of built
        residues, -1 for padding. Returns atom indices (B, S * A) int64 (-1 padding; A the most
        atoms one residue places) and their positions (B, S * A, 3) (zero at padding).
        """
        columns = self._check_columns(columns)
        if not isinstance(residues, torch.Tensor):
            raise TypeError(f"residues must be a torch.Tensor, got {type(residues).__name__}")
        if residues.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"residues must have dtype int32 or int64, got {residues.dtype}")
        if residues.ndim != 2 or residues.shape[0] != columns.shape[0]:
            raise ValueError(
                f"residues must have shape (B, S) with B = {columns.shape[0]} (the batch of "
                f"columns), got {tuple(residues.shape)}"
            )
        tables = self.tables(columns.device, columns.dtype)
        residues = residues.to(columns.device, torch.int64)
        bad = (residues < -1) | (residues >= self.n_residues)
        if bad.any():
            raise ValueError(
                f"residues must hold residue indices in [0, {self.n_residues}) or -1, got "
                f"{int(residues[bad][0])}"
            )
        rows = torch.where(residues >= 0, tables.residue_row[residues.clamp(min=0)], -1)
        unbuilt = (residues >= 0) & (rows < 0)
        if unbuilt.any():
            raise ValueError(
                f"residues: residue {int(residues[unbuilt][0])} is not built by this builder "
                f"(built: {len(self.built_residues)} residues, see built_residues)"
            )
        return build_residues_reference(tables, columns, rows)

    def __repr__(self) -> str:
        return (
            f"ZMatrixBuilder(n_atoms={self.n_atoms}, n_columns={self.n_columns}, "
            f"geometry={self.geometry!r}, built_residues={len(self.built_residues)}, "
            f"fixed={len(self.fixed_residues)})"
        )


def _requested_residues(movable: Iterable[int] | None, n_residues: int) -> set[int] | None:
    if movable is None:
        return None
    if isinstance(movable, (str, bytes)) or not isinstance(movable, Iterable):
        raise TypeError(
            f"movable must be a sequence of residue indices or None, got {type(movable).__name__}"
        )
    if isinstance(movable, torch.Tensor):
        movable = movable.tolist()
    requested = set()
    for value in movable:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"movable must hold int residue indices, got {value!r}")
        if not 0 <= int(value) < n_residues:
            raise ValueError(
                f"movable must hold residue indices in [0, {n_residues}), got {int(value)}"
            )
        requested.add(int(value))
    return requested
