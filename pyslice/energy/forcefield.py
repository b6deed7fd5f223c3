"""Batched all-atom force-field energies: parameters from an OpenMM System, evaluated by pyslice.

``ForceFieldEnergy(protein)`` reads the parameters once from the OpenMM ``System`` that
``ForceField(*forcefield).createSystem(protein.topology, ...)`` builds, and then evaluates many
conformations at once (``energy(positions)``), per term (``energy.terms``), or as the change caused
by moving a few atoms (``energy.delta``), in O(moved x atoms) instead of O(atoms^2).

Units are OpenMM's: positions in nm, energies in kJ/mol. Energies come back as float64 whatever the
position dtype: every path accumulates in float64, and Metropolis needs energy differences that a
float32 total (~1e4 kJ/mol, ulp 1e-3) would blur.

The energy is exactly OpenMM's for the supported forces (tests compare with OpenMM's Reference
platform); which forces those are: :mod:`pyslice.energy.tables`; the maths of each term:
:mod:`pyslice.energy.reference`. NaN or infinite positions are a ValueError.

Backends (pyslice.backends, ops "energy" and "energy_delta"): a torch reference (float32 and
float64, differentiable with respect to positions; the oracle of the tests), C++/OpenMP for CPU
tensors and CUDA for CUDA tensors (float32 and float64; pair maths in the dtype, bonded terms and
all sums in float64).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from pyslice import _checks, backends
from pyslice.energy.tables import ONE_4PI_EPS0, TERMS, EnergyTables, tables_from_system
from pyslice.structure.forcefields import (
    DEFAULT_FORCEFIELD,
    ForceFieldFiles,
    forcefield_files,
    load_forcefield,
)

if TYPE_CHECKING:
    import openmm

__all__ = ["ONE_4PI_EPS0", "TERMS", "EnergyTables", "ForceFieldEnergy"]


def _topology_of(protein: object):
    for attribute in ("topology", "positions"):
        if not hasattr(protein, attribute):
            raise TypeError(
                "protein must have .topology (an openmm.app.Topology) and .positions, got "
                f"{type(protein).__name__} without .{attribute}"
            )
    topology = protein.topology  # type: ignore[attr-defined]
    n_topology = topology.getNumAtoms()
    n_positions = len(protein.positions)  # type: ignore[attr-defined]
    if n_topology != n_positions:
        raise ValueError(
            f"protein.topology has {n_topology} atoms but protein.positions has {n_positions} "
            "rows; they must describe the same atoms"
        )
    return topology


class ForceFieldEnergy:
    """The potential energy U(x) (kJ/mol) of conformations x (nm) of one protein.

    Args:
        protein: anything with ``.topology`` (openmm.app.Topology, hydrogens included) and
            ``.positions`` (N rows); only the topology and the atom count are used.
        forcefield: OpenMM force-field XML files: a name or path, or a sequence of them (default
            amber14); each set is parsed once per process
            (:func:`pyslice.structure.forcefields.load_forcefield`).
        nonbonded: ``"nocutoff"`` (all pairs) or ``"cutoff"`` (OpenMM's CutoffNonPeriodic:
            reaction field, LJ cut at ``cutoff``).
        cutoff: r_c in nm for ``nonbonded="cutoff"``.
        dtype: float32 (default) or float64: the dtype positions are converted to and pair
            energies computed in (sums are float64 on every path).
        device: where evaluations run (default CPU); positions must live there.
        backend: force an implementation ("reference", "cpu", "cuda"); default automatic
            (``pyslice.backends``; ``PYSLICE_BACKEND`` also forces one).

    Calls (B conformations of N atoms; (N, 3) is accepted as one conformation and gives shape ()):
        ``energy(positions)``: (B,) float64 total energy.
        ``energy.terms(positions)``: dict of (B,) float64: bond, angle, torsion, coulomb,
        lennard_jones, and nonbonded = coulomb + lennard_jones.
        ``energy.delta(positions, new_positions, moved)``: (B,) float64 energy change.
    """

    def __init__(
        self,
        protein: object,
        forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
        nonbonded: Literal["nocutoff", "cutoff"] = "nocutoff",
        cutoff: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        backend: str | None = None,
    ) -> None:
        from openmm import app, unit

        files = forcefield_files(forcefield)
        if nonbonded not in ("nocutoff", "cutoff"):
            raise ValueError(f"nonbonded must be 'nocutoff' or 'cutoff', got {nonbonded!r}")
        cutoff = _checks.check_float("cutoff", cutoff, positive=True)
        topology = _topology_of(protein)
        method = app.NoCutoff if nonbonded == "nocutoff" else app.CutoffNonPeriodic
        system = load_forcefield(files).createSystem(
            topology,
            nonbondedMethod=method,
            nonbondedCutoff=cutoff * unit.nanometer,
            constraints=None,
            rigidWater=False,
        )
        self._init(system, topology.getNumAtoms(), dtype, device, backend)

    @classmethod
    def from_system(
        cls,
        protein: object,
        system: openmm.System,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        backend: str | None = None,
    ) -> ForceFieldEnergy:
        """The energy of an OpenMM ``system`` built for ``protein`` (same checks as the constructor;
        the nonbonded method is the system's: NoCutoff or CutoffNonPeriodic)."""
        n = _topology_of(protein).getNumAtoms()
        if system.getNumParticles() != n:
            raise ValueError(
                f"system has {system.getNumParticles()} particles but protein.topology has "
                f"{n} atoms"
            )
        self = cls.__new__(cls)
        self._init(system, n, dtype, device, backend)
        return self

    def _init(
        self,
        system: openmm.System,
        n_atoms: int,
        dtype: torch.dtype,
        device: torch.device | str | None,
        backend: str | None,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype
        self.backend = backends.requested_backend(backend)
        self.tables = tables_from_system(system, dtype=dtype, device=self.device)
        self.n_atoms = n_atoms
        self.nonbonded = "cutoff" if self.tables.cutoff > 0 else "nocutoff"
        self.cutoff = self.tables.cutoff if self.tables.cutoff > 0 else None

    def __repr__(self) -> str:
        return (
            f"ForceFieldEnergy(n_atoms={self.n_atoms}, nonbonded={self.nonbonded!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # -- validation ------------------------------------------------------------------------------

    def _positions(self, name: str, value: object) -> tuple[torch.Tensor, bool]:
        """(B, N, 3) contiguous tensor in self.dtype, and whether the input was one (N, 3)."""
        tensor = _checks.as_float_tensor(name, value)
        if tensor.device != self.device:
            raise ValueError(
                f"{name} must be on {self.device} (this energy's device), got {tensor.device}"
            )
        tensor, single = _checks.positions_batch(name, tensor, self.n_atoms)
        # Finiteness is checked after evaluation, and only when a result is not finite: a full
        # scan of every call's positions costs more than a delta() itself.
        return tensor.to(self.dtype).contiguous(), single

    @staticmethod
    def _reject_non_finite(out: torch.Tensor, **inputs: torch.Tensor) -> None:
        """NaN or infinite positions give a non-finite result: name the input that caused it."""
        if not _checks.values_checked() or bool(torch.isfinite(out).all()):
            return
        for name, tensor in inputs.items():
            _checks.require_finite(name, tensor)

    def _moved(self, value: object, batch: int) -> torch.Tensor:
        """(B, M) int64 moved-atom indices, -1 padded, validated (range, no duplicates)."""
        if isinstance(value, torch.Tensor):
            moved = value
        elif isinstance(value, (np.ndarray, Sequence)):
            moved = torch.as_tensor(np.asarray(value))
        else:
            raise TypeError(f"moved must be a tensor or array, got {type(value).__name__}")
        if moved.device != self.device:
            raise ValueError(f"moved must be on {self.device}, got {moved.device}")
        if moved.dtype == torch.bool:
            if moved.dim() != 2 or moved.shape != (batch, self.n_atoms):
                raise ValueError(
                    f"moved as a bool mask must have shape ({batch}, {self.n_atoms}), got "
                    f"{tuple(moved.shape)}"
                )
            count = int(moved.sum(1).max()) if batch else 0
            order = torch.argsort((~moved).to(torch.int8), dim=1, stable=True)[:, :count]
            return torch.where(moved.gather(1, order), order, -1).contiguous()
        if moved.is_floating_point() or moved.is_complex():
            raise TypeError(
                f"moved must hold int64 atom indices or be a bool mask, got {moved.dtype}"
            )
        if moved.dim() != 2 or moved.shape[0] != batch:
            raise ValueError(
                f"moved must have shape (B, M) = ({batch}, M) of atom indices (-1 = padding) or be "
                f"a ({batch}, {self.n_atoms}) bool mask, got shape {tuple(moved.shape)}"
            )
        moved = moved.to(torch.int64).contiguous()
        if moved.numel():
            low, high = int(moved.min()), int(moved.max())
            if low < -1 or high >= self.n_atoms:
                raise ValueError(
                    f"moved indices must be in [0, {self.n_atoms}) or -1 (padding), got values in "
                    f"[{low}, {high}]"
                )
            ordered = moved.sort(dim=1).values
            if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()):
                raise ValueError("moved must not list an atom twice in one row")
        return moved

    # -- evaluation -----------------------------------------------------------------------------

    def _select(self, op: str) -> backends.Implementation:
        return backends.select(op, self.device, self.dtype, self.backend)

    def per_term(self, positions: object) -> torch.Tensor:
        """(B, 5) float64 energies, columns ``TERMS`` (kJ/mol), of positions (B, N, 3) nm."""
        x, single = self._positions("positions", positions)
        out = self._select("energy")(self.tables, x)
        self._reject_non_finite(out, positions=x)
        return out[0] if single else out

    def __call__(self, positions: object) -> torch.Tensor:
        """(B,) float64 total energy (kJ/mol) of positions (B, N, 3) nm; () for (N, 3)."""
        return self.per_term(positions).sum(-1)

    def terms(self, positions: object) -> dict[str, torch.Tensor]:
        """Per-term energies of positions (B, N, 3) nm: dict of (B,) float64 kJ/mol (bond, angle,
        torsion, coulomb, lennard_jones, nonbonded = coulomb + lennard_jones)."""
        return _as_dict(self.per_term(positions))

    def per_term_delta(
        self, positions: object, new_positions: object, moved: object
    ) -> torch.Tensor:
        """(B, 5) float64 per-term energy change; see :meth:`delta`."""
        old, single = self._positions("positions", positions)
        new, single_new = self._positions("new_positions", new_positions)
        if old.shape != new.shape:
            raise ValueError(
                f"new_positions must have the shape of positions {tuple(old.shape)}, got "
                f"{tuple(new.shape)}"
            )
        if single and isinstance(moved, (torch.Tensor, np.ndarray)) and moved.ndim == 1:
            moved = moved[None]
        elif (
            single
            and isinstance(moved, Sequence)
            and all(isinstance(m, numbers.Integral) for m in moved)
        ):
            moved = [list(moved)]
        index = self._moved(moved, old.shape[0])
        out = self._select("energy_delta")(self.tables, old, new, index)
        rows = index.clamp_min(0)[:, :, None].expand(-1, -1, 3)
        self._reject_non_finite(out, positions=old, new_positions=new.gather(1, rows))
        return out[0] if single else out

    def delta(self, positions: object, new_positions: object, moved: object) -> torch.Tensor:
        """(B,) float64 energy change (kJ/mol) when the atoms ``moved`` go from ``positions`` to
        ``new_positions`` while every other atom stays at ``positions``:
        U(positions with rows ``moved`` of new_positions) - U(positions).

        Only the terms that touch a moved atom are evaluated: O(M N) per conformation.
        positions, new_positions: (B, N, 3) nm (only the moved rows of new_positions are read).
        moved: (B, M) integer atom indices, padded with -1 (no atom twice in a row), or a (B, N)
        bool mask. With (N, 3) positions, moved may be (M,) and the result has shape ().
        A conformation whose old energy is +inf gives NaN or -inf: start chains from finite
        energies.
        """
        return self.per_term_delta(positions, new_positions, moved).sum(-1)

    def trusted_delta(
        self, positions: torch.Tensor, new_positions: torch.Tensor, moved: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`delta` without argument checks, for pyslice's own samplers: nothing here waits
        for the device (no host synchronisation), so a sampler step can run ahead of it.

        The caller guarantees what :meth:`delta` checks: ``positions`` and ``new_positions``
        (B, N, 3) contiguous in this energy's dtype and on its device, ``moved`` (B, M) int64
        valid atom indices or -1, none twice in a row. Non-finite results are not diagnosed.
        """
        return self._select("energy_delta")(self.tables, positions, new_positions, moved).sum(-1)

    def delta_terms(
        self, positions: object, new_positions: object, moved: object
    ) -> dict[str, torch.Tensor]:
        """Per-term :meth:`delta`: dict of (B,) float64 (same keys as :meth:`terms`)."""
        return _as_dict(self.per_term_delta(positions, new_positions, moved))


def _as_dict(per_term: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {name: per_term[..., k] for k, name in enumerate(TERMS)}
    out["nonbonded"] = out["coulomb"] + out["lennard_jones"]
    return out
