"""Replica exchange over the parallel chains: a temperature ladder and exact neighbour swaps.

The chains are grouped into replica sets of ``m`` chains, one at each temperature
T_1 < T_2 < ... < T_m of the ladder (T_1 the target). Every chain samples exp(-U / k T) at its own
temperature (the Metropolis step takes a per-chain beta); every ``swap_every`` steps the chains
of neighbouring temperatures (k, k+1) of each set exchange temperatures with probability

    min(1, exp((beta_k - beta_{k+1}) (U_i - U_j)))        (../shared/DESIGN.md, formula 7)

where chain i is at T_k and chain j at T_{k+1}. Exchanging temperatures instead of states moves
no data; the pairs alternate between (1, 2), (3, 4), ... and (2, 3), (4, 5), ... (each swap kernel
leaves the product of the Boltzmann distributions invariant, so their composition does). The
ensemble returned is that of T_1: at every recorded draw, the chain of each set that is then at
T_1. Uniforms are counter-based, keyed by (seed, step, the set's global index, the pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyslice import _checks, _random

__all__ = ["TemperatureLadder", "geometric_ladder"]

#: Molar gas constant R = N_A k_B in kJ/(mol K) (CODATA 2018, as OpenMM uses).
BOLTZMANN_KJ_PER_MOL_K = 0.00831446261815324


class TemperatureLadder:
    """The temperatures of a replica-exchange run and the chains' places on it.

    Args:
        temperatures: kelvin, strictly increasing; the first is the target temperature.
        n_chains: this process's chains, a multiple of ``len(temperatures)`` (whole sets).
        set_offset: the global index of this process's first replica set.
        device: where the labels live (the chains' device).
    """

    def __init__(
        self,
        temperatures: Sequence[float],
        n_chains: int,
        set_offset: int,
        device: torch.device,
    ) -> None:
        if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence):
            raise TypeError(
                f"temperatures must be a sequence of kelvin, got {type(temperatures).__name__}"
            )
        values = [_checks.check_float(f"temperatures[{k}]", t, positive=True)
                  for k, t in enumerate(temperatures)]  # fmt: skip
        if len(values) < 2:
            raise ValueError(f"temperatures must hold at least two values, got {len(values)}")
        if any(b <= a for a, b in zip(values[:-1], values[1:])):
            raise ValueError(f"temperatures must increase strictly, got {values}")
        self.temperatures = values
        self.m = len(values)
        if n_chains % self.m:
            raise ValueError(
                f"n_chains ({n_chains}) must be a multiple of len(temperatures) ({self.m})"
            )
        self.n_sets = n_chains // self.m
        self.set_offset = set_offset
        self.device = device
        self.betas = torch.tensor(
            [1.0 / (BOLTZMANN_KJ_PER_MOL_K * t) for t in values], dtype=torch.float64, device=device
        )
        # label[b]: the temperature index of chain b; chain s*m + k starts at T_k.
        self.label = torch.arange(self.m, device=device).repeat(self.n_sets)
        self.attempts = torch.zeros(self.m - 1, dtype=torch.int64, device=device)
        self.swaps = torch.zeros(self.m - 1, dtype=torch.int64, device=device)
        self._sets = torch.arange(self.n_sets, device=device)

    @property
    def beta(self) -> torch.Tensor:
        """(n_chains,) float64: each chain's 1/kT."""
        return self.betas[self.label]

    def chains_at(self, k: int) -> torch.Tensor:
        """(n_sets,) int64: the chain of each set at temperature index ``k``."""
        order = self.label.view(self.n_sets, self.m).argsort(dim=1)  # temperature -> slot
        return self._sets * self.m + order[:, k]

    def swap(self, energy: torch.Tensor, seed: int, step: int, parity: int) -> None:
        """Attempt the exchanges of the pairs (k, k+1) with k % 2 == parity, in every set."""
        pairs = list(range(parity, self.m - 1, 2))
        if not pairs:
            return
        order = self.label.view(self.n_sets, self.m).argsort(dim=1)  # (S, m): slot at each T
        base = (self._sets * self.m).unsqueeze(1)
        k = torch.tensor(pairs, device=self.device)
        low = base + order[:, k]  # (S, P) chains at T_k
        high = base + order[:, k + 1]  # chains at T_{k+1}
        delta_beta = (self.betas[k] - self.betas[k + 1]).unsqueeze(0)
        log_accept = delta_beta * (energy[low].to(torch.float64) - energy[high].to(torch.float64))
        sets = self.set_offset + self._sets
        u = _random.uniform(_random.derive_seed(seed, step), sets, self.m - 1)[:, k]
        accept = torch.log(u) < log_accept  # NaN (two clashes) rejects
        new_low = torch.where(accept, k + 1, k)
        new_high = torch.where(accept, k, k + 1)
        self.label = self.label.scatter(0, low.flatten(), new_low.flatten()).scatter(
            0, high.flatten(), new_high.flatten()
        )
        self.attempts[k] += self.n_sets
        self.swaps.index_add_(0, k, accept.sum(0))

    def swap_rates(self) -> list[float | None]:
        """Fraction of accepted exchanges for each neighbour pair (None if never attempted)."""
        attempts, swaps = self.attempts.cpu().numpy(), self.swaps.cpu().numpy()
        return [float(s / a) if a else None for a, s in zip(attempts, swaps)]

    def state_dict(self) -> dict[str, Any]:
        return {"label": self.label.cpu(), "attempts": self.attempts.cpu(),
                "swaps": self.swaps.cpu()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.label = state["label"].to(self.device)
        self.attempts = state["attempts"].to(self.device)
        self.swaps = state["swaps"].to(self.device)


def geometric_ladder(low: float, high: float, m: int) -> list[float]:
    """``m`` temperatures from ``low`` to ``high`` kelvin in a geometric progression (equal
    ratios give roughly equal swap rates when the heat capacity varies slowly)."""
    low = _checks.check_float("low", low, positive=True)
    high = _checks.check_float("high", high, positive=True)
    m = _checks.check_int("m", m, low=2)
    if high <= low:
        raise ValueError(f"high ({high}) must exceed low ({low})")
    return [float(t) for t in np.geomspace(low, high, m)]
