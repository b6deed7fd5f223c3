"""The torch reference of the energy (ops ``energy`` and ``energy_delta``): plain, readable,
float32 and float64, differentiable with respect to positions; the oracle of every test of the
compiled paths (csrc/include/pyslice/energy.h holds the same expressions).

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
where (sigma/r)^12 overflows the dtype (r below ~1e-4 sigma in float32), never NaN. A float64
evaluation stays finite down to r ~ 1e-15 nm.
"""

from __future__ import annotations

import torch

from pyslice.energy.tables import MIN_R2, EnergyTables
from pyslice.geometry.angles import dihedral

__all__ = ["energy_delta_reference", "energy_reference", "pair_terms_reference"]


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
    # IUPAC sign, as OpenMM; the wrap of +pi to -pi leaves cos(n phi - phase) unchanged.
    phi = dihedral(*(x[..., a[:, k], :] for k in range(4)))
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
