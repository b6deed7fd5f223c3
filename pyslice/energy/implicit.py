"""Implicit-solvent (generalized Born) energy: the plain torch reference, full and delta.

The maths and the parameters are those of :mod:`pyslice.energy.implicit_tables` (OpenMM's
CustomGBForce for amber's GBn2 and OBC2, read from the System). Everything here is batched over
conformations, positions (B, N, 3) nm, float32 or float64, and returns kJ/mol in float64.

Precision: the pair maths (descreening integrals, polar pair terms) runs in the tables' dtype;
every sum, the integrals I, the Born radii B and the per-atom terms (self, ACE) are float64.
The pair terms take the Born radii rounded to the dtype (what a float32 kernel reads).

Clashes: r^2 is floored at MIN_R2 (as the vacuum terms do), so coincident atoms give finite
descreening terms. The GB energy stays finite at any geometry: tanh keeps every Born radius in
[or rho / (rho + or), or rho / (rho - or)] (rho = or + offset) and f_GB >= sqrt(B_i B_j) exp(-r^2 /
(8 B_i B_j)) > 0 near r = 0, so a clash never makes it NaN or infinite; the huge energy of a clash
is the Lennard-Jones term's.

The delta (:func:`implicit_delta_reference`) is exact: it equals the difference of two full
energies to round-off. A chain caches :class:`BornState` (I and B of its current conformation).
For a move of the atoms S (M of them):

1. I'_i = I_i + sum_{m in S} [g_im(new) - g_im(old)] for i not in S, and I'_i = sum_j g_ij(new)
   for i in S (g_ij: atom j's descreening of atom i): O(M N);
2. B' from I' (O(N));
3. the self and ACE terms, new minus old (O(N)); the atoms whose pair inputs changed,
   A = S + {i : B'_i != B_i in the compute dtype}, and every pair with an endpoint in A, new
   minus old: O(|A| N). Every other pair term is bitwise unchanged.

Without a cutoff a move changes every atom's integral, so A is every atom and step 3 is O(N^2):
the delta costs about one pass over the pairs, as a full energy's polar term does (measured on
bpti, one residue moved: every one of the 892 radii changes in float64 and in float32; see the
module's tests and benchmarks/test_bench_implicit.py). With a cutoff, A is the atoms within the
cutoff of a moved atom. On acceptance the chain keeps the returned state (``BornState.where``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyslice.energy.implicit_tables import ImplicitTables
from pyslice.energy.tables import MIN_R2

__all__ = [
    "IMPLICIT_TERMS",
    "BornState",
    "born_radii",
    "descreening",
    "gb_pair_energy",
    "implicit_delta_reference",
    "implicit_energy_reference",
    "per_atom_energy",
]

#: Columns of the (B, 2) output: the polar (generalized-Born) and the nonpolar (ACE) energy.
IMPLICIT_TERMS = ("gb_polar", "gb_nonpolar")
# Elements of a (B, rows, N) temporary in the row-chunked pair loops (bounds memory).
_CHUNK = 1 << 22


@dataclass(frozen=True)
class BornState:
    """What a chain caches for the delta: ``integrals`` I (B, N) and ``born`` B (B, N) float64
    (nm^-1 and nm) of its current conformation."""

    integrals: torch.Tensor
    born: torch.Tensor

    def where(self, mask: torch.Tensor, other: BornState) -> BornState:
        """Rows of ``other`` where ``mask`` (B,) bool is True, of self elsewhere (acceptance)."""
        keep = mask[:, None]
        return BornState(
            torch.where(keep, other.integrals, self.integrals),
            torch.where(keep, other.born, self.born),
        )


# ------------------------------------------------------------------------------------------------
# Per-pair and per-atom maths (the kernels' header will mirror these expressions)
# ------------------------------------------------------------------------------------------------


def descreening(
    tables: ImplicitTables, r2: torch.Tensor, atom_i: torch.Tensor, atom_j: torch.Tensor
) -> torch.Tensor:
    """g_ij: the term atom j adds to atom i's integral I_i, at squared distances r2 (..., R, C)
    nm^2, for atoms ``atom_i`` (..., R) and ``atom_j`` (..., C); zero for i == j and, with a
    cutoff, for r >= cutoff. In the tables' dtype."""
    r = r2.clamp_min(MIN_R2).sqrt()
    or_i = tables.offset_radius[atom_i][..., :, None]
    sr_j = tables.scaled_radius[atom_j][..., None, :]
    upper = r + sr_j
    lower = torch.maximum(or_i, (r - sr_j).abs())
    hct = 0.5 * (
        1.0 / lower
        - 1.0 / upper
        + 0.25 * (r - sr_j * sr_j / r) * (1.0 / (upper * upper) - 1.0 / (lower * lower))
        + 0.5 * torch.log(lower / upper) / r
    )
    g = torch.where(upper - or_i >= 0, hct, torch.zeros_like(hct))
    if tables.has_neck:
        k_i = tables.radius_index[atom_i][..., :, None]
        k_j = tables.radius_index[atom_j][..., None, :]
        d = r - tables.neck_d0[k_i, k_j]
        d2 = d * d
        neck = tables.neck_m0[k_i, k_j] / (1.0 + 100.0 * d2 + 300000.0 * d2 * d2 * d2)
        rho_i = or_i + tables.offset
        rho_j = tables.offset_radius[atom_j][..., None, :] + tables.offset
        near = rho_i + rho_j + tables.neck_cut - r >= 0
        g = g + tables.neck_scale * torch.where(near, neck, torch.zeros_like(neck))
    keep = atom_i[..., :, None] != atom_j[..., None, :]
    if tables.cutoff > 0:
        keep = keep & (r < tables.cutoff)
    return torch.where(keep, g, torch.zeros_like(g))


def born_radii(tables: ImplicitTables, integrals: torch.Tensor) -> torch.Tensor:
    """(..., N) float64 Born radii (nm) from the integrals I (..., N) nm^-1."""
    radius = tables.offset_radius.double()
    rho = radius + tables.offset
    psi = integrals * radius
    alpha, beta, gamma = (t.double() for t in (tables.alpha, tables.beta, tables.gamma))
    return 1.0 / (1.0 / radius - torch.tanh(alpha * psi - beta * psi**2 + gamma * psi**3) / rho)


def _screening(tables: ImplicitTables, length: torch.Tensor) -> torch.Tensor:
    """1/eps_solute - exp(-kappa length)/eps_solvent (salt screening when kappa > 0)."""
    if tables.kappa > 0:
        return 1.0 / tables.solute_dielectric - torch.exp(-tables.kappa * length) / (
            tables.solvent_dielectric
        )
    return torch.full_like(length, 1.0 / tables.solute_dielectric - 1.0 / tables.solvent_dielectric)


def per_atom_energy(
    tables: ImplicitTables, born: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(self, ACE) per-atom energies (..., N) float64 kJ/mol from the Born radii (..., N)."""
    charge = tables.charge.double()
    self_term = -0.5 * tables.coulomb * _screening(tables, born) * charge * charge / born
    rho = tables.offset_radius.double() + tables.offset
    ace = tables.surface_tension * (rho + tables.probe_radius) ** 2 * (rho / born) ** 6
    return self_term, ace


def gb_pair_energy(
    tables: ImplicitTables,
    r2: torch.Tensor,
    atom_i: torch.Tensor,
    atom_j: torch.Tensor,
    born_i: torch.Tensor,
    born_j: torch.Tensor,
) -> torch.Tensor:
    """The polar pair energy (kJ/mol, tables' dtype) of atoms ``atom_i`` (..., R) and ``atom_j``
    (..., C) at squared distances r2 (..., R, C), Born radii born_i (..., R), born_j (..., C) in
    the dtype; zero with r >= cutoff when there is one (i == j is the caller's to exclude)."""
    r2 = r2.clamp_min(MIN_R2)
    bb = born_i[..., :, None] * born_j[..., None, :]
    f = torch.sqrt(r2 + bb * torch.exp(-r2 / (4.0 * bb)))
    qq = tables.charge[atom_i][..., :, None] * tables.charge[atom_j][..., None, :]
    e = -tables.coulomb * _screening(tables, f) * qq * (1.0 / f - tables.pair_shift)
    if tables.cutoff > 0:
        e = torch.where(r2.sqrt() < tables.cutoff, e, torch.zeros_like(e))
    return e


def _r2(xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
    """(..., R, C) squared distances of xi (..., R, 3) and xj (..., C, 3)."""
    d = xi[..., :, None, :] - xj[..., None, :, :]
    return (d * d).sum(-1)


def _chunk_rows(batch: int, n: int) -> int:
    return max(1, _CHUNK // max(1, batch * n))


# ------------------------------------------------------------------------------------------------
# Full energy
# ------------------------------------------------------------------------------------------------


def _check_positions(tables: ImplicitTables, name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (B, N, 3) nm")
    if x.dim() != 3 or x.shape[1:] != (tables.n_atoms, 3):
        raise ValueError(f"{name} must have shape (B, {tables.n_atoms}, 3), got {tuple(x.shape)}")
    if x.device != tables.device:
        raise ValueError(f"{name} must be on {tables.device} (the tables'), got {x.device}")
    return x.to(tables.dtype)


def _integrals(tables: ImplicitTables, x: torch.Tensor) -> torch.Tensor:
    """(B, N) float64 integrals I of conformations x (B, N, 3) in the dtype."""
    batch, n = x.shape[0], tables.n_atoms
    atoms = torch.arange(n, device=x.device)
    out = torch.zeros(batch, n, dtype=torch.float64, device=x.device)
    step = _chunk_rows(batch, n)
    for start in range(0, n, step):
        rows = atoms[start : start + step]
        out[:, rows] = descreening(tables, _r2(x[:, rows], x), rows, atoms).double().sum(-1)
    return out


def _pair_sum(
    tables: ImplicitTables,
    x: torch.Tensor,
    born: torch.Tensor,
    rows: torch.Tensor,
    row_valid: torch.Tensor,
    in_rows: torch.Tensor | None,
) -> torch.Tensor:
    """(B,) float64 sum of the polar pair energies of atoms ``rows`` (B, R) (where ``row_valid``)
    with every atom j: each pair once. ``in_rows`` (B, N) bool marks the atoms listed in rows
    (pairs of two of them are seen from both ends and weigh 1/2); None means rows are all atoms
    in order and only j > row is taken (the full sum over i < j)."""
    batch, n = x.shape[0], tables.n_atoms
    atoms = torch.arange(n, device=x.device)
    born_d = born.to(tables.dtype)
    index = torch.arange(batch, device=x.device)[:, None]
    total = torch.zeros(batch, dtype=torch.float64, device=x.device)
    step = _chunk_rows(batch, n)
    for start in range(0, rows.shape[1], step):
        r = rows[:, start : start + step]
        if in_rows is None:
            weight = (atoms[None, None, :] > r[..., None]).to(tables.dtype)
        else:
            weight = torch.where(in_rows[:, None, :], 0.5, 1.0).to(tables.dtype)
            weight = weight * (atoms[None, None, :] != r[..., None])
        weight = weight * row_valid[:, start : start + step, None]
        e = gb_pair_energy(tables, _r2(x[index, r], x), r, atoms, born_d[index, r], born_d)
        total += torch.where(weight != 0, weight * e, torch.zeros_like(e)).double().sum((-1, -2))
    return total


def implicit_energy_reference(
    tables: ImplicitTables, positions: torch.Tensor
) -> tuple[torch.Tensor, BornState]:
    """Energies (B, 2) float64 kJ/mol (columns ``IMPLICIT_TERMS``) of positions (B, N, 3) nm, and
    the :class:`BornState` (integrals and Born radii) of those conformations."""
    x = _check_positions(tables, "positions", positions)
    batch, n = x.shape[0], tables.n_atoms
    integrals = _integrals(tables, x)
    born = born_radii(tables, integrals)
    self_term, ace = per_atom_energy(tables, born)
    rows = torch.arange(n, device=x.device).expand(batch, n)
    pair = _pair_sum(tables, x, born, rows, torch.ones_like(rows, dtype=torch.bool), None)
    terms = torch.stack([self_term.sum(-1) + pair, ace.sum(-1)], dim=-1)
    return terms, BornState(integrals, born)


# ------------------------------------------------------------------------------------------------
# Delta
# ------------------------------------------------------------------------------------------------


def _check_moved(tables: ImplicitTables, moved: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(moved, torch.Tensor) or moved.is_floating_point() or moved.is_complex():
        raise TypeError("moved must be an integer tensor (B, M) of atom indices, -1 = padding")
    if moved.dim() != 2 or moved.shape[0] != batch:
        raise ValueError(f"moved must have shape ({batch}, M), got {tuple(moved.shape)}")
    moved = moved.to(device=tables.device, dtype=torch.int64)
    if moved.numel():
        if int(moved.min()) < -1 or int(moved.max()) >= tables.n_atoms:
            raise ValueError(f"moved must hold atom indices in [0, {tables.n_atoms}) or -1")
        ordered = moved.sort(dim=1).values
        if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()):
            raise ValueError("moved must not list an atom twice in one row")
    return moved


def _check_state(tables: ImplicitTables, state: BornState, batch: int) -> None:
    if not isinstance(state, BornState):
        raise TypeError(f"state must be a BornState, got {type(state).__name__}")
    for name in ("integrals", "born"):
        t = getattr(state, name)
        if t.shape != (batch, tables.n_atoms) or t.dtype != torch.float64:
            raise ValueError(
                f"state.{name} must be float64 of shape ({batch}, {tables.n_atoms}), got "
                f"{t.dtype} {tuple(t.shape)}"
            )


def implicit_delta_reference(
    tables: ImplicitTables,
    positions: torch.Tensor,
    new_positions: torch.Tensor,
    moved: torch.Tensor,
    state: BornState | None = None,
) -> tuple[torch.Tensor, BornState]:
    """The energy change (B, 2) float64 kJ/mol (columns ``IMPLICIT_TERMS``) when the atoms
    ``moved`` (B, M) int64 (-1 = padding, no atom twice in a row) go from ``positions`` to
    ``new_positions`` (B, N, 3) nm (only the moved rows are read), and the :class:`BornState` of
    the new conformations. ``state``: that of ``positions`` (computed, O(N^2), when None); a
    sampler keeps it per chain and takes the returned one where it accepts."""
    old = _check_positions(tables, "positions", positions)
    new_rows = _check_positions(tables, "new_positions", new_positions)
    if new_rows.shape != old.shape:
        raise ValueError(
            f"new_positions must have the shape of positions {tuple(old.shape)}, got "
            f"{tuple(new_rows.shape)}"
        )
    batch, n = old.shape[0], tables.n_atoms
    moved = _check_moved(tables, moved, batch)
    if state is None:
        state = implicit_energy_reference(tables, old)[1]
    _check_state(tables, state, batch)
    device = old.device
    index = torch.arange(batch, device=device)[:, None]
    atoms = torch.arange(n, device=device)
    valid = moved >= 0
    safe = moved.clamp_min(0)
    in_s = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
    in_s[index, torch.where(valid, moved, n)] = True
    in_s = in_s[:, :n]
    new = torch.where(in_s[..., None], new_rows, old)

    # 1. Integrals. Every atom i: the moved atoms' terms g_im, new minus old (O(N M))...
    g_new = descreening(tables, _r2(new, new[index, safe]), atoms, safe)
    g_old = descreening(tables, _r2(old, old[index, safe]), atoms, safe)
    change = g_new.double() - g_old.double()  # in float64: a float32 difference would round
    change = torch.where(valid[:, None, :], change, torch.zeros_like(change))
    integrals = state.integrals + change.sum(-1)
    # ...and the moved atoms' own integrals, which every term changes, summed afresh (O(M N)).
    own = descreening(tables, _r2(new[index, safe], new), safe, atoms).double().sum(-1)
    b, k = valid.nonzero(as_tuple=True)
    integrals[b, moved[b, k]] = own[b, k]

    # 2. Born radii and the per-atom terms (float64, O(N): zero change where B is unchanged).
    born = born_radii(tables, integrals)
    self_new, ace_new = per_atom_energy(tables, born)
    self_old, ace_old = per_atom_energy(tables, state.born)
    d_self, d_ace = (self_new - self_old).sum(-1), (ace_new - ace_old).sum(-1)
    # 3. The pairs with an endpoint whose inputs changed (position, or B in the dtype the pair
    # terms read): new minus old; every other pair term is bitwise unchanged.
    changed = in_s | (born.to(tables.dtype) != state.born.to(tables.dtype))
    width = int(changed.sum(1).max()) if batch else 0
    rows = torch.argsort((~changed).to(torch.int8), dim=1, stable=True)[:, :width]
    row_valid = changed.gather(1, rows)
    d_pair = _pair_sum(tables, new, born, rows, row_valid, changed) - _pair_sum(
        tables, old, state.born, rows, row_valid, changed
    )
    return torch.stack([d_self + d_pair, d_ace], dim=-1), BornState(integrals, born)
