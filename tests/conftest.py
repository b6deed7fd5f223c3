"""Shared test setup.

Triton kernels run on CPU tensors under TRITON_INTERPRET=1. It must be in the environment before
Triton is imported, so it is set here (before any test module imports pyslice.kernels) on machines
without a GPU; on a GPU machine the same tests run the compiled kernels on CUDA tensors.
OpenMP threads wait passively, as under the pyslice command (see pyslice/__init__.py): set before
torch loads its OpenMP runtime.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from pyslice import backends  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
# The shared data: $PYSLICE_DATA, else ../shared/data beside the checkout (not the cwd).
if "PYSLICE_DATA" not in os.environ:
    _beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    if _beside.is_dir():
        os.environ["PYSLICE_DATA"] = str(_beside)


def _triton_ok() -> bool:
    return backends.triton_import_error() is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "triton" in item.keywords and not _triton_ok():
            item.add_marker(pytest.mark.skip(reason=backends.triton_import_error() or ""))


class Case(NamedTuple):
    """One cell of an op's test matrix: an implementation, a device and a dtype."""

    backend: str
    device: str
    dtype: torch.dtype


_SHORT = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64"}


def _devices(backend: str) -> tuple[str, ...]:
    """Where an implementation runs in tests: the reference on both devices, the C++ path on the
    CPU, CUDA on CUDA, Triton on CUDA (on the CPU through its interpreter where there is no GPU)."""
    return {
        "reference": ("cpu", "cuda"),
        "cpu": ("cpu",),
        "cuda": ("cuda",),
        "triton": ("cuda",) if HAS_CUDA else ("cpu",),
    }[backend]


def backend_matrix(op: str, *, reference: bool = True, with_dtype: bool = True) -> list:
    """pytest params for every (implementation, device, dtype) of ``op``, from
    ``backends.implementations(op)``: each implementation's dtypes on the devices it runs on here.
    Triton cases are marked ``triton``, CUDA ones ``gpu`` (both skip where they cannot run); a
    case that could run on this machine but cannot (say _C failed to build) is skipped with the
    reason. Values are :class:`Case` with ``with_dtype``, else (backend, device) pairs, one per
    implementation and device."""
    params = []
    for name, impl in backends.implementations(op).items():
        if name == "reference" and not reference:
            continue
        for device in _devices(name):
            marks = []
            if name == "triton":
                marks.append(pytest.mark.triton)
            if device == "cuda":
                marks.append(pytest.mark.gpu)
            runnable_here = (device == "cpu" or HAS_CUDA) and (name != "triton" or _triton_ok())
            for dtype in impl.dtypes if with_dtype else impl.dtypes[:1]:
                reason = impl.why_not(torch.device(device), dtype, forced=True)
                skip = [pytest.mark.skip(reason=reason)] if runnable_here and reason else []
                if with_dtype:
                    value, case_id = Case(name, device, dtype), f"{name}-{device}-{_SHORT[dtype]}"
                else:
                    value, case_id = (name, device), f"{name}-{device}"
                params.append(pytest.param(value, id=case_id, marks=marks + skip))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """For every op of pyslice.backends, fixtures that a test asks for by name:

    ``<op>_case`` / ``fast_<op>_case``: a :class:`Case` (backend, device, dtype) for every
    implementation (reference included / fast paths only) and each of its dtypes;
    ``<op>_backend`` / ``fast_<op>_backend``: a (backend, device) pair per implementation.
    E.g. ``fast_energy_case``, ``metropolis_step_backend``.
    """
    for op in backends.operations():
        for prefix, reference in (("", True), ("fast_", False)):
            for suffix, with_dtype in (("_case", True), ("_backend", False)):
                name = f"{prefix}{op}{suffix}"
                if name in metafunc.fixturenames:
                    params = backend_matrix(op, reference=reference, with_dtype=with_dtype)
                    metafunc.parametrize(name, params)


@pytest.fixture(scope="session", name="backend_matrix")
def backend_matrix_fixture() -> Callable[..., list]:
    """The :func:`backend_matrix` function itself (tests of the matrix)."""
    return backend_matrix


@pytest.fixture(scope="session")
def usable_backends() -> Callable[..., list[str]]:
    """``usable_backends(op, device="cpu", dtype=None)``: the backends of ``op`` that can run here
    on ``device`` (for a test that loops over them within one case)."""

    def usable(op: str, device: str = "cpu", dtype: torch.dtype | None = None) -> list[str]:
        names = []
        for name, impl in backends.implementations(op).items():
            reason = impl.why_not(torch.device(device), dtype or impl.dtypes[0], forced=True)
            if reason is None and device in _devices(name):
                names.append(name)
        return names

    return usable


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip (with the reason) where it is absent."""
    from pyslice._data import data_dir as find

    path = find()
    if path is None:
        pytest.skip("shared data not found: set PYSLICE_DATA to the folder with structures/")
    return path
