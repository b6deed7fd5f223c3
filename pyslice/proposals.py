"""Proposals: distributions over whole side-chain configurations with an exact log-density.

A :class:`Proposal` draws ``n`` configurations ``chi: (n, n_chi)`` with their log-density
``log_q: (n,)`` (float64) and, for proposals with latent components, the labels ``latent:
(n, n_latent)``. The sampler uses it in independence moves (``w = -log q``) and lifted moves
(``w = log r(k | x) - log q(k, x)``, ../shared/DESIGN.md formula 4).

The block variant resamples only some columns (the chi angles of a few residues) of given
configurations and scores only those: ``sample_block`` returns ``log q(x_S' | x_rest)`` for the new
block values and ``block_log_prob`` the same for the current ones, so an independence move on a
block S is accepted with ``-beta dU + log q(x_S | rest) - log q(x_S' | rest)``.

Every proposal here is a product over *groups* of columns (a group is one residue: its chi angles
are drawn together from one mixture component, which keeps them correlated). Randomness is
counter-based (:mod:`pyslice._random`): row i of a draw with ``(seed, offset)`` uses the streams
of global chain ``offset + i`` under key ``seed``, so equal pairs give equal draws, and a row's
draw does not depend on how many rows are drawn with it or on which process draws it.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from pyslice import _checks, _random
from pyslice._random import derive_seed
from pyslice.distributions import draw_mixture, von_mises_log_density
from pyslice.geometry.angles import wrap_angle

__all__ = ["MixtureProposal", "Proposal", "ProposalDraw", "UniformProposal", "derive_seed"]

_LOG_2PI = math.log(2.0 * math.pi)


# Purposes of the proposals' random streams.
_TAG_UNIFORM, _TAG_COMPONENT, _TAG_LATENT, _TAG_ANGLE = 0x756E69, 0x636F, 0x726B, 0x616E67


def _chains(offset: int, n: int, device: torch.device) -> torch.Tensor:
    """(n,) int64 global chain indices of the rows of a draw that starts at chain ``offset``."""
    return torch.arange(offset, offset + n, dtype=torch.int64, device=device)


def generator(device: torch.device, seed: int, *words: int) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``derive_seed(seed, *words)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *words) & ((1 << 63) - 1))
    return gen


@dataclass
class ProposalDraw:
    """``chi: (n, n_chi)`` in [-pi, pi); ``log_q: (n,)`` float64; ``latent: (n, n_latent)`` int64
    (n_latent may be 0). For a block draw, ``log_q`` scores the resampled block only and
    ``latent`` holds labels for every group (those outside the block are -1)."""

    chi: torch.Tensor
    log_q: torch.Tensor
    latent: torch.Tensor


class Proposal(ABC):
    """A distribution q over configurations ``chi: (n, n_chi)`` with exact ``log q``.

    Subclasses set ``n_chi``, ``group: (n_chi,) int64`` (the group, usually the residue, of each
    column; groups numbered 0..n_groups-1), ``n_latent`` (labels per configuration; 0 when the
    proposal has no latent components) and implement the four methods below.
    """

    n_chi: int
    group: torch.Tensor
    n_latent: int = 0

    @functools.cached_property
    def n_groups(self) -> int:
        """Number of groups (computed once: ``group`` never changes after construction)."""
        return int(self.group.max()) + 1 if self.group.numel() else 0

    @property
    def device(self) -> torch.device:
        return self.group.device

    @abstractmethod
    def sample(self, n: int, *, seed: int, offset: int = 0) -> ProposalDraw:
        """``n`` independent configurations with ``log q(chi)`` (the joint ``log q(k, chi)`` when
        the proposal has latent labels)."""

    @abstractmethod
    def log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """``(n,)`` float64: log q(chi) (marginal), or log q(latent, chi) when labels are given."""

    @abstractmethod
    def sample_block(
        self, chi: torch.Tensor, block: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        """Resample the columns where ``block: (n, n_chi) bool`` is True (whole groups) of each
        row of ``chi``; ``log_q`` is the log-density of the new block values given the rest."""

    @abstractmethod
    def block_log_prob(
        self, chi: torch.Tensor, block: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(n,)`` float64: log q of the block values of ``chi`` given the rest (joint with the
        block's labels when ``latent`` is given)."""

    def column_log_prob(self, x: torch.Tensor, column: int) -> torch.Tensor:
        """log of the marginal density of chi column ``column`` at angles ``x`` (any shape),
        float64: what plots overlay on a column's histogram."""
        raise NotImplementedError(f"{type(self).__name__} has no per-column marginal")

    def latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, block: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(n,)`` float64: log r(latent | chi) over the groups in ``block`` (all when None), the
        normalised conditional of a lifted move. Default: the proposal's own posterior."""
        raise NotImplementedError(f"{type(self).__name__} has no latent labels")

    def sample_latent(self, chi: torch.Tensor, *, seed: int, offset: int = 0) -> torch.Tensor:
        """``(n, n_latent)`` labels drawn from r(. | chi) (the Gibbs refresh of a lifted chain)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent labels")

    # ------------------------------------------------------------------ blocks by group

    # A block given as ``groups: (n, S)`` int64 group indices, -1 padded (distinct in a row):
    # what a sampler's block moves hold. Proposals whose cost can be O(block) (MixtureProposal)
    # override these; the defaults go through the column masks of the methods above.

    def columns_of_groups(self, groups: torch.Tensor) -> torch.Tensor:
        """(n, n_chi) bool: the columns of ``groups: (n, S)`` (-1 = none)."""
        return (groups.unsqueeze(-1) == self.group.view(1, 1, -1)).any(1)

    def sample_groups(
        self, chi: torch.Tensor, groups: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        """:meth:`sample_block` for the block of ``groups: (n, S)``."""
        return self.sample_block(chi, self.columns_of_groups(groups), seed=seed, offset=offset)

    def groups_log_prob(
        self, chi: torch.Tensor, groups: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`block_log_prob` for the block of ``groups: (n, S)``."""
        return self.block_log_prob(chi, self.columns_of_groups(groups), latent)

    def groups_latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`latent_log_prob` over the groups ``groups: (n, S)``."""
        return self.latent_log_prob(chi, latent, self.columns_of_groups(groups))

    def sample_latent_groups(
        self, chi: torch.Tensor, groups: torch.Tensor, *, seed: int, offset: int = 0
    ) -> torch.Tensor:
        """(n, n_latent) labels from r(. | chi) for the groups ``groups: (n, S)``, -1 elsewhere."""
        labels = self.sample_latent(chi, seed=seed, offset=offset)
        inside = self.group_mask(self.columns_of_groups(groups))
        return torch.where(inside, labels, -1)

    # ------------------------------------------------------------------ shared helpers

    def check_chi(self, name: str, chi: object) -> torch.Tensor:
        tensor = _checks.as_float_tensor(name, chi)
        if tensor.dim() != 2 or tensor.shape[1] != self.n_chi:
            raise ValueError(f"{name} must have shape (n, {self.n_chi}), got {tuple(tensor.shape)}")
        if tensor.device != self.device:
            raise ValueError(f"{name} is on {tensor.device}, the proposal on {self.device}")
        _checks.require_finite(name, tensor)
        return tensor

    def check_block(self, block: object, n: int) -> torch.Tensor:
        if not isinstance(block, torch.Tensor) or block.dtype != torch.bool:
            raise TypeError("block must be a bool tensor (n, n_chi)")
        if block.shape != (n, self.n_chi):
            raise ValueError(f"block must have shape ({n}, {self.n_chi}), got {tuple(block.shape)}")
        return block

    def group_mask(self, block: torch.Tensor) -> torch.Tensor:
        """(n, n_groups) bool: groups with any column in ``block``."""
        counts = torch.zeros(block.shape[0], self.n_groups, dtype=torch.int32, device=block.device)
        return counts.index_add_(1, self.group, block.to(torch.int32)) > 0


class UniformProposal(Proposal):
    """Every chi uniform on [-pi, pi): needs no training data; log q = -n log(2 pi)."""

    def __init__(
        self,
        n_chi: int,
        group: torch.Tensor | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.n_chi = _checks.check_int("n_chi", n_chi, low=0)
        device = torch.device(device if device is not None else "cpu")
        if group is None:
            group = torch.arange(self.n_chi, device=device)
        self.group = torch.as_tensor(group, dtype=torch.int64, device=device)
        if self.group.shape != (self.n_chi,):
            raise ValueError(f"group must have shape ({self.n_chi},), got {tuple(group.shape)}")
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"UniformProposal(n_chi={self.n_chi})"

    def _uniform(self, shape: tuple[int, ...], seed: int, offset: int) -> torch.Tensor:
        chains = _chains(offset, shape[0], self.device)
        u = _random.uniform(derive_seed(seed, _TAG_UNIFORM), chains, shape[1])
        # (0, 1) -> (-pi, pi); the cast may round up to pi itself, which wrapping maps to -pi.
        return wrap_angle((2.0 * math.pi * u - math.pi).to(self.dtype))

    def sample(self, n: int, *, seed: int, offset: int = 0) -> ProposalDraw:
        n = _checks.check_int("n", n, low=0)
        chi = self._uniform((n, self.n_chi), seed, offset)
        log_q = torch.full((n,), -self.n_chi * _LOG_2PI, dtype=torch.float64, device=self.device)
        return ProposalDraw(chi, log_q, torch.zeros(n, 0, dtype=torch.int64, device=self.device))

    def log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        return torch.full(
            (chi.shape[0],), -self.n_chi * _LOG_2PI, dtype=torch.float64, device=self.device
        )

    def column_log_prob(self, x: torch.Tensor, column: int) -> torch.Tensor:
        _checks.check_int("column", column, low=0, high=self.n_chi)
        return torch.full_like(torch.as_tensor(x, dtype=torch.float64), -_LOG_2PI)

    def sample_block(
        self, chi: torch.Tensor, block: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        chi = self.check_chi("chi", chi)
        block = self.check_block(block, chi.shape[0])
        fresh = self._uniform(tuple(chi.shape), seed, offset).to(chi.dtype)
        out = torch.where(block, fresh, chi)
        latent = torch.zeros(chi.shape[0], 0, dtype=torch.int64, device=self.device)
        return ProposalDraw(out, self.block_log_prob(out, block), latent)

    def block_log_prob(
        self, chi: torch.Tensor, block: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        return -_LOG_2PI * block.sum(1, dtype=torch.float64)


class MixtureProposal(Proposal):
    """A product over groups of von Mises mixtures whose components span the group's columns.

    For group g with columns C(g): q_g(x) = sum_k alpha_gk prod_{c in C(g)} vM(x_c; mu_ck,
    kappa_ck), one component being one rotamer of a residue. The label of group g is its component.

    Args:
        group: (n_chi,) int64 group of each column, values 0..G-1, each group non-empty.
        logits: (G, K) unnormalised component log-weights (-inf: an unused component).
        loc, concentration: (n_chi, K) mean and kappa of each column in each component.
        pi_periodic: (n_chi,) bool: columns whose density repeats every pi; their loc and
            concentration describe the doubled angle (as in :class:`VonMisesMixture`).
        conditional: an optional second MixtureProposal with the same groups whose posterior
            responsibilities define r(k | x) for lifted moves (default: this proposal's own).
    """

    n_latent: int

    def __init__(
        self,
        group: torch.Tensor,
        logits: torch.Tensor,
        loc: torch.Tensor,
        concentration: torch.Tensor,
        pi_periodic: torch.Tensor | None = None,
        *,
        conditional: MixtureProposal | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.group = torch.as_tensor(group, dtype=torch.int64)
        device = self.group.device
        logits = _checks.as_float_tensor("logits", logits).to(device, torch.float64)
        loc = _checks.as_float_tensor("loc", loc).to(device, torch.float64)
        kappa = _checks.as_float_tensor("concentration", concentration).to(device, torch.float64)
        if self.group.dim() != 1:
            raise ValueError(f"group must be 1-D, got shape {tuple(self.group.shape)}")
        self.n_chi = self.group.shape[0]
        n_groups = int(self.group.max()) + 1 if self.n_chi else 0
        if self.n_chi and (
            int(self.group.min()) < 0 or torch.bincount(self.group, minlength=n_groups).min() == 0
        ):
            raise ValueError("group must number groups 0..G-1 with every group non-empty")
        if logits.dim() != 2 or logits.shape[0] != n_groups:
            raise ValueError(f"logits must have shape ({n_groups}, K), got {tuple(logits.shape)}")
        k = logits.shape[1]
        for name, t in (("loc", loc), ("concentration", kappa)):
            if t.shape != (self.n_chi, k):
                raise ValueError(
                    f"{name} must have shape ({self.n_chi}, {k}), got {tuple(t.shape)}"
                )
        if bool(torch.isnan(logits).any()) or bool((logits == math.inf).any()):
            raise ValueError("logits must not contain NaN or +inf")
        if n_groups and not bool(torch.isfinite(logits).any(1).all()):
            raise ValueError("logits must give every group at least one finite weight")
        _checks.require_finite("loc", loc)
        _checks.require_finite("concentration", kappa)
        if bool((kappa < 0).any()):
            raise ValueError("concentration must be >= 0")
        if pi_periodic is None:
            pi_periodic = torch.zeros(self.n_chi, dtype=torch.bool)
        self.pi_periodic = torch.as_tensor(pi_periodic, dtype=torch.bool, device=device)
        if self.pi_periodic.shape != (self.n_chi,):
            raise ValueError(f"pi_periodic must have shape ({self.n_chi},)")
        if conditional is not None and (
            not isinstance(conditional, MixtureProposal)
            or not torch.equal(conditional.group, self.group)
            or conditional.n_components != k
        ):
            raise ValueError("conditional must be a MixtureProposal with the same groups and K")
        self.logits = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        self.loc = loc
        self.concentration = kappa
        self.conditional = conditional
        self.dtype = dtype
        self.n_latent = n_groups
        self._group_tables()

    def _group_tables(self) -> None:
        """Per-group copies of the parameters, so a block of S groups costs O(S), not O(n_chi):
        ``group_columns (G, C)`` the columns of each group (-1 padded, C the widest group),
        ``group_loc``/``group_kappa (G, C, K)`` and ``group_periodic (G, C)``."""
        n_groups, device = self.n_latent, self.device
        width = int(torch.bincount(self.group).max()) if self.n_chi else 1
        columns = torch.full((n_groups, width), -1, dtype=torch.int64)
        slot = [0] * n_groups
        for column, g in enumerate(self.group.tolist()):
            columns[g, slot[g]] = column
            slot[g] += 1
        self.group_columns = columns.to(device)
        safe = self.group_columns.clamp_min(0)
        valid = (self.group_columns >= 0).unsqueeze(-1)
        self.group_loc = torch.where(valid, self.loc[safe], 0.0)
        self.group_kappa = torch.where(valid, self.concentration[safe], 0.0)
        self.group_periodic = self.pi_periodic[safe] & valid.squeeze(-1)

    @property
    def n_components(self) -> int:
        return self.logits.shape[1]

    def __repr__(self) -> str:
        return (
            f"MixtureProposal(n_chi={self.n_chi}, groups={self.n_groups}, "
            f"components={self.n_components})"
        )

    def to(self, device: torch.device | str) -> MixtureProposal:
        return MixtureProposal(
            self.group.to(device),
            self.logits.to(device),
            self.loc.to(device),
            self.concentration.to(device),
            self.pi_periodic.to(device),
            conditional=None if self.conditional is None else self.conditional.to(device),
            dtype=self.dtype,
        )

    # ------------------------------------------------------------------ densities

    def group_component_log_prob(self, chi: torch.Tensor) -> torch.Tensor:
        """(n, G, K) float64: log alpha_gk + sum_{c in g} log vM(x_c; mu_ck, kappa_ck)."""
        x = chi.to(torch.float64)
        x = torch.where(self.pi_periodic, 2.0 * x, x).unsqueeze(-1)  # (n, n_chi, 1)
        per_column = von_mises_log_density(x, self.loc, self.concentration)  # (n, n_chi, K)
        out = self.logits.expand(chi.shape[0], -1, -1).clone()
        return out.index_add_(1, self.group, per_column)

    def _group_log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None) -> torch.Tensor:
        joint = self.group_component_log_prob(chi)
        if latent is None:
            return torch.logsumexp(joint, dim=2)
        latent = self._check_latent(latent, chi.shape[0])
        return joint.gather(2, latent.clamp_min(0).unsqueeze(-1)).squeeze(-1)

    def _check_latent(self, latent: object, n: int) -> torch.Tensor:
        if not isinstance(latent, torch.Tensor) or latent.shape != (n, self.n_latent):
            raise ValueError(f"latent must be a ({n}, {self.n_latent}) int64 tensor")
        return latent.to(torch.int64)

    def log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        return self._group_log_prob(chi, latent).sum(1)

    def column_log_prob(self, x: torch.Tensor, column: int) -> torch.Tensor:
        """Marginal of one column: sum_k alpha_gk vM(x; mu_ck, kappa_ck) (doubled angle for a
        pi-periodic column)."""
        column = _checks.check_int("column", column, low=0, high=self.n_chi)
        x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        y = (2.0 * x if bool(self.pi_periodic[column]) else x).unsqueeze(-1)
        density = von_mises_log_density(y, self.loc[column], self.concentration[column])
        return torch.logsumexp(self.logits[int(self.group[column])] + density, dim=-1)

    def block_log_prob(
        self, chi: torch.Tensor, block: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        groups = self.group_mask(self.check_block(block, chi.shape[0]))
        per_group = self._group_log_prob(chi, latent)
        return torch.where(groups, per_group, 0.0).sum(1)

    def latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, block: torch.Tensor | None = None
    ) -> torch.Tensor:
        source = self.conditional if self.conditional is not None else self
        joint = source.group_component_log_prob(self.check_chi("chi", chi))
        posterior = joint - torch.logsumexp(joint, dim=2, keepdim=True)
        latent = self._check_latent(latent, chi.shape[0])
        per_group = posterior.gather(2, latent.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        if block is not None:
            per_group = torch.where(self.group_mask(block), per_group, 0.0)
        return per_group.sum(1)

    # ------------------------------------------------------------------ blocks by group

    def _block_joint(
        self, chi: torch.Tensor, groups: torch.Tensor, source: MixtureProposal | None = None
    ) -> torch.Tensor:
        """(n, S, K) float64: log alpha_gk + sum_{c in g} log vM(x_c) for the block's groups
        (of ``source``'s parameters, default this proposal's); O(S C K) per row."""
        source = self if source is None else source
        g = groups.clamp_min(0)
        columns = self.group_columns[g]  # (n, S, C)
        x = chi.gather(1, columns.clamp_min(0).flatten(1)).view(columns.shape).to(torch.float64)
        x = torch.where(self.group_periodic[g], 2.0 * x, x)
        density = von_mises_log_density(
            x.unsqueeze(-1), source.group_loc[g], source.group_kappa[g]
        )  # (n, S, C, K)
        density = torch.where((columns >= 0).unsqueeze(-1), density, 0.0)
        return source.logits[g] + density.sum(2)

    @staticmethod
    def _labels_at(latent: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(n, S) labels of the block's groups from full (n, G) labels."""
        return latent.gather(1, groups.clamp_min(0)).clamp_min(0)

    def groups_log_prob(
        self, chi: torch.Tensor, groups: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        joint = self._block_joint(chi, groups)
        if latent is None:
            per_group = torch.logsumexp(joint, dim=2)
        else:
            labels = self._labels_at(latent, groups)
            per_group = joint.gather(2, labels.unsqueeze(-1)).squeeze(-1)
        return torch.where(groups >= 0, per_group, 0.0).sum(1)

    def groups_latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        joint = self._block_joint(chi, groups, self.conditional)
        posterior = joint - torch.logsumexp(joint, dim=2, keepdim=True)
        labels = self._labels_at(latent, groups)
        per_group = posterior.gather(2, labels.unsqueeze(-1)).squeeze(-1)
        return torch.where(groups >= 0, per_group, 0.0).sum(1)

    def _scatter_labels(self, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(n, G) labels: ``labels (n, S)`` at the block's groups, -1 elsewhere."""
        n = groups.shape[0]
        out = torch.full((n, self.n_latent + 1), -1, dtype=torch.int64, device=self.device)
        slot = torch.where(groups >= 0, groups, self.n_latent)  # padding -> a scratch column
        return out.scatter_(1, slot, labels)[:, : self.n_latent]

    def sample_latent_groups(
        self, chi: torch.Tensor, groups: torch.Tensor, *, seed: int, offset: int = 0
    ) -> torch.Tensor:
        source = self.conditional if self.conditional is not None else self
        joint = self._block_joint(chi, groups, source)
        labels = self._categorical(joint, seed, offset, _TAG_LATENT)
        return self._scatter_labels(torch.where(groups >= 0, labels, -1), groups)

    def sample_groups(
        self, chi: torch.Tensor, groups: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        g = groups.clamp_min(0)
        labels = self._categorical(self.logits[g], seed, offset, _TAG_COMPONENT)  # (n, S)
        columns = self.group_columns[g]  # (n, S, C)
        take = labels.unsqueeze(-1).unsqueeze(-1).expand(*columns.shape, 1)
        loc = self.group_loc[g].gather(3, take).squeeze(-1)
        kappa = self.group_kappa[g].gather(3, take).squeeze(-1)
        fresh = self._draw_angles(loc, kappa, self.group_periodic[g], seed, offset)
        # Scatter the block's angles; padding slots write into a scratch column (n_chi).
        valid = (columns >= 0) & (groups >= 0).unsqueeze(-1)
        target = torch.where(valid, columns, self.n_chi).flatten(1)
        out = torch.cat([chi, chi[:, :1]], dim=1)
        out = out.scatter(1, target, fresh.flatten(1).to(chi.dtype))[:, : self.n_chi]
        latent = self._scatter_labels(torch.where(groups >= 0, labels, -1), groups)
        log_q = self.groups_log_prob(out, groups, latent)
        return ProposalDraw(out, log_q, latent)

    def _draw_angles(
        self,
        loc: torch.Tensor,
        kappa: torch.Tensor,
        periodic: torch.Tensor,
        seed: int,
        offset: int,
    ) -> torch.Tensor:
        """Angles from the single von Mises components ``loc, kappa: (n, ...)`` (dense, one row
        per chain), the pi-periodic ones (``periodic``) as doubled angles: one fused-kernel call
        for each kind. Element j of row i draws from the streams of element (offset + i) W + j, W
        the row's width: keyed by the global chain, like every draw of a proposal."""
        shape = loc.shape
        width = math.prod(shape[1:])
        flat_loc = loc.reshape(-1, 1).to(torch.float32)
        flat_kappa = kappa.reshape(-1, 1).to(torch.float32)
        zero = torch.zeros(flat_loc.shape[0], 1, dtype=torch.float32, device=self.device)
        draws = [
            draw_mixture(
                zero,
                flat_loc,
                flat_kappa,
                (),
                derive_seed(seed, _TAG_ANGLE, int(kind)),
                0,
                None,
                pi_periodic=kind,
                base=offset * width,
            ).reshape(shape)
            for kind in (False, True)
        ]
        return torch.where(periodic, draws[1], draws[0])

    # ------------------------------------------------------------------ sampling

    def _categorical(
        self, log_probs: torch.Tensor, seed: int, offset: int, tag: int
    ) -> torch.Tensor:
        """One label per row of ``log_probs: (n, G, K)`` by inverting the CDF of a uniform."""
        n, n_groups = log_probs.shape[:2]
        u = _random.uniform(derive_seed(seed, tag), _chains(offset, n, self.device), n_groups)
        return _random.categorical(u, log_probs)

    def sample_latent(self, chi: torch.Tensor, *, seed: int, offset: int = 0) -> torch.Tensor:
        source = self.conditional if self.conditional is not None else self
        joint = source.group_component_log_prob(self.check_chi("chi", chi))
        return self._categorical(joint, seed, offset, _TAG_LATENT)

    def _angles(self, labels: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
        """(n, n_chi) angles drawn from the components ``labels: (n, G)``."""
        component = labels[:, self.group].unsqueeze(-1)  # (n, n_chi, 1)
        loc = self.loc.expand(labels.shape[0], -1, -1).gather(2, component).squeeze(-1)
        kappa = self.concentration.expand(labels.shape[0], -1, -1).gather(2, component)
        periodic = self.pi_periodic.expand(labels.shape[0], -1)
        out = self._draw_angles(loc, kappa.squeeze(-1), periodic, seed, offset)
        return out.to(self.dtype)

    def sample(self, n: int, *, seed: int, offset: int = 0) -> ProposalDraw:
        n = _checks.check_int("n", n, low=0)
        labels = self._categorical(self.logits.expand(n, -1, -1), seed, offset, _TAG_COMPONENT)
        chi = self._angles(labels, seed, offset)
        return ProposalDraw(chi, self.log_prob(chi, labels), labels)

    def sample_block(
        self, chi: torch.Tensor, block: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        chi = self.check_chi("chi", chi)
        n = chi.shape[0]
        block = self.check_block(block, n)
        groups = self.group_mask(block)
        labels = self._categorical(self.logits.expand(n, -1, -1), seed, offset, _TAG_COMPONENT)
        columns = groups[:, self.group]
        fresh = self._angles(labels, seed, offset).to(chi.dtype)
        out = torch.where(columns, fresh, chi)
        labels = torch.where(groups, labels, -1)
        log_q = torch.where(groups, self._group_log_prob(out, labels), 0.0).sum(1)
        return ProposalDraw(out, log_q, labels)
