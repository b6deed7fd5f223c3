"""A backbone-dependent rotamer library fitted by pyslice's own EM.

For every residue type with chi angles (the 18 of :data:`pyslice.geometry.CHI_ATOMS`, keyed by
parent name: ``HIS``, not ``HIE``) the library holds a mixture over *all* the type's chi angles
whose components are rotamers: one component is a product of von Mises densities, one per chi,

    p(chi | type, phi, psi) = sum_k alpha_k(phi, psi) prod_c vM(chi_c; mu_ck(phi, psi),
                                                                     kappa_ck(phi, psi)),

so the chis of a residue stay correlated (a rotamer is drawn, then its angles). Pi-periodic chis
(ASP chi2, GLU chi3, PHE and TYR chi2) are modelled on the doubled angle, as in
:class:`pyslice.distributions.VonMisesMixture`. :meth:`RotamerLibrary.proposal` turns the library
into the :class:`pyslice.proposals.MixtureProposal` of a protein.

Data (read through :func:`pyslice._data.data_dir`, never copied into the package):

- ``top8000/rota8000-*.csv`` (Richardson Lab Top8000, CC BY 4.0) for the types it covers: ARG
  (its three chi1 files together), CYS (``cys-noss``: free cysteines only, since pyslice never moves
  a disulfide-bonded one), GLN, HIS, LYS, MET, TRP. Its residues are already filtered (B <= 40,
  RSCC >= 0.7, no clashes).
- ``structures/top240/*.pdb`` for every other type (ASN, ASP, GLU, ILE, LEU, PHE, PRO, SER, THR,
  TYR, VAL; PRO from here, cis and trans together, not from Top8000's cis-only file). Each file is
  read with :meth:`pyslice.Protein.from_pdb` (alternate locations: the first; a non-standard
  residue inside a chain is frozen, not fatal); phi/psi come from
  :meth:`~pyslice.Protein.backbone_dihedrals` and the chis from the positions with the
  :data:`~pyslice.geometry.CHI_ATOMS` definitions (also for PRO and disulfide cysteines, which
  the builder keeps fixed). A residue counts only when every chi atom was *deposited* (pdbfixer
  rebuilds missing side chains from templates; those angles are not data) and no deposited heavy
  atom of it has a B-factor above 40 (Top8000's residue filter).

Fit, per type (:meth:`RotamerLibrary.fit`):

1. *Components (backbone-independent).* Every chi gets wells: g+, t, g- (60, 180, -60 degrees) for
   the three-fold sp3-sp3 chis, and for the others (sp2 ends: ARG chi4, ASN/ASP/HIS/PHE/TRP/TYR
   chi2, GLN/GLU chi3, PRO's ring) the means of a 1-D :meth:`VonMisesMixture.fit_bic` (up to four
   components, kept at >= 3 % weight, merged when closer than 40 degrees). Each residue falls in the
   cell of its nearest wells; the populated cells start the joint EM (one component per cell, means
   and concentrations from the cell's points). **K is chosen by a population threshold**, not BIC:
   after EM, components lighter than ``min_fraction`` (0.5 % of the data, and at least 10 rows) are
   dropped and EM is rerun, until every component holds at least that much. A rotamer is a
   physically distinct well; with tens of thousands of rows, BIC would rather keep adding
   components that model the non-von-Mises shape inside a well, which a proposal does not need.
   ``max_components`` caps K, keeping the most populated cells.
2. *Backbone dependence.* The (phi, psi) torus is cut into ``n_bins`` x ``n_bins`` bins (18 x 18:
   20 degrees). In each bin the same components are refitted by a weighted EM whose row weights
   are a von Mises kernel in phi and psi around the bin centre, and whose parameters are *shrunk
   toward the backbone-independent fit* by conjugate priors: a Dirichlet prior on the weights and
   the von Mises conjugate prior on each (mu, kappa), together worth ``prior_strength`` (2.5) rows
   of the backbone-independent mixture per component. That is a MAP-EM (monotone, like EM),
   started from the backbone-independent fit: a bin with thousands of kernel-weighted rows
   follows its data; a bin in an empty corner of the Ramachandran plot stays at the
   backbone-independent mixture. The kernel's width shrinks with the data like a 2-D bandwidth,
   ``10 (20000 / n)^(1/6)`` degrees clipped to [10, 20] (10 for Top8000's types, about 14-15 for
   top240's). Settings were chosen by held-out log-likelihood (80/20 split, mean log p of the
   held-out rows at their own bin; gains over the backbone-independent mixture, nats/row):

   ==================================  =====  ===========  ===========  ===========
   bins, kernel width, prior per comp  LYS    HIS (2000)   ARG (3000)   MET (2500)
   ==================================  =====  ===========  ===========  ===========
   12 x 12, 20 deg, 20 rows in all     0.32   0.28         0.10         --
   12 x 12, 10 deg, 2.5                0.36   0.33         0.15         0.21
   12 x 12, 15 deg, 2.5                0.33   0.33         0.16         0.18
   18 x 18, 10 deg, 2.5                0.38   0.34         0.16         0.18
   18 x 18, 15 deg, 2.5                0.37   0.33         0.18         0.19
   18 x 18, 15 deg, 5                  0.36   0.31         0.19         0.19
   ==================================  =====  ===========  ===========  ===========

   (LYS: all 27888 training rows; the others subsampled to top240-like sizes.) Narrow kernels win
   with much data, wider kernels and stronger priors with little (hence the rule); 18 x 18 bins
   gain a little over 12 x 12 and keep the file under 2 MB. Differences of about 0.02 are noise.
3. Parameters are rounded to float32 (the file's precision), so save/load round trips exactly.

Concentrations are capped at ``KAPPA_MAX`` (500, a 2.6 degree spread): tighter wells are a
sample-size artefact and would make a proposal brittle.

Use: :meth:`RotamerLibrary.default` loads the shipped ``pyslice/data/rotamer_library.npz``;
:meth:`RotamerLibrary.proposal` builds a protein's proposal, backbone-dependent through each
residue's phi/psi (a terminus with undefined phi or psi uses the backbone-independent mixture);
:meth:`RotamerLibrary.log_prob` scores chi vectors for inspection.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyslice import _checks
from pyslice._data import ENV_VAR, shipped_file
from pyslice._data import data_dir as _default_data_dir
from pyslice.distributions import (
    VonMisesMixture,
    concentration_from_resultant,
    keep_emptied_components,
    mean_resultant_length,
    von_mises_log_density,
)
from pyslice.geometry.angles import wrap_angle
from pyslice.geometry.builder import CHI_ATOMS, PI_PERIODIC, parent_residue_name

__all__ = ["ResidueRotamers", "RotamerLibrary", "fit_rotamer_mixture"]

FORMAT = "pyslice-rotamer-library"
FORMAT_VERSION = 1
DEFAULT_FILE = "rotamer_library.npz"
#: Credit that the CC BY 4.0 licence of the Top8000 data asks for wherever a product of it ships.
ATTRIBUTION = (
    "Contains data from the Richardson Lab Top8000 rotamer data set (Hintze, Lewis, Richardson & "
    "Richardson, Proteins 2016; http://kinemage.biochem.duke.edu), licensed CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); fitted into von Mises mixtures by pyslice."
)
#: Concentration cap of the fit (a 2.6-degree spread).
KAPPA_MAX = 500.0
_LOG_2PI = math.log(2.0 * math.pi)
#: The parameter tensors of a ResidueRotamers, in file order.
_FIELDS = ("logits", "loc", "concentration", "bin_logits", "bin_loc", "bin_concentration")
_DEG = math.pi / 180.0

#: Top8000 files per residue type (all must exist for the type to come from Top8000).
TOP8000_FILES: dict[str, tuple[str, ...]] = {
    "ARG": ("rota8000-arg-1m.csv", "rota8000-arg-1p.csv", "rota8000-arg-1t.csv"),
    "CYS": ("rota8000-cys-noss.csv",),
    "GLN": ("rota8000-gln.csv",),
    "HIS": ("rota8000-his.csv",),
    "LYS": ("rota8000-lys.csv",),
    "MET": ("rota8000-met.csv",),
    "TRP": ("rota8000-trp.csv",),
}
TOP240 = Path("structures") / "top240"

#: Chis about a bond between two sp3 atoms: three staggered wells (g+, t, g-). The others are
#: next to an sp2 group (or in proline's ring); their wells come from the data.
THREE_FOLD: dict[str, tuple[bool, ...]] = {
    "ARG": (True, True, True, False),
    "ASN": (True, False),
    "ASP": (True, False),
    "CYS": (True,),
    "GLN": (True, True, False),
    "GLU": (True, True, False),
    "HIS": (True, False),
    "ILE": (True, True),
    "LEU": (True, True),
    "LYS": (True, True, True, True),
    "MET": (True, True, True),
    "PHE": (True, False),
    "PRO": (False, False),
    "SER": (True,),
    "THR": (True,),
    "TRP": (True, False),
    "TYR": (True, False),
    "VAL": (True,),
}
_STAGGERED = (60.0 * _DEG, math.pi, -60.0 * _DEG)
#: Per-bin EM: kernel mass above which a bin's rows are thinned, and the iteration cap.
BIN_MAX_ROWS = 4000
BIN_MAX_ITER = 60
#: Per-bin EM: rows lighter than this (kernel weight) are thinned (see _fit_bins).
THIN_WEIGHT = 0.01


def _float32_exact(t: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float32).to(torch.float64)


# --------------------------------------------------------------------------------------------
# One residue type
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResidueRotamers:
    """The rotamer mixtures of one residue type (C chis, K components, an n x n backbone grid).

    Attributes:
        name: parent residue name (``"LYS"``).
        logits: ``(K,)`` log-weights of the backbone-independent mixture (normalised; ``-inf``
            marks an unused slot).
        loc, concentration: ``(C, K)`` means (radians, [-pi, pi)) and kappas per chi and component;
            for a pi-periodic chi they describe the doubled angle.
        bin_logits: ``(n, n, K)``; bin_loc, bin_concentration: ``(n, n, C, K)``: the same per
            (phi bin, psi bin); bin ``i`` covers ``[-pi + i w, -pi + (i + 1) w)``, ``w = 2 pi / n``.
        n_rows: data rows (residues) fitted; ``n_rows_backbone``: those with phi and psi defined.
        source: ``"top8000"`` or ``"top240"``.

    Parameters are kept as float64 tensors holding float32 values (the file's precision).
    """

    name: str
    logits: torch.Tensor
    loc: torch.Tensor
    concentration: torch.Tensor
    bin_logits: torch.Tensor
    bin_loc: torch.Tensor
    bin_concentration: torch.Tensor
    n_rows: int
    n_rows_backbone: int
    source: str

    def __post_init__(self) -> None:
        if self.name not in CHI_ATOMS:
            raise ValueError(f"name must be one of {sorted(CHI_ATOMS)}, got {self.name!r}")
        n_chi = len(CHI_ATOMS[self.name])
        for attr in _FIELDS:
            value = _checks.as_float_tensor(attr, getattr(self, attr))
            object.__setattr__(self, attr, _float32_exact(value))
        k = self.logits.shape[-1] if self.logits.dim() == 1 else -1
        if k < 1:
            raise ValueError(f"{self.name}: logits must have shape (K,), got {self.logits.shape}")
        n = self.bin_logits.shape[0] if self.bin_logits.dim() == 3 else -1
        expected = {
            "loc": (n_chi, k),
            "concentration": (n_chi, k),
            "bin_logits": (n, n, k),
            "bin_loc": (n, n, n_chi, k),
            "bin_concentration": (n, n, n_chi, k),
        }
        for attr, shape in expected.items():
            if tuple(getattr(self, attr).shape) != shape or n < 1:
                raise ValueError(
                    f"{self.name}: {attr} must have shape {shape} (C={n_chi} chis, K={k}, "
                    f"n={n} bins), got {tuple(getattr(self, attr).shape)}"
                )
        for attr in ("loc", "concentration", "bin_loc", "bin_concentration"):
            _checks.require_finite(f"{self.name} {attr}", getattr(self, attr))
        if bool((self.concentration < 0).any()) or bool((self.bin_concentration < 0).any()):
            raise ValueError(f"{self.name}: concentrations must be >= 0")
        for attr in ("logits", "bin_logits"):
            t = getattr(self, attr)
            if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
                raise ValueError(f"{self.name}: {attr} must not contain NaN or +inf")
            if not bool(torch.isfinite(t).any(-1).all()):
                raise ValueError(f"{self.name}: {attr} must give every mixture a finite weight")

    @property
    def n_chi(self) -> int:
        return self.loc.shape[0]

    @property
    def n_components(self) -> int:
        """K: the number of components with a finite weight."""
        return int(torch.isfinite(self.logits).sum())

    @property
    def n_bins(self) -> int:
        return self.bin_logits.shape[0]

    @property
    def pi_periodic(self) -> tuple[bool, ...]:
        return PI_PERIODIC[self.name]

    def parameters(
        self, phi: torch.Tensor, psi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture parameters at backbone angles ``phi, psi: (n,)`` float64 radians (NaN: the
        backbone-independent mixture): logits ``(n, K)``, loc and concentration ``(n, C, K)``."""
        n = phi.shape[0]
        defined = torch.isfinite(phi) & torch.isfinite(psi)
        i = _bin_index(phi, self.n_bins)
        j = _bin_index(psi, self.n_bins)
        logits = torch.where(defined[:, None], self.bin_logits[i, j], self.logits.expand(n, -1))
        loc = torch.where(defined[:, None, None], self.bin_loc[i, j], self.loc.expand(n, -1, -1))
        kappa = torch.where(
            defined[:, None, None],
            self.bin_concentration[i, j],
            self.concentration.expand(n, -1, -1),
        )
        return logits, loc, kappa


def _bin_index(angle: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of each angle (NaN -> 0, unused), (n,) int64."""
    a = torch.nan_to_num(angle.to(torch.float64), nan=0.0)
    index = torch.floor((wrap_angle(a) + math.pi) * (n_bins / (2.0 * math.pi))).to(torch.int64)
    return index.clamp(0, n_bins - 1)


# --------------------------------------------------------------------------------------------
# The library
# --------------------------------------------------------------------------------------------


class RotamerLibrary:
    """Backbone-dependent rotamer mixtures per residue type (see the module docstring).

    Args:
        residues: the per-type fits, a mapping name -> :class:`ResidueRotamers` or an iterable of
            them; all on the same backbone grid.
        provenance: where the fit came from (data, command, date, seed, licence attribution...).
        settings: the fit settings (kernel width, prior strength, thresholds), for the record.
    """

    def __init__(
        self,
        residues: Mapping[str, ResidueRotamers] | Iterable[ResidueRotamers],
        *,
        provenance: Mapping[str, object] | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        items = list(residues.values()) if isinstance(residues, Mapping) else list(residues)
        if not items:
            raise ValueError("residues must hold at least one residue type")
        self._residues: dict[str, ResidueRotamers] = {}
        for item in items:
            if not isinstance(item, ResidueRotamers):
                raise TypeError(f"residues must hold ResidueRotamers, got {type(item).__name__}")
            if item.name in self._residues:
                raise ValueError(f"residues: {item.name} appears twice")
            self._residues[item.name] = item
        bins = {r.n_bins for r in items}
        if len(bins) != 1:
            raise ValueError(f"residues must share one backbone grid, got n_bins {sorted(bins)}")
        self.n_bins: int = bins.pop()
        self.provenance: dict[str, object] = dict(provenance or {})
        self.settings: dict[str, object] = dict(settings or {})

    # ---------------------------------------------------------------- access

    @property
    def residue_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._residues))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and parent_residue_name(name) in self._residues

    def __getitem__(self, name: str) -> ResidueRotamers:
        return self._residues[self._resolve(name, "res_type")]

    def __len__(self) -> int:
        return len(self._residues)

    def _resolve(self, name: object, argname: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{argname} must be a residue name (str), got {type(name).__name__}")
        parent = parent_residue_name(name.upper())
        if parent not in self._residues:
            raise ValueError(
                f"{argname}: residue type {name!r} is not in this rotamer library (it has "
                f"{', '.join(self.residue_types)})"
            )
        return parent

    def __repr__(self) -> str:
        types = ", ".join(
            f"{r.name}: {r.n_rows} rows ({r.source}), K={r.n_components}"
            for r in (self._residues[name] for name in self.residue_types)
        )
        return (
            f"RotamerLibrary({len(self)} types, {self.n_bins}x{self.n_bins} phi/psi bins; {types})"
        )

    # ---------------------------------------------------------------- densities

    def mixture_parameters(
        self, res_type: str, phi: object = None, psi: object = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits (n, K), loc (n, C, K), concentration (n, C, K))`` float64 of ``res_type`` at
        backbone angles ``phi, psi`` (radians, numbers or ``(n,)``; None or NaN: the
        backbone-independent mixture, n = 1 when both are None)."""
        residue = self[res_type]
        phi_t, psi_t = _backbone_args(phi, psi)
        return residue.parameters(phi_t, psi_t)

    def marginal(
        self, res_type: str, chi: int = 0, phi: float | None = None, psi: float | None = None
    ) -> VonMisesMixture:
        """The 1-D mixture of chi number ``chi`` (0-based) of ``res_type`` at one backbone
        (None: backbone-independent), as a :class:`VonMisesMixture` (pi-periodic where the chi
        is); batch shape ``(1,)``, float64."""
        residue = self[res_type]
        chi = _checks.check_int("chi", chi, low=0, high=residue.n_chi)
        logits, loc, kappa = self.mixture_parameters(res_type, phi, psi)
        if logits.shape[0] != 1:
            raise ValueError("marginal: phi and psi must be single numbers (or None)")
        return VonMisesMixture(
            logits, loc[:, chi], kappa[:, chi], pi_periodic=residue.pi_periodic[chi]
        )

    def log_prob(
        self, res_type: str, chi: object, phi: object = None, psi: object = None
    ) -> torch.Tensor:
        """log p(chi | res_type, phi, psi), ``(n,)`` float64.

        Args:
            res_type: residue name (variants such as ``HIE`` map to their parent).
            chi: ``(n, C)`` or ``(C,)`` radians, C the type's number of chis.
            phi, psi: radians, numbers or ``(n,)``; None or NaN: the backbone-independent mixture.
        """
        residue = self[res_type]
        x = _checks.as_float_tensor("chi", chi).to("cpu", torch.float64)
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2 or x.shape[1] != residue.n_chi:
            raise ValueError(
                f"chi must have shape (n, {residue.n_chi}) for {residue.name}, got {tuple(x.shape)}"
            )
        _checks.require_finite("chi", x)
        phi_t, psi_t = _backbone_args(phi, psi, x.shape[0])
        logits, loc, kappa = residue.parameters(phi_t, psi_t)
        periodic = torch.tensor(residue.pi_periodic)
        y = torch.where(periodic, 2.0 * x, x)
        per_chi = von_mises_log_density(y[:, :, None], loc, kappa).sum(1)  # (n, K)
        # The stored float32 weights sum to 1 only to ~1e-7: normalise exactly.
        logits = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        return torch.logsumexp(logits + per_chi, dim=1)

    # ---------------------------------------------------------------- proposals

    def proposal(
        self,
        protein: object,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        """The :class:`~pyslice.proposals.MixtureProposal` of ``protein``'s movable chi columns.

        Groups are residues, numbered in ``protein.chi_index`` order; each residue's mixture is the
        one of its (phi, psi) bin, or the backbone-independent one where phi or psi is undefined
        (chain ends). Components are padded to the protein's largest K with ``-inf`` weights.

        Raises:
            ValueError: a residue type of the protein is not in the library.
        """
        from pyslice.proposals import MixtureProposal
        from pyslice.structure.protein import Protein

        if not isinstance(protein, Protein):
            raise TypeError(f"protein must be a pyslice.Protein, got {type(protein).__name__}")
        device = torch.device(device if device is not None else "cpu")
        chi_index = protein.chi_index.to("cpu")
        names = list(protein.builder.chi_residue_names)
        n_chi = chi_index.shape[0]
        if n_chi == 0:
            group = torch.zeros(0, dtype=torch.int64)
            empty = torch.zeros(0, 1, dtype=torch.float64)
            return MixtureProposal(
                group.to(device), empty, empty, empty, torch.zeros(0, dtype=torch.bool), dtype=dtype
            )
        missing = sorted({n for n in names if parent_residue_name(n) not in self._residues})
        if missing:
            raise ValueError(
                f"protein has residue type(s) {', '.join(missing)} that this rotamer library lacks "
                f"(it has {', '.join(self.residue_types)})"
            )
        residues, group = torch.unique_consecutive(chi_index[:, 0], return_inverse=True)
        backbone = protein.backbone_dihedrals()
        phi, psi = backbone[residues, 0], backbone[residues, 1]
        first_column = torch.searchsorted(chi_index[:, 0].contiguous(), residues)
        parameters = []
        for g in range(residues.shape[0]):
            start = int(first_column[g])
            residue = self._residues[parent_residue_name(names[start])]
            columns = chi_index[start : start + residue.n_chi]
            if columns.shape[0] != residue.n_chi or not torch.equal(
                columns[:, 1], torch.arange(residue.n_chi)
            ):
                raise ValueError(
                    f"residue {int(residues[g])} ({residue.name}) has chi columns "
                    f"{columns[:, 1].tolist()}, the library expects 0..{residue.n_chi - 1}"
                )
            parameters.append(residue.parameters(phi[g : g + 1], psi[g : g + 1]))
        k_max = max(p[0].shape[1] for p in parameters)
        logits = torch.full((len(parameters), k_max), -math.inf, dtype=torch.float64)
        loc = torch.zeros(n_chi, k_max, dtype=torch.float64)
        kappa = torch.zeros(n_chi, k_max, dtype=torch.float64)
        for g, (lg, lc, kp) in enumerate(parameters):
            k = lg.shape[1]
            start = int(first_column[g])
            logits[g, :k] = lg[0]
            loc[start : start + lc.shape[1], :k] = lc[0]
            kappa[start : start + kp.shape[1], :k] = kp[0]
        return MixtureProposal(
            group.to(device),
            logits,
            loc,
            kappa,
            protein.pi_periodic.to(device),
            dtype=dtype,
        )

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> None:
        """Write the library to ``path`` (an ``.npz``: float32 parameters and a JSON header with
        the counts, sources, settings and provenance). :meth:`load` reads it back exactly."""
        arrays: dict[str, np.ndarray] = {}
        types = {}
        for name in self.residue_types:
            r = self._residues[name]
            for attr in _FIELDS:
                arrays[f"{name}.{attr}"] = getattr(r, attr).numpy().astype(np.float32)
            types[name] = {
                "n_chi": r.n_chi,
                "pi_periodic": list(r.pi_periodic),
                "n_components": r.n_components,
                "n_rows": r.n_rows,
                "n_rows_backbone": r.n_rows_backbone,
                "source": r.source,
            }
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_bins": self.n_bins,
            "types": types,
            "settings": self.settings,
            "provenance": self.provenance,
        }
        arrays["header"] = np.array(json.dumps(header, sort_keys=True))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> RotamerLibrary:
        """Read a library written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"rotamer library file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except Exception as exc:
            raise ValueError(f"{path}: not a rotamer library file ({exc})") from None
        try:
            header = json.loads(str(arrays.pop("header")))
        except (KeyError, ValueError):
            raise ValueError(f"{path}: not a rotamer library file (no header)") from None
        if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format {header.get('format')!r} version {header.get('version')!r}, "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        residues = []
        for name, info in header["types"].items():
            fields = {
                attr: torch.from_numpy(arrays[f"{name}.{attr}"]).to(torch.float64)
                for attr in _FIELDS
            }
            residues.append(
                ResidueRotamers(
                    name=name,
                    n_rows=int(info["n_rows"]),
                    n_rows_backbone=int(info["n_rows_backbone"]),
                    source=str(info["source"]),
                    **fields,
                )
            )
        return cls(residues, provenance=header["provenance"], settings=header["settings"])

    @classmethod
    def default(cls) -> RotamerLibrary:
        """The library shipped with pyslice (``pyslice/data/rotamer_library.npz``)."""
        return cls.load(shipped_file(DEFAULT_FILE))

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        data_dir: str | Path | None = None,
        *,
        max_components: int = 48,
        seed: int = 0,
        structures: Iterable[str | Path] | None = None,
        progress: bool = False,
        residue_types: Iterable[str] | None = None,
        n_bins: int = 18,
        kernel_width: float | None = None,
        prior_strength: float = 2.5,
        min_fraction: float = 0.005,
        min_rows: int = 10,
    ) -> RotamerLibrary:
        """Fit the library from the shared data (see the module docstring for the method).

        Args:
            data_dir: the folder with ``top8000/`` and ``structures/top240/`` (default: the
                ``PYSLICE_DATA`` setting, else ``../shared/data``).
            max_components: cap on K per residue type.
            seed: seed of the 1-D fits that place the wells of the non-three-fold chis.
            structures: the top240 files to read (names such as ``"1a2p"`` or ``"1a2p.pdb"``,
                or paths); None reads them all (about 2-3 s each). Only read when a requested
                type is not covered by Top8000.
            progress: print progress to stderr.
            residue_types: the types to fit (default: all 18 of ``CHI_ATOMS``).
            n_bins: phi and psi bins per axis.
            kernel_width: standard deviation (degrees) of the backbone kernel; None: the
                rule ``10 (20000 / n)^(1/6)`` clipped to [10, 20] for a type with n rows.
            prior_strength: rows' worth of backbone-independent prior per component in every
                bin (a bin's prior weighs ``prior_strength * K`` rows).
            min_fraction: population threshold that sets K (fraction of a type's rows).
            min_rows: fewest rows a type may be fitted on.

        Raises:
            FileNotFoundError: the data folder (or a folder or file it needs) is missing.
            ValueError: an unknown residue type, or one with fewer than ``min_rows`` rows.
        """
        started = time.time()
        max_components = _checks.check_int("max_components", max_components, low=1)
        seed = _checks.check_int("seed", seed, low=0, high=2**63)
        n_bins = _checks.check_int("n_bins", n_bins, low=1)
        if kernel_width is not None:
            kernel_width = _checks.check_float("kernel_width", kernel_width, positive=True)
        prior_strength = _checks.check_float("prior_strength", prior_strength, positive=True)
        min_fraction = _checks.check_float("min_fraction", min_fraction, low=0.0)
        min_rows = _checks.check_int("min_rows", min_rows, low=1)
        types = _resolve_types(residue_types)  # argument errors before looking for the data
        root = _resolve_data_dir(data_dir)
        say = _progress_printer(progress)

        rows: dict[str, dict[str, np.ndarray]] = {}
        sources: dict[str, str] = {}
        files_read: dict[str, str] = {}
        need_structures = []
        for name in types:
            files = TOP8000_FILES.get(name, ())
            paths = [root / "top8000" / f for f in files]
            if files and all(p.is_file() for p in paths):
                parts = [_read_top8000(p, len(CHI_ATOMS[name])) for p in paths]
                rows[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                sources[name] = "top8000"
                for p in paths:
                    files_read[f"top8000/{p.name}"] = _sha256(p)
                say(f"{name}: {len(rows[name]['chi'])} rows from {', '.join(files)}")
            else:
                need_structures.append(name)
        structure_paths: list[Path] = []
        failed: dict[str, str] = {}
        if need_structures:
            structure_paths = _structure_files(root, structures)
            collected = _read_structures(structure_paths, set(need_structures), failed, say)
            for name in need_structures:
                rows[name] = collected[name]
                sources[name] = "top240"
                say(f"{name}: {len(rows[name]['chi'])} rows from top240")

        residues = []
        widths: dict[str, float] = {}
        for name in types:
            data = rows[name]
            n = len(data["chi"])
            if n < min_rows:
                raise ValueError(
                    f"residue type {name}: {n} data rows from {sources[name]} (fewer than "
                    f"min_rows={min_rows}); give more structures or lower min_rows"
                )
            t0 = time.time()
            residue = _fit_type(
                name,
                data,
                source=sources[name],
                max_components=max_components,
                seed=seed,
                n_bins=n_bins,
                kernel_width=kernel_width,
                prior_strength=prior_strength,
                min_fraction=min_fraction,
            )
            residues.append(residue)
            widths[name] = round(_kernel_width(kernel_width, residue.n_rows_backbone), 3)
            say(f"{name}: K={residue.n_components} fitted in {time.time() - t0:.1f} s")

        settings = {
            "max_components": max_components,
            "n_bins": n_bins,
            "kernel_width_degrees": widths,
            "prior_strength": prior_strength,
            "min_fraction": min_fraction,
            "min_rows": min_rows,
            "kappa_max": KAPPA_MAX,
            "b_factor_max": _B_MAX,
        }
        call = (
            f"pyslice.models.rotamers.library.RotamerLibrary.fit(data_dir={str(root)!r}, "
            f"max_components={max_components}, seed={seed}, "
            f"structures={None if structures is None else [p.name for p in structure_paths]!r}, "
            f"residue_types={None if residue_types is None else list(types)!r}, n_bins={n_bins}, "
            f"kernel_width={kernel_width}, prior_strength={prior_strength}, "
            f"min_fraction={min_fraction}, min_rows={min_rows})"
        )
        from pyslice import __version__

        provenance = {
            "data": {
                "top8000": "Richardson Lab Top8000 rotamer data (top8000/rota8000-*.csv): "
                + (", ".join(n for n in types if sources[n] == "top8000") or "none"),
                "top240": (
                    f"{len(structure_paths) - len(failed)} structures of structures/top240 "
                    "(high-resolution PDB entries, MIT): "
                    + (", ".join(n for n in types if sources[n] == "top240") or "none")
                ),
                "files_sha256": files_read,
                "structures_sha256": _sha256_names(structure_paths),
                "structures_failed": failed,
            },
            "licence": "Top8000 data: CC BY 4.0 (Richardson Lab Top8000); top240: MIT",
            "attribution": ATTRIBUTION,
            "command": call,
            "argv": list(sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seed": seed,
            "fit_seconds": round(time.time() - started, 1),
            "pyslice_version": __version__,
            "torch_version": torch.__version__,
        }
        return cls(residues, provenance=provenance, settings=settings)


def _backbone_args(phi: object, psi: object, n: int | None = None) -> tuple[torch.Tensor, ...]:
    out = []
    for name, value in (("phi", phi), ("psi", psi)):
        if value is None:
            t = torch.tensor([math.nan], dtype=torch.float64)
        else:
            t = _checks.as_float_tensor(name, value).to("cpu", torch.float64).reshape(-1)
        out.append(t)
    size = n if n is not None else max(t.shape[0] for t in out)
    result = []
    for name, t in zip(("phi", "psi"), out):
        if t.shape[0] not in (1, size):
            raise ValueError(f"{name} must be a number or have shape ({size},), got {t.shape[0]}")
        result.append(t.expand(size))
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

_B_MAX = 40.0


def _progress_printer(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"[rotamers] {message}", file=sys.stderr, flush=True)

    return say


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha256_names(paths: Sequence[Path]) -> str:
    """One digest of the structure files' names and contents (sorted by name)."""
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        digest.update(p.name.encode())
        digest.update(_sha256(p).encode())
    return digest.hexdigest()


def _resolve_data_dir(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        path = _default_data_dir(required=True)
        assert path is not None
        return path
    if not isinstance(data_dir, (str, Path)):
        raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data_dir: folder {path} not found (it should hold top8000/ and structures/top240/; "
            f"the default comes from {ENV_VAR})"
        )
    return path.resolve()


def _resolve_types(residue_types: Iterable[str] | None) -> tuple[str, ...]:
    if residue_types is None:
        return tuple(sorted(CHI_ATOMS))
    if isinstance(residue_types, str):
        residue_types = [residue_types]
    out = []
    for name in residue_types:
        if not isinstance(name, str):
            raise TypeError(f"residue_types must hold residue names, got {type(name).__name__}")
        parent = parent_residue_name(name.upper())
        if parent not in CHI_ATOMS:
            raise ValueError(
                f"residue_types: {name!r} is not a residue type with chi angles (expected one of "
                f"{', '.join(sorted(CHI_ATOMS))})"
            )
        if parent not in out:
            out.append(parent)
    if not out:
        raise ValueError("residue_types must name at least one residue type")
    return tuple(sorted(out))


def _read_top8000(path: Path, n_chi: int) -> dict[str, np.ndarray]:
    """Rows with all ``n_chi`` chis: chi (N, n_chi), phi (N,), psi (N,) in radians [-pi, pi)."""
    values = []
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 3 + n_chi:
            continue
        wanted = fields[1 : 3 + n_chi]
        if any(f.strip() == "NULL" for f in wanted[2:]):
            continue
        try:
            values.append([float(f) if f.strip() != "NULL" else math.nan for f in wanted])
        except ValueError:
            continue  # a header or malformed line
    table = np.asarray(values, dtype=np.float64).reshape(-1, 2 + n_chi) * _DEG
    table = np.remainder(table + math.pi, 2.0 * math.pi) - math.pi
    return {"chi": table[:, 2:], "phi": table[:, 0], "psi": table[:, 1]}


def _structure_files(root: Path, structures: Iterable[str | Path] | None) -> list[Path]:
    folder = root / TOP240
    if structures is None:
        if not folder.is_dir():
            raise FileNotFoundError(f"structure folder {folder} not found")
        paths = sorted(folder.glob("*.pdb"))
        if not paths:
            raise FileNotFoundError(f"no .pdb files in {folder}")
        return paths
    if isinstance(structures, (str, Path)):
        structures = [structures]
    paths = []
    for item in structures:
        if not isinstance(item, (str, Path)):
            raise TypeError(f"structures must hold file names or paths, got {type(item).__name__}")
        candidates = [Path(item), folder / str(item), folder / f"{item}.pdb"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"structures: {item!s} not found (looked in {folder})")
        paths.append(found)
    return paths


def _deposited_atoms(text: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """(chain, resSeq, iCode) -> {atom name: B-factor} of the first model's first altlocs."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for line in text.splitlines():
        record = line[:6]
        if record.startswith("ENDMDL"):
            break
        if record not in ("ATOM  ", "HETATM") or len(line) < 27:
            continue
        try:
            b = float(line[60:66])
        except ValueError:
            b = 0.0
        key = (line[21], line[22:26].strip(), line[26])
        out.setdefault(key, {}).setdefault(line[12:16].strip(), b)
    return out


def _structure_rows(protein, text: str) -> dict[str, list[tuple[np.ndarray, float, float]]]:
    """Per parent type, (chi, phi, psi) of the residues of ``protein`` with every chi atom
    deposited and no deposited heavy atom above _B_MAX."""
    from pyslice.geometry.builder import dihedral

    deposited = _deposited_atoms(text)
    backbone = protein.backbone_dihedrals().numpy()
    xyz = protein.positions
    quads, owners = [], []
    for residue in protein.topology.residues():
        parent = parent_residue_name(residue.name)
        if parent not in CHI_ATOMS:
            continue
        atoms = {a.name: a.index for a in residue.atoms()}
        found = deposited.get((residue.chain.id, residue.id, residue.insertionCode or " "))
        if found is None:
            continue
        names = {n for quad in CHI_ATOMS[parent] for n in quad}
        if any(n not in atoms or n not in found for n in names):
            continue
        heavy_b = [b for n, b in found.items() if not n.startswith("H")]
        if heavy_b and max(heavy_b) > _B_MAX:
            continue
        owners.append((parent, residue.index, len(CHI_ATOMS[parent])))
        quads.extend([atoms[n] for n in quad] for quad in CHI_ATOMS[parent])
    out: dict[str, list] = {}
    if not quads:
        return out
    index = torch.tensor(quads, dtype=torch.int64)
    chi = dihedral(xyz[index[:, 0]], xyz[index[:, 1]], xyz[index[:, 2]], xyz[index[:, 3]]).numpy()
    start = 0
    for parent, r, n in owners:
        out.setdefault(parent, []).append(
            (chi[start : start + n], float(backbone[r, 0]), float(backbone[r, 1]))
        )
        start += n
    return out


def _read_structures(
    paths: Sequence[Path], wanted: set[str], failed: dict[str, str], say
) -> dict[str, dict[str, np.ndarray]]:
    from pyslice.structure.protein import Protein

    collected: dict[str, list] = {name: [] for name in wanted}
    for i, path in enumerate(paths):
        t0 = time.time()
        try:
            # unknown="freeze": a non-standard residue (a ligand inside a chain) stays, frozen;
            # the standard residues around it still count.
            protein = Protein.from_pdb(path, unknown="freeze")
        except ValueError as exc:
            failed[path.name] = str(exc).splitlines()[0]
            say(f"skipped {path.name}: {failed[path.name]}")
            continue
        found = _structure_rows(protein, path.read_text())
        for name in wanted:
            collected[name].extend(found.get(name, []))
        say(f"read {path.name} ({i + 1}/{len(paths)}) in {time.time() - t0:.1f} s")
    out = {}
    for name, items in collected.items():
        n_chi = len(CHI_ATOMS[name])
        out[name] = {
            "chi": np.asarray([c for c, _, _ in items], dtype=np.float64).reshape(-1, n_chi),
            "phi": np.asarray([p for _, p, _ in items], dtype=np.float64),
            "psi": np.asarray([s for _, _, s in items], dtype=np.float64),
        }
    return out


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _fit_type(
    name: str,
    data: Mapping[str, np.ndarray],
    *,
    source: str,
    max_components: int,
    seed: int,
    n_bins: int,
    kernel_width: float | None,
    prior_strength: float,
    min_fraction: float,
) -> ResidueRotamers:
    chi = torch.as_tensor(data["chi"], dtype=torch.float64)
    phi = torch.as_tensor(data["phi"], dtype=torch.float64)
    psi = torch.as_tensor(data["psi"], dtype=torch.float64)
    defined = torch.isfinite(phi) & torch.isfinite(psi)
    periodic = PI_PERIODIC[name]
    wells = [_STAGGERED if three else None for three in THREE_FOLD[name]]
    logits, loc, kappa = fit_rotamer_mixture(
        chi,
        periodic,
        wells=wells,
        max_components=max_components,
        min_fraction=min_fraction,
        seed=seed,
    )
    bin_logits, bin_loc, bin_kappa = _fit_bins(
        chi,
        periodic,
        phi,
        psi,
        (logits, loc, kappa),
        n_bins=n_bins,
        kernel_width=_kernel_width(kernel_width, int(defined.sum())) * _DEG,
        prior_strength=prior_strength,
        seed=seed,
    )
    return ResidueRotamers(
        name=name,
        logits=logits,
        loc=loc,
        concentration=kappa,
        bin_logits=bin_logits,
        bin_loc=bin_loc,
        bin_concentration=bin_kappa,
        n_rows=int(chi.shape[0]),
        n_rows_backbone=int(defined.sum()),
        source=source,
    )


def _kernel_width(width: float | None, n_rows: int) -> float:
    """The backbone kernel's width in degrees: ``width``, or the rule 10 (20000 / n)^(1/6)
    clipped to [10, 20] (a 2-D bandwidth shrinks like n^(-1/6))."""
    if width is not None:
        return width
    return min(20.0, max(10.0, 10.0 * (20000.0 / max(n_rows, 1)) ** (1.0 / 6.0)))


def fit_rotamer_mixture(
    chi: object,
    pi_periodic: Sequence[bool] | None = None,
    *,
    weights: object = None,
    wells: Sequence[Sequence[float] | None] | None = None,
    max_components: int = 48,
    min_fraction: float = 0.005,
    min_count: float = 10.0,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit a mixture of product-von Mises components (one component = one rotamer) to
    ``chi: (N, C)`` radians by EM, K chosen by a population threshold.

    Args:
        chi: the data, one residue per row.
        pi_periodic: ``(C,)`` flags; those columns are fitted on the doubled angle.
        weights: ``(N,)`` non-negative row weights (default 1).
        wells: per column, the candidate well centres (radians, of the chi itself), or None to
            place them from a 1-D :meth:`VonMisesMixture.fit_bic` of that column (up to four,
            kept at >= 3 % weight, merged within 40 degrees). Default: None for every column.
        max_components: cap on K (the most populated cells start EM).
        min_fraction, min_count: a component must keep at least ``max(min_count, min_fraction *
            total weight)`` of the weight; lighter ones are dropped and EM is rerun.
        seed: seed of the 1-D fits.
        max_iter, tol: EM stops when the mean log-likelihood per unit weight changes by < tol.

    Returns:
        ``logits (K,)`` (normalised log-weights, heaviest first), ``loc (C, K)`` and
        ``concentration (C, K)``, float64; pi-periodic columns describe the doubled angle.
    """
    x = _checks.as_float_tensor("chi", chi).to("cpu", torch.float64)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"chi must have shape (N, C) with N, C >= 1, got {tuple(x.shape)}")
    _checks.require_finite("chi", x)
    n, c = x.shape
    if pi_periodic is None:
        pi_periodic = [False] * c
    periodic = torch.as_tensor(list(pi_periodic), dtype=torch.bool)
    if periodic.shape != (c,):
        raise ValueError(f"pi_periodic must have {c} flags, got {tuple(periodic.shape)}")
    if weights is None:
        w = torch.ones(n, dtype=torch.float64)
    else:
        w = _checks.as_float_tensor("weights", weights).to("cpu", torch.float64).reshape(-1)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {tuple(w.shape)}")
        _checks.require_finite("weights", w)
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
    if wells is None:
        wells = [None] * c
    if len(wells) != c:
        raise ValueError(f"wells must have one entry per column ({c}), got {len(wells)}")
    max_components = _checks.check_int("max_components", max_components, low=1)
    min_fraction = _checks.check_float("min_fraction", min_fraction, low=0.0)
    min_count = _checks.check_float("min_count", min_count, low=0.0)
    y = torch.where(periodic, 2.0 * x, x)

    # Well centres per column, on the (doubled where periodic) angle y.
    centres = []
    for col in range(c):
        if wells[col] is not None:
            given = torch.as_tensor(list(wells[col]), dtype=torch.float64)
            if given.numel() == 0:
                raise ValueError(f"wells[{col}] must hold at least one angle")
            centres.append(wrap_angle(2.0 * given if bool(periodic[col]) else given))
        else:
            centres.append(_data_wells(y[:, col], w, seed + col))

    # Cells of nearest wells; the populated ones start EM.
    cell = torch.zeros(n, dtype=torch.int64)
    for col in range(c):
        nearest = torch.cos(y[:, col, None] - centres[col][None, :]).argmax(1)
        cell = cell * centres[col].numel() + nearest
    cells, inverse = torch.unique(cell, return_inverse=True)
    mass = torch.zeros(cells.numel(), dtype=torch.float64).index_add_(0, inverse, w)
    total = float(w.sum())
    threshold = max(min_count, min_fraction * total)
    order = torch.argsort(mass, descending=True)
    keep = order[mass[order] >= threshold][:max_components]
    if keep.numel() == 0:
        keep = order[:1]
    resp = (inverse[:, None] == keep[None, :]).to(torch.float64)  # (N, K) hard assignment
    params = _m_step_joint(y, w[None], resp[None])

    while True:
        params, _ = _joint_em(y, w[None], params, max_iter=max_iter, tol=tol)
        weight = torch.exp(params[0][0]) * total
        light = weight < threshold
        if bool(light.all()):  # too little data for the threshold: keep the heaviest
            light = weight < weight.max()
        if not bool(light.any()):
            break
        params = tuple(p[..., ~light] for p in params)
        params = (params[0] - torch.logsumexp(params[0], -1, keepdim=True), *params[1:])
    log_w, loc, kappa = (p[0] for p in params)
    order = torch.argsort(log_w, descending=True)
    return log_w[order], wrap_angle(loc[:, order]), kappa[:, order]


def _data_wells(y: torch.Tensor, w: torch.Tensor, seed: int) -> torch.Tensor:
    """Well centres of one column from a 1-D BIC-chosen von Mises mixture (on y)."""
    n_max = min(4, max(1, y.shape[0] // 10))
    mixture, _ = VonMisesMixture.fit_bic(
        y.to(torch.float64),
        max_components=n_max,
        weights=w,
        seed=seed,
        n_init=2,
        max_iter=100,
        tol=1e-6,
    )
    probs = mixture.probs.reshape(-1)
    locs = mixture.loc.reshape(-1)
    order = torch.argsort(probs, descending=True)
    chosen: list[float] = []
    for k in order.tolist():
        if float(probs[k]) < 0.03 and chosen:
            continue
        angle = float(locs[k])
        if all(math.cos(angle - a) < math.cos(40.0 * _DEG) for a in chosen):
            chosen.append(angle)
    return torch.tensor(chosen, dtype=torch.float64)


Params = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _features(y: torch.Tensor) -> torch.Tensor:
    """(..., N, 2C): cos and sin of every column of ``y: (..., N, C)``."""
    return torch.cat([torch.cos(y), torch.sin(y)], dim=-1)


def _e_step_joint(
    features: torch.Tensor, w: torch.Tensor, params: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood (S,) and responsibilities (S, N, K) of S weighted data sets: ``features``
    (N, 2C) rows shared by all sets, or (S, N, 2C) rows of their own; ``w: (S, N)``.

    log vM(y; mu, kappa) = kappa cos(y - mu) - kappa - log 2pi - log i0e(kappa), and
    kappa cos(y - mu) = (kappa cos mu) cos y + (kappa sin mu) sin y: one matmul for all columns.
    """
    log_w, loc, kappa = params  # (S, K), (S, C, K), (S, C, K)
    coef = torch.cat([kappa * torch.cos(loc), kappa * torch.sin(loc)], dim=1)  # (S, 2C, K)
    const = (-kappa - _LOG_2PI - torch.log(torch.special.i0e(kappa))).sum(1)  # (S, K)
    joint = torch.matmul(features, coef)  # (S, N, K)
    joint += (log_w + const)[:, None, :]
    # A softmax in place (torch.logsumexp allocates several (S, N, K) temporaries).
    top = joint.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    resp = joint.sub_(top).exp_()
    norm = resp.sum(-1, keepdim=True)
    resp /= norm
    point = (top + torch.log(norm)).squeeze(-1)
    point = torch.where(w > 0, point, 0.0)
    return (w * point).sum(-1), resp


def _m_step_joint(
    y: torch.Tensor,
    w: torch.Tensor,
    resp: torch.Tensor,
    previous: Params | None = None,
    prior: tuple[torch.Tensor, Params] | None = None,
    features: torch.Tensor | None = None,
) -> Params:
    """M-step of every data set (S of them): weights, means and kappas of each column.

    ``prior = (strength (S,), (log_w0 (K,), loc0 (C, K), kappa0 (C, K)))``: conjugate priors worth
    ``strength`` rows of the mixture ``(log_w0, loc0, kappa0)`` (Dirichlet on the weights, the von
    Mises conjugate prior on each mean and kappa): pseudo-mass ``strength alpha0_k`` with
    resultant ``strength alpha0_k A(kappa0) e^{i mu0}`` join each component's statistics.
    """
    if features is None:
        features = _features(y)
    c = y.shape[-1]
    weighted = resp.mul_(w[:, :, None])  # (S, N, K), in place: resp is not used again
    mass = weighted.sum(1)  # (S, K)
    stats = torch.matmul(weighted.transpose(1, 2), features)  # (S, K, 2C)
    cos_sum = stats[:, :, :c].transpose(1, 2)  # (S, C, K)
    sin_sum = stats[:, :, c:].transpose(1, 2)
    total = w.sum(1, keepdim=True)
    if prior is not None:
        strength, (log_w0, loc0, kappa0) = prior
        pseudo = strength[:, None] * torch.exp(log_w0)[None, :]  # (S, K)
        length = mean_resultant_length(kappa0)[None] * pseudo[:, None, :]  # (S, C, K)
        cos_sum = cos_sum + length * torch.cos(loc0)[None]
        sin_sum = sin_sum + length * torch.sin(loc0)[None]
        mass = mass + pseudo
        total = total + strength[:, None]
    loc = torch.atan2(sin_sum, cos_sum)
    resultant = torch.sqrt(cos_sum * cos_sum + sin_sum * sin_sum) / mass[:, None, :].clamp_min(
        1e-300
    )
    kappa = concentration_from_resultant(resultant).clamp(max=KAPPA_MAX)
    log_w = torch.log(mass / total)
    empty = (mass <= 1e-12 * total)[:, None, :].expand_as(loc)
    loc, kappa = keep_emptied_components(empty, loc, kappa, previous)
    return log_w, loc, kappa


def _joint_em(
    y: torch.Tensor,
    w: torch.Tensor,
    params: Params,
    *,
    max_iter: int,
    tol: float,
    prior: tuple[torch.Tensor, Params] | None = None,
) -> tuple[Params, torch.Tensor]:
    """EM (MAP-EM with ``prior``) for S weighted data sets ``w: (S, N)`` over the rows ``y: (N, C)``
    from ``params``; stops when every set's log-likelihood per unit weight changes by < tol.
    Returns the parameters and the final log-likelihoods (S,)."""
    features = _features(y)
    total = w.sum(1)
    if prior is not None:
        total = total + prior[0]
    previous_ll = None
    log_lik = torch.zeros(w.shape[0], dtype=torch.float64)
    for _ in range(max_iter):
        log_lik, resp = _e_step_joint(features, w, params)
        if prior is not None:
            log_lik = log_lik + _prior_log_density(params, prior)
        if previous_ll is not None and bool(
            ((log_lik - previous_ll).abs() <= tol * total.clamp_min(1e-300)).all()
        ):
            break
        previous_ll = log_lik
        params = _m_step_joint(y, w, resp, previous=params, prior=prior, features=features)
    return params, log_lik


def _prior_log_density(params: Params, prior: tuple[torch.Tensor, Params]) -> torch.Tensor:
    """(S,) log of the conjugate priors (up to a constant), so MAP-EM's objective is monitored."""
    log_w, loc, kappa = params
    strength, (log_w0, loc0, kappa0) = prior
    pseudo = strength[:, None] * torch.exp(log_w0)[None, :]
    length = mean_resultant_length(kappa0)[None] * pseudo[:, None, :]
    vm = length * kappa * torch.cos(loc - loc0[None]) - pseudo[:, None, :] * (
        kappa + torch.log(torch.special.i0e(kappa))
    )
    finite_w = torch.where(torch.isfinite(log_w), log_w, 0.0)
    return (pseudo * finite_w).sum(1) + vm.sum((1, 2))


def _fit_bins(
    chi: torch.Tensor,
    pi_periodic: Sequence[bool],
    phi: torch.Tensor,
    psi: torch.Tensor,
    global_params: Params,
    *,
    n_bins: int,
    kernel_width: float,
    prior_strength: float,
    seed: int = 0,
    max_rows: int = BIN_MAX_ROWS,
    max_iter: int = BIN_MAX_ITER,
    tol: float = 1e-7,
    max_elements: int = 8_000_000,
) -> Params:
    """Per-bin MAP-EM (kernel-weighted rows, priors at the backbone-independent fit):
    ``(n, n, K)``, ``(n, n, C, K)``, ``(n, n, C, K)``.

    Each bin's rows are thinned without bias: row i (kernel weight w_i) is kept with probability
    p_i = min(1, w_i / tau) and then weighs w_i / p_i, with tau = max(THIN_WEIGHT, M / max_rows)
    for a bin of kernel mass M. The sufficient statistics keep their expectation; far rows (tiny
    weights) mostly drop out, and a dense bin keeps about ``max_rows`` rows (thousands of effective
    rows, plenty for K components).
    """
    periodic = torch.as_tensor(list(pi_periodic), dtype=torch.bool)
    y = torch.where(periodic, 2.0 * chi, chi)
    log_w0, loc0, kappa0 = global_params
    k = log_w0.shape[0]
    c = y.shape[1]
    defined = torch.isfinite(phi) & torch.isfinite(psi)
    y, phi, psi = y[defined], phi[defined], psi[defined]
    centres = -math.pi + (torch.arange(n_bins, dtype=torch.float64) + 0.5) * (2 * math.pi / n_bins)
    grid_phi, grid_psi = torch.meshgrid(centres, centres, indexing="ij")
    grid_phi, grid_psi = grid_phi.reshape(-1), grid_psi.reshape(-1)
    s_total = grid_phi.numel()
    out_w = log_w0.expand(s_total, k).clone()
    out_loc = loc0.expand(s_total, c, k).clone()
    out_kappa = kappa0.expand(s_total, c, k).clone()
    generator = torch.Generator().manual_seed(seed)
    kernel_kappa = 1.0 / (kernel_width * kernel_width)
    rows: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for s in range(s_total):
        w = torch.exp(
            kernel_kappa * (torch.cos(phi - grid_phi[s]) - 1.0)
            + kernel_kappa * (torch.cos(psi - grid_psi[s]) - 1.0)
        )
        # Unbiased thinning: a row of weight w_i < tau stays with probability w_i / tau and then
        # weighs tau, so the expected statistics are unchanged.
        tau = max(THIN_WEIGHT, float(w.sum()) / max_rows)
        p = (w / tau).clamp(max=1.0)
        keep = torch.rand(w.shape, generator=generator, dtype=torch.float64) < p
        w = w / p
        index = torch.nonzero(keep).squeeze(1)
        rows.append(index)
        weights.append(w[index])
    order = sorted(range(s_total), key=lambda s: rows[s].numel())
    start = 0
    while start < s_total:
        # Bins of similar size together, padded to the largest (padding weighs 0).
        width = max(1, rows[order[start]].numel())
        stop = start
        while stop < s_total:
            width = max(width, rows[order[stop]].numel(), 1)
            if (stop - start + 1) * width * k > max_elements and stop > start:
                break
            stop += 1
        chunk = order[start:stop]
        width = max(max(rows[s].numel() for s in chunk), 1)
        index = torch.zeros(len(chunk), width, dtype=torch.int64)
        w = torch.zeros(len(chunk), width, dtype=torch.float64)
        for j, s in enumerate(chunk):
            index[j, : rows[s].numel()] = rows[s]
            w[j, : rows[s].numel()] = weights[s]
        start = stop
        if y.shape[0] == 0:
            continue  # no backbone information at all: every bin is the global fit
        s = len(chunk)
        strength = torch.full((s,), prior_strength * k, dtype=torch.float64)
        params = (out_w[chunk], out_loc[chunk], out_kappa[chunk])
        params, _ = _joint_em(
            y[index], w, params, max_iter=max_iter, tol=tol, prior=(strength, global_params)
        )
        out_w[chunk], out_loc[chunk], out_kappa[chunk] = params
    shape = (n_bins, n_bins)
    return (
        out_w.reshape(*shape, k),
        wrap_angle(out_loc).reshape(*shape, c, k),
        out_kappa.reshape(*shape, c, k),
    )
