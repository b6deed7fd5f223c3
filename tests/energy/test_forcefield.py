"""ForceFieldEnergy: every path against OpenMM's Reference platform, delta() against differences of
full evaluations, the fast paths against the torch reference, clashes, and argument errors."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from pyslice import backends  # noqa: E402
from pyslice.energy.forcefield import TERMS, ForceFieldEnergy  # noqa: E402

HAS_CUDA = torch.cuda.is_available()

# ACE-ALA-NME with hydrogens (OpenMM's test file alanine-dipeptide-implicit.pdb, MIT licence):
# exercises the energy on a fresh clone, without the shared data.
DIPEPTIDE_PDB = """\
ATOM      1 1HH3 ACE     1       2.000   1.000  -0.000
ATOM      2  CH3 ACE     1       2.000   2.090   0.000
ATOM      3 2HH3 ACE     1       1.486   2.454   0.890
ATOM      4 3HH3 ACE     1       1.486   2.454  -0.890
ATOM      5  C   ACE     1       3.427   2.641  -0.000
ATOM      6  O   ACE     1       4.391   1.877  -0.000
ATOM      7  N   ALA     2       3.555   3.970  -0.000
ATOM      8  H   ALA     2       2.733   4.556  -0.000
ATOM      9  CA  ALA     2       4.853   4.614  -0.000
ATOM     10  HA  ALA     2       5.408   4.316   0.890
ATOM     11  CB  ALA     2       5.661   4.221  -1.232
ATOM     12 1HB  ALA     2       5.123   4.521  -2.131
ATOM     13 2HB  ALA     2       6.630   4.719  -1.206
ATOM     14 3HB  ALA     2       5.809   3.141  -1.241
ATOM     15  C   ALA     2       4.713   6.129   0.000
ATOM     16  O   ALA     2       3.601   6.653   0.000
ATOM     17  N   NME     3       5.846   6.835   0.000
ATOM     18  H   NME     3       6.737   6.359  -0.000
ATOM     19  CH3 NME     3       5.846   8.284   0.000
ATOM     20 1HH3 NME     3       4.819   8.648   0.000
ATOM     21 2HH3 NME     3       6.360   8.648   0.890
ATOM     22 3HH3 NME     3       6.360   8.648  -0.890
END
"""

FORCE_TERMS = {
    "bond": "HarmonicBondForce",
    "angle": "HarmonicAngleForce",
    "torsion": "PeriodicTorsionForce",
    "nonbonded": "NonbondedForce",
}
# Relative tolerance against OpenMM (float64 Reference platform) per compute dtype.
RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}
# Domains checked in the default run (deterministic: every 8th file); the rest are marked slow.
DOMAIN_STRIDE = 8
SLOW = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PYSLICE_SLOW") != "1", reason="slow: set PYSLICE_SLOW=1"),
]


class Structure:
    """The duck type ForceFieldEnergy takes: .topology and .positions (N, 3) nm."""

    def __init__(self, topology, positions) -> None:
        self.topology = topology
        self.positions = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)))


@functools.cache
def _forcefield() -> app.ForceField:
    return app.ForceField("amber14-all.xml")


@functools.cache
def dipeptide() -> Structure:
    pdb = app.PDBFile(io.StringIO(DIPEPTIDE_PDB))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(_forcefield())
    return Structure(modeller.topology, modeller.positions)


@functools.cache
def load(path: str) -> Structure:
    """A PDB file with hydrogens (Modeller); files with missing atoms or termini are completed by
    pdbfixer first (missing atoms rebuilt, gaps left open, pH 7)."""
    pdb = app.PDBFile(path)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    try:
        modeller.addHydrogens(_forcefield())
        _forcefield().createSystem(modeller.topology)
        return Structure(modeller.topology, modeller.positions)
    except ValueError:
        pass
    pdbfixer = pytest.importorskip("pdbfixer")
    fixer = pdbfixer.PDBFixer(filename=path)
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    fixer.addMissingHydrogens(7.0, forcefield=_forcefield())
    return Structure(fixer.topology, fixer.positions)


@functools.cache
def _context(structure: Structure, nonbonded: str):
    method = app.NoCutoff if nonbonded == "nocutoff" else app.CutoffNonPeriodic
    system = _forcefield().createSystem(
        structure.topology,
        nonbondedMethod=method,
        nonbondedCutoff=1.0 * unit.nanometer,
        constraints=None,
        rigidWater=False,
    )
    names = {}
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
        names[type(force).__name__] = group
    platform = openmm.Platform.getPlatformByName("Reference")
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform), names


def openmm_terms(structure: Structure, positions: torch.Tensor, nonbonded: str) -> dict:
    """{term: (B,) float64} from OpenMM's Reference platform, one force group per force."""
    context, groups = _context(structure, nonbonded)
    out = {term: [] for term in FORCE_TERMS}
    for x in positions.double().numpy():
        context.setPositions(x)
        for term, force in FORCE_TERMS.items():
            state = context.getState(getEnergy=True, groups={groups[force]})
            out[term].append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    out = {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
    out["total"] = sum(out[term] for term in FORCE_TERMS)  # CMMotionRemover: no energy
    return out


def side_chain_atoms(structure: Structure) -> torch.Tensor:
    backbone = {"N", "CA", "C", "O", "H", "HA", "OXT", "H1", "H2", "H3", "HA2", "HA3"}
    return torch.tensor(
        [a.index for a in structure.topology.atoms() if a.name not in backbone], dtype=torch.int64
    )


def perturbed(structure: Structure, n: int, scale: float, seed: int) -> torch.Tensor:
    """(n, N, 3): conformation 0 as read, the others with side-chain atoms displaced ~scale nm."""
    gen = torch.Generator().manual_seed(seed)
    x = structure.positions[None].repeat(n, 1, 1)
    side = side_chain_atoms(structure)
    noise = torch.randn(n - 1, len(side), 3, generator=gen, dtype=torch.float64) * scale
    x[1:, side] += noise
    return x


def with_clash(x: torch.Tensor, structure: Structure, seed: int) -> torch.Tensor:
    """x with one side-chain heavy atom moved to 0.03 nm of an atom of another residue."""
    gen = torch.Generator().manual_seed(seed)
    atoms = list(structure.topology.atoms())
    side = [i for i in side_chain_atoms(structure).tolist() if atoms[i].element.symbol != "H"]
    i = side[int(torch.randint(len(side), (1,), generator=gen))]
    others = [a.index for a in atoms if a.residue.index != atoms[i].residue.index]
    j = others[int(torch.randint(len(others), (1,), generator=gen))]
    x = x.clone()
    x[:, i] = x[:, j] + torch.tensor([0.03, 0.0, 0.0], dtype=x.dtype)
    return x


def assert_terms_close(ours: dict, ref: dict, rtol: float, scale: torch.Tensor | None = None):
    """Relative error per term; `scale` (B,) guards terms that are near zero by cancellation."""
    for term in FORCE_TERMS:
        a, b = ours[term].cpu(), ref[term]
        bound = rtol * torch.maximum(b.abs(), scale if scale is not None else b.abs())
        assert torch.all((a - b).abs() <= bound + 1e-9), (term, a, b)


# ------------------------------------------------------------------------------------------------
# Agreement with OpenMM
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonbonded", ["nocutoff", "cutoff"])
def test_dipeptide_matches_openmm(energy_case, nonbonded) -> None:
    backend, device, dtype = energy_case
    structure = dipeptide()
    x = perturbed(structure, 5, 0.03, seed=1).to(dtype)
    energy = ForceFieldEnergy(structure, nonbonded=nonbonded, dtype=dtype, device=device,
                              backend=backend)  # fmt: skip
    ours = energy.terms(x.to(device))
    ref = openmm_terms(structure, x, nonbonded)
    assert_terms_close(ours, ref, RTOL[dtype])
    torch.testing.assert_close(energy(x.to(device)).cpu(), ref["total"], rtol=RTOL[dtype], atol=0)
    torch.testing.assert_close(ours["coulomb"] + ours["lennard_jones"], ours["nonbonded"])


def test_coulomb_lennard_jones_split() -> None:
    """lennard_jones alone equals OpenMM with every charge (and charge product) set to zero."""
    structure = dipeptide()
    system = _forcefield().createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nonbonded.getNumParticles()):
        _, sigma, eps = nonbonded.getParticleParameters(i)
        nonbonded.setParticleParameters(i, 0.0, sigma, eps)
    for k in range(nonbonded.getNumExceptions()):
        i, j, _, sigma, eps = nonbonded.getExceptionParameters(k)
        nonbonded.setExceptionParameters(k, i, j, 0.0, sigma, eps)
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    x = perturbed(structure, 3, 0.03, seed=2)
    energy = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")
    group = nonbonded.getForceGroup()
    for b in range(3):
        context.setPositions(x[b].numpy())
        state = context.getState(getEnergy=True, groups={group})
        expected = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        got = float(energy.terms(x[b])["lennard_jones"])
        assert got == pytest.approx(expected, rel=1e-9)


def test_reference_gradient_is_minus_openmm_forces() -> None:
    structure = dipeptide()
    x = perturbed(structure, 2, 0.02, seed=3)[1].clone().requires_grad_(True)
    energy = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")
    energy(x).backward()
    context, _ = _context(structure, "nocutoff")
    context.setPositions(x.detach().numpy())
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    expected = -torch.tensor(forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-6)


def _structure_files() -> list:
    from pyslice._data import data_dir

    root = data_dir()
    if root is None:
        return [pytest.param(None, id="no-shared-data")]
    files = sorted((root / "structures").glob("*.pdb"))
    domains = sorted((root / "structures" / "domains").glob("*.pdb"))
    params = [pytest.param(f, id=f.stem) for f in files]
    for k, f in enumerate(domains):
        marks = [] if k % DOMAIN_STRIDE == 0 else SLOW
        params.append(pytest.param(f, id=f"domains/{f.stem}", marks=marks))
    return params


@pytest.mark.parametrize("path", _structure_files())
def test_structures_match_openmm(data_dir: Path, path: Path | None, usable_backends) -> None:
    """Original, perturbed and clashing side chains of a structure, both nonbonded modes, the C++
    path (float64 and float32) and, for small structures, the torch reference."""
    if path is None:
        pytest.skip("shared data not found")
    structure = load(str(path))
    x = perturbed(structure, 2, 0.03, seed=4)
    x = torch.cat([x, with_clash(x[1:2], structure, seed=5)])
    x = x.float().double()  # float32-exact: one OpenMM evaluation serves both dtypes
    for nonbonded in ("nocutoff", "cutoff"):
        ref = openmm_terms(structure, x, nonbonded)
        scale = ref["total"].abs().clamp_min(1.0)
        fast = [b for b in usable_backends("energy", "cpu") if b != "reference"]
        paths = [(backend, dtype) for backend in fast for dtype in (torch.float64, torch.float32)]
        if structure.positions.shape[0] <= 1100:
            paths.append(("reference", torch.float64))
        for backend, dtype in paths:
            energy = ForceFieldEnergy(structure, nonbonded=nonbonded, dtype=dtype,
                                      backend=backend)  # fmt: skip
            ours = energy.terms(x.to(dtype))
            assert_terms_close(ours, ref, RTOL[dtype], scale if dtype == torch.float32 else None)


# ------------------------------------------------------------------------------------------------
# delta()
# ------------------------------------------------------------------------------------------------


def _moves(structure: Structure, batch: int, seed: int, scale: float = 0.04):
    """(old, new, moved): random moved sets per row (sizes 0..N incl. empty and all atoms)."""
    gen = torch.Generator().manual_seed(seed)
    n = structure.positions.shape[0]
    old = perturbed(structure, batch, 0.02, seed=seed)
    sizes = [0, n] + [int(s) for s in torch.randint(1, max(2, n // 2), (batch - 2,), generator=gen)]
    m = max(sizes)
    moved = torch.full((batch, m), -1, dtype=torch.int64)
    for b, size in enumerate(sizes):
        moved[b, :size] = torch.randperm(n, generator=gen)[:size]
        # padding in the middle of a row is allowed too
        moved[b] = moved[b][torch.randperm(m, generator=gen)]
    new = old.clone()
    for b in range(batch):
        atoms = moved[b][moved[b] >= 0]
        new[b, atoms] += torch.randn(len(atoms), 3, generator=gen, dtype=old.dtype) * scale
    return old, new, moved


def mask_of(moved: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N) bool mask of the -1 padded index rows ``moved``."""
    mask = torch.zeros(moved.shape[0], n + 1, dtype=torch.bool)
    mask[torch.arange(moved.shape[0])[:, None], torch.where(moved >= 0, moved, n)] = True
    return mask[:, :n]


@pytest.mark.parametrize("nonbonded", ["nocutoff", "cutoff"])
def test_reference_delta_equals_difference(nonbonded) -> None:
    structure = dipeptide()
    old, new, moved = _moves(structure, 6, seed=6)
    energy = ForceFieldEnergy(structure, nonbonded=nonbonded, dtype=torch.float64,
                              backend="reference")  # fmt: skip
    full = energy(new) - energy(old)
    delta = energy.delta(old, new, moved)
    torch.testing.assert_close(delta, full, rtol=1e-8, atol=1e-9)
    per_term = energy.per_term_delta(old, new, moved)
    torch.testing.assert_close(per_term, energy.per_term(new) - energy.per_term(old),
                               rtol=1e-8, atol=1e-9)  # fmt: skip


def test_delta_reads_only_moved_rows_of_new_positions(usable_backends) -> None:
    structure = dipeptide()
    old, new, moved = _moves(structure, 4, seed=7)
    noisy = new + 0.5 * (moved.new_zeros(4, new.shape[1], 1) == 0)  # garbage in unmoved rows
    keep = mask_of(moved, new.shape[1])
    noisy = torch.where(keep[..., None], new, noisy)
    for backend in usable_backends("energy_delta", "cpu"):
        energy = ForceFieldEnergy(structure, dtype=torch.float64, backend=backend)
        torch.testing.assert_close(
            energy.delta(old, noisy, moved), energy(new) - energy(old), rtol=1e-8, atol=1e-9
        )


@pytest.mark.parametrize("nonbonded", ["nocutoff", "cutoff"])
@pytest.mark.parametrize("batch", [0, 1, 7])
def test_fast_delta_matches_reference(fast_energy_delta_case, nonbonded, batch) -> None:
    backend, device, dtype = fast_energy_delta_case
    structure = dipeptide()
    old, new, moved = (t[7 - batch :] for t in _moves(structure, 7, seed=8))  # empty, one, odd
    old, new = old.to(dtype), new.to(dtype)
    ref = ForceFieldEnergy(structure, nonbonded=nonbonded, dtype=torch.float64,
                           backend="reference")  # fmt: skip
    fast = ForceFieldEnergy(structure, nonbonded=nonbonded, dtype=dtype, device=device,
                            backend=backend)  # fmt: skip
    expected = ref.per_term_delta(old.double(), new.double(), moved)
    got = fast.per_term_delta(old.to(device), new.to(device), moved.to(device)).cpu()
    scale = ref(old.double()).abs()[:, None]
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    assert torch.all((got - expected).abs() <= tol * scale + 1e-9)
    # a bool mask means the same as the index list
    mask = mask_of(moved, old.shape[1])
    torch.testing.assert_close(
        fast.per_term_delta(old.to(device), new.to(device), mask.to(device)).cpu(), got,
        rtol=1e-12, atol=1e-9,
    )  # fmt: skip


def test_structure_delta_one_residue(data_dir: Path, usable_backends) -> None:
    """bpti: moving one residue's side chain, every path equals the difference of full energies."""
    structure = load(str(data_dir / "structures" / "bpti.pdb"))
    residue = list(structure.topology.residues())[20]
    side = set(side_chain_atoms(structure).tolist())
    atoms = torch.tensor([a.index for a in residue.atoms() if a.index in side])
    old = perturbed(structure, 5, 0.02, seed=9)
    new = old.clone()
    new[:, atoms] += torch.randn(5, len(atoms), 3, dtype=torch.float64) * 0.05
    moved = atoms[None].repeat(5, 1)
    ref = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")
    full = ref(new) - ref(old)
    torch.testing.assert_close(ref.delta(old, new, moved), full, rtol=1e-8, atol=1e-8)
    for backend in set(usable_backends("energy_delta", "cpu")) - {"reference"}:
        for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-3)):
            cpu = ForceFieldEnergy(structure, dtype=dtype, backend=backend)
            got = cpu.delta(old.to(dtype), new.to(dtype), moved)
            assert torch.all((got - full).abs() <= tol * full.abs().clamp_min(1.0)), (got, full)


# ------------------------------------------------------------------------------------------------
# Fast paths vs the reference: sizes, layouts, clashes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, 1, 5])
def test_fast_energy_matches_reference(fast_energy_case, batch) -> None:
    backend, device, dtype = fast_energy_case
    structure = dipeptide()
    x = perturbed(structure, max(batch, 1), 0.03, seed=10)[:batch].to(dtype)
    ref = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")
    fast = ForceFieldEnergy(structure, dtype=dtype, device=device, backend=backend)
    got = fast.per_term(x.to(device)).cpu()
    assert got.shape == (batch, len(TERMS)) and got.dtype == torch.float64
    expected = ref.per_term(x.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    scale = expected.abs().sum(-1, keepdim=True).clamp_min(1.0)
    assert torch.all((got - expected).abs() <= tol * scale)


def test_non_contiguous_and_single_conformation(energy_backend) -> None:
    backend, device = energy_backend
    structure = dipeptide()
    x = perturbed(structure, 3, 0.03, seed=11).to(device)
    energy = ForceFieldEnergy(structure, dtype=torch.float64, device=device, backend=backend)
    expected = energy(x)
    strided = torch.stack([x, x], dim=-1)[..., 0]  # same values, non-contiguous
    assert not strided.is_contiguous()
    torch.testing.assert_close(energy(strided), expected, rtol=0, atol=0)
    transposed = x.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(energy(transposed), expected, rtol=0, atol=0)
    assert energy(x[1]).shape == ()
    torch.testing.assert_close(energy(x[1]), expected[1], rtol=0, atol=0)
    moved = torch.tensor([3, 10, 12], device=device)
    single = energy.delta(x[0], x[1], moved)
    assert single.shape == ()


def test_clashes_are_huge_and_consistent(energy_backend) -> None:
    """Atoms 0.03, 1e-3, 1e-5 nm and exactly 0 apart: never NaN; huge positive or +inf on every
    path (float64 finite), equal to OpenMM where OpenMM is finite and the distance normal."""
    backend, device = energy_backend
    structure = dipeptide()
    x0 = structure.positions
    confs = []
    for distance in (0.03, 1e-3, 1e-5, 0.0):
        x = x0.clone()
        x[11] = x0[19] + torch.tensor([distance, 0.0, 0.0], dtype=x0.dtype)  # HB1 onto NME CH3
        confs.append(x)
    x = torch.stack(confs)
    for dtype in (torch.float64, torch.float32):
        energy = ForceFieldEnergy(structure, dtype=dtype, device=device, backend=backend)
        e = energy(x.to(dtype).to(device)).cpu()
        assert not torch.isnan(e).any(), e
        assert torch.all(e > 1e6), e
        if dtype == torch.float64:
            assert torch.isfinite(e).all()
        ref = openmm_terms(structure, x[:2].to(dtype), "nocutoff")["total"]
        torch.testing.assert_close(e[:2], ref, rtol=RTOL[dtype], atol=0)
        # delta into the clash: +huge, finite in float64
        moved = torch.tensor([[11]] * 4, device=device)
        old = x0[None].repeat(4, 1, 1).to(dtype).to(device)
        d = energy.delta(old, x.to(dtype).to(device), moved).cpu()
        assert torch.all(d > 1e6) and not torch.isnan(d).any(), d


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_argument_errors() -> None:
    structure = dipeptide()
    energy = ForceFieldEnergy(structure, backend="reference")
    n = structure.positions.shape[0]
    x = structure.positions[None].float()
    with pytest.raises(ValueError, match=r"positions must have shape \(B, 22, 3\)"):
        energy(torch.zeros(2, n + 1, 3))
    with pytest.raises(ValueError, match="positions must have shape"):
        energy(torch.zeros(2, n, 2))
    with pytest.raises(TypeError, match="positions must have a floating dtype"):
        energy(torch.zeros(1, n, 3, dtype=torch.int64))
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="positions must be finite"):
        energy(bad)
    with pytest.raises(ValueError, match="new_positions must be finite"):
        energy.delta(x, bad, torch.tensor([[3]]))
    # Only the moved rows of new_positions are read: a NaN elsewhere does not matter.
    assert torch.isfinite(energy.delta(x, bad, torch.tensor([[1]]))).all()
    with pytest.raises(ValueError, match="positions must be finite"):
        energy.delta(bad, x, torch.tensor([[1]]))
    with pytest.raises(ValueError, match="moved indices must be in"):
        energy.delta(x, x, torch.tensor([[n]]))
    with pytest.raises(ValueError, match="moved must not list an atom twice"):
        energy.delta(x, x, torch.tensor([[2, 2]]))
    with pytest.raises(ValueError, match=r"moved must have shape \(B, M\)"):
        energy.delta(x, x, torch.tensor([[1], [2]]))
    with pytest.raises(TypeError, match="moved must hold int64"):
        energy.delta(x, x, torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="nonbonded must be"):
        ForceFieldEnergy(structure, nonbonded="pme")
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        ForceFieldEnergy(structure, nonbonded="cutoff", cutoff=0.0)
    with pytest.raises(TypeError, match="dtype must be"):
        ForceFieldEnergy(structure, dtype=torch.float16)
    with pytest.raises(backends.BackendUnavailable):
        ForceFieldEnergy(structure, backend="triton")(x)


def test_topology_positions_mismatch() -> None:
    structure = dipeptide()
    short = Structure.__new__(Structure)
    short.topology = structure.topology
    short.positions = structure.positions[:-1]
    with pytest.raises(ValueError, match="protein.topology has 22 atoms but protein.positions"):
        ForceFieldEnergy(short)
    with pytest.raises(TypeError, match="protein must have .topology"):
        ForceFieldEnergy(object())


def test_unsupported_forces_are_refused() -> None:
    structure = dipeptide()
    with pytest.raises(ValueError, match="GBSAOBCForce|CustomGBForce"):
        ForceFieldEnergy(structure, forcefield=("amber14-all.xml", "implicit/obc2.xml"))
    system = _forcefield().createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    system.addForce(openmm.CMAPTorsionForce())
    with pytest.raises(ValueError, match="CMAPTorsionForce"):
        ForceFieldEnergy.from_system(structure, system)
    system = _forcefield().createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    system.addForce(openmm.CustomBondForce("r"))
    with pytest.raises(ValueError, match="CustomBondForce"):
        ForceFieldEnergy.from_system(structure, system)
    # CMMotionRemover (no energy) is fine, and from_system equals the constructor
    system = _forcefield().createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    x = structure.positions[None]
    a = ForceFieldEnergy.from_system(structure, system, dtype=torch.float64, backend="reference")
    b = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_forcefield_files_as_paths() -> None:
    # The forcefield argument is checked as Protein checks it: a PathLike is accepted.
    structure = dipeptide()
    x = structure.positions[None]
    expected = ForceFieldEnergy(structure, dtype=torch.float64, backend="reference")(x)
    data = Path(app.__file__).parent / "data" / "amber14-all.xml"
    for forcefield in (Path("amber14-all.xml"), data, [data]):
        energy = ForceFieldEnergy(
            structure, forcefield=forcefield, dtype=torch.float64, backend="reference"
        )
        torch.testing.assert_close(energy(x), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="forcefield must be a non-empty sequence"):
        ForceFieldEnergy(structure, forcefield=())
    with pytest.raises(ValueError, match="could not be loaded"):
        ForceFieldEnergy(structure, forcefield="no-such-forcefield.xml")
