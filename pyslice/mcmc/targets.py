"""Targets: the energy U(chi) a sampler draws exp(-beta U) from, with cheap local changes.

:class:`ProteinTarget` builds positions from chi (``Protein.build``) and evaluates a
:class:`~pyslice.energy.ForceFieldEnergy`; a move that changes a few residues is scored by
``energy.delta`` over the atoms of those residues only (O(M N) instead of O(N^2)). Every chain
keeps its positions, updated where a proposal is accepted.

:class:`FunctionTarget` wraps any ``energy(chi) -> (B,)`` function of the angles themselves:
analytic test targets (a mixture on the torus) and coarse models.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from pyslice import _checks

__all__ = ["ChiTarget", "FunctionTarget", "ProteinTarget"]


class ChiTarget(ABC):
    """An energy over chi angles. Attributes: ``n_chi``, ``group: (n_chi,) int64`` (residue of
    each column, 0..n_groups-1), ``pi_periodic: (n_chi,) bool``, ``reference_chi: (n_chi,)``
    (a finite-energy starting point), ``device``, ``dtype`` (of chi)."""

    n_chi: int
    group: torch.Tensor
    pi_periodic: torch.Tensor
    reference_chi: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    group_names: list[str]

    @functools.cached_property
    def n_groups(self) -> int:
        """Number of groups (computed once: ``group`` never changes after construction)."""
        return int(self.group.max()) + 1 if self.group.numel() else 0

    @abstractmethod
    def energy(self, chi: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(U (B,) float64 kJ/mol, cache) for ``chi: (B, n_chi)``; the cache (e.g. positions)
        is handed back to :meth:`energy_new`."""

    def energy_new(
        self,
        cache: Any,
        energy: torch.Tensor,
        chi_new: torch.Tensor,
        groups: torch.Tensor | None,
        full_rows: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """(U' (B,) float64, candidate cache) of ``chi_new``, given the current ``cache`` and
        ``energy``; ``groups: (B, S)`` lists the groups that may have changed (None: any).
        ``full_rows``: some current energies may be non-finite (a clash): score those rows by
        full energies, not by differences (the sampler says so only while such chains exist)."""
        return self.energy(chi_new)

    def accept(self, cache: Any, candidate: Any, accepted: torch.Tensor) -> Any:
        """The cache after the chains in ``accepted: (B,) bool`` moved to their candidates."""
        return cache

    def cache_from_chi(self, chi: torch.Tensor) -> Any:
        """Rebuild the cache from chi alone (checkpoint resume)."""
        return self.energy(chi)[1]


class FunctionTarget(ChiTarget):
    """``energy(chi: (B, n_chi) float) -> (B,)`` kJ/mol, any torch function of the angles.

    group: the residue of each column (default: each chi its own residue); reference_chi: the
    starting point (default zeros)."""

    def __init__(
        self,
        energy: Callable[[torch.Tensor], torch.Tensor],
        n_chi: int,
        *,
        group: torch.Tensor | None = None,
        pi_periodic: torch.Tensor | None = None,
        reference_chi: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        self.function = energy
        self.n_chi = _checks.check_int("n_chi", n_chi, low=1)
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype
        self.group = (
            torch.arange(self.n_chi, device=self.device)
            if group is None
            else torch.as_tensor(group, dtype=torch.int64, device=self.device)
        )
        if self.group.shape != (self.n_chi,):
            raise ValueError(f"group must have shape ({self.n_chi},)")
        self.pi_periodic = (
            torch.zeros(self.n_chi, dtype=torch.bool, device=self.device)
            if pi_periodic is None
            else torch.as_tensor(pi_periodic, dtype=torch.bool, device=self.device)
        )
        self.reference_chi = (
            torch.zeros(self.n_chi, dtype=dtype, device=self.device)
            if reference_chi is None
            else torch.as_tensor(reference_chi, dtype=dtype, device=self.device)
        )
        self.group_names = [f"group{g}" for g in range(self.n_groups)]

    def energy(self, chi: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = self.function(chi)
        if not isinstance(out, torch.Tensor) or out.shape != (chi.shape[0],):
            raise ValueError(f"energy must return a ({chi.shape[0]},) tensor")
        return out.to(torch.float64), None


class ProteinTarget(ChiTarget):
    """The force-field energy of a protein's conformations as a function of its chi angles."""

    def __init__(self, protein: Any, energy: Any, dtype: torch.dtype | None = None) -> None:
        self.protein = protein
        self.force_field = energy
        self.device = energy.device
        self.dtype = dtype if dtype is not None else energy.dtype
        builder = protein.builder
        self.builder = builder
        self.n_chi = builder.n_chi
        residues = builder.chi_index[:, 0]
        unique, group = torch.unique(residues, return_inverse=True)
        self.residue_index = unique  # residue (topology index) of each group
        self.group = group.to(self.device)
        self.pi_periodic = builder.pi_periodic.to(self.device)
        self.reference_chi = builder.chi_angles().to(self.device, self.dtype)
        names = protein.residue_names
        self.group_names = [f"{names[int(r)]}{int(r) + 1}" for r in unique]
        # Atoms each group's chi angles move, -1 padded: (n_groups, A).
        atoms: list[list[int]] = [[] for _ in range(len(unique))]
        for column in range(self.n_chi):
            atoms[int(group[column])].extend(builder.downstream_atoms(column))
        atoms = [sorted(set(a)) for a in atoms]
        width = max((len(a) for a in atoms), default=0)
        table = torch.full((len(atoms), max(width, 1)), -1, dtype=torch.int64)
        for g, a in enumerate(atoms):
            table[g, : len(a)] = torch.tensor(a, dtype=torch.int64)
        self.group_atoms = table.to(self.device)

    def positions(self, chi: torch.Tensor) -> torch.Tensor:
        return self.builder.build(chi.to(self.dtype)).to(self.force_field.dtype)

    def energy(self, chi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.positions(chi)
        return self.force_field(positions), positions

    def moved_atoms(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, S * A) atom indices of ``groups: (B, S)`` (-1 padded)."""
        atoms = self.group_atoms[groups.clamp_min(0)]  # (B, S, A)
        atoms = torch.where(groups.unsqueeze(-1) >= 0, atoms, -1)
        return atoms.reshape(groups.shape[0], -1)

    def energy_new(
        self,
        cache: torch.Tensor,
        energy: torch.Tensor,
        chi_new: torch.Tensor,
        groups: torch.Tensor | None,
        full_rows: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions_new = self.positions(chi_new)
        if groups is None:
            return self.force_field(positions_new), positions_new
        moved = self.moved_atoms(groups)
        energy_new = energy + self.force_field.trusted_delta(cache, positions_new, moved)
        if full_rows:
            # A chain whose current energy is not finite (a clash: +inf) has no usable difference
            # (inf - inf is NaN, which is always rejected): score its proposal by a full energy,
            # so that any finite proposal leaves the clash.
            stuck = ~torch.isfinite(energy)
            rows = stuck.nonzero().flatten()
            energy_new[rows] = self.force_field(positions_new[rows]).to(energy_new.dtype)
        return energy_new, positions_new

    def accept(
        self, cache: torch.Tensor, candidate: torch.Tensor, accepted: torch.Tensor
    ) -> torch.Tensor:
        # torch.where, not cache[accepted] = ...: boolean indexing waits for the device.
        cache.copy_(torch.where(accepted[:, None, None], candidate, cache))
        return cache
