"""Helpers shared by the benchmark files (sizes, device, correctness checks)."""

from __future__ import annotations

import os

import numpy as np
import torch

# Size presets: full (default; sized for a CPU machine or any CUDA GPU), smoke (tiny: the test
# suite runs every benchmark so with --benchmark-disable) and gpu (sizes that fill a data-centre
# GPU; benchmarks/gpu_check.py runs them). A benchmark that names no GPU size uses its full size.
PRESETS = ("full", "smoke", "gpu")
PRESET = os.environ.get("PYSLICE_BENCH", "full")
if PRESET not in PRESETS:
    raise ValueError(f"PYSLICE_BENCH must be one of {PRESETS}, got {PRESET!r}")
SMOKE = PRESET == "smoke"
GPU = PRESET == "gpu"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def size(full: int, smoke: int, gpu: int | None = None) -> int:
    """The size for the preset in PYSLICE_BENCH (gpu falls back to ``full`` when not given)."""
    if SMOKE:
        return smoke
    if GPU and gpu is not None:
        return gpu
    return full


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def device_name() -> str:
    if DEVICE == "cuda":
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def trig_moments(draws: np.ndarray) -> np.ndarray:
    return np.array([np.cos(draws).mean(), np.sin(draws).mean()])


def expected_trig_moments(params) -> np.ndarray:
    from scipy import special

    weights, loc, kappa = params
    resultant = weights * special.i1e(kappa) / special.i0e(kappa)
    return np.array([(resultant * np.cos(loc)).sum(), (resultant * np.sin(loc)).sum()])
