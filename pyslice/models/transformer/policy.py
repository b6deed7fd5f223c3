"""The side-chain transformer as an ERA policy (:class:`~pyslice.models.era.Policy`): its block
conditionals, trainable, on one protein."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pyslice import _checks
from pyslice.models.era.policy import Policy
from pyslice.models.transformer.model import SideChainTransformer
from pyslice.models.transformer.proposal import (
    GroupLayout,
    GroupParams,
    TransformerProposal,
    expand_rows,
    group_params,
)
from pyslice.proposals import generator
from pyslice.structure.protein import Protein

__all__ = ["TransformerPolicy"]

_TAG_CONTEXT = 0x746378


class TransformerPolicy(Policy):
    """A trainable :class:`SideChainTransformer` on one protein, as a policy for
    :class:`~pyslice.models.era.ERATrainer` (ERA fine-tuning from energies).

    With ``block_sizes=None`` the policy is the all-masked model: whole side-chain sets drawn
    from backbone and sequence (an unconditional policy, ``sample(n, seed=...)``). With block
    sizes it is *conditional*, which is how the sampler uses the model: a context is a state
    ``x`` from ``contexts`` (e.g. chains of a random-walk run) plus a random block of residues
    (its size drawn from ``block_sizes``); the policy is q(x_block | x_rest). ERA then aligns,
    for every context, q with the Boltzmann conditional exp(-beta U(x_rest, x_block)), which is
    what makes independence block moves accepted. ``sample_grouped(n_groups, group_size,
    seed=...)`` gives ``(chi, masked)`` with ``masked: (n, G)`` the block of each row;
    ``log_prob(chi, masked)`` is exact and differentiable in the model's parameters.

    ``model`` itself is trained (wrap a copy to keep the original). It runs in eval mode (no
    dropout: ERA compares log-probabilities of draws, which dropout would make noisy).
    :meth:`proposal` gives the frozen :class:`TransformerProposal` of the current weights for
    the sampler. Choose the device with ``device=`` (``.to()`` would not move the index maps of
    its :class:`~pyslice.models.transformer.proposal.GroupLayout`, ``layout``).
    """

    def __init__(
        self,
        model: SideChainTransformer,
        protein: Protein,
        *,
        block_sizes: Sequence[int] | None = None,
        contexts: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, SideChainTransformer):
            raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
        self.layout = GroupLayout(protein, device)
        self.protein = protein
        self.model = model.to(self.layout.device, torch.float32).eval()
        self._batch = self.layout.token_batch()
        n_groups = self.layout.n_groups
        if block_sizes is None:
            if contexts is not None:
                raise ValueError("contexts: only used with block_sizes (conditional policies)")
            self.block_sizes = None
        else:
            sizes = [_checks.check_int("block_sizes", b, low=1) for b in block_sizes]
            if not sizes:
                raise ValueError("block_sizes must hold at least one size")
            self.block_sizes = [min(b, n_groups) for b in sizes]
            if contexts is None:
                raise ValueError("contexts: a conditional policy needs context states (m, n_chi)")
            contexts = self.layout.check_chi(
                "contexts", torch.as_tensor(contexts).to(self.layout.device)
            )
            if contexts.shape[0] == 0:
                raise ValueError("contexts must hold at least one state")
        self.register_buffer(
            "contexts", None if contexts is None else contexts.to(torch.float32).clone()
        )

    def train(self, mode: bool = True) -> TransformerPolicy:
        super().train(mode)
        self.model.eval()  # always: see the class docstring
        return self

    @property
    def conditional(self) -> bool:
        """Whether the policy draws blocks given contexts (else whole side-chain sets)."""
        return self.block_sizes is not None

    @property
    def n_chi(self) -> int:
        return self.layout.n_chi

    @property
    def n_groups(self) -> int:
        return self.layout.n_groups

    @property
    def group(self) -> torch.Tensor:
        """``(n_chi,)`` the group (residue) of each chi column."""
        return self.layout.group

    def proposal(self, **kwargs: Any) -> TransformerProposal:
        """The frozen :class:`TransformerProposal` of the current weights (``kwargs`` go to it)."""
        return TransformerProposal(self.model, self.protein, device=self.layout.device, **kwargs)

    def _params(self, chi: torch.Tensor, masked: torch.Tensor) -> GroupParams:
        static = self.model.encode_static(self._batch).expand(chi.shape[0])
        tokens, known, want = self.layout.inputs(chi, masked)
        return group_params([self.model.run(static, tokens, known, want)], masked)

    def _masked(self, masked: torch.Tensor | None, n: int) -> torch.Tensor:
        if masked is None:
            return torch.ones(n, self.n_groups, dtype=torch.bool, device=self.layout.device)
        if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
            raise TypeError("masked must be a bool tensor (n, n_groups)")
        if masked.shape != (n, self.n_groups):
            raise ValueError(
                f"masked must have shape ({n}, {self.n_groups}), got {tuple(masked.shape)}"
            )
        return masked

    def log_prob(self, chi: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) float64 log q(chi_masked | chi_rest) (all residues when ``masked`` is None),
        differentiable in the model's parameters."""
        chi = self.layout.check_chi("chi", chi)
        masked = self._masked(masked, chi.shape[0])
        # Rows that share their context and block (ERA's pairs) share one forward pass.
        context = torch.where(masked[:, self.layout.group], 0.0, chi.to(torch.float32))
        key = torch.cat([context, masked.to(torch.float32)], 1)
        unique, source = torch.unique(key, dim=0, return_inverse=True)
        if unique.shape[0] == key.shape[0]:
            params = self._params(chi, masked)
        else:
            unique_masked = unique[:, self.n_chi :] > 0.5
            params = expand_rows(
                self._params(unique[:, : self.n_chi], unique_masked), unique_masked, source
            )
        return self.layout.log_prob(chi, params)

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        """``n`` whole side-chain sets from the all-masked model (unconditional policies)."""
        if self.block_sizes is not None:
            raise ValueError("a conditional policy draws with sample_grouped")
        n = _checks.check_int("n", n, low=0)
        with torch.no_grad():
            params = self._params(
                torch.zeros(1, self.n_chi, device=self.layout.device), self._masked(None, 1)
            )
        chi, _ = self.layout.draw(
            torch.zeros(n, self.n_chi, dtype=torch.float32, device=self.layout.device),
            expand_rows(
                params,
                torch.ones(1, self.n_groups, dtype=torch.bool, device=self.layout.device),
                torch.zeros(n, dtype=torch.int64, device=self.layout.device),
            ),
            seed,
            0,
        )
        return chi

    def contexts_and_blocks(self, n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` contexts drawn from ``contexts`` with random blocks: (chi (n, n_chi), masked
        (n, G))."""
        device = self.layout.device
        if self.block_sizes is None:
            return torch.zeros(n, self.n_chi, device=device), self._masked(None, n)
        gen = generator(device, seed, _TAG_CONTEXT)
        pick = torch.randint(0, self.contexts.shape[0], (n,), generator=gen, device=device)
        sizes = torch.tensor(self.block_sizes, device=device)
        size = sizes[torch.randint(0, sizes.numel(), (n,), generator=gen, device=device)]
        keys = torch.rand(n, self.n_groups, generator=gen, device=device)
        rank = keys.argsort(1).argsort(1)
        return self.contexts[pick], rank < size[:, None]

    def sample_grouped(
        self, n_groups: int, group_size: int, *, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_groups`` contexts (random states and blocks), ``group_size`` independent draws of
        each block given its context: ``(chi (n_groups * group_size, n_chi), masked)``."""
        n_groups = _checks.check_int("n_groups", n_groups, low=1)
        group_size = _checks.check_int("group_size", group_size, low=1)
        context, masked = self.contexts_and_blocks(n_groups, seed=seed)
        with torch.no_grad():
            params = self._params(context, masked)
        chi, _ = self.layout.draw(
            context.to(torch.float32).repeat_interleave(group_size, 0),
            expand_rows(
                params,
                masked,
                torch.arange(n_groups, device=masked.device).repeat_interleave(group_size),
            ),
            seed,
            1,
        )
        return chi, masked.repeat_interleave(group_size, 0)
