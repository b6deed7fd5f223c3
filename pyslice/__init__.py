"""pyslice: exact Boltzmann sampling of protein side-chain ensembles at scale.

Importing pyslice never requires the compiled module: where ``pyslice._C`` failed to build or load,
the failure is kept and raised, with build information, when a compiled path is first needed
(``python -m pyslice info`` shows what is usable and why not).
"""

from pyslice.backends import BackendUnavailable
from pyslice.distributions import FitResult, VonMises, VonMisesMixture
from pyslice.energy import ForceFieldEnergy
from pyslice.ensemble import Ensemble
from pyslice.era import ERATrainer
from pyslice.geometry import SideChainBuilder
from pyslice.mcmc import ChainState, metropolis_step
from pyslice.metrics import evaluate
from pyslice.moves import Independence, Lifted, Move, RandomWalk
from pyslice.proposals import MixtureProposal, Proposal, UniformProposal
from pyslice.rotamers import RotamerLibrary
from pyslice.sampler import Sampler
from pyslice.structure import Protein
from pyslice.targets import ChiTarget, FunctionTarget, ProteinTarget
from pyslice.transformer import SideChainTransformer, TransformerPolicy, TransformerProposal

__version__ = "0.1.0"

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
