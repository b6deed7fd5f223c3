"""Thin adapters from torch tensors to the compiled module: numpy views for CPU, data pointers plus
the current stream for CUDA. Arguments were validated by the caller; _C checks sizes again."""

from __future__ import annotations

import torch

from pyslice import _compiled


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
