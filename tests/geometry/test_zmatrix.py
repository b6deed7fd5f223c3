"""The internal-coordinate (NeRF) side-chain builder (pyslice.geometry.zmatrix).

Peptides from ``Protein.from_sequence`` (variants set by ``Modeller.addHydrogens``) exercise it
without the shared data; bpti (skipped where absent) adds a real protein with prolines and
disulfides. Energies are pyslice's float64 ``ForceFieldEnergy``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from openmm import app, unit

import pyslice
from pyslice import _data
from pyslice.geometry.chis import CHI_ATOMS
from pyslice.geometry.templates import bond_angle, templates, variant_of
from pyslice.geometry.zmatrix import ZMatrixBuilder

BPTI = (_data.data_dir() or _data.DEFAULT) / "structures" / "bpti.pdb"
needs_bpti = pytest.mark.skipif(not BPTI.is_file(), reason="shared data (bpti.pdb) not found")
FF = ("amber14-all.xml",)


def _peptide(seq: str, variants: dict[int, str] | None = None) -> pyslice.Protein:
    """An extended peptide; ``variants`` (residue index -> amber name) reset by addHydrogens."""
    protein = pyslice.Protein.from_sequence(seq, "extended")
    if not variants:
        return protein
    modeller = app.Modeller(
        protein.topology, unit.Quantity(protein.positions.numpy(), unit.nanometer)
    )
    wanted = [variants.get(k) for k in range(len(seq))]
    modeller.addHydrogens(app.ForceField(*FF), variants=wanted)
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    return pyslice.Protein(modeller.topology, np.asarray(positions))


@pytest.fixture(scope="module")
def all20() -> pyslice.Protein:
    return _peptide("GACDEFGHIKLMNPQRSTVWYG")


@pytest.fixture(scope="module")
def bpti() -> pyslice.Protein:
    if not BPTI.is_file():
        pytest.skip("shared data (bpti.pdb) not found")
    return pyslice.Protein.from_pdb(BPTI)


def _columns(builder: ZMatrixBuilder, batch: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (
        (torch.rand(batch, builder.n_columns, generator=g, dtype=torch.float64) * 2 - 1)
        .mul(math.pi)
        .to(dtype)
    )


def _energy(protein: pyslice.Protein) -> pyslice.ForceFieldEnergy:
    return pyslice.ForceFieldEnergy(protein, dtype=torch.float64)


# ------------------------------------------------------------------------------- input mode


def test_input_mode_reproduces_a_peptide(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions, geometry="input")
    built = builder.build(builder.column_values().unsqueeze(0))[0]
    assert (built - all20.positions).abs().max() < 1e-12
    assert builder.symmetries == []
    assert builder.periodicity.eq(1).all()
    assert len(builder.built_residues) == all20.n_residues
    # Every amino acid is built; PRO's chis are not columns.
    pro = [r.index for r in all20.topology.residues() if r.name == "PRO"]
    assert not set(builder.column_residues.tolist()) & set(pro)


@needs_bpti
def test_input_mode_reproduces_bpti(bpti):
    builder = ZMatrixBuilder(bpti.topology, bpti.positions, geometry="input")
    built = builder.build(builder.column_values().unsqueeze(0))[0]
    assert (built - bpti.positions).abs().max() < 1e-6  # nm; measured ~1e-15
    e = _energy(bpti)
    assert e(built.unsqueeze(0)).item() == pytest.approx(e(bpti.positions.unsqueeze(0)).item())


# ------------------------------------------------------------------------------- ideal mode


def test_ideal_bonds_and_angles_are_the_templates(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    built = builder.build(_columns(builder, 3))
    x = built.numpy()
    residues = list(all20.topology.residues())
    for r in builder.built_residues:
        t = templates()[builder.residue_variants[r]]
        index = {a.name: a.index for a in residues[r].atoms()}
        for e in t.entries:
            p = {n: x[:, index[n]] for n in (e.b, e.c, e.atom)}
            bonds = np.linalg.norm(p[e.atom] - p[e.c], axis=-1)
            np.testing.assert_allclose(bonds, e.bond, atol=1e-12)
            for k in range(x.shape[0]):
                angle = bond_angle(p[e.b][k], p[e.c][k], p[e.atom][k])
                assert angle == pytest.approx(e.angle, abs=1e-10), (t.variant, e.atom)
    # The backbone never moves.
    backbone = [a.index for a in all20.topology.atoms() if a.name in ("N", "CA", "C", "O", "H")]
    assert torch.equal(built[:, backbone], all20.positions[backbone].expand(3, -1, -1))


def test_ideal_columns_come_back_exactly(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    columns = _columns(builder, 4) * 3.0  # any real value
    measured = builder.column_values(builder.build(columns))
    wrapped = torch.remainder(columns + math.pi, 2 * math.pi) - math.pi
    diff = torch.remainder(measured - wrapped + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-10
    assert builder.column_names[:2] == ["chi1", "rotor HG"]  # CYS
    assert set(builder.column_kinds) == {"chi", "rotor"}


def test_moving_a_column_moves_only_its_atoms(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    columns = _columns(builder, 1)
    base = builder.build(columns)[0]
    for j in range(builder.n_columns):
        turned = columns.clone()
        turned[0, j] += 0.7
        moved = (builder.build(turned)[0] - base).norm(dim=-1) > 1e-12
        listed = torch.zeros_like(moved)
        listed[list(builder.moved_atoms(j))] = True
        assert not (moved & ~listed).any(), builder.column_names[j]
        assert moved.any()


def test_symmetric_columns_leave_the_energy_unchanged():
    protein = _peptide("GDGEGFGYGKG")
    builder = ZMatrixBuilder(protein.topology, protein.positions)
    first = [sym[0][0] for sym in builder.symmetries]
    variants = [builder.residue_variants[int(builder.column_residues[j])] for j in first]
    assert variants == ["ASP", "GLU", "PHE", "TYR", "LYS"]
    names = [[builder.column_names[j] for j, _ in s] for s in builder.symmetries]
    assert names == [["chi2"], ["chi3"], ["chi2"], ["chi2", "rotor HH"], ["rotor HZ1"]]
    energy = _energy(protein)
    columns = _columns(builder, 6, seed=1)
    e0 = energy(builder.build(columns))
    for sym in builder.symmetries:
        shifted = columns.clone()
        for j, shift in sym:
            shifted[:, j] += shift
        e1 = energy(builder.build(shifted))
        assert ((e1 - e0).abs() <= 1e-12 * e0.abs().clamp(min=1.0)).all(), sym
    # TYR's chi2 alone is not a symmetry: its HH is measured from CE1.
    chi2 = builder.symmetries[3][0][0]
    shifted = columns.clone()
    shifted[:, chi2] += math.pi
    assert ((energy(builder.build(shifted)) - e0).abs() > 1e-3).all()


def test_nothing_asymmetric_is_flagged():
    seq = "GHGHGHGNGQGDGEGKGCGSGTG"
    variants = {1: "HID", 3: "HIE", 5: "HIP", 11: "ASH", 13: "GLH", 15: "LYN"}
    protein = _peptide(seq, variants)
    builder = ZMatrixBuilder(protein.topology, protein.positions)
    assert [builder.residue_variants[r] for r in range(1, len(seq), 2)] == [
        "HID", "HIE", "HIP", "ASN", "GLN", "ASH", "GLH", "LYN", "CYS", "SER", "THR",
    ]  # fmt: skip
    assert builder.symmetries == []
    assert builder.periodicity.eq(1).all()
    energy = _energy(protein)
    columns = _columns(builder, 4, seed=2)
    e0 = energy(builder.build(columns))
    for j in range(builder.n_columns):
        shifted = columns.clone()
        shifted[:, j] += math.pi
        change = (energy(builder.build(shifted)) - e0).abs()
        assert (change > 1e-3).all(), builder.column_names[j]


@needs_bpti
def test_prolines_and_disulfides_are_rebuilt_at_their_measured_chis(bpti):
    builder = ZMatrixBuilder(bpti.topology, bpti.positions)
    residues = list(bpti.topology.residues())
    held = [
        r.index for r in residues if r.name == "PRO" or builder.residue_variants[r.index] == "CYX"
    ]
    assert len(held) == 4 + 6
    assert not set(builder.column_residues.tolist()) & set(held)
    built = builder.build(builder.column_values().unsqueeze(0))[0]
    for r in held:
        index = {a.name: a.index for a in residues[r].atoms()}
        parent = "PRO" if residues[r].name == "PRO" else "CYS"
        for quad in CHI_ATOMS[parent]:
            ids = [index[n] for n in quad]
            before = pyslice.geometry.dihedral(*bpti.positions[ids])
            after = pyslice.geometry.dihedral(*built[ids])
            assert float(after) == pytest.approx(float(before), abs=1e-10)
    # The whole protein's energy at its own columns: the ideal geometry relieves the strain of
    # deposited bond angles (angle term) and keeps the disulfides bonded.
    energy = _energy(bpti)
    terms = energy.terms(built.unsqueeze(0))
    assert terms["angle"].item() < energy.terms(bpti.positions.unsqueeze(0))["angle"].item()
    for x, y in bpti.topology.bonds():
        if x.name == y.name == "SG":
            assert (built[x.index] - built[y.index]).norm() < 0.22


# ------------------------------------------------------------------------------- numerics


def test_float32_agrees_with_float64(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    columns = _columns(builder, 5)
    x64 = builder.build(columns)
    x32 = builder.build(columns.float())
    assert x32.dtype == torch.float32
    assert (x32.double() - x64).abs().max() < 1e-5


def test_gradients_flow_to_the_columns():
    protein = _peptide("GSKG")
    builder = ZMatrixBuilder(protein.topology, protein.positions)
    columns = _columns(builder, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(builder.build, (columns,), fast_mode=True)
    residues = torch.tensor([[2, -1], [1, 2]])

    def block(c: torch.Tensor) -> torch.Tensor:
        return builder.build_residues(c, residues)[1]

    assert torch.autograd.gradcheck(block, (columns,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_block_builds_are_rows_of_the_full_build(all20, dtype):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    columns = _columns(builder, 5, dtype=dtype)
    full = builder.build(columns)
    g = torch.Generator().manual_seed(3)
    built = torch.tensor(builder.built_residues)
    residues = built[torch.randint(len(built), (5, 4), generator=g)]
    residues[1, 2:] = -1
    residues[3, 0] = -1
    atoms, positions = builder.build_residues(columns, residues)
    n_slots = atoms.shape[1] // 4
    assert atoms.shape == (5, 4 * n_slots) and positions.shape == (5, 4 * n_slots, 3)
    valid = atoms >= 0
    rows = torch.arange(5).unsqueeze(1).expand_as(atoms)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert (positions[valid] - full[rows[valid], atoms[valid]]).abs().max() < tol
    assert (positions[~valid] == 0).all()
    # Each residue's slots hold its placed atoms (every one), padding after.
    residue_of = torch.tensor([a.residue.index for a in all20.topology.atoms()])
    for b in range(5):
        for s in range(4):
            block = atoms[b, s * n_slots : (s + 1) * n_slots]
            r = int(residues[b, s])
            if r < 0:
                assert (block == -1).all()
                continue
            mine = block[block >= 0]
            assert (residue_of[mine] == r).all()
            assert len(mine) == len(templates()[builder.residue_variants[r]].entries)


@pytest.mark.parametrize("batch", [0, 1, 3])
def test_batch_sizes(all20, batch):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    columns = _columns(builder, batch)
    x = builder.build(columns)
    assert x.shape == (batch, all20.n_atoms, 3)
    residues = torch.full((batch, 2), -1, dtype=torch.int64)
    if batch:
        residues[:, 0] = builder.built_residues[-1]
    atoms, positions = builder.build_residues(columns, residues)
    assert atoms.shape[0] == positions.shape[0] == batch
    if batch:
        assert (x[:1] - builder.build(columns[:1])).abs().max() < 1e-12


def test_movable_limits_what_is_built(all20):
    lys = next(r.index for r in all20.topology.residues() if r.name == "LYS")
    builder = ZMatrixBuilder(all20.topology, all20.positions, movable=[lys, 0])
    assert builder.built_residues == (0, lys)  # GLY 0 is built too: it has HA2 / HA3
    assert builder.column_names == ["chi1", "chi2", "chi3", "chi4", "rotor HZ1"]
    x = builder.build(_columns(builder, 2))
    residue_of = np.array([a.residue.index for a in all20.topology.atoms()])
    untouched = torch.from_numpy(~np.isin(residue_of, [0, lys]))
    assert torch.equal(x[:, untouched], all20.positions[untouched].expand(2, -1, -1))


def test_residues_that_cannot_be_built():
    protein = _peptide("GKSG")
    modeller = app.Modeller(
        protein.topology, unit.Quantity(protein.positions.numpy(), unit.nanometer)
    )
    lys = list(modeller.topology.residues())[1]
    modeller.delete([a for a in lys.atoms() if a.name == "HB2"])
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    builder = ZMatrixBuilder(modeller.topology, positions)
    assert builder.fixed_residues == {1: "its atoms do not match the LYS template (missing HB2)"}
    assert builder.built_residues == (0, 2, 3)
    with pytest.raises(ValueError, match=r"movable: residue LYS 2 of chain A .*\(missing HB2\)"):
        ZMatrixBuilder(modeller.topology, positions, movable=[1, 2])


def test_bad_arguments(all20):
    with pytest.raises(TypeError, match="topology must be an openmm.app.Topology"):
        ZMatrixBuilder("GAG", all20.positions)
    with pytest.raises(ValueError, match="geometry must be one of"):
        ZMatrixBuilder(all20.topology, all20.positions, geometry="deposited")
    with pytest.raises(ValueError, match=r"positions must have shape \(n_atoms, 3\)"):
        ZMatrixBuilder(all20.topology, all20.positions[:-1])
    with pytest.raises(ValueError, match="movable must hold residue indices"):
        ZMatrixBuilder(all20.topology, all20.positions, movable=[999])
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    good = _columns(builder, 2)
    with pytest.raises(TypeError, match="columns must be a torch.Tensor"):
        builder.build(good.numpy())
    with pytest.raises(TypeError, match="columns must have dtype float32 or float64"):
        builder.build(good.long())
    with pytest.raises(ValueError, match=r"columns must have shape \(B, n_columns\)"):
        builder.build(good[:, :-1])
    with pytest.raises(ValueError, match="columns"):
        builder.build(torch.full_like(good, float("nan")))
    with pytest.raises(TypeError, match="residues must be a torch.Tensor"):
        builder.build_residues(good, [[1], [2]])
    with pytest.raises(TypeError, match="residues must have dtype int32 or int64"):
        builder.build_residues(good, torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"residues must have shape \(B, S\) with B = 2"):
        builder.build_residues(good, torch.ones(3, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"residue indices in \[0, 22\) or -1, got 22"):
        builder.build_residues(good, torch.tensor([[1], [22]]))
    with pytest.raises(ValueError, match="j must be"):
        builder.moved_atoms(builder.n_columns)
    with pytest.raises(ValueError, match=r"positions must have shape \(\.\.\., n_atoms, 3\)"):
        builder.column_values(torch.zeros(3, 3))


def test_variants_are_read_from_the_hydrogens(all20):
    builder = ZMatrixBuilder(all20.topology, all20.positions)
    for residue in all20.topology.residues():
        assert builder.residue_variants[residue.index] == variant_of(residue)
