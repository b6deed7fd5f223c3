"""The result of a sampling run: chi angles and energies of every chain, with diagnostics.

Layout is draws first: ``chi: (draws, chains, n_chi)`` radians, ``energy: (draws, chains)``
kJ/mol, as :mod:`pyslice.mcmc.diagnostics` (and ArviZ, after a transpose) expect.

Chi angles are circular: R-hat and ESS of a chi column are computed on its sine and cosine (the
larger R-hat, the smaller ESS), so a chain sitting at +-pi is not split in two. ``circular=False``
gives the plain statistics of the raw angles.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pyslice.io.files import atomic_write
from pyslice.mcmc import diagnostics

__all__ = ["Ensemble"]

_FORMAT = "pyslice-ensemble-1"
#: Convergence criteria of :meth:`Ensemble.convergence`: every chi with R-hat at most MAX_RHAT and
#: a bulk ESS of at least MIN_ESS (Vehtari et al. 2021 recommend 1.01 and 400 for final results;
#: these are the minimum for a usable ensemble).
MAX_RHAT = 1.05
MIN_ESS = 100.0


@dataclass
class Ensemble:
    """Samples of a run.

    Attributes:
        chi: (draws, chains, n_chi) float32 radians in [-pi, pi).
        energy: (draws, chains) float64 kJ/mol.
        move_counts: move name -> (proposed, accepted) chain-steps after warm-up.
        group_counts: move name -> (2, n_groups) int64: proposals that touched each group
            (residue) and how many of them were accepted.
        group_names: residue label of each group (e.g. ``LYS15``); ``chi_group: (n_chi,)`` int64
            group of each chi column, ``chi_names`` a label per column (``LYS15 chi1``).
        pi_periodic: (n_chi,) bool.
        temperature: kelvin; ``meta``: run settings (seed, steps, warm-up, thin, moves, ...).
        reference_pdb: the PDB text of the structure sampled (None for non-protein targets), so
            that writers can rebuild positions.
    """

    chi: torch.Tensor
    energy: torch.Tensor
    move_counts: dict[str, tuple[int, int]]
    group_counts: dict[str, torch.Tensor]
    group_names: list[str]
    chi_group: torch.Tensor
    chi_names: list[str]
    pi_periodic: torch.Tensor
    temperature: float
    meta: dict[str, Any] = field(default_factory=dict)
    reference_pdb: str | None = None

    @property
    def n_draws(self) -> int:
        return self.chi.shape[0]

    @property
    def n_chains(self) -> int:
        return self.chi.shape[1]

    @property
    def n_chi(self) -> int:
        return self.chi.shape[2]

    @property
    def acceptance(self) -> dict[str, float]:
        """Move name -> fraction of its proposals accepted (NaN if never proposed)."""
        return {k: (a / p if p else float("nan")) for k, (p, a) in self.move_counts.items()}

    @property
    def group_acceptance(self) -> dict[str, torch.Tensor]:
        """Move name -> (n_groups,) float64 acceptance per residue (NaN where never moved)."""
        out = {}
        for k, counts in self.group_counts.items():
            proposed, accepted = counts.to(torch.float64)
            out[k] = torch.where(proposed > 0, accepted / proposed.clamp_min(1), float("nan"))
        return out

    def __repr__(self) -> str:
        acc = ", ".join(f"{k}={v:.3f}" for k, v in self.acceptance.items())
        return (
            f"Ensemble(draws={self.n_draws}, chains={self.n_chains}, n_chi={self.n_chi}, "
            f"T={self.temperature} K, acceptance: {acc})"
        )

    # ------------------------------------------------------------------ diagnostics

    def _circular(self) -> np.ndarray:
        x = self.chi.to(torch.float64)
        return torch.stack([torch.sin(x), torch.cos(x)], dim=-1).numpy()  # (D, C, n_chi, 2)

    def rhat(self, circular: bool = True) -> np.ndarray:
        """(n_chi,) rank-normalised split R-hat of each chi (see the module docstring)."""
        if not circular:
            return diagnostics.rhat(self.chi)
        return np.max(diagnostics.rhat(self._circular()), axis=-1)

    def ess(self, kind: str = "bulk", circular: bool = True) -> np.ndarray:
        """(n_chi,) effective sample size of each chi, ``kind`` = bulk, tail or mean."""
        if not circular:
            return diagnostics.ess(self.chi, kind=kind)
        return np.min(diagnostics.ess(self._circular(), kind=kind), axis=-1)

    def energy_rhat(self) -> float:
        return float(diagnostics.rhat(self.energy))

    def energy_ess(self, kind: str = "bulk") -> float:
        return float(diagnostics.ess(self.energy, kind=kind))

    def autocorrelation(self, max_lag: int | None = None) -> np.ndarray:
        """(lags, n_chi) autocorrelation of cos(chi) averaged over chains; energy: use
        ``diagnostics.autocorrelation(ensemble.energy)``."""
        return diagnostics.autocorrelation(torch.cos(self.chi.to(torch.float64)), max_lag)

    @staticmethod
    def convergence(summary: dict[str, Any]) -> tuple[bool, str]:
        """(converged, why not) from a :meth:`summary`: R-hat <= MAX_RHAT and bulk ESS >=
        MIN_ESS for every chi; the reason names the worst chi."""
        rhat, ess = summary.get("rhat_max"), summary.get("ess_bulk_min")
        if rhat is None or ess is None:
            return False, "too few draws to judge convergence (R-hat and ESS need at least 4)"
        problems = []
        per_chi = summary.get("per_chi") or []
        if rhat > MAX_RHAT:
            worst = max(per_chi, key=lambda c: c["rhat"] or 0.0)["name"] if per_chi else "?"
            problems.append(f"R-hat max {rhat:.3f} > {MAX_RHAT} ({worst})")
        if ess < MIN_ESS:
            worst = min(per_chi, key=lambda c: c["ess_bulk"] or 0.0)["name"] if per_chi else "?"
            problems.append(f"bulk ESS min {ess:.0f} < {MIN_ESS:.0f} ({worst})")
        return not problems, "; ".join(problems)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: acceptance, R-hat and ESS (worst and median), energies, and the
        convergence verdict (``converged``, ``convergence_problems``); values that are not finite
        (too few draws, never-proposed moves) are None."""
        enough = self.n_draws >= 4 and self.n_chi > 0
        rhat = self.rhat() if enough else np.full(self.n_chi, np.nan)
        bulk = self.ess("bulk") if enough else np.full(self.n_chi, np.nan)
        tail = self.ess("tail") if enough else np.full(self.n_chi, np.nan)

        def stat(values: np.ndarray, fn) -> float | None:
            finite = values[np.isfinite(values)]
            return float(fn(finite)) if finite.size else None

        energy = self.energy.numpy()
        out = _json_safe(
            {
                "draws": self.n_draws,
                "chains": self.n_chains,
                "n_chi": self.n_chi,
                "temperature_K": self.temperature,
                "acceptance": {k: _num(v) for k, v in self.acceptance.items()},
                "rhat_max": stat(rhat, np.max),
                "rhat_median": stat(rhat, np.median),
                "ess_bulk_min": stat(bulk, np.min),
                "ess_bulk_median": stat(bulk, np.median),
                "ess_tail_min": stat(tail, np.min),
                "energy_mean": float(energy.mean()) if energy.size else None,
                "energy_std": float(energy.std()) if energy.size else None,
                "energy_min": float(energy.min()) if energy.size else None,
                "energy_rhat": self.energy_rhat() if self.n_draws >= 4 else None,
                "per_chi": [
                    {"name": name, "rhat": _num(rhat[j]), "ess_bulk": _num(bulk[j])}
                    for j, name in enumerate(self.chi_names)
                ],
                "meta": self.meta,
            }
        )
        out["converged"], out["convergence_problems"] = self.convergence(out)
        return out

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` file (atomically: it appears whole or not at all)."""
        header = {
            "format": _FORMAT,
            "move_counts": self.move_counts,
            "group_names": self.group_names,
            "chi_names": self.chi_names,
            "temperature": self.temperature,
            "meta": self.meta,
            "reference_pdb": self.reference_pdb,
        }
        arrays = {
            "chi": self.chi.numpy(),
            "energy": self.energy.numpy(),
            "chi_group": self.chi_group.numpy(),
            "pi_periodic": self.pi_periodic.numpy(),
            "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        }
        for name, values in self.group_counts.items():
            arrays[f"group_counts/{name}"] = values.numpy()

        def write(file) -> None:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            file.write(buffer.getvalue())

        atomic_write(path, "wb", write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ensemble:
        """Read a file written by :meth:`save`; a missing, empty, truncated or foreign file is an
        error naming ``path``."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"path: no such file: {path}")
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"path: {path} is not a pyslice ensemble (not an .npz archive: empty, truncated "
                "or another kind of file)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                if "header" not in data.files:
                    raise ValueError("it has no pyslice header")
                header = json.loads(bytes(data["header"]).decode())
                if not isinstance(header, dict) or header.get("format") != _FORMAT:
                    found = header.get("format") if isinstance(header, dict) else None
                    raise ValueError(f"its format is {found!r}, not {_FORMAT!r}")
                group_counts = {
                    key.split("/", 1)[1]: torch.from_numpy(data[key].copy())
                    for key in data.files
                    if key.startswith("group_counts/")
                }
                return cls(
                    chi=torch.from_numpy(data["chi"].copy()),
                    energy=torch.from_numpy(data["energy"].copy()),
                    move_counts={
                        k: (int(p), int(a)) for k, (p, a) in header["move_counts"].items()
                    },
                    group_counts=group_counts,
                    group_names=list(header["group_names"]),
                    chi_group=torch.from_numpy(data["chi_group"].copy()),
                    chi_names=list(header["chi_names"]),
                    pi_periodic=torch.from_numpy(data["pi_periodic"].copy()),
                    temperature=float(header["temperature"]),
                    meta=header["meta"],
                    reference_pdb=header["reference_pdb"],
                )
        except Exception as exc:  # noqa: BLE001 - numpy/zip/json errors all mean "not ours"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"path: {path} is not a pyslice ensemble written by Ensemble.save ({first})"
            ) from None

    @classmethod
    def concatenate_chains(cls, parts: list[Ensemble]) -> Ensemble:
        """One ensemble from parts with the same draws and chi columns (e.g. one per rank);
        acceptance counts add up."""
        if not parts:
            raise ValueError("parts must not be empty")
        first = parts[0]
        move_counts = {
            k: (sum(p.move_counts[k][0] for p in parts), sum(p.move_counts[k][1] for p in parts))
            for k in first.move_counts
        }
        group_counts = {k: sum(p.group_counts[k] for p in parts) for k in first.group_counts}
        return cls(
            chi=torch.cat([p.chi for p in parts], dim=1),
            energy=torch.cat([p.energy for p in parts], dim=1),
            move_counts=move_counts,
            group_counts=group_counts,
            group_names=first.group_names,
            chi_group=first.chi_group,
            chi_names=first.chi_names,
            pi_periodic=first.pi_periodic,
            temperature=first.temperature,
            meta=first.meta,
            reference_pdb=first.reference_pdb,
        )


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """Non-finite floats -> None, recursively (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
