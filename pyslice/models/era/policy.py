"""Policies: the trainable generators that ERA aligns with a Boltzmann distribution.

A :class:`Policy` is to :class:`~pyslice.models.era.ERATrainer` what a
:class:`~pyslice.proposals.Proposal` is to the sampler: a distribution over side-chain
configurations with an exact log-density, here differentiable in the policy's parameters. It
declares its kind by :attr:`Policy.conditional`:

- unconditional: ``sample(n, seed=...) -> chi (n, n_chi)`` draws whole configurations and
  ``log_prob(chi)`` scores them (e.g. :class:`MixturePolicy`);
- conditional (the context x of the method): ``sample_grouped(n_groups, group_size, seed=...) ->
  (chi, condition)`` draws ``n_groups`` runs of ``group_size`` rows that share a context, and
  ``log_prob(chi, condition)`` scores each row given its ``condition`` (e.g.
  :class:`~pyslice.models.transformer.TransformerPolicy`: a block of residues given the others).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from pyslice.proposals import MixtureProposal

__all__ = ["MixturePolicy", "Policy"]


class Policy(torch.nn.Module, ABC):
    """A trainable distribution over configurations ``chi: (n, n_chi)`` for ERA.

    Subclasses declare :attr:`conditional` and implement :meth:`log_prob` and the draw of their
    kind: :meth:`sample` (unconditional) or :meth:`sample_grouped` (conditional).
    :class:`~pyslice.models.era.ERATrainer` calls only these. Policies of configurations usually
    also offer ``proposal()``, the frozen :class:`~pyslice.proposals.Proposal` of the current
    parameters, for the sampler.
    """

    @property
    @abstractmethod
    def conditional(self) -> bool:
        """True: draws come in contexts (:meth:`sample_grouped`, ``log_prob(chi, condition)``);
        False: whole independent configurations (:meth:`sample`, ``log_prob(chi)``)."""

    @abstractmethod
    def log_prob(self, chi: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``(n,)`` float64 log pi(chi | condition), differentiable in the parameters."""

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        """``n`` independent configurations ``(n, n_chi)`` (unconditional policies)."""
        raise NotImplementedError(f"{type(self).__name__} draws with sample_grouped")

    def sample_grouped(
        self, n_groups: int, group_size: int, *, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chi (n_groups * group_size, n_chi), condition)``: ``n_groups`` consecutive runs of
        ``group_size`` draws, each run sharing one context (conditional policies)."""
        raise NotImplementedError(f"{type(self).__name__} draws with sample")


class MixturePolicy(Policy):
    """A trainable product of grouped von Mises mixtures (the learnable twin of
    :class:`~pyslice.proposals.MixtureProposal`): an unconditional policy.

    ``log_prob(chi)`` is differentiable in the parameters; ``proposal()`` gives the frozen
    MixtureProposal (for sampling and for MH); ``sample(n, seed=...)`` draws angles.
    """

    conditional = False

    def __init__(self, proposal: MixtureProposal) -> None:
        super().__init__()
        if not isinstance(proposal, MixtureProposal):
            raise TypeError(f"proposal must be a MixtureProposal, got {type(proposal).__name__}")
        self.register_buffer("group", proposal.group.clone())
        self.register_buffer("pi_periodic", proposal.pi_periodic.clone())
        self.logits = torch.nn.Parameter(proposal.logits.clone())
        self.loc = torch.nn.Parameter(proposal.loc.clone())
        # kappa = softplus(raw): positive and smooth; inverse softplus of the start values.
        kappa = proposal.concentration.clamp_min(1e-6)
        self.raw_concentration = torch.nn.Parameter(kappa + torch.log(-torch.expm1(-kappa)))
        self.dtype = proposal.dtype

    @property
    def concentration(self) -> torch.Tensor:
        return F.softplus(self.raw_concentration)

    def _mixture(self, *, detach: bool) -> MixtureProposal:
        params = (self.logits, self.loc, self.concentration)
        if detach:
            params = tuple(p.detach() for p in params)
        return MixtureProposal(self.group, *params, self.pi_periodic, dtype=self.dtype)

    def proposal(self) -> MixtureProposal:
        return self._mixture(detach=True)

    def log_prob(self, chi: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) float64 log q(chi), differentiable in the parameters."""
        if condition is not None:
            raise ValueError("condition: a MixturePolicy is unconditional (pass None)")
        # The proposal's grouped mixture density, built on the live (undetached) parameters.
        joint = self._mixture(detach=False).group_component_log_prob(chi)  # (n, G, K)
        return torch.logsumexp(joint, dim=2).sum(1)

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        return self.proposal().sample(n, seed=seed).chi
