"""Learned proposals and how they are trained.

- :mod:`pyslice.models.rotamers`: the backbone-dependent rotamer library (library | fit | data);
- :mod:`pyslice.models.transformer`: the backbone-to-side-chain transformer (data | model |
  proposal | policy | train | align);
- :mod:`pyslice.models.era`: Energy Rank Alignment, training generators from energies (loss |
  policy | trainer).

Dependencies run one way: the transformer uses the rotamer library's data rules and ERA's
:class:`~pyslice.models.era.Policy`; ERA knows no particular model.
"""
