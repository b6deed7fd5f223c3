"""The one PDB/PDBx rule set (pyslice.structure.reading): which suffixes are PDBx, for every
reader, and parsing a file as it is (no completion), as the packing metrics do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from openmm import app, unit

from pyslice import Protein
from pyslice.metrics import evaluate
from pyslice.structure.reading import PDBX_SUFFIXES, file_format, parse_structure


@pytest.fixture(scope="module")
def gvg() -> Protein:
    return Protein.from_sequence("GVG")


def _write_pdbx(protein: Protein, path: Path) -> Path:
    with open(path, "w") as f:
        app.PDBxFile.writeFile(protein.topology, protein.positions.numpy() * unit.nanometer, f)
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.cif", "pdbx"),
        ("x.CIF", "pdbx"),
        ("x.mmcif", "pdbx"),
        ("x.mmCIF", "pdbx"),
        ("x.pdbx", "pdbx"),
        ("dir.cif/x.pdb", "pdb"),
        ("x.pdb", "pdb"),
        ("x.ent", "pdb"),
        ("x", "pdb"),
    ],
)
def test_pdbx_suffix_rule(name: str, expected: str) -> None:
    assert file_format(name) == expected
    assert file_format(Path(name)) == expected


def test_suffixes_are_lower_case() -> None:
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in PDBX_SUFFIXES)


@pytest.mark.parametrize("name", ["gvg.mmcif", "GVG.CIF", "gvg.pdbx"])
def test_from_file_reads_every_pdbx_suffix(gvg, tmp_path, name) -> None:
    # .mmcif used to be read by `pyslice evaluate` but rejected (parsed as PDB) by from_file.
    protein = Protein.from_file(_write_pdbx(gvg, tmp_path / name))
    assert protein.n_atoms == gvg.n_atoms
    assert torch.allclose(protein.positions, gvg.positions, atol=1e-4)


def test_metrics_read_the_same_suffixes(gvg, tmp_path) -> None:
    gvg.to_pdb(tmp_path / "gvg.pdb")
    result = evaluate(_write_pdbx(gvg, tmp_path / "gvg.mmcif"), tmp_path / "gvg.pdb")
    assert result["n_matched"] == 3
    assert result["rmsd_nm"] == pytest.approx(0.0, abs=1e-4)
    assert result["chi_accuracy"]["chi1"] == 1.0


def test_parse_structure_keeps_the_file_as_it_is(gvg, tmp_path) -> None:
    path = tmp_path / "gvg.pdb"
    gvg.to_pdb(path)
    # Drop every hydrogen: parsing must not add them back (reading would).
    text = "".join(
        line
        for line in path.read_text().splitlines(keepends=True)
        if not (line.startswith("ATOM") and line[76:78].strip() == "H")
    )
    path.write_text(text)
    topology, xyz = parse_structure(path)
    heavy = [a.index for a in gvg.topology.atoms() if a.element.symbol != "H"]
    assert topology.getNumAtoms() == len(heavy)
    assert xyz.dtype == np.float64 and xyz.shape == (len(heavy), 3)
    np.testing.assert_allclose(xyz, gvg.positions.numpy()[heavy], atol=1e-4)


def test_parse_structure_errors_name_the_argument(gvg, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="native: no such file"):
        parse_structure(tmp_path / "missing.cif", "native")
    (tmp_path / "empty.pdb").write_text("\n")
    with pytest.raises(ValueError, match=r"native \(.*empty.pdb\): the file is empty"):
        parse_structure(tmp_path / "empty.pdb", "native")
    gvg.to_pdb(tmp_path / "gvg.pdb")
    lines = (tmp_path / "gvg.pdb").read_text().splitlines(keepends=True)
    middle = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith("ATOM"))
    (tmp_path / "cut.pdb").write_text("".join(lines[:middle]) + lines[middle][:40])
    with pytest.raises(ValueError, match=f"line {middle + 1} is an incomplete ATOM record"):
        parse_structure(tmp_path / "cut.pdb", "native")
    # A PDB file named .cif is parsed as PDBx, and says so.
    (tmp_path / "gvg.cif").write_text((tmp_path / "gvg.pdb").read_text())
    with pytest.raises(ValueError, match="could not be read as PDBx/mmCIF"):
        parse_structure(tmp_path / "gvg.cif", "native")
    (tmp_path / "bin.pdb").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="native: .* is not a text file"):
        parse_structure(tmp_path / "bin.pdb", "native")
