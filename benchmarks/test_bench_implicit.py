"""Implicit solvent (amber14 + GBn2): the torch reference against OpenMM, side by side.

bpti (892 atoms with hydrogens), B conformations with random side-chain angles. Full energy:
the whole System (vacuum terms + GBn2) by pyslice's torch references in one call, against
OpenMM looping context.setPositions + getState(getEnergy=True) on its CPU and Reference
platforms. delta(): one residue's side chain redrawn per row (vacuum delta + GB delta from the
cached Born state) against OpenMM's full energy per move. Every contestant is checked against
OpenMM's Reference platform first. These numbers set the targets of the compiled GB kernels
(issue 16: full energy >= 3x OpenMM CPU at B = 64; one-residue delta >= 30x OpenMM's full energy
per move). extra_info of the delta records how many Born radii a one-residue move changes.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from bench_common import size

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from pyslice import Protein  # noqa: E402
from pyslice._data import data_dir  # noqa: E402
from pyslice.energy.implicit import (  # noqa: E402
    implicit_delta_reference,
    implicit_energy_reference,
)
from pyslice.energy.implicit_tables import (  # noqa: E402
    implicit_tables_from_system,
    without_implicit_solvent,
)
from pyslice.energy.reference import energy_delta_reference, energy_reference  # noqa: E402
from pyslice.energy.tables import tables_from_system  # noqa: E402

BATCH = size(64, 2)
CPU_CONFS = size(16, 2)  # OpenMM is timed per conformation; fewer suffice
REFERENCE_CONFS = size(3, 1)
CHECK = 2  # conformations checked against OpenMM's Reference platform before timing


@functools.cache
def _setup():
    root = data_dir()
    if root is None:
        pytest.skip("shared data not found: set PYSLICE_DATA")
    protein = Protein.from_pdb(root / "structures" / "bpti.pdb")
    forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    system = forcefield.createSystem(protein.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=None, rigidWater=False)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    chi = (torch.rand(BATCH, protein.n_chi, generator=gen, dtype=torch.float64) * 2 - 1) * np.pi
    # one residue per row (cycling over the residues with chis), its chis redrawn
    owner = protein.chi_index[:, 0]
    residues = sorted(set(owner.tolist()))
    new_chi = chi.clone()
    for b in range(BATCH):
        columns = (owner == residues[b % len(residues)]).nonzero().flatten()
        draw = torch.rand(len(columns), generator=gen, dtype=torch.float64)
        new_chi[b, columns] = (draw * 2 - 1) * np.pi
    x, new = protein.build(chi).double(), protein.build(new_chi).double()
    changed = (x != new).any(-1)
    width = int(changed.sum(1).max())
    order = torch.argsort((~changed).to(torch.int8), dim=1, stable=True)[:, :width]
    moved = torch.where(changed.gather(1, order), order, -1)
    return system, x, new, moved


@functools.cache
def _context(platform: str) -> openmm.Context:
    system = _setup()[0]
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))


def _openmm_energies(context: openmm.Context, x: torch.Tensor) -> np.ndarray:
    out = []
    for conf in x.double().numpy():
        context.setPositions(conf)
        state = context.getState(getEnergy=True)
        out.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


@functools.cache
def _tables(dtype: torch.dtype):
    system = _setup()[0]
    vacuum = tables_from_system(without_implicit_solvent(system), dtype=dtype)
    return vacuum, implicit_tables_from_system(system, dtype=dtype)


def _full(dtype: torch.dtype, x: torch.Tensor):
    vacuum, gb = _tables(dtype)
    terms, state = implicit_energy_reference(gb, x)
    return energy_reference(vacuum, x).sum(-1) + terms.sum(-1), state


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
RTOL = {torch.float32: 1e-4, torch.float64: 1e-6}


@DTYPES
def test_gb_energy_pyslice_reference(benchmark, dtype) -> None:
    _, x, _, _ = _setup()
    xd = x.to(dtype)
    expected = _openmm_energies(_context("Reference"), x[:CHECK])
    np.testing.assert_allclose(_full(dtype, xd[:CHECK])[0].numpy(), expected, rtol=RTOL[dtype])
    benchmark.group = f"gbn2 energy bpti B={BATCH}"
    benchmark.extra_info.update(device="cpu", backend="reference", dtype=str(dtype),
                                batch=BATCH, n_atoms=x.shape[1])  # fmt: skip
    benchmark.pedantic(_full, args=(dtype, xd), rounds=size(2, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["conformations_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_gb_energy_openmm(benchmark, platform: str) -> None:
    _, x, _, _ = _setup()
    confs = x[: CPU_CONFS if platform == "CPU" else REFERENCE_CONFS]
    context = _context(platform)
    if platform == "CPU":  # mixed precision
        expected = _openmm_energies(_context("Reference"), x[:CHECK])
        np.testing.assert_allclose(_openmm_energies(context, x[:CHECK]), expected, rtol=1e-4)
    benchmark.group = f"gbn2 energy bpti B={BATCH}"
    threads = context.getPlatform().getPropertyValue(context, "Threads") if platform == "CPU" else 1
    benchmark.extra_info.update(device="cpu", backend=f"openmm-{platform}", batch=len(confs),
                                threads=threads)  # fmt: skip
    benchmark.pedantic(_openmm_energies, args=(context, confs), rounds=size(2, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["conformations_per_s"] = len(confs) / benchmark.stats.stats.median


def _delta(dtype: torch.dtype, x, new, moved, state):
    vacuum, gb = _tables(dtype)
    d_gb, after = implicit_delta_reference(gb, x, new, moved, state)
    return energy_delta_reference(vacuum, x, new, moved).sum(-1) + d_gb.sum(-1), after


@DTYPES
def test_gb_delta_pyslice_reference(benchmark, dtype) -> None:
    _, x, new, moved = _setup()
    xd, nd = x.to(dtype), new.to(dtype)
    state = _full(dtype, xd)[1]  # what a chain caches
    reference = _context("Reference")
    expected = _openmm_energies(reference, new[:CHECK]) - _openmm_energies(reference, x[:CHECK])
    sub = type(state)(state.integrals[:CHECK], state.born[:CHECK])
    got = _delta(dtype, xd[:CHECK], nd[:CHECK], moved[:CHECK], sub)[0].numpy()
    scale = np.abs(_openmm_energies(reference, x[:CHECK])).max()
    np.testing.assert_allclose(got, expected, atol=RTOL[dtype] * scale)
    after = _delta(dtype, xd, nd, moved, state)[1]
    changed = (after.born.to(dtype) != state.born.to(dtype)).sum(1).double()
    relative = (after.born - state.born).abs() / state.born
    benchmark.group = f"gbn2 delta one residue bpti B={BATCH}"
    info = benchmark.extra_info
    info.update(device="cpu", backend="reference", dtype=str(dtype), batch=BATCH)
    info.update(n_atoms=x.shape[1], n_moved_max=int(moved.shape[1]))
    info["radii_changed_mean"] = float(changed.mean())
    info["radii_changed_min"] = int(changed.min())
    info["radii_changed_over_1e-6_mean"] = float((relative > 1e-6).sum(1).double().mean())
    info["radii_changed_over_1e-3_mean"] = float((relative > 1e-3).sum(1).double().mean())
    benchmark.pedantic(_delta, args=(dtype, xd, nd, moved, state), rounds=size(2, 1), iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = BATCH / benchmark.stats.stats.median


def test_gb_delta_openmm_cpu(benchmark) -> None:
    """The reference approach: a full OpenMM energy per proposed move."""
    _, _, new, _ = _setup()
    confs = new[:CPU_CONFS]
    benchmark.group = f"gbn2 delta one residue bpti B={BATCH}"
    benchmark.extra_info.update(device="cpu", backend="openmm-CPU", batch=len(confs))
    benchmark.pedantic(_openmm_energies, args=(_context("CPU"), confs), rounds=size(2, 1),
                       iterations=1)  # fmt: skip
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["moves_per_s"] = len(confs) / benchmark.stats.stats.median
