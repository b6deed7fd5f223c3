"""Parallel MCMC: the fused Metropolis-Hastings step, moves, targets, the Sampler, the Ensemble it
returns, and convergence diagnostics."""

from pyslice.mcmc.ensemble import Ensemble
from pyslice.mcmc.moves import Candidate, Independence, Lifted, Move, MoveContext, RandomWalk
from pyslice.mcmc.replicas import TemperatureLadder, geometric_ladder
from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K, Sampler, SamplingInterrupted
from pyslice.mcmc.step import ChainState, metropolis_step
from pyslice.mcmc.targets import ChiTarget, FunctionTarget, ProteinTarget

__all__ = [
    "BOLTZMANN_KJ_PER_MOL_K",
    "Candidate",
    "ChainState",
    "ChiTarget",
    "Ensemble",
    "FunctionTarget",
    "Independence",
    "Lifted",
    "Move",
    "MoveContext",
    "ProteinTarget",
    "RandomWalk",
    "Sampler",
    "SamplingInterrupted",
    "TemperatureLadder",
    "geometric_ladder",
    "metropolis_step",
]
