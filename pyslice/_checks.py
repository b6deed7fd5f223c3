"""Validation at the API boundary: each message names the argument, what was expected, what came.

Checks of values (finiteness) read the data and so make the host wait for a GPU. Inside
:func:`internal_arrays` — pyslice's own hot paths, e.g. a sampler step, whose arrays pyslice made
itself — they are skipped; what could go wrong there is flagged on the device and raised at the
sampler's synchronisation points instead. Checks of shapes, dtypes and devices always run (they
read only metadata).
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

MAX_SEED = 2**64
MAX_OFFSET = 2**32


def as_float_tensor(
    name: str,
    value: object,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A floating tensor from a tensor, array or number; integer or boolean data is a TypeError."""
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        tensor = torch.tensor(float(value), dtype=torch.get_default_dtype())
    elif isinstance(value, (np.ndarray, numbers.Real, Sequence)) and not isinstance(value, str):
        tensor = torch.as_tensor(np.asarray(value))
    else:
        raise TypeError(f"{name} must be a tensor, array or number, got {type(value).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32 or float64), got {tensor.dtype}"
        )
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if dtype is not None or device is not None:
        tensor = tensor.to(dtype=dtype or tensor.dtype, device=device or tensor.device)
    return tensor


_state = threading.local()


@contextlib.contextmanager
def internal_arrays() -> Iterator[None]:
    """Within: value checks (:func:`require_finite`, :func:`values_checked`) are skipped."""
    previous = getattr(_state, "internal", False)
    _state.internal = True
    try:
        yield
    finally:
        _state.internal = previous


def values_checked() -> bool:
    """False inside :func:`internal_arrays`: callers skip checks that read tensor values."""
    return not getattr(_state, "internal", False)


def require_finite(name: str, tensor: torch.Tensor) -> None:
    if values_checked() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite; it contains NaN or infinite values")


def common_device_dtype(**tensors: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """The device all tensors share (an error naming them if not) and their promoted dtype."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"arguments must be on one device, got {listing}")
    dtype = torch.float32
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    return next(iter(devices.values())), dtype


def broadcast(**tensors: torch.Tensor) -> list[torch.Tensor]:
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        listing = ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
        raise ValueError(f"shapes do not broadcast: {listing}") from None
    return [t.expand(shape) for t in tensors.values()]


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """An int in [low, high); bools and floats are TypeErrors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def check_float(
    name: str, value: object, *, low: float | None = None, positive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def resolve_seed(seed: int | None) -> int:
    """A Philox key from ``seed``; None draws one from torch's global generator."""
    if seed is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return check_int("seed", seed, low=0, high=MAX_SEED)


def sample_shape_of(sample_shape: object) -> torch.Size:
    if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    if not isinstance(sample_shape, (tuple, list, torch.Size)):
        raise TypeError(f"sample_shape must be an int or a tuple of ints, got {sample_shape!r}")
    return torch.Size(check_int("sample_shape", s, low=0) for s in sample_shape)


def positions_tensor(name: str, value: object, n_atoms: int) -> torch.Tensor:
    """A detached, contiguous ``(n_atoms, 3) float64`` CPU copy of finite positions in nm, from a
    tensor, an array, nested lists or an OpenMM Quantity."""
    if hasattr(value, "value_in_unit"):  # an openmm.unit.Quantity: only then import OpenMM
        from openmm import unit

        value = np.asarray(value.value_in_unit(unit.nanometer), dtype=np.float64)
    tensor = as_float_tensor(name, value)
    if tuple(tensor.shape) != (n_atoms, 3):
        raise ValueError(
            f"{name} must have shape ({n_atoms}, 3) (one row per atom, nm), "
            f"got {tuple(tensor.shape)}"
        )
    require_finite(name, tensor)
    return tensor.detach().to("cpu", torch.float64).clone().contiguous()


def positions_batch(name: str, value: object, n_atoms: int) -> tuple[torch.Tensor, bool]:
    """A batch of conformations ``(B, n_atoms, 3)`` (float, as given: no copy, no finiteness scan)
    from ``(B, n_atoms, 3)`` or one ``(n_atoms, 3)``, and whether ``value`` was that one."""
    tensor = as_float_tensor(name, value)
    if tensor.ndim not in (2, 3) or tuple(tensor.shape[-2:]) != (n_atoms, 3):
        raise ValueError(
            f"{name} must have shape (B, {n_atoms}, 3) or ({n_atoms}, 3) (nm), "
            f"got {tuple(tensor.shape)}"
        )
    single = tensor.ndim == 2
    return (tensor[None] if single else tensor), single


def index_set(name: str, value: object, size: int) -> tuple[int, ...]:
    """Distinct indices in [0, size), ascending, from an iterable of ints (a tensor included)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be None or an iterable of indices, got {type(value).__name__}"
        )
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return tuple(sorted({check_int(name, v, low=0, high=size) for v in value}))


def check_topology(name: str, value: object) -> Any:
    """``value`` itself when it is an ``openmm.app.Topology``; a TypeError otherwise."""
    from openmm.app import Topology

    if not isinstance(value, Topology):
        raise TypeError(f"{name} must be an openmm.app.Topology, got {type(value).__name__}")
    return value


def exception_summary(exc: BaseException) -> str:
    """'KeyError: first line of the message': a foreign exception, in one line, for our messages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def residue_label(chain: str, number: str, insertion_code: str, name: str) -> str:
    """'chain A residue 45A LYS': how every message names a residue (PDB chain id, residue number
    with its insertion code, residue name)."""
    return f"chain {chain or '?'} residue {number}{insertion_code.strip()} {name}"


def describe_residue(residue: Any) -> str:
    """:func:`residue_label` of an ``openmm.app.Residue``."""
    chain = residue.chain.id if residue.chain is not None else ""
    return residue_label(chain, residue.id, residue.insertionCode or "", residue.name)


def describe_atom(atom: Any) -> str:
    """'CA of chain A residue 45 LYS' for an ``openmm.app.Atom``."""
    return f"{atom.name} of {describe_residue(atom.residue)}"


def check_device(name: str, value: object) -> torch.device:
    """``value`` as a torch.device that exists on this machine: 'cpu', 'cuda' or 'cuda:N' with a
    visible GPU; a clear error otherwise (torch's own is an AssertionError from deep inside)."""
    try:
        device = torch.device(value)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device}: no CUDA device is available here (use 'cpu')")
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return device
