"""Learned proposals: the backbone-dependent rotamer library, the backbone-to-side-chain
transformer, and Energy Rank Alignment (ERA) to train generators from energies."""
