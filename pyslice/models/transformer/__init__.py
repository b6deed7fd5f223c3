"""The backbone-to-side-chain transformer: data, model, proposal and training."""

from pyslice.models.transformer.model import (
    ChiDataset,
    ProteinRecord,
    SideChainTransformer,
    TransformerPolicy,
    TransformerProposal,
    default_datasets,
    evaluate_nll,
    load_structures,
    record_from_protein,
    records_from_ensemble,
    train_ml,
)

__all__ = [
    "ChiDataset",
    "ProteinRecord",
    "SideChainTransformer",
    "TransformerPolicy",
    "TransformerProposal",
    "default_datasets",
    "evaluate_nll",
    "load_structures",
    "record_from_protein",
    "records_from_ensemble",
    "train_ml",
]
