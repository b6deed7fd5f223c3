"""Batched all-atom energies equal to OpenMM's: parameters read from an OpenMM System, full
energies and exact deltas for moved atoms, with a torch reference and compiled fast paths."""

from pyslice.energy.forcefield import ONE_4PI_EPS0, TERMS, EnergyTables, ForceFieldEnergy

__all__ = ["ONE_4PI_EPS0", "TERMS", "EnergyTables", "ForceFieldEnergy"]
