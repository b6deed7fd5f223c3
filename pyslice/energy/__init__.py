"""Batched all-atom energies equal to OpenMM's: parameters read from an OpenMM System (``tables``),
the torch reference of every term (``reference``), and ForceFieldEnergy (``forcefield``): full
energies and exact deltas for moved atoms, with compiled fast paths."""

from pyslice.energy.forcefield import ForceFieldEnergy
from pyslice.energy.tables import ONE_4PI_EPS0, TERMS, EnergyTables

__all__ = ["ONE_4PI_EPS0", "TERMS", "EnergyTables", "ForceFieldEnergy"]
