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

The fit (:meth:`RotamerLibrary.fit`, the ``pyslice fit`` command) reads the data with
:mod:`pyslice.models.rotamers.data` and fits every type with
:func:`pyslice.models.rotamers.fit.fit_residue_type`: population-thresholded EM over the type's
rotamers, then a MAP-EM per (phi, psi) bin shrunk toward the backbone-independent fit (the method
and the held-out measurements behind its settings are in that module's docstring).
Concentrations are capped at :data:`~pyslice.models.rotamers.fit.KAPPA_MAX` (500, a 2.6 degree
spread).

Use: :meth:`RotamerLibrary.default` loads the shipped ``pyslice/data/rotamer_library.npz``;
:meth:`RotamerLibrary.proposal` builds a protein's proposal, backbone-dependent through each
residue's phi/psi (a terminus with undefined phi or psi uses the backbone-independent mixture);
:meth:`RotamerLibrary.log_prob` scores chi vectors for inspection.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyslice import _checks
from pyslice._data import shipped_file
from pyslice.distributions import VonMisesMixture, product_component_log_prob
from pyslice.geometry.angles import wrap_angle
from pyslice.geometry.chis import CHI_ATOMS, PI_PERIODIC, parent_residue_name
from pyslice.models.rotamers.data import (
    B_FACTOR_MAX,
    TOP8000_FILES,
    read_structures,
    read_top8000,
    resolve_data_dir,
    sha256_file,
    sha256_files,
    structure_files,
)
from pyslice.models.rotamers.fit import KAPPA_MAX, fit_residue_type, kernel_width_degrees
from pyslice.proposals import MixtureProposal

if TYPE_CHECKING:
    from pyslice.structure.protein import Protein

__all__ = ["ATTRIBUTION", "PARAMETER_FIELDS", "ResidueRotamers", "RotamerLibrary"]

FORMAT = "pyslice-rotamer-library"
FORMAT_VERSION = 1
DEFAULT_FILE = "rotamer_library.npz"
#: Credit that the CC BY 4.0 licence of the Top8000 data asks for wherever a product of it ships.
ATTRIBUTION = (
    "Contains data from the Richardson Lab Top8000 rotamer data set (Hintze, Lewis, Richardson & "
    "Richardson, Proteins 2016; http://kinemage.biochem.duke.edu), licensed CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); fitted into von Mises mixtures by pyslice."
)
#: The parameter tensors of a ResidueRotamers, in file order.
PARAMETER_FIELDS = (
    "logits", "loc", "concentration", "bin_logits", "bin_loc", "bin_concentration",
)  # fmt: skip


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
        for attr in PARAMETER_FIELDS:
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
        # The stored float32 weights sum to 1 only to ~1e-7: normalise exactly.
        logits = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        return torch.logsumexp(product_component_log_prob(y, logits, loc, kappa), dim=1)

    # ---------------------------------------------------------------- proposals

    def proposal(
        self,
        protein: Protein,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> MixtureProposal:
        """The :class:`~pyslice.proposals.MixtureProposal` of ``protein``'s movable chi columns.

        Groups are residues, numbered in ``protein.chi_index`` order; each residue's mixture is the
        one of its (phi, psi) bin, or the backbone-independent one where phi or psi is undefined
        (chain ends). Components are padded to the protein's largest K with ``-inf`` weights.

        Raises:
            ValueError: a residue type of the protein is not in the library.
        """
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
            for attr in PARAMETER_FIELDS:
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
                for attr in PARAMETER_FIELDS
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
        root = resolve_data_dir(data_dir)
        say = _progress_printer(progress)

        rows: dict[str, dict[str, np.ndarray]] = {}
        sources: dict[str, str] = {}
        files_read: dict[str, str] = {}
        need_structures = []
        for name in types:
            files = TOP8000_FILES.get(name, ())
            paths = [root / "top8000" / f for f in files]
            if files and all(p.is_file() for p in paths):
                parts = [read_top8000(p, len(CHI_ATOMS[name])) for p in paths]
                rows[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                sources[name] = "top8000"
                for p in paths:
                    files_read[f"top8000/{p.name}"] = sha256_file(p)
                say(f"{name}: {len(rows[name]['chi'])} rows from {', '.join(files)}")
            else:
                need_structures.append(name)
        structure_paths: list[Path] = []
        failed: dict[str, str] = {}
        if need_structures:
            structure_paths = structure_files(root, structures)
            collected = read_structures(structure_paths, set(need_structures), failed, say)
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
            fitted = fit_residue_type(
                name,
                data,
                max_components=max_components,
                seed=seed,
                n_bins=n_bins,
                kernel_width=kernel_width,
                prior_strength=prior_strength,
                min_fraction=min_fraction,
            )
            defined = np.isfinite(data["phi"]) & np.isfinite(data["psi"])
            residue = ResidueRotamers(
                name=name,
                **fitted._asdict(),
                n_rows=n,
                n_rows_backbone=int(defined.sum()),
                source=sources[name],
            )
            residues.append(residue)
            widths[name] = round(kernel_width_degrees(kernel_width, residue.n_rows_backbone), 3)
            say(f"{name}: K={residue.n_components} fitted in {time.time() - t0:.1f} s")

        settings = {
            "max_components": max_components,
            "n_bins": n_bins,
            "kernel_width_degrees": widths,
            "prior_strength": prior_strength,
            "min_fraction": min_fraction,
            "min_rows": min_rows,
            "kappa_max": KAPPA_MAX,
            "b_factor_max": B_FACTOR_MAX,
        }
        call = (
            f"pyslice.models.rotamers.RotamerLibrary.fit(data_dir={str(root)!r}, "
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
                "structures_sha256": sha256_files(structure_paths),
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


def _progress_printer(progress: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress:
            print(f"[rotamers] {message}", file=sys.stderr, flush=True)

    return say


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
