"""Dispatch: automatic choice, forcing by argument and environment, loud failures; the test
matrix that tests/conftest.py generates from the registry; attention's implementations."""

from __future__ import annotations

from pathlib import Path

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


# ---- the test matrix (tests/conftest.py): generated from the registry, used by every backend test

TESTS = Path(__file__).resolve().parent


def test_matrix_has_every_implementation_dtype_and_mark(backend_matrix) -> None:
    for op in backends.operations():
        impls = backends.implementations(op)
        params = backend_matrix(op)
        cases = [p.values[0] for p in params]
        assert {(c.backend, c.dtype) for c in cases} == {
            (name, dtype) for name, impl in impls.items() for dtype in impl.dtypes
        }
        for param, case in zip(params, cases):
            marks = {mark.name for mark in param.marks}
            assert ("gpu" in marks) == (case.device == "cuda"), param.id
            assert ("triton" in marks) == (case.backend == "triton"), param.id
            if case.backend in ("cuda",):
                assert case.device == "cuda"
            if case.backend == "cpu":
                assert case.device == "cpu"
        fast = [p.values[0] for p in backend_matrix(op, reference=False)]
        assert fast == [c for c in cases if c.backend != "reference"]
        pairs = [p.values[0] for p in backend_matrix(op, with_dtype=False)]
        assert len(pairs) == len(set(pairs)) == len({(c.backend, c.device) for c in cases})


def test_matrix_skips_a_backend_that_cannot_run_here_with_its_reason(
    backend_matrix, monkeypatch
) -> None:
    monkeypatch.setattr(_compiled, "is_available", lambda: False)
    monkeypatch.setattr(_compiled, "unavailable_reason", lambda: "no _C in this test")
    for param in backend_matrix("energy"):
        skips = [m for m in param.marks if m.name == "skip"]
        if param.values[0].backend == "cpu":
            assert skips and "no _C in this test" in skips[0].kwargs["reason"]
        if param.values[0].backend == "reference" and param.values[0].device == "cpu":
            assert not skips


@pytest.mark.parametrize("op", backends.operations())
def test_every_op_is_compared_with_its_reference_through_the_matrix(op: str) -> None:
    """Some test takes fast_<op>_case or fast_<op>_backend, so every implementation registered
    for the op (a new one included) is compared with the reference without editing a test."""
    fixtures = (f"fast_{op}_case", f"fast_{op}_backend")
    users = [
        path.name
        for path in TESTS.rglob("test_*.py")
        if any(name in path.read_text(encoding="utf-8") for name in fixtures)
    ]
    assert users, f"no test compares op {op} through {fixtures}"


def test_usable_backends_agree_with_select(usable_backends) -> None:
    for op in backends.operations():
        names = usable_backends(op, "cpu")
        assert "reference" in names
        chosen = backends.select(op, "cpu", backends.implementations(op)["reference"].dtypes[0])
        assert chosen.backend in names


# ---- attention: every implementation against the explicit softmax, small and strided


ATTENTION_TOL = {
    torch.float32: 2e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 2e-2,
    torch.float64: 1e-12,
}


@pytest.mark.parametrize(("batch", "seq"), [(0, 5), (1, 1), (2, 7)], ids=["empty", "single", "odd"])
def test_attention_matches_the_explicit_softmax(fast_attention_case, batch: int, seq: int) -> None:
    from pyslice.attention import attention, attention_math

    backend, device, dtype = fast_attention_case
    gen = torch.Generator().manual_seed(seq)
    q, k, v = (torch.randn(batch, 2, seq, 32, generator=gen).to(device, dtype) for _ in range(3))
    mask = (
        torch.arange(seq, device=device)[None, :]
        < torch.tensor([seq, 1][:batch], device=device)[:, None]
    )
    got = attention(q, k, v, mask if batch else None, backend=backend)
    expected = attention_math(q, k, v, mask if batch else None)
    assert got.shape == q.shape and got.dtype == dtype and got.device.type == device
    torch.testing.assert_close(got.float(), expected.float(), atol=ATTENTION_TOL[dtype], rtol=0)


def test_attention_strided_inputs(fast_attention_case) -> None:
    from pyslice.attention import attention, attention_math

    backend, device, dtype = fast_attention_case
    gen = torch.Generator().manual_seed(11)
    wide = torch.randn(3, 2, 9, 64, generator=gen).to(device, dtype)
    q, k, v = wide[..., ::2], wide[..., 1::2], wide.flip(2)[..., :32]  # non-contiguous views
    assert not q.is_contiguous() and not v.is_contiguous()
    got = attention(q, k, v, backend=backend)
    torch.testing.assert_close(
        got.float(), attention_math(q, k, v).float(), atol=ATTENTION_TOL[dtype], rtol=0
    )
