"""Force-field energy: pyslice against OpenMM's CPU platform, side by side in one session.

Full energy: B conformations (bpti, t4-lysozyme; hydrogens added) evaluated by pyslice in one call
against OpenMM looping context.setPositions + getState(getEnergy=True) over the same conformations.
delta(): one residue's side chain moved per conformation (pyslice.delta on B rows) against OpenMM
computing the full energy per move, which is what the reference approach does.
Every contestant is checked against OpenMM's energies before it is timed. Units: conformations
(or moves) per second = B / time per call. Runs on DEVICE (CUDA when available).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from bench_common import DEVICE, size, sync

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from pyslice import backends  # noqa: E402
from pyslice._data import data_dir  # noqa: E402
from pyslice.energy.forcefield import ForceFieldEnergy  # noqa: E402

STRUCTURES = ["bpti", "t4-lysozyme"]
BATCH = size(256, 4)
BASELINE_CONFS = size(64, 2)  # OpenMM is timed per conformation; fewer suffice


class _Structure:
    def __init__(self, topology, positions) -> None:
        self.topology = topology
        self.positions = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)))


@functools.cache
def _setup(name: str):
    pdbfixer = pytest.importorskip("pdbfixer")
    root = data_dir()
    if root is None:
        pytest.skip("shared data not found: set PYSLICE_DATA")
    path = root / "structures" / f"{name}.pdb"
    forcefield = app.ForceField("amber14-all.xml")
    fixer = pdbfixer.PDBFixer(filename=str(path))
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    fixer.addMissingHydrogens(7.0, forcefield=forcefield)
    structure = _Structure(fixer.topology, fixer.positions)
    system = forcefield.createSystem(fixer.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=None, rigidWater=False)  # fmt: skip
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
    )
    gen = torch.Generator().manual_seed(0)
    x = structure.positions[None] + 0.01 * torch.randn(
        BATCH, *structure.positions.shape, generator=gen, dtype=torch.float64
    )
    x = x.float()
    # one residue's side chain per row (residue 10 + b mod 20), displaced by ~0.05 nm
    residues = list(fixer.topology.residues())
    backbone = {"N", "CA", "C", "O", "H", "HA"}
    side = [[a.index for a in r.atoms() if a.name not in backbone] for r in residues]
    m = max(len(s) for s in side)
    moved = torch.full((BATCH, m), -1, dtype=torch.int64)
    for b in range(BATCH):
        atoms = side[10 + b % 20]
        moved[b, : len(atoms)] = torch.tensor(atoms)
    new = x.clone()
    rows = torch.arange(BATCH)[:, None]
    shift = 0.05 * torch.randn(BATCH, m, 3, generator=gen)
    new[rows, moved.clamp_min(0)] += torch.where(moved[..., None] >= 0, shift, 0.0)
    return structure, context, x, new, moved


def _openmm_energies(context, x: torch.Tensor) -> np.ndarray:
    out = []
    for conf in x.double().numpy():
        context.setPositions(conf)
        state = context.getState(getEnergy=True)
        out.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


@pytest.mark.parametrize("name", STRUCTURES)
def test_energy_pyslice(benchmark, name: str) -> None:
    structure, context, x, _, _ = _setup(name)
    energy = ForceFieldEnergy(structure, device=DEVICE)
    impl = backends.select("energy", DEVICE, torch.float32)
    xd = x.to(DEVICE)
    expected = _openmm_energies(context, x[:BASELINE_CONFS])
    got = energy(xd[:BASELINE_CONFS]).cpu().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    benchmark.group = f"energy {name} B={BATCH}"
    benchmark.extra_info.update(device=DEVICE, backend=impl.backend, batch=BATCH,
                                n_atoms=x.shape[1])  # fmt: skip

    def run():
        out = energy(xd)
        sync()
        return out

    benchmark.pedantic(run, rounds=size(5, 1), iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["conformations_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("name", STRUCTURES)
def test_energy_openmm_cpu(benchmark, name: str) -> None:
    _, context, x, _, _ = _setup(name)
    confs = x[:BASELINE_CONFS]
    benchmark.group = f"energy {name} B={BATCH}"
    benchmark.extra_info.update(device="cpu", backend="openmm-CPU", batch=len(confs),
                                n_atoms=x.shape[1])  # fmt: skip
    benchmark.pedantic(_openmm_energies, args=(context, confs), rounds=size(3, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["conformations_per_s"] = len(confs) / benchmark.stats.stats.median


@pytest.mark.parametrize("name", STRUCTURES)
def test_delta_pyslice(benchmark, name: str) -> None:
    structure, context, x, new, moved = _setup(name)
    energy = ForceFieldEnergy(structure, device=DEVICE)
    xd, nd, md = x.to(DEVICE), new.to(DEVICE), moved.to(DEVICE)
    k = BASELINE_CONFS
    expected = _openmm_energies(context, new[:k]) - _openmm_energies(context, x[:k])
    got = energy.delta(xd[:k], nd[:k], md[:k]).cpu().numpy()
    full = np.abs(_openmm_energies(context, x[:k]))
    np.testing.assert_allclose(got, expected, atol=1e-5 * full.max())
    benchmark.group = f"delta one residue {name} B={BATCH}"
    benchmark.extra_info.update(device=DEVICE, batch=BATCH, n_atoms=x.shape[1],
                                n_moved=int(moved.shape[1]))  # fmt: skip

    def run():
        out = energy.delta(xd, nd, md)
        sync()
        return out

    benchmark.pedantic(run, rounds=size(5, 1), iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("name", STRUCTURES)
def test_delta_openmm_cpu(benchmark, name: str) -> None:
    """The reference approach: a full OpenMM energy per proposed move."""
    _, context, _, new, _ = _setup(name)
    confs = new[:BASELINE_CONFS]
    benchmark.group = f"delta one residue {name} B={BATCH}"
    benchmark.extra_info.update(device="cpu", backend="openmm-CPU", batch=len(confs))
    benchmark.pedantic(_openmm_energies, args=(context, confs), rounds=size(3, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = len(confs) / benchmark.stats.stats.median
