"""Shared benchmark setup.

Sizes: ``PYSLICE_BENCH=full`` (default) or ``smoke`` (tiny sizes; the test suite runs every
benchmark that way with --benchmark-disable so none of them rots). The JSON that
``--benchmark-json`` writes carries the device, torch/triton versions and pyslice's build.
"""

from __future__ import annotations

import math

import pytest
import torch
from bench_common import DEVICE, device_name

from pyslice import VonMisesMixture


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    from pyslice import _compiled

    machine_info["pyslice_device"] = device_name()
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - informational only
        machine_info["triton"] = None
    machine_info["pyslice_build"] = _compiled.build_info()


@pytest.fixture(scope="session")
def mixture_k8():
    """A K=8 mixture: (pyslice mixture on DEVICE, torch.distributions twin, numpy params)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, generator=gen)
    loc = (torch.rand(8, generator=gen) * 2 - 1) * math.pi
    kappa = torch.rand(8, generator=gen) * 30 + 0.5
    ours = VonMisesMixture(logits, loc, kappa).to(DEVICE)
    baseline = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits.to(DEVICE)),
        torch.distributions.VonMises(loc.to(DEVICE), kappa.to(DEVICE)),
    )
    params = tuple(t.double().numpy() for t in (torch.softmax(logits.double(), 0), loc, kappa))
    return ours, baseline, params
