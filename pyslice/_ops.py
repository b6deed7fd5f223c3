"""Thin adapters from torch tensors to the compiled module: numpy views for CPU, data pointers plus
the current stream for CUDA. Arguments were validated by the caller; _C checks sizes again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pyslice import _compiled

if TYPE_CHECKING:
    from pyslice.geometry.builder import BuildTables


def sample_mixture_cpu(
    table: torch.Tensor, n: int, seed: int, offset: int, pi_periodic: bool
) -> torch.Tensor:
    out = torch.empty(n, dtype=torch.float32)
    _compiled.load().sample_mixture_cpu(
        table.contiguous().numpy(), out.numpy(), seed, offset, pi_periodic
    )
    return out


def sample_mixture_cuda(
    table: torch.Tensor, n: int, seed: int, offset: int, pi_periodic: bool
) -> torch.Tensor:
    table = table.contiguous()
    _, rows, n_components = table.shape
    out = torch.empty(n, dtype=torch.float32, device=table.device)
    with torch.cuda.device(table.device):
        stream = torch.cuda.current_stream().cuda_stream
        _compiled.load().sample_mixture_cuda(
            table.data_ptr(),
            rows,
            n_components,
            out.data_ptr(),
            n,
            seed,
            offset,
            pi_periodic,
            stream,
        )
    return out


def metropolis_step_cpu(
    chi, chi_new, energy, energy_new, log_weight, log_weight_new, latent, latent_new,
    accepted_count, beta: float, seed: int, step: int,
) -> torch.Tensor:
    accepted = torch.empty(chi.shape[0], dtype=torch.bool)
    _compiled.load().metropolis_step_cpu(
        chi.numpy(), chi_new.numpy(), energy.numpy(), energy_new.numpy(), log_weight.numpy(),
        log_weight_new.numpy(), latent.numpy(), latent_new.numpy(), accepted_count.numpy(),
        accepted.numpy(), beta, seed, step,
    )
    return accepted


def metropolis_step_cuda(
    chi, chi_new, energy, energy_new, log_weight, log_weight_new, latent, latent_new,
    accepted_count, beta: float, seed: int, step: int,
) -> torch.Tensor:
    accepted = torch.empty(chi.shape[0], dtype=torch.bool, device=chi.device)
    tensors = {
        "chi": chi, "chi_new": chi_new, "energy": energy, "energy_new": energy_new,
        "log_weight": log_weight, "log_weight_new": log_weight_new, "latent": latent,
        "latent_new": latent_new, "accepted_count": accepted_count, "accepted": accepted,
    }
    with torch.cuda.device(chi.device):
        _compiled.load().metropolis_step_cuda(
            {name: t.data_ptr() for name, t in tensors.items()}, chi.shape[0], chi.shape[1],
            latent.shape[1], chi.dtype == torch.float64, energy.dtype == torch.float64, beta,
            seed, step, torch.cuda.current_stream().cuda_stream,
        )
    return accepted


def build_sidechains_cpu(tables: BuildTables, chi: torch.Tensor) -> torch.Tensor:
    out = torch.empty((chi.shape[0], tables.positions.shape[0], 3), dtype=chi.dtype)
    _compiled.load().build_sidechains_cpu(
        tables.positions.contiguous().numpy(),
        chi.detach().contiguous().numpy(),
        tables.chi_ref.contiguous().numpy(),
        tables.axis.contiguous().numpy(),
        tables.move_atom.contiguous().numpy(),
        tables.move_chi.contiguous().numpy(),
        tables.level_start.contiguous().numpy(),
        out.numpy(),
    )
    return out


def build_sidechains_cuda(tables: BuildTables, chi: torch.Tensor) -> torch.Tensor:
    # A contiguous copy of chi may be freed when this returns: torch's allocator reuses it only
    # for work queued after the kernel on the same (current) stream.
    chi = chi.detach().contiguous()
    batch, n_chi = chi.shape
    n_atoms = tables.positions.shape[0]
    out = torch.empty((batch, n_atoms, 3), dtype=chi.dtype, device=chi.device)
    with torch.cuda.device(chi.device):
        stream = torch.cuda.current_stream().cuda_stream
        _compiled.load().build_sidechains_cuda(
            tables.positions.data_ptr(),
            chi.data_ptr(),
            tables.chi_ref.data_ptr(),
            tables.axis.data_ptr(),
            tables.move_atom.data_ptr(),
            tables.move_chi.data_ptr(),
            tables.level_start.numpy(),
            out.data_ptr(),
            batch,
            n_atoms,
            n_chi,
            "float64" if chi.dtype == torch.float64 else "float32",
            stream,
        )
    return out


# ---- force-field energy (pyslice.energy); _C re-checks every table index on the CPU

_ENERGY_SIZES = {
    "n_exceptions": "exc_atoms",
    "n_bonds": "bond_atoms",
    "n_angles": "angle_atoms",
    "n_torsions": "torsion_atoms",
}
# gridDim.y limit of the CUDA kernels: larger batches run in chunks.
_CUDA_MAX_BATCH = 65535


def _energy_numpy_views(tables) -> dict:
    """The tables as numpy views, built once per tables object."""
    cached = tables.__dict__.get("_numpy_views")
    if cached is None:
        cached = {name: t.numpy() for name, t in tables.tensors().items()}
        object.__setattr__(tables, "_numpy_views", cached)
    return cached


def energy_cpu(tables, positions: torch.Tensor) -> torch.Tensor:
    out = torch.empty(positions.shape[0], 5, dtype=torch.float64)
    _compiled.load().energy_cpu(
        _energy_numpy_views(tables),
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
        _energy_numpy_views(tables),
        positions.contiguous().numpy(),
        new_positions.contiguous().numpy(),
        moved.contiguous().numpy(),
        out.numpy(),
        tables.cutoff,
        tables.krf,
        tables.crf,
    )
    return out


def _energy_pointers(tables) -> tuple[dict, dict]:
    tensors = tables.tensors()
    ptrs = {name: t.data_ptr() for name, t in tensors.items()}
    sizes = {name: int(tensors[key].shape[0]) for name, key in _ENERGY_SIZES.items()}
    sizes["n_atoms"] = tables.n_atoms
    return ptrs, sizes


def energy_cuda(tables, positions: torch.Tensor) -> torch.Tensor:
    positions = positions.contiguous()
    module = _compiled.load()
    ptrs, sizes = _energy_pointers(tables)
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
    ptrs, sizes = _energy_pointers(tables)
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
