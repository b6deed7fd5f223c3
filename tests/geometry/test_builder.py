"""The batched side-chain builder (pyslice.geometry.builder); the dihedral it measures chis with.

A small peptide embedded below (PRO-PRO-PRO and ARG-ARG-ARG with hydrogens, from all20aa.pdb)
exercises everything without the shared data; the shared structures (skipped where absent) add
real proteins: every file round-trips, bpti's disulfides stay fixed, and chi values agree with an
independent numpy computation for all 20 residue types.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from openmm import app

from pyslice import _compiled, backends
from pyslice.geometry.angles import dihedral
from pyslice.geometry.builder import SideChainBuilder
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC

BOND_TOL = 1e-5  # nm
ANGLE_TOL = 1e-4  # rad
BACKBONE = {"N", "H", "H1", "H2", "H3", "CA", "HA", "HA2", "HA3", "C", "O", "OXT"}
# ARG's side chain outward from CB, so that chi k (k = 1..4) moves ARG_BEYOND[k] and what follows.
ARG_ORDER = ["HB2", "HB3", "CG", "HG2", "HG3", "CD", "HD2", "HD3", "NE", "HE", "CZ"]
ARG_ORDER += ["NH1", "HH11", "HH12", "NH2", "HH21", "HH22"]
ARG_BEYOND = {1: "HB2", 2: "HG2", 3: "HD2", 4: "HE"}


# ------------------------------------------------------------------------------------ helpers


def _read(source: str | Path) -> tuple[app.Topology, torch.Tensor]:
    pdb = app.PDBFile(io.StringIO(source) if isinstance(source, str) else str(source))
    positions = pdb.getPositions(asNumpy=True).value_in_unit(pdb.positions.unit)
    return pdb.topology, torch.tensor(np.asarray(positions), dtype=torch.float64)


def _peptide() -> tuple[app.Topology, torch.Tensor]:
    return _read(PEPTIDE_PDB)


def _residue(topology: app.Topology, name: str, number: str, chain: str) -> app.Residue:
    for residue in topology.residues():
        if (residue.name, residue.id, residue.chain.id) == (name, number, chain):
            return residue
    raise LookupError(f"{name} {number} {chain}")


def _bonds_and_angles(topology: app.Topology) -> tuple[np.ndarray, np.ndarray]:
    """(n_bonds, 2) and (n_angles, 3) atom indices; angle (i, j, k) has j bonded to i and k."""
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=np.int64)
    partners: dict[int, list[int]] = {}
    for i, j in bonds:
        partners.setdefault(int(i), []).append(int(j))
        partners.setdefault(int(j), []).append(int(i))
    angles = [(p[x], j, p[y]) for j, p in partners.items() for x in range(len(p)) for y in range(x)]
    return bonds, np.array(angles, dtype=np.int64).reshape(-1, 3)


def _assert_geometry_kept(topology: app.Topology, built: torch.Tensor, ref: torch.Tensor) -> None:
    """Every bond length and bond angle of every built structure is the reference's."""
    bonds, angles = _bonds_and_angles(topology)
    x = built.double().cpu().numpy()
    r = ref.double().cpu().numpy()[None]

    def lengths(p):
        return np.linalg.norm(p[:, bonds[:, 0]] - p[:, bonds[:, 1]], axis=-1)

    def bends(p):
        u = p[:, angles[:, 0]] - p[:, angles[:, 1]]
        v = p[:, angles[:, 2]] - p[:, angles[:, 1]]
        cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        return np.arccos(np.clip(cos, -1.0, 1.0))

    np.testing.assert_allclose(
        lengths(x), np.broadcast_to(lengths(r), (len(x), len(bonds))), atol=BOND_TOL
    )
    np.testing.assert_allclose(
        bends(x), np.broadcast_to(bends(r), (len(x), len(angles))), atol=ANGLE_TOL
    )


def _wrapped_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a.double() - b.double() + math.pi, 2 * math.pi) - math.pi


def _random_chi(builder: SideChainBuilder, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, builder.n_chi, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi


def _numpy_dihedral(p0, p1, p2, p3) -> np.ndarray:
    """Independent dihedral (projection form, IUPAC sign), float64."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


# ------------------------------------------------------------------------------- dihedrals


def test_dihedral_sign_range_and_gradient() -> None:
    # Looking along b -> c (+z), d a quarter turn clockwise from a: +90 degrees (IUPAC).
    p0, p1, p2 = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.float64)
    angles = torch.linspace(-math.pi, math.pi, 9, dtype=torch.float64)
    p3 = torch.stack([torch.cos(angles), torch.sin(angles), torch.ones_like(angles)], -1)
    got = dihedral(p0, p1, p2, p3)  # broadcast (3,) with (9, 3)
    expected = torch.remainder(angles + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert bool((got >= -math.pi).all() and (got < math.pi).all())
    assert float(got[-1]) == pytest.approx(-math.pi)  # +pi maps to -pi
    gen = torch.Generator().manual_seed(1)
    points = [
        torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(4)
    ]
    assert torch.autograd.gradcheck(dihedral, points)
    np.testing.assert_allclose(
        dihedral(*points).detach().numpy(),
        _numpy_dihedral(*(p.detach().numpy() for p in points)),
        atol=1e-12,
    )


# ------------------------------------------------------------------- the embedded peptide


def test_peptide_tables() -> None:
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    assert builder.n_atoms == topology.getNumAtoms() == 120
    # Three ARG with four chis each; the prolines are kept fixed.
    assert builder.n_chi == 12
    assert builder.chi_residue_names == ["ARG"] * 12
    assert builder.chi_index.tolist() == [[r, k] for r in (3, 4, 5) for k in range(4)]
    assert builder.movable_residues == (3, 4, 5)
    assert set(builder.fixed_residues) == {0, 1, 2}
    assert all("proline" in reason for reason in builder.fixed_residues.values())
    assert builder.pi_periodic.dtype == torch.bool and not builder.pi_periodic.any()
    assert builder.reference_positions.dtype == torch.float64
    torch.testing.assert_close(builder.reference_positions, positions, atol=0, rtol=0)
    for j, (residue, k) in enumerate(builder.chi_index.tolist()):
        atoms = {a.name: a.index for a in list(topology.residues())[residue].atoms()}
        assert builder.chi_atoms[j].tolist() == [atoms[n] for n in CHI_ATOMS["ARG"][k]]
        # The atoms rotated by chi k: ARG's side chain beyond the chi bond, hydrogens included.
        beyond = ARG_ORDER[ARG_ORDER.index(ARG_BEYOND[k + 1]) :]
        assert builder.downstream_atoms(j) == tuple(sorted(atoms[n] for n in beyond))


def test_peptide_round_trip_and_wrap(sidechain_build_backend) -> None:
    backend, device = sidechain_build_backend
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    chi = builder.chi_angles()
    for dtype in (torch.float32, torch.float64):
        # chi + 2 pi n is the same conformation.
        shifts = torch.tensor([0.0, 2.0, -6.0, 40.0], dtype=torch.float64)[:, None] * math.pi
        out = builder.build((chi + shifts).to(device, dtype), backend=backend)
        assert out.shape == (4, 120, 3) and out.dtype == dtype and out.device.type == device
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(
            out.double().cpu(), positions.expand(4, -1, -1), atol=tol, rtol=0
        )


def test_peptide_one_chi_at_a_time(sidechain_build_backend) -> None:
    """Rotating chi j moves exactly its downstream atoms, keeps every bond and angle, and sets chi
    j to the target while the other chis keep their values."""
    backend, device = sidechain_build_backend
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    chi0 = builder.chi_angles()
    targets = chi0 + torch.linspace(0.7, 2.9, builder.n_chi, dtype=torch.float64)
    x = chi0.repeat(builder.n_chi, 1)
    x[torch.arange(builder.n_chi), torch.arange(builder.n_chi)] = targets
    out = builder.build(x.to(device), backend=backend).cpu()
    _assert_geometry_kept(topology, out, positions)
    moved = (out - positions).norm(dim=-1) > 1e-9  # (n_chi, N)
    for j in range(builder.n_chi):
        assert set(torch.nonzero(moved[j]).flatten().tolist()) == set(builder.downstream_atoms(j))
    got = builder.chi_angles(out)
    expected = x.clone()
    assert float(_wrapped_gap(got, expected).abs().max()) < 1e-9


def test_peptide_random_chis(sidechain_build_case) -> None:
    backend, device, dtype = sidechain_build_case
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    x = _random_chi(builder, 9, seed=4) * 3  # beyond [-pi, pi): wrapped
    out = builder.build(x.to(device, dtype), backend=backend).cpu()
    got = builder.chi_angles(out.double())
    assert float(_wrapped_gap(got, x).abs().max()) < (2e-5 if dtype == torch.float32 else 1e-9)
    _assert_geometry_kept(topology, out, positions)
    # Atoms that no chi moves (backbones, prolines) are the reference's, bit for bit.
    fixed = torch.ones(builder.n_atoms, dtype=torch.bool)
    for j in range(builder.n_chi):
        fixed[list(builder.downstream_atoms(j))] = False
    assert torch.equal(out[:, fixed], positions[fixed].to(dtype).expand(9, -1, -1))
    backbone = [a.index for a in topology.atoms() if a.name in BACKBONE]
    assert bool(fixed[backbone].all())


@pytest.mark.parametrize("batch", [0, 1, 7])
def test_fast_path_matches_reference(fast_sidechain_build_case, batch: int) -> None:
    backend, device, dtype = fast_sidechain_build_case
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    x = (_random_chi(builder, batch, seed=batch) * 2).to(dtype)
    ref = builder.build(x, backend="reference")
    fast = builder.build(x.to(device), backend=backend)
    assert fast.shape == (batch, builder.n_atoms, 3) and fast.dtype == dtype
    assert fast.device.type == device
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast.cpu(), ref, atol=tol, rtol=0)


def test_fast_path_non_contiguous_chi(fast_sidechain_build_backend) -> None:
    backend, device = fast_sidechain_build_backend
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    wide = _random_chi(builder, 10, seed=3).repeat(1, 2).float().to(device)
    x = wide[::2, ::2]  # (5, n_chi), strided in both dimensions
    assert not x.is_contiguous()
    fast = builder.build(x, backend=backend)
    torch.testing.assert_close(fast, builder.build(x.contiguous(), backend=backend), atol=0, rtol=0)
    torch.testing.assert_close(
        fast.cpu(), builder.build(x.cpu(), backend="reference"), atol=1e-5, rtol=0
    )


def test_reference_gradient() -> None:
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions, movable=[4])  # one ARG: 4 chis
    x = _random_chi(builder, 2, seed=7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: builder.build(c, backend="reference"), (x,))
    # Without a backend the differentiable path is chosen; a compiled one refuses.
    builder.build(x).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    if _compiled.is_available():
        with pytest.raises(ValueError, match="not differentiable"):
            builder.build(x, backend="cpu")
        with torch.no_grad():
            builder.build(x, backend="cpu")


def test_automatic_backend_choice() -> None:
    impls = backends.implementations("sidechain_build")
    assert set(impls) == {"reference", "cpu", "cuda"}
    assert all(impl.dtypes == (torch.float32, torch.float64) for impl in impls.values())
    chosen = backends.select("sidechain_build", "cpu", torch.float32)
    assert chosen.backend == ("cpu" if _compiled.is_available() else "reference")
    with pytest.raises(backends.BackendUnavailable, match="cuda"):
        backends.select("sidechain_build", "cpu", torch.float32, backend="cuda")


# -------------------------------------------------------------------- movable and errors


def test_movable_selection(usable_backends) -> None:
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions, movable=[4, 0, 4])  # ARG 2 and a proline
    assert builder.movable_residues == (4,)
    assert builder.n_chi == 4 and builder.chi_index[:, 0].tolist() == [4] * 4
    assert "proline" in builder.fixed_residues[0]
    out = builder.build(_random_chi(builder, 3) * 2)
    ours = [a.index for a in list(topology.residues())[4].atoms()]
    others = torch.ones(builder.n_atoms, dtype=torch.bool)
    others[ours] = False
    assert torch.equal(out[:, others], positions[others].expand(3, -1, -1))
    assert not torch.equal(out[:, ours], positions[ours].expand(3, -1, -1))

    none = SideChainBuilder(topology, positions, movable=[0, 1])
    assert none.n_chi == 0 and none.chi_angles().shape == (0,)
    for backend in usable_backends("sidechain_build", "cpu"):
        out = none.build(torch.zeros(2, 0), backend=backend)
        assert torch.equal(out, positions.float().expand(2, -1, -1))
    assert SideChainBuilder(topology, positions, movable=torch.tensor([5])).movable_residues == (5,)


def test_missing_chi_atom() -> None:
    topology, positions = _peptide()
    modeller = app.Modeller(topology, positions.numpy().tolist())
    arg2 = _residue(modeller.topology, "ARG", "2", "O")
    modeller.delete([a for a in arg2.atoms() if a.name == "CZ"])
    top = modeller.topology
    pos = torch.tensor(np.asarray(modeller.getPositions().value_in_unit(modeller.positions.unit)))
    builder = SideChainBuilder(top, pos)
    assert builder.movable_residues == (3, 5)
    assert "CZ" in builder.fixed_residues[4]
    with pytest.raises(
        ValueError, match=r"movable: residue 4 \(chain O residue 2 ARG\).*missing chi atom\(s\) CZ"
    ):
        SideChainBuilder(top, pos, movable=[3, 4])


def test_bad_arguments() -> None:
    topology, positions = _peptide()
    builder = SideChainBuilder(topology, positions)
    with pytest.raises(TypeError, match="topology"):
        SideChainBuilder("not a topology", positions)
    with pytest.raises(ValueError, match=r"positions.*\(120, 3\)"):
        SideChainBuilder(topology, positions[:-1])
    with pytest.raises(ValueError, match="positions must be finite"):
        SideChainBuilder(topology, positions * float("nan"))
    with pytest.raises(TypeError, match="positions"):
        SideChainBuilder(topology, positions.long())
    with pytest.raises(ValueError, match=r"movable.*\[0, 6\).*6"):
        SideChainBuilder(topology, positions, movable=[6])
    with pytest.raises(ValueError, match="movable"):
        SideChainBuilder(topology, positions, movable=[-1])
    with pytest.raises(TypeError, match="movable"):
        SideChainBuilder(topology, positions, movable=[1.0])
    with pytest.raises(TypeError, match="movable"):
        SideChainBuilder(topology, positions, movable="ARG")
    x = torch.zeros(2, builder.n_chi)
    with pytest.raises(TypeError, match="chi must be a torch.Tensor"):
        builder.build(x.numpy())
    with pytest.raises(TypeError, match="chi.*float32 or float64"):
        builder.build(x.long())
    with pytest.raises(TypeError, match="chi.*float32 or float64"):
        builder.build(x.half())
    for bad in (x[0], x[:, :-1], x[None]):
        with pytest.raises(ValueError, match=r"chi must have shape \(B, n_chi\)"):
            builder.build(bad)
    x[1, 3] = float("inf")
    with pytest.raises(ValueError, match="chi must be finite"):
        builder.build(x)
    with pytest.raises(ValueError, match="positions.*n_atoms = 120"):
        builder.chi_angles(positions[:, :2])
    with pytest.raises(ValueError, match="positions"):
        builder.chi_angles(positions[0])
    with pytest.raises(ValueError, match="backend must be one of"):
        builder.build(torch.zeros(1, builder.n_chi), backend="fortran")


# ------------------------------------------------------------------- the shared structures


def _structure_files() -> list[str]:
    from pyslice._data import data_dir

    root = data_dir()
    if root is None:
        return ["(no shared data)"]
    folder = root / "structures"
    return [str(p.relative_to(folder)) for p in sorted(folder.glob("*.pdb"))] + [
        str(p.relative_to(folder)) for p in sorted(folder.glob("domains/*.pdb"))
    ]


@pytest.mark.parametrize("name", _structure_files())
def test_structure_round_trip(data_dir: Path, name: str) -> None:
    """build(chi_angles()) reproduces the structure; so does building it back from a random
    conformation (a builder made on that conformation, given the original chis)."""
    topology, positions = _read(data_dir / "structures" / name)
    builder = SideChainBuilder(topology, positions)
    chi = builder.chi_angles()
    for dtype in (torch.float32, torch.float64):
        out = builder.build(chi[None].to(dtype))
        torch.testing.assert_close(out[0].double(), positions, atol=1e-4, rtol=0)
    away = builder.build(_random_chi(builder, 1, seed=11) * 2)
    back = SideChainBuilder(topology, away[0])
    assert back.n_chi == builder.n_chi
    for dtype in (torch.float32, torch.float64):
        again = back.build(chi[None].to(dtype))
        torch.testing.assert_close(again[0].double(), positions, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["bpti.pdb", "t4-lysozyme.pdb"])
def test_protein_one_chi_at_a_time(data_dir: Path, name: str, usable_backends) -> None:
    """On whole proteins with hydrogens: every chi rotated alone, in one batch."""
    topology, positions = _read(data_dir / "structures" / name)
    assert any(a.element.symbol == "H" for a in topology.atoms())
    builder = SideChainBuilder(topology, positions)
    chi0 = builder.chi_angles()
    n = builder.n_chi
    x = chi0.repeat(n, 1)
    turns = torch.linspace(0.5, 3.0, n, dtype=torch.float64) * (1 - 2 * (torch.arange(n) % 2))
    x[torch.arange(n), torch.arange(n)] += turns  # never 0: every row moves
    out = builder.build(x)
    _assert_geometry_kept(topology, out, positions)
    assert float(_wrapped_gap(builder.chi_angles(out), x).abs().max()) < 1e-9
    moved = (out - positions).norm(dim=-1) > 1e-9
    atoms = list(topology.atoms())
    for j in range(n):
        got = set(torch.nonzero(moved[j]).flatten().tolist())
        assert got == set(builder.downstream_atoms(j))
        residue = int(builder.chi_index[j, 0])
        # Independently of the builder's graph walk: one residue, no backbone, not a, b, c; d moves.
        assert {atoms[i].residue.index for i in got} == {residue}
        assert not {atoms[i].name for i in got} & BACKBONE
        a, b, c, d = builder.chi_atoms[j].tolist()
        assert not {a, b, c} & got and d in got
        if int(builder.chi_index[j, 1]) > 0:
            assert got < set(builder.downstream_atoms(j - 1))
    for dtype in (torch.float32, torch.float64):
        for backend in set(usable_backends("sidechain_build", "cpu")) - {"reference"}:
            fast = builder.build(x[::7].to(dtype), backend=backend)
            ref = builder.build(x[::7].to(dtype), backend="reference")
            torch.testing.assert_close(
                fast, ref, atol=2e-5 if dtype == torch.float32 else 1e-12, rtol=0
            )


def test_bpti_disulfides_and_prolines_stay(data_dir: Path) -> None:
    topology, positions = _read(data_dir / "structures" / "bpti.pdb")
    residues = list(topology.residues())
    cys = [r.index for r in residues if r.name == "CYS"]
    pro = [r.index for r in residues if r.name == "PRO"]
    assert len(cys) == 6 and len(pro) == 4
    builder = SideChainBuilder(topology, positions)
    assert set(builder.fixed_residues) == set(cys) | set(pro)
    assert all("disulfide" in builder.fixed_residues[i] for i in cys)
    assert not set(builder.movable_residues) & (set(cys) | set(pro))
    asked = SideChainBuilder(topology, positions, movable=cys + pro + [0])
    assert asked.movable_residues == (0,)  # ARG 1
    out = builder.build(_random_chi(builder, 4) * 2)
    kept = [a.index for r in cys + pro for a in residues[r].atoms()]
    assert torch.equal(out[:, kept], positions[kept].expand(4, -1, -1))
    # Renamed as Amber does (CYX, HIE, ...), the residues are still recognised.
    for r in residues:
        if r.name == "CYS":
            r.name = "CYX"
    assert SideChainBuilder(topology, positions).n_chi == builder.n_chi


def test_all20aa_chis_match_numpy(data_dir: Path) -> None:
    topology, positions = _read(data_dir / "structures" / "all20aa.pdb")
    builder = SideChainBuilder(topology, positions)
    residues = list(topology.residues())
    seen = set()
    p = positions.numpy()
    for j, (r, k) in enumerate(builder.chi_index.tolist()):
        atoms = {a.name: a.index for a in residues[r].atoms()}
        quad = [p[atoms[n]] for n in CHI_ATOMS[residues[r].name][k]]
        assert float(builder.chi_angles()[j]) == pytest.approx(
            float(_numpy_dihedral(*quad)), abs=1e-9
        )
        assert bool(builder.pi_periodic[j]) == PI_PERIODIC[residues[r].name][k]
        seen.add(residues[r].name)
    assert seen == set(CHI_ATOMS) - {"PRO"}
    # Proline is measured but not moved: its chis by the same dihedral function.
    for r in residues:
        if r.name == "PRO":
            atoms = {a.name: a.index for a in r.atoms()}
            for names in CHI_ATOMS["PRO"]:
                quad = [positions[atoms[n]] for n in names]
                expected = _numpy_dihedral(*(q.numpy() for q in quad))
                assert float(dihedral(*quad)) == pytest.approx(float(expected), abs=1e-9)
    # His variants: the residue names Amber uses map to their parent type.
    for r in residues:
        if r.name == "HIS":
            r.name = "HIE"
    renamed = SideChainBuilder(topology, positions)
    assert renamed.n_chi == builder.n_chi and renamed.chi_residue_names == builder.chi_residue_names


# ------------------------------------------------------------------------------ fixtures


# PRO-PRO-PRO (chain M) and ARG-ARG-ARG (chain O) with hydrogens: chains M and O of all20aa.pdb
# (OpenMM's test data, MIT licence), written by openmm.app.PDBFile.
PEPTIDE_PDB = """\
ATOM      1  N   PRO M   1      16.443  18.010  -0.787  1.00  0.00           N
ATOM      2  H   PRO M   1      16.806  17.313  -0.155  1.00  0.00           H
ATOM      3  H2  PRO M   1      17.265  18.339  -1.302  1.00  0.00           H
ATOM      4  CD  PRO M   1      15.365  17.450  -1.667  1.00  0.00           C
ATOM      5  HD3 PRO M   1      15.566  17.709  -2.729  1.00  0.00           H
ATOM      6  HD2 PRO M   1      15.333  16.345  -1.553  1.00  0.00           H
ATOM      7  CA  PRO M   1      15.890  19.118   0.036  1.00  0.00           C
ATOM      8  HA  PRO M   1      16.041  20.004  -0.560  1.00  0.00           H
ATOM      9  CB  PRO M   1      14.431  18.687   0.222  1.00  0.00           C
ATOM     10  HB3 PRO M   1      13.780  19.541   0.504  1.00  0.00           H
ATOM     11  HB2 PRO M   1      14.344  17.895   1.001  1.00  0.00           H
ATOM     12  CG  PRO M   1      14.068  18.108  -1.157  1.00  0.00           C
ATOM     13  HG3 PRO M   1      13.226  17.388  -1.101  1.00  0.00           H
ATOM     14  HG2 PRO M   1      13.786  18.937  -1.845  1.00  0.00           H
ATOM     15  C   PRO M   1      16.771  19.126   1.260  1.00  0.00           C
ATOM     16  O   PRO M   1      16.978  18.025   1.770  1.00  0.00           O
ATOM     17  N   PRO M   2      17.313  20.229   1.759  1.00  0.00           N
ATOM     18  CD  PRO M   2      16.932  21.594   1.384  1.00  0.00           C
ATOM     19  HD3 PRO M   2      15.873  21.779   1.669  1.00  0.00           H
ATOM     20  HD2 PRO M   2      17.078  21.756   0.291  1.00  0.00           H
ATOM     21  CA  PRO M   2      18.494  20.192   2.607  1.00  0.00           C
ATOM     22  HA  PRO M   2      18.378  19.426   3.361  1.00  0.00           H
ATOM     23  CB  PRO M   2      18.509  21.599   3.231  1.00  0.00           C
ATOM     24  HB3 PRO M   2      17.853  21.587   4.130  1.00  0.00           H
ATOM     25  HB2 PRO M   2      19.522  21.929   3.539  1.00  0.00           H
ATOM     26  CG  PRO M   2      17.876  22.515   2.171  1.00  0.00           C
ATOM     27  HG3 PRO M   2      17.346  23.377   2.624  1.00  0.00           H
ATOM     28  HG2 PRO M   2      18.661  22.896   1.483  1.00  0.00           H
ATOM     29  C   PRO M   2      19.776  19.834   1.843  1.00  0.00           C
ATOM     30  O   PRO M   2      20.474  18.947   2.335  1.00  0.00           O
ATOM     31  N   PRO M   3      20.162  20.468   0.738  1.00  0.00           N
ATOM     32  CD  PRO M   3      21.256  21.447   0.891  1.00  0.00           C
ATOM     33  HD3 PRO M   3      21.805  21.344   1.857  1.00  0.00           H
ATOM     34  HD2 PRO M   3      20.811  22.463   0.826  1.00  0.00           H
ATOM     35  CA  PRO M   3      20.418  19.674  -0.468  1.00  0.00           C
ATOM     36  HA  PRO M   3      20.958  18.773  -0.208  1.00  0.00           H
ATOM     37  CB  PRO M   3      21.281  20.600  -1.328  1.00  0.00           C
ATOM     38  HB3 PRO M   3      20.646  21.384  -1.797  1.00  0.00           H
ATOM     39  HB2 PRO M   3      21.823  20.040  -2.117  1.00  0.00           H
ATOM     40  CG  PRO M   3      22.205  21.226  -0.291  1.00  0.00           C
ATOM     41  HG3 PRO M   3      22.991  20.492  -0.002  1.00  0.00           H
ATOM     42  HG2 PRO M   3      22.680  22.163  -0.644  1.00  0.00           H
ATOM     43  C   PRO M   3      19.155  19.269  -1.197  1.00  0.00           C
ATOM     44  O   PRO M   3      18.999  18.062  -1.530  1.00  0.00           O
ATOM     45  OXT PRO M   3      18.262  20.129  -1.432  1.00  0.00           O
TER      46      PRO M   3
ATOM     47  N   ARG O   1      13.197  12.006  38.356  1.00  0.00           N
ATOM     48  H   ARG O   1      12.999  12.620  39.174  1.00  0.00           H
ATOM     49  H2  ARG O   1      12.269  11.679  37.986  1.00  0.00           H
ATOM     50  H3  ARG O   1      13.750  11.172  38.695  1.00  0.00           H
ATOM     51  CA  ARG O   1      14.066  12.739  37.389  1.00  0.00           C
ATOM     52  HA  ARG O   1      14.926  12.115  37.195  1.00  0.00           H
ATOM     53  CB  ARG O   1      13.334  13.054  36.042  1.00  0.00           C
ATOM     54  HB3 ARG O   1      12.240  12.946  36.174  1.00  0.00           H
ATOM     55  HB2 ARG O   1      13.455  14.125  35.764  1.00  0.00           H
ATOM     56  CG  ARG O   1      13.771  12.232  34.793  1.00  0.00           C
ATOM     57  HG3 ARG O   1      14.700  12.686  34.379  1.00  0.00           H
ATOM     58  HG2 ARG O   1      12.982  12.358  34.015  1.00  0.00           H
ATOM     59  CD  ARG O   1      14.046  10.720  34.943  1.00  0.00           C
ATOM     60  HD3 ARG O   1      15.007  10.578  35.490  1.00  0.00           H
ATOM     61  HD2 ARG O   1      14.129  10.241  33.939  1.00  0.00           H
ATOM     62  NE  ARG O   1      12.915  10.079  35.682  1.00  0.00           N
ATOM     63  HE  ARG O   1      12.017  10.557  35.770  1.00  0.00           H
ATOM     64  CZ  ARG O   1      13.066   9.114  36.583  1.00  0.00           C
ATOM     65  NH1 ARG O   1      14.162   8.397  36.660  1.00  0.00           N
ATOM     66 HH11 ARG O   1      14.506   8.224  37.601  1.00  0.00           H
ATOM     67 HH12 ARG O   1      14.856   8.580  35.990  1.00  0.00           H
ATOM     68  NH2 ARG O   1      12.139   8.971  37.503  1.00  0.00           N
ATOM     69 HH21 ARG O   1      11.387   9.654  37.539  1.00  0.00           H
ATOM     70 HH22 ARG O   1      12.371   8.514  38.365  1.00  0.00           H
ATOM     71  C   ARG O   1      14.603  13.965  38.096  1.00  0.00           C
ATOM     72  O   ARG O   1      14.263  14.199  39.254  1.00  0.00           O
ATOM     73  N   ARG O   2      15.461  14.778  37.450  1.00  0.00           N
ATOM     74  H   ARG O   2      15.751  14.601  36.516  1.00  0.00           H
ATOM     75  CA  ARG O   2      16.075  15.905  38.126  1.00  0.00           C
ATOM     76  HA  ARG O   2      15.897  15.832  39.190  1.00  0.00           H
ATOM     77  CB  ARG O   2      15.435  17.234  37.641  1.00  0.00           C
ATOM     78  HB3 ARG O   2      14.339  17.125  37.831  1.00  0.00           H
ATOM     79  HB2 ARG O   2      15.550  17.327  36.539  1.00  0.00           H
ATOM     80  CG  ARG O   2      15.885  18.555  38.317  1.00  0.00           C
ATOM     81  HG3 ARG O   2      16.845  18.909  37.881  1.00  0.00           H
ATOM     82  HG2 ARG O   2      15.126  19.321  38.033  1.00  0.00           H
ATOM     83  CD  ARG O   2      15.962  18.549  39.857  1.00  0.00           C
ATOM     84  HD3 ARG O   2      15.799  19.581  40.245  1.00  0.00           H
ATOM     85  HD2 ARG O   2      15.188  17.874  40.284  1.00  0.00           H
ATOM     86  NE  ARG O   2      17.352  18.142  40.239  1.00  0.00           N
ATOM     87  HE  ARG O   2      18.121  18.477  39.652  1.00  0.00           H
ATOM     88  CZ  ARG O   2      17.710  17.239  41.140  1.00  0.00           C
ATOM     89  NH1 ARG O   2      18.979  16.895  41.217  1.00  0.00           N
ATOM     90 HH11 ARG O   2      19.219  16.040  41.645  1.00  0.00           H
ATOM     91 HH12 ARG O   2      19.597  17.229  40.480  1.00  0.00           H
ATOM     92  NH2 ARG O   2      16.853  16.641  41.937  1.00  0.00           N
ATOM     93 HH21 ARG O   2      17.194  15.995  42.604  1.00  0.00           H
ATOM     94 HH22 ARG O   2      15.902  16.906  41.882  1.00  0.00           H
ATOM     95  C   ARG O   2      17.587  15.823  38.011  1.00  0.00           C
ATOM     96  O   ARG O   2      18.215  15.038  38.716  1.00  0.00           O
ATOM     97  N   ARG O   3      18.214  16.634  37.141  1.00  0.00           N
ATOM     98  H   ARG O   3      17.706  17.270  36.575  1.00  0.00           H
ATOM     99  CA  ARG O   3      19.645  16.855  37.195  1.00  0.00           C
ATOM    100  HA  ARG O   3      20.148  15.913  37.375  1.00  0.00           H
ATOM    101  CB  ARG O   3      20.175  17.462  35.869  1.00  0.00           C
ATOM    102  HB3 ARG O   3      19.994  16.703  35.074  1.00  0.00           H
ATOM    103  HB2 ARG O   3      19.587  18.369  35.610  1.00  0.00           H
ATOM    104  CG  ARG O   3      21.683  17.807  35.891  1.00  0.00           C
ATOM    105  HG3 ARG O   3      22.192  17.060  36.541  1.00  0.00           H
ATOM    106  HG2 ARG O   3      22.095  17.687  34.863  1.00  0.00           H
ATOM    107  CD  ARG O   3      21.990  19.241  36.358  1.00  0.00           C
ATOM    108  HD3 ARG O   3      21.415  19.551  37.256  1.00  0.00           H
ATOM    109  HD2 ARG O   3      21.731  19.961  35.548  1.00  0.00           H
ATOM    110  NE  ARG O   3      23.460  19.333  36.637  1.00  0.00           N
ATOM    111  HE  ARG O   3      24.066  19.646  35.918  1.00  0.00           H
ATOM    112  CZ  ARG O   3      24.005  19.057  37.817  1.00  0.00           C
ATOM    113  NH1 ARG O   3      23.334  18.606  38.853  1.00  0.00           N
ATOM    114 HH11 ARG O   3      23.785  18.372  39.697  1.00  0.00           H
ATOM    115 HH12 ARG O   3      22.354  18.342  38.769  1.00  0.00           H
ATOM    116  NH2 ARG O   3      25.305  19.237  37.968  1.00  0.00           N
ATOM    117 HH21 ARG O   3      25.711  19.044  38.850  1.00  0.00           H
ATOM    118 HH22 ARG O   3      25.839  19.587  37.212  1.00  0.00           H
ATOM    119  C   ARG O   3      19.976  17.794  38.376  1.00  0.00           C
ATOM    120  O   ARG O   3      20.857  17.451  39.206  1.00  0.00           O
ATOM    121  OXT ARG O   3      19.345  18.874  38.494  1.00  0.00           O
TER     122      ARG O   3
END
"""
