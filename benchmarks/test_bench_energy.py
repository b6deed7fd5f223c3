"""Force-field energy: pyslice against OpenMM's CPU and CUDA platforms, side by side in one session.

Full energy: B conformations (bpti, t4-lysozyme; hydrogens added) evaluated by pyslice in one call
against OpenMM looping context.setPositions + getState(getEnergy=True) over the same conformations.
delta(): one residue's side chain moved per conformation (pyslice.delta on B rows) against OpenMM
computing the full energy per move, which is what the reference approach does.
Every contestant is checked against OpenMM's energies (CPU platform) before it is timed; the CUDA
platform's baselines skip, with the reason, where OpenMM has no working CUDA platform. Units:
conformations (or moves) per second = B / time per call. Runs on DEVICE (CUDA when available).
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
BATCH = size(256, 4, gpu=4096)
BASELINE_CONFS = size(64, 2)  # OpenMM is timed per conformation; fewer suffice
OPENMM_PLATFORMS = ["CPU", "CUDA"]
# OpenMM's CUDA platform computes in single precision by default: checked against its CPU platform
# on the same conformations within this relative tolerance before it is timed.
OPENMM_CUDA_RTOL = 1e-3


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


@functools.cache
def _openmm_context(name: str, platform: str):
    """A Context of the same System on ``platform`` (the CPU one is _setup's); skips with the
    reason where OpenMM cannot make one here."""
    _, cpu_context, x, _, _ = _setup(name)
    if platform == "CPU":
        return cpu_context
    try:
        context = openmm.Context(
            cpu_context.getSystem(),
            openmm.VerletIntegrator(0.001),
            openmm.Platform.getPlatformByName(platform),
        )
    except Exception as exc:  # noqa: BLE001 - OpenMMException: no such platform, no device
        pytest.skip(f"OpenMM {platform} platform unavailable: {str(exc).splitlines()[0]}")
    expected = _openmm_energies(cpu_context, x[:BASELINE_CONFS])
    got = _openmm_energies(context, x[:BASELINE_CONFS])
    np.testing.assert_allclose(got, expected, rtol=OPENMM_CUDA_RTOL)
    return context


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

    benchmark.pedantic(run, rounds=size(5, 1, gpu=20), iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["conformations_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("platform", OPENMM_PLATFORMS)
def test_energy_openmm(benchmark, name: str, platform: str) -> None:
    _, _, x, _, _ = _setup(name)
    context = _openmm_context(name, platform)
    confs = x[:BASELINE_CONFS]
    benchmark.group = f"energy {name} B={BATCH}"
    benchmark.extra_info.update(device=platform.lower(), backend=f"openmm-{platform}",
                                batch=len(confs), n_atoms=x.shape[1])  # fmt: skip
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

    benchmark.pedantic(run, rounds=size(5, 1, gpu=20), iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("name", STRUCTURES)
@pytest.mark.parametrize("platform", OPENMM_PLATFORMS)
def test_delta_openmm(benchmark, name: str, platform: str) -> None:
    """The reference approach: a full OpenMM energy per proposed move."""
    _, _, _, new, _ = _setup(name)
    context = _openmm_context(name, platform)
    confs = new[:BASELINE_CONFS]
    benchmark.group = f"delta one residue {name} B={BATCH}"
    benchmark.extra_info.update(device=platform.lower(), backend=f"openmm-{platform}",
                                batch=len(confs))  # fmt: skip
    benchmark.pedantic(_openmm_energies, args=(context, confs), rounds=size(3, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = len(confs) / benchmark.stats.stats.median
