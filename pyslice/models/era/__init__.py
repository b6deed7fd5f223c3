"""Energy Rank Alignment (ERA): align a generator with Boltzmann statistics from energies alone
(DESIGN.md, formula 5).

- :mod:`~pyslice.models.era.loss`: :func:`era_loss` and :func:`independence_acceptance`;
- :mod:`~pyslice.models.era.policy`: the :class:`Policy` base class (what ERA trains, next to
  :class:`pyslice.proposals.Proposal`) and :class:`MixturePolicy`;
- :mod:`~pyslice.models.era.trainer`: :class:`ERATrainer`, :class:`ERALog`,
  :func:`sampler_contexts`.
"""

from pyslice.models.era.loss import era_loss, independence_acceptance
from pyslice.models.era.policy import MixturePolicy, Policy
from pyslice.models.era.trainer import ERALog, ERATrainer, sampler_contexts

__all__ = [
    "ERALog",
    "ERATrainer",
    "MixturePolicy",
    "Policy",
    "era_loss",
    "independence_acceptance",
    "sampler_contexts",
]
