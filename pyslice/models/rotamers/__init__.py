"""Backbone-dependent rotamer library: von Mises mixtures per residue type and phi/psi bin, fitted
by EM from open data."""

from pyslice.models.rotamers.library import ResidueRotamers, RotamerLibrary, fit_rotamer_mixture

__all__ = ["ResidueRotamers", "RotamerLibrary", "fit_rotamer_mixture"]
