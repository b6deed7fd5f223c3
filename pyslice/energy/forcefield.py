"""Batched all-atom force-field energies: parameters from an OpenMM System, evaluated by pyslice.

``ForceFieldEnergy(protein)`` reads the parameters once from the OpenMM ``System`` that
``ForceField(*forcefield).createSystem(protein.topology, ...)`` builds, and then evaluates many
conformations at once (``energy(positions)``), per term (``energy.terms``), or as the change caused
by moving a few atoms (``energy.delta``), in O(moved x atoms) instead of O(atoms^2).

Units are OpenMM's: positions in nm, energies in kJ/mol. Energies come back as float64 whatever the
position dtype: every path accumulates in float64, and Metropolis needs energy differences that a
float32 total (~1e4 kJ/mol, ulp 1e-3) would blur.

The energy is exactly OpenMM's for the supported forces (tests compare with OpenMM's Reference
platform): HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce (proper and improper),
NonbondedForce with ``NoCutoff`` or ``CutoffNonPeriodic``. Nothing else may contribute energy: a
CMAPTorsionForce, implicit solvent (GBSAOBCForce, CustomGBForce), any Custom*Force or an unknown
force is a ValueError naming its class (never a silently different energy). CMMotionRemover is
ignored (it contributes no energy).

Nonbonded maths (OpenMM's, K = ONE_4PI_EPS0 = 138.935457644382 kJ nm/(mol e^2)):

- plain pairs (i < j, not an exception): sigma_ij = (sigma_i + sigma_j)/2,
  eps_ij = sqrt(eps_i eps_j), LJ = 4 eps_ij ((sigma/r)^12 - (sigma/r)^6);
  NoCutoff: Coulomb = K q_i q_j / r;
  CutoffNonPeriodic: pairs with r >= r_c contribute nothing; Coulomb is the reaction field
  K q_i q_j (1/r + k_rf r^2 - c_rf), k_rf = (eps_rf - 1)/((2 eps_rf + 1) r_c^3),
  c_rf = 1/r_c + k_rf r_c^2 (eps_rf: the force's reaction-field dielectric, 78.3 by default);
  LJ is cut at r_c, not shifted (no switching function, no dispersion correction: both are
  periodic-only or off, and a force that asks for switching is refused).
- exceptions (1-4 pairs with scaled parameters; exclusions are exceptions with zero charge product
  and epsilon): K qq_ij / r + 4 eps_ij (...), with the exception's own parameters, in both modes
  without cutoff or reaction field (checked against OpenMM 8.6's Reference platform).

Clashes: r^2 is floored at 1e-30 nm^2 (no normal energy changes) and the LJ term is zero where
eps_ij = 0 (amber's hydroxyl hydrogens), so overlapping atoms give a huge positive energy, +inf
where (sigma/r)^12 overflows the dtype (r below ~1e-4 sigma in float32), never NaN. NaN or infinite
positions are a ValueError. A float64 evaluation stays finite down to r ~ 1e-15 nm.

Backends (pyslice.backends, ops "energy" and "energy_delta"): a torch reference (float32 and
float64, differentiable with respect to positions; the oracle of the tests), C++/OpenMP for CPU
tensors and CUDA for CUDA tensors (float32 and float64; pair maths in the dtype, bonded terms and
all sums in float64).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pyslice import _checks, backends

if TYPE_CHECKING:
    import openmm

__all__ = ["ONE_4PI_EPS0", "TERMS", "EnergyTables", "ForceFieldEnergy"]

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


# ------------------------------------------------------------------------------------------------
# Parameters from an OpenMM System
# ------------------------------------------------------------------------------------------------


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


def _check_forces(system: openmm.System) -> dict[str, list]:
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
    forces = _check_forces(system)
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


# ------------------------------------------------------------------------------------------------
# Torch reference (the oracle): readable, float32/float64, differentiable w.r.t. positions
# ------------------------------------------------------------------------------------------------


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _norm(a: torch.Tensor) -> torch.Tensor:
    return _dot(a, a).sqrt()


def pair_terms_reference(
    r2: torch.Tensor,
    qq: torch.Tensor,
    sigma: torch.Tensor,
    eps4: torch.Tensor,
    cutoff: float,
    krf: float,
    crf: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coulomb and LJ of plain pairs at squared distance ``r2`` (nm^2); csrc/include/pyslice/
    energy.h ``pair_terms`` is the same expression."""
    r2 = r2.clamp_min(MIN_R2)
    inv_r = 1.0 / r2.sqrt()
    sr2 = sigma * sigma * (inv_r * inv_r)
    sr6 = sr2 * sr2 * sr2
    lj = torch.where(eps4 != 0, eps4 * sr6 * (sr6 - 1.0), torch.zeros_like(sr6))
    if cutoff > 0:
        inside = r2 < cutoff * cutoff
        coulomb = torch.where(inside, qq * (inv_r + krf * r2 - crf), torch.zeros_like(r2))
        lj = torch.where(inside, lj, torch.zeros_like(lj))
    else:
        coulomb = qq * inv_r
    return coulomb, lj


def _exception_terms(
    tables: EnergyTables, xa: torch.Tensor, xb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., E) Coulomb and LJ of the exceptions with endpoint positions xa, xb (..., E, 3)."""
    params = tables.exc_params.to(xa.dtype)
    r2 = _dot(xa - xb, xa - xb).clamp_min(MIN_R2)
    inv_r = 1.0 / r2.sqrt()
    sr2 = params[:, 1] ** 2 * inv_r * inv_r
    sr6 = sr2 * sr2 * sr2
    lj = torch.where(params[:, 2] != 0, params[:, 2] * sr6 * (sr6 - 1.0), torch.zeros_like(sr6))
    return params[:, 0] * inv_r, lj


def _bonded_terms(tables: EnergyTables, x: torch.Tensor) -> list[torch.Tensor]:
    """Per-term energies [(..., nb), (..., na), (..., nt)] of conformations x (..., N, 3)."""
    x = x.to(torch.float64)  # bonded terms are O(N): always float64, as in the compiled paths
    a = tables.bond_atoms
    k, r0 = tables.bond_params.unbind(-1)
    bond = 0.5 * k * (_norm(x[..., a[:, 0], :] - x[..., a[:, 1], :]) - r0) ** 2

    a = tables.angle_atoms
    u = x[..., a[:, 0], :] - x[..., a[:, 1], :]
    v = x[..., a[:, 2], :] - x[..., a[:, 1], :]
    theta = torch.atan2(_norm(torch.linalg.cross(u, v)), _dot(u, v))
    k, theta0 = tables.angle_params.unbind(-1)
    angle = 0.5 * k * (theta - theta0) ** 2

    a = tables.torsion_atoms
    b1 = x[..., a[:, 1], :] - x[..., a[:, 0], :]
    b2 = x[..., a[:, 2], :] - x[..., a[:, 1], :]
    b3 = x[..., a[:, 3], :] - x[..., a[:, 2], :]
    n1 = torch.linalg.cross(b1, b2)
    n2 = torch.linalg.cross(b2, b3)
    phi = torch.atan2(_norm(b2) * _dot(b1, n2), _dot(n1, n2))  # IUPAC sign, as OpenMM
    k, phase, periodicity = tables.torsion_params.unbind(-1)
    torsion = k * (1.0 + torch.cos(periodicity * phi - phase))
    return [bond, angle, torsion]


def _excluded_dense(tables: EnergyTables) -> torch.Tensor:
    """(N, N) bool: pairs the plain sum skips (exception partners and the diagonal)."""
    n = tables.n_atoms
    rows = torch.repeat_interleave(
        torch.arange(n, device=tables.device), tables.excl_ptr.diff().to(tables.device)
    )
    dense = torch.eye(n, dtype=torch.bool, device=tables.device)
    dense[rows, tables.excl_idx] = True
    return dense


def _pair_sums(
    tables: EnergyTables, xi: torch.Tensor, rows: torch.Tensor, x: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j w[..., r, j] * (Coulomb, LJ)(xi[..., r], x[..., j]) over rows r and atoms j, where
    ``rows`` (..., R) are the atom indices of xi (..., R, 3); entries with w == 0 are skipped
    (their distances replaced so that no inf/NaN leaks into values or gradients)."""
    d = xi[..., :, None, :] - x[..., None, :, :]
    keep = w != 0
    r2 = torch.where(keep, _dot(d, d), torch.ones_like(w))
    qq = tables.charge[rows][..., :, None] * tables.charge
    sigma = tables.half_sigma[rows][..., :, None] + tables.half_sigma
    eps4 = tables.two_sqrt_eps[rows][..., :, None] * tables.two_sqrt_eps
    coulomb, lj = pair_terms_reference(r2, qq, sigma, eps4, tables.cutoff, tables.krf, tables.crf)
    zero = torch.zeros_like(coulomb)
    coulomb = torch.where(keep, w * coulomb, zero).to(torch.float64)
    lj = torch.where(keep, w * lj, zero).to(torch.float64)
    return coulomb.sum((-1, -2)), lj.sum((-1, -2))


def energy_reference(tables: EnergyTables, positions: torch.Tensor) -> torch.Tensor:
    """(B, 5) float64 per-term energies (kJ/mol, columns ``TERMS``) of positions (B, N, 3) nm."""
    batch, n = positions.shape[0], tables.n_atoms
    x = positions.to(tables.dtype)
    bonded = [t.sum(-1) for t in _bonded_terms(tables, x)]
    xa, xb = x[:, tables.exc_atoms[:, 0]], x[:, tables.exc_atoms[:, 1]]
    coulomb, lj = (t.to(torch.float64).sum(-1) for t in _exception_terms(tables, xa, xb))
    # Plain pairs i < j that are not exceptions, in row chunks that bound the (B, R, N) temporaries.
    excluded = _excluded_dense(tables)
    upper = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1) & ~excluded
    chunk = max(1, (1 << 22) // max(1, batch * n))
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=x.device)
        w = upper[rows].to(x.dtype).expand(batch, -1, -1)
        c, l = _pair_sums(tables, x[:, rows], rows, x, w)
        coulomb, lj = coulomb + c, lj + l
    return torch.stack([*bonded, coulomb, lj], dim=-1)


def energy_delta_reference(
    tables: EnergyTables, positions: torch.Tensor, new_positions: torch.Tensor, moved: torch.Tensor
) -> torch.Tensor:
    """(B, 5) float64: per-term E(positions with the rows ``moved`` taken from new_positions) -
    E(positions), from the terms that touch a moved atom only. moved: (B, M) int64, -1 = padding,
    no duplicates within a row."""
    batch, n = positions.shape[0], tables.n_atoms
    old = positions.to(tables.dtype)
    valid = moved >= 0
    safe = moved.clamp_min(0)
    rows = torch.arange(batch, device=old.device)[:, None]
    in_s = torch.zeros(batch, n + 1, dtype=torch.bool, device=old.device)
    in_s[rows, torch.where(valid, moved, n)] = True
    in_s = in_s[:, :n]
    new = torch.where(in_s[..., None], new_positions.to(tables.dtype), old)

    # Bonded terms and exceptions that touch a moved atom, each once.
    out = []
    for atoms, e_new, e_old in zip(
        (tables.bond_atoms, tables.angle_atoms, tables.torsion_atoms),
        _bonded_terms(tables, new),
        _bonded_terms(tables, old),
    ):
        touched = in_s[:, atoms].any(-1)
        out.append(torch.where(touched, e_new - e_old, torch.zeros_like(e_new)).sum(-1))
    touched = in_s[:, tables.exc_atoms].any(-1)
    terms = []
    for e_new, e_old in zip(
        _exception_terms(tables, new[:, tables.exc_atoms[:, 0]], new[:, tables.exc_atoms[:, 1]]),
        _exception_terms(tables, old[:, tables.exc_atoms[:, 0]], old[:, tables.exc_atoms[:, 1]]),
    ):
        diff = (e_new.to(torch.float64) - e_old.to(torch.float64)).where(touched, 0.0)
        terms.append(diff.sum(-1))

    # Plain pairs (moved atom i, any atom j): weight 1/2 when j is moved too (the pair is seen
    # from both ends), 0 for padding, i itself and exception partners.
    excluded = _excluded_dense(tables)[safe]  # (B, M, N)
    w = torch.where(in_s, 0.5, 1.0)[:, None, :].to(old.dtype).expand(-1, moved.shape[1], -1)
    w = torch.where(excluded | ~valid[..., None], torch.zeros_like(w), w)
    xi_new = new[rows, safe]
    xi_old = old[rows, safe]
    c_new, l_new = _pair_sums(tables, xi_new, safe, new, w)
    c_old, l_old = _pair_sums(tables, xi_old, safe, old, w)
    out += [terms[0] + (c_new - c_old), terms[1] + (l_new - l_old)]
    return torch.stack(out, dim=-1)


# ------------------------------------------------------------------------------------------------
# The user-facing class
# ------------------------------------------------------------------------------------------------


def _forcefield_files(forcefield: object) -> tuple[str, ...]:
    if isinstance(forcefield, str):
        return (forcefield,)
    if (
        isinstance(forcefield, Sequence)
        and forcefield
        and all(isinstance(f, str) for f in forcefield)
    ):
        return tuple(forcefield)
    raise TypeError(
        f"forcefield must be a file name or a non-empty sequence of them, got {forcefield!r}"
    )


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
        forcefield: OpenMM force-field XML files (default amber14).
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
        forcefield: str | Sequence[str] = ("amber14-all.xml",),
        nonbonded: Literal["nocutoff", "cutoff"] = "nocutoff",
        cutoff: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        backend: str | None = None,
    ) -> None:
        from openmm import app, unit

        files = _forcefield_files(forcefield)
        if nonbonded not in ("nocutoff", "cutoff"):
            raise ValueError(f"nonbonded must be 'nocutoff' or 'cutoff', got {nonbonded!r}")
        cutoff = _checks.check_float("cutoff", cutoff, positive=True)
        topology = _topology_of(protein)
        method = app.NoCutoff if nonbonded == "nocutoff" else app.CutoffNonPeriodic
        system = app.ForceField(*files).createSystem(
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
        single = tensor.dim() == 2
        if single:
            tensor = tensor[None]
        if tensor.dim() != 3 or tensor.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"{name} must have shape (B, {self.n_atoms}, 3) or ({self.n_atoms}, 3) (nm), got "
                f"{tuple(tensor.shape) if not single else tuple(tensor.shape[1:])}"
            )
        # Finiteness is checked after evaluation, and only when a result is not finite: a full
        # scan of every call's positions costs more than a delta() itself.
        return tensor.to(self.dtype).contiguous(), single

    @staticmethod
    def _reject_non_finite(out: torch.Tensor, **inputs: torch.Tensor) -> None:
        """NaN or infinite positions give a non-finite result: name the input that caused it."""
        if bool(torch.isfinite(out).all()):
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

    def delta_terms(
        self, positions: object, new_positions: object, moved: object
    ) -> dict[str, torch.Tensor]:
        """Per-term :meth:`delta`: dict of (B,) float64 (same keys as :meth:`terms`)."""
        return _as_dict(self.per_term_delta(positions, new_positions, moved))


def _as_dict(per_term: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {name: per_term[..., k] for k, name in enumerate(TERMS)}
    out["nonbonded"] = out["coulomb"] + out["lennard_jones"]
    return out
