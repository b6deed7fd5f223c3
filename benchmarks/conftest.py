"""Shared benchmark setup.

Sizes: ``PYSLICE_BENCH=full`` (default), ``smoke`` (tiny sizes; the test suite runs every
benchmark that way with --benchmark-disable so none of them rots) or ``gpu`` (sizes that fill a
data-centre GPU, run by benchmarks/gpu_check.py; without a CUDA GPU every benchmark is collected
but skipped). The JSON that ``--benchmark-json`` writes carries the device, torch/triton versions,
the preset and pyslice's build.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bench_common import DEVICE, GPU, PRESET, device_name

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
    machine_info["pyslice_bench_preset"] = PRESET


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # GPU sizes on a CPU would run for hours: collect (gpu_check.py --dry-run checks that) but skip.
    if GPU and DEVICE != "cuda":
        skip = pytest.mark.skip(reason="PYSLICE_BENCH=gpu needs a CUDA GPU")
        here = Path(__file__).resolve().parent
        for item in items:
            if item.path.resolve().is_relative_to(here):  # only benchmarks, in a mixed session
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_generate_json(config, benchmarks, include_data, machine_info, commit_info):
    # A run stopped by SIGINT (gpu_check.py stops a step so at its time limit) leaves the benchmark
    # it cut short without rounds, on which pytest-benchmark's JSON fails: drop that one, so that
    # --benchmark-json still holds every finished benchmark.
    benchmarks[:] = [bench for bench in benchmarks if bench]  # falsy: no round timed
    yield


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
