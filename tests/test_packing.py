"""Side-chain packing (pyslice.packing, ``pyslice pack``)."""

from __future__ import annotations

import pytest
import torch

from pyslice import ForceFieldEnergy, Protein, RotamerLibrary
from pyslice.cli import main
from pyslice.packing import (
    keep_residues,
    most_probable_rotamers,
    pack,
    residue_selection,
)

FAST = dict(n_chains=6, steps_per_stage=6, n_stages=2, max_sweeps=3)


@pytest.fixture(scope="module")
def peptide() -> Protein:
    return Protein.from_sequence("AFDKEL")


def test_pack_beats_the_most_probable_rotamers_and_is_a_rotamer_local_minimum(peptide) -> None:
    energy = ForceFieldEnergy(peptide, dtype=torch.float64)
    library = RotamerLibrary.default().proposal(peptide)
    result = pack(peptide, energy, library, seed=3, **FAST)
    start = energy(peptide.build(most_probable_rotamers(library)[None]))[0]
    assert result.start_energy == pytest.approx(float(start), rel=1e-9)
    assert result.energy <= result.start_energy
    # the packed protein is the reported conformation with the reported energy
    assert float(energy(result.protein.positions[None])[0]) == pytest.approx(
        result.energy, rel=1e-9
    )
    # no single residue set to one of its library rotamers lowers the energy
    chi = result.chi
    loc = torch.where(library.pi_periodic, 0.5 * library.loc.T, library.loc.T)
    for g in range(library.n_groups):
        columns = library.group == g
        usable = torch.isfinite(library.logits[g])
        trial = chi.expand(int(usable.sum()), -1).clone()
        trial[:, columns] = loc[usable][:, columns]
        assert float(energy(peptide.build(trial)).min()) >= result.energy - 1e-6
    again = pack(peptide, energy, library, seed=3, **FAST)
    assert torch.equal(again.chi, result.chi)


def test_keep_and_residue_selection(peptide) -> None:
    assert residue_selection(peptide, "A:2, A:4-5") == [1, 3, 4]
    assert residue_selection(peptide, "6") == [5]
    with pytest.raises(ValueError, match="no residue 'B:2'"):
        residue_selection(peptide, "B:2")
    with pytest.raises(ValueError, match="bad residue range"):
        residue_selection(peptide, "A:x-3")
    kept = keep_residues(peptide, [1])  # PHE 2 stays as in the input
    result = pack(kept, seed=1, **FAST)
    phe = [a.index for a in list(peptide.topology.residues())[1].atoms()]
    assert torch.equal(result.protein.positions[phe], peptide.positions[phe])
    assert 1 not in {int(r) for r in kept.chi_index[:, 0]}


def test_pack_command_writes_a_pdb_with_the_input_numbering(peptide, tmp_path, capsys) -> None:
    structure, out = tmp_path / "in.pdb", tmp_path / "out.pdb"
    peptide.to_pdb(structure)
    argv = ["pack", str(structure), "-o", str(out), "--chains", "4", "--steps", "6", "--quiet"]
    assert main([*argv, "--keep", "A:3"]) == 0
    text = out.read_text()
    assert text.startswith("REMARK 999 PACKED BY PYSLICE")
    assert "REMARK 999 ENERGY" in text and "amber14-all.xml" in text
    packed = Protein.from_pdb(out)
    assert [(r.chain.id, r.id, r.name) for r in packed.topology.residues()] == [
        (r.chain.id, r.id, r.name) for r in peptide.topology.residues()
    ]
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pack", str(structure)])  # -o is required
    assert main([*argv, "--keep", "Z:9"]) == 2
