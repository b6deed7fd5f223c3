"""The one place that knows which implementations exist and chooses between them.

Every hot operation has a torch reference and fast paths (Triton on CUDA tensors, C++/OpenMP for CPU
tensors, CUDA in ``pyslice._C``). Each implementation declares the devices and dtypes it supports
and can say why it does not fit an input. Automatic selection takes the first that fits, in the
order triton, cuda, cpu, reference. ``PYSLICE_BACKEND=reference|cpu|cuda|triton`` or a
``backend=`` argument forces one; forcing one that cannot run raises :class:`BackendUnavailable`
with the reason. Triton kernels also run on CPU tensors under ``TRITON_INTERPRET=1`` (slow: used
by the tests), but only when forced.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pyslice import _compiled

BACKENDS = ("triton", "cuda", "cpu", "reference")
ENV_VAR = "PYSLICE_BACKEND"


class BackendUnavailable(RuntimeError):
    """A forced backend cannot run the requested operation on the given input."""


@functools.cache
def triton_import_error() -> str | None:
    """Why Triton cannot be imported here, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'pyslice[gpu]')"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install must not break pyslice
        return f"triton failed to import: {exc!r}"
    return None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _why_not_triton(device: torch.device) -> str | None:
    if (reason := triton_import_error()) is not None:
        return reason
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpreted():
        return None
    return f"Triton runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1), got {device}"


def _why_not_cpu(device: torch.device) -> str | None:
    if not _compiled.is_available():
        return f"pyslice._C is unavailable: {_compiled.unavailable_reason()}"
    if device.type != "cpu":
        return f"the C++ path takes CPU tensors, got {device}"
    return None


def _why_not_cuda(device: torch.device) -> str | None:
    if not _compiled.is_available():
        return f"pyslice._C is unavailable: {_compiled.unavailable_reason()}"
    if not _compiled.cuda_compiled():
        return "pyslice._C was built without CUDA (no toolkit at build time, or PYSLICE_CUDA=OFF)"
    if device.type != "cuda":
        return f"the CUDA path takes CUDA tensors, got {device}"
    if _compiled.load().cuda_device_count() == 0:
        return (
            "pyslice._C sees no CUDA device (its CUDA runtime needs a newer driver than torch's?)"
        )
    return None


_WHY_NOT: dict[str, Callable[[torch.device], str | None]] = {
    "triton": _why_not_triton,
    "cuda": _why_not_cuda,
    "cpu": _why_not_cpu,
    "reference": lambda device: None,
}


@dataclass(frozen=True)
class Implementation:
    """One implementation of one operation."""

    op: str
    backend: str
    dtypes: tuple[torch.dtype, ...]
    target: str  # "module:function", imported on first use

    def why_not(self, device: torch.device, dtype: torch.dtype, *, forced: bool) -> str | None:
        """None if this implementation can run on (device, dtype), else the reason."""
        if dtype not in self.dtypes:
            names = ", ".join(str(d) for d in self.dtypes)
            return f"dtype {dtype} is not supported (supports {names})"
        if device.type == "cuda" and not torch.cuda.is_available():
            return "no CUDA device is available to torch"
        if not forced and self.backend == "triton" and device.type != "cuda":
            return "the Triton interpreter is used only when forced"
        return _WHY_NOT[self.backend](device)

    @functools.cached_property
    def function(self) -> Callable:
        module_name, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


_F32 = (torch.float32,)
_F32_F64 = (torch.float32, torch.float64)
_REGISTRY: dict[str, dict[str, Implementation]] = {}


def _register(op: str, backend: str, target: str, dtypes: tuple[torch.dtype, ...] = _F32) -> None:
    _REGISTRY.setdefault(op, {})[backend] = Implementation(op, backend, dtypes, target)


# von Mises mixture sampling: (table (6, rows, K) float32, n, seed, offset, pi_periodic) -> (n,)
_register("vonmises_sample", "triton", "pyslice.kernels.vonmises:sample_mixture")
_register("vonmises_sample", "cuda", "pyslice._native:sample_mixture")
_register("vonmises_sample", "cpu", "pyslice._native:sample_mixture")
_register("vonmises_sample", "reference", "pyslice.reference:sample_mixture")

# Fused Metropolis-Hastings step, in place on the chain state (pyslice.mcmc.metropolis_step);
# dispatched on the dtype of chi.
_register("metropolis_step", "cuda", "pyslice._native:metropolis_step", _F32_F64)
_register("metropolis_step", "cpu", "pyslice._native:metropolis_step", _F32_F64)
_register("metropolis_step", "reference", "pyslice.reference:metropolis_step", _F32_F64)

# Force-field energy (pyslice.energy): (tables, positions (B, N, 3)) -> (B, 5) float64 per term;
# energy_delta: (tables, positions, new_positions, moved (B, M) int64) -> (B, 5) float64.
_register("energy", "cuda", "pyslice._native:energy", _F32_F64)
_register("energy", "cpu", "pyslice._native:energy", _F32_F64)
_register("energy", "reference", "pyslice.energy.reference:energy_reference", _F32_F64)
_register("energy_delta", "cuda", "pyslice._native:energy_delta", _F32_F64)
_register("energy_delta", "cpu", "pyslice._native:energy_delta", _F32_F64)
_register("energy_delta", "reference", "pyslice.energy.reference:energy_delta_reference", _F32_F64)

# Side-chain building (pyslice.geometry.SideChainBuilder.build):
# (tables: geometry.BuildTables, chi (B, n_chi)) -> (B, N, 3) in chi's dtype.
_register("sidechain_build", "cuda", "pyslice._native:build_sidechains", _F32_F64)
_register("sidechain_build", "cpu", "pyslice._native:build_sidechains", _F32_F64)
_register("sidechain_build", "reference", "pyslice.geometry.builder:build_reference", _F32_F64)

# Attention (pyslice.attention.attention): (q (B, H, Sq, D), k, v (B, H, Sk, D), key_padding_mask
# (B, Sk) bool or None, scale) -> (B, H, Sq, D) in q's dtype; "reference" is torch SDPA.
_F16_BF16_F32 = (torch.float32, torch.float16, torch.bfloat16)
_register("attention", "triton", "pyslice.kernels.attention:attention", _F16_BF16_F32)
_ALL_FLOATS = (*_F16_BF16_F32, torch.float64)
_register("attention", "reference", "pyslice.attention:attention_sdpa", _ALL_FLOATS)


def operations() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def implementations(op: str) -> dict[str, Implementation]:
    if op not in _REGISTRY:
        raise ValueError(f"op must be one of {operations()}, got {op!r}")
    return dict(_REGISTRY[op])


def requested_backend(backend: str | None) -> str | None:
    """The forced backend: the argument, else $PYSLICE_BACKEND, else None (automatic)."""
    name = backend if backend is not None else os.environ.get(ENV_VAR) or None
    if name is None or name == "auto":
        return None
    if name not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS + ('auto',)}, got {name!r}")
    return name


def select(
    op: str, device: torch.device | str, dtype: torch.dtype, backend: str | None = None
) -> Implementation:
    """The implementation of ``op`` to use for tensors on ``device`` with ``dtype``."""
    device = torch.device(device)
    impls = implementations(op)
    forced = requested_backend(backend)
    if forced is not None:
        impl = impls.get(forced)
        if impl is None:
            raise BackendUnavailable(
                f"backend {forced!r} has no implementation of {op} (has {tuple(impls)})"
            )
        reason = impl.why_not(device, dtype, forced=True)
        if reason is not None:
            raise BackendUnavailable(f"backend {forced!r} cannot run {op} on {device}: {reason}")
        return impl
    reasons = []
    for name in BACKENDS:
        impl = impls.get(name)
        if impl is None:
            continue
        reason = impl.why_not(device, dtype, forced=False)
        if reason is None:
            return impl
        reasons.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no backend can run {op} on {device}/{dtype}: " + "; ".join(reasons))


def report() -> dict[str, dict[str, dict[str, str]]]:
    """For every op and backend, 'usable' or the reason it is not, on the CPU and on CUDA."""
    devices = [torch.device("cpu"), torch.device("cuda")]
    out: dict[str, dict[str, dict[str, str]]] = {}
    for op, impls in _REGISTRY.items():
        out[op] = {}
        for name, impl in impls.items():
            out[op][name] = {
                str(dev): impl.why_not(dev, impl.dtypes[0], forced=True) or "usable"
                for dev in devices
            }
    return out
