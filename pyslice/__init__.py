"""pyslice: exact Boltzmann sampling of protein side-chain ensembles at scale.

Importing pyslice never requires the compiled module: where ``pyslice._C`` failed to build or load,
the failure is kept and raised, with build information, when a compiled path is first needed
(``python -m pyslice info`` shows what is usable and why not).
"""

import os

# OpenMP threads that spin after a parallel region steal the core from the thread that goes on
# with the step: a sampler step alternates short compiled OpenMP regions with Python and torch
# work, and on a 2-core machine with other load it ran 5x slower spinning (125 ms vs 26 ms per
# step, 256 chains, the built-in peptide). Passive waiting is set here, before torch and
# pyslice._C load their OpenMP runtime; a value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pyslice._version import __version__  # noqa: E402
from pyslice.backends import BackendUnavailable
from pyslice.distributions import FitResult, VonMises, VonMisesMixture
from pyslice.energy import ForceFieldEnergy
from pyslice.geometry import SideChainBuilder
from pyslice.mcmc import (
    ChainState,
    ChiTarget,
    Ensemble,
    FunctionTarget,
    Independence,
    Lifted,
    Move,
    ProteinTarget,
    RandomWalk,
    Sampler,
    metropolis_step,
)
from pyslice.metrics import evaluate
from pyslice.models.era import ERATrainer
from pyslice.models.rotamers import RotamerLibrary
from pyslice.models.transformer import SideChainTransformer, TransformerPolicy, TransformerProposal
from pyslice.proposals import MixtureProposal, Proposal, UniformProposal
from pyslice.structure import Protein

__all__ = [
    "BackendUnavailable",
    "ChainState",
    "ChiTarget",
    "ERATrainer",
    "Ensemble",
    "FitResult",
    "ForceFieldEnergy",
    "FunctionTarget",
    "Independence",
    "Lifted",
    "MixtureProposal",
    "Move",
    "Protein",
    "ProteinTarget",
    "Proposal",
    "RandomWalk",
    "Sampler",
    "RotamerLibrary",
    "SideChainBuilder",
    "SideChainTransformer",
    "TransformerPolicy",
    "TransformerProposal",
    "UniformProposal",
    "VonMises",
    "VonMisesMixture",
    "__version__",
    "evaluate",
    "metropolis_step",
]
