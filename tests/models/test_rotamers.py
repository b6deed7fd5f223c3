"""RotamerLibrary: the shipped library against the Top8000 data, the joint EM on synthetic data,
files, proposals, and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyslice import Protein
from pyslice.models.rotamers import ResidueRotamers, RotamerLibrary, fit_rotamer_mixture
from pyslice.models.rotamers.data import TOP8000_FILES, read_top8000, structure_rows
from pyslice.models.rotamers.library import ATTRIBUTION, PARAMETER_FIELDS
from pyslice.proposals import MixtureProposal

DEG = math.pi / 180.0
WELLS = {"g+": 60.0, "t": 180.0, "g-": -60.0}


@pytest.fixture(scope="module")
def library() -> RotamerLibrary:
    return RotamerLibrary.default()


@pytest.fixture(scope="module")
def glkfg() -> Protein:
    return Protein.from_sequence("GLKFG")


def _angle_diff(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    d = torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)
    return torch.atan2(torch.sin(d), torch.cos(d)).abs()


# ------------------------------------------------------------------ the shipped library


def _data_chi1_frequencies(folder: Path, files: tuple[str, ...]) -> dict[str, float]:
    """Fraction of Top8000 rows whose chi1 is nearest each staggered well."""
    chi1 = []
    for name in files:
        for line in (folder / name).read_text().splitlines():
            fields = line.split(",")
            chi1.append(float(fields[3]))
    x = np.asarray(chi1) * DEG
    centres = np.asarray(list(WELLS.values())) * DEG
    nearest = np.cos(x[:, None] - centres[None, :]).argmax(1)
    counts = np.bincount(nearest, minlength=3) / len(x)
    return dict(zip(WELLS, counts.tolist())), len(x)


@pytest.mark.parametrize("res_type", ["LYS", "ARG"])
def test_default_library_reproduces_chi1_modes(library, data_dir, res_type):
    data_freq, n_rows = _data_chi1_frequencies(data_dir / "top8000", TOP8000_FILES[res_type])
    residue = library[res_type]
    assert residue.source == "top8000"
    assert residue.n_rows == n_rows  # every row of the files was fitted

    # The backbone-independent chi1 marginal on a fine grid.
    marginal = library.marginal(res_type, 0)
    grid = torch.arange(3600, dtype=torch.float64) * (2 * math.pi / 3600) - math.pi
    density = torch.exp(marginal.log_prob(grid[:, None])).squeeze(-1)
    assert float(density.sum() * 2 * math.pi / 3600) == pytest.approx(1.0, abs=1e-6)
    # Modes: local maxima near -60, 180 and 60 degrees.
    peaks = grid[(density > density.roll(1)) & (density > density.roll(-1))]
    for well, centre in WELLS.items():
        nearest = _angle_diff(peaks, centre * DEG).min()
        assert float(nearest) < 12 * DEG, f"{res_type}: no chi1 mode near {well} ({centre})"
    # Well populations: the mass nearest each well matches the data within 0.02.
    centres = torch.tensor(list(WELLS.values()), dtype=torch.float64) * DEG
    nearest = torch.cos(grid[:, None] - centres[None, :]).argmax(1)
    for i, well in enumerate(WELLS):
        model = float(density[nearest == i].sum() * 2 * math.pi / 3600)
        assert model == pytest.approx(data_freq[well], abs=0.02), (res_type, well)


def test_default_library_covers_every_type_with_provenance(library):
    assert set(library.residue_types) == {
        "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "HIS", "ILE", "LEU",
        "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
    }  # fmt: skip
    assert "Richardson Lab Top8000" in library.provenance["attribution"]
    assert library.provenance["attribution"] == ATTRIBUTION
    for key in ("data", "command", "date", "seed", "licence"):
        assert key in library.provenance
    for name in library.residue_types:
        residue = library[name]
        assert residue.source == ("top8000" if name in TOP8000_FILES else "top240")
        assert residue.n_rows >= 500, name
        assert residue.n_components >= 1
        assert f"{name}: {residue.n_rows} rows" in repr(library)


def test_default_library_is_backbone_dependent(library, data_dir):
    lys = read_top8000(data_dir / "top8000" / "rota8000-lys.csv", 4)
    chi = torch.from_numpy(lys["chi"])
    phi, psi = torch.from_numpy(lys["phi"]), torch.from_numpy(lys["psi"])
    # Each residue scored in its own phi/psi bin fits much better than without the backbone
    # (held out, the gain was 0.38 nats per residue; see the module docstring).
    dependent = library.log_prob("LYS", chi, phi, psi).mean()
    independent = library.log_prob("LYS", chi).mean()
    assert float(dependent - independent) > 0.25
    # chi1 populations in the alpha-helix bin (phi in [-80, -60), psi in [-60, -40)).
    inside = (phi >= -80 * DEG) & (phi < -60 * DEG) & (psi >= -60 * DEG) & (psi < -40 * DEG)
    centres = torch.tensor(list(WELLS.values()), dtype=torch.float64) * DEG
    nearest = torch.cos(chi[inside, 0, None] - centres).argmax(1)
    data = torch.bincount(nearest, minlength=3).double() / int(inside.sum())
    mixture = library.marginal("LYS", 0, phi=-70 * DEG, psi=-50 * DEG)
    grid = torch.arange(3600, dtype=torch.float64) * (2 * math.pi / 3600) - math.pi
    density = torch.exp(mixture.log_prob(grid[:, None])).squeeze(-1) * (2 * math.pi / 3600)
    wells = torch.cos(grid[:, None] - centres).argmax(1)
    model = torch.stack([density[wells == i].sum() for i in range(3)])
    assert torch.allclose(model, data, atol=0.05), (model, data)


def test_default_file_is_small_and_ships_in_the_package():
    import pyslice

    path = Path(pyslice.__file__).parent / "data" / "rotamer_library.npz"
    assert path.is_file()
    assert path.stat().st_size < 2 * 1024 * 1024


# ------------------------------------------------------------------ the joint EM


def _draw_product_mixture(weights, loc_deg, kappa, n, seed, pi_periodic=(False, False)):
    """Rows from sum_k w_k prod_c vM(mu_ck, kappa_ck); pi-periodic columns: loc/kappa of 2x."""
    gen = torch.Generator().manual_seed(seed)
    label = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=gen)
    loc = torch.tensor(loc_deg, dtype=torch.float64) * DEG  # (C, K)
    kappa = torch.tensor(kappa, dtype=torch.float64)
    torch.manual_seed(seed)
    y = torch.distributions.VonMises(loc[:, label].T, kappa[:, label].T).sample()
    for c, periodic in enumerate(pi_periodic):
        if periodic:  # halve, and put half the draws on the other copy
            flip = torch.rand(n, generator=gen, dtype=torch.float64) < 0.5
            y[:, c] = 0.5 * y[:, c] + torch.where(flip, math.pi, 0.0)
    return torch.atan2(torch.sin(y), torch.cos(y)), label


def _match(loc_fit: torch.Tensor, loc_true: torch.Tensor) -> list[int]:
    """For each true component, the fitted component nearest in every column."""
    cost = _angle_diff(loc_fit[:, :, None], loc_true[:, None, :]).sum(0)  # (K_fit, K_true)
    return cost.argmin(0).tolist()


def test_joint_fit_recovers_a_two_chi_product_mixture():
    weights = [0.5, 0.3, 0.2]
    loc_deg = [[-65.0, 180.0, 62.0], [175.0, 65.0, -70.0]]
    kappa = [[25.0, 15.0, 40.0], [10.0, 30.0, 20.0]]
    chi, _ = _draw_product_mixture(weights, loc_deg, kappa, 6000, seed=3)
    logits, loc, conc = fit_rotamer_mixture(chi, [False, False], seed=0)
    assert logits.shape == (3,) and loc.shape == (2, 3) and conc.shape == (2, 3)
    true_loc = torch.tensor(loc_deg, dtype=torch.float64) * DEG
    pick = _match(loc, true_loc)
    assert sorted(pick) == [0, 1, 2]
    for k, j in enumerate(pick):
        assert float(logits[j].exp()) == pytest.approx(weights[k], abs=0.02)
        assert float(_angle_diff(loc[:, j], true_loc[:, k]).max()) < 2.0 * DEG
        for c in range(2):
            assert float(conc[c, j]) == pytest.approx(kappa[c][k], rel=0.15)
    # The staggered wells as a start give the same answer.
    again = fit_rotamer_mixture(chi, [False, False], wells=[(60 * DEG, math.pi, -60 * DEG)] * 2)
    assert torch.allclose(again[0].sort().values, logits.sort().values, atol=1e-6)


def test_joint_fit_pi_periodic_column():
    # Column 2 is pi-periodic: its parameters describe the doubled angle (as in MixtureProposal).
    weights = [0.6, 0.4]
    loc_deg = [[-65.0, 180.0], [180.0, 0.0]]  # doubled angle: chi2 = 90 (== -90) and 0 (== 180)
    kappa = [[20.0, 20.0], [8.0, 12.0]]
    chi, _ = _draw_product_mixture(weights, loc_deg, kappa, 4000, seed=5, pi_periodic=(0, 1))
    logits, loc, conc = fit_rotamer_mixture(chi, [False, True])
    true_loc = torch.tensor(loc_deg, dtype=torch.float64) * DEG
    pick = _match(loc, true_loc)
    for k, j in enumerate(pick):
        assert float(logits[j].exp()) == pytest.approx(weights[k], abs=0.02)
        assert float(_angle_diff(loc[:, j], true_loc[:, k]).max()) < 3.0 * DEG
        assert float(conc[1, j]) == pytest.approx(kappa[1][k], rel=0.15)


def test_population_threshold_drops_rare_components():
    chi, _ = _draw_product_mixture([0.997, 0.003], [[-60.0, 60.0]], [[20.0, 20.0]], 5000, 7)
    wells = [(60 * DEG, math.pi, -60 * DEG)]
    logits, _, _ = fit_rotamer_mixture(chi, [False], wells=wells, min_fraction=0.005)
    assert logits.shape == (1,)
    logits, loc, _ = fit_rotamer_mixture(chi, [False], wells=wells, min_fraction=0.001, min_count=5)
    assert logits.shape == (2,)
    assert float(logits[1].exp()) == pytest.approx(0.003, abs=0.0015)
    assert float(_angle_diff(loc[0, 1], 60 * DEG)) < 10 * DEG


# ------------------------------------------------------------------ fit from a data folder


def _write_cys_csv(folder: Path, n: int, seed: int) -> None:
    """Synthetic Top8000-style CYS rows: chi1 mostly g- for phi < 0, mostly g+ for phi > 0."""
    rng = np.random.default_rng(seed)
    phi = np.where(rng.random(n) < 0.7, rng.normal(-65, 10, n), rng.normal(60, 10, n))
    psi = np.where(phi < 0, rng.normal(-40, 10, n), rng.normal(40, 10, n))
    p_minus = np.where(phi < 0, 0.8, 0.2)
    well = np.where(rng.random(n) < p_minus, 300.0, 60.0)
    chi1 = np.mod(well + rng.normal(0, 10, n), 360.0)
    (folder / "top8000").mkdir(parents=True)
    lines = [
        f"1abc A {i} CYS B<10.0 wc<0.4 (1.50A MP=1.00),{phi[i]:.3f},{psi[i]:.3f},{chi1[i]:.3f},"
        "NULL,NULL,NULL,114.000,0.050"
        for i in range(n)
    ]
    (folder / "top8000" / "rota8000-cys-noss.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def cys_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    _write_cys_csv(folder, 3000, seed=11)
    return folder


@pytest.fixture(scope="module")
def cys_library(cys_folder) -> RotamerLibrary:
    return RotamerLibrary.fit(cys_folder, residue_types=["CYS"], structures=[])


def test_fit_is_reproducible(cys_folder, cys_library):
    again = RotamerLibrary.fit(cys_folder, residue_types=["cys"], structures=[])
    for attr in PARAMETER_FIELDS:
        assert torch.equal(getattr(again["CYS"], attr), getattr(cys_library["CYS"], attr))


def test_fit_from_a_folder_is_backbone_dependent(cys_library):
    residue = cys_library["CYS"]
    assert residue.source == "top8000" and residue.n_rows == 3000
    assert residue.n_components == 2
    assert cys_library.provenance["seed"] == 0
    assert "rota8000-cys-noss.csv" in str(cys_library.provenance["data"])

    def g_minus(phi, psi):
        """Probability of chi1 within 90 degrees of -60 at this backbone."""
        mixture = cys_library.marginal("CYS", 0, phi=phi, psi=psi)
        x = torch.linspace(-150, 30, 721, dtype=torch.float64) * DEG
        return float(torch.exp(mixture.log_prob(x[:, None])).sum() * (180 * DEG / 720))

    assert g_minus(-65 * DEG, -40 * DEG) == pytest.approx(0.8, abs=0.05)
    assert g_minus(60 * DEG, 40 * DEG) == pytest.approx(0.2, abs=0.07)
    # Undefined backbone: the backbone-independent mixture (0.7 * 0.8 + 0.3 * 0.2 = 0.62).
    assert g_minus(None, None) == pytest.approx(0.62, abs=0.04)
    # An empty corner of the Ramachandran plot stays at the backbone-independent fit.
    assert g_minus(170 * DEG, -170 * DEG) == pytest.approx(g_minus(None, None), abs=0.02)


def test_fit_reads_top240_structures(data_dir):
    text = (data_dir / "structures" / "top240" / "1a2p.pdb").read_text()
    protein = Protein.from_pdb(data_dir / "structures" / "top240" / "1a2p.pdb")
    rows = structure_rows(protein, text)
    assert sum(len(v) for v in rows.values()) > 100
    # The chis computed for the fit equal the builder's where both exist.
    chi = protein.chi_angles()
    by_residue: dict[int, list[float]] = {}
    for (residue, _), value in zip(protein.chi_index.tolist(), chi.tolist()):
        by_residue.setdefault(residue, []).append(value)
    ser = [r for r in protein.topology.residues() if r.name == "SER" and r.index in by_residue]
    found = {round(float(c[0][0]), 9) for c in rows["SER"]}
    assert found <= {round(by_residue[r.index][0], 9) for r in ser}

    library = RotamerLibrary.fit(
        data_dir, residue_types=["SER", "VAL"], structures=["1a2p"], min_rows=5
    )
    assert library["SER"].source == "top240"
    assert library["SER"].n_rows == len(rows["SER"])
    assert library["VAL"].n_rows == len(rows["VAL"])
    assert library.provenance["data"]["structures_failed"] == {}


# ------------------------------------------------------------------ files


def test_save_load_round_trip_is_exact(library, cys_library, tmp_path):
    for lib in (library, cys_library):
        path = tmp_path / "lib.npz"
        lib.save(path)
        back = RotamerLibrary.load(path)
        assert back.residue_types == lib.residue_types
        assert back.provenance == lib.provenance
        assert back.settings == lib.settings
        assert repr(back) == repr(lib)
        for name in lib.residue_types:
            a, b = lib[name], back[name]
            for attr in PARAMETER_FIELDS:
                assert torch.equal(getattr(a, attr), getattr(b, attr)), (name, attr)
            assert (a.n_rows, a.n_rows_backbone, a.source) == (
                b.n_rows,
                b.n_rows_backbone,
                b.source,
            )


# ------------------------------------------------------------------ proposals


def test_proposal_samples_and_scores_consistently(library, glkfg):
    proposal = library.proposal(glkfg)
    assert isinstance(proposal, MixtureProposal)
    assert proposal.n_chi == glkfg.n_chi == 8
    assert proposal.n_groups == 3
    assert torch.equal(proposal.pi_periodic, glkfg.pi_periodic)
    draw = proposal.sample(4000, seed=1)
    assert draw.chi.shape == (4000, 8) and draw.chi.dtype == torch.float32
    assert torch.allclose(proposal.log_prob(draw.chi, draw.latent), draw.log_q, atol=1e-9)
    marginal = proposal.log_prob(draw.chi)
    assert bool((marginal >= draw.log_q - 1e-9).all())
    # Per-residue marginal densities equal the library's at each residue's phi/psi.
    backbone = glkfg.backbone_dihedrals()
    expected = torch.zeros(4000, dtype=torch.float64)
    for residue, cols in ((1, slice(0, 2)), (2, slice(2, 6)), (3, slice(6, 8))):
        name = glkfg.residue_names[residue]
        expected += library.log_prob(
            name, draw.chi[:, cols].double(), backbone[residue, 0], backbone[residue, 1]
        )
    assert torch.allclose(marginal, expected, atol=1e-8)
    # The draws follow the library: LEU chi1 g- vs t frequencies (a KS-free, binomial check).
    leu = library.marginal("LEU", 0, phi=backbone[1, 0].item(), psi=backbone[1, 1].item())
    x = torch.linspace(-150, 30, 721, dtype=torch.float64) * DEG
    p_minus = float(torch.exp(leu.log_prob(x[:, None])).sum() * (180 * DEG / 720))
    seen = float(((draw.chi[:, 0].double() + 60 * DEG).cos() > math.cos(90 * DEG)).double().mean())
    assert seen == pytest.approx(p_minus, abs=4 * math.sqrt(p_minus * (1 - p_minus) / 4000))


def _group_integral(proposal: MixtureProposal, columns: list[int], n_grid: int) -> float:
    """Integral over the group's columns of exp(block log q) on a uniform grid."""
    axes = torch.arange(n_grid, dtype=torch.float64) * (2 * math.pi / n_grid) - math.pi
    mesh = torch.meshgrid(*([axes] * len(columns)), indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=1)
    chi = torch.zeros(points.shape[0], proposal.n_chi, dtype=torch.float64)
    chi[:, columns] = points
    block = torch.zeros_like(chi, dtype=torch.bool)
    block[:, columns] = True
    log_q = proposal.block_log_prob(chi, block)
    return float(torch.exp(log_q).sum()) * (2 * math.pi / n_grid) ** len(columns)


def test_proposal_density_integrates_to_one(library, glkfg):
    proposal = library.proposal(glkfg, dtype=torch.float64)
    assert _group_integral(proposal, [0, 1], 240) == pytest.approx(1.0, abs=2e-3)  # LEU
    assert _group_integral(proposal, [6, 7], 240) == pytest.approx(1.0, abs=2e-3)  # PHE
    # One-chi residues (SER, VAL, CYS), the first at a chain start (phi undefined).
    peptide = Protein.from_sequence("SVCG")
    proposal = library.proposal(peptide, dtype=torch.float64)
    assert proposal.n_chi == 3 and proposal.n_groups == 3
    for column in range(3):
        assert _group_integral(proposal, [column], 4096) == pytest.approx(1.0, abs=1e-6)
    # Chain start: the backbone-independent SER mixture.
    ser = library["SER"]
    k = ser.n_components
    assert torch.allclose(proposal.logits[0, :k], ser.logits, atol=1e-12)
    assert bool(torch.isinf(proposal.logits[0, k:]).all())


def test_proposal_of_a_protein_without_chis(library):
    proposal = library.proposal(Protein.from_sequence("GAG"))
    assert proposal.n_chi == 0
    assert proposal.sample(3, seed=0).chi.shape == (3, 0)


# ------------------------------------------------------------------ errors


def test_unknown_residue_types_are_clear_errors(library, glkfg):
    with pytest.raises(ValueError, match="XYZ"):
        library.log_prob("XYZ", torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        library.log_prob("LYS", torch.zeros(5, 2))
    without_lys = RotamerLibrary([library[n] for n in library.residue_types if n != "LYS"])
    with pytest.raises(ValueError, match="LYS"):
        without_lys.proposal(glkfg)
    with pytest.raises(TypeError, match="protein"):
        library.proposal("GLKFG")
    with pytest.raises(ValueError, match="XYZ"):
        RotamerLibrary.fit(residue_types=["XYZ"])
    assert "HIE" in library and "XYZ" not in library
    with pytest.raises(ValueError, match="ResidueRotamers|name"):
        ResidueRotamers("XYZ", *([torch.zeros(1)] * 6), n_rows=0, n_rows_backbone=0, source="x")


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found"):
        RotamerLibrary.fit(tmp_path / "nowhere")
    monkeypatch.setenv("PYSLICE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="PYSLICE_DATA"):
        RotamerLibrary.fit()
    # A folder without the files a type needs.
    with pytest.raises(FileNotFoundError, match="top240"):
        RotamerLibrary.fit(tmp_path, residue_types=["SER"])
    # Too few rows.
    _write_cys_csv(tmp_path / "small", 5, seed=0)
    with pytest.raises(ValueError, match="CYS: 5 data rows"):
        RotamerLibrary.fit(tmp_path / "small", residue_types=["CYS"], structures=[])


def test_load_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        RotamerLibrary.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a rotamer library"):
        RotamerLibrary.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a rotamer library"):
        RotamerLibrary.load(tmp_path / "text.npz")
