"""Backbone-dependent rotamer library: von Mises mixtures per residue type and phi/psi bin, fitted
by EM from open data.

- :mod:`~pyslice.models.rotamers.library`: :class:`RotamerLibrary` and :class:`ResidueRotamers`
  (densities, the protein's proposal, files, the shipped library);
- :mod:`~pyslice.models.rotamers.fit`: the EM fit (:func:`fit_rotamer_mixture`, per-bin MAP-EM);
- :mod:`~pyslice.models.rotamers.data`: readers of the Top8000 files and of deposited structures.
"""

from pyslice.models.rotamers.fit import fit_rotamer_mixture
from pyslice.models.rotamers.library import ResidueRotamers, RotamerLibrary

__all__ = ["ResidueRotamers", "RotamerLibrary", "fit_rotamer_mixture"]
