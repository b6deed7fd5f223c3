"""Adapters from torch tensors to the compiled force-field energy (pyslice._C): numpy views for
CPU, data pointers plus the current stream for CUDA. Arguments were validated by pyslice.energy;
_C checks sizes again (and, on the CPU, every table index)."""

from __future__ import annotations

import torch

from pyslice import _compiled

_SIZES = {
    "n_exceptions": "exc_atoms",
    "n_bonds": "bond_atoms",
    "n_angles": "angle_atoms",
    "n_torsions": "torsion_atoms",
}
# gridDim.y limit of the CUDA kernels: larger batches run in chunks.
_CUDA_MAX_BATCH = 65535


def _numpy_views(tables) -> dict:
    """The tables as numpy views, built once per tables object."""
    cached = tables.__dict__.get("_numpy_views")
    if cached is None:
        cached = {name: t.numpy() for name, t in tables.tensors().items()}
        object.__setattr__(tables, "_numpy_views", cached)
    return cached


def energy_cpu(tables, positions: torch.Tensor) -> torch.Tensor:
    out = torch.empty(positions.shape[0], 5, dtype=torch.float64)
    _compiled.load().energy_cpu(
        _numpy_views(tables),
        positions.contiguous().numpy(),
        out.numpy(),
        tables.cutoff,
        tables.krf,
        tables.crf,
    )
    return out


def energy_delta_cpu(
    tables, positions: torch.Tensor, new_positions: torch.Tensor, moved: torch.Tensor
) -> torch.Tensor:
    out = torch.empty(positions.shape[0], 5, dtype=torch.float64)
    _compiled.load().energy_delta_cpu(
        _numpy_views(tables),
        positions.contiguous().numpy(),
        new_positions.contiguous().numpy(),
        moved.contiguous().numpy(),
        out.numpy(),
        tables.cutoff,
        tables.krf,
        tables.crf,
    )
    return out


def _pointers(tables) -> tuple[dict, dict]:
    tensors = tables.tensors()
    ptrs = {name: t.data_ptr() for name, t in tensors.items()}
    sizes = {name: int(tensors[key].shape[0]) for name, key in _SIZES.items()}
    sizes["n_atoms"] = tables.n_atoms
    return ptrs, sizes


def energy_cuda(tables, positions: torch.Tensor) -> torch.Tensor:
    positions = positions.contiguous()
    module = _compiled.load()
    ptrs, sizes = _pointers(tables)
    items = sizes["n_exceptions"] + sizes["n_bonds"] + sizes["n_angles"] + sizes["n_torsions"]
    batch = positions.shape[0]
    out = torch.empty(batch, 5, dtype=torch.float64, device=positions.device)
    with torch.cuda.device(positions.device):
        stream = torch.cuda.current_stream().cuda_stream
        for start in range(0, batch, _CUDA_MAX_BATCH):
            chunk = positions[start : start + _CUDA_MAX_BATCH]
            size = module.energy_cuda_workspace_size(tables.n_atoms, items, len(chunk), 0, False)
            # Freed when this returns: the allocator reuses it only for later work on this stream.
            workspace = torch.empty(max(size, 1), dtype=torch.float64, device=positions.device)
            module.energy_cuda(
                ptrs, sizes, positions.dtype == torch.float64, chunk.data_ptr(), len(chunk),
                out[start:].data_ptr(), workspace.data_ptr(), tables.cutoff, tables.krf,
                tables.crf, stream,
            )  # fmt: skip
    return out


def energy_delta_cuda(
    tables, positions: torch.Tensor, new_positions: torch.Tensor, moved: torch.Tensor
) -> torch.Tensor:
    positions, new_positions = positions.contiguous(), new_positions.contiguous()
    moved = moved.contiguous()
    module = _compiled.load()
    ptrs, sizes = _pointers(tables)
    batch, n_moved = moved.shape
    out = torch.zeros(batch, 5, dtype=torch.float64, device=positions.device)
    with torch.cuda.device(positions.device):
        stream = torch.cuda.current_stream().cuda_stream
        for start in range(0, batch, _CUDA_MAX_BATCH):
            stop = min(batch, start + _CUDA_MAX_BATCH)
            size = module.energy_cuda_workspace_size(tables.n_atoms, 0, stop - start, n_moved, True)
            workspace = torch.empty(max(size, 1), dtype=torch.float64, device=positions.device)
            mark = torch.zeros(stop - start, tables.n_atoms, dtype=torch.int32,
                               device=positions.device)  # fmt: skip
            module.energy_delta_cuda(
                ptrs, sizes, positions.dtype == torch.float64, positions[start:].data_ptr(),
                new_positions[start:].data_ptr(), moved[start:].data_ptr(), stop - start,
                n_moved, out[start:].data_ptr(), workspace.data_ptr(), mark.data_ptr(),
                tables.cutoff, tables.krf, tables.crf, stream,
            )  # fmt: skip
    return out
