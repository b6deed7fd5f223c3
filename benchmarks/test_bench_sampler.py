"""Sampler throughput on bpti: pyslice's parallel chains against the reference approach.

The reference approach is a naive Metropolis sampler in Python around ONE OpenMM Context (the same
System pyslice evaluates: amber14-all, NoCutoff, no constraints, CPU platform). For every
chain-step it does what such a sampler does: propose a one-residue random walk in numpy (all chi of
one residue picked uniformly, each + N(0, 0.5^2) rad), build the proposed conformation (pyslice's
one-conformation builder, so the baseline is not slowed by a slow builder), ``setPositions``,
``getState(getEnergy=True)``, accept or reject in numpy.

pyslice runs the same move (``RandomWalk("residue")``, step 0.5 rad, no adaptation) on B chains at
once through ``Sampler.run`` (build of the proposals, energy delta over the moved residue's atoms,
fused Metropolis step, recording every draw). ``refresh_every=None``: no periodic full
re-evaluation inside the timed runs; its cost (one full energy of every chain, by default every
1000 steps) is measured once and stored in ``extra_info`` as ``refresh_s``.

Before timing, both are checked against each other: for the same conformations pyslice's energies
equal OpenMM's within 1e-5 relative, and its energy changes of proposed moves equal OpenMM's
within 0.01 kJ/mol (0.004 kT at 300 K) + 1e-5 relative (OpenMM's CPU platform computes
in single precision: a clash of 3e4 kJ/mol differs by a few 0.01 kJ/mol).

Units: chain-steps per second (one proposal + decision for one chain) and residue-moves per second
(residues moved per chain-step times chain-steps: the same number here, one residue per step).
The baseline's rate does not depend on B; it is timed in every group so that each group holds its
own ratio. ``load_avg_1m`` records the machine's load when each test started: with more runnable
processes than cores, every small torch op of the sampler waits for a descheduled OpenMP thread
(about a scheduler slice each) and the sampler slows several-fold while the OpenMM loop (fewer,
larger calls) slows far less, so compare ratios taken on a quiet machine.
"""

from __future__ import annotations

import functools
import math
import os
import time

import numpy as np
import pytest
import torch
from bench_common import DEVICE, size, sync

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

import pyslice  # noqa: E402
from pyslice import backends  # noqa: E402
from pyslice._data import data_dir  # noqa: E402
from pyslice.energy.forcefield import ForceFieldEnergy  # noqa: E402
from pyslice.mcmc.moves import RandomWalk  # noqa: E402
from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K  # noqa: E402
from pyslice.mcmc.targets import ProteinTarget  # noqa: E402

CHAINS = [size(1024, 8), size(4096, 16)]
# per timed run(): steps = this / chains (gpu: 50 steps of 4096 chains, 200 of 1024)
SAMPLER_CHAIN_STEPS = size(32768, 16, gpu=204_800)
BASELINE_CHAIN_STEPS = size(300, 4)
STEP_SIZE = 0.5
TEMPERATURE = 300.0
BETA = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * TEMPERATURE)
CHECK_CHAINS = size(8, 4)
TOTAL_RTOL = 1e-5
DELTA_ATOL, DELTA_RTOL = 0.01, 1e-5
PI = np.float32(math.pi)


@functools.cache
def _setup():
    root = data_dir()
    path = None if root is None else root / "structures" / "bpti.pdb"
    if path is None or not path.is_file():
        pytest.skip("shared data not found: bpti.pdb (set PYSLICE_DATA to the data folder)")
    protein = pyslice.Protein.from_pdb(path)
    # The System that ForceFieldEnergy(protein) builds, shared by both contestants.
    system = app.ForceField(*protein.forcefield).createSystem(
        protein.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
    )
    energy = ForceFieldEnergy.from_system(protein, system, device=DEVICE)
    return protein, context, energy


def _openmm_energy(context, positions: np.ndarray) -> float:
    context.setPositions(positions)
    state = context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _openmm_energies(context, positions: torch.Tensor) -> np.ndarray:
    return np.array([_openmm_energy(context, x) for x in positions.cpu().double().numpy()])


def _sampler(n_chains: int) -> pyslice.Sampler:
    protein, _, energy = _setup()
    move = RandomWalk("residue", step_size=STEP_SIZE, adapt=False)
    return pyslice.Sampler(protein, energy=energy, n_chains=n_chains, moves=[move],
                           temperature=TEMPERATURE, seed=0, refresh_every=None)  # fmt: skip


class OpenMMLoop:
    """The reference approach: one chain, one OpenMM Context, proposals and decisions in numpy."""

    def __init__(self, protein, context, group: np.ndarray, seed: int = 0) -> None:
        self.protein, self.context = protein, context
        self.columns = [np.flatnonzero(group == g) for g in range(int(group.max()) + 1)]
        self.rng = np.random.default_rng(seed)
        self.chi = protein.chi_angles().numpy().astype(np.float32)
        self.energy = _openmm_energy(context, self._build(self.chi))
        self.proposed = self.accepted = 0

    def _build(self, chi: np.ndarray) -> np.ndarray:
        return self.protein.build(torch.from_numpy(chi)[None])[0].double().numpy()

    def run(self, n_steps: int) -> None:
        rng = self.rng
        for _ in range(n_steps):
            cols = self.columns[rng.integers(len(self.columns))]
            chi = self.chi.copy()
            step = (STEP_SIZE * rng.standard_normal(len(cols))).astype(np.float32)
            chi[cols] = np.remainder(chi[cols] + step + PI, 2 * PI) - PI  # to [-pi, pi)
            energy = _openmm_energy(self.context, self._build(chi))
            self.proposed += 1
            if math.log(rng.random()) < -BETA * (energy - self.energy):
                self.chi, self.energy = chi, energy
                self.accepted += 1


def _check_sampler(sampler: pyslice.Sampler, context) -> None:
    """pyslice's energies and energy changes equal OpenMM's on the sampler's own chains."""
    sampler.run(2, progress=False)
    k = min(CHECK_CHAINS, sampler.n_chains)
    chi, energy = sampler.chi[:k], sampler.energy[:k].cpu().numpy()
    target = sampler.target
    positions = target.positions(chi)
    expected = _openmm_energies(context, positions)
    np.testing.assert_allclose(energy, expected, rtol=TOTAL_RTOL)
    candidate = sampler.moves[0].propose(chi, key=12345)
    energy_new, positions_new = target.energy_new(
        positions, sampler.energy[:k], candidate.chi, candidate.groups
    )
    got = energy_new.cpu().numpy() - energy
    expected_delta = _openmm_energies(context, positions_new) - expected
    np.testing.assert_allclose(got, expected_delta, rtol=DELTA_RTOL, atol=DELTA_ATOL)


def _check_baseline(loop: OpenMMLoop, energy: ForceFieldEnergy) -> None:
    """The loop's energies (OpenMM's) equal pyslice's for the conformations it visits."""
    for _ in range(3):
        loop.run(2)
        x = torch.from_numpy(loop._build(loop.chi)).float()[None].to(DEVICE)
        np.testing.assert_allclose(energy(x).cpu().numpy(), [loop.energy], rtol=TOTAL_RTOL)


@pytest.mark.parametrize("n_chains", CHAINS)
def test_sampler_pyslice(benchmark, n_chains: int) -> None:
    _, context, energy = _setup()
    sampler = _sampler(n_chains)
    _check_sampler(sampler, context)
    steps = max(1, SAMPLER_CHAIN_STEPS // n_chains)
    start = time.perf_counter()
    sampler._refresh_energy()  # what refresh_every costs, once per refresh
    refresh_s = time.perf_counter() - start
    impl = backends.select("energy_delta", energy.device, energy.dtype, energy.backend)
    benchmark.group = f"sampler bpti random-walk chains={n_chains}"
    benchmark.extra_info.update(device=DEVICE, backend=impl.backend, chains=n_chains,
                                steps_per_round=steps, n_atoms=energy.n_atoms,
                                n_chi=sampler.target.n_chi, residues=sampler.target.n_groups,
                                refresh_s=refresh_s, load_avg_1m=os.getloadavg()[0],
                                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))  # fmt: skip

    def run():
        out = sampler.run(steps, progress=False)
        sync()
        return out

    ensemble = benchmark.pedantic(run, rounds=size(5, 1), iterations=1, warmup_rounds=size(1, 0))
    benchmark.extra_info["acceptance"] = ensemble.acceptance["random_walk_residue"]
    if benchmark.stats is not None:  # None under --benchmark-disable
        rate = n_chains * steps / benchmark.stats.stats.median
        benchmark.extra_info["chain_steps_per_s"] = rate
        benchmark.extra_info["residue_moves_per_s"] = rate  # one residue per chain-step
        benchmark.extra_info["ms_per_step"] = 1e3 * benchmark.stats.stats.median / steps


@pytest.mark.parametrize("n_chains", CHAINS)
def test_sampler_openmm_loop(benchmark, n_chains: int) -> None:
    protein, context, energy = _setup()
    group = ProteinTarget(protein, energy).group.cpu().numpy()  # the residue of each chi
    loop = OpenMMLoop(protein, context, group, seed=n_chains)
    _check_baseline(loop, energy)
    benchmark.group = f"sampler bpti random-walk chains={n_chains}"
    benchmark.extra_info.update(device="cpu", backend="openmm-CPU-loop", chains=1,
                                steps_per_round=BASELINE_CHAIN_STEPS,
                                load_avg_1m=os.getloadavg()[0],
                                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))  # fmt: skip
    benchmark.pedantic(loop.run, args=(BASELINE_CHAIN_STEPS,), rounds=size(3, 1), iterations=1)
    benchmark.extra_info["acceptance"] = loop.accepted / max(loop.proposed, 1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        rate = BASELINE_CHAIN_STEPS / benchmark.stats.stats.median
        benchmark.extra_info["chain_steps_per_s"] = rate
        benchmark.extra_info["residue_moves_per_s"] = rate
