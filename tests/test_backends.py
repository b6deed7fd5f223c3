"""Dispatch: automatic choice, forcing by argument and environment, loud failures."""

from __future__ import annotations

import pytest
import torch

from pyslice import _compiled, backends
from pyslice.backends import BackendUnavailable

OP = "vonmises_sample"


def test_automatic_choice_on_cpu_prefers_the_compiled_path() -> None:
    impl = backends.select(OP, "cpu", torch.float32)
    assert impl.backend == ("cpu" if _compiled.is_available() else "reference")


def test_triton_interpreter_is_never_chosen_automatically_on_cpu(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backends.select(OP, "cpu", torch.float32).backend != "triton"


def test_reference_can_always_be_forced() -> None:
    assert backends.select(OP, "cpu", torch.float32, backend="reference").backend == "reference"


def test_environment_variable_forces_a_backend(monkeypatch) -> None:
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert backends.select(OP, "cpu", torch.float32).backend == "reference"
    monkeypatch.setenv(backends.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=backends.ENV_VAR):
        backends.select(OP, "cpu", torch.float32)
    # The argument wins over the environment.
    assert backends.select(OP, "cpu", torch.float32, backend="reference").backend == "reference"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_forcing_cuda_without_a_gpu_fails_loudly_with_the_reason() -> None:
    with pytest.raises(BackendUnavailable, match="cuda"):
        backends.select(OP, "cpu", torch.float32, backend="cuda")


def test_forcing_an_unsupported_dtype_names_it() -> None:
    with pytest.raises(BackendUnavailable, match="float16"):
        backends.select(OP, "cpu", torch.float16, backend="reference")


def test_unknown_backend_and_op() -> None:
    with pytest.raises(ValueError, match="backend"):
        backends.select(OP, "cpu", torch.float32, backend="opencl")
    with pytest.raises(ValueError, match="op"):
        backends.select("no_such_op", "cpu", torch.float32)


def test_report_lists_every_backend_with_a_status() -> None:
    report = backends.report()
    assert set(report[OP]) == set(backends.BACKENDS)
    for per_device in report[OP].values():
        assert all(isinstance(status, str) and status for status in per_device.values())
    assert report[OP]["reference"]["cpu"] == "usable"
    if not torch.cuda.is_available():
        assert all("no CUDA device" in report[OP][name]["cuda"] for name in backends.BACKENDS)
