"""Implicit solvent (GBn2, OBC2): the torch reference against OpenMM's Reference platform (the
CustomGBForce alone, through its force group, and the whole System with pyslice's vacuum terms),
the exact delta against differences of full energies, and refusal of any other expression."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from pyslice import Protein  # noqa: E402
from pyslice.energy.implicit import (  # noqa: E402
    IMPLICIT_TERMS,
    BornState,
    implicit_delta_reference,
    implicit_energy_reference,
)
from pyslice.energy.implicit_tables import (  # noqa: E402
    ImplicitTables,
    debye_kappa,
    implicit_tables_from_system,
    without_implicit_solvent,
)
from pyslice.energy.reference import energy_reference  # noqa: E402
from pyslice.energy.tables import tables_from_system  # noqa: E402

RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
SLOW = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PYSLICE_SLOW") != "1", reason="slow: set PYSLICE_SLOW=1"),
]
# Every amino acid (MET and CYS carry GBn2's negative sulfur screening), charged termini.
SEQUENCE = "ACDEFGHIKLMNPQRSTVWY"
SALT_KAPPA = 1.0  # 1/nm
CUTOFF = 1.0  # nm: the 20-residue helix is ~3 nm long, so the cutoff drops many pairs


@functools.cache
def peptide(sequence: str = SEQUENCE) -> Protein:
    return Protein.from_sequence(sequence)


@functools.cache
def structure(path: str) -> Protein:
    return Protein.from_pdb(path)


@functools.cache
def system_for(
    protein: Protein,
    model: str = "gbn2",
    salt: bool = False,
    cutoff: bool = False,
    dielectrics: tuple[float, float] | None = None,
) -> openmm.System:
    """amber14 + implicit/<model>.xml as createSystem builds it; one force group per force."""
    options: dict = {"constraints": None, "rigidWater": False}
    if cutoff:
        options.update(
            nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=CUTOFF * unit.nanometer
        )
    if salt:
        options["implicitSolventKappa"] = SALT_KAPPA / unit.nanometer
    if dielectrics is not None:
        options.update(soluteDielectric=dielectrics[0], solventDielectric=dielectrics[1])
    forcefield = app.ForceField("amber14-all.xml", f"implicit/{model}.xml")
    system = forcefield.createSystem(protein.topology, **options)
    for k, force in enumerate(system.getForces()):
        force.setForceGroup(k)
    return system


@functools.cache
def _context(system: openmm.System) -> openmm.Context:
    platform = openmm.Platform.getPlatformByName("Reference")
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform)


def openmm_energies(system: openmm.System, x: torch.Tensor, whole: bool = True) -> tuple:
    """(GB force, whole System or None) energies (B,) float64 kJ/mol on the Reference platform
    (the whole System costs a second GB evaluation: asked for where it is compared)."""
    context = _context(system)
    group = next(k for k, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce))
    gb, total = [], []
    for conf in x.double().numpy():
        context.setPositions(conf)
        for out, groups in ((gb, {group}), (total, -1)) if whole else ((gb, {group}),):
            state = context.getState(getEnergy=True, groups=groups)
            out.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    as_tensor = functools.partial(torch.tensor, dtype=torch.float64)
    return as_tensor(gb), as_tensor(total) if whole else None


def vacuum_energy(system: openmm.System, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tables = tables_from_system(without_implicit_solvent(system), dtype=dtype)
    return energy_reference(tables, x.to(dtype)).sum(-1)


def random_chi(protein: Protein, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, protein.n_chi, generator=gen, dtype=torch.float64) * 2 - 1) * torch.pi


def clash_pair(protein: Protein) -> tuple[int, int]:
    """(i, j): a heavy side-chain atom of residue 3 (or the next residue that has one) and the CA
    of residue 0, to be put on top of each other."""
    residues = list(protein.topology.residues())
    backbone = {"N", "CA", "C", "O", "OXT"}
    for residue in residues[3:]:
        heavy = [a.index for a in residue.atoms() if a.name not in backbone]
        heavy = [i for i in heavy if list(protein.topology.atoms())[i].element.symbol != "H"]
        if heavy:
            ca = next(a.index for a in residues[0].atoms() if a.name == "CA")
            return heavy[-1], ca
    raise AssertionError("the test peptide needs a residue with a side chain after residue 2")


def conformations(protein: Protein, seed: int) -> torch.Tensor:
    """(4, N, 3) float64: native, two random side-chain conformations, and one with a side-chain
    atom 0.03 nm from an atom of another residue (a clash)."""
    built = protein.build(random_chi(protein, 2, seed)).double()
    clash = protein.positions.clone()
    i, j = clash_pair(protein)
    clash[i] = clash[j] + torch.tensor([0.03, 0.0, 0.0], dtype=torch.float64)
    return torch.cat([protein.positions[None], built, clash[None]])


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rtol: float) -> None:
    assert ours.dtype == torch.float64 and ours.shape == ref.shape
    error = ((ours - ref).abs() / ref.abs()).max().item()
    assert error < rtol, (error, ours, ref)


# ------------------------------------------------------------------------------------------------
# Agreement with OpenMM
# ------------------------------------------------------------------------------------------------


@functools.cache
def _peptide_reference(model: str, salt: bool, cutoff: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenMM's energies of the peptide's conformations (shared by the float32/64 cases)."""
    return openmm_energies(system_for(peptide(), model, salt, cutoff), conformations(peptide(), 1))


@DTYPES
@pytest.mark.parametrize("cutoff", [False, True], ids=["nocutoff", "cutoff"])
@pytest.mark.parametrize("salt", [False, True], ids=["nosalt", "salt"])
@pytest.mark.parametrize("model", ["gbn2", "obc2"])
def test_peptide_matches_openmm(model: str, salt: bool, cutoff: bool, dtype) -> None:
    protein = peptide()
    system = system_for(protein, model, salt, cutoff)
    tables = implicit_tables_from_system(system, dtype=dtype)
    assert tables.model == model and tables.kappa == (SALT_KAPPA if salt else 0.0)
    assert tables.cutoff == (CUTOFF if cutoff else 0.0)
    x = conformations(protein, seed=1)
    gb_ref, total_ref = _peptide_reference(model, salt, cutoff)
    terms, state = implicit_energy_reference(tables, x.to(dtype))
    assert terms.shape == (len(x), len(IMPLICIT_TERMS)) and state.born.shape == x.shape[:2]
    assert_close(terms.sum(-1), gb_ref, RTOL[dtype])
    total = vacuum_energy(system, x, dtype) + terms.sum(-1)
    assert_close(total, total_ref, RTOL[dtype])


def test_vacuum_terms_keep_openmm_reaction_field() -> None:
    """OpenMM's implicit-solvent script sets the reaction-field dielectric to 1: with a cutoff the
    vacuum Coulomb is K q q (1/r - 1/r_c), and the copy without the GB force reads it so."""
    system = system_for(peptide(), "gbn2", cutoff=True)
    vacuum = tables_from_system(without_implicit_solvent(system))
    assert vacuum.krf == 0.0 and vacuum.crf == pytest.approx(1.0 / CUTOFF)
    assert any(isinstance(f, openmm.CustomGBForce) for f in system.getForces())  # not modified
    with pytest.raises(ValueError, match="CustomGBForce"):
        tables_from_system(system)


@pytest.mark.parametrize("model", ["gbn2", "obc2"])
def test_dielectrics(model: str) -> None:
    protein = peptide()
    system = system_for(protein, model, salt=True, dielectrics=(2.0, 80.0))
    tables = implicit_tables_from_system(system)
    assert (tables.solute_dielectric, tables.solvent_dielectric) == (2.0, 80.0)
    x = conformations(protein, seed=2)[:2]
    assert_close(
        implicit_energy_reference(tables, x)[0].sum(-1),
        openmm_energies(system, x, whole=False)[0],
        1e-6,
    )


@pytest.mark.parametrize("model", ["gbn", "obc1"])
def test_other_tanh_models(model: str) -> None:
    """GBn (igb=7) and OBC1 (igb=2) share the forms; their constants come from the expressions."""
    protein = peptide()
    system = system_for(protein, model)
    tables = implicit_tables_from_system(system)
    assert tables.model == model
    x = conformations(protein, seed=3)[:2]
    assert_close(
        implicit_energy_reference(tables, x)[0].sum(-1),
        openmm_energies(system, x, whole=False)[0],
        1e-6,
    )


def test_without_surface_area() -> None:
    """sasaMethod=None: no ACE term; the nonpolar column is zero and the rest equals OpenMM."""
    protein = peptide()
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(protein.topology, sasaMethod=None)
    for k, force in enumerate(system.getForces()):
        force.setForceGroup(k)
    tables = implicit_tables_from_system(system)
    assert tables.surface_tension == 0.0
    x = conformations(protein, seed=3)[:2]
    terms = implicit_energy_reference(tables, x)[0]
    assert torch.all(terms[:, 1] == 0.0)
    assert_close(terms.sum(-1), openmm_energies(system, x, whole=False)[0], 1e-6)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_peptides(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sequence = "".join(rng.choice(list(SEQUENCE), size=8))
    protein = peptide(sequence)
    x = conformations(protein, seed=seed)[:3]
    for model in ("gbn2", "obc2"):
        system = system_for(protein, model)
        terms, _ = implicit_energy_reference(implicit_tables_from_system(system), x)
        assert_close(terms.sum(-1), openmm_energies(system, x, whole=False)[0], 1e-6)


def _domain_files(root: Path) -> list:
    files = sorted((root / "structures" / "domains").glob("*.pdb"), key=lambda p: p.stat().st_size)
    # the two smallest run by default (OpenMM's Reference GB takes ~1 s per 1000-atom energy)
    return [
        pytest.param(f.name, marks=[] if k < 2 else SLOW, id=f.stem) for k, f in enumerate(files)
    ]


def _structure_params() -> list:
    from pyslice._data import data_dir

    root = data_dir()
    params = [pytest.param("bpti.pdb", id="bpti")]
    return params + (_domain_files(root) if root is not None else [])


@pytest.mark.parametrize("name", _structure_params())
def test_structures_match_openmm(data_dir: Path, name: str) -> None:
    folder = data_dir / "structures"
    path = folder / name if (folder / name).exists() else folder / "domains" / name
    protein = structure(str(path))
    x = torch.cat([protein.positions[None], protein.build(random_chi(protein, 1, 4)).double()])
    models = ("gbn2", "obc2") if name == "bpti.pdb" else ("gbn2",)
    for model in models:
        system = system_for(protein, model)
        gb_ref, total_ref = openmm_energies(system, x, whole=name == "bpti.pdb")
        for dtype in (torch.float64, torch.float32):
            tables = implicit_tables_from_system(system, dtype=dtype)
            terms = implicit_energy_reference(tables, x.to(dtype))[0]
            assert_close(terms.sum(-1), gb_ref, RTOL[dtype])
            if dtype == torch.float64 and name == "bpti.pdb":  # the whole System once
                assert_close(vacuum_energy(system, x, dtype) + terms.sum(-1), total_ref, 1e-6)


@DTYPES
def test_clashes_are_finite_and_bounded(dtype) -> None:
    """Atoms 0.03, 1e-3, 1e-5 nm and exactly 0 apart: the GB energy stays finite (never NaN),
    the Born radii within tanh's bounds, equal to OpenMM at 0.03 nm; the total is huge."""
    protein = peptide()
    system = system_for(protein, "gbn2")
    tables = implicit_tables_from_system(system, dtype=dtype)
    i, j = clash_pair(protein)
    x = protein.positions[None].repeat(4, 1, 1)
    for k, distance in enumerate((0.03, 1e-3, 1e-5, 0.0)):
        x[k, i] = x[k, j] + torch.tensor([distance, 0.0, 0.0], dtype=x.dtype)
    terms, state = implicit_energy_reference(tables, x.to(dtype))
    assert torch.isfinite(terms).all(), terms
    radius = tables.offset_radius.double()
    rho = radius + tables.offset
    assert torch.all(state.born >= radius * rho / (rho + radius) * (1 - 1e-12))
    assert torch.all(state.born <= radius * rho / (rho - radius) * (1 + 1e-12))
    gb_ref, _ = openmm_energies(system, x[:1], whole=False)
    assert_close(terms[:1].sum(-1), gb_ref, RTOL[dtype])
    assert torch.all(vacuum_energy(system, x, dtype) + terms.sum(-1) > 1e6)


# ------------------------------------------------------------------------------------------------
# The delta
# ------------------------------------------------------------------------------------------------


def random_moves(protein: Protein, batch: int, seed: int):
    """(old, new, moved): rows moving no atom, every atom, and random sets (-1 padding inside)."""
    gen = torch.Generator().manual_seed(seed)
    n = protein.n_atoms
    old = protein.build(random_chi(protein, batch, seed)).double()
    sizes = [0, n] + [int(s) for s in torch.randint(1, 40, (batch - 2,), generator=gen)]
    moved = torch.full((batch, max(sizes)), -1, dtype=torch.int64)
    new = old.clone()
    for b, size in enumerate(sizes):
        atoms = torch.randperm(n, generator=gen)[:size]
        moved[b, :size] = atoms
        moved[b] = moved[b][torch.randperm(moved.shape[1], generator=gen)]
        new[b, atoms] += 0.05 * torch.randn(size, 3, generator=gen, dtype=torch.float64)
    return old, new, moved


def residue_moves(protein: Protein, chi: torch.Tensor, residues: list, seed: int):
    """(old, new, moved, new_chi): the chis of ``residues`` (per row, a list of residue indices)
    redrawn; moved lists the atoms whose positions changed (-1 padded)."""
    gen = torch.Generator().manual_seed(seed)
    new_chi = chi.clone()
    owner = protein.chi_index[:, 0]
    for b, chosen in enumerate(residues):
        columns = torch.isin(owner, torch.tensor(chosen)).nonzero().flatten()
        draw = torch.rand(len(columns), generator=gen, dtype=chi.dtype)
        new_chi[b, columns] = (draw * 2 - 1) * torch.pi
    old, new = protein.build(chi).double(), protein.build(new_chi).double()
    changed = (old != new).any(-1)
    width = int(changed.sum(1).max())
    order = torch.argsort((~changed).to(torch.int8), dim=1, stable=True)[:, :width]
    return old, new, torch.where(changed.gather(1, order), order, -1), new_chi


def assert_delta_exact(tables: ImplicitTables, old, new, moved, state=None) -> BornState:
    """delta == E(new) - E(old) to 1e-8 of |E| in both dtypes (float32 too: the pair values are
    the same float32 numbers, summed in float64 in another order), and the returned state ==
    the new conformation's."""
    dtype = tables.dtype
    e_old, s_old = implicit_energy_reference(tables, old.to(dtype))
    e_new, s_new = implicit_energy_reference(tables, new.to(dtype))
    delta, state_new = implicit_delta_reference(
        tables, old.to(dtype), new.to(dtype), moved, s_old if state is None else state
    )
    scale = e_old.abs().sum(-1, keepdim=True)
    assert torch.all((delta - (e_new - e_old)).abs() <= 1e-8 * scale), (delta, e_new - e_old)
    torch.testing.assert_close(state_new.born, s_new.born, rtol=1e-12, atol=0)
    torch.testing.assert_close(state_new.integrals, s_new.integrals, rtol=1e-12, atol=1e-12)
    return state_new


@DTYPES
@pytest.mark.parametrize("cutoff", [False, True], ids=["nocutoff", "cutoff"])
@pytest.mark.parametrize("model", ["gbn2", "obc2"])
def test_delta_random_atom_sets(model: str, cutoff: bool, dtype) -> None:
    protein = peptide()
    tables = implicit_tables_from_system(
        system_for(protein, model, salt=cutoff, cutoff=cutoff), dtype=dtype
    )
    old, new, moved = random_moves(protein, 6, seed=5)
    assert_delta_exact(tables, old, new, moved)


@DTYPES
def test_delta_one_and_several_residues(dtype) -> None:
    protein = peptide()
    tables = implicit_tables_from_system(system_for(protein, "gbn2"), dtype=dtype)
    chi = random_chi(protein, 4, seed=6)
    owners = sorted(set(protein.chi_index[:, 0].tolist()))
    chosen = [[owners[0]], [owners[5]], owners[2:5], owners[::2]]
    old, new, moved, _ = residue_moves(protein, chi, chosen, seed=7)
    assert_delta_exact(tables, old, new, moved)


def test_chain_state_stays_exact_over_accepted_moves() -> None:
    """A sampler's use: keep the state, take the returned one where a move is accepted; after
    many steps it still equals the state computed from scratch."""
    protein = peptide()
    tables = implicit_tables_from_system(system_for(protein, "gbn2"))
    gen = torch.Generator().manual_seed(8)
    chi = random_chi(protein, 3, seed=8)
    energy, state = implicit_energy_reference(tables, protein.build(chi).double())
    owners = sorted(set(protein.chi_index[:, 0].tolist()))
    for step in range(4):
        chosen = [[owners[int(k)]] for k in torch.randint(len(owners), (3,), generator=gen)]
        old, new, moved, new_chi = residue_moves(protein, chi, chosen, seed=100 + step)
        delta, proposed = implicit_delta_reference(tables, old, new, moved, state)
        accept = torch.rand(3, generator=gen) < 0.6
        state = state.where(accept, proposed)
        energy = energy + torch.where(accept[:, None], delta, torch.zeros_like(delta))
        chi = torch.where(accept[:, None], new_chi, chi)
    full, fresh = implicit_energy_reference(tables, protein.build(chi).double())
    torch.testing.assert_close(state.born, fresh.born, rtol=1e-12, atol=0)
    torch.testing.assert_close(energy, full, rtol=1e-10, atol=1e-8)


def test_delta_with_cutoff_changes_only_atoms_in_range() -> None:
    """With a cutoff, the radii that change are those of atoms within the cutoff of a moved
    atom (old or new place); without one, a one-residue move changes nearly every radius."""
    protein = peptide()
    chi = random_chi(protein, 2, seed=9)
    owners = sorted(set(protein.chi_index[:, 0].tolist()))
    old, new, moved, _ = residue_moves(protein, chi, [[owners[1]], [owners[-2]]], seed=10)
    for cutoff in (True, False):
        tables = implicit_tables_from_system(system_for(protein, "gbn2", cutoff=cutoff))
        state = implicit_energy_reference(tables, old)[1]
        _, after = implicit_delta_reference(tables, old, new, moved, state)
        changed = after.born != state.born
        for b in range(2):
            atoms = moved[b][moved[b] >= 0]
            near = (torch.cdist(old[b], old[b, atoms]) < CUTOFF).any(-1)
            near |= (torch.cdist(new[b], new[b, atoms]) < CUTOFF).any(-1)
            if cutoff:
                assert not (changed[b] & ~near).any() and changed[b].sum() > len(atoms)
            else:
                assert changed[b].sum() >= 0.95 * protein.n_atoms


def test_structure_delta_one_residue(data_dir: Path) -> None:
    protein = structure(str(data_dir / "structures" / "bpti.pdb"))
    tables = implicit_tables_from_system(system_for(protein, "gbn2"))
    owners = sorted(set(protein.chi_index[:, 0].tolist()))
    chi = random_chi(protein, 2, seed=11)
    old, new, moved, _ = residue_moves(protein, chi, [[owners[3]], [owners[20]]], seed=12)
    state = assert_delta_exact(tables, old, new, moved)
    assert state.born.shape == (2, protein.n_atoms)


def test_delta_reads_only_moved_rows() -> None:
    protein = peptide()
    tables = implicit_tables_from_system(system_for(protein, "obc2"))
    old, new, moved = random_moves(protein, 4, seed=13)
    keep = torch.zeros(old.shape[:2], dtype=torch.bool)
    for b in range(4):
        keep[b, moved[b][moved[b] >= 0]] = True
    noisy = torch.where(keep[..., None], new, new + 0.7)
    state = implicit_energy_reference(tables, old)[1]
    expected, _ = implicit_delta_reference(tables, old, new, moved, state)
    got, _ = implicit_delta_reference(tables, old, noisy, moved)  # state=None: computed
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_empty_batches_moves_and_strided_input() -> None:
    protein = peptide("GKD")
    tables = implicit_tables_from_system(system_for(protein, "gbn2"))
    x = protein.build(random_chi(protein, 3, seed=14)).double()
    terms, state = implicit_energy_reference(tables, x)
    empty, empty_state = implicit_energy_reference(tables, x[:0])
    assert empty.shape == (0, 2) and empty_state.born.shape == (0, protein.n_atoms)
    none = torch.zeros(0, 2, dtype=torch.int64)
    assert implicit_delta_reference(tables, x[:0], x[:0], none)[0].shape == (0, 2)
    for moved in (torch.zeros(3, 0, dtype=torch.int64), torch.full((3, 2), -1)):
        delta, after = implicit_delta_reference(tables, x, x + 0.1, moved, state)
        assert torch.all(delta == 0) and torch.equal(after.born, state.born)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)  # (B, N, 3) view, not contiguous
    assert not strided.is_contiguous()
    torch.testing.assert_close(implicit_energy_reference(tables, strided)[0], terms, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Refusals, tables, arguments
# ------------------------------------------------------------------------------------------------


def _edited(edit) -> openmm.System:
    system = openmm.XmlSerializer.clone(system_for(peptide("GKD"), "gbn2"))
    force = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    edit(system, force)
    return system


def _replace_term(k: int, old: str, new: str):
    def edit(system, force) -> None:
        expression, kind = force.getEnergyTermParameters(k)
        assert old in expression
        force.setEnergyTermParameters(k, expression.replace(old, new), kind)

    return edit


def _replace_value(k: int, old: str, new: str):
    def edit(system, force) -> None:
        name, expression, kind = force.getComputedValueParameters(k)
        assert old in expression
        force.setComputedValueParameters(k, name, expression.replace(old, new), kind)

    return edit


def _set_method(method):
    return lambda system, force: force.setNonbondedMethod(method)


REFUSED = {
    "ace exponent": (_replace_term(1, "(radius/B)^6", "(radius/B)^4"), "energy term 1.*'6'.*'4'"),
    "born sign": (_replace_value(1, "alpha*psi-beta", "alpha*psi+beta"), "computed value B.*'-'"),
    "neck cut": (
        _replace_value(0, "step(radius1+radius2+neckCut-r)", "step(neckCut-r)"),
        "value I",
    ),
    "charge redefined": (_replace_term(2, "; kappa=", "; charge1=1; kappa="), "unexpected"),
    "offsets differ": (_replace_value(1, "offset=0.0195141", "offset=0.02"), "offset is"),
    "pair type": (
        lambda s, f: f.setEnergyTermParameters(2, f.getEnergyTermParameters(2)[0], 1),
        "energy term 2",
    ),
    "extra term": (lambda s, f: f.addEnergyTerm("0.1*charge", 0), "energy term 3"),
    "global": (lambda s, f: f.addGlobalParameter("lambda", 1.0), "global parameters"),
    "function": (
        lambda s, f: f.addTabulatedFunction("extra", openmm.Discrete1DFunction([1.0])),
        "tabulated functions",
    ),
    "periodic": (_set_method(openmm.CustomGBForce.CutoffPeriodic), "NoCutoff or CutoffNonPeriodic"),
    "two forces": (lambda s, f: s.addForce(openmm.CustomGBForce()), "exactly one CustomGBForce"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_modified_forces_are_refused(case: str) -> None:
    edit, message = REFUSED[case]
    with pytest.raises(ValueError, match=message):
        implicit_tables_from_system(_edited(edit))


def test_unsupported_models_are_refused() -> None:
    protein = peptide("GKD")
    hct = app.ForceField("amber14-all.xml", "implicit/hct.xml").createSystem(protein.topology)
    with pytest.raises(ValueError, match="computed value B"):
        implicit_tables_from_system(hct)
    vacuum = app.ForceField("amber14-all.xml").createSystem(protein.topology)
    with pytest.raises(ValueError, match="found 0"):
        implicit_tables_from_system(vacuum)
    with pytest.raises(TypeError, match="system"):
        implicit_tables_from_system("gbn2.xml")  # type: ignore[arg-type]


def test_tables_layout_and_to() -> None:
    system = system_for(peptide(), "gbn2")
    tables = implicit_tables_from_system(system)
    force = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    n_radii = force.getTabulatedFunction(0).getFunctionParameters()[0]
    assert tables.neck_d0.shape == tables.neck_m0.shape == (n_radii, n_radii)
    assert tables.radius_index.dtype == torch.int64 and int(tables.radius_index.max()) < n_radii
    single = tables.to(dtype=torch.float32)
    assert single.dtype == torch.float32 and single.radius_index.dtype == torch.int64
    assert single.neck_d0.dtype == torch.float32 and single.offset == tables.offset
    assert set(tables.tensors()) >= {"charge", "offset_radius", "scaled_radius", "neck_m0"}
    obc2 = implicit_tables_from_system(system_for(peptide(), "obc2"))
    assert not obc2.has_neck and torch.all(obc2.alpha == 1.0) and torch.all(obc2.beta == 0.8)


def test_debye_kappa() -> None:
    """0.15 M NaCl in water at 300 K: Debye length ~0.785 nm; amber scales kappa by 0.73."""
    kappa = debye_kappa(0.15, 78.5, 300.0)
    assert kappa / 0.73 == pytest.approx(1 / 0.785, rel=0.01)
    assert debye_kappa(0.0) == 0.0
    with pytest.raises(ValueError, match="salt_molar"):
        debye_kappa(-1.0)
    with pytest.raises(TypeError, match="temperature"):
        debye_kappa(0.1, temperature="300")  # type: ignore[arg-type]


def test_argument_errors() -> None:
    protein = peptide("GKD")
    tables = implicit_tables_from_system(system_for(protein, "gbn2"))
    x = protein.positions[None].repeat(2, 1, 1)
    moved = torch.tensor([[0, 1], [2, -1]])
    with pytest.raises(ValueError, match=r"positions must have shape \(B, "):
        implicit_energy_reference(tables, x[:, :-1])
    with pytest.raises(TypeError, match="positions"):
        implicit_energy_reference(tables, x.long())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="new_positions"):
        implicit_delta_reference(tables, x, x[:1], moved)
    with pytest.raises(ValueError, match="twice"):
        implicit_delta_reference(tables, x, x, torch.tensor([[0, 0], [1, -1]]))
    with pytest.raises(ValueError, match="atom indices"):
        implicit_delta_reference(tables, x, x, torch.tensor([[0, protein.n_atoms], [1, -1]]))
    with pytest.raises(TypeError, match="moved"):
        implicit_delta_reference(tables, x, x, moved.double())
    state = implicit_energy_reference(tables, x[:1])[1]
    with pytest.raises(ValueError, match="state.integrals"):
        implicit_delta_reference(tables, x, x, moved, state)
