"""Protein: reading real structures, ideal peptides, dihedrals, side chains, writers, bad input.

Tests that read the shared structures skip (through the ``data_dir`` fixture) where it is absent;
everything else builds its inputs with ``Protein.from_sequence``, so a fresh clone exercises it.
"""

from __future__ import annotations

import functools
import io
import math
import os
import random
import struct
import time
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from pyslice._data import data_dir as find_data
from pyslice.structure import AMINO_ACIDS, CAPS, Protein

_DATA = find_data()
ALL20 = "ACDEFGHIKLMNPQRSTVWY"
SLOW = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PYSLICE_SLOW") != "1", reason="slow: set PYSLICE_SLOW=1"),
]


def _names(folder: str, every: int = 1) -> list:
    """File names for parametrisation; one placeholder (skipped by ``data_dir``) without data."""
    if _DATA is None or not (_DATA / folder).is_dir():
        return [pytest.param(None, id="no-data")]
    return sorted(p.name for p in (_DATA / folder).glob("*.pdb"))[::every]


@pytest.fixture(scope="module")
def forcefield() -> app.ForceField:
    return app.ForceField("amber14-all.xml")


@functools.cache
def _peptide(seq: str, backbone: str = "helix") -> Protein:
    """Protein.from_sequence, built once per module run (a Protein is never changed in place)."""
    return Protein.from_sequence(seq, backbone)


@functools.cache
def _structure(path: Path) -> Protein:
    return Protein.from_pdb(path)


@pytest.fixture(scope="module")
def gvg() -> Protein:
    return _peptide("GVG")


@pytest.fixture(scope="module")
def all20() -> Protein:
    return _peptide(ALL20, "helix")


def _pdb_text(protein: Protein, tmp_path: Path, name: str = "in.pdb") -> str:
    path = tmp_path / name
    protein.to_pdb(path)
    return path.read_text()


def _write(tmp_path: Path, text: str, name: str = "edited.pdb") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _atom_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ATOM", "HETATM"))]


def _edit_pdb(text: str, keep=None, rename=None) -> str:
    """PDB text with ATOM/HETATM lines kept where ``keep(line)``, rewritten by ``rename``."""
    out = []
    for line in text.splitlines():
        if line.startswith(("ATOM", "HETATM")):
            if keep is not None and not keep(line):
                continue
            if rename is not None:
                line = rename(line)
        elif line.startswith("CONECT"):
            continue  # serial numbers may no longer match
        out.append(line)
    return "\n".join(out) + "\n"


def _residue_number(line: str) -> int:
    return int(line[22:26])


def _has_hydrogens(protein: Protein) -> bool:
    return any(a.element is not None and a.element.symbol == "H" for a in protein.topology.atoms())


def _hydrogens_on(protein: Protein, residue: int, name: str) -> int:
    """How many hydrogens are bonded to atom ``name`` of residue ``residue``."""
    count = 0
    for a, b in protein.topology.bonds():
        for heavy, other in ((a, b), (b, a)):
            if heavy.residue.index == residue and heavy.name == name:
                count += other.element.symbol == "H"
    return count


def _angle_diff(a: torch.Tensor, b: float) -> torch.Tensor:
    """|a - b| on the circle, radians."""
    return torch.remainder(a - b + math.pi, 2 * math.pi).sub(math.pi).abs()


# ---------------------------------------------------------------- shared structures


def _check_structure(path: Path, forcefield: app.ForceField, tmp_path: Path) -> float:
    """Read, check hydrogens and createSystem, round-trip through to_pdb; returns the read time."""
    start = time.perf_counter()
    protein = _structure(path)
    seconds = time.perf_counter() - start
    assert protein.n_atoms == protein.positions.shape[0] > 0
    assert protein.positions.dtype == torch.float64
    assert _has_hydrogens(protein)
    forcefield.createSystem(protein.topology)
    out = tmp_path / path.name
    protein.to_pdb(out)
    again = Protein.from_pdb(out)
    assert again.n_atoms == protein.n_atoms
    assert again.residue_names == protein.residue_names
    assert [a.name for a in again.topology.atoms()] == [a.name for a in protein.topology.atoms()]
    assert torch.allclose(again.positions, protein.positions, rtol=0, atol=1e-4)
    # With its hydrogens, the protein is rebuilt from its own chi angles.
    rebuilt = protein.build(protein.chi_angles()[None])
    assert torch.allclose(rebuilt[0].double(), protein.positions, rtol=0, atol=1e-4)
    return seconds


@pytest.mark.parametrize("name", _names("structures"))
def test_structures_read_and_round_trip(data_dir, name, forcefield, tmp_path) -> None:
    seconds = _check_structure(data_dir / "structures" / name, forcefield, tmp_path)
    print(f"{name}: read in {seconds:.2f} s")


@pytest.mark.parametrize("name", _names("structures/domains"))
def test_domains_read_and_round_trip(data_dir, name, forcefield, tmp_path) -> None:
    seconds = _check_structure(data_dir / "structures" / "domains" / name, forcefield, tmp_path)
    print(f"{name}: read in {seconds:.2f} s")


def _top240_params() -> list:
    """Every 40th file in the default run (1a2p: three chains, altlocs; 1etn: deposited hydrogens;
    1lkk: an ACE cap, a loose one, hydrogens, two chains; 1smd: 7700 atoms; 2ihl), which keeps
    this file near a minute; the other 195 (about 8 minutes) with PYSLICE_SLOW=1."""
    names = _names("structures/top240")
    if names and not isinstance(names[0], str):
        return names
    return [n if i % 40 == 0 else pytest.param(n, marks=SLOW) for i, n in enumerate(names)]


@pytest.mark.parametrize("name", _top240_params())
def test_top240_reads_cleanly(data_dir, name, forcefield) -> None:
    """Raw PDB entries: waters, ligands and ions gone, altlocs resolved, every chain kept. One
    file, 2er7, holds an unknown residue (LOV in its inhibitor chain): a clear error, or frozen."""
    path = data_dir / "structures" / "top240" / name
    if name == "2er7.pdb":
        with pytest.raises(ValueError, match="unknown residue chain I residue 6 LOV"):
            Protein.from_pdb(path)
        assert "LOV" in Protein.from_pdb(path, unknown="freeze").residue_names
        return
    start = time.perf_counter()
    protein = Protein.from_pdb(path)
    print(f"{name}: read in {time.perf_counter() - start:.2f} s")
    assert set(protein.residue_names) <= set(AMINO_ACIDS) | CAPS
    assert _has_hydrogens(protein)
    forcefield.createSystem(protein.topology)
    # Every protein chain id of the file is still there (1aay's DNA chains are not).
    chains_in_file = {
        line[21] for line in _atom_lines(path.read_text()) if line[17:20] in AMINO_ACIDS
    }
    assert {c.id for c in protein.topology.chains()} == chains_in_file
    _check_first_altloc_kept(path.read_text(), protein)


def _check_first_altloc_kept(text: str, protein: Protein) -> None:
    """Atoms with alternate locations sit at their first record's coordinates."""
    first: dict[tuple[str, str, str], np.ndarray] = {}
    for line in _atom_lines(text):
        if line[16] != " " and line[17:20] in AMINO_ACIDS:
            key = (line[21], line[22:27].strip(), line[12:16].strip())
            xyz = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
            first.setdefault(key, np.array(xyz) / 10.0)  # Angstrom -> nm
    x = protein.positions.numpy()
    found = 0
    for atom in protein.topology.atoms():
        key = (
            atom.residue.chain.id,
            atom.residue.id + atom.residue.insertionCode.strip(),
            atom.name,
        )
        if key in first:
            assert np.allclose(x[atom.index], first[key], atol=1e-6), key
            found += 1
    assert found > 0 or not first


def test_disulfides_and_histidines(data_dir) -> None:
    """BPTI: three disulfides become bonded CYX (no HG); each HIS-like choice is a valid variant."""
    protein = _structure(data_dir / "structures" / "bpti.pdb")
    ss = [
        (a, b)
        for a, b in protein.topology.bonds()
        if a.name == "SG" and b.name == "SG" and a.residue is not b.residue
    ]
    assert len(ss) == 3
    for residue in protein.topology.residues():
        names = {a.name for a in residue.atoms()}
        if residue.name == "CYS":
            assert "HG" not in names
    # t4-lysozyme has histidines: each gets HD1, HE2 or both.
    t4 = _structure(data_dir / "structures" / "t4-lysozyme.pdb")
    for residue in t4.topology.residues():
        if residue.name == "HIS":
            names = {a.name for a in residue.atoms()}
            assert names & {"HD1", "HE2"}


def test_caps_kept_and_not_movable(data_dir) -> None:
    protein = _structure(data_dir / "structures" / "alanine-dipeptide-implicit.pdb")
    assert protein.residue_names == ["ACE", "ALA", "NME"]
    assert protein.movable == (1,)
    assert protein.sequence == "A"
    phi, psi, omega = protein.backbone_dihedrals()[1]
    assert torch.isfinite(phi) and torch.isfinite(psi) and torch.isfinite(omega)
    assert torch.isnan(protein.backbone_dihedrals()[[0, 2]]).all()
    with pytest.raises(ValueError, match="residue 0 .*ACE.* not a standard amino acid"):
        Protein.from_pdb(data_dir / "structures" / "alanine-dipeptide-implicit.pdb", movable=[0, 1])


# ---------------------------------------------------------------- ideal peptides


@pytest.mark.parametrize("backbone", ["helix", "extended"])
@pytest.mark.parametrize("seq", ["GVG", "GLG", ALL20])
def test_from_sequence_ideal_bonds(seq, backbone, forcefield) -> None:
    protein = _peptide(seq, backbone)
    assert protein.sequence == seq
    assert protein.n_residues == len(seq)
    assert _has_hydrogens(protein)
    system = forcefield.createSystem(protein.topology, constraints=None)
    bonds = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    x = protein.positions.numpy()
    worst = 0.0
    for k in range(bonds.getNumBonds()):
        i, j, r0, _ = bonds.getBondParameters(k)
        length = np.linalg.norm(x[i] - x[j])
        worst = max(worst, abs(length - r0.value_in_unit(unit.nanometer)))
    assert worst < 0.002
    # Charged termini: NH3+ and COO-.
    assert _hydrogens_on(protein, 0, "N") == 3
    assert "OXT" in {a.name for a in list(protein.topology.residues())[-1].atoms()}


def test_helix_and_extended_dihedrals(all20) -> None:
    bd = all20.backbone_dihedrals()
    assert bd.shape == (20, 3) and bd.dtype == torch.float64
    assert torch.isnan(bd[0, 0]) and torch.isnan(bd[0, 2]) and torch.isnan(bd[-1, 1])
    inner = bd[1:-1]
    deg = math.radians
    pro = ALL20.index("P")
    phi_target = torch.full((18,), deg(-57), dtype=torch.float64)
    phi_target[pro - 1] = deg(-63)  # the presets give proline its ring's phi
    assert (_angle_diff(inner[:, 0] - phi_target, 0.0) < 1e-6).all()
    assert (_angle_diff(inner[:, 1], deg(-47)) < 1e-6).all()
    assert (_angle_diff(bd[1:, 2], math.pi) < 1e-6).all()

    extended = _peptide(ALL20, "extended").backbone_dihedrals()
    phi_target = torch.full((19,), math.pi, dtype=torch.float64)
    phi_target[pro - 1] = deg(-63)
    assert (_angle_diff(extended[1:, 0] - phi_target, 0.0) < 1e-6).all()
    assert (_angle_diff(extended[:-1, 1], math.pi) < 1e-6).all()
    # Angles are wrapped to [-pi, pi).
    finite = extended[torch.isfinite(extended)]
    assert (finite >= -math.pi).all() and (finite < math.pi).all()


def test_from_sequence_explicit_backbone() -> None:
    phi = np.radians([0.0, -75.0, -140.0, -63.0])
    psi = np.radians([145.0, 145.0, 135.0, 0.0])
    bd = Protein.from_sequence("AAAP", (phi, psi)).backbone_dihedrals()
    assert (_angle_diff(bd[1:, 0] - torch.from_numpy(phi[1:]), 0.0) < 1e-6).all()
    assert (_angle_diff(bd[:-1, 1] - torch.from_numpy(psi[:-1]), 0.0) < 1e-6).all()
    scalar = Protein.from_sequence("AAA", (-1.2, 2.5)).backbone_dihedrals()
    assert _angle_diff(scalar[1, 0], -1.2) < 1e-6 and _angle_diff(scalar[1, 1], 2.5) < 1e-6


def test_ph_reaches_protonation() -> None:
    names_at = {
        ph: {a.name for a in Protein.from_sequence("GHG", ph=ph).topology.atoms()}
        for ph in (7.0, 5.0)
    }
    assert len(names_at[7.0] & {"HD1", "HE2"}) == 1
    assert {"HD1", "HE2"} <= names_at[5.0]


def test_reading_is_reproducible(gvg, tmp_path) -> None:
    """Hydrogens start from OpenMM's random positions: seeded, without touching the caller's
    random state."""
    heavy = _edit_pdb(_pdb_text(gvg, tmp_path), keep=lambda line: line[76:78].strip() != "H")
    path = _write(tmp_path, heavy)
    random.seed(5)
    expected = random.random()
    random.seed(5)
    first = Protein.from_pdb(path)
    assert random.random() == expected
    assert torch.equal(Protein.from_pdb(path).positions, first.positions)
    assert first.n_atoms == gvg.n_atoms


@pytest.mark.parametrize(
    ("seq", "error", "match"),
    [
        ("GXG", ValueError, "'X' at position 1"),
        ("gvg", ValueError, "'g' at position 0"),
        ("GV G", ValueError, "' ' at position 2"),
        ("", ValueError, "at least 2 residues"),
        ("G", ValueError, "at least 2 residues"),
        (["G", "V"], TypeError, "seq must be a str"),
    ],
)
def test_from_sequence_bad_seq(seq, error, match) -> None:
    with pytest.raises(error, match=match):
        Protein.from_sequence(seq)


@pytest.mark.parametrize(
    ("backbone", "error", "match"),
    [
        ("sheet", ValueError, "backbone must be 'helix', 'extended'"),
        ((1.0,), ValueError, "pair"),
        (([0.0, 1.0], [0.0, 1.0, 2.0]), ValueError, r"backbone phi must .* shape \(3,\)"),
        (([0.0, 1.0, 2.0], [0.0, float("nan"), 2.0]), ValueError, "backbone psi must be finite"),
        (([0, 1, 2], [0.0, 1.0, 2.0]), TypeError, "backbone phi must have a floating dtype"),
        (("a", 0.0), TypeError, "backbone phi must be a tensor"),
    ],
)
def test_from_sequence_bad_backbone(backbone, error, match) -> None:
    with pytest.raises(error, match=match):
        Protein.from_sequence("GAG", backbone)


def test_from_sequence_proline_phi_checked() -> None:
    with pytest.raises(ValueError, match="phi of proline 1"):
        Protein.from_sequence("APA", (math.pi, math.pi))


# ---------------------------------------------------------------- attributes


def test_attributes(all20) -> None:
    assert all20.n_atoms == all20.topology.getNumAtoms()
    assert all20.n_residues == 20
    assert all20.residue_names[:3] == ["ALA", "CYS", "ASP"]
    assert all20.movable == tuple(range(20))
    assert all20.forcefield == ("amber14-all.xml",)
    x = all20.positions
    assert x.shape == (all20.n_atoms, 3) and x.dtype == torch.float64
    x[0] += 1.0  # a copy: the protein does not change
    assert not torch.equal(all20.positions, x)
    assert "ACDEF" in repr(all20)


def test_with_positions_and_movable(gvg) -> None:
    moved = gvg.with_positions(gvg.positions + 0.1)
    assert torch.allclose(moved.positions, gvg.positions + 0.1)
    assert moved.topology is gvg.topology
    assert Protein.from_sequence("GVG", movable=[1]).movable == (1,)
    with pytest.raises(ValueError, match=r"positions must have shape \(\d+, 3\)"):
        gvg.with_positions(torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="positions must be finite"):
        gvg.with_positions(torch.full((gvg.n_atoms, 3), float("nan")))
    with pytest.raises(TypeError, match="positions must have a floating dtype"):
        gvg.with_positions(torch.zeros(gvg.n_atoms, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"movable must be in \[0, 3\), got 3"):
        Protein(gvg.topology, gvg.positions, movable=[3])
    with pytest.raises(TypeError, match="movable must be None or an iterable"):
        Protein(gvg.topology, gvg.positions, movable="1")
    with pytest.raises(TypeError, match="topology must be an openmm.app.Topology"):
        Protein("GVG", gvg.positions)


# ---------------------------------------------------------------- side chains (geometry.py)


def test_chi_angles_and_build_round_trip(all20) -> None:
    chi = all20.chi_angles()
    assert chi.shape == (all20.n_chi,) and all20.n_chi > 20
    assert all20.chi_index.shape == (all20.n_chi, 2)
    assert all20.pi_periodic.shape == (all20.n_chi,)
    assert set(all20.chi_index[:, 0].tolist()) <= set(all20.movable)
    rebuilt = all20.build(chi[None])
    assert rebuilt.shape == (1, all20.n_atoms, 3)
    assert torch.allclose(rebuilt[0].to(torch.float64), all20.positions, atol=1e-4)
    target = torch.remainder(chi + 0.7 + math.pi, 2 * math.pi) - math.pi
    moved = all20.build(torch.stack([chi, target]))
    again = all20.with_positions(moved[1].to(torch.float64)).chi_angles()
    assert (_angle_diff(again - target.to(again.dtype), 0.0) < 1e-3).all()
    # The backbone does not move.
    assert torch.allclose(
        all20.with_positions(moved[1].to(torch.float64)).backbone_dihedrals().nan_to_num(),
        all20.backbone_dihedrals().nan_to_num(),
        atol=1e-4,
    )


# ---------------------------------------------------------------- writers


def _read_dcd(path: Path) -> np.ndarray:
    """Frames ``(B, N, 3)`` in Angstrom from a DCD file without unit cells (Fortran records)."""
    data = path.read_bytes()
    offset = 0

    def record() -> bytes:
        nonlocal offset
        (size,) = struct.unpack_from("<i", data, offset)
        body = data[offset + 4 : offset + 4 + size]
        assert struct.unpack_from("<i", data, offset + 4 + size)[0] == size
        offset += size + 8
        return body

    header = record()
    assert header[:4] == b"CORD"
    n_frames = struct.unpack_from("<i", header, 4)[0]
    assert struct.unpack_from("<i", header, 44)[0] == 0  # no unit cell block
    record()  # titles
    (n_atoms,) = struct.unpack("<i", record())
    frames = []
    for _ in range(n_frames):
        xyz = [np.frombuffer(record(), dtype="<f4") for _ in range(3)]
        frames.append(np.stack(xyz, axis=-1))
    assert offset == len(data)
    return np.stack(frames).reshape(n_frames, n_atoms, 3)


def test_multi_model_pdb_and_dcd(gvg, tmp_path) -> None:
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, -0.2, 0.3]], dtype=torch.float64)
    batch = gvg.positions[None] + shift[:, None]
    gvg.to_pdb(tmp_path / "models.pdb", batch)
    text = (tmp_path / "models.pdb").read_text()
    assert text.count("\nMODEL") + text.startswith("MODEL") == 3 and text.count("ENDMDL") == 3
    pdb = app.PDBFile(str(tmp_path / "models.pdb"))
    assert pdb.getNumFrames() == 3
    for k in range(3):
        got = pdb.getPositions(asNumpy=True, frame=k).value_in_unit(unit.nanometer)
        assert np.allclose(got, batch[k].numpy(), atol=1e-4)
    # Reading a multi-model file takes its first model.
    assert torch.allclose(Protein.from_pdb(tmp_path / "models.pdb").positions, batch[0], atol=1e-4)
    # One frame: no MODEL records, and float32 works too.
    gvg.to_pdb(tmp_path / "one.pdb", batch[1].float())
    assert "MODEL" not in (tmp_path / "one.pdb").read_text()

    gvg.to_dcd(tmp_path / "traj.dcd", batch)
    frames = _read_dcd(tmp_path / "traj.dcd")
    assert frames.shape == (3, gvg.n_atoms, 3)
    assert np.allclose(frames / 10, batch.numpy(), atol=1e-5)
    gvg.to_dcd(tmp_path / "one.dcd", batch[2])
    assert _read_dcd(tmp_path / "one.dcd").shape == (1, gvg.n_atoms, 3)
    # Atomic writes leave nothing else behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "models.pdb",
        "one.dcd",
        "one.pdb",
        "traj.dcd",
    ]


def test_writers_reject_bad_input(gvg, tmp_path) -> None:
    n = gvg.n_atoms
    with pytest.raises(ValueError, match=rf"positions must have shape \(B, {n}, 3\) or \({n}, 3\)"):
        gvg.to_pdb(tmp_path / "x.pdb", torch.zeros(2, n + 1, 3))
    with pytest.raises(ValueError, match="at least one frame"):
        gvg.to_dcd(tmp_path / "x.dcd", torch.zeros(0, n, 3))
    with pytest.raises(ValueError, match="positions must be finite"):
        gvg.to_dcd(tmp_path / "x.dcd", torch.full((n, 3), float("inf")))
    with pytest.raises(ValueError, match="positions must be given"):
        gvg.to_dcd(tmp_path / "x.dcd", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gvg.to_pdb(tmp_path / "missing" / "x.pdb")
    assert list(tmp_path.iterdir()) == []
    # A failed write keeps the old file.
    gvg.to_pdb(tmp_path / "x.pdb")
    before = (tmp_path / "x.pdb").read_text()

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app.PDBFile, "writeFooter", explode)
        with pytest.raises(Boom):
            gvg.to_pdb(tmp_path / "x.pdb", gvg.positions + 1)
    assert (tmp_path / "x.pdb").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.pdb"]


# ---------------------------------------------------------------- reading: variants and options


def test_read_from_open_file_and_pdbx(gvg, tmp_path) -> None:
    text = _pdb_text(gvg, tmp_path)
    from_handle = Protein.from_pdb(io.StringIO(text))
    assert torch.allclose(from_handle.positions, gvg.positions, atol=1e-4)
    with open(tmp_path / "gvg.cif", "w") as f:
        app.PDBxFile.writeFile(gvg.topology, gvg.positions.numpy() * unit.nanometer, f)
    from_cif = Protein.from_pdbx(tmp_path / "gvg.cif")
    assert from_cif.n_atoms == gvg.n_atoms
    assert torch.allclose(from_cif.positions, gvg.positions, atol=1e-4)


def test_first_alternate_location_wins(gvg, tmp_path) -> None:
    """An atom's first record is kept even where a later altloc has the higher occupancy."""
    text = _pdb_text(gvg, tmp_path)
    out = []
    for line in text.splitlines():
        if line.startswith("ATOM") and line[17:20] == "VAL" and line[12:16].strip() == "CG1":
            a = line[:16] + "A" + line[17:54] + "  0.30" + line[60:]
            x = float(line[30:38]) + 1.0
            b = line[:16] + "B" + line[17:30] + f"{x:8.3f}" + line[38:54] + "  0.70" + line[60:]
            out += [a, b]
        else:
            out.append(line)
    protein = Protein.from_pdb(_write(tmp_path, "\n".join(out) + "\n"))
    assert protein.n_atoms == gvg.n_atoms
    assert torch.allclose(protein.positions, gvg.positions, atol=1e-4)


def test_water_ligands_and_modified_residues(tmp_path) -> None:
    peptide = Protein.from_sequence("GMGAG", "extended")
    text = _pdb_text(peptide, tmp_path)

    # Heavy atoms only, MET 2 as selenomethionine (MSE, HETATM, SE for SD).
    def rename(line: str) -> str:
        if line[17:20] == "MET":
            line = "HETATM" + line[6:17] + "MSE" + line[20:]
            if line[12:16] == " SD ":
                line = line[:12] + "SE  " + line[16:76] + "SE" + line[78:]
        return line

    heavy = _edit_pdb(text, keep=lambda line: line[76:78].strip() != "H", rename=rename)
    far = [
        "HETATM 9001  O   HOH W   1      40.000  40.000  40.000  1.00  0.00           O",
        "HETATM 9002  O   HOH W   2      43.000  40.000  40.000  1.00  0.00           O",
        "HETATM 9003 NA    NA I   1      30.000  30.000  30.000  1.00  0.00          NA",
        "HETATM 9004  C1  LIG L   1      35.000  35.000  35.000  1.00  0.00           C",
        "HETATM 9005  O1  LIG L   1      36.200  35.000  35.000  1.00  0.00           O",
    ]
    body = heavy.replace("END\n", "")
    path = _write(tmp_path, body + "\n".join(far) + "\nEND\n")
    protein = Protein.from_pdb(path)
    assert protein.residue_names == ["GLY", "MET", "GLY", "ALA", "GLY"]
    assert protein.n_atoms == peptide.n_atoms
    assert protein.sequence == "GMGAG"
    wet = Protein.from_pdb(
        path, keep_water=True, forcefield=("amber14-all.xml", "amber14/tip3pfb.xml")
    )
    assert wet.residue_names.count("HOH") == 2
    assert wet.n_atoms == peptide.n_atoms + 6
    assert wet.sequence == "GMGAG"
    assert wet.movable == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="adding hydrogens with forcefield .* failed"):
        Protein.from_pdb(path, keep_water=True)  # amber14-all alone has no water model


def test_chain_break_splits_the_chain(forcefield, tmp_path) -> None:
    peptide = _peptide("GAVLIGAVLI", "extended")
    text = _pdb_text(peptide, tmp_path)
    gapped = _edit_pdb(text, keep=lambda line: _residue_number(line) not in (5, 6))
    protein = Protein.from_pdb(_write(tmp_path, gapped))
    assert protein.sequence == "GAVL/AVLI"
    assert [c.id for c in protein.topology.chains()] == ["A", "A"]
    assert ("4", "OXT") in {(a.residue.id, a.name) for a in protein.topology.atoms()}
    assert _hydrogens_on(protein, 4, "N") == 3  # residue 7, now an N-terminus
    forcefield.createSystem(protein.topology)
    bd = protein.backbone_dihedrals()
    assert torch.isnan(bd[3, 1]) and torch.isnan(bd[4, 0])


def test_fragments_at_chain_ends_and_gaps_are_dropped(tmp_path) -> None:
    """Remains of residues (only C and O at the chain start, only N before missing residues) go;
    the same remains inside a chain are an error (test_missing_backbone_atom_is_named)."""
    text = _pdb_text(_peptide("GAVLIGAVLI", "extended"), tmp_path)

    def keep(line: str) -> bool:
        number, atom = _residue_number(line), line[12:16].strip()
        return {1: atom in ("C", "O"), 5: atom == "N", 6: False}.get(number, True)

    protein = Protein.from_pdb(_write(tmp_path, _edit_pdb(text, keep=keep)))
    assert protein.sequence == "AVL/AVLI"
    assert [r.id for r in protein.topology.residues()] == ["2", "3", "4", "7", "8", "9", "10"]


def test_unknown_residue_error_and_freeze(gvg, forcefield, tmp_path) -> None:
    text = _pdb_text(_peptide("GAG"), tmp_path)

    def to_xyz(line: str) -> str:
        return line[:17] + "XYZ" + line[20:] if line[17:20] == "ALA" else line

    path = _write(tmp_path, _edit_pdb(text, rename=to_xyz))
    with pytest.raises(ValueError, match="unknown residue chain A residue 2 XYZ"):
        Protein.from_pdb(path)
    frozen = Protein.from_pdb(path, unknown="freeze")
    assert frozen.residue_names == ["GLY", "XYZ", "GLY"]
    assert frozen.movable == (0, 2)
    assert frozen.sequence == "GXG"
    with pytest.raises(ValueError, match="No template found"):
        forcefield.createSystem(frozen.topology)
    with pytest.raises(ValueError, match="unknown must be 'error' or 'freeze'"):
        Protein.from_pdb(path, unknown="ignore")


# ---------------------------------------------------------------- reading: bad input


def test_bad_files(gvg, tmp_path) -> None:
    text = _pdb_text(gvg, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Protein.from_pdb(tmp_path / "nope.pdb")
    with pytest.raises(ValueError, match="is not a file"):
        Protein.from_pdb(tmp_path)
    with pytest.raises(ValueError, match="the file is empty"):
        Protein.from_pdb(_write(tmp_path, ""))
    with pytest.raises(ValueError, match="the file is empty"):
        Protein.from_pdb(_write(tmp_path, "\n  \n"))
    lines = text.splitlines(keepends=True)
    middle = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith("ATOM"))
    truncated = "".join(lines[:middle]) + lines[middle][:40]
    with pytest.raises(ValueError, match=f"line {middle + 1} is an incomplete ATOM record"):
        Protein.from_pdb(_write(tmp_path, truncated))
    with pytest.raises(ValueError, match="no atoms found"):
        Protein.from_pdb(_write(tmp_path, "This is not a PDB file.\nJust some text.\n"))
    (tmp_path / "bin.pdb").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="not a text file"):
        Protein.from_pdb(tmp_path / "bin.pdb")
    water_box = "".join(
        f"HETATM{i + 1:5d}  O   HOH W{i + 1:4d}    {3.1 * i:8.3f}   0.000   0.000  1.00  0.00"
        "           O\n"
        for i in range(5)
    )
    with pytest.raises(ValueError, match=r"not a protein: no amino-acid residues \(found 5 HOH\)"):
        Protein.from_pdb(_write(tmp_path, water_box))
    with pytest.raises(ValueError, match="could not be read as PDBx/mmCIF"):
        Protein.from_pdbx(_write(tmp_path, text, "gvg.cif"))


@pytest.mark.parametrize("atom", ["N", "CA", "C"])
def test_missing_backbone_atom_is_named(atom, tmp_path) -> None:
    text = _pdb_text(_peptide("GAVG"), tmp_path)
    broken = _edit_pdb(
        text, keep=lambda line: not (_residue_number(line) == 3 and line[12:16].strip() == atom)
    )
    with pytest.raises(
        ValueError, match=f"chain A residue 3 VAL is missing backbone atom.* {atom}"
    ):
        Protein.from_pdb(_write(tmp_path, broken))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ph": float("nan")}, ValueError, "ph must be finite"),
        ({"ph": 15.0}, ValueError, r"ph must be in \[0, 14\]"),
        ({"ph": "7"}, TypeError, "ph must be a number"),
        ({"forcefield": ()}, TypeError, "forcefield must be a non-empty sequence"),
        ({"forcefield": [1]}, TypeError, "forcefield must hold file names"),
        ({"forcefield": ("no-such-forcefield.xml",)}, ValueError, "could not be loaded"),
        ({"keep_water": 1}, TypeError, "keep_water must be a bool"),
    ],
)
def test_bad_options(gvg, tmp_path, kwargs, error, match) -> None:
    path = tmp_path / "gvg.pdb"
    gvg.to_pdb(path)
    with pytest.raises(error, match=match):
        Protein.from_pdb(path, **kwargs)


def test_bad_path_type() -> None:
    with pytest.raises(TypeError, match="path_or_file must be a path or an open text file"):
        Protein.from_pdb(42)
