"""The one adapter between torch tensors and the compiled module ``pyslice._C``.

Every array reaches ``_C`` as a :func:`view` (``pyslice._C.Tensor``: data address, shape, strides,
dtype, device), built here from a torch tensor in the same way for CPU and CUDA. Each op has one
function here that serves both devices: it makes its inputs contiguous, allocates its outputs and
any workspace with torch (``_C.workspace_size``; the compiled code allocates no device memory),
and calls ``_C.<op>_cpu(...)`` or ``_C.<op>_cuda(..., stream)``: the same arguments in the same
order, plus the current CUDA stream as an int. ``_C`` checks every view again (dtype, shape,
contiguity, device) and raises TypeError/ValueError naming the argument.

Callers (``pyslice.backends`` registers these functions) validate user input first; the tensors
given here must stay alive until the call returns, which they do as locals. Temporaries freed on
return are safe on CUDA: torch's allocator reuses them only for work queued later on the same
(current) stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from pyslice import _compiled

if TYPE_CHECKING:
    from pyslice.energy.forcefield import EnergyTables
    from pyslice.geometry.builder import BuildTables

__all__ = [
    "build_sidechains",
    "energy",
    "energy_delta",
    "metropolis_step",
    "sample_mixture",
    "view",
]

_DTYPE_NAMES = {
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float32: "float32",
    torch.float64: "float64",
}


def view(tensor: torch.Tensor) -> Any:
    """The ``pyslice._C.Tensor`` describing ``tensor``'s memory (no copy; the tensor must outlive
    every call the view is passed to). TypeError for a dtype or device _C has no kernels for."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    name = _DTYPE_NAMES.get(tensor.dtype)
    if name is None:
        raise TypeError(
            f"tensor must have dtype {', '.join(_DTYPE_NAMES.values())}; got {tensor.dtype}"
        )
    # is_cuda / get_device() rather than tensor.device: the view is built on every call of every
    # op, and a torch.device object costs more than the rest of it.
    if tensor.is_cuda:
        device, index = "cuda", tensor.get_device()
    elif tensor.is_cpu:
        device, index = "cpu", None
    else:
        raise TypeError(f"tensor must be on the CPU or a CUDA device, got {tensor.device}")
    return _compiled.load().Tensor(
        tensor.data_ptr(), tensor.shape, tensor.stride(), name, device, index
    )


def _cached_views(tables: EnergyTables | BuildTables, names: Sequence[str]) -> list[Any]:
    """Views of the fields ``names`` of a tables object, built once per object: its tensors never
    change and it keeps them alive. No contiguous copies here (a copy would die with this call):
    _C rejects a strided table."""
    cached = tables.__dict__.get("_native_views")
    if cached is None:
        cached = [view(getattr(tables, name)) for name in names]
        object.__setattr__(tables, "_native_views", cached)  # frozen dataclasses
    return cached


@contextlib.contextmanager
def _launch(device: torch.device) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(device name, trailing arguments) for the call: () on the CPU; on CUDA the current stream
    of ``device``, which is made current for the call."""
    if device.type != "cuda":
        yield "cpu", ()
        return
    with torch.cuda.device(device):
        yield "cuda", (torch.cuda.current_stream(device).cuda_stream,)


def _function(op: str, device: str) -> Any:
    return getattr(_compiled.load(), f"{op}_{device}")


def _workspace(op: str, device: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    size = _compiled.load().workspace_size(op, device, shape)
    return torch.empty(size, dtype=torch.uint8, device=like.device)


# ---- von Mises mixture sampling (op vonmises_sample)


def sample_mixture(
    table: torch.Tensor, n: int, seed: int, offset: int, base: int, pi_periodic: bool
) -> torch.Tensor:
    """(n,) float32 draws from the mixtures of ``table`` (6, rows, K) float32
    (:func:`pyslice.reference.mixture_table`); element i uses row i % rows and the streams of
    element ``base + i``."""
    table = table.contiguous()
    out = torch.empty(n, dtype=torch.float32, device=table.device)
    with _launch(table.device) as (device, stream):
        _function("sample_mixture", device)(
            view(table), view(out), seed, offset, base, pi_periodic, *stream
        )
    return out


# ---- the fused Metropolis-Hastings step (op metropolis_step)


def metropolis_step(
    chi: torch.Tensor,
    chi_new: torch.Tensor,
    energy: torch.Tensor,
    energy_new: torch.Tensor,
    log_weight: torch.Tensor,
    log_weight_new: torch.Tensor,
    latent: torch.Tensor,
    latent_new: torch.Tensor,
    accepted_count: torch.Tensor,
    beta: torch.Tensor,
    seed: int,
    step: int,
    chain_offset: int,
) -> torch.Tensor:
    """Update the chain state (chi, energy, log_weight, latent, accepted_count; contiguous, in
    place) where a chain accepts; returns the (B,) bool mask of accepted chains. ``beta``: (B,)
    float64 per chain."""
    accepted = torch.empty(chi.shape[0], dtype=torch.bool, device=chi.device)
    # The state is updated in place: never a contiguous copy of it (_C rejects a strided state);
    # the proposal may be copied (a tuple: the copies must outlive the call).
    state = (chi, energy, log_weight, latent)
    proposal = tuple(t.contiguous() for t in (chi_new, energy_new, log_weight_new, latent_new))
    with _launch(chi.device) as (device, stream):
        _function("metropolis_step", device)(
            *(view(t) for pair in zip(state, proposal) for t in pair),
            view(accepted_count),
            view(accepted),
            view(beta.contiguous()),
            seed,
            step,
            chain_offset,
            *stream,
        )
    return accepted


# ---- side-chain building (op sidechain_build)


_BUILD_TABLES = ("positions", "chi_ref", "axis", "move_atom", "move_chi", "level_start")


def build_sidechains(tables: BuildTables, chi: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) positions in chi's dtype: the reference with every chi rotated to ``chi`` (B,
    n_chi); ``tables`` in chi's dtype on chi's device (level_start on the CPU)."""
    chi = chi.detach().contiguous()
    out = torch.empty(
        (chi.shape[0], tables.positions.shape[0], 3), dtype=chi.dtype, device=chi.device
    )
    positions, chi_ref, axis, move_atom, move_chi, level_start = _cached_views(
        tables, _BUILD_TABLES
    )
    with _launch(chi.device) as (device, stream):
        _function("build_sidechains", device)(
            positions,
            view(chi),
            chi_ref,
            axis,
            move_atom,
            move_chi,
            level_start,
            view(out),
            *stream,
        )
    return out


# ---- force-field energy (ops energy and energy_delta)


def _n_bonded_items(tables: EnergyTables) -> int:
    return sum(
        int(t.shape[0])
        for t in (tables.bond_atoms, tables.angle_atoms, tables.torsion_atoms, tables.exc_atoms)
    )


def energy(tables: EnergyTables, positions: torch.Tensor) -> torch.Tensor:
    """(B, 5) float64 per-term energies of positions (B, N, 3) in the tables' dtype."""
    positions = positions.contiguous()
    batch = positions.shape[0]
    out = torch.empty(batch, 5, dtype=torch.float64, device=positions.device)
    with _launch(positions.device) as (device, stream):
        shape = (batch, tables.n_atoms, _n_bonded_items(tables))
        workspace = _workspace("energy", device, shape, positions)
        _function("energy", device)(
            _cached_views(tables, _compiled.load().ENERGY_TABLES),
            view(positions),
            view(out),
            view(workspace),
            tables.cutoff,
            tables.krf,
            tables.crf,
            *stream,
        )
    return out


def energy_delta(
    tables: EnergyTables,
    positions: torch.Tensor,
    new_positions: torch.Tensor,
    moved: torch.Tensor,
) -> torch.Tensor:
    """(B, 5) float64 per-term energy change when the atoms ``moved`` (B, M) int64 (-1: padding)
    go from positions to new_positions (B, N, 3)."""
    positions, new_positions = positions.contiguous(), new_positions.contiguous()
    moved = moved.contiguous()
    batch, n_moved = moved.shape
    out = torch.empty(batch, 5, dtype=torch.float64, device=positions.device)
    with _launch(positions.device) as (device, stream):
        workspace = _workspace("energy_delta", device, (batch, tables.n_atoms, n_moved), positions)
        _function("energy_delta", device)(
            _cached_views(tables, _compiled.load().ENERGY_TABLES),
            view(positions),
            view(new_positions),
            view(moved),
            view(out),
            view(workspace),
            tables.cutoff,
            tables.krf,
            tables.crf,
            *stream,
        )
    return out
