"""pyslice: exact Boltzmann sampling of protein side-chain ensembles at scale.

Importing pyslice never requires the compiled module: where ``pyslice._C`` failed to build or load,
the failure is kept and raised, with build information, when a compiled path is first needed
(``python -m pyslice info`` shows what is usable and why not).
"""

from pyslice.backends import BackendUnavailable
from pyslice.distributions import FitResult, VonMises, VonMisesMixture
from pyslice.energy import ForceFieldEnergy
from pyslice.geometry import SideChainBuilder
from pyslice.mcmc import ChainState, metropolis_step
from pyslice.structure import Protein

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ChainState",
    "FitResult",
    "ForceFieldEnergy",
    "Protein",
    "SideChainBuilder",
    "VonMises",
    "VonMisesMixture",
    "__version__",
    "metropolis_step",
]
