"""Helpers shared by the benchmark files (sizes, device, correctness checks)."""

from __future__ import annotations

import os

import numpy as np
import torch

SMOKE = os.environ.get("PYSLICE_BENCH", "full") == "smoke"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def size(full: int, smoke: int) -> int:
    return smoke if SMOKE else full


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
