"""The backbone-to-side-chain transformer (a masked conditional model of chi angles).

- :mod:`~pyslice.models.transformer.data`: tokens, :class:`ProteinRecord`, reading structures,
  energy-filtered sampler records;
- :mod:`~pyslice.models.transformer.model`: the network, :class:`SideChainTransformer` (its
  densities, save/load, the shipped model);
- :mod:`~pyslice.models.transformer.proposal`: :class:`TransformerProposal` for the sampler;
- :mod:`~pyslice.models.transformer.policy`: :class:`TransformerPolicy` for ERA;
- :mod:`~pyslice.models.transformer.train`: maximum-likelihood training (:func:`train_ml`,
  :func:`evaluate_nll`, the recipe :func:`train_transformer`);
- :mod:`~pyslice.models.transformer.align`: ERA alignment with one structure
  (:func:`align_transformer`).
"""

from pyslice.models.transformer.align import align_transformer
from pyslice.models.transformer.data import (
    ChiDataset,
    ProteinRecord,
    default_datasets,
    load_structures,
    record_from_protein,
    records_from_ensemble,
    sampled_records,
)
from pyslice.models.transformer.model import SideChainTransformer
from pyslice.models.transformer.policy import TransformerPolicy
from pyslice.models.transformer.proposal import TransformerProposal
from pyslice.models.transformer.train import evaluate_nll, train_ml, train_transformer

__all__ = [
    "ChiDataset",
    "ProteinRecord",
    "SideChainTransformer",
    "TransformerPolicy",
    "TransformerProposal",
    "align_transformer",
    "default_datasets",
    "evaluate_nll",
    "load_structures",
    "record_from_protein",
    "records_from_ensemble",
    "sampled_records",
    "train_ml",
    "train_transformer",
]
