"""Packing metrics (pyslice.metrics): chi accuracy, rotamer recovery, RMSD, clashes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pyslice import Protein
from pyslice.metrics import clash_count, evaluate

SEQ = "AFDKEA"  # PHE (chi2 pi-periodic), ASP (chi2 pi-periodic), LYS (4 chis), GLU (chi3)


@pytest.fixture(scope="module")
def peptide() -> Protein:
    return Protein.from_sequence(SEQ)


@pytest.fixture(scope="module")
def bpti(data_dir) -> Protein:
    return Protein.from_pdb(data_dir / "structures" / "bpti.pdb")


def perturbed(protein: Protein, columns: list[int], degrees: float) -> Protein:
    chi = protein.chi_angles().clone()
    chi[columns] += math.radians(degrees)
    return protein.with_positions(protein.build(chi[None].to(torch.float64))[0])


def column(protein: Protein, residue: int, k: int) -> int:
    index = protein.chi_index.tolist()
    return index.index([residue, k])


def atom_index(protein: Protein, residue: int, name: str) -> int:
    for atom in list(protein.topology.residues())[residue].atoms():
        if atom.name == name:
            return atom.index
    raise KeyError(name)


def assert_identical(result: dict) -> None:
    for key, value in result["chi_accuracy"].items():
        assert value is None or value == 1.0, key
    assert result["rotamer_recovery"] == 1.0
    assert result["rmsd_nm"] == pytest.approx(0.0, abs=1e-6)
    assert result["backbone_rmsd_nm"] == pytest.approx(0.0, abs=1e-6)
    assert result["clashes"]["predicted"] == result["clashes"]["native"]


# ------------------------------------------------------------------ identity


def test_peptide_against_itself(peptide):
    result = evaluate(peptide, peptide)
    assert_identical(result)
    assert result["n_matched"] == 6
    assert result["n_evaluated"] == 4  # PHE ASP LYS GLU
    assert result["chi_counts"] == {
        "chi1": 4,
        "chi1+2": 4,
        "chi1+2+3": 2,
        "chi1+2+3+4": 1,
        "all": 11,
    }
    assert result["rmsd_nm"] == 0.0
    assert result["unmatched"] == {"predicted_only": [], "native_only": []}
    json.dumps(result, allow_nan=False)  # strict JSON


def test_bpti_against_itself_protein_and_path(bpti, data_dir, tmp_path):
    path = data_dir / "structures" / "bpti.pdb"
    assert_identical(evaluate(bpti, path))
    bpti.to_pdb(tmp_path / "copy.pdb")
    result = evaluate(tmp_path / "copy.pdb", str(path))
    assert_identical(result)
    assert result["n_matched"] == 58
    # PRO and disulfide-bonded CYS are evaluated although pyslice never moves them.
    assert result["n_evaluated"] == 46
    assert result["clashes"]["native"]["100%"] >= result["clashes"]["native"]["80%"]


# ------------------------------------------------------------------ perturbed copies


def test_bpti_perturbed_counts(bpti, tmp_path):
    native = evaluate(bpti, bpti)
    n_chis = {(r["chain"], r["residue"]): len(r["chi_native"]) for r in native["per_residue"]}
    names = bpti.residue_names
    index = bpti.chi_index.tolist()
    # chi1 of three residues, chi2 of two others (not pi-periodic): +60 degrees each.
    multi = [r for r, k in index if k == 1 and names[r] not in ("ASP", "PHE", "TYR")]
    chi1_residues = [r for r, k in index if k == 0 and r not in multi][:3]
    chi2_residues = multi[:2]
    columns = [column(bpti, r, 0) for r in chi1_residues]
    columns += [column(bpti, r, 1) for r in chi2_residues]
    moved = perturbed(bpti, columns, 60.0)
    moved.to_pdb(tmp_path / "moved.pdb")
    result = evaluate(tmp_path / "moved.pdb", bpti)

    def count(k: int) -> int:
        return sum(n >= k for n in n_chis.values())

    def label(r: int) -> tuple[str, str]:
        return ("A", list(bpti.topology.residues())[r].id)

    bad1 = {label(r) for r in chi1_residues}
    bad2 = {label(r) for r in chi2_residues}
    wrong = {1: len(bad1), 2: sum(n_chis[x] >= 2 for x in bad1) + len(bad2)}
    wrong[3] = sum(n_chis[x] >= 3 for x in bad1 | bad2)
    wrong[4] = sum(n_chis[x] >= 4 for x in bad1 | bad2)
    for k, key in enumerate(("chi1", "chi1+2", "chi1+2+3", "chi1+2+3+4"), start=1):
        assert result["chi_counts"][key] == count(k)
        assert result["chi_accuracy"][key] == pytest.approx((count(k) - wrong[k]) / count(k))
    total = sum(n_chis.values())
    assert result["chi_accuracy"]["all"] == pytest.approx((total - len(columns)) / total)
    assert result["rotamer_recovery"] == pytest.approx((46 - len(columns)) / 46)
    for r in result["per_residue"]:
        key = (r["chain"], r["residue"])
        if key in bad1 or key in bad2:
            assert r["recovered"] is False
            assert r["rmsd_nm"] > 0.01
            assert max(e for e in r["chi_error_degrees"]) == pytest.approx(
                60.0, abs=0.05
            )  # PDB rounding
        else:
            assert r["recovered"] is True
            assert r["rmsd_nm"] < 1e-3  # the PDB file rounds to 1e-4 nm
    assert result["rmsd_nm"] > 0.0
    assert result["backbone_rmsd_nm"] < 1e-4


def test_peptide_chi_orders(peptide):
    # LYS chi3 +60: LYS counts for chi1, chi1+2 but not chi1+2+3 / chi1+2+3+4.
    result = evaluate(perturbed(peptide, [column(peptide, 3, 2)], 60.0), peptide)
    acc = result["chi_accuracy"]
    assert acc["chi1"] == 1.0 and acc["chi1+2"] == 1.0
    assert acc["chi1+2+3"] == 0.5 and acc["chi1+2+3+4"] == 0.0
    assert acc["all"] == pytest.approx(10 / 11)
    assert result["rotamer_recovery"] == 0.75
    # Exactly at the threshold counts as correct; just over does not.
    lys = [column(peptide, 3, 2)]
    assert evaluate(perturbed(peptide, lys, 20.0), peptide)["rotamer_recovery"] == 1.0
    assert evaluate(perturbed(peptide, lys, 20.01), peptide)["rotamer_recovery"] == 0.75
    assert evaluate(perturbed(peptide, lys, 30.0), peptide, threshold=31)["rotamer_recovery"] == 1


@pytest.mark.parametrize(("residue", "k", "name"), [(2, 1, "ASP"), (4, 2, "GLU"), (1, 1, "PHE")])
def test_pi_periodic_half_turn_is_correct(peptide, residue, k, name):
    assert peptide.residue_names[residue] == name
    moved = perturbed(peptide, [column(peptide, residue, k)], 180.0)
    result = evaluate(moved, peptide)
    assert result["rotamer_recovery"] == 1.0
    row = result["per_residue"][[r["name"] for r in result["per_residue"]].index(name)]
    assert row["chi_error_degrees"][k] == pytest.approx(0.0, abs=1e-6)
    # The heavy atoms land on (nearly: the relaxed geometry is not exactly symmetric) their
    # symmetry mates: a small RMSD only after renaming.
    assert row["rmsd_nm"] < 0.015
    assert result["rmsd_no_symmetry_nm"] > 0.05


def test_non_periodic_half_turn_is_wrong(peptide):
    # LYS chi4 is not pi-periodic: +180 is wrong.
    moved = perturbed(peptide, [column(peptide, 3, 3)], 180.0)
    result = evaluate(moved, peptide)
    assert result["rotamer_recovery"] == 0.75
    assert result["chi_accuracy"]["chi1+2+3+4"] == 0.0


def test_phe_swapped_names_zero_rmsd_only_with_symmetry(peptide):
    positions = peptide.positions.clone()
    for a, b in (("CD1", "CD2"), ("CE1", "CE2")):
        i, j = atom_index(peptide, 1, a), atom_index(peptide, 1, b)
        positions[[i, j]] = positions[[j, i]]
    swapped = peptide.with_positions(positions)
    result = evaluate(swapped, peptide)
    phe = result["per_residue"][0]
    assert phe["name"] == "PHE"
    assert phe["rmsd_nm"] == pytest.approx(0.0, abs=1e-9)
    assert result["rmsd_nm"] == pytest.approx(0.0, abs=1e-9)
    assert result["rmsd_no_symmetry_nm"] > 0.05
    assert phe["chi_correct"] == [True, True]  # chi2 moved by 180: pi-periodic

    # Only CD1/CD2 swapped (not a symmetry of the molecule): no renaming makes it vanish.
    positions = peptide.positions.clone()
    i, j = atom_index(peptide, 1, "CD1"), atom_index(peptide, 1, "CD2")
    positions[[i, j]] = positions[[j, i]]
    half = evaluate(peptide.with_positions(positions), peptide)
    assert half["per_residue"][0]["rmsd_nm"] > 0.05


def test_leu_val_not_symmetric():
    protein = Protein.from_sequence("AVLA")
    positions = protein.positions.clone()
    for residue, (a, b) in ((1, ("CG1", "CG2")), (2, ("CD1", "CD2"))):
        i, j = atom_index(protein, residue, a), atom_index(protein, residue, b)
        positions[[i, j]] = positions[[j, i]]
    result = evaluate(protein.with_positions(positions), protein)
    for row in result["per_residue"]:
        assert row["rmsd_nm"] > 0.05, row["name"]


# ------------------------------------------------------------------ clashes


def test_clash_count_rule():
    # Two carbons 0.30 nm apart: under 100% (0.34) and 90% (0.306), not 80% (0.272) of 2 x 0.17.
    xyz = np.array([[0.0, 0.0, 0.0], [0.30, 0.0, 0.0]])
    assert clash_count(xyz, ["C", "C"], [True, True], []) == [1, 1, 0]
    assert clash_count(xyz, ["C", "C"], [False, False], []) == [0, 0, 0]  # no side-chain atom
    assert clash_count(xyz, ["C", "C"], [True, False], []) == [1, 1, 0]
    assert clash_count(xyz, ["C", "C"], [True, True], [(0, 1)]) == [0, 0, 0]  # bonded
    # A chain 0-1-2-3-4 with atoms 0 and 3 / 0 and 4 put close: 1-4 excluded, 1-5 counted.
    chain = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [4.0, 0, 0]])
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4)]
    near3 = chain.copy()
    near3[3] = [0.25, 0, 0]
    assert clash_count(near3, ["C"] * 5, [True] * 5, bonds) == [0, 0, 0]
    near4 = chain.copy()
    near4[4] = [0.25, 0, 0]
    assert clash_count(near4, ["C"] * 5, [True] * 5, bonds) == [1, 1, 1]
    # O and N radii: 0.152 + 0.155 = 0.307; 0.28 nm is under 100% and 92%, not 90%.
    on = np.array([[0.0, 0.0, 0.0], [0.28, 0.0, 0.0]])
    assert clash_count(on, ["O", "N"], [True, True], []) == [1, 0, 0]


def test_manufactured_clash_is_counted(peptide):
    # Put LYS NZ 0.25 nm from GLU CD (C-N: 80% of 0.325 nm is 0.26).
    positions = peptide.positions.clone()
    nz, cd = atom_index(peptide, 3, "NZ"), atom_index(peptide, 4, "CD")
    positions[nz] = positions[cd] + torch.tensor([0.25, 0.0, 0.0], dtype=torch.float64)
    result = evaluate(peptide.with_positions(positions), peptide)
    pred, nat = result["clashes"]["predicted"], result["clashes"]["native"]
    for key in ("100%", "90%", "80%"):
        assert pred[key] >= nat[key] + 1, key


# ------------------------------------------------------------------ matching and errors


def test_mismatched_residue_is_named():
    with pytest.raises(ValueError, match=r"chain A residue 2: ARG in the predicted .* LYS"):
        evaluate(Protein.from_sequence("ARA"), Protein.from_sequence("AKA"))


def test_unmatched_residues_are_listed():
    result = evaluate(Protein.from_sequence("AKLA"), Protein.from_sequence("AKL"))
    assert result["unmatched"]["predicted_only"] == ["chain A residue 4 ALA"]
    assert result["unmatched"]["native_only"] == []
    assert result["n_matched"] == 3


def test_bad_inputs(tmp_path, peptide):
    with pytest.raises(FileNotFoundError, match="predicted: no such file"):
        evaluate(tmp_path / "missing.pdb", peptide)
    garbage = tmp_path / "garbage.pdb"
    garbage.write_text("this is not a structure\n")
    with pytest.raises(ValueError, match="native") as info:
        evaluate(peptide, garbage)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="predicted must be"):
        evaluate(42, peptide)
    with pytest.raises(ValueError, match="threshold"):
        evaluate(peptide, peptide, threshold=0)
