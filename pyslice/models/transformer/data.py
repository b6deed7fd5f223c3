"""The transformer's data: what a token is, proteins as tokens, and where training records come
from.

A protein is a sequence of residue *tokens* (standard amino acids; caps, water and ligands left
out): amino-acid id, chain ordinal and index in the chain, backbone N/CA/C atoms, phi/psi, and the
chi angles of residues with movable chis (:class:`ProteinRecord`). The vocabulary and the per-type
tables (:data:`AMINO_ACIDS`, :data:`HEAD_TYPES`, :data:`PI_PERIODIC_TABLE`, ...) are indexed by
the amino-acid id.

Records come from deposited structures (:func:`record_from_protein`, :func:`load_structures`,
:func:`default_datasets`: ``structures/top240`` for training, held-out ``domains/`` files plus
bpti and t4-lysozyme for validation) and from energy-filtered sampler draws
(:func:`records_from_ensemble`, :func:`sampled_records`: the published recipe's second stage).
Only residues whose chi atoms were all deposited with B <= 40 are data (the rotamer library's rule,
:func:`pyslice.models.rotamers.data.chi_atoms_deposited`). Extracted tensors are cached per file
(default ``$XDG_CACHE_HOME/pyslice/transformer``, keyed by the file's hash), never in the
repository.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pyslice import _checks
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, parent_residue_name
from pyslice.io.files import atomic_write
from pyslice.models.rotamers.data import chi_atoms_deposited, deposited_atoms, resolve_data_dir
from pyslice.structure.residues import AMINO_ACIDS as STANDARD_RESIDUES

if TYPE_CHECKING:
    from pyslice.mcmc.ensemble import Ensemble
    from pyslice.structure.protein import Protein

__all__ = [
    "AMINO_ACIDS",
    "HEAD_TYPES",
    "MAX_CHI",
    "UNKNOWN_AA",
    "VALIDATION_DOMAINS",
    "ChiDataset",
    "ProteinRecord",
    "TokenBatch",
    "default_datasets",
    "load_structures",
    "record_from_protein",
    "records_from_ensemble",
    "sampled_records",
]

#: The 20 standard amino acids (token ids 0..19); 20 is "other".
AMINO_ACIDS: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
AMINO_ACID_INDEX = {name: i for i, name in enumerate(AMINO_ACIDS)}
UNKNOWN_AA = len(AMINO_ACIDS)
#: Residue types with an output head: every type with chi angles except proline (never moved).
HEAD_TYPES: tuple[str, ...] = tuple(sorted(n for n in CHI_ATOMS if n != "PRO"))
HEAD_INDEX = {name: i for i, name in enumerate(HEAD_TYPES)}
#: Chi slots per token (the most any residue type has).
MAX_CHI = 4
_CACHE_VERSION = 1


def head_chis(name: str) -> int:
    """The number of chi angles of head type ``name``."""
    return len(CHI_ATOMS[name])


def _periodic_table() -> torch.Tensor:
    table = torch.zeros(UNKNOWN_AA + 1, MAX_CHI, dtype=torch.bool)
    for name, flags in PI_PERIODIC.items():
        if name in AMINO_ACID_INDEX:
            table[AMINO_ACID_INDEX[name], : len(flags)] = torch.tensor(flags)
    return table


def _n_chi_table() -> torch.Tensor:
    table = torch.zeros(UNKNOWN_AA + 1, dtype=torch.int64)
    for name in HEAD_TYPES:
        table[AMINO_ACID_INDEX[name]] = head_chis(name)
    return table


def _head_table() -> torch.Tensor:
    table = torch.full((UNKNOWN_AA + 1,), -1, dtype=torch.int64)
    for name in HEAD_TYPES:
        table[AMINO_ACID_INDEX[name]] = HEAD_INDEX[name]
    return table


#: Per amino-acid id: ``(21, 4) bool`` pi-periodic chi slots, ``(21,) int64`` number of modelled
#: chis (0 without a head), ``(21,) int64`` head index (-1: none).
PI_PERIODIC_TABLE = _periodic_table()
N_CHI_TABLE = _n_chi_table()
HEAD_TABLE = _head_table()


# --------------------------------------------------------------------------------------------
# One protein as tokens
# --------------------------------------------------------------------------------------------


@dataclass
class ProteinRecord:
    """One protein as L residue tokens (standard amino acids; caps, water and ligands left out).

    Attributes:
        name: a label (file name).
        aa: ``(L,) int64`` amino-acid id (:data:`AMINO_ACIDS` order; 20 = other).
        chain: ``(L,) int64`` chain ordinal; position: ``(L,) int64`` index within the chain.
        backbone: ``(L, 3, 3) float32`` N, CA, C positions in nm.
        phi, psi: ``(L,) float32`` radians, NaN where undefined (chain ends).
        chi: ``(L, 4) float32`` chi angles of residues with movable chis (0 elsewhere).
        has_chi: ``(L,) bool``: the residue's chis are sampled (a group of the proposal).
        chi_ok: ``(L,) bool``: its chi values are data (every chi atom deposited, B <= 40):
            training targets and known context; the others always enter as masked.
    """

    name: str
    aa: torch.Tensor
    chain: torch.Tensor
    position: torch.Tensor
    backbone: torch.Tensor
    phi: torch.Tensor
    psi: torch.Tensor
    chi: torch.Tensor
    has_chi: torch.Tensor
    chi_ok: torch.Tensor

    def __len__(self) -> int:
        return int(self.aa.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProteinRecord:
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def subset(self, index: torch.Tensor) -> ProteinRecord:
        """The tokens ``index`` (a crop), in that order."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, str) else value[index]
        return ProteinRecord(**out)


def record_from_protein(
    protein: Protein, name: str = "", pdb_text: str | None = None
) -> tuple[ProteinRecord, torch.Tensor]:
    """The tokens of a :class:`~pyslice.Protein` and ``token_of_residue: (n_residues,) int64``
    (-1 for residues that are not tokens).

    ``pdb_text``: the deposited file; when given, ``chi_ok`` marks residues whose chi atoms were
    all deposited with B-factor <= 40 (pdbfixer-rebuilt side chains are not data). Without it every
    residue with movable chis counts as data.
    """
    residues = list(protein.topology.residues())
    xyz = protein.positions.to(torch.float32)
    backbone_dihedrals = protein.backbone_dihedrals().to(torch.float32)
    token_of_residue = torch.full((len(residues),), -1, dtype=torch.int64)
    aa, chain, position, backbone, phi, psi = [], [], [], [], [], []
    chain_ordinal: dict[int, int] = {}
    in_chain: dict[int, int] = {}
    residue_keys = []
    for residue in residues:
        parent = parent_residue_name(residue.name)
        if parent not in STANDARD_RESIDUES:
            continue
        atoms = {a.name: a.index for a in residue.atoms()}
        coords = torch.full((3, 3), math.nan, dtype=torch.float32)
        for j, atom_name in enumerate(("N", "CA", "C")):
            if atom_name in atoms:
                coords[j] = xyz[atoms[atom_name]]
        c = chain_ordinal.setdefault(residue.chain.index, len(chain_ordinal))
        token_of_residue[residue.index] = len(aa)
        aa.append(AMINO_ACID_INDEX.get(parent, UNKNOWN_AA))
        chain.append(c)
        position.append(in_chain.get(c, 0))
        in_chain[c] = position[-1] + 1
        backbone.append(coords)
        phi.append(backbone_dihedrals[residue.index, 0])
        psi.append(backbone_dihedrals[residue.index, 1])
        residue_keys.append((residue.chain.id, residue.id, residue.insertionCode or " ", parent))
    n = len(aa)
    chi = torch.zeros(n, MAX_CHI, dtype=torch.float32)
    has_chi = torch.zeros(n, dtype=torch.bool)
    chi_index = protein.chi_index.to("cpu")
    if chi_index.shape[0]:
        values = protein.chi_angles().to("cpu", torch.float32)
        tokens = token_of_residue[chi_index[:, 0]]
        if bool((tokens < 0).any()):
            raise ValueError("protein: a residue with movable chi angles is not an amino acid")
        chi[tokens, chi_index[:, 1]] = values
        has_chi[tokens] = True
    chi_ok = has_chi.clone()
    if pdb_text is not None:
        deposited = deposited_atoms(pdb_text)
        for t in torch.nonzero(has_chi).flatten().tolist():
            chain_id, res_id, icode, parent = residue_keys[t]
            chi_ok[t] = chi_atoms_deposited(parent, deposited.get((chain_id, res_id, icode)))
    record = ProteinRecord(
        name=name,
        aa=torch.tensor(aa, dtype=torch.int64),
        chain=torch.tensor(chain, dtype=torch.int64),
        position=torch.tensor(position, dtype=torch.int64),
        backbone=torch.stack(backbone) if backbone else torch.zeros(0, 3, 3),
        phi=torch.stack(phi) if phi else torch.zeros(0),
        psi=torch.stack(psi) if psi else torch.zeros(0),
        chi=chi,
        has_chi=has_chi,
        chi_ok=chi_ok,
    )
    return record, token_of_residue


def records_from_ensemble(
    protein: Protein,
    ensemble: Ensemble,
    *,
    energy_cut: float | None = None,
    keep_fraction: float | None = None,
    max_records: int | None = None,
    seed: int = 0,
    name: str = "sampled",
) -> list[ProteinRecord]:
    """Energy-filtered sampler data for :func:`train_ml` (the published recipe's second stage):
    one record per kept draw of ``ensemble`` (a :class:`~pyslice.Ensemble` sampled on
    ``protein``), its chis as data on the protein's backbone.

    A draw is kept when its energy is finite, ``<= energy_cut`` (kJ/mol, the sampler's energy) when
    given, and among the lowest ``keep_fraction`` of the finite energies when given; of those, at
    most ``max_records`` are taken at random (``seed``). Every movable residue of a kept draw is a
    training target and known context (``chi_ok``).
    """
    from pyslice.mcmc.ensemble import Ensemble

    if not isinstance(ensemble, Ensemble):
        raise TypeError(f"ensemble must be a pyslice.Ensemble, got {type(ensemble).__name__}")
    if ensemble.n_chi != protein.n_chi:
        raise ValueError(
            f"ensemble: {ensemble.n_chi} chi angles per draw, the protein has {protein.n_chi}"
        )
    residues = torch.unique(protein.chi_index[:, 0].cpu()).tolist()
    names = [f"{protein.residue_names[r]}{r + 1}" for r in residues]
    if ensemble.group_names and list(ensemble.group_names) != names:
        raise ValueError("ensemble: its residues are not the protein's (sampled on another one?)")
    chi = ensemble.chi.reshape(-1, ensemble.n_chi).to(torch.float32)
    energy = ensemble.energy.reshape(-1).to(torch.float64)
    keep = torch.isfinite(energy)
    if energy_cut is not None:
        cut = float(energy_cut)
        if math.isnan(cut):
            raise ValueError("energy_cut must be a number, got nan")
        keep &= energy <= cut
    if keep_fraction is not None:
        fraction = _checks.check_float("keep_fraction", keep_fraction, positive=True)
        if fraction > 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        finite = energy[torch.isfinite(energy)]
        if finite.numel():
            keep &= energy <= torch.quantile(finite, fraction)
    index = torch.nonzero(keep).flatten()
    if max_records is not None:
        max_records = _checks.check_int("max_records", max_records, low=1)
        if index.numel() > max_records:
            gen = torch.Generator().manual_seed(int(seed))
            index = index[torch.randperm(index.numel(), generator=gen)[:max_records]].sort()[0]
    base, token_of_residue = record_from_protein(protein, name=name)
    chi_index = protein.chi_index.to("cpu")
    tokens, slots = token_of_residue[chi_index[:, 0]], chi_index[:, 1]
    records = []
    for i in index.tolist():
        values = base.chi.clone()
        values[tokens, slots] = chi[i]
        records.append(
            ProteinRecord(
                **{**base.to_dict(), "name": f"{name}#{i}", "chi": values,
                   "chi_ok": base.has_chi.clone()}
            )
        )  # fmt: skip
    return records


def _default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "pyslice" / "transformer"


def load_structures(
    paths: Iterable[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[ProteinRecord]:
    """Read PDB files into :class:`ProteinRecord` s (with :meth:`Protein.from_pdb`, ~2-3 s a file),
    caching each file's tensors in ``cache_dir`` (default ``$XDG_CACHE_HOME/pyslice/transformer``)
    under its content hash. Files that do not read (a ValueError) are skipped with a message."""
    from pyslice.structure.protein import Protein

    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    paths = [Path(p) for p in paths]
    for i, path in enumerate(paths):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        cached = cache / f"{path.stem}-{digest}-v{_CACHE_VERSION}.pt"
        if cached.is_file():
            out.append(ProteinRecord.from_dict(torch.load(cached, weights_only=True)))
            continue
        t0 = time.time()
        try:
            protein = Protein.from_pdb(path)
        except ValueError as exc:
            if progress:
                print(f"skipped {path.name}: {str(exc).splitlines()[0]}", file=sys.stderr)
            continue
        record, _ = record_from_protein(protein, path.stem, data.decode(errors="replace"))
        buffer = io.BytesIO()
        torch.save(record.to_dict(), buffer)
        atomic_write(cached, "wb", lambda f, b=buffer: f.write(b.getvalue()))
        out.append(record)
        if progress:
            print(
                f"read {path.name} ({i + 1}/{len(paths)}) in {time.time() - t0:.1f} s",
                file=sys.stderr,
            )
    return out


class ChiDataset(list):
    """A list of :class:`ProteinRecord` (what :func:`train_ml` draws batches from)."""

    @property
    def n_residues(self) -> int:
        """Residues whose chis are data (training targets)."""
        return int(sum(int(r.chi_ok.sum()) for r in self))


#: Held-out structures (validation): the first 20 of ``structures/domains``, bpti, t4-lysozyme.
VALIDATION_DOMAINS = (
    "1AQT_A", "1BXY_A", "1CTF_A", "1CZP_A", "1FB0_A", "1FQT_A", "1GN0_A", "1GUU_A", "1JL3_A",
    "1MVO_A", "1OAP_A", "1PTF_A", "1T8K_A", "1TEN_A", "1TZV_A", "1U2H_A", "1UCS_A", "1UNQ_A",
    "1WVN_A", "1Z2U_A",
)  # fmt: skip


def default_datasets(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[ChiDataset, ChiDataset]:
    """(train, validation): every ``structures/top240`` file; the :data:`VALIDATION_DOMAINS` of
    ``structures/domains`` plus ``bpti.pdb`` and ``t4-lysozyme.pdb``."""
    root = resolve_data_dir(data_dir)
    structures = root / "structures"
    train_paths = sorted((structures / "top240").glob("*.pdb"))
    if not train_paths:
        raise FileNotFoundError(f"no .pdb files in {structures / 'top240'}")
    val_paths = [structures / "domains" / f"{name}.pdb" for name in VALIDATION_DOMAINS]
    val_paths += [structures / "bpti.pdb", structures / "t4-lysozyme.pdb"]
    val_paths = [p for p in val_paths if p.is_file()]
    train = ChiDataset(load_structures(train_paths, cache_dir=cache_dir, progress=progress))
    val = ChiDataset(load_structures(val_paths, cache_dir=cache_dir, progress=progress))
    return train, val


def sampled_records(
    pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]],
    *,
    energy_cut: float | None = None,
    keep_fraction: float | None = None,
    max_records: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> list[ProteinRecord]:
    """The energy-filtered records (:func:`records_from_ensemble`) of every ``(structure,
    ensemble)`` pair of files: a structure and the ``ensemble.npz`` of a ``pyslice sample`` run on
    it."""
    from pyslice.mcmc.ensemble import Ensemble
    from pyslice.structure.protein import Protein

    out: list[ProteinRecord] = []
    for structure, ensemble_path in pairs:
        for label, path in (("structure", structure), ("ensemble", ensemble_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"sampled: no such {label} file: {path}")
        records = records_from_ensemble(
            Protein.from_file(structure),
            Ensemble.load(ensemble_path),
            energy_cut=energy_cut,
            keep_fraction=keep_fraction,
            max_records=max_records,
            seed=seed,
            name=Path(structure).stem,
        )
        if log is not None:
            log(f"{ensemble_path}: {len(records)} draws kept")
        out.extend(records)
    return out


# --------------------------------------------------------------------------------------------
# Batches of tokens
# --------------------------------------------------------------------------------------------


@dataclass
class TokenBatch:
    """Padded tokens of B proteins (or B copies of one): every field ``(B, L, ...)``;
    ``padding: (B, L) bool`` True where there is no token."""

    aa: torch.Tensor
    chain: torch.Tensor
    position: torch.Tensor
    backbone: torch.Tensor
    phi: torch.Tensor
    psi: torch.Tensor
    has_chi: torch.Tensor
    padding: torch.Tensor

    @classmethod
    def from_records(
        cls, records: Sequence[ProteinRecord], device: torch.device | str | None = None
    ) -> TokenBatch:
        b = len(records)
        length = max((len(r) for r in records), default=0)
        device = torch.device(device if device is not None else "cpu")
        aa = torch.full((b, length), UNKNOWN_AA, dtype=torch.int64)
        chain = torch.zeros(b, length, dtype=torch.int64)
        position = torch.zeros(b, length, dtype=torch.int64)
        backbone = torch.zeros(b, length, 3, 3, dtype=torch.float32)
        phi = torch.full((b, length), math.nan, dtype=torch.float32)
        psi = torch.full((b, length), math.nan, dtype=torch.float32)
        has_chi = torch.zeros(b, length, dtype=torch.bool)
        padding = torch.ones(b, length, dtype=torch.bool)
        for i, r in enumerate(records):
            n = len(r)
            aa[i, :n] = r.aa
            chain[i, :n] = r.chain
            position[i, :n] = r.position
            backbone[i, :n] = r.backbone
            phi[i, :n] = r.phi
            psi[i, :n] = r.psi
            has_chi[i, :n] = r.has_chi
            padding[i, :n] = False
        batch = cls(aa, chain, position, backbone, phi, psi, has_chi, padding)
        return batch.to(device)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def padded_chi(
    records: Sequence[ProteinRecord], aa: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chi (B, L, 4), chi_ok (B, L), pi_periodic (B, L, 4)) padded like ``aa: (B, L)``."""
    b, length = aa.shape
    chi = torch.zeros(b, length, MAX_CHI, dtype=torch.float32)
    ok = torch.zeros(b, length, dtype=torch.bool)
    for i, r in enumerate(records):
        chi[i, : len(r)] = r.chi
        ok[i, : len(r)] = r.chi_ok
    return chi, ok, PI_PERIODIC_TABLE[aa]
