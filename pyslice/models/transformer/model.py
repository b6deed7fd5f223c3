"""SideChainTransformer: a masked conditional model of side-chain chi angles (issue #6); the
network, its mixture densities and its files.

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

Where the rest lives: the tokens and training records in :mod:`~pyslice.models.transformer.data`,
the sampler's proposal in :mod:`~pyslice.models.transformer.proposal`, the ERA policy in
:mod:`~pyslice.models.transformer.policy`, maximum-likelihood training in
:mod:`~pyslice.models.transformer.train` and ERA alignment in
:mod:`~pyslice.models.transformer.align`.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pyslice import _checks
from pyslice.attention import attention
from pyslice.distributions import product_component_log_prob
from pyslice.io.files import atomic_write
from pyslice.models.transformer.data import (
    HEAD_TABLE,
    HEAD_TYPES,
    MAX_CHI,
    N_CHI_TABLE,
    PI_PERIODIC_TABLE,
    UNKNOWN_AA,
    TokenBatch,
    head_chis,
)

if TYPE_CHECKING:
    from pyslice.models.transformer.proposal import TransformerProposal
    from pyslice.structure.protein import Protein

__all__ = [
    "DEFAULT_FILE",
    "KAPPA_MAX",
    "MixtureParams",
    "SideChainTransformer",
    "StaticEncoding",
    "component_log_prob",
]

FORMAT = "pyslice-transformer"
FORMAT_VERSION = 1
DEFAULT_FILE = "transformer.pt"
#: Concentration cap of the output head (a 2.6-degree spread), as in the rotamer library.
KAPPA_MAX = 500.0
_N_CHAINS = 8  # chain ordinals >= 7 share the last embedding
_POS_DIM = 16
_STATIC_DIM = 12 + _POS_DIM
_CHI_DIM = 2 * MAX_CHI + 5
_EXTRA = 4  # geometric attention dimensions
_WELLS = (math.radians(60.0), math.pi, math.radians(-60.0))
_CB_BOND = 0.153  # nm
_CG_BOND = 0.152


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
class StaticEncoding:
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

    def expand(self, n: int) -> StaticEncoding:
        return StaticEncoding(*(t.expand(n, *t.shape[1:]) for t in (
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
            nn.Linear(d_model, k * (1 + 3 * head_chis(name))) for name in HEAD_TYPES
        )
        self._init_heads()
        self.register_buffer("_periodic", PI_PERIODIC_TABLE.clone(), persistent=False)
        self.register_buffer("_n_chi", N_CHI_TABLE.clone(), persistent=False)
        self.register_buffer("_head", HEAD_TABLE.clone(), persistent=False)

    @property
    def n_components(self) -> int:
        return self.config["n_components"]

    def _init_heads(self) -> None:
        """Component k starts at the staggered wells (60, 180, -60 degrees) of the mixed-radix
        digits of k, one digit per chi, with moderate concentration and equal weights."""
        k = self.n_components
        with torch.no_grad():
            for name, head in zip(HEAD_TYPES, self.heads, strict=True):
                c = head_chis(name)
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

    def encode_static(self, batch: TokenBatch) -> StaticEncoding:
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
        return StaticEncoding(h, ca, axis, batch.aa, batch.has_chi, pad, n_c, cb, wells)

    def run(
        self, static: StaticEncoding, chi: torch.Tensor, known: torch.Tensor, want: torch.Tensor
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
            c = head_chis(HEAD_TYPES[t])
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
        return component_log_prob(
            params.logits,
            params.loc,
            params.concentration,
            chi,
            self._periodic[aa],
            self._n_chi[aa],
        )

    # ---------------------------------------------------------------- proposals, files

    def proposal(
        self,
        protein: Protein,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        concentration_scale: float = 1.0,
    ) -> TransformerProposal:
        """The :class:`TransformerProposal` of ``protein`` (a frozen copy of this model);
        ``concentration_scale`` multiplies every kappa (< 1: a broader, tempered proposal)."""
        # Imported here: the proposal module builds on this one.
        from pyslice.models.transformer.proposal import TransformerProposal

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


def component_log_prob(
    logits: torch.Tensor,
    loc: torch.Tensor,
    concentration: torch.Tensor,
    chi: torch.Tensor,
    pi_periodic: torch.Tensor,
    n_chi: torch.Tensor,
) -> torch.Tensor:
    """(N, K): log alpha_k + sum_c log vM(chi_c; mu_ck, kappa_ck) of N residues' mixtures
    (``logits (N, K)`` normalised, ``loc, concentration (N, 4, K)``) at ``chi: (N, 4)``, summed
    over each residue's ``n_chi: (N,)`` chi slots (the others are padding), on the doubled angle
    where ``pi_periodic: (N, 4)``. Differentiable in the mixture parameters."""
    x = chi.to(loc.dtype)
    y = torch.where(pi_periodic, 2.0 * x, x)
    out = torch.empty_like(logits)
    # Rows of one chi count at a time, so padded slots never enter the product of densities.
    for c in torch.unique(n_chi).tolist():
        rows = n_chi == c
        out[rows] = product_component_log_prob(
            y[rows, :c], logits[rows], loc[rows, :c], concentration[rows, :c]
        )
    return out
