"""Energy Rank Alignment (ERA): the loss, policies and the trainer (DESIGN.md, formula 5)."""

from pyslice.models.era.trainer import (
    ERALog,
    ERATrainer,
    MixturePolicy,
    era_loss,
    independence_acceptance,
    sampler_contexts,
)

__all__ = [
    "ERALog",
    "ERATrainer",
    "MixturePolicy",
    "era_loss",
    "independence_acceptance",
    "sampler_contexts",
]
