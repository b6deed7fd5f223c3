"""OpenMM interoperability: pyslice side-chain moves on a running OpenMM simulation.

:class:`SideChainMove` runs pyslice's Metropolis-Hastings side-chain sampler on the current state of
an ``openmm.Context`` and writes the result back into it, so molecular dynamics (which moves
everything a little) and side-chain sampling (which jumps between rotamers) interleave::

    simulation = openmm.app.Simulation(topology, system, openmm.LangevinMiddleIntegrator(...))
    move = pyslice.openmm.SideChainMove(simulation, n_steps=200)
    for _ in range(100):
        simulation.step(500)
        move()                       # side-chain MCMC on the current backbone

The energy is the context's own: ``ForceFieldEnergy.from_system(protein, context.getSystem())``, so
the side chains are sampled from exp(-U/kT) of the very force field the dynamics integrates. Each
call is an exact MCMC transition (every move leaves exp(-U/kT) invariant and the chain's final
state is written back), and the velocities are left as they are: in the canonical ensemble the
momenta are independent of the positions, so a position-only Metropolis move preserves it. (Atoms
that jumped keep their old velocities; a thermostatted integrator re-equilibrates them.)

Only side-chain atoms (those the chi rotations move, hydrogens included) change; the backbone and
every other atom are written back bit for bit as read. What is supported is what
:class:`~pyslice.ForceFieldEnergy` supports: non-periodic systems (NoCutoff or CutoffNonPeriodic)
with HarmonicBond, HarmonicAngle, PeriodicTorsion and Nonbonded forces (plus CMMotionRemover). A
periodic system, a barostat, implicit solvent, CMAP, restraints (Custom*Force) or virtual sites are
a ValueError. Constraints are fine (a chi rotation keeps every bond length and every H-X-H angle),
and a constraint that a chi rotation would break is a ValueError naming it.

This module is ``pyslice.openmm``; inside it ``import openmm`` is the real OpenMM (absolute
imports), but never run a file of the ``pyslice`` folder as a script, which would put the folder
first on ``sys.path``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import openmm
import torch
from openmm import app, unit

from pyslice import _checks
from pyslice.energy.forcefield import ForceFieldEnergy
from pyslice.geometry.angles import wrap_angle
from pyslice.mcmc.moves import Move
from pyslice.mcmc.sampler import Sampler
from pyslice.proposals import derive_seed
from pyslice.structure.protein import Protein

__all__ = ["SideChainMove", "context_positions", "context_temperature"]

_CALL = 0x63616C6C  # "call": the per-call seed stream


def context_positions(context: openmm.Context) -> np.ndarray:
    """``(N, 3) float64`` positions of ``context`` in nm (a fresh numpy array)."""
    state = context.getState(getPositions=True)
    return np.array(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), np.float64)


def context_temperature(context: openmm.Context) -> float | None:
    """The temperature (K) the context's dynamics runs at: its integrator's (a CompoundIntegrator's
    current one), else an AndersenThermostat's; None when neither sets one (e.g. Verlet)."""
    integrator = context.getIntegrator()
    if isinstance(integrator, openmm.CompoundIntegrator):
        integrator = integrator.getIntegrator(integrator.getCurrentIntegrator())
    if hasattr(integrator, "getTemperature"):
        return float(integrator.getTemperature().value_in_unit(unit.kelvin))
    for force in context.getSystem().getForces():
        if isinstance(force, openmm.AndersenThermostat):
            return float(context.getParameter(openmm.AndersenThermostat.Temperature()))
    return None


class SideChainMove:
    """Side-chain MCMC on an OpenMM context's current state, written back into the context.

    Args:
        context: an ``openmm.Context``, or an ``openmm.app.Simulation`` (its context and topology).
        protein: a :class:`~pyslice.Protein` or an ``openmm.app.Topology`` describing the
            context's particles in order (hydrogens included); its positions are ignored (the
            context's are used). May be None only when ``context`` is a Simulation.
        n_chains: parallel chains per call (>= 1); all start from the context's state.
        n_steps: Metropolis-Hastings steps per call (>= 1).
        temperature: kelvin; None (default) reads it from the context at every call (the
            integrator's temperature, or an AndersenThermostat's); a ValueError at construction if
            the context has none (e.g. a VerletIntegrator) and none is given.
        moves: pyslice moves (default: the Sampler's, a residue random walk and a one-residue
            uniform independence move). They are re-bound at every call, so random-walk step sizes
            start from their initial values each time (no adaptation: every call is exact).
        seed: base seed; call k uses ``derive_seed(seed, k)``, so calls differ and reruns repeat.
        energy: a :class:`~pyslice.ForceFieldEnergy` of the context's system (default:
            ``ForceFieldEnergy.from_system(protein, context.getSystem(), dtype=torch.float64)``,
            built once).
        movable: residue indices that may move (default: the protein's movable residues, every
            standard amino acid for a topology).
        pick: which chain's final state is written back: ``"first"`` (chain 0, default: an exact
            MCMC transition) or ``"lowest"`` (the lowest-energy chain: a greedy repacking step that
            biases the ensemble towards low energies; not Boltzmann sampling).
        device: where the sampler runs (default: the energy's device, CPU).

    Calling the move (``move()`` or ``move.apply()``) returns the new ``(N, 3) float64`` positions
    as a torch tensor (``.numpy()`` gives numpy) and records :attr:`positions`, :attr:`energy`
    (pyslice's potential energy of them, kJ/mol), :attr:`acceptance` and :attr:`ensemble`.
    """

    def __init__(
        self,
        context: Any,
        protein: Any = None,
        *,
        n_chains: int = 1,
        n_steps: int = 100,
        temperature: float | None = None,
        moves: Sequence[Move] | None = None,
        seed: int = 0,
        energy: ForceFieldEnergy | None = None,
        movable: Sequence[int] | None = None,
        pick: Literal["first", "lowest"] = "first",
        device: torch.device | str | None = None,
    ) -> None:
        topology = None
        if isinstance(context, app.Simulation):
            topology = context.topology
            context = context.context
        if not isinstance(context, openmm.Context):
            raise TypeError(
                "context must be an openmm.Context or an openmm.app.Simulation, "
                f"got {type(context).__name__}"
            )
        self.context = context
        system = context.getSystem()
        n = system.getNumParticles()

        if isinstance(protein, Protein):
            topology = protein.topology
            if movable is None:
                movable = protein.movable
        elif isinstance(protein, app.Topology):
            topology = protein
        elif protein is not None:
            raise TypeError(
                "protein must be a pyslice.Protein, an openmm.app.Topology or None, "
                f"got {type(protein).__name__}"
            )
        if topology is None:
            raise ValueError(
                "protein is required with an openmm.Context (it has no topology): pass the "
                "pyslice.Protein or openmm.app.Topology of its particles, or a Simulation"
            )
        if topology.getNumAtoms() != n:
            raise ValueError(
                f"the topology has {topology.getNumAtoms()} atoms but the context's System has "
                f"{n} particles; they must describe the same atoms in the same order"
            )
        self.topology = topology
        self.movable = None if movable is None else tuple(int(m) for m in movable)
        _check_system(system)

        self.n_chains = _checks.check_int("n_chains", n_chains, low=1)
        self.n_steps = _checks.check_int("n_steps", n_steps, low=1)
        self.seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
        if pick not in ("first", "lowest"):
            raise ValueError(f"pick must be 'first' or 'lowest', got {pick!r}")
        self.pick = pick
        if temperature is not None:
            temperature = _checks.check_float("temperature", temperature, positive=True)
        elif context_temperature(context) is None:
            raise ValueError(
                f"temperature is required: the context's integrator "
                f"({type(context.getIntegrator()).__name__}) has no temperature"
            )
        self.temperature = temperature
        self.moves = None if moves is None else list(moves)

        protein0 = self._protein(context_positions(context))
        if protein0.n_chi == 0:
            raise ValueError("the protein has no movable chi angles: nothing to sample")
        _check_constraints(system, protein0)
        if energy is None:
            energy = ForceFieldEnergy.from_system(
                protein0, system, dtype=torch.float64, device=device
            )
        elif not isinstance(energy, ForceFieldEnergy):
            raise TypeError(
                f"energy must be a pyslice.ForceFieldEnergy, got {type(energy).__name__}"
            )
        elif energy.n_atoms != n:
            raise ValueError(f"energy has {energy.n_atoms} atoms but the System has {n} particles")
        self.force_field = energy
        self.device = device

        self.calls = 0
        self.positions: torch.Tensor | None = None
        self.energy: float | None = None
        self.acceptance: dict[str, float] = {}
        self.ensemble = None

    def __repr__(self) -> str:
        t = "context" if self.temperature is None else f"{self.temperature} K"
        return (
            f"SideChainMove(atoms={self.topology.getNumAtoms()}, chains={self.n_chains}, "
            f"steps={self.n_steps}, T={t}, pick={self.pick!r}, calls={self.calls})"
        )

    def _protein(self, positions: np.ndarray) -> Protein:
        return Protein(self.topology, positions, movable=self.movable)

    def current_temperature(self) -> float:
        """The temperature (K) the next call samples at."""
        if self.temperature is not None:
            return self.temperature
        t = context_temperature(self.context)
        if t is None or not t > 0 or not math.isfinite(t):
            raise ValueError(f"the context's temperature must be > 0 K, got {t}")
        return t

    def apply(self, positions: object = None) -> torch.Tensor:
        """Sample the side chains and write the result into the context.

        positions: optional ``(N, 3)`` start positions in nm (numpy, torch or Quantity), set into
            the context first; default the context's current positions.
        Returns the new ``(N, 3) float64`` positions (torch, CPU), as now in the context.
        """
        n = self.topology.getNumAtoms()
        if positions is not None:
            start = _checks.positions_tensor("positions", positions, n).numpy()
            self.context.setPositions(unit.Quantity(start, unit.nanometer))
        start = context_positions(self.context)  # as the platform stores them
        protein = self._protein(start)
        sampler = Sampler(
            protein,
            energy=self.force_field,
            temperature=self.current_temperature(),
            n_chains=self.n_chains,
            moves=self.moves,
            seed=derive_seed(self.seed, _CALL, self.calls),
            device=self.device,
        )
        ensemble = sampler.run(self.n_steps, progress=False)
        self.calls += 1
        energies = sampler.energy
        k = int(torch.argmin(energies)) if self.pick == "lowest" else 0
        chi = sampler.chi[k].detach().to("cpu", torch.float64)

        # Rebuild only residues whose chis changed; everything else stays bit for bit.
        builder = protein.builder
        reference = builder.chi_angles()
        changed = wrap_angle(chi - reference)
        changed = changed.abs() > 1e-12
        new = start.copy()
        if bool(changed.any()):
            built = protein.build(chi[None])[0].numpy()
            residues = builder.chi_index[changed, 0].unique().tolist()
            for column in range(builder.n_chi):
                if int(builder.chi_index[column, 0]) in residues:
                    atoms = list(builder.downstream_atoms(column))
                    new[atoms] = built[atoms]
        self.context.setPositions(unit.Quantity(new, unit.nanometer))

        self.positions = torch.from_numpy(new.copy())
        self.energy = float(energies[k])
        self.acceptance = dict(ensemble.acceptance) if ensemble is not None else {}
        self.ensemble = ensemble
        return torch.from_numpy(new)

    __call__ = apply


def _check_system(system: openmm.System) -> None:
    if system.usesPeriodicBoundaryConditions():
        raise ValueError(
            "the context's System is periodic; SideChainMove (pyslice's ForceFieldEnergy) supports "
            "non-periodic systems only: NoCutoff or CutoffNonPeriodic"
        )
    for i in range(system.getNumParticles()):
        if system.isVirtualSite(i):
            raise ValueError(
                f"the context's System has a virtual site (particle {i}); SideChainMove does not "
                "support virtual sites"
            )


def _check_constraints(system: openmm.System, protein: Protein) -> None:
    """Every constraint must survive every chi rotation: both atoms rotate together, or the one
    that stays lies on the rotation axis."""
    if system.getNumConstraints() == 0:
        return
    builder = protein.builder
    moved_by: dict[int, set[int]] = {}  # atom -> the chi columns that rotate it
    for column in range(builder.n_chi):
        for atom in builder.downstream_atoms(column):
            moved_by.setdefault(atom, set()).add(column)
    atoms = list(protein.topology.atoms())
    for c in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(c)
        # Columns that rotate one atom and not the other: the other must be on their axis.
        for column in moved_by.get(i, set()) ^ moved_by.get(j, set()):
            still = j if column in moved_by.get(i, set()) else i
            if still not in builder.chi_atoms[column, 1:3].tolist():
                raise ValueError(
                    f"constraint {c} between {_checks.describe_atom(atoms[i])} and "
                    f"{_checks.describe_atom(atoms[j])} would be broken by a side-chain "
                    "rotation; remove it (e.g. constraints=HBonds keeps only rigid ones)"
                )
