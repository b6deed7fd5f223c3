"""pyslice.openmm: side-chain MCMC on an OpenMM Context, interleaved with molecular dynamics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

import pyslice.openmm as pom  # noqa: E402
from pyslice import ForceFieldEnergy, Protein, RandomWalk  # noqa: E402
from pyslice.openmm import SideChainMove, context_positions  # noqa: E402

SEQ = "AKFDEA"


@pytest.fixture(scope="module")
def peptide() -> Protein:
    return Protein.from_sequence(SEQ)


def make_system(protein: Protein, constraints=None) -> openmm.System:
    return app.ForceField("amber14-all.xml").createSystem(
        protein.topology, nonbondedMethod=app.NoCutoff, constraints=constraints
    )


def make_context(protein: Protein, system=None, integrator=None) -> openmm.Context:
    system = system if system is not None else make_system(protein)
    integrator = integrator if integrator is not None else openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(unit.Quantity(protein.positions.numpy(), unit.nanometer))
    return context


def sidechain_atoms(protein: Protein) -> np.ndarray:
    builder = protein.builder
    mask = np.zeros(protein.n_atoms, dtype=bool)
    for j in range(builder.n_chi):
        mask[list(builder.downstream_atoms(j))] = True
    return mask


def openmm_energy(context: openmm.Context) -> float:
    state = context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def pyslice_energy(protein: Protein, context: openmm.Context) -> float:
    energy = ForceFieldEnergy.from_system(protein, context.getSystem(), dtype=torch.float64)
    return float(energy(torch.from_numpy(context_positions(context))))


def test_module_is_pyslice_openmm_and_sees_real_openmm():
    import openmm as real

    assert pom.__name__ == "pyslice.openmm"
    assert pom.openmm is real
    assert sys.modules["openmm"] is real
    assert hasattr(real, "Context") and not hasattr(real, "SideChainMove")


def test_move_energy_backbone_and_side_chains(peptide):
    context = make_context(peptide)
    before = context_positions(context)
    move = SideChainMove(context, peptide, n_steps=30, temperature=300.0, seed=3)
    out = move.apply()
    after = context_positions(context)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert np.array_equal(out.numpy(), after)
    assert torch.equal(move.positions, out)

    # OpenMM's energy of the context = pyslice's (float64) of the same positions = the move's.
    e_openmm = openmm_energy(context)
    assert pyslice_energy(peptide, context) == pytest.approx(e_openmm, rel=1e-6)
    assert move.energy == pytest.approx(e_openmm, rel=1e-6)

    side = sidechain_atoms(peptide)
    assert np.array_equal(after[~side], before[~side])  # backbone and the rest: bit for bit
    assert np.abs(after[side] - before[side]).max() > 0.05  # the side chains moved
    assert set(move.acceptance) == {"random_walk_residue", "independence_1"}
    assert move.calls == 1


def test_interleaved_with_dynamics(peptide):
    integrator = openmm.LangevinMiddleIntegrator(
        310 * unit.kelvin, 5.0 / unit.picosecond, 0.0005 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(
        peptide.topology,
        make_system(peptide),
        integrator,
        openmm.Platform.getPlatformByName("Reference"),
    )
    simulation.context.setPositions(unit.Quantity(peptide.positions.numpy(), unit.nanometer))
    move = SideChainMove(simulation, n_steps=10, seed=1)  # topology and T from the simulation
    assert move.current_temperature() == pytest.approx(310.0)
    side = sidechain_atoms(peptide)
    for _ in range(3):
        simulation.step(10)
        before = context_positions(simulation.context)
        move()
        after = context_positions(simulation.context)
        assert np.array_equal(after[~side], before[~side])
        e = openmm_energy(simulation.context)
        assert np.isfinite(e)
        assert move.energy == pytest.approx(e, rel=1e-6)
    assert move.calls == 3
    simulation.step(10)
    assert np.isfinite(openmm_energy(simulation.context))


def test_numpy_torch_and_quantity_inputs(peptide):
    context = make_context(peptide)
    move = SideChainMove(context, peptide.topology, n_steps=5, temperature=300.0)
    start = peptide.positions.numpy()
    side = sidechain_atoms(peptide)
    for given in (start, torch.from_numpy(start), start.astype(np.float32), start.tolist()):
        out = move.apply(given)
        expected = np.asarray(given, dtype=np.float64)
        assert np.array_equal(out.numpy()[~side], expected[~side])
    out = move.apply(unit.Quantity(start * 10.0, unit.angstrom))
    assert np.allclose(out.numpy()[~side], start[~side], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"positions must have shape \(\d+, 3\)"):
        move.apply(start[:-1])
    with pytest.raises(ValueError, match="finite"):
        move.apply(np.full_like(start, np.nan))


def test_seeds_and_pick_lowest(peptide):
    a = SideChainMove(make_context(peptide), peptide, n_steps=10, temperature=300.0, seed=5)
    b = SideChainMove(make_context(peptide), peptide, n_steps=10, temperature=300.0, seed=5)
    first = a()
    assert torch.equal(first, b())  # same seed, same start: same result
    second = a(peptide.positions)  # the next call uses its own stream
    assert not torch.equal(first, second)

    lowest = SideChainMove(
        make_context(peptide), peptide, n_chains=4, n_steps=10, temperature=300.0, pick="lowest"
    )
    lowest()
    final = lowest.ensemble.energy[-1]
    assert lowest.energy == pytest.approx(float(final.min()), abs=1e-6)
    assert lowest.energy == pytest.approx(openmm_energy(lowest.context), rel=1e-6)


def test_custom_moves_and_constraints(peptide):
    # HBonds constraints survive chi rotations; the energy stays the context's.
    system = make_system(peptide, constraints=app.HBonds)
    context = make_context(peptide, system)
    move = SideChainMove(
        context, peptide, n_steps=20, temperature=300.0, moves=[RandomWalk("chi", step_size=1.0)]
    )
    move()
    xyz = context_positions(context)
    for c in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(c)
        assert np.linalg.norm(xyz[i] - xyz[j]) == pytest.approx(d.value_in_unit(unit.nanometer))
    assert move.energy == pytest.approx(openmm_energy(context), rel=1e-6)
    assert set(move.acceptance) == {"random_walk_chi"}


def test_bad_inputs(peptide):
    context = make_context(peptide)
    with pytest.raises(TypeError, match="openmm.Context"):
        SideChainMove("context", peptide, temperature=300.0)
    with pytest.raises(TypeError, match="openmm.Context"):
        SideChainMove(make_system(peptide), peptide, temperature=300.0)
    with pytest.raises(TypeError, match="protein must be"):
        SideChainMove(context, "AKFDEA", temperature=300.0)
    with pytest.raises(ValueError, match="protein is required"):
        SideChainMove(context, temperature=300.0)
    with pytest.raises(ValueError, match="temperature is required.*VerletIntegrator"):
        SideChainMove(context, peptide)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SideChainMove(context, peptide, temperature=-1.0)
    with pytest.raises(ValueError, match="same atoms"):
        SideChainMove(context, Protein.from_sequence("AKA"), temperature=300.0)
    with pytest.raises(ValueError, match="pick"):
        SideChainMove(context, peptide, temperature=300.0, pick="best")
    with pytest.raises(ValueError, match="no movable chi"):
        SideChainMove(context, peptide, temperature=300.0, movable=[0, 5])


def test_unsupported_systems_surface_the_reason(peptide):
    system = make_system(peptide)
    restraint = openmm.CustomExternalForce("k*((x-x0)^2)")
    restraint.addGlobalParameter("k", 1.0)
    restraint.addPerParticleParameter("x0")
    restraint.addParticle(0, [0.0])
    system.addForce(restraint)
    with pytest.raises(ValueError, match="CustomExternalForce"):
        SideChainMove(make_context(peptide, system), peptide, temperature=300.0)

    periodic = make_system(peptide)
    periodic.setDefaultPeriodicBoxVectors(
        openmm.Vec3(4, 0, 0), openmm.Vec3(0, 4, 0), openmm.Vec3(0, 0, 4)
    )
    periodic.getForce(
        [type(f).__name__ for f in periodic.getForces()].index("NonbondedForce")
    ).setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    with pytest.raises(ValueError, match="periodic"):
        SideChainMove(make_context(peptide, periodic), peptide, temperature=300.0)

    # A constraint that a chi rotation would break (LYS CA-CD: chi2 turns CD about CB-CG).
    cons = make_system(peptide)
    lys = list(peptide.topology.residues())[1]
    index = {atom.name: atom.index for atom in lys.atoms()}
    cons.addConstraint(index["CA"], index["CD"], 0.25)
    with pytest.raises(
        ValueError, match="constraint .* CA of chain A residue 2 LYS .* CD of chain A residue 2 LYS"
    ):
        SideChainMove(make_context(peptide, cons), peptide, temperature=300.0)
