"""SideChainTransformer: a masked conditional model of side-chain chi angles (issue #6).

The model
---------
For a protein with residues i = 1..L, a subset S of the residues with movable chi angles is
*masked* (to be resampled) and every other residue is *context*. The model gives, for every masked
residue i, a von Mises mixture over that residue type's chi angles::

    q_i(x_i | x_rest, backbone) = sum_k alpha_ik prod_c vM(x_ic; mu_ick, kappa_ick),   k = 1..K,

with K components shared by the residue's chis (one component = one rotamer, so its chis stay
correlated) and pi-periodic chis (ASP chi2, GLU chi3, PHE/TYR chi2) modelled on the doubled angle,
as in :class:`~pyslice.proposals.MixtureProposal`. Masked residues are independent given the
context, so

    q(x_S | x_rest, backbone) = prod_{i in S} q_i(x_i | x_rest, backbone):

an exact log-density, parallel sampling, and exact block moves: the proposal for a block S
conditions only on residues outside S, which the move leaves unchanged, so the forward and the
reverse move see the same context (one forward pass serves both). A full-configuration draw is the
all-masked case (context = backbone and sequence only). The latent label of a residue is its
component; for :class:`~pyslice.mcmc.Lifted` moves the conditional r(k | x) is the posterior of
the all-masked mixture (block-independent, as :meth:`Proposal.sample_latent` must be; with it a
full lifted move has exactly the independence move's acceptance).

Inputs per residue (token): sin/cos of phi and psi (zeros and an "undefined" flag at chain ends),
an amino-acid embedding, a chain embedding (chain ordinal), a sinusoidal encoding of the index in
the chain, whether the residue has movable chis, two burial counts (C-alpha atoms within 1 nm, and
within 1.3 nm on the side-chain half-sphere), three *rotamer-environment* counts (how crowded a
gamma atom placed at chi1 = 60, 180, -60 degrees would be by the other residues' N, CA, C and
virtual C-beta atoms), and -- for context residues only -- sin/cos of each chi (the doubled angle
for pi-periodic chis) with a "known" flag, plus the same three counts against the gamma atoms of
the known residues (placed from their chi1): so a masked residue sees which of its chi1 wells the
context crowds. Masked residues and residues without movable chis get zeros and flags instead (a
masked residue's own chis never enter). Residues are coupled by pre-norm transformer encoder layers
(class defaults d_model 128, 4 heads, 3 layers, feed-forward 256, K = 16; the shipped model is
smaller: d_model 64, 2 heads, 3 layers, feed-forward 128, K = 12, see
``pyslice/data/transformer.md``).

Addition to the issue's design: **geometric attention**. Sequence and phi/psi alone do not say
which residues touch in space, so every head adds a Gaussian distance bias
``-gamma_h |p_i - p_j|^2`` to its attention logits, p being points on each residue's
C-alpha -> C-beta axis (learned offsets ``a_h`` for queries, ``b_h`` for keys; virtual C-beta from
N, CA, C). The bias is carried inside
ordinary dot-product attention by four of each head's query/key dimensions (q' = [2 gamma p_i,
-gamma], k' = [p_j, |p_j|^2]: q'.k' = -gamma |p_i - p_j|^2 + a constant per query, which softmax
ignores; the other head_dim - 4 are learned content), so it runs through
:func:`pyslice.attention.attention` unchanged (head dim 32 by default, a size its Triton kernels
take); it is rotation and translation invariant. Heads with small gamma attend globally, large
gamma locally.

The output head is one linear map per residue type (K logits; per chi and component a 2-vector
whose angle is the mean, and a softplus concentration capped at :data:`KAPPA_MAX`), evaluated only
for masked residues. Parameters are float32; log-densities are evaluated in float64.

Training (:func:`train_ml`) is maximum likelihood on chi angles of deposited structures: each batch
takes random proteins (spatial crops of ``max_len`` residues around a random centre), masks each
residue with chis with probability r (r uniform per crop, all-masked 15 % of the time) and minimises
-log q of the masked residues' experimental chis (mean per masked residue, or per crop). Noise on
the backbone atoms, phi/psi and context chis, dropout, weight decay and early stopping on the
validation NLL keep the model from memorising the ~200 training structures (which it does within
a few hundred steps without them). Only residues whose
chi atoms were all deposited with B <= 40 are targets or known context (the rotamer library's
filter,
:mod:`pyslice.models.rotamers`); others enter as masked. Data: ``structures/top240`` for training,
held-out ``domains/`` files plus bpti and t4-lysozyme for validation (:func:`default_datasets`).
Energy-filtered sampler data (the published recipe's second stage) are not used: the shipped
model is trained on experimental structures only. :class:`TransformerPolicy` makes a model an ERA
policy
(:mod:`pyslice.models.era`; ``pyslice train --era``), which aligns its block conditionals with one
structure's Boltzmann distribution from energies alone. Measured limits of the shipped
model: context lowers the validation NLL by only ~0.01 nats per residue (the side-chain coupling
is learned weakly), and in independence MH against amber14 in vacuum its block proposals are
accepted ~12-17 % of the time for one residue, ~0.2-1 % for four and not measurably for sixteen
(``benchmarks/acceptance.py``): proposals of several residues mostly clash. Fine-tuned for a few
minutes on the lower-energy half of a sampler run of the structure (:func:`records_from_ensemble`,
``pyslice train ml --init ... --sampled ...``), it
learns that structure's packing:
acceptance 0.31-0.32 for one residue, 0.05-0.07 for four and 0.3-0.5 % for sixteen on bpti and
t4-lysozyme, where the rotamer library had none of 38,400 accepted.

Extracted training tensors are cached per file (default ``$XDG_CACHE_HOME/pyslice/transformer``,
keyed by the file's hash), never in the repository.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyslice import _checks
from pyslice.attention import attention
from pyslice.distributions import draw_mixture, von_mises_log_density
from pyslice.geometry.angles import wrap_angle
from pyslice.geometry.builder import CHI_ATOMS, PI_PERIODIC, parent_residue_name
from pyslice.io.files import atomic_write
from pyslice.models.rotamers.data import chi_atoms_deposited, deposited_atoms
from pyslice.proposals import Proposal, ProposalDraw, derive_seed, generator

__all__ = [
    "ChiDataset",
    "ProteinRecord",
    "SideChainTransformer",
    "TransformerPolicy",
    "TransformerProposal",
    "default_datasets",
    "evaluate_nll",
    "load_structures",
    "record_from_protein",
    "records_from_ensemble",
    "train_ml",
]

FORMAT = "pyslice-transformer"
FORMAT_VERSION = 1
DEFAULT_FILE = "transformer.pt"
#: Concentration cap of the output head (a 2.6-degree spread), as in the rotamer library.
KAPPA_MAX = 500.0
#: The 20 standard amino acids (token ids 0..19); 20 is "other".
AMINO_ACIDS: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
_AA_INDEX = {name: i for i, name in enumerate(AMINO_ACIDS)}
UNKNOWN_AA = len(AMINO_ACIDS)
#: Residue types with an output head: every type with chi angles except proline (never moved).
HEAD_TYPES: tuple[str, ...] = tuple(sorted(n for n in CHI_ATOMS if n != "PRO"))
_HEAD_INDEX = {name: i for i, name in enumerate(HEAD_TYPES)}
MAX_CHI = 4
_N_CHAINS = 8  # chain ordinals >= 7 share the last embedding
_POS_DIM = 16
_STATIC_DIM = 12 + _POS_DIM
_CHI_DIM = 2 * MAX_CHI + 5
_EXTRA = 4  # geometric attention dimensions
_WELLS = (math.radians(60.0), math.pi, math.radians(-60.0))
_CB_BOND = 0.153  # nm
_CG_BOND = 0.152
_CACHE_VERSION = 1
_TAG_LABEL, _TAG_ANGLE, _TAG_LATENT, _TAG_CONTEXT = 0x74636F, 0x74616E, 0x74726B, 0x746378


def _head_chis(name: str) -> int:
    return len(CHI_ATOMS[name])


# --------------------------------------------------------------------------------------------
# Data: one protein as tokens
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
    protein: Any, name: str = "", pdb_text: str | None = None
) -> tuple[ProteinRecord, torch.Tensor]:
    """The tokens of a :class:`~pyslice.Protein` and ``token_of_residue: (n_residues,) int64``
    (-1 for residues that are not tokens).

    ``pdb_text``: the deposited file; when given, ``chi_ok`` marks residues whose chi atoms were
    all deposited with B-factor <= 40 (pdbfixer-rebuilt side chains are not data). Without it every
    residue with movable chis counts as data.
    """
    from pyslice.structure.protein import AMINO_ACIDS as _ONE_LETTER

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
        if parent not in _ONE_LETTER:
            continue
        atoms = {a.name: a.index for a in residue.atoms()}
        coords = torch.full((3, 3), math.nan, dtype=torch.float32)
        for j, atom_name in enumerate(("N", "CA", "C")):
            if atom_name in atoms:
                coords[j] = xyz[atoms[atom_name]]
        c = chain_ordinal.setdefault(residue.chain.index, len(chain_ordinal))
        token_of_residue[residue.index] = len(aa)
        aa.append(_AA_INDEX.get(parent, UNKNOWN_AA))
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
    protein: Any,
    ensemble: Any,
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
    from pyslice._data import data_dir as find

    root = Path(data_dir) if data_dir is not None else find(required=True)
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


def _pad_records(
    records: Sequence[ProteinRecord], aa: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chi (B, L, 4), chi_ok (B, L), pi_periodic (B, L, 4)) padded like ``aa: (B, L)``."""
    b, length = aa.shape
    chi = torch.zeros(b, length, MAX_CHI, dtype=torch.float32)
    ok = torch.zeros(b, length, dtype=torch.bool)
    for i, r in enumerate(records):
        chi[i, : len(r)] = r.chi
        ok[i, : len(r)] = r.chi_ok
    return chi, ok, _PERIODIC_TABLE[aa]


def _periodic_table() -> torch.Tensor:
    table = torch.zeros(UNKNOWN_AA + 1, MAX_CHI, dtype=torch.bool)
    for name, flags in PI_PERIODIC.items():
        if name in _AA_INDEX:
            table[_AA_INDEX[name], : len(flags)] = torch.tensor(flags)
    return table


def _n_chi_table() -> torch.Tensor:
    table = torch.zeros(UNKNOWN_AA + 1, dtype=torch.int64)
    for name in HEAD_TYPES:
        table[_AA_INDEX[name]] = _head_chis(name)
    return table


def _head_table() -> torch.Tensor:
    table = torch.full((UNKNOWN_AA + 1,), -1, dtype=torch.int64)
    for name in HEAD_TYPES:
        table[_AA_INDEX[name]] = _HEAD_INDEX[name]
    return table


_PERIODIC_TABLE = _periodic_table()
_N_CHI_TABLE = _n_chi_table()
_HEAD_TABLE = _head_table()


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """q, k, v: (B, H, S, D); key_padding_mask: (B, S) True = pad. The one place that calls the
    attention implementation (:func:`pyslice.attention.attention`: Triton on CUDA, SDPA on CPU)."""
    return attention(q, k, v, key_padding_mask=key_padding_mask, scale=scale)


class _Layer(nn.Module):
    """Pre-norm encoder layer with geometric (distance-biased) multi-head attention.

    Per head, queries and keys have ``head_dim - 4`` content dimensions plus the 4 geometric ones
    (values have ``head_dim``), so q, k and v share the head dim (32 for the default sizes: the
    dims the Triton kernels take)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.content_dim = self.head_dim - _EXTRA
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 2 * n_heads * self.content_dim + d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)
        # gamma_h (nm^-2) from ~0.05 (global) to ~3 (about one residue shell); offsets in nm.
        gammas = torch.logspace(math.log10(0.05), math.log10(3.0), n_heads)
        self.gamma_raw = nn.Parameter(torch.log(torch.expm1(gammas)))
        self.query_offset = nn.Parameter(torch.full((n_heads,), 0.2))
        self.key_offset = nn.Parameter(torch.full((n_heads,), 0.2))

    def forward(
        self, x: torch.Tensor, ca: torch.Tensor, axis: torch.Tensor, padding: torch.Tensor
    ) -> torch.Tensor:
        b, length, d = x.shape
        h, hd, cd = self.n_heads, self.head_dim, self.content_dim
        qkv = self.qkv(self.norm1(x))
        q = qkv[..., : h * cd].view(b, length, h, cd).transpose(1, 2)  # (B, H, L, cd)
        k = qkv[..., h * cd : 2 * h * cd].view(b, length, h, cd).transpose(1, 2)
        v = qkv[..., 2 * h * cd :].view(b, length, h, hd).transpose(1, 2)  # (B, H, L, hd)
        gamma = F.softplus(self.gamma_raw)[None, :, None, None]  # (1, H, 1, 1)
        pq = ca[:, None] + self.query_offset[None, :, None, None] * axis[:, None]  # (B, H, L, 3)
        pk = ca[:, None] + self.key_offset[None, :, None, None] * axis[:, None]
        scale = 1.0 / math.sqrt(cd)  # the content dims' scale; the geometric ones undo it
        q_extra = torch.cat([2.0 * gamma * pq, (-gamma).expand(b, h, length, 1)], -1) / scale
        k_extra = torch.cat([pk, (pk * pk).sum(-1, keepdim=True)], -1)
        q = torch.cat([q, q_extra], -1)
        k = torch.cat([k, k_extra], -1)
        o = _attention(q, k, v, padding, scale)
        x = x + self.dropout(self.out(o.transpose(1, 2).reshape(b, length, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


@dataclass
class MixtureParams:
    """Mixture parameters of N (row, token) pairs: ``logits (N, K)`` normalised log-weights,
    ``loc, concentration (N, 4, K)`` (chi slots beyond the type's count are unused), ``rows,
    tokens (N,)`` int64."""

    logits: torch.Tensor
    loc: torch.Tensor
    concentration: torch.Tensor
    rows: torch.Tensor
    tokens: torch.Tensor


@dataclass
class _Static:
    """Chi-independent part of a forward pass: token embeddings and geometry, (B_s, L, ...)."""

    h: torch.Tensor
    ca: torch.Tensor
    axis: torch.Tensor
    aa: torch.Tensor
    has_chi: torch.Tensor
    padding: torch.Tensor
    n_atom: torch.Tensor  # (B, L, 3) backbone N
    cb: torch.Tensor  # (B, L, 3) virtual C-beta
    wells: torch.Tensor  # (B, L, 3, 3) gamma atom at chi1 = 60, 180, -60 degrees

    def expand(self, n: int) -> _Static:
        return _Static(*(t.expand(n, *t.shape[1:]) for t in (
            self.h, self.ca, self.axis, self.aa, self.has_chi, self.padding, self.n_atom, self.cb,
            self.wells,
        )))  # fmt: skip


class SideChainTransformer(nn.Module):
    """Masked conditional model of chi angles (see the module docstring).

    Args:
        d_model, n_heads, n_layers, d_ff: transformer sizes.
        n_components: K, mixture components per residue.
        dropout: dropout rate in training.
    """

    def __init__(
        self,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 256,
        n_components: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        d_model = _checks.check_int("d_model", d_model, low=1)
        n_heads = _checks.check_int("n_heads", n_heads, low=1)
        if d_model % n_heads or d_model // n_heads <= _EXTRA:
            raise ValueError(
                f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}) with head dim > "
                f"{_EXTRA} (4 dims of each head carry the geometric bias)"
            )
        self.config = {
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": _checks.check_int("n_layers", n_layers, low=1),
            "d_ff": _checks.check_int("d_ff", d_ff, low=1),
            "n_components": _checks.check_int("n_components", n_components, low=1),
            "dropout": float(dropout),
        }
        self.provenance: dict[str, Any] = {}
        k = self.config["n_components"]
        self.aa_embedding = nn.Embedding(UNKNOWN_AA + 1, d_model)
        self.chain_embedding = nn.Embedding(_N_CHAINS, d_model)
        self.static_proj = nn.Linear(_STATIC_DIM, d_model)
        self.chi_proj = nn.Linear(_CHI_DIM, d_model)
        self.layers = nn.ModuleList(
            _Layer(d_model, n_heads, self.config["d_ff"], dropout) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.heads = nn.ModuleList(
            nn.Linear(d_model, k * (1 + 3 * _head_chis(name))) for name in HEAD_TYPES
        )
        self._init_heads()
        self.register_buffer("_periodic", _PERIODIC_TABLE.clone(), persistent=False)
        self.register_buffer("_n_chi", _N_CHI_TABLE.clone(), persistent=False)
        self.register_buffer("_head", _HEAD_TABLE.clone(), persistent=False)

    @property
    def n_components(self) -> int:
        return self.config["n_components"]

    def _init_heads(self) -> None:
        """Component k starts at the staggered wells (60, 180, -60 degrees) of the mixed-radix
        digits of k, one digit per chi, with moderate concentration and equal weights."""
        k = self.n_components
        with torch.no_grad():
            for name, head in zip(HEAD_TYPES, self.heads, strict=True):
                c = _head_chis(name)
                head.weight.mul_(0.1)
                bias = torch.zeros(k, 1 + 3 * c)
                for comp in range(k):
                    for chi in range(c):
                        well = _WELLS[(comp // 3**chi) % 3] + 0.1 * math.sin(7.0 * comp + chi)
                        bias[comp, 1 + 3 * chi] = math.cos(well)
                        bias[comp, 2 + 3 * chi] = math.sin(well)
                        bias[comp, 3 + 3 * chi] = math.log(math.expm1(4.0))
                head.bias.copy_(bias.reshape(-1))

    # ---------------------------------------------------------------- forward pieces

    def encode_static(self, batch: TokenBatch) -> _Static:
        """Embeddings and geometry that do not depend on chi (computed once per protein)."""
        device = self.aa_embedding.weight.device
        batch = batch.to(device)
        pad = batch.padding
        bb = torch.nan_to_num(batch.backbone.to(torch.float32))
        n_at, ca, c_at = bb[:, :, 0], bb[:, :, 1], bb[:, :, 2]
        valid = (~pad).to(torch.float32)[..., None]
        centre = (ca * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1.0)
        ca = (ca - centre) * valid
        # Virtual C-beta direction from ideal geometry (Engh-Huber; the coefficients in Angstrom).
        b_vec = (ca + centre - n_at) * 10.0
        c_vec = (c_at - ca - centre) * 10.0
        a_vec = torch.cross(b_vec, c_vec, dim=-1)
        cb = -0.58273431 * a_vec + 0.56802827 * b_vec - 0.54067466 * c_vec
        axis = cb / cb.norm(dim=-1, keepdim=True).clamp_min(1e-6) * valid
        n_c = (n_at - centre) * valid
        c_c = (c_at - centre) * valid
        cb = ca + _CB_BOND * axis
        # Rotamer environment: a gamma atom at each chi1 well, and how crowded each would be by
        # the other residues' backbone atoms and C-betas (soft counts within ~0.35 nm).
        wells = torch.stack(
            [_place(n_c, ca, cb, torch.full_like(ca[..., 0], w)) for w in _WELLS], -2
        )  # (B, L, 3, 3)
        env = torch.stack([n_c, ca, c_c, cb], -2).flatten(1, 2)  # (B, 4L, 3)
        owner = torch.arange(ca.shape[1], device=device).repeat_interleave(4)
        env_ok = (~pad).repeat_interleave(4, dim=1)  # (B, 4L)
        backbone_env = _soft_count(wells, env, env_ok, owner)  # (B, L, 3)
        # Burial: C-alpha counts within 1 nm, and within 1.3 nm on the side-chain half-sphere.
        diff = ca[:, None, :, :] - ca[:, :, None, :]  # (B, L, L, 3): j - i
        dist = diff.norm(dim=-1)
        other = (~pad)[:, None, :] & (~pad)[:, :, None]
        other = other & ~torch.eye(ca.shape[1], dtype=torch.bool, device=device)[None]
        near = ((dist < 1.0) & other).sum(-1).to(torch.float32) / 20.0
        up = ((diff * axis[:, :, None, :]).sum(-1) > 0) & (dist < 1.3) & other
        hse = up.sum(-1).to(torch.float32) / 20.0
        phi, psi = batch.phi.to(torch.float32), batch.psi.to(torch.float32)
        phi_ok, psi_ok = torch.isfinite(phi), torch.isfinite(psi)
        phi0, psi0 = torch.nan_to_num(phi), torch.nan_to_num(psi)
        zero = torch.zeros_like(phi0)
        freq = torch.exp(
            -math.log(1000.0) * torch.arange(_POS_DIM // 2, device=device) / (_POS_DIM // 2)
        )
        angle = batch.position.to(torch.float32)[..., None] * freq
        static = torch.cat(
            [
                torch.stack(
                    [
                        torch.where(phi_ok, torch.sin(phi0), zero),
                        torch.where(phi_ok, torch.cos(phi0), zero),
                        torch.where(psi_ok, torch.sin(psi0), zero),
                        torch.where(psi_ok, torch.cos(psi0), zero),
                        (~phi_ok).to(torch.float32),
                        (~psi_ok).to(torch.float32),
                        batch.has_chi.to(torch.float32),
                        near,
                        hse,
                        *backbone_env.unbind(-1),
                    ],
                    -1,
                ),
                torch.sin(angle),
                torch.cos(angle),
            ],
            -1,
        )
        h = (
            self.static_proj(static)
            + self.aa_embedding(batch.aa)
            + self.chain_embedding(batch.chain.clamp(0, _N_CHAINS - 1))
        )
        return _Static(h, ca, axis, batch.aa, batch.has_chi, pad, n_c, cb, wells)

    def run(
        self, static: _Static, chi: torch.Tensor, known: torch.Tensor, want: torch.Tensor
    ) -> MixtureParams:
        """Mixture parameters of the tokens ``want: (B, L) bool`` given the chis ``chi: (B, L, 4)``
        of the tokens ``known: (B, L) bool`` (others are ignored: zeros and flags)."""
        known = known & static.has_chi & ~static.padding
        periodic = self._periodic[static.aa]  # (B, L, 4)
        slots = torch.arange(MAX_CHI, device=chi.device) < self._n_chi[static.aa][..., None]
        y = torch.where(periodic, 2.0 * chi, chi)
        use = (known[..., None] & slots).to(torch.float32)
        masked = (static.has_chi & ~known & ~static.padding).to(torch.float32)
        # How crowded each chi1 well of every residue would be by the known residues' gammas.
        gamma = _place(static.n_atom, static.ca, static.cb, chi[..., 0])  # (B, L, 3)
        owner = torch.arange(gamma.shape[1], device=chi.device)
        side_env = _soft_count(static.wells, gamma, known, owner)  # (B, L, 3)
        chi_features = torch.cat(
            [
                torch.sin(y) * use,
                torch.cos(y) * use,
                known[..., None].float(),
                masked[..., None],
                side_env,
            ],
            -1,
        )
        x = static.h + self.chi_proj(chi_features)
        for layer in self.layers:
            x = layer(x, static.ca, static.axis, static.padding)
        x = self.final_norm(x)
        rows, tokens = torch.nonzero(want, as_tuple=True)
        hidden = x[rows, tokens]
        head_of = self._head[static.aa[rows, tokens]]
        if bool((head_of < 0).any()):
            raise ValueError("want: a requested token has no chi angles to model")
        k = self.n_components
        n = rows.shape[0]
        logits = hidden.new_zeros(n, k)
        loc = hidden.new_zeros(n, MAX_CHI, k)
        kappa = hidden.new_zeros(n, MAX_CHI, k)
        for t in torch.unique(head_of).tolist():
            sel = torch.nonzero(head_of == t).flatten()
            c = _head_chis(HEAD_TYPES[t])
            out = self.heads[t](hidden[sel]).view(-1, k, 1 + 3 * c)
            logits[sel] = out[..., 0]
            per_chi = out[..., 1:].view(-1, k, c, 3).permute(0, 2, 1, 3)  # (n_t, c, K, 3)
            loc[sel, :c] = torch.atan2(per_chi[..., 1], per_chi[..., 0])
            kappa[sel, :c] = F.softplus(per_chi[..., 2]).clamp(max=KAPPA_MAX)
        logits = torch.log_softmax(logits, dim=-1)
        return MixtureParams(logits, loc, kappa, rows, tokens)

    def forward(
        self, batch: TokenBatch, chi: torch.Tensor, known: torch.Tensor, want: torch.Tensor
    ) -> MixtureParams:
        """``batch`` tokens (B, L), context angles ``chi: (B, L, 4)`` where ``known: (B, L)``;
        returns the mixtures of the tokens ``want: (B, L) bool`` (row-major order)."""
        return self.run(self.encode_static(batch), chi, known, want)

    # ---------------------------------------------------------------- densities

    def component_log_prob(
        self, params: MixtureParams, chi: torch.Tensor, aa: torch.Tensor
    ) -> torch.Tensor:
        """(N, K): log alpha_k + sum_c log vM(chi_c; mu_ck, kappa_ck) for ``chi: (N, 4)`` of
        tokens of type ``aa: (N,)`` (doubled angle for pi-periodic chis)."""
        return _component_log_prob(params, chi, self._periodic[aa], self._n_chi[aa])

    # ---------------------------------------------------------------- proposals, files

    def proposal(
        self,
        protein: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        concentration_scale: float = 1.0,
    ) -> TransformerProposal:
        """The :class:`TransformerProposal` of ``protein`` (a frozen copy of this model);
        ``concentration_scale`` multiplies every kappa (< 1: a broader, tempered proposal)."""
        return TransformerProposal(
            self, protein, device=device, dtype=dtype, concentration_scale=concentration_scale
        )

    def save(self, path: str | os.PathLike, *, half: bool = False) -> None:
        """Write config, weights (float16 when ``half``; :meth:`load` restores float32) and
        ``provenance`` to ``path`` (a torch file, readable with ``weights_only=True``)."""
        state = {
            k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
            for k, v in self.state_dict().items()
        }
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": dict(self.config),
            "state_dict": state,
            # plain JSON types only, so the file loads with weights_only=True
            "provenance": json.loads(json.dumps(self.provenance, default=str)),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, "wb", lambda f: f.write(buffer.getvalue()))

    @classmethod
    def load(
        cls, path: str | os.PathLike, map_location: torch.device | str | None = "cpu"
    ) -> SideChainTransformer:
        """Read a model written by :meth:`save`."""
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 (any unreadable file is the same user error)
            raise ValueError(f"path: cannot read {path}: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"path: {path} is not a pyslice transformer file")
        if payload.get("version") != FORMAT_VERSION:
            raise ValueError(f"path: {path} has format version {payload.get('version')}")
        model = cls(**payload["config"])
        state = {
            k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
        }
        model.load_state_dict(state)
        model.provenance = dict(payload.get("provenance", {}))
        return model.eval()

    @classmethod
    def default(cls) -> SideChainTransformer:
        """The shipped model, ``pyslice/data/transformer.pt`` (see ``transformer.md`` beside it)."""
        from pyslice._data import shipped_file

        return cls.load(shipped_file(DEFAULT_FILE))


def _place(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, torsion: torch.Tensor
) -> torch.Tensor:
    """The atom d bonded to c (0.152 nm, angle b-c-d 114 degrees) with dihedral a-b-c-d =
    ``torsion``: a gamma atom from N, CA, CB and chi1. Shapes (..., 3) and (...)."""
    bc = c - b
    bc = bc / bc.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    normal = torch.cross(b - a, bc, dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    m = torch.cross(normal, bc, dim=-1)
    angle = math.radians(114.0)
    x = -_CG_BOND * math.cos(angle)
    r = _CG_BOND * math.sin(angle)
    t = torsion[..., None]
    return c + x * bc + r * torch.cos(t) * m + r * torch.sin(t) * normal


def _soft_count(
    points: torch.Tensor, env: torch.Tensor, env_ok: torch.Tensor, owner: torch.Tensor
) -> torch.Tensor:
    """log(1 + sum exp(-(d / 0.35 nm)^2)) from each of ``points: (B, L, W, 3)`` to the atoms
    ``env: (B, E, 3)`` where ``env_ok: (B, E)``, leaving out atoms of the point's own residue
    (``owner: (E,)`` token of each atom). Returns (B, L, W)."""
    d2 = (points.unsqueeze(-2) - env[:, None, None, :, :]).pow(2).sum(-1)  # (B, L, W, E)
    weight = torch.exp(-d2 / 0.35**2)
    own = owner[None, :] == torch.arange(points.shape[1], device=points.device)[:, None]
    keep = env_ok[:, None, None, :] & ~own[None, :, None, :]
    return torch.log1p((weight * keep).sum(-1))


def _component_log_prob(
    params: MixtureParams, chi: torch.Tensor, periodic: torch.Tensor, n_chi: torch.Tensor
) -> torch.Tensor:
    x = chi.to(params.loc.dtype)
    y = torch.where(periodic, 2.0 * x, x)
    slots = torch.arange(MAX_CHI, device=chi.device) < n_chi[:, None]  # (N, 4)
    per = von_mises_log_density(y[..., None], params.loc, params.concentration)  # (N, 4, K)
    per = torch.where(slots[..., None], per, 0.0)
    return params.logits + per.sum(1)


# --------------------------------------------------------------------------------------------
# The proposal
# --------------------------------------------------------------------------------------------


@dataclass
class _GroupParams:
    """Float64 mixtures of the masked (row, group) pairs: ``rows, groups (N,)``, ``logits (N,
    K)``, ``loc, concentration (N, 4, K)``."""

    rows: torch.Tensor
    groups: torch.Tensor
    logits: torch.Tensor
    loc: torch.Tensor
    concentration: torch.Tensor


@dataclass
class _CacheEntry:
    context: torch.Tensor
    masked: torch.Tensor
    params: _GroupParams = field(repr=False)


class TransformerProposal(Proposal):
    """The :class:`~pyslice.proposals.Proposal` of a :class:`SideChainTransformer` on a protein.

    Groups are the residues with movable chis in ``protein.chi_index`` order; the latent label of a
    group is its mixture component. ``sample``/``log_prob`` are the all-masked model (context =
    backbone and sequence); ``sample_block``/``block_log_prob`` mask the block's residues and
    condition on the current chis of all others. ``latent_log_prob``/``sample_latent`` use the
    all-masked posterior r(k | x). ``column_log_prob`` is the all-masked marginal of one column.

    The forward pass of the last two contexts is cached (compared by value), so the three calls of
    an independence step (sample_block, block_log_prob of the current and of the proposed state,
    which agree outside the block) cost one forward pass; the all-masked one is computed once.
    """

    def __init__(
        self,
        model: SideChainTransformer,
        protein: Any,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 512,
        concentration_scale: float = 1.0,
    ) -> None:
        self.concentration_scale = _checks.check_float(
            "concentration_scale", concentration_scale, positive=True
        )
        if not math.isfinite(self.concentration_scale):
            raise ValueError(f"concentration_scale must be finite, got {concentration_scale}")
        if not isinstance(model, SideChainTransformer):
            raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
        from pyslice.structure.protein import Protein

        if not isinstance(protein, Protein):
            raise TypeError(f"protein must be a pyslice.Protein, got {type(protein).__name__}")
        device = torch.device(device if device is not None else "cpu")
        self.model = copy.deepcopy(model).to(device, torch.float32).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dtype = dtype
        self.max_batch = _checks.check_int("max_batch", max_batch, low=1)
        record, token_of_residue = record_from_protein(protein)
        self.record = record
        chi_index = protein.chi_index.to("cpu")
        self.n_chi = int(chi_index.shape[0])
        residues, group = torch.unique_consecutive(chi_index[:, 0], return_inverse=True)
        self.group = group.to(device)
        self.n_latent = int(residues.shape[0])
        group_token = token_of_residue[residues]
        self.group_token = group_token.to(device)
        group_aa = record.aa[group_token]
        self.group_aa = group_aa.to(device)
        n_chi_of = _N_CHI_TABLE[group_aa]
        counts = torch.bincount(group, minlength=self.n_latent) if self.n_chi else n_chi_of
        if not torch.equal(counts, n_chi_of) or (
            self.n_chi and not torch.equal(chi_index[:, 1], _slot_numbers(group, self.n_latent))
        ):
            raise ValueError("protein: every movable residue must have all of its type's chis")
        self.column_slot = chi_index[:, 1].to(device)
        self.group_n_chi = n_chi_of.to(device)
        self.group_periodic = _PERIODIC_TABLE[group_aa].to(device)
        self.slot_column = torch.full((self.n_latent, MAX_CHI), -1, dtype=torch.int64)
        if self.n_chi:
            self.slot_column[group, chi_index[:, 1]] = torch.arange(self.n_chi)
        self.slot_column = self.slot_column.to(device)
        with torch.no_grad():
            self._static = self.model.encode_static(TokenBatch.from_records([record], device))
        self._cache: list[_CacheEntry] = []
        self._full: _GroupParams | None = None

    def __repr__(self) -> str:
        return (
            f"TransformerProposal(n_chi={self.n_chi}, groups={self.n_groups}, "
            f"components={self.model.n_components})"
        )

    @property
    def n_components(self) -> int:
        return self.model.n_components

    # ---------------------------------------------------------------- forward passes

    def _inputs(
        self, chi: torch.Tensor, masked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token inputs ``(chi (n, L, 4), known (n, L), want (n, L))`` of the model for the
        ``masked: (n, G)`` groups given the other groups' ``chi: (n, n_chi)``."""
        n = chi.shape[0]
        length = self._static.h.shape[1]
        device = self.device
        tokens = torch.zeros(n, length, MAX_CHI, dtype=torch.float32, device=device)
        if self.n_chi:
            tokens[:, self.group_token[self.group], self.column_slot] = chi.to(torch.float32)
        known = torch.zeros(n, length, dtype=torch.bool, device=device)
        known[:, self.group_token] = ~masked
        want = torch.zeros(n, length, dtype=torch.bool, device=device)
        want[:, self.group_token] = masked
        return tokens, known, want

    def _forward(self, chi: torch.Tensor, masked: torch.Tensor) -> _GroupParams:
        """Mixtures of the ``masked: (n, G)`` groups given the other groups' ``chi``."""
        n = chi.shape[0]
        tokens, known, want = self._inputs(chi, masked)
        parts = []
        with torch.no_grad():
            for start in range(0, n, self.max_batch):
                stop = min(start + self.max_batch, n)
                static = self._static.expand(stop - start)
                p = self.model.run(static, tokens[start:stop], known[start:stop], want[start:stop])
                parts.append(p)
        return _group_params(parts, masked, self.concentration_scale)

    def _full_params(self, n: int) -> _GroupParams:
        """The all-masked mixtures (chi-independent; computed once), expanded to n rows."""
        if self._full is None:
            masked = torch.ones(1, self.n_latent, dtype=torch.bool, device=self.device)
            chi = torch.zeros(1, self.n_chi, device=self.device)
            self._full = self._forward(chi, masked)
        g = self.n_latent
        full = self._full
        rows = torch.arange(n, device=self.device).repeat_interleave(g)
        return _GroupParams(
            rows,
            full.groups.repeat(n),
            full.logits.repeat(n, 1),
            full.loc.repeat(n, 1, 1),
            full.concentration.repeat(n, 1, 1),
        )

    def _block_params(self, chi: torch.Tensor, masked: torch.Tensor) -> _GroupParams:
        """Mixtures of the masked groups given the rest, cached by the (masked) context."""
        columns = masked[:, self.group]
        context = torch.where(columns, 0.0, chi.to(torch.float32))
        for entry in self._cache:
            if (
                entry.masked.shape == masked.shape
                and torch.equal(entry.masked, masked)
                and torch.equal(entry.context, context)
            ):
                return entry.params
        params = self._forward(context, masked)
        self._cache = [_CacheEntry(context, masked.clone(), params), *self._cache[:1]]
        return params

    # ---------------------------------------------------------------- densities

    def _joint(self, chi: torch.Tensor, params: _GroupParams) -> torch.Tensor:
        """(N, K) float64 log alpha + log densities of the groups' chis."""
        x = torch.zeros(params.rows.shape[0], MAX_CHI, dtype=torch.float64, device=self.device)
        cols = self.slot_column[params.groups]  # (N, 4)
        present = cols >= 0
        values = chi.to(torch.float64)[params.rows[:, None], cols.clamp_min(0)]
        x = torch.where(present, values, x)
        mixture = MixtureParams(params.logits, params.loc, params.concentration, params.rows, cols)
        return _component_log_prob(
            mixture, x, self.group_periodic[params.groups], self.group_n_chi[params.groups]
        )

    def _sum_rows(self, values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        out = torch.zeros(n, dtype=torch.float64, device=self.device)
        return out.index_add_(0, rows, values)

    def _score(
        self, chi: torch.Tensor, params: _GroupParams, latent: torch.Tensor | None
    ) -> torch.Tensor:
        joint = self._joint(chi, params)
        if latent is None:
            per = torch.logsumexp(joint, dim=1)
        else:
            labels = self._check_latent(latent, chi.shape[0])[params.rows, params.groups]
            per = joint.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
        return self._sum_rows(per, params.rows, chi.shape[0])

    def _check_latent(self, latent: object, n: int) -> torch.Tensor:
        if not isinstance(latent, torch.Tensor) or latent.shape != (n, self.n_latent):
            raise ValueError(f"latent must be a ({n}, {self.n_latent}) int64 tensor")
        if latent.is_floating_point():
            raise TypeError("latent must be an integer tensor")
        if bool((latent >= self.n_components).any()):
            raise ValueError(f"latent labels must be < {self.n_components}")
        return latent.to(torch.int64)

    def log_prob(self, chi: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        return self._score(chi, self._full_params(chi.shape[0]), latent)

    def block_log_prob(
        self, chi: torch.Tensor, block: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        masked = self.group_mask(self.check_block(block, chi.shape[0]))
        return self._score(chi, self._block_params(chi, masked), latent)

    def column_log_prob(self, x: torch.Tensor, column: int) -> torch.Tensor:
        column = _checks.check_int("column", column, low=0, high=self.n_chi)
        x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        full = self._full_params(1)
        g = int(self.group[column])
        slot = int(self.column_slot[column])
        y = 2.0 * x if bool(self.group_periodic[g, slot]) else x
        density = von_mises_log_density(
            y[..., None], full.loc[g, slot], full.concentration[g, slot]
        )
        return torch.logsumexp(full.logits[g] + density, dim=-1)

    def _posterior(self, chi: torch.Tensor) -> tuple[torch.Tensor, _GroupParams]:
        params = self._full_params(chi.shape[0])
        joint = self._joint(chi, params)
        return joint - torch.logsumexp(joint, dim=1, keepdim=True), params

    def latent_log_prob(
        self, chi: torch.Tensor, latent: torch.Tensor, block: torch.Tensor | None = None
    ) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        n = chi.shape[0]
        posterior, params = self._posterior(chi)
        labels = self._check_latent(latent, n)[params.rows, params.groups]
        per = posterior.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
        if block is not None:
            inside = self.group_mask(self.check_block(block, n))[params.rows, params.groups]
            per = torch.where(inside, per, 0.0)
        return self._sum_rows(per, params.rows, n)

    # ---------------------------------------------------------------- sampling

    def _categorical(
        self, log_probs: torch.Tensor, seed: int, offset: int, tag: int
    ) -> torch.Tensor:
        gen = generator(self.device, seed, offset, tag)
        u = torch.rand(log_probs.shape[0], generator=gen, device=self.device, dtype=torch.float64)
        cdf = torch.cumsum(torch.softmax(log_probs, dim=-1), dim=-1)[:, :-1]
        return (u[:, None] >= cdf).sum(-1)

    def sample_latent(self, chi: torch.Tensor, *, seed: int, offset: int = 0) -> torch.Tensor:
        chi = self.check_chi("chi", chi)
        posterior, params = self._posterior(chi)
        labels = self._categorical(posterior, seed, offset, _TAG_LATENT)
        out = torch.empty(chi.shape[0], self.n_latent, dtype=torch.int64, device=self.device)
        out[params.rows, params.groups] = labels
        return out

    def _draw(
        self, base: torch.Tensor, params: _GroupParams, seed: int, offset: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a component and angles for every (row, group) of ``params`` into a copy of
        ``base: (n, n_chi)``; returns (chi, labels (N,))."""
        labels = self._categorical(params.logits, seed, offset, _TAG_LABEL)
        out = base.clone()
        cols = self.slot_column[params.groups]  # (N, 4)
        present = cols >= 0
        periodic = self.group_periodic[params.groups]
        zero = torch.zeros(1, 1, dtype=torch.float32, device=self.device)
        for flag in (False, True):
            entry, slot = torch.nonzero(present & (periodic == flag), as_tuple=True)
            if entry.numel() == 0:
                continue
            comp = labels[entry]
            loc = params.loc[entry, slot, comp].to(torch.float32)
            kappa = params.concentration[entry, slot, comp].to(torch.float32)
            key = derive_seed(seed, offset, _TAG_ANGLE, int(flag))
            draws = draw_mixture(
                zero.expand(entry.numel(), 1),
                loc[:, None],
                kappa[:, None],
                (),
                key,
                0,
                None,
                pi_periodic=flag,
            )
            out[params.rows[entry], cols[entry, slot]] = draws.to(out.dtype)
        return out, labels

    def sample(self, n: int, *, seed: int, offset: int = 0) -> ProposalDraw:
        n = _checks.check_int("n", n, low=0)
        params = self._full_params(n)
        base = torch.zeros(n, self.n_chi, dtype=self.dtype, device=self.device)
        chi, labels = self._draw(base, params, seed, offset)
        latent = torch.empty(n, self.n_latent, dtype=torch.int64, device=self.device)
        latent[params.rows, params.groups] = labels
        return ProposalDraw(chi, self._score(chi, params, latent), latent)

    def sample_block(
        self, chi: torch.Tensor, block: torch.Tensor, *, seed: int, offset: int = 0
    ) -> ProposalDraw:
        chi = self.check_chi("chi", chi)
        n = chi.shape[0]
        masked = self.group_mask(self.check_block(block, n))
        params = self._block_params(chi, masked)
        out, labels = self._draw(chi.to(self.dtype), params, seed, offset)
        latent = torch.full((n, self.n_latent), -1, dtype=torch.int64, device=self.device)
        latent[params.rows, params.groups] = labels
        return ProposalDraw(out, self._score(out, params, latent), latent)


def _group_params(
    parts: Sequence[MixtureParams], masked: torch.Tensor, concentration_scale: float = 1.0
) -> _GroupParams:
    """Float64 :class:`_GroupParams` of the model outputs ``parts`` (row chunks, in order) for
    the ``masked: (n, G)`` groups."""
    rows, groups = torch.nonzero(masked, as_tuple=True)  # same order as the want tokens
    return _GroupParams(
        rows,
        groups,
        torch.cat([p.logits for p in parts]).to(torch.float64),
        torch.cat([p.loc for p in parts]).to(torch.float64),
        torch.cat([p.concentration for p in parts]).to(torch.float64) * concentration_scale,
    )


class TransformerPolicy(nn.Module):
    """A trainable :class:`SideChainTransformer` on one protein, as a policy for
    :class:`~pyslice.models.era.trainer.ERATrainer` (ERA fine-tuning from energies).

    With ``block_sizes=None`` the policy is the all-masked model: whole side-chain sets drawn
    from backbone and sequence (an unconditional policy, ``sample(n, seed=...)``). With block
    sizes it is *conditional*, which is how the sampler uses the model: a context is a state
    ``x`` from ``contexts`` (e.g. chains of a random-walk run) plus a random block of residues
    (its size drawn from ``block_sizes``); the policy is q(x_block | x_rest). ERA then aligns,
    for every context, q with the Boltzmann conditional exp(-beta U(x_rest, x_block)), which is
    what makes independence block moves accepted. ``sample_grouped(n_groups, group_size,
    seed=...)`` gives ``(chi, masked)`` with ``masked: (n, G)`` the block of each row;
    ``log_prob(chi, masked)`` is exact and differentiable in the model's parameters.

    ``model`` itself is trained (wrap a copy to keep the original). It runs in eval mode (no
    dropout: ERA compares log-probabilities of draws, which dropout would make noisy).
    :meth:`proposal` gives the frozen :class:`TransformerProposal` of the current weights for
    the sampler. Choose the device with ``device=`` (``.to()`` would not move the index maps).
    """

    def __init__(
        self,
        model: SideChainTransformer,
        protein: Any,
        *,
        block_sizes: Sequence[int] | None = None,
        contexts: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, SideChainTransformer):
            raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
        self.maps = TransformerProposal(model, protein, device=device)
        self.protein = protein
        self.model = model.to(self.maps.device, torch.float32).eval()
        self._batch = TokenBatch.from_records([self.maps.record], self.maps.device)
        n_groups = self.maps.n_latent
        if block_sizes is None:
            if contexts is not None:
                raise ValueError("contexts: only used with block_sizes (conditional policies)")
            self.block_sizes = None
        else:
            sizes = [_checks.check_int("block_sizes", b, low=1) for b in block_sizes]
            if not sizes:
                raise ValueError("block_sizes must hold at least one size")
            self.block_sizes = [min(b, n_groups) for b in sizes]
            if contexts is None:
                raise ValueError("contexts: a conditional policy needs context states (m, n_chi)")
            contexts = self.maps.check_chi(
                "contexts", torch.as_tensor(contexts).to(self.maps.device)
            )
            if contexts.shape[0] == 0:
                raise ValueError("contexts must hold at least one state")
        self.register_buffer(
            "contexts", None if contexts is None else contexts.to(torch.float32).clone()
        )

    def train(self, mode: bool = True) -> TransformerPolicy:
        super().train(mode)
        self.model.eval()  # always: see the class docstring
        return self

    @property
    def conditional(self) -> bool:
        """Whether the policy draws blocks given contexts (else whole side-chain sets)."""
        return self.block_sizes is not None

    @property
    def n_chi(self) -> int:
        return self.maps.n_chi

    @property
    def n_groups(self) -> int:
        return self.maps.n_latent

    def proposal(self, **kwargs: Any) -> TransformerProposal:
        """The frozen :class:`TransformerProposal` of the current weights (``kwargs`` go to it)."""
        return TransformerProposal(self.model, self.protein, device=self.maps.device, **kwargs)

    def _params(self, chi: torch.Tensor, masked: torch.Tensor) -> _GroupParams:
        static = self.model.encode_static(self._batch).expand(chi.shape[0])
        tokens, known, want = self.maps._inputs(chi, masked)
        return _group_params([self.model.run(static, tokens, known, want)], masked)

    def _masked(self, masked: torch.Tensor | None, n: int) -> torch.Tensor:
        if masked is None:
            return torch.ones(n, self.n_groups, dtype=torch.bool, device=self.maps.device)
        if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
            raise TypeError("masked must be a bool tensor (n, n_groups)")
        if masked.shape != (n, self.n_groups):
            raise ValueError(
                f"masked must have shape ({n}, {self.n_groups}), got {tuple(masked.shape)}"
            )
        return masked

    def log_prob(self, chi: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) float64 log q(chi_masked | chi_rest) (all residues when ``masked`` is None),
        differentiable in the model's parameters."""
        chi = self.maps.check_chi("chi", chi)
        masked = self._masked(masked, chi.shape[0])
        # Rows that share their context and block (ERA's pairs) share one forward pass.
        context = torch.where(masked[:, self.maps.group], 0.0, chi.to(torch.float32))
        key = torch.cat([context, masked.to(torch.float32)], 1)
        unique, source = torch.unique(key, dim=0, return_inverse=True)
        if unique.shape[0] == key.shape[0]:
            params = self._params(chi, masked)
        else:
            unique_masked = unique[:, self.n_chi :] > 0.5
            params = _expand_rows(
                self._params(unique[:, : self.n_chi], unique_masked), unique_masked, source
            )
        return self.maps._score(chi, params, None)

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        """``n`` whole side-chain sets from the all-masked model (unconditional policies)."""
        if self.block_sizes is not None:
            raise ValueError("a conditional policy draws with sample_grouped")
        n = _checks.check_int("n", n, low=0)
        with torch.no_grad():
            params = self._params(
                torch.zeros(1, self.n_chi, device=self.maps.device), self._masked(None, 1)
            )
        chi, _ = self.maps._draw(
            torch.zeros(n, self.n_chi, dtype=self.maps.dtype, device=self.maps.device),
            _expand_rows(
                params,
                torch.ones(1, self.n_groups, dtype=torch.bool, device=self.maps.device),
                torch.zeros(n, dtype=torch.int64, device=self.maps.device),
            ),
            seed,
            0,
        )
        return chi

    def contexts_and_blocks(self, n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` contexts drawn from ``contexts`` with random blocks: (chi (n, n_chi), masked
        (n, G))."""
        device = self.maps.device
        if self.block_sizes is None:
            return torch.zeros(n, self.n_chi, device=device), self._masked(None, n)
        gen = generator(device, seed, _TAG_CONTEXT)
        pick = torch.randint(0, self.contexts.shape[0], (n,), generator=gen, device=device)
        sizes = torch.tensor(self.block_sizes, device=device)
        size = sizes[torch.randint(0, sizes.numel(), (n,), generator=gen, device=device)]
        keys = torch.rand(n, self.n_groups, generator=gen, device=device)
        rank = keys.argsort(1).argsort(1)
        return self.contexts[pick], rank < size[:, None]

    def sample_grouped(
        self, n_groups: int, group_size: int, *, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_groups`` contexts (random states and blocks), ``group_size`` independent draws of
        each block given its context: ``(chi (n_groups * group_size, n_chi), masked)``."""
        n_groups = _checks.check_int("n_groups", n_groups, low=1)
        group_size = _checks.check_int("group_size", group_size, low=1)
        context, masked = self.contexts_and_blocks(n_groups, seed=seed)
        with torch.no_grad():
            params = self._params(context, masked)
        chi, _ = self.maps._draw(
            context.to(self.maps.dtype).repeat_interleave(group_size, 0),
            _expand_rows(
                params,
                masked,
                torch.arange(n_groups, device=masked.device).repeat_interleave(group_size),
            ),
            seed,
            1,
        )
        return chi, masked.repeat_interleave(group_size, 0)


def _expand_rows(params: _GroupParams, masked: torch.Tensor, source: torch.Tensor) -> _GroupParams:
    """``params`` of the rows of ``masked: (m, G)`` re-indexed so that output row r holds the
    mixtures of row ``source[r]`` (rows repeated, or shared by rows with equal inputs)."""
    entry = torch.full(masked.shape, -1, dtype=torch.int64, device=params.rows.device)
    entry[params.rows, params.groups] = torch.arange(params.rows.shape[0], device=entry.device)
    source = source.to(entry.device)
    rows, groups = torch.nonzero(masked.to(entry.device)[source], as_tuple=True)
    picked = entry[source[rows], groups]
    return _GroupParams(
        rows,
        groups,
        params.logits[picked],
        params.loc[picked],
        params.concentration[picked],
    )


def _slot_numbers(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """0, 1, ... within each run of equal consecutive group ids."""
    first = torch.zeros(n_groups, dtype=torch.int64)
    positions = torch.arange(group.shape[0])
    first = first.scatter_reduce(0, group, positions, reduce="amin", include_self=False)
    return positions - first[group]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _crop(record: ProteinRecord, max_len: int, gen: torch.Generator) -> ProteinRecord:
    """At most ``max_len`` tokens: the nearest (C-alpha distance) to a random centre."""
    n = len(record)
    if n <= max_len:
        return record
    ca = torch.nan_to_num(record.backbone[:, 1], nan=1e3)
    centre = int(torch.randint(n, (1,), generator=gen))
    dist = (ca - ca[centre]).norm(dim=-1)
    index = torch.sort(torch.topk(dist, max_len, largest=False).indices).values
    return record.subset(index)


def _make_batch(
    records: Sequence[ProteinRecord],
    gen: torch.Generator,
    mask_rate: tuple[float, float],
    full_mask_fraction: float,
) -> tuple[TokenBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, chi (B, L, 4), known (B, L), targets (B, L), pi-periodic (B, L, 4)) with a random
    mask per protein; at least one target per protein that has any data."""
    batch = TokenBatch.from_records(records)
    b, length = batch.aa.shape
    chi, ok, periodic = _pad_records(records, batch.aa)
    lo, hi = mask_rate
    rate = lo + (hi - lo) * torch.rand(b, 1, generator=gen)
    full = torch.rand(b, 1, generator=gen) < full_mask_fraction
    rate = torch.where(full, 1.0, rate)
    masked = (torch.rand(b, length, generator=gen) < rate) & batch.has_chi
    targets = masked & ok
    # Guarantee a target: the first data residue in a random order, where none was drawn.
    keys = torch.rand(b, length, generator=gen) + ok.to(torch.float32)
    pick = keys.argmax(1)
    none = ~targets.any(1) & ok.any(1)
    targets[none, pick[none]] = True
    masked = masked | targets
    known = batch.has_chi & ok & ~masked
    return batch, chi, known, targets, periodic


def _augment(
    batch: TokenBatch, chi: torch.Tensor, gen: torch.Generator, noise: tuple[float, float]
) -> tuple[TokenBatch, torch.Tensor]:
    """Training noise against memorising structures: Gaussian noise of ``noise[0]`` nm on the
    backbone atoms, ``noise[1]`` rad on phi, psi and the context chis (targets stay exact)."""
    coord, angle = noise
    if coord <= 0 and angle <= 0:
        return batch, chi
    backbone = batch.backbone + coord * torch.randn(batch.backbone.shape, generator=gen)
    phi = batch.phi + angle * torch.randn(batch.phi.shape, generator=gen)
    psi = batch.psi + angle * torch.randn(batch.psi.shape, generator=gen)
    noisy = chi + angle * torch.randn(chi.shape, generator=gen)
    out = TokenBatch(
        batch.aa, batch.chain, batch.position, backbone, wrap_angle(phi), wrap_angle(psi),
        batch.has_chi, batch.padding,
    )  # fmt: skip
    return out, wrap_angle(noisy)


def _nll(
    model: SideChainTransformer,
    batch: TokenBatch,
    chi: torch.Tensor,
    known: torch.Tensor,
    targets: torch.Tensor,
    *,
    context_chi: torch.Tensor | None = None,
    per_crop: bool = False,
) -> tuple[torch.Tensor, int]:
    """Mean -log q over the target residues (nats per residue; with ``per_crop`` the mean of each
    crop's mean, so context-rich crops with few targets weigh as much as all-masked ones) and
    their number. ``context_chi``: the chis the model sees (default ``chi``)."""
    params = model(batch, chi if context_chi is None else context_chi, known, targets)
    aa = batch.aa[params.rows, params.tokens]
    joint = model.component_log_prob(params, chi[params.rows, params.tokens], aa)
    log_q = torch.logsumexp(joint, dim=1)
    if not per_crop:
        return -log_q.mean(), int(log_q.shape[0])
    b = targets.shape[0]
    sums = log_q.new_zeros(b).index_add(0, params.rows, log_q)
    counts = torch.bincount(params.rows, minlength=b).to(log_q.dtype)
    present = counts > 0
    return -(sums[present] / counts[present]).mean(), int(log_q.shape[0])


def evaluate_nll(
    model: SideChainTransformer,
    dataset: Sequence[ProteinRecord],
    *,
    mask_rate: float = 1.0,
    context: bool = True,
    seed: int = 0,
    max_len: int = 1024,
) -> float:
    """Mean -log q (nats per residue) of a random ``mask_rate`` fraction of each protein's data
    residues (fixed by ``seed``; at least one per protein), given the other residues' chis
    (``context=True``) or given the backbone only (``context=False``: every residue masked).
    Proteins longer than ``max_len`` are cropped around a random centre."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for record in dataset:
            record = _crop(record, max_len, gen)
            batch, chi, known, targets, _ = _make_batch([record], gen, (mask_rate, mask_rate), 0.0)
            if not bool(targets.any()):
                continue
            if not context:
                known = torch.zeros_like(known)
            loss, n = _nll(model, batch, chi, known, targets)
            total += float(loss) * n
            count += n
    model.train(was)
    return total / max(count, 1)


def train_ml(
    model: SideChainTransformer,
    dataset: Sequence[ProteinRecord],
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    mask_rate: tuple[float, float] = (0.02, 1.0),
    full_mask_fraction: float = 0.15,
    max_len: int = 128,
    weight_decay: float = 0.01,
    noise: tuple[float, float] = (0.0, 0.0),
    per_crop: bool = False,
    keep_best: bool = False,
    warmup: int = 100,
    checkpoint_every: int = 100,
    val_dataset: Sequence[ProteinRecord] | None = None,
    val_every: int = 200,
    log_every: int = 50,
    log: Callable[[str], None] | None = print,
) -> dict[str, list]:
    """Maximum-likelihood training: minimise -log q of randomly masked residues' chis.

    Each step draws ``batch_size`` proteins (with replacement), crops each to ``max_len`` tokens
    around a random centre, masks each residue with chis with probability r ~ U(mask_rate) (1 for
    a ``full_mask_fraction`` of the crops) and takes one AdamW step (``lr`` with linear warm-up
    over ``warmup`` steps, then cosine decay to 0 at ``steps``; gradients clipped at norm 1).
    ``noise = (nm, rad)``: Gaussian noise on the backbone atoms and on phi, psi and context chis
    (targets exact), against memorising the few hundred training structures. ``per_crop``:
    average the loss per crop first (context-rich crops, which have few targets, count as much as
    all-masked ones). ``keep_best`` (needs ``val_dataset``): at the end, restore the weights of
    the validation point with the lowest mean of the all-masked and the 10 %-with-context NLL
    (early stopping; that validation NLL is then slightly optimistic).

    Randomness of step t (batch, masks, dropout) is keyed by (seed, t) alone, so a run resumed
    from ``checkpoint`` (written atomically every ``checkpoint_every`` steps and at the end, with
    the optimiser state) continues bit for bit. ``resume=False`` starts afresh (overwriting it).

    Returns the history: ``{"step", "loss"}`` (mean training loss of each logging window) and,
    with ``val_dataset``, ``{"val_step", "val_nll", "val_nll_10", "val_nll_10_context"}``:
    validation NLL per residue of all residues with all masked, and of a fixed 10 % of the
    residues without and with the other 90 % as context (:func:`evaluate_nll`).
    """
    if not isinstance(model, SideChainTransformer):
        raise TypeError(f"model must be a SideChainTransformer, got {type(model).__name__}")
    steps = _checks.check_int("steps", steps, low=0)
    batch_size = _checks.check_int("batch_size", batch_size, low=1)
    lr = _checks.check_float("lr", lr, positive=True)
    seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
    checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, low=1)
    data = [r for r in dataset if bool(r.chi_ok.any())]
    if not data:
        raise ValueError("dataset holds no residue with chi data")
    lo, hi = (float(mask_rate[0]), float(mask_rate[1]))
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(
            f"mask_rate must be (low, high) with 0 <= low <= high <= 1, got {mask_rate}"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_nll": [],
                                "val_nll_10": [], "val_nll_10_context": []}  # fmt: skip
    settings = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "mask_rate": [lo, hi], "full_mask_fraction": full_mask_fraction, "max_len": max_len,
        "weight_decay": weight_decay, "warmup": warmup, "n_proteins": len(data),
        "noise": [float(noise[0]), float(noise[1])], "per_crop": bool(per_crop),
        "keep_best": bool(keep_best),
    }  # fmt: skip
    if keep_best and val_dataset is None:
        raise ValueError("keep_best needs a val_dataset")
    best: dict[str, Any] = {"score": math.inf, "step": 0, "model": None}
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and resume and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT + "-training" or state.get("settings") != settings:
            raise ValueError(
                f"checkpoint: {path} was written by a different training run; pass resume=False "
                "or another path"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        best = state["best"]
        start = int(state["step"])
        if log is not None:
            log(f"resumed from {path} at step {start}")

    def schedule(t: int) -> float:
        if t < warmup:
            return lr * (t + 1) / warmup
        return lr * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))

    def save(t: int) -> None:
        if path is None:
            return
        payload = {
            "format": FORMAT + "-training",
            "settings": settings,
            "step": t,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, "wb", lambda f: f.write(buffer.getvalue()))

    window: list[float] = []
    t0 = time.time()
    model.train()
    with torch.random.fork_rng(devices=[]):
        for t in range(start, steps):
            torch.manual_seed(derive_seed(seed, t, 0x64726F) & ((1 << 63) - 1))
            gen = torch.Generator().manual_seed(derive_seed(seed, t) & ((1 << 63) - 1))
            picks = torch.randint(len(data), (batch_size,), generator=gen).tolist()
            records = [_crop(data[i], max_len, gen) for i in picks]
            batch, chi, known, targets, _ = _make_batch(records, gen, (lo, hi), full_mask_fraction)
            batch, context_chi = _augment(batch, chi, gen, noise)
            for group in optimizer.param_groups:
                group["lr"] = schedule(t)
            loss, _ = _nll(
                model, batch, chi, known, targets, context_chi=context_chi, per_crop=per_crop
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            window.append(float(loss.detach()))
            done = t + 1
            if done % log_every == 0 or done == steps:
                history["step"].append(done)
                history["loss"].append(sum(window) / len(window))
                window = []
                if log is not None:
                    log(
                        f"step {done}/{steps} loss {history['loss'][-1]:.4f} "
                        f"lr {schedule(t):.2e} ({time.time() - t0:.0f} s)"
                    )
            if val_dataset is not None and (done % val_every == 0 or done == steps):
                v_all = evaluate_nll(model, val_dataset, mask_rate=1.0, seed=seed)
                v_10 = evaluate_nll(model, val_dataset, mask_rate=0.1, context=False, seed=seed)
                v_ctx = evaluate_nll(model, val_dataset, mask_rate=0.1, seed=seed)
                history["val_step"].append(done)
                history["val_nll"].append(v_all)
                history["val_nll_10"].append(v_10)
                history["val_nll_10_context"].append(v_ctx)
                score = 0.5 * (v_all + v_ctx)
                if keep_best and score < best["score"]:
                    best = {
                        "score": score,
                        "step": done,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
                if log is not None:
                    log(
                        f"step {done} val NLL: all masked {v_all:.4f}; 10% of residues "
                        f"{v_10:.4f} without context, {v_ctx:.4f} with the other 90%"
                    )
            if done % checkpoint_every == 0 or done == steps:
                save(done)
    if keep_best and best["model"] is not None:
        model.load_state_dict(best["model"])
        if log is not None:
            log(f"kept the weights of step {best['step']} (best validation)")
    history["best_step"] = [best["step"]] if keep_best else []
    model.eval()
    model.provenance = {
        **model.provenance,
        "training": settings,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return history


# --------------------------------------------------------------------------------------------
# Command line: python -m pyslice.models.transformer.model
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Train a model on the shared data and save it (the recipe of the shipped model)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pyslice.models.transformer.model",
        description="Train a SideChainTransformer by maximum likelihood on structures/top240.",
    )
    parser.add_argument("--out", default="transformer.pt", help="model file to write")
    parser.add_argument("--data", default=None, help="data folder (default: $PYSLICE_DATA)")
    parser.add_argument("--cache", default=None, help="extracted-tensor cache folder")
    parser.add_argument("--checkpoint", default=None, help="training checkpoint (resumable)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--d-ff", type=int, default=256)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--noise-nm", type=float, default=0.0, help="backbone coordinate noise")
    parser.add_argument("--noise-rad", type=float, default=0.0, help="phi/psi/context chi noise")
    parser.add_argument("--per-crop", action="store_true", help="average the loss per crop")
    parser.add_argument("--keep-best", action="store_true", help="early stopping on validation")
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument(
        "--init", default=None, help="start from this model file (fine-tuning; its architecture)"
    )
    parser.add_argument(
        "--sampled",
        nargs=2,
        action="append",
        default=[],
        metavar=("STRUCTURE", "ENSEMBLE"),
        help="add energy-filtered draws of a pyslice sample run (its structure and ensemble.npz); "
        "repeatable",
    )
    parser.add_argument("--energy-cut", type=float, default=None, help="keep draws <= this kJ/mol")
    parser.add_argument(
        "--keep-fraction", type=float, default=None, help="keep the lowest-energy fraction"
    )
    parser.add_argument("--max-records", type=int, default=None, help="per ensemble, at random")
    parser.add_argument(
        "--no-structures",
        action="store_true",
        help="train on the --sampled data alone (no top240, no validation)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.no_structures and not args.sampled:
        raise ValueError("--no-structures: give the training data with --sampled")
    for option in ("energy_cut", "keep_fraction", "max_records"):
        if getattr(args, option) is not None and not args.sampled:
            raise ValueError(f"--{option.replace('_', '-')}: filters --sampled data; none given")
    if args.no_structures and args.keep_best:
        raise ValueError("--keep-best needs the validation structures (drop --no-structures)")
    t0 = time.time()
    if args.no_structures:
        train, val = ChiDataset(), None
    else:
        train, val = default_datasets(args.data, cache_dir=args.cache, progress=True)
    sampled = _sampled_records(args)
    train = ChiDataset([*train, *sampled])
    print(
        f"data: {len(train)} training records ({train.n_residues} residues with chi data; "
        f"{len(sampled)} sampled), {len(val) if val else 0} validation"
        f"{f' ({val.n_residues})' if val else ''}; read in {time.time() - t0:.0f} s"
    )
    torch.manual_seed(args.seed)
    if args.init is not None:
        model = SideChainTransformer.load(args.init)
    else:
        model = SideChainTransformer(
            d_model=args.d_model,
            n_heads=args.heads,
            n_layers=args.layers,
            d_ff=args.d_ff,
            n_components=args.components,
            dropout=args.dropout,
        )
    base_provenance = dict(model.provenance)
    t1 = time.time()
    history = train_ml(
        model,
        train,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint=args.checkpoint,
        max_len=args.max_len,
        weight_decay=args.weight_decay,
        noise=(args.noise_nm, args.noise_rad),
        per_crop=args.per_crop,
        keep_best=args.keep_best,
        val_dataset=val,
        val_every=args.val_every,
    )
    seconds = time.time() - t1
    if val is None:
        model.provenance = {
            "base": base_provenance,
            "command": "python -m pyslice.models.transformer.model "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "train_data": [f"{a} {b}" for a, b in args.sampled],
            "train_records": len(train),
            "history": {"step": history["step"], "loss": history["loss"]},
            "train_seconds": round(seconds),
            "torch": str(torch.__version__),
        }
        model.save(args.out, half=args.half)
        print(json.dumps({k: v for k, v in model.provenance.items() if k != "base"}, indent=1))
        return 0
    if args.half:  # score the weights as they are stored
        model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in model.state_dict().items()})  # fmt: skip
    final = {
        "val_nll_all_masked": evaluate_nll(model, val, mask_rate=1.0, seed=args.seed),
        "val_nll_10pct_no_context": evaluate_nll(
            model, val, mask_rate=0.1, context=False, seed=args.seed
        ),
        "val_nll_10pct_context": evaluate_nll(model, val, mask_rate=0.1, seed=args.seed),
    }
    if args.init is not None:
        model.provenance = {}  # the starting model's goes under "base"
    model.provenance.update(
        {
            "command": "python -m pyslice.models.transformer.model "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "train_data": "structures/top240 (all files that read)",
            "sampled_data": [f"{a} {b}" for a, b in args.sampled],
            **({"base": base_provenance} if args.init is not None else {}),
            "validation_data": [*VALIDATION_DOMAINS, "bpti", "t4-lysozyme"],
            "train_proteins": len(train),
            "train_residues": train.n_residues,
            **final,
            "kept_step": history["best_step"][0] if history["best_step"] else args.steps,
            "history": {k: history[k] for k in ("val_step", "val_nll", "val_nll_10_context")},
            "train_seconds": round(seconds),
            "torch": str(torch.__version__),
        }
    )
    model.save(args.out, half=args.half)
    print(json.dumps(model.provenance, indent=1))
    return 0


def _sampled_records(args: Any) -> list[ProteinRecord]:
    """The energy-filtered records of every ``--sampled STRUCTURE ENSEMBLE`` pair."""
    from pyslice.mcmc.ensemble import Ensemble
    from pyslice.structure.protein import Protein

    out: list[ProteinRecord] = []
    for structure, ensemble_path in args.sampled:
        for label, path in (("STRUCTURE", structure), ("ENSEMBLE", ensemble_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"--sampled {label}: no such file: {path}")
        records = records_from_ensemble(
            Protein.from_file(structure),
            Ensemble.load(ensemble_path),
            energy_cut=args.energy_cut,
            keep_fraction=args.keep_fraction,
            max_records=args.max_records,
            seed=args.seed,
            name=Path(structure).stem,
        )
        print(f"{ensemble_path}: {len(records)} draws kept")
        out.extend(records)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
