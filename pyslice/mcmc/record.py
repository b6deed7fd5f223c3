"""What one ``Sampler.run()`` accumulates: recorded draws, acceptance counts, steps done; and the
:class:`~pyslice.mcmc.ensemble.Ensemble` made from them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyslice.mcmc.ensemble import Ensemble
from pyslice.mcmc.step import ChainState
from pyslice.mcmc.targets import ChiTarget, ProteinTarget

if TYPE_CHECKING:
    from pyslice.mcmc.sampler import Sampler

__all__ = ["RunRecord"]


class RunRecord:
    """What one run() accumulates: recorded draws, acceptance counts, steps done.

    Counts of accepted proposals stay on the chains' device and recorded draws wait there until
    :meth:`flush`, so that a step never waits for the device (issue: GPU runs without host
    synchronisation between the sampler's synchronisation points).
    """

    def __init__(self) -> None:
        self.plan: dict[str, int] = {}
        self.done = 0
        self.saved_at = -1
        self.recorded = 0
        self.chi = torch.empty(0)
        self.energy = torch.empty(0)
        self.proposed = np.zeros(0, dtype=np.int64)
        self.accepted = torch.empty(0)
        self.group_proposed = torch.empty(0)
        self.group_accepted = torch.empty(0)
        self.names: list[str] = []
        # Warm-up decisions, counted for the progress line only (not part of the ensemble).
        self.warmup_proposed = np.zeros(0, dtype=np.int64)
        self.warmup_accepted = torch.empty(0)
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    @classmethod
    def empty(cls, sampler: Sampler, n_draws: int, plan: dict[str, int]) -> RunRecord:
        self = cls()
        self.plan = plan
        self.names = _unique_names([m.name for m in sampler.moves])
        n, n_chi, groups = sampler.n_recorded, sampler.target.n_chi, sampler.target.n_groups
        n_moves, device = len(sampler.moves), sampler.device
        self.chi = torch.empty(n_draws, n, n_chi, dtype=torch.float32)
        self.energy = torch.empty(n_draws, n, dtype=torch.float64)
        self.proposed = np.zeros(n_moves, dtype=np.int64)
        self.accepted = torch.zeros(n_moves, dtype=torch.int64, device=device)
        self.warmup_proposed = np.zeros(n_moves, dtype=np.int64)
        self.warmup_accepted = torch.zeros(n_moves, dtype=torch.int64, device=device)
        self.group_proposed = torch.zeros(n_moves, groups, dtype=torch.int64, device=device)
        self.group_accepted = torch.zeros_like(self.group_proposed)
        return self

    def count(
        self, index: int, groups: torch.Tensor | None, accepted: torch.Tensor, n_groups: int
    ) -> None:
        n = accepted.shape[0]
        self.proposed[index] += n
        self.accepted[index] += accepted.sum()
        if groups is None:
            self.group_proposed[index] += n
            self.group_accepted[index] += accepted.sum()
            return
        # index_add with 0/1 weights instead of boolean indexing (no wait for the device).
        valid = (groups >= 0).to(torch.int64).flatten()
        rows = groups.clamp_min(0).flatten()
        hits = accepted.to(torch.int64).unsqueeze(1).expand_as(groups).flatten() * valid
        self.group_proposed[index].index_add_(0, rows, valid)
        self.group_accepted[index].index_add_(0, rows, hits)

    def count_warmup(self, index: int, accepted: torch.Tensor) -> None:
        self.warmup_proposed[index] += accepted.shape[0]
        self.warmup_accepted[index] += accepted.sum()

    def record(self, draw: int, state: ChainState, rows: torch.Tensor | None = None) -> None:
        """Keep draw ``draw`` of the state's chains (or of ``rows`` of them): a device copy until
        :meth:`flush`."""
        chi, energy = state.chi.detach(), state.energy.detach()
        if rows is None:
            chi, energy = chi.clone(), energy.clone()
        else:
            chi, energy = chi[rows], energy[rows]
        self.pending.append((draw, chi, energy))
        self.recorded = draw + 1

    def flush(self) -> None:
        """Copy the recorded draws kept on the device to the host arrays."""
        for draw, chi, energy in self.pending:
            self.chi[draw] = chi.to("cpu", torch.float32)
            self.energy[draw] = energy.to("cpu", torch.float64)
        self.pending.clear()

    @staticmethod
    def _rates(names: list[str], proposed: np.ndarray, accepted: torch.Tensor) -> dict[str, float]:
        counts = accepted.cpu().numpy()
        return {
            name: (a / p if p else float("nan"))
            for name, p, a in zip(names, proposed, counts, strict=True)
        }

    def acceptance(self) -> dict[str, float]:
        return self._rates(self.names, self.proposed, self.accepted)

    def progress_acceptance(self) -> dict[str, float]:
        """Acceptance for the progress line: of the recorded steps once there are any, of the
        warm-up before (NaN for a move not proposed yet)."""
        if self.proposed.sum() > 0:
            return self.acceptance()
        return self._rates(self.names, self.warmup_proposed, self.warmup_accepted)

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "done": self.done,
            "recorded": self.recorded,
            "chi": self.chi[: self.recorded].clone(),
            "energy": self.energy[: self.recorded].clone(),
            "proposed": torch.from_numpy(self.proposed.copy()),
            "accepted": self.accepted.cpu(),
            "group_proposed": self.group_proposed.cpu(),
            "group_accepted": self.group_accepted.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = int(state["done"])
        self.recorded = int(state["recorded"])
        self.chi[: self.recorded] = state["chi"]
        self.energy[: self.recorded] = state["energy"]
        self.proposed = state["proposed"].numpy().copy()
        device = self.group_proposed.device
        self.accepted = state["accepted"].to(device)
        self.group_proposed = state["group_proposed"].to(device)
        self.group_accepted = state["group_accepted"].to(device)
        self.saved_at = self.done

    def to_ensemble(self, sampler: Sampler) -> Ensemble:
        target = sampler.target
        group = target.group.cpu()
        chi_names = []
        for column in range(target.n_chi):
            previous = int((group[:column] == group[column]).sum())
            chi_names.append(f"{target.group_names[int(group[column])]} chi{previous + 1}")
        meta = {
            "seed": sampler.seed,
            "n_chains": sampler.total_chains,
            **(
                {}
                if sampler.ladder is None
                else {
                    "temperatures": sampler.ladder.temperatures,
                    "swap_every": sampler.swap_every,
                    "swap_rates": sampler.swap_rates,
                    "replica_sets": sampler.total_chains // sampler.ladder.m,
                }
            ),
            "moves": [
                {"name": name, "type": type(m).__name__, "weight": m.weight}
                for name, m in zip(self.names, sampler.moves, strict=True)
            ],
            **self.plan,
            "first_step": sampler.step - self.done,
        }
        return Ensemble(
            chi=self.chi[: self.recorded],
            energy=self.energy[: self.recorded],
            move_counts={
                name: (int(p), int(a))
                for name, p, a in zip(
                    self.names, self.proposed, self.accepted.cpu().tolist(), strict=True
                )
            },
            group_counts={
                name: torch.stack([self.group_proposed[k], self.group_accepted[k]]).cpu()
                for k, name in enumerate(self.names)
            },
            group_names=list(target.group_names),
            chi_group=group,
            chi_names=chi_names,
            pi_periodic=target.pi_periodic.cpu(),
            temperature=sampler.temperature,
            meta=meta,
            reference_pdb=_reference_pdb(target),
        )


def _unique_names(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def _reference_pdb(target: ChiTarget) -> str | None:
    if not isinstance(target, ProteinTarget):
        return None
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "reference.pdb"
        target.protein.to_pdb(file)
        return file.read_text()
