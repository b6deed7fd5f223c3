"""``pyslice evaluate``: the table and JSON outputs, and clean errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyslice import Protein
from pyslice.cli import build_parser
from pyslice.metrics import format_report


@pytest.fixture(scope="module")
def peptide() -> Protein:
    return Protein.from_sequence("AFDKEA")


def test_cli_table_and_json(peptide, tmp_path, capsys):
    # chi1 of LYS 3 turned by 60 degrees: 3 of the 4 residues with chis are recovered.
    chi = peptide.chi_angles().clone()
    chi[peptide.chi_index.tolist().index([3, 0])] += math.radians(60.0)
    moved = peptide.with_positions(peptide.build(chi[None].to(torch.float64))[0])
    moved.to_pdb(tmp_path / "pred.pdb")
    peptide.to_pdb(tmp_path / "native.pdb")
    parser = build_parser()
    args = parser.parse_args(["evaluate", str(tmp_path / "pred.pdb"), str(tmp_path / "native.pdb")])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "rotamer recovery 75.0%" in out and "clashes" in out
    args = parser.parse_args(
        ["evaluate", str(tmp_path / "pred.pdb"), str(tmp_path / "native.pdb"), "--json"]
    )
    assert args.handler(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rotamer_recovery"] == 0.75
    assert result["chi_accuracy"]["chi1"] == 0.75
    assert "LYS" in format_report(result, per_residue=True)


def test_cli_errors(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["evaluate", str(tmp_path / "a.pdb"), str(tmp_path / "b.pdb")])
    with pytest.raises(OSError, match="no such file"):
        args.handler(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "a.pdb", "b.pdb", "--threshold", "-3"])
