"""MCMC moves: each proposes one candidate per chain in the log-weight form of
:mod:`pyslice.mcmc.step`.

A move returns a :class:`Candidate`: the proposed ``chi``, which groups (residues) it changed, and
the log-weights ``w`` of the current and the proposed state, so that every chain is accepted with
``min(1, exp(-beta (U' - U) + w' - w))`` by the one fused Metropolis step:

- :class:`RandomWalk`: a symmetric Gaussian step on one chi angle or on all chi angles of one
  residue (w = 0). Step sizes are per chi column, adapted during warm-up toward a target acceptance
  (Robbins-Monro on the log step size) and frozen afterwards, so sampling is exact.
- :class:`Independence`: a draw from a :class:`~pyslice.proposals.Proposal`, of every residue or
  of a random block of ``block`` residues (w = -log q of the block given the rest). Blocks keep the
  acceptance from collapsing on large proteins, where q(x')/q(x) over all residues is tiny.
- :class:`Lifted`: for proposals with latent component labels k (../shared/DESIGN.md formula 4):
  the chain runs on (k, x) with target p(x) r(k | x). Before each lifted step the labels of the
  chosen block are refreshed by a Gibbs draw from r(. | x), which leaves p(x) r(k | x) invariant
  and lets every other move act on x alone; the step then uses w = log r(k | x) - log q(k, x).

Randomness: counter-based (:mod:`pyslice._random`), each draw keyed by (sampler seed, move, step,
purpose) and the *global* index of the chain, so a run is reproducible, a resumed run continues
bit for bit, and chains split over several processes draw exactly what one process would.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from pyslice import _checks, _random
from pyslice._random import derive_seed
from pyslice.geometry.angles import wrap_angle
from pyslice.proposals import Proposal

__all__ = ["Candidate", "Independence", "Lifted", "Move", "MoveContext", "RandomWalk"]

# Purposes of a move's random streams (each derived from the move's key for the step).
_TAG_COLUMN, _TAG_GROUP, _TAG_STEP, _TAG_BLOCK, _TAG_LATENT = 1, 2, 3, 4, 5


@dataclass
class MoveContext:
    """What a move needs to know about the target and the chains: sizes, grouping, device, and
    the global indices of this process's chains (``chain_offset`` .. + ``n_chains``)."""

    n_chi: int
    group: torch.Tensor  # (n_chi,) int64 group (residue) of each column
    n_groups: int
    device: torch.device
    dtype: torch.dtype
    chain_offset: int = 0
    n_chains: int = 0
    # Sums a tensor over all processes in place (torch.distributed all-reduce when the chains are
    # split over ranks): warm-up statistics then equal those of one process running every chain.
    all_reduce: Callable[[torch.Tensor], None] = lambda tensor: None

    def __post_init__(self) -> None:
        self.chains = torch.arange(
            self.chain_offset, self.chain_offset + self.n_chains, device=self.device
        )
        # (n_groups, C) columns of each group, -1 padded: a block's columns without a scan.
        width = int(torch.bincount(self.group).max()) if self.n_chi else 0
        table = torch.full((self.n_groups, max(width, 1)), -1, dtype=torch.int64)
        slot = [0] * self.n_groups
        for column, g in enumerate(self.group.tolist()):
            table[g, slot[g]] = column
            slot[g] += 1
        self.group_columns = table.to(self.device)

    def chains_of(self, n: int) -> torch.Tensor:
        """(n,) global chain indices of a batch of ``n`` rows: this process's chains, or for
        another batch size the first ``n`` from ``chain_offset`` (tests and benchmarks)."""
        if n == self.chains.shape[0]:
            return self.chains
        return torch.arange(self.chain_offset, self.chain_offset + n, device=self.device)

    def columns_of(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, n_chi) bool: the columns of ``groups: (B, S)`` (-1 = none)."""
        return (groups.unsqueeze(-1) == self.group.view(1, 1, -1)).any(1)


@dataclass
class Candidate:
    """One proposal per chain. ``groups: (B, S)`` int64 changed groups, -1 padded (None: all may
    change); ``log_weight``/``log_weight_new: (B,)`` float64 w of the current/proposed state;
    ``latent``/``latent_new``: labels for lifted moves (None otherwise)."""

    chi: torch.Tensor
    groups: torch.Tensor | None
    log_weight: torch.Tensor
    log_weight_new: torch.Tensor
    latent: torch.Tensor | None = None
    latent_new: torch.Tensor | None = None


class Move(ABC):
    """A Metropolis-Hastings proposal mechanism; ``weight`` sets how often it is picked."""

    name: str = "move"

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        self.weight = _checks.check_float("weight", weight, positive=True)
        if name is not None:
            self.name = str(name)
        self.context: MoveContext | None = None

    def bind(self, context: MoveContext) -> None:
        """Called once by the sampler with the target's sizes (validates the move against them)."""
        self.context = context
        # Problems found in proposals (e.g. NaN from a proposal) are flagged on the device and
        # raised by check() at the sampler's synchronisation points, so a step never waits.
        self._problems: dict[str, torch.Tensor] = {}

    def flag(self, message: str, bad: torch.Tensor) -> None:
        """Remember (on the device, without waiting for it) that ``bad`` (a bool tensor) has a
        True entry; :meth:`check` raises ``ValueError(message)`` then."""
        found = bad.any()
        previous = self._problems.get(message)
        self._problems[message] = found if previous is None else previous | found

    def check(self) -> None:
        """Raise the first flagged problem (a host synchronisation: called between steps at the
        sampler's intervals, never inside one)."""
        for message, found in self._problems.items():
            if bool(found):
                raise ValueError(message)

    @property
    def ctx(self) -> MoveContext:
        if self.context is None:
            raise RuntimeError(f"{self.name}: the move is not bound to a sampler yet")
        return self.context

    @abstractmethod
    def propose(self, chi: torch.Tensor, key: int) -> Candidate:
        """One candidate per row of ``chi: (B, n_chi)``; ``key`` is this step's random key."""

    def adapt(self, candidate: Candidate, accepted: torch.Tensor, progress: float) -> None:
        """Warm-up only: update tunable parameters from this step's decisions (default: none).
        ``progress`` in [0, 1) is the position within the warm-up."""
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        return None

    def pick_groups(self, n: int, size: int, key: int) -> torch.Tensor:
        """(n, size) distinct random groups per chain (stream ``key``)."""
        size = min(size, self.ctx.n_groups)
        keys = _random.uniform(key, self.ctx.chains_of(n), self.ctx.n_groups)
        return keys.topk(size, dim=1).indices


class RandomWalk(Move):
    """Gaussian random walk on one chi (``scope="chi"``) or one residue's chis (``"residue"``).

    Args:
        step_size: initial standard deviation in radians (per column; adapted in warm-up).
        target_acceptance: the acceptance the warm-up adaptation aims at (0.44 is the optimum
            for a one-dimensional Gaussian-like target; lower suits residue blocks).
        adapt: whether to adapt during warm-up at all.
        weight: relative frequency among the sampler's moves.
    """

    def __init__(
        self,
        scope: Literal["chi", "residue"] = "residue",
        step_size: float = 0.5,
        target_acceptance: float = 0.4,
        adapt: bool = True,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        if scope not in ("chi", "residue"):
            raise ValueError(f"scope must be 'chi' or 'residue', got {scope!r}")
        super().__init__(weight, name or f"random_walk_{scope}")
        self.scope = scope
        self.initial_step = _checks.check_float("step_size", step_size, positive=True)
        self.target_acceptance = _checks.check_float("target_acceptance", target_acceptance)
        if not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
        self.adaptive = bool(adapt)
        self.log_step = torch.empty(0)
        self.adapt_steps = 0

    def bind(self, context: MoveContext) -> None:
        super().bind(context)
        self.log_step = torch.full(
            (context.n_chi,),
            math.log(self.initial_step),
            dtype=torch.float64,
            device=context.device,
        )

    @property
    def step_size(self) -> torch.Tensor:
        """(n_chi,) current step sizes in radians."""
        return self.log_step.exp()

    def propose(self, chi: torch.Tensor, key: int) -> Candidate:
        ctx = self.ctx
        n = chi.shape[0]
        if self.scope == "chi":
            u = _random.uniform(derive_seed(key, _TAG_COLUMN), ctx.chains_of(n), 1)[:, 0]
            column = (u * ctx.n_chi).to(torch.int64).clamp_max(ctx.n_chi - 1)
            columns = column.unsqueeze(1)  # (n, 1)
            groups = ctx.group[column].unsqueeze(1)
        else:
            groups = self.pick_groups(n, 1, derive_seed(key, _TAG_GROUP))
            columns = ctx.group_columns[groups[:, 0]]  # (n, C), -1 padded
        # Normals only for the moved columns (a residue's at most), scattered into place.
        noise = _random.normal(derive_seed(key, _TAG_STEP), ctx.chains_of(n), columns.shape[1])
        # scatter_add with zeros for the padding (no boolean indexing: it would wait for the
        # device to learn how many entries are True).
        valid = (columns >= 0).to(torch.float64)
        safe = columns.clamp_min(0)
        count = torch.zeros(n, ctx.n_chi, dtype=torch.float64, device=ctx.device)
        moved = count.scatter_add_(1, safe, valid) > 0
        step = torch.zeros(n, ctx.n_chi, dtype=torch.float64, device=ctx.device)
        step.scatter_add_(1, safe, valid * noise * self.step_size[safe])
        # Only the moved columns are wrapped: wrapping is not exact in float32, and unmoved angles
        # must stay bit for bit what they were (the cached positions were built from them).
        chi_new = torch.where(moved, wrap_angle(chi + step.to(chi.dtype)), chi)
        zero = torch.zeros(n, dtype=torch.float64, device=ctx.device)
        candidate = Candidate(chi_new, groups, zero, zero)
        candidate.moved_columns = moved  # type: ignore[attr-defined]  # for adapt()
        return candidate

    def adapt(self, candidate: Candidate, accepted: torch.Tensor, progress: float) -> None:
        if not self.adaptive:
            return
        moved = candidate.moved_columns.to(torch.float64)  # type: ignore[attr-defined]
        counts = torch.stack([moved.sum(0), (moved * accepted.to(torch.float64)[:, None]).sum(0)])
        self.ctx.all_reduce(counts)  # over every rank's chains
        tries = counts[0]
        rate = counts[1] / tries.clamp_min(1.0)
        # Robbins-Monro on log step size with a decaying gain; columns not tried keep their size.
        self.adapt_steps += 1
        gain = 2.0 / (1.0 + self.adapt_steps / 20.0) ** 0.6
        update = torch.where(tries > 0, gain * (rate - self.target_acceptance), 0.0)
        self.log_step = (self.log_step + update).clamp(math.log(1e-3), math.log(math.pi))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "log_step": self.log_step.clone(),
            "adapt_steps": torch.tensor(self.adapt_steps),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.log_step = state["log_step"].to(self.ctx.device, torch.float64).clone()
        self.adapt_steps = int(state["adapt_steps"])


class _ProposalMove(Move):
    """Shared parts of the independence and lifted moves: the proposal and the block size."""

    def __init__(
        self, proposal: Proposal, block: int | None, weight: float, name: str | None
    ) -> None:
        if not isinstance(proposal, Proposal):
            raise TypeError(
                f"proposal must be a pyslice.proposals.Proposal, got {type(proposal).__name__}"
            )
        super().__init__(weight, name)
        self.proposal = proposal
        self.block = None if block is None else _checks.check_int("block", block, low=1)

    def bind(self, context: MoveContext) -> None:
        super().bind(context)
        proposal = self.proposal
        if proposal.n_chi != context.n_chi:
            raise ValueError(
                f"{self.name}: the proposal has n_chi={proposal.n_chi} but the target has "
                f"{context.n_chi} chi angles"
            )
        if proposal.device != context.device:
            raise ValueError(
                f"{self.name}: the proposal is on {proposal.device}, the sampler on "
                f"{context.device}"
            )
        # Block moves score q(x_S | rest) by the proposal's groups: each must sit in one residue.
        if proposal.n_chi:
            pairs = torch.unique(torch.stack([proposal.group, context.group]), dim=1)
            if torch.unique(pairs[0]).numel() != pairs.shape[1]:
                raise ValueError(
                    f"{self.name}: a proposal group spans several residues; block moves need "
                    "proposal groups within residues"
                )

    def _block(self, n: int, key: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(groups (n, S), columns (n, n_chi)) of this step's blocks, or (None, None) for all."""
        if self.block is None or self.block >= self.ctx.n_groups:
            return None, None
        groups = self.pick_groups(n, self.block, derive_seed(key, _TAG_BLOCK))
        return groups, self.ctx.columns_of(groups)

    def _new_angles(
        self, chi: torch.Tensor, drawn: torch.Tensor, columns: torch.Tensor | None
    ) -> torch.Tensor:
        """The proposal's angles, checked, in chi's dtype, wrapped where they may change and bit
        for bit the current ones elsewhere (wrapping is not exact in float32)."""
        drawn = self._checked("chi", drawn, chi.shape[0]).to(chi.dtype)
        self.flag(
            f"{self.name}: the proposal returned non-finite chi angles", ~torch.isfinite(drawn)
        )
        wrapped = wrap_angle(drawn)
        return wrapped if columns is None else torch.where(columns, wrapped, chi)

    def _checked(self, name: str, value: torch.Tensor, n: int) -> torch.Tensor:
        """Proposal outputs must be finite (log q may be -inf only where q is 0)."""
        if value.shape[0] != n:
            raise ValueError(
                f"{self.name}: the proposal returned {name} with {value.shape[0]} rows, not {n}"
            )
        self.flag(
            f"{self.name}: the proposal {type(self.proposal).__name__} returned NaN in {name}",
            torch.isnan(value),
        )
        return value


class Independence(_ProposalMove):
    """Independence Metropolis-Hastings from ``proposal`` (all residues, or blocks of ``block``
    random residues per chain): w = -log q(x_S | x_rest)."""

    def __init__(
        self,
        proposal: Proposal,
        block: int | None = None,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(proposal, block, weight, name or f"independence_{block or 'all'}")

    def propose(self, chi: torch.Tensor, key: int) -> Candidate:
        n = chi.shape[0]
        groups, columns = self._block(n, key)
        offset = self.ctx.chain_offset
        if groups is None:
            draw = self.proposal.sample(n, seed=key, offset=offset)
            log_q = self.proposal.log_prob(chi)
        else:  # by groups: O(block) for proposals that support it
            draw = self.proposal.sample_groups(chi, groups, seed=key, offset=offset)
            log_q = self.proposal.groups_log_prob(chi, groups)
        chi_new = self._new_angles(chi, draw.chi, columns)
        # log q(x') is recomputed marginally (a mixture's draw.log_q is joint with its labels).
        log_q_new = (
            self.proposal.log_prob(chi_new)
            if groups is None
            else self.proposal.groups_log_prob(chi_new, groups)
        )
        log_q_new = self._checked("log_q", log_q_new.to(torch.float64), n)
        log_q = self._checked("log_q", log_q.to(torch.float64), n)  # NaN: a chain stuck forever
        return Candidate(chi_new, groups, -log_q, -log_q_new)


class Lifted(_ProposalMove):
    """Lifted MH with a latent-label proposal (``proposal.n_latent > 0``): labels refreshed from
    r(. | x) (``proposal.latent_log_prob`` / ``sample_latent``), then (k', x') ~ q accepted with
    w = log r(k | x) - log q(k, x) over the block (all residues when ``block`` is None)."""

    def __init__(
        self,
        proposal: Proposal,
        block: int | None = None,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(proposal, block, weight, name or f"lifted_{block or 'all'}")
        if proposal.n_latent <= 0:
            raise ValueError("Lifted needs a proposal with latent labels (proposal.n_latent > 0)")

    def propose(self, chi: torch.Tensor, key: int) -> Candidate:
        n = chi.shape[0]
        groups, columns = self._block(n, key)
        offset, latent_key = self.ctx.chain_offset, derive_seed(key, _TAG_LATENT)
        if groups is None:
            latent = self.proposal.sample_latent(chi, seed=latent_key, offset=offset)
            draw = self.proposal.sample(n, seed=key, offset=offset)
            log_q = self.proposal.log_prob(chi, latent)
            chi_new = self._new_angles(chi, draw.chi, columns)
            log_r = self.proposal.latent_log_prob(chi, latent)
            log_r_new = self.proposal.latent_log_prob(chi_new, draw.latent)
        else:  # the block's labels only (-1 elsewhere), O(block) where supported
            latent = self.proposal.sample_latent_groups(chi, groups, seed=latent_key, offset=offset)
            draw = self.proposal.sample_groups(chi, groups, seed=key, offset=offset)
            log_q = self.proposal.groups_log_prob(chi, groups, latent)
            chi_new = self._new_angles(chi, draw.chi, columns)
            log_r = self.proposal.groups_latent_log_prob(chi, latent, groups)
            log_r_new = self.proposal.groups_latent_log_prob(chi_new, draw.latent, groups)
        log_q_new, latent_new = draw.log_q, draw.latent
        log_weight = self._checked("log r - log q", (log_r - log_q).to(torch.float64), n)
        log_weight_new = self._checked(
            "log r - log q", (log_r_new - log_q_new).to(torch.float64), n
        )
        return Candidate(chi_new, groups, log_weight, log_weight_new, latent, latent_new)
