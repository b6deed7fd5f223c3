"""Shared test setup.

Triton kernels run on CPU tensors under TRITON_INTERPRET=1. It must be in the environment before
Triton is imported, so it is set here (before any test module imports pyslice.kernels) on machines
without a GPU; on a GPU machine the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from pyslice import _compiled, backends  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
# The shared data: $PYSLICE_DATA, else ../shared/data beside the checkout (not the cwd).
if "PYSLICE_DATA" not in os.environ:
    _beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    if _beside.is_dir():
        os.environ["PYSLICE_DATA"] = str(_beside)


def _triton_ok() -> bool:
    return backends._triton_import_error() is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "triton" in item.keywords and not _triton_ok():
            item.add_marker(pytest.mark.skip(reason=backends._triton_import_error() or ""))


def sampling_backends() -> list[tuple[str, str]]:
    """(backend, device) pairs that can sample here: every fast path and the reference."""
    pairs = [("reference", "cpu")]
    if _compiled.is_available():
        pairs.append(("cpu", "cpu"))
    if _triton_ok():
        pairs.append(("triton", "cuda" if HAS_CUDA else "cpu"))
    if HAS_CUDA:
        pairs.append(("reference", "cuda"))
        if _compiled.cuda_compiled():
            pairs.append(("cuda", "cuda"))
    return pairs


def backend_params(include_reference: bool = True) -> list:
    params = []
    for backend, device in sampling_backends():
        if backend == "reference" and not include_reference:
            continue
        marks = []
        if backend == "triton":
            marks.append(pytest.mark.triton)
        if device == "cuda":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param((backend, device), id=f"{backend}-{device}", marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``fast_backend``: every compiled/Triton sampler usable here; ``any_backend``: those plus the
    reference; each a (backend, device) pair."""
    if "fast_backend" in metafunc.fixturenames:
        metafunc.parametrize("fast_backend", backend_params(include_reference=False))
    if "any_backend" in metafunc.fixturenames:
        metafunc.parametrize("any_backend", backend_params())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip (with the reason) where it is absent."""
    from pyslice._data import data_dir as find

    path = find()
    if path is None:
        pytest.skip("shared data not found: set PYSLICE_DATA to the folder with structures/")
    return path
