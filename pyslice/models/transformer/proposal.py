"""The sampler's proposal from a :class:`~pyslice.models.transformer.SideChainTransformer`.

Masked residues are independent given the context, so for a block S of residues

    q(x_S | x_rest, backbone) = prod_{i in S} q_i(x_i | x_rest, backbone):

an exact log-density, parallel sampling and exact block moves (the proposal for S conditions only
on residues outside S, which the move leaves unchanged, so the forward and the reverse move see
the same context and one forward pass serves both). A full-configuration draw is the all-masked
case. The latent label of a residue is its mixture component; for
:class:`~pyslice.mcmc.Lifted` moves r(k | x) is the posterior of the all-masked mixture.

:class:`GroupLayout` maps a protein's groups (residues with movable chis) to the model's tokens
and chi slots, and holds what the proposal and the ERA policy
(:class:`~pyslice.models.transformer.TransformerPolicy`) share: the model's inputs for a masked
set of groups, the groups' mixture densities and the draws from them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pyslice import _checks
from pyslice._random import derive_seed
from pyslice.distributions import draw_mixture, von_mises_log_density
from pyslice.models.transformer.data import (
    MAX_CHI,
    N_CHI_TABLE,
    PI_PERIODIC_TABLE,
    ProteinRecord,
    TokenBatch,
    record_from_protein,
)
from pyslice.models.transformer.model import MixtureParams, SideChainTransformer, component_log_prob
from pyslice.proposals import Proposal, ProposalDraw, generator
from pyslice.structure.protein import Protein

__all__ = ["GroupLayout", "GroupParams", "TransformerProposal", "expand_rows", "group_params"]

# Random-stream tags (counter-based draws: equal (seed, offset, tag) give equal draws).
_TAG_LABEL, _TAG_ANGLE, _TAG_LATENT = 0x74636F, 0x74616E, 0x74726B


@dataclass
class GroupParams:
    """Float64 mixtures of the masked (row, group) pairs: ``rows, groups (N,)``, ``logits (N,
    K)``, ``loc, concentration (N, 4, K)``."""

    rows: torch.Tensor
    groups: torch.Tensor
    logits: torch.Tensor
    loc: torch.Tensor
    concentration: torch.Tensor


def group_params(
    parts: Sequence[MixtureParams], masked: torch.Tensor, concentration_scale: float = 1.0
) -> GroupParams:
    """Float64 :class:`GroupParams` of the model outputs ``parts`` (row chunks, in order) for
    the ``masked: (n, G)`` groups (the model's ``want`` tokens of :meth:`GroupLayout.inputs`)."""
    rows, groups = torch.nonzero(masked, as_tuple=True)  # same order as the want tokens
    return GroupParams(
        rows,
        groups,
        torch.cat([p.logits for p in parts]).to(torch.float64),
        torch.cat([p.loc for p in parts]).to(torch.float64),
        torch.cat([p.concentration for p in parts]).to(torch.float64) * concentration_scale,
    )


def expand_rows(params: GroupParams, masked: torch.Tensor, source: torch.Tensor) -> GroupParams:
    """``params`` of the rows of ``masked: (m, G)`` re-indexed so that output row r holds the
    mixtures of row ``source[r]`` (rows repeated, or shared by rows with equal inputs)."""
    entry = torch.full(masked.shape, -1, dtype=torch.int64, device=params.rows.device)
    entry[params.rows, params.groups] = torch.arange(params.rows.shape[0], device=entry.device)
    source = source.to(entry.device)
    rows, groups = torch.nonzero(masked.to(entry.device)[source], as_tuple=True)
    picked = entry[source[rows], groups]
    return GroupParams(
        rows,
        groups,
        params.logits[picked],
        params.loc[picked],
        params.concentration[picked],
    )


class GroupLayout:
    """A protein's groups (residues with movable chis, in ``protein.chi_index`` order) among the
    model's tokens and chi slots, with the densities and draws of their mixtures.

    Attributes: ``record`` (the protein's tokens), ``n_chi``, ``n_groups``, ``group: (n_chi,)``
    group of each column, ``column_slot: (n_chi,)`` its chi slot, ``group_token, group_aa,
    group_n_chi: (G,)``, ``group_periodic: (G, 4)``, ``slot_column: (G, 4)`` (-1: no column).
    """

    # The proposal's configuration check (shape (n, n_chi), device, finite): it reads only
    # n_chi and device, which a layout has, so both validate configurations alike.
    check_chi = Proposal.check_chi

    def __init__(self, protein: Protein, device: torch.device | str | None = None) -> None:
        if not isinstance(protein, Protein):
            raise TypeError(f"protein must be a pyslice.Protein, got {type(protein).__name__}")
        self.device = torch.device(device if device is not None else "cpu")
        record, token_of_residue = record_from_protein(protein)
        self.record: ProteinRecord = record
        chi_index = protein.chi_index.to("cpu")
        self.n_chi = int(chi_index.shape[0])
        residues, group = torch.unique_consecutive(chi_index[:, 0], return_inverse=True)
        self.group = group.to(self.device)
        self.n_groups = int(residues.shape[0])
        group_token = token_of_residue[residues]
        self.group_token = group_token.to(self.device)
        group_aa = record.aa[group_token]
        self.group_aa = group_aa.to(self.device)
        n_chi_of = N_CHI_TABLE[group_aa]
        counts = torch.bincount(group, minlength=self.n_groups) if self.n_chi else n_chi_of
        if not torch.equal(counts, n_chi_of) or (
            self.n_chi and not torch.equal(chi_index[:, 1], _slot_numbers(group, self.n_groups))
        ):
            raise ValueError("protein: every movable residue must have all of its type's chis")
        self.column_slot = chi_index[:, 1].to(self.device)
        self.group_n_chi = n_chi_of.to(self.device)
        self.group_periodic = PI_PERIODIC_TABLE[group_aa].to(self.device)
        slot_column = torch.full((self.n_groups, MAX_CHI), -1, dtype=torch.int64)
        if self.n_chi:
            slot_column[group, chi_index[:, 1]] = torch.arange(self.n_chi)
        self.slot_column = slot_column.to(self.device)

    def token_batch(self) -> TokenBatch:
        """The protein's tokens as a batch of one, on the layout's device."""
        return TokenBatch.from_records([self.record], self.device)

    def inputs(
        self, chi: torch.Tensor, masked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token inputs ``(chi (n, L, 4), known (n, L), want (n, L))`` of the model for the
        ``masked: (n, G)`` groups given the other groups' ``chi: (n, n_chi)``."""
        n = chi.shape[0]
        length = len(self.record)
        tokens = torch.zeros(n, length, MAX_CHI, dtype=torch.float32, device=self.device)
        if self.n_chi:
            tokens[:, self.group_token[self.group], self.column_slot] = chi.to(torch.float32)
        known = torch.zeros(n, length, dtype=torch.bool, device=self.device)
        known[:, self.group_token] = ~masked
        want = torch.zeros(n, length, dtype=torch.bool, device=self.device)
        want[:, self.group_token] = masked
        return tokens, known, want

    # ---------------------------------------------------------------- densities

    def component_log_prob(self, chi: torch.Tensor, params: GroupParams) -> torch.Tensor:
        """(N, K) float64 log alpha + log densities of the chis ``chi: (n, n_chi)`` of the
        (row, group) pairs of ``params``."""
        x = torch.zeros(params.rows.shape[0], MAX_CHI, dtype=torch.float64, device=self.device)
        cols = self.slot_column[params.groups]  # (N, 4)
        present = cols >= 0
        values = chi.to(torch.float64)[params.rows[:, None], cols.clamp_min(0)]
        x = torch.where(present, values, x)
        return component_log_prob(
            params.logits,
            params.loc,
            params.concentration,
            x,
            self.group_periodic[params.groups],
            self.group_n_chi[params.groups],
        )

    def log_prob(
        self, chi: torch.Tensor, params: GroupParams, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(n,) float64 log q of the groups of ``params``: the mixtures' marginal, or joint with
        the labels ``latent: (n, G)`` when given."""
        joint = self.component_log_prob(chi, params)
        if latent is None:
            per = torch.logsumexp(joint, dim=1)
        else:
            n_components = params.logits.shape[1]
            labels = self.check_latent(latent, chi.shape[0], n_components)
            labels = labels[params.rows, params.groups]
            per = joint.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
        return self.sum_rows(per, params.rows, chi.shape[0])

    def sum_rows(self, values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        """(n,) float64 sums of the per-(row, group) ``values`` over each row."""
        out = torch.zeros(n, dtype=torch.float64, device=self.device)
        return out.index_add_(0, rows, values)

    def check_latent(self, latent: object, n: int, n_components: int) -> torch.Tensor:
        if not isinstance(latent, torch.Tensor) or latent.shape != (n, self.n_groups):
            raise ValueError(f"latent must be a ({n}, {self.n_groups}) int64 tensor")
        if latent.is_floating_point():
            raise TypeError("latent must be an integer tensor")
        if bool((latent >= n_components).any()):
            raise ValueError(f"latent labels must be < {n_components}")
        return latent.to(torch.int64)

    # ---------------------------------------------------------------- draws

    def categorical(
        self, log_probs: torch.Tensor, seed: int, offset: int, tag: int
    ) -> torch.Tensor:
        """One label per row of ``log_probs: (N, K)`` by inverting the CDF of a uniform."""
        gen = generator(self.device, seed, offset, tag)
        u = torch.rand(log_probs.shape[0], generator=gen, device=self.device, dtype=torch.float64)
        cdf = torch.cumsum(torch.softmax(log_probs, dim=-1), dim=-1)[:, :-1]
        return (u[:, None] >= cdf).sum(-1)

    def draw(
        self, base: torch.Tensor, params: GroupParams, seed: int, offset: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a component and angles for every (row, group) of ``params`` into a copy of
        ``base: (n, n_chi)``; returns (chi, labels (N,))."""
        labels = self.categorical(params.logits, seed, offset, _TAG_LABEL)
        out = base.clone()
        cols = self.slot_column[params.groups]  # (N, 4)
        present = cols >= 0
        periodic = self.group_periodic[params.groups]
        zero = torch.zeros(1, 1, dtype=torch.float32, device=self.device)
        for flag in (False, True):
            entry, slot = torch.nonzero(present & (periodic == flag), as_tuple=True)
            if entry.numel() == 0:
                continue
            comp = labels[entry]
            loc = params.loc[entry, slot, comp].to(torch.float32)
            kappa = params.concentration[entry, slot, comp].to(torch.float32)
            key = derive_seed(seed, offset, _TAG_ANGLE, int(flag))
            draws = draw_mixture(
                zero.expand(entry.numel(), 1),
                loc[:, None],
                kappa[:, None],
                (),
                key,
                0,
                None,
                pi_periodic=flag,
            )
            out[params.rows[entry], cols[entry, slot]] = draws.to(out.dtype)
        return out, labels


@dataclass
class _CacheEntry:
    context: torch.Tensor
    masked: torch.Tensor
    params: GroupParams = field(repr=False)


class TransformerProposal(Proposal):
    """The :class:`~pyslice.proposals.Proposal` of a :class:`SideChainTransformer` on a protein.

    Groups are the residues with movable chis in ``protein.chi_index`` order; the latent label of a
    group is its mixture component. ``sample``/``log_prob`` are the all-masked model (context =
    backbone and sequence); ``sample_block``/``block_log_prob`` mask the block's residues and
    condition on the current chis of all others. ``latent_log_prob``/``sample_latent`` use the
    all-masked posterior r(k | x). ``column_log_prob`` is the all-masked marginal of one column.

    The forward pass of the last two contexts is cached (compared by value), so the three calls of
    an independence step (sample_block, block_log_prob of the current and of the proposed state,
    which agree outside the block) cost one forward pass; the all-masked one is computed once.
    """

    def __init__(
        self,
        model: SideChainTransformer,
        protein: Protein,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 512,
        concentration_scale: float = 1.0,
    ) -> None:
        self.concentration_scale = _checks.check_float(
            "concentration_scale", concentration_scale, positive=True
        )
        if not math.isfinite(self.concentration_scale):
            raise ValueError(f"concentration_scale must be finite, got {concentration_scale}")
        if not isinstance(model, SideChainTransformer):
            raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
        self.layout = GroupLayout(protein, device)
        self.model = copy.deepcopy(model).to(self.layout.device, torch.float32).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dtype = dtype
        self.max_batch = _checks.check_int("max_batch", max_batch, low=1)
        self.n_chi = self.layout.n_chi
        self.group = self.layout.group
        self.n_latent = self.layout.n_groups
        with torch.no_grad():
            self._static = self.model.encode_static(self.layout.token_batch())
        self._cache: list[_CacheEntry] = []
        self._full: GroupParams | None = None

    def __repr__(self) -> str:
        return (
            f"TransformerProposal(n_chi={self.n_chi}, groups={self.n_groups}, "
            f"components={self.model.n_components})"
        )

    @property
    def n_components(self) -> int:
        return self.model.n_components

    # ---------------------------------------------------------------- forward passes

    def _forward(self, chi: torch.Tensor, masked: torch.Tensor) -> GroupParams:
        """Mixtures of the ``masked: (n, G)`` groups given the other groups' ``chi``."""
        n = chi.shape[0]
        tokens, known, want = self.layout.inputs(chi, masked)
        parts = []
        with torch.no_grad():
            for start in range(0, n, self.max_batch):
                stop = min(start + self.max_batch, n)
                static = self._static.expand(stop - start)
                p = self.model.run(static, tokens[start:stop], known[start:stop], want[start:stop])
                parts.append(p)
        return group_params(parts, masked, self.concentration_scale)

    def _full_params(self, n: int) -> GroupParams:
        """The all-masked mixtures (chi-independent; computed once), expanded to n rows."""
        if self._full is None:
            masked = torch.ones(1, self.n_latent, dtype=torch.bool, device=self.device)
            chi = torch.zeros(1, self.n_chi, device=self.device)
            self._full = self._forward(chi, masked)
        g = self.n_latent
        full = self._full
        rows = torch.arange(n, device=self.device).repeat_interleave(g)
        return GroupParams(
            rows,
            full.groups.repeat(n),
            full.logits.repeat(n, 1),
            full.loc.repeat(n, 1, 1),
            full.concentration.repeat(n, 1, 1),
        )

    def _block_params(self, chi: torch.Tensor, masked: torch.Tensor) -> GroupParams:
        """Mixtures of the masked groups given the rest, cached by the (masked) context."""
        columns = masked[:, self.group]
        context = torch.where(columns, 0.0, chi.to(torch.float32))
        for entry in self._cache:
            if (
                entry.masked.shape == masked.shape
                and torch.equal(entry.masked, masked)
                and torch.equal(entry.context, context)
            ):
                return entry.params
        params = self._forward(context, masked)
        self._cache = [_CacheEntry(context, masked.clone(), params), *self._cache[:1]]
        return params

    # ---------------------------------------------------------------- densities

    def log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        return self.layout.log_prob(chi, self._full_params(chi.shape[0]), latent)

    def block_log_prob(
        self, chi: torch.Tensor, block: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        masked = self.group_mask(self.check_block(block, chi.shape[0]))
        return self.layout.log_prob(chi, self._block_params(chi, masked), latent)

    def column_log_prob(self, x: torch.Tensor, column: int) -> torch.Tensor:
        column = _checks.check_int("column", column, low=0, high=self.n_chi)
        x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        full = self._full_params(1)
        g = int(self.group[column])
        slot = int(self.layout.column_slot[column])
        y = 2.0 * x if bool(self.layout.group_periodic[g, slot]) else x
        density = von_mises_log_density(
            y[..., None], full.loc[g, slot], full.concentration[g, slot]
        )
        return torch.logsumexp(full.logits[g] + density, dim=-1)

    def _posterior(self, chi: torch.Tensor) -> tuple[torch.Tensor, GroupParams]:
        params = self._full_params(chi.shape[0])
        joint = self.layout.component_log_prob(chi, params)
        return joint - torch.logsumexp(joint, dim=1, keepdim=True), params

    def latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, block: torch.Tensor | None = None
    ) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        n = chi.shape[0]
        posterior, params = self._posterior(chi)
        labels = self.layout.check_latent(latent, n, self.n_components)
        per = posterior.gather(1, labels[params.rows, params.groups].clamp_min(0)[:, None])
        per = per.squeeze(1)
        if block is not None:
            inside = self.group_mask(self.check_block(block, n))[params.rows, params.groups]
            per = torch.where(inside, per, 0.0)
        return self.layout.sum_rows(per, params.rows, n)

    # ---------------------------------------------------------------- sampling

    def sample_latent(self, chi: torch.Tensor, *, seed: int, offset: int = 0) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        posterior, params = self._posterior(chi)
        labels = self.layout.categorical(posterior, seed, offset, _TAG_LATENT)
        out = torch.empty(chi.shape[0], self.n_latent, dtype=torch.int64, device=self.device)
        out[params.rows, params.groups] = labels
        return out

    def sample(self, n: int, *, seed: int, offset: int = 0) -> ProposalDraw:
        n = _checks.check_int("n", n, low=0)
        params = self._full_params(n)
        base = torch.zeros(n, self.n_chi, dtype=self.dtype, device=self.device)
        chi, labels = self.layout.draw(base, params, seed, offset)
        latent = torch.empty(n, self.n_latent, dtype=torch.int64, device=self.device)
        latent[params.rows, params.groups] = labels
        return ProposalDraw(chi, self.layout.log_prob(chi, params, latent), latent)

    def sample_block(
        self, chi: torch.Tensor, block: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        chi = self.check_chi("chi", chi)
        n = chi.shape[0]
        masked = self.group_mask(self.check_block(block, n))
        params = self._block_params(chi, masked)
        out, labels = self.layout.draw(chi.to(self.dtype), params, seed, offset)
        latent = torch.full((n, self.n_latent), -1, dtype=torch.int64, device=self.device)
        latent[params.rows, params.groups] = labels
        return ProposalDraw(out, self.layout.log_prob(out, params, latent), latent)


def _slot_numbers(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """0, 1, ... within each run of equal consecutive group ids."""
    first = torch.zeros(n_groups, dtype=torch.int64)
    positions = torch.arange(group.shape[0])
    first = first.scatter_reduce(0, group, positions, reduce="amin", include_self=False)
    return positions - first[group]
