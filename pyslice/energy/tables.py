"""The energy's parameters, read once from an OpenMM ``System`` and laid out for the kernels.

:func:`tables_from_system` accepts exactly the forces pyslice evaluates as OpenMM does:
HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce (proper and improper), and one
NonbondedForce with ``NoCutoff`` or ``CutoffNonPeriodic``. Nothing else may contribute energy: a
CMAPTorsionForce, implicit solvent (GBSAOBCForce, CustomGBForce), any Custom*Force or an unknown
force is a ValueError naming its class (never a silently different energy). CMMotionRemover is
ignored (it contributes no energy). Units: nm, kJ/mol, radians, elementary charges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import openmm

__all__ = ["MIN_R2", "ONE_4PI_EPS0", "TERMS", "EnergyTables", "check_forces", "tables_from_system"]

#: OpenMM's Coulomb constant, kJ nm / (mol e^2) (SimTKOpenMMRealType.h).
ONE_4PI_EPS0 = 138.93545764438198
#: Columns of the (B, 5) per-term output of every backend, in order.
TERMS = ("bond", "angle", "torsion", "coulomb", "lennard_jones")
# r^2 floor (nm^2): keeps 1/r finite for coincident atoms; no real distance is this small.
MIN_R2 = 1e-30

_SUPPORTED = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce")
_NO_ENERGY = ("CMMotionRemover",)


@dataclass(frozen=True)
class EnergyTables:
    """Everything about the energy that never changes, on one device, laid out for the kernels.

    Per atom (N atoms), in the compute dtype: ``charge`` q sqrt(K) (so K q_i q_j is a product),
    ``half_sigma`` sigma/2 (nm), ``two_sqrt_eps`` 2 sqrt(eps) (so 4 eps_ij is a product).
    Exclusions: ``excl_ptr`` (N+1,), ``excl_idx`` (nnz,) int64, CSR, the sorted partners of each
    atom that the plain pair sum skips (every exception partner, both directions).
    Exceptions that contribute (non-zero charge product or epsilon): ``exc_atoms`` (E, 2) int64,
    ``exc_params`` (E, 3) float64 [K qq, sigma, 4 eps].
    Bonds ``bond_atoms`` (nb, 2), ``bond_params`` (nb, 2) [k kJ/mol/nm^2, r0 nm]; angles
    ``angle_atoms`` (na, 3), ``angle_params`` (na, 2) [k kJ/mol/rad^2, theta0 rad]; torsions
    ``torsion_atoms`` (nt, 4), ``torsion_params`` (nt, 3) [k kJ/mol, phase rad, periodicity].
    For ``delta``: ``<term>_ptr``/``<term>_idx`` CSR lists of the terms that touch each atom.
    ``cutoff`` is 0 for NoCutoff, else r_c (nm) with reaction-field constants ``krf``, ``crf``.
    """

    n_atoms: int
    charge: torch.Tensor
    half_sigma: torch.Tensor
    two_sqrt_eps: torch.Tensor
    excl_ptr: torch.Tensor
    excl_idx: torch.Tensor
    exc_atoms: torch.Tensor
    exc_params: torch.Tensor
    exc_ptr: torch.Tensor
    exc_idx: torch.Tensor
    bond_atoms: torch.Tensor
    bond_params: torch.Tensor
    bond_ptr: torch.Tensor
    bond_idx: torch.Tensor
    angle_atoms: torch.Tensor
    angle_params: torch.Tensor
    angle_ptr: torch.Tensor
    angle_idx: torch.Tensor
    torsion_atoms: torch.Tensor
    torsion_params: torch.Tensor
    torsion_ptr: torch.Tensor
    torsion_idx: torch.Tensor
    cutoff: float
    krf: float
    crf: float

    @property
    def dtype(self) -> torch.dtype:
        return self.charge.dtype

    @property
    def device(self) -> torch.device:
        return self.charge.device

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name (what the compiled paths receive)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy on ``device`` with the per-atom pair parameters in ``dtype`` (rest unchanged)."""
        changes: dict[str, Any] = {}
        for name, tensor in self.tensors().items():
            target = dtype if name in ("charge", "half_sigma", "two_sqrt_eps") else None
            changes[name] = tensor.to(device=device, dtype=target or tensor.dtype).contiguous()
        return EnergyTables(
            n_atoms=self.n_atoms, cutoff=self.cutoff, krf=self.krf, crf=self.crf, **changes
        )


def _csr(atoms: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """For terms ``atoms`` (T, k): per atom, the sorted indices of the terms that touch it."""
    n_terms, width = atoms.shape if atoms.ndim == 2 else (0, 1)
    owner = atoms.reshape(-1)
    term = np.repeat(np.arange(n_terms, dtype=np.int64), width)
    pairs = np.unique(np.stack([owner, term], axis=1), axis=0) if n_terms else np.zeros((0, 2))
    ptr = np.zeros(n_atoms + 1, dtype=np.int64)
    np.add.at(ptr, pairs[:, 0].astype(np.int64) + 1, 1)
    return np.cumsum(ptr), pairs[:, 1].astype(np.int64)


def _neighbours(pairs: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of sorted partners for the undirected ``pairs`` (P, 2)."""
    both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), np.int64)
    both = np.unique(both, axis=0) if len(both) else both
    ptr = np.zeros(n_atoms + 1, dtype=np.int64)
    np.add.at(ptr, both[:, 0].astype(np.int64) + 1, 1)
    return np.cumsum(ptr), both[:, 1].astype(np.int64)


def check_forces(system: openmm.System) -> dict[str, list]:
    """The system's forces by class name (the supported ones only); a ValueError naming any force
    that would contribute energy pyslice does not evaluate, or a second NonbondedForce."""
    forces: dict[str, list] = {name: [] for name in _SUPPORTED}
    for force in system.getForces():
        name = type(force).__name__
        if name in _NO_ENERGY:
            continue
        if name not in forces:
            raise ValueError(
                f"the System has a {name}, which ForceFieldEnergy does not support (it evaluates "
                f"{', '.join(_SUPPORTED)} only): its energy would be silently missing. Remove it, "
                "or use a force field without it (no implicit solvent, no CMAP)"
            )
        forces[name].append(force)
    if len(forces["NonbondedForce"]) > 1:
        raise ValueError("the System has more than one NonbondedForce; ForceFieldEnergy takes one")
    return forces


def tables_from_system(
    system: openmm.System, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> EnergyTables:
    """The :class:`EnergyTables` of an OpenMM ``System`` (ValueError for anything unsupported)."""
    import openmm
    from openmm import unit

    n = system.getNumParticles()
    forces = check_forces(system)
    nm, kj, rad = unit.nanometer, unit.kilojoule_per_mole, unit.radian

    charge = np.zeros(n)
    sigma = np.zeros(n)
    eps = np.zeros(n)
    exc_pairs: list[tuple[int, int]] = []
    exc_atoms: list[tuple[int, int]] = []
    exc_params: list[tuple[float, float, float]] = []
    cutoff = krf = crf = 0.0
    for force in forces["NonbondedForce"]:
        method = force.getNonbondedMethod()
        if method == openmm.NonbondedForce.CutoffNonPeriodic:
            cutoff = force.getCutoffDistance().value_in_unit(nm)
            eps_rf = force.getReactionFieldDielectric()
            krf = (eps_rf - 1.0) / ((2.0 * eps_rf + 1.0) * cutoff**3)
            crf = 1.0 / cutoff + krf * cutoff**2
            if force.getUseSwitchingFunction():
                raise ValueError(
                    "the NonbondedForce uses a switching function, which ForceFieldEnergy does "
                    "not implement"
                )
        elif method != openmm.NonbondedForce.NoCutoff:
            raise ValueError(
                "the NonbondedForce must use NoCutoff or CutoffNonPeriodic (a protein in vacuum), "
                f"got nonbonded method {method}"
            )
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            raise ValueError("NonbondedForce parameter offsets are not supported")
        for i in range(n):
            q, s, e = force.getParticleParameters(i)
            charge[i], sigma[i], eps[i] = q.value_in_unit(unit.elementary_charge), s / nm, e / kj
        for k in range(force.getNumExceptions()):
            i, j, qq, s, e = force.getExceptionParameters(k)
            qq = qq.value_in_unit(unit.elementary_charge**2)
            e = e.value_in_unit(kj)
            exc_pairs.append((i, j))
            if qq != 0.0 or e != 0.0:
                exc_atoms.append((i, j))
                exc_params.append((ONE_4PI_EPS0 * qq, s.value_in_unit(nm), 4.0 * e))

    bonds, bond_params = [], []
    for force in forces["HarmonicBondForce"]:
        for k in range(force.getNumBonds()):
            i, j, r0, kb = force.getBondParameters(k)
            bonds.append((i, j))
            bond_params.append((kb.value_in_unit(kj / nm**2), r0.value_in_unit(nm)))
    angles, angle_params = [], []
    for force in forces["HarmonicAngleForce"]:
        for k in range(force.getNumAngles()):
            i, j, l, theta0, ka = force.getAngleParameters(k)
            angles.append((i, j, l))
            angle_params.append((ka.value_in_unit(kj / rad**2), theta0.value_in_unit(rad)))
    torsions, torsion_params = [], []
    for force in forces["PeriodicTorsionForce"]:
        for k in range(force.getNumTorsions()):
            i, j, l, m, periodicity, phase, kt = force.getTorsionParameters(k)
            torsions.append((i, j, l, m))
            torsion_params.append((kt.value_in_unit(kj), phase.value_in_unit(rad), periodicity))

    def idx(rows: list, width: int) -> np.ndarray:
        return np.asarray(rows, dtype=np.int64).reshape(-1, width)

    def par(rows: list, width: int) -> np.ndarray:
        return np.asarray(rows, dtype=np.float64).reshape(-1, width)

    arrays: dict[str, np.ndarray] = {
        "charge": charge * math.sqrt(ONE_4PI_EPS0),
        "half_sigma": 0.5 * sigma,
        "two_sqrt_eps": 2.0 * np.sqrt(eps),
        "exc_atoms": idx(exc_atoms, 2),
        "exc_params": par(exc_params, 3),
        "bond_atoms": idx(bonds, 2),
        "bond_params": par(bond_params, 2),
        "angle_atoms": idx(angles, 3),
        "angle_params": par(angle_params, 2),
        "torsion_atoms": idx(torsions, 4),
        "torsion_params": par(torsion_params, 3),
    }
    arrays["excl_ptr"], arrays["excl_idx"] = _neighbours(idx(exc_pairs, 2), n)
    for term in ("exc", "bond", "angle", "torsion"):
        arrays[f"{term}_ptr"], arrays[f"{term}_idx"] = _csr(arrays[f"{term}_atoms"], n)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    tables = EnergyTables(n_atoms=n, cutoff=cutoff, krf=krf, crf=crf, **tensors)
    return tables.to(device=device, dtype=dtype)
