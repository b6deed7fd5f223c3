"""The compiled module pyslice._C: build information, its one binding convention (the tensor
view and the checks of csrc/bindings.h, on every op), determinism and Philox.

The numbers of every op are compared with the torch references in the op's own tests (through
the backend matrix of tests/conftest.py); here the functions are called directly with views, as
pyslice._native calls them, and with views that are wrong in every way the bindings check.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyslice import _compiled, _native

# Without PYSLICE_DISABLE_COMPILED, a missing _C is a failure here (with the reason), not a skip.
pytestmark = pytest.mark.skipif(
    os.environ.get("PYSLICE_DISABLE_COMPILED", "").strip() not in ("", "0"),
    reason="PYSLICE_DISABLE_COMPILED is set",
)

BUILD_INFO_KEYS = {"version", "compiler", "cxx_standard", "openmp", "openmp_version", "cuda",
                   "cuda_version", "cuda_architectures", "build_type",
                   "pybind11_version"}  # fmt: skip
view = _native.view


@pytest.fixture(scope="module")
def C():  # noqa: N802 - the module's own name
    return _compiled.load()


def best_fisher_s(kappa: np.ndarray) -> np.ndarray:
    """Best-Fisher envelope parameter s (as numpy's vonmises sampler computes it); the kernel does
    not read it below kappa = 1e-8 (uniform there), so tiny kappas are clipped."""
    kappa = np.maximum(kappa, 1e-3)
    tau = 1.0 + np.sqrt(1.0 + 4.0 * kappa**2)
    rho = (tau - np.sqrt(2.0 * tau)) / (2.0 * kappa)
    return (1.0 + rho**2) / (2.0 * rho)


def make_table(loc, kappa, weights) -> torch.Tensor:
    """(6, rows, K) float32 table: cdf, loc, kappa, s - 1, s + 1, sigma."""
    loc, kappa, weights = (np.asarray(a, dtype=np.float64) for a in (loc, kappa, weights))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    s = best_fisher_s(kappa)
    sigma = 1.0 / np.sqrt(np.maximum(kappa, 1e-8))
    table = np.stack([np.cumsum(weights, axis=-1), loc, kappa, s - 1.0, s + 1.0, sigma])
    return torch.tensor(table, dtype=torch.float32)


@pytest.fixture
def table() -> torch.Tensor:
    # 3 rows, 2 components: moderate, tiny (uniform) and huge (wrapped normal) concentrations.
    loc = [[0.5, -2.0], [3.0, 1.0], [-1.0, 0.0]]
    kappa = [[4.0, 0.3], [1e-9, 50.0], [2e4, 2.0]]
    weights = [[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]]
    return make_table(loc, kappa, weights)


def sample(C, table: torch.Tensor, n: int, seed=1, offset=0, pi_periodic=False) -> torch.Tensor:
    out = torch.full((n,), math.nan, dtype=torch.float32)
    C.sample_mixture_cpu(view(table), view(out), seed, offset, 0, pi_periodic)
    return out


def fake_view(C, shape, dtype="float32", device="cpu", index=None, data=4096, strides=None):
    """A view of memory that is never read (every check fails before, or there is no data)."""
    if strides is None:
        strides = tuple(int(np.prod(shape[d + 1 :])) for d in range(len(shape)))
    return C.Tensor(data, tuple(shape), strides, dtype, device, index)


# --- loading and build information --------------------------------------------------------------


def test_loads_and_reports_build(C) -> None:
    info = C.build_info()
    assert BUILD_INFO_KEYS.issubset(info)
    assert isinstance(info["openmp"], bool) and isinstance(info["cuda"], bool)
    assert info["cuda"] == C.cuda_compiled() == _compiled.cuda_compiled()
    assert isinstance(info["cuda_architectures"], list)
    if info["cuda"]:
        assert info["cuda_version"] and info["cuda_architectures"]
    else:
        assert info["cuda_version"] is None and info["cuda_architectures"] == []
    assert info["cxx_standard"] == "C++17"
    assert C.num_threads() >= 1
    assert C.cuda_device_count() >= 0
    wrapped = _compiled.build_info()
    assert wrapped["available"] is True and BUILD_INFO_KEYS.issubset(wrapped)
    assert _compiled.unavailable_reason() is None


def test_version_matches_the_package(C) -> None:
    import pyslice

    assert C.build_info()["version"] == C.__version__ == pyslice.__version__


def test_installed_package_has_compiled_module_kernels_and_stub() -> None:
    # CI runs the `pytest` script on the installed package: all must resolve.
    assert importlib.util.find_spec("pyslice._C") is not None
    assert importlib.util.find_spec("pyslice.kernels") is not None
    stub = os.path.join(os.path.dirname(importlib.util.find_spec("pyslice").origin), "_C.pyi")
    assert os.path.isfile(stub)


def _signature_names(doc: str) -> list[str]:
    """The argument names of a docstring's first line, "name(a: int, b: Tensor) -> None"."""
    first = doc.splitlines()[0]
    inside = first[first.index("(") + 1 : first.index(")")]
    names, depth, start = [], 0, 0
    for k, char in enumerate(inside + ","):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            if inside[start:k].strip():
                names.append(inside[start:k].split(":")[0].strip())
            start = k + 1
    return names


def test_stub_declares_what_the_module_exports(C) -> None:
    """pyslice/_C.pyi declares exactly the module's public names, with the argument names of
    each function's signature line."""
    import ast

    stub = os.path.join(os.path.dirname(importlib.util.find_spec("pyslice").origin), "_C.pyi")
    tree = ast.parse(Path(stub).read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    constants = {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    exported = {name for name in dir(C) if not name.startswith("_")} | {"__version__"}
    assert set(functions) | set(classes) | constants == exported
    for name, node in functions.items():
        assert [a.arg for a in node.args.args] == _signature_names(getattr(C, name).__doc__), name
    init = next(n for n in classes["Tensor"].body if getattr(n, "name", "") == "__init__")
    assert [a.arg for a in init.args.args[1:]] == _signature_names(C.Tensor.__doc__)


def test_cpu_and_cuda_functions_take_the_same_arguments(C) -> None:
    ops = ["sample_mixture", "metropolis_step", "build_sidechains", "energy", "energy_delta"]
    for op in ops:
        cpu = C.__dict__[f"{op}_cpu"].__doc__.splitlines()[0]
        cuda = C.__dict__[f"{op}_cuda"].__doc__.splitlines()[0]
        cpu_arguments = cpu[cpu.index("(") + 1 : cpu.index(")")]
        assert cuda == f"{op}_cuda({cpu_arguments}, stream: int) -> None"


def test_load_failure_is_kept_and_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_import(name: str, package: str | None = None):
        raise ImportError("libsomething.so: cannot open shared object file")

    monkeypatch.setattr(_compiled, "_attempted", False)
    monkeypatch.setattr(_compiled, "_module", None)
    monkeypatch.setattr(_compiled, "_reason", None)
    monkeypatch.setattr(_compiled, "_cause", None)
    monkeypatch.setattr(importlib, "import_module", broken_import)
    assert not _compiled.is_available()
    assert not _compiled.cuda_compiled()
    reason = _compiled.unavailable_reason()
    assert reason is not None and "libsomething.so" in reason
    assert "pip install --no-build-isolation -e ." in reason
    info = _compiled.build_info()
    assert info["available"] is False and info["reason"] == reason
    for _ in range(2):  # raised again on every request, with the original error as the cause
        with pytest.raises(_compiled.CompiledModuleUnavailable, match="libsomething") as caught:
            _compiled.load()
        assert isinstance(caught.value, RuntimeError)
        assert isinstance(caught.value.__cause__, ImportError)


def test_import_pyslice_without_compiled_module(tmp_path) -> None:
    code = (
        "import pyslice\n"
        "from pyslice import _compiled\n"
        "assert not _compiled.is_available()\n"
        "assert 'PYSLICE_DISABLE_COMPILED' in _compiled.unavailable_reason()\n"
        "try:\n"
        "    _compiled.load()\n"
        "except _compiled.CompiledModuleUnavailable:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('load() did not raise')\n"
        # Sampling falls back to the reference; forcing the C++ path fails with the reason.
        "from pyslice import VonMises, backends\n"
        "assert backends.select('vonmises_sample', 'cpu', __import__('torch').float32).backend"
        " == 'reference'\n"
        "assert VonMises(0.0, 1.0).sample(5, seed=0).shape == (5,)\n"
        "try:\n"
        "    VonMises(0.0, 1.0).sample(5, seed=0, backend='cpu')\n"
        "except backends.BackendUnavailable as error:\n"
        "    assert 'PYSLICE_DISABLE_COMPILED' in str(error), error\n"
        "else:\n"
        "    raise SystemExit('forcing cpu did not raise')\n"
    )
    env = dict(os.environ, PYSLICE_DISABLE_COMPILED="1")
    # cwd outside the checkout, so that the installed package is imported, not the source folder.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --- the tensor view ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensor", "dtype"),
    [
        (torch.zeros(3, 4), "float32"),
        (torch.zeros(2, 3, 4, dtype=torch.float64).transpose(0, 2), "float64"),
        (torch.zeros(0, 5, dtype=torch.int64), "int64"),
        (torch.zeros(7, dtype=torch.bool)[::2], "bool"),
        (torch.zeros((), dtype=torch.int32), "int32"),
        (torch.zeros(1, 1, 1, 9, dtype=torch.uint8), "uint8"),
    ],
)
def test_view_describes_the_tensor(tensor: torch.Tensor, dtype: str) -> None:
    v = view(tensor)
    assert v.data == tensor.data_ptr()
    assert v.shape == tuple(tensor.shape) and v.strides == tensor.stride()
    assert v.dtype == dtype and v.device == "cpu" and v.device_index is None
    assert repr(v) == f"pyslice._C.Tensor(shape={tuple(tensor.shape)}, dtype={dtype}, device=cpu)"


def test_view_of_a_cuda_tensor_description(C) -> None:
    v = C.Tensor(1 << 20, (2, 3), (3, 1), "float64", "cuda", 1)
    assert v.device == "cuda" and v.device_index == 1
    assert repr(v) == "pyslice._C.Tensor(shape=(2, 3), dtype=float64, device=cuda:1)"


@pytest.mark.parametrize("dtype", [torch.float16, torch.complex64, torch.int8])
def test_view_rejects_dtypes_without_kernels(dtype) -> None:
    with pytest.raises(TypeError, match=f"dtype.*{dtype}"):
        view(torch.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match="torch.Tensor"):
        view(np.zeros(3))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((-1, (2,), (1,), "float32", "cpu"), ValueError, r"data must be an int in \[0, 2\*\*64\)"),
        ((0, (2,), (1,), "float16", "cpu"), ValueError, "dtype must be one of"),
        ((0, (2,), (1,), 32, "cpu"), TypeError, "dtype must be a str"),
        ((0, (1, 1, 1, 1, 1), (1,) * 5, "float32", "cpu"), ValueError, "at most 4 dimensions"),
        ((0, (2, 3), (1,), "float32", "cpu"), ValueError, "strides must have one entry"),
        ((0, (-2,), (1,), "float32", "cpu"), ValueError, "shape must be an int >= 0"),
        ((0, (2,), (-1,), "float32", "cpu"), ValueError, "strides must be an int >= 0"),
        ((0, [2.0], (1,), "float32", "cpu"), TypeError, "shape must be an int"),
        ((0, 2, (1,), "float32", "cpu"), TypeError, "shape must be a tuple"),
        ((0, (2,), (1,), "float32", "tpu"), ValueError, "device must be 'cpu' or 'cuda'"),
        ((0, (2,), (1,), "float32", "cuda", -1), ValueError, "device_index must be an int >= 0"),
        ((0, (2,), (1,), "float32", "cuda"), TypeError, "device_index must be an int"),
        ((0, (2,), (1,), "float32", "cpu", 3), ValueError, "device_index must be None"),
        ((0, (2**40, 2**40), (2**40, 1), "uint8", "cpu"), ValueError, "more memory than"),
    ],
)
def test_view_constructor_checks_its_description(C, arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        C.Tensor(*arguments)


# --- sample_mixture_cpu: results -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 4099])
def test_fills_every_element_in_range(C, table, n: int) -> None:
    out = sample(C, table, n)
    assert out.shape == (n,)
    assert torch.all(torch.isfinite(out))
    assert torch.all((out >= -math.pi) & (out < math.pi))


@pytest.mark.parametrize("pi_periodic", [False, True])
def test_same_seed_is_bit_identical(C, table, pi_periodic: bool) -> None:
    a = sample(C, table, 5000, seed=123, offset=7, pi_periodic=pi_periodic)
    b = sample(C, table, 5000, seed=123, offset=7, pi_periodic=pi_periodic)
    assert torch.equal(a, b)


def test_element_depends_only_on_its_index(C, table) -> None:
    # the parallel path (large n) and the serial path (small n) agree element for element
    big = sample(C, table, 10_000, seed=99)
    small = sample(C, table, 33, seed=99)
    assert torch.equal(big[:33], small)


def test_offset_and_seed_change_the_stream(C, table) -> None:
    base = sample(C, table, 2000, seed=5, offset=0)
    other_offset = sample(C, table, 2000, seed=5, offset=1)
    other_seed = sample(C, table, 2000, seed=6, offset=0)
    high_seed = sample(C, table, 2000, seed=5 + 2**32, offset=0)  # the key's high word counts
    for other in (other_offset, other_seed, high_seed):
        assert float((base == other).float().mean()) < 0.05


def test_extreme_seed_and_offset(C, table) -> None:
    out = sample(C, table, 100, seed=2**64 - 1, offset=2**32 - 1)
    assert torch.all(torch.isfinite(out))
    out = sample(C, table, 100, seed=np.uint64(2**64 - 1), offset=np.int64(3))
    assert torch.all(torch.isfinite(out))


def test_concentrated_component_centres_on_loc(C) -> None:
    table = make_table([[1.0]], [[200.0]], [[1.0]])
    out = sample(C, table, 4000, seed=3).double()
    mean = math.atan2(float(torch.sin(out).mean()), float(torch.cos(out).mean()))
    assert abs(mean - 1.0) < 0.01
    half = sample(C, table, 4000, seed=3, pi_periodic=True).double()
    # pi-periodic: x/2 + {0, pi}, so 2x wraps to loc
    mean2 = math.atan2(float(torch.sin(2 * half).mean()), float(torch.cos(2 * half).mean()))
    assert abs(mean2 - 1.0) < 0.01


def test_accepts_numpy_bool(C, table) -> None:
    a = sample(C, table, 50, pi_periodic=np.bool_(True))
    b = sample(C, table, 50, pi_periodic=True)
    assert torch.equal(a, b)


# --- the checks of a view (csrc/bindings.h: Signature), through sample_mixture_cpu --------------


def call(C, table, out=None, seed=0, offset=0, pi_periodic=False):
    table = view(table) if isinstance(table, torch.Tensor) else table
    out = torch.zeros(10, dtype=torch.float32) if out is None else out
    C.sample_mixture_cpu(table, view(out) if isinstance(out, torch.Tensor) else out, seed,
                         offset, 0, pi_periodic)  # fmt: skip


def test_rejects_float64_table(C, table) -> None:
    with pytest.raises(TypeError, match="table must have dtype float32, got float64"):
        call(C, table.double())


def test_rejects_what_is_not_a_view(C, table) -> None:
    with pytest.raises(TypeError, match="table must be a pyslice._C.Tensor.*got numpy.ndarray"):
        call(C, table.numpy())
    with pytest.raises(TypeError, match="table must be a pyslice._C.Tensor.*got torch.Tensor"):
        C.sample_mixture_cpu(table, view(torch.zeros(3)), 0, 0, 0, False)


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 2, 1), (18,)])
def test_rejects_wrong_ndim(C, shape) -> None:
    with pytest.raises(ValueError, match=r"table must have shape \(6, R, K\), got"):
        call(C, torch.zeros(shape))


@pytest.mark.parametrize("first", [5, 7, 1])
def test_rejects_first_dim_not_6(C, first: int) -> None:
    with pytest.raises(ValueError, match=rf"table must have shape \(6, R, K\), got \({first}, 3"):
        call(C, torch.zeros(first, 3, 2))


@pytest.mark.parametrize("shape", [(6, 0, 2), (6, 3, 0)])
def test_rejects_empty_rows_or_components(C, shape) -> None:
    with pytest.raises(ValueError, match="table.*rows >= 1"):
        call(C, torch.zeros(shape))


def test_rejects_non_contiguous_table(C, table) -> None:
    wide = torch.zeros(6, 3, 4)
    wide[:, :, ::2] = table
    strided = wide[:, :, ::2]
    assert not strided.is_contiguous()
    with pytest.raises(ValueError, match=r"table must be C-contiguous.*strides \(12, 4, 2\)"):
        call(C, strided)
    fortran = table.transpose(0, 2).contiguous().transpose(0, 2)
    with pytest.raises(ValueError, match="table must be C-contiguous"):
        call(C, fortran)


def test_rejects_unaligned_and_null_views(C, table) -> None:
    unaligned = C.Tensor(table.data_ptr() + 1, tuple(table.shape), table.stride(), "float32", "cpu")
    with pytest.raises(ValueError, match="table must be aligned to 4 bytes"):
        call(C, unaligned)
    null = C.Tensor(0, tuple(table.shape), table.stride(), "float32", "cpu")
    with pytest.raises(ValueError, match="table must not point to address 0"):
        call(C, null)


def test_rejects_bad_out(C, table) -> None:
    with pytest.raises(TypeError, match="out must have dtype float32"):
        call(C, table, out=torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"out must have shape \(\*,\), got \(2, 5\)"):
        call(C, table, out=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        call(C, table, out=torch.zeros(20)[::2])
    with pytest.raises(TypeError, match="out must be a pyslice._C.Tensor"):
        call(C, table, out=[0.0] * 10)


def test_rejects_out_sharing_memory_with_table(C, table) -> None:
    with pytest.raises(ValueError, match="out must not share memory with table"):
        call(C, table, out=table.reshape(-1)[:10])


def test_empty_out(C, table) -> None:
    out = torch.zeros(0)
    assert C.sample_mixture_cpu(view(table), view(out), 0, 0, 0, False) is None


def test_rejects_cuda_views_on_the_cpu(C, table) -> None:
    with pytest.raises(
        ValueError, match=r"out must be on the cpu \(sample_mixture_cpu\), got cuda:0"
    ):
        call(C, table, out=fake_view(C, (10,), device="cuda", index=0))


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70, -(2**64)])
def test_rejects_seed_out_of_range(C, table, seed: int) -> None:
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        call(C, table, seed=seed)


@pytest.mark.parametrize("offset", [-1, 2**32, 2**40])
def test_rejects_offset_out_of_range(C, table, offset: int) -> None:
    with pytest.raises(ValueError, match=r"offset must be an int in \[0, 2\*\*32\)"):
        call(C, table, offset=offset)


@pytest.mark.parametrize("name", ["seed", "offset"])
@pytest.mark.parametrize("value", [1.0, "1", None, True])
def test_rejects_non_int_seed_and_offset(C, table, name: str, value) -> None:
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        call(C, table, **{name: value})


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_rejects_non_bool_pi_periodic(C, table, value) -> None:
    with pytest.raises(TypeError, match="pi_periodic must be a bool"):
        call(C, table, pi_periodic=value)


# --- the CUDA functions: every check before any CUDA call ---------------------------------------


def cuda_views(C, n: int = 4, index: int = 0):
    """(table, out) views on CUDA device `index`, of memory that is never touched."""
    return (
        fake_view(C, (6, 1, 1), device="cuda", index=index, data=256),
        fake_view(C, (n,), device="cuda", index=index, data=0 if n == 0 else 512),
    )


def test_cuda_binding_without_cuda(C) -> None:
    if C.cuda_compiled():
        pytest.skip("pyslice._C was built with CUDA")
    with pytest.raises(RuntimeError, match="pyslice._C was built without CUDA"):
        C.sample_mixture_cuda(*cuda_views(C), 0, 0, 0, False, 0)


@pytest.fixture
def cuda_C(C):
    if not C.cuda_compiled():
        pytest.skip("pyslice._C was built without CUDA")
    return C


def test_cuda_empty_launch_does_nothing(cuda_C) -> None:
    # n == 0 returns before any CUDA call (no GPU needed)
    assert cuda_C.sample_mixture_cuda(*cuda_views(cuda_C, n=0), 0, 0, 0, False, 0) is None


@pytest.mark.parametrize(
    ("position", "value", "error", "message"),
    [
        (2, 2**64, ValueError, "seed must be an int in"),
        (3, 2**32, ValueError, "offset must be an int in"),
        (4, -1, ValueError, "base must be an int in"),
        (5, 0, TypeError, "pi_periodic must be a bool"),
        (6, -1, ValueError, r"stream must be an int in \[0, 2\*\*64\)"),
        (6, 1.5, TypeError, "stream must be an int"),
    ],
)
def test_cuda_argument_checks(cuda_C, position, value, error, message) -> None:
    # all raised before any CUDA call, so safe with or without a GPU
    arguments = [*cuda_views(cuda_C), 0, 0, 0, False, 0]
    arguments[position] = value
    with pytest.raises(error, match=message):
        cuda_C.sample_mixture_cuda(*arguments)


def test_cuda_rejects_cpu_views_and_mixed_devices(cuda_C, table) -> None:
    cuda_table, cuda_out = cuda_views(cuda_C)
    out = torch.zeros(4)
    with pytest.raises(ValueError, match=r"table must be on the cuda \(sample_mixture_cuda\)"):
        cuda_C.sample_mixture_cuda(view(table), cuda_out, 0, 0, 0, False, 0)
    with pytest.raises(ValueError, match="out must be on the cuda.*got cpu"):
        cuda_C.sample_mixture_cuda(cuda_table, view(out), 0, 0, 0, False, 0)
    other = fake_view(cuda_C, (4,), device="cuda", index=1, data=512)
    with pytest.raises(ValueError, match="out is on cuda:1, table on cuda:0"):
        cuda_C.sample_mixture_cuda(cuda_table, other, 0, 0, 0, False, 0)


def test_cuda_rejects_null_pointers(cuda_C) -> None:
    table, out = cuda_views(cuda_C)
    null_out = fake_view(cuda_C, (4,), device="cuda", index=0, data=0)
    with pytest.raises(ValueError, match="out must not point to address 0"):
        cuda_C.sample_mixture_cuda(table, null_out, 0, 0, 0, False, 0)


def test_cuda_without_device_raises(cuda_C) -> None:
    if cuda_C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present")
    # no driver or no device: the runtime's check of the pointers fails before any launch
    with pytest.raises(RuntimeError, match="CUDA|cuda"):
        cuda_C.sample_mixture_cuda(*cuda_views(cuda_C), 0, 0, 0, False, 0)


def test_cuda_rejects_host_memory_described_as_device_memory(cuda_C) -> None:
    if cuda_C.cuda_device_count() == 0:
        pytest.skip("needs a CUDA device")
    host = torch.zeros(4)
    table, _ = cuda_views(cuda_C)
    real_table = torch.zeros(6, 1, 1, device="cuda")
    lying = cuda_C.Tensor(host.data_ptr(), (4,), (1,), "float32", "cuda", 0)
    with pytest.raises(ValueError, match="device"):
        cuda_C.sample_mixture_cuda(view(real_table), lying, 0, 0, 0, False, 0)


# --- workspace_size: the one workspace rule -----------------------------------------------------


def test_workspace_size(C) -> None:
    for op in ("sample_mixture", "metropolis_step", "build_sidechains"):
        assert C.workspace_size(op, "cuda", ()) == 0 and C.workspace_size(op, "cpu", ()) == 0
    for op in ("energy", "energy_delta"):
        assert C.workspace_size(op, "cpu", (8, 100, 50)) == 0
        small = C.workspace_size(op, "cuda", (8, 100, 50))
        assert small > 0 and small % 8 == 0
        assert C.workspace_size(op, "cuda", (16, 100, 50)) == 2 * small
        assert C.workspace_size(op, "cuda", (0, 100, 50)) == 0
    # Batches beyond CUDA's grid limit run in chunks that reuse one chunk's workspace.
    assert C.workspace_size("energy", "cuda", (10**6, 100, 50)) == C.workspace_size(
        "energy", "cuda", (65535, 100, 50)
    )
    with pytest.raises(ValueError, match="op must be one of"):
        C.workspace_size("attention", "cuda", ())
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        C.workspace_size("energy", "gpu", (1, 2, 3))
    with pytest.raises(ValueError, match=r"shape must have 3 entries for energy \(batch"):
        C.workspace_size("energy", "cuda", (1, 2))
    with pytest.raises(ValueError, match="shape must have 0 entries"):
        C.workspace_size("metropolis_step", "cuda", (1,))
    with pytest.raises(ValueError, match="shape must be an int >= 0"):
        C.workspace_size("energy", "cuda", (1, -2, 3))


# --- build_sidechains: host tables are checked entry by entry -----------------------------------


def test_build_binding_checks() -> None:
    """The C++ binding re-checks what the Python wrapper guarantees, and never crashes (moved from
    tests/geometry/test_builder.py with the change of convention: views instead of arrays)."""
    C = _compiled.load()  # noqa: N806
    n_atoms, n_chi = 5, 2

    def build(**changes):
        tensors = {
            "positions": torch.zeros(n_atoms, 3),
            "chi": torch.zeros(4, n_chi),
            "chi_ref": torch.zeros(n_chi),
            "axis": torch.tensor([[0, 1], [1, 2]]),
            "move_atom": torch.tensor([2, 3, 4]),
            "move_chi": torch.tensor([0, 0, 1]),
            "level_start": torch.tensor([0, 2, 3, 3, 3]),
            "out": torch.zeros(4, n_atoms, 3),
        } | changes
        C.build_sidechains_cpu(*(v if isinstance(v, list) else view(v) for v in tensors.values()))
        return tensors["out"]

    assert build().shape == (4, n_atoms, 3)
    with pytest.raises(TypeError, match="chi must have dtype float32"):
        build(chi=torch.zeros(4, n_chi, dtype=torch.float64))
    with pytest.raises(TypeError, match="positions must have dtype float32 or float64, got int32"):
        build(positions=torch.zeros(n_atoms, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="positions must be a pyslice._C.Tensor"):
        build(positions=[[0.0] * 3] * n_atoms)
    with pytest.raises(ValueError, match=r"chi_ref must have shape \(C,\) with C = 2"):
        build(chi_ref=torch.zeros(3))
    with pytest.raises(ValueError, match=r"out must have shape \(B, N, 3\) with B = 4, N = 5"):
        build(out=torch.zeros(3, n_atoms, 3))
    with pytest.raises(ValueError, match="move_atom must hold atom indices.*got 5"):
        build(move_atom=torch.tensor([2, 3, 5]))
    with pytest.raises(ValueError, match="axis must hold atom indices"):
        build(axis=torch.tensor([[0, 1], [1, -2]]))
    with pytest.raises(ValueError, match="move_chi must hold chi indices"):
        build(move_chi=torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError, match="level_start must be non-decreasing"):
        build(level_start=torch.tensor([0, 3, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"level_start must be non-decreasing.*\(3\)"):
        build(level_start=torch.tensor([0, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"level_start must have shape \(5,\)"):
        build(level_start=torch.tensor([0, 3, 3, 3]))
    with pytest.raises(ValueError, match="C-contiguous"):
        build(chi=torch.zeros(n_chi, 4).t())
    shared = torch.zeros(4, n_atoms, 3)
    with pytest.raises(ValueError, match="out must not share memory with positions"):
        build(out=shared, positions=shared[0])
    if C.cuda_compiled():
        # On CUDA, level_start stays a CPU tensor: a CUDA one is refused before any CUDA call.
        cuda = {name: fake_view(C, shape, dtype, "cuda", 0) for name, shape, dtype in [
            ("positions", (n_atoms, 3), "float32"), ("chi", (4, n_chi), "float32"),
            ("chi_ref", (n_chi,), "float32"), ("axis", (n_chi, 2), "int64"),
            ("move_atom", (3,), "int64"), ("move_chi", (3,), "int64"),
            ("level_start", (5,), "int64"), ("out", (4, n_atoms, 3), "float32")]}  # fmt: skip
        with pytest.raises(
            ValueError, match=r"level_start must be on the cpu \(build_sidechains_cuda"
        ):
            C.build_sidechains_cuda(*cuda.values(), 0)
    else:
        with pytest.raises(RuntimeError, match="without CUDA"):
            C.build_sidechains_cuda(*(view(torch.zeros(1)) for _ in range(8)), 0)


# --- energy: tables as a list of views in ENERGY_TABLES order -----------------------------------


def energy_tables(n_atoms: int = 3) -> dict[str, torch.Tensor]:
    """A 3-atom molecule: one bond (0-1), one angle (0-1-2), no torsion, the 0-2 exception."""
    i64, f64 = torch.int64, torch.float64
    return {
        "charge": torch.tensor([0.4, -0.8, 0.4]),
        "half_sigma": torch.full((n_atoms,), 0.15),
        "two_sqrt_eps": torch.full((n_atoms,), 0.6),
        "excl_ptr": torch.tensor([0, 1, 1, 2]),
        "excl_idx": torch.tensor([2, 0]),
        "exc_atoms": torch.tensor([[0, 2]]),
        "exc_params": torch.tensor([[1.0, 0.3, 0.5]], dtype=f64),
        "exc_ptr": torch.tensor([0, 1, 1, 2]),
        "exc_idx": torch.tensor([0, 0]),
        "bond_atoms": torch.tensor([[0, 1]]),
        "bond_params": torch.tensor([[1000.0, 0.1]], dtype=f64),
        "bond_ptr": torch.tensor([0, 1, 2, 2]),
        "bond_idx": torch.tensor([0, 0]),
        "angle_atoms": torch.tensor([[0, 1, 2]]),
        "angle_params": torch.tensor([[100.0, 1.9]], dtype=f64),
        "angle_ptr": torch.tensor([0, 1, 2, 3]),
        "angle_idx": torch.tensor([0, 0, 0]),
        "torsion_atoms": torch.zeros(0, 4, dtype=i64),
        "torsion_params": torch.zeros(0, 3, dtype=f64),
        "torsion_ptr": torch.zeros(n_atoms + 1, dtype=i64),
        "torsion_idx": torch.zeros(0, dtype=i64),
    }


def energy_call(C, tables=None, positions=None, out=None, workspace=None, cutoff=0.0):
    tables = energy_tables() if tables is None else tables
    positions = (
        torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(0))
        if positions is None
        else positions
    )
    out = torch.zeros(positions.shape[0], 5, dtype=torch.float64) if out is None else out
    workspace = torch.zeros(0, dtype=torch.uint8) if workspace is None else workspace
    views = [view(tables[name]) for name in C.ENERGY_TABLES]
    C.energy_cpu(views, view(positions), view(out), view(workspace), cutoff, 0.0, 0.0)
    return out


def test_energy_tables_order_is_the_python_fields() -> None:
    from pyslice.energy.forcefield import EnergyTables

    C = _compiled.load()  # noqa: N806
    fields = [
        f for f in EnergyTables.__dataclass_fields__ if f not in ("n_atoms", "cutoff", "krf", "crf")
    ]
    assert list(C.ENERGY_TABLES) == fields


def test_energy_binding_checks(C) -> None:
    out = energy_call(C)
    assert torch.isfinite(out).all() and out[:, 0].gt(0).all()  # a stretched bond costs energy
    with pytest.raises(TypeError, match="tables must be a list of pyslice._C.Tensor"):
        C.energy_cpu(
            {},
            view(torch.zeros(1, 3, 3)),
            view(torch.zeros(1, 5)),
            view(torch.zeros(0)),
            0.0,
            0.0,
            0.0,
        )
    bad = energy_tables()
    with pytest.raises(ValueError, match="tables must hold 21 views"):
        C.energy_cpu([view(bad["charge"])], view(torch.zeros(1, 3, 3)),
                     view(torch.zeros(1, 5, dtype=torch.float64)),
                     view(torch.zeros(0, dtype=torch.uint8)), 0.0, 0.0, 0.0)  # fmt: skip
    with pytest.raises(
        TypeError, match=r"tables\['half_sigma'\] must have dtype float32, got float64"
    ):
        energy_call(C, tables=energy_tables() | {"half_sigma": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(
        ValueError, match=r"tables\['two_sqrt_eps'\] must have shape \(N,\) with N = 3"
    ):
        energy_call(C, tables=energy_tables() | {"two_sqrt_eps": torch.zeros(4)})
    with pytest.raises(
        ValueError, match=r"tables\['bond_params'\] must have shape \(O, 2\) with O = 1"
    ):
        energy_call(
            C, tables=energy_tables() | {"bond_params": torch.zeros(2, 2, dtype=torch.float64)}
        )
    with pytest.raises(
        ValueError, match=r"tables\['angle_ptr'\] must have n_atoms \+ 1 = 4 entries"
    ):
        energy_call(C, tables=energy_tables() | {"angle_ptr": torch.tensor([0, 3])})
    with pytest.raises(ValueError, match=r"tables\['angle_atoms'\] holds index 7 outside \[0, 3\)"):
        energy_call(C, tables=energy_tables() | {"angle_atoms": torch.tensor([[0, 7, 2]])})
    with pytest.raises(ValueError, match=r"tables\['excl_ptr'\] must be non-decreasing"):
        energy_call(C, tables=energy_tables() | {"excl_ptr": torch.tensor([0, 2, 1, 2])})
    with pytest.raises(
        ValueError, match=r"positions must have shape \(B, N, 3\) with N = 3, got \(2, 4, 3\)"
    ):
        energy_call(C, positions=torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"out must have shape \(B, 5\) with B = 2"):
        energy_call(C, out=torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="workspace must have dtype uint8"):
        energy_call(C, workspace=torch.zeros(4))
    with pytest.raises(ValueError, match=r"cutoff must be >= 0"):
        energy_call(C, cutoff=-1.0)
    with pytest.raises(ValueError, match="cutoff must be finite"):
        energy_call(C, cutoff=float("nan"))


def test_energy_delta_binding_checks(C) -> None:
    tables = energy_tables()  # alive while its views are used
    views = [view(tables[name]) for name in C.ENERGY_TABLES]
    x = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(1))
    y = x + 0.01
    out = torch.zeros(2, 5, dtype=torch.float64)
    no_workspace = view(torch.zeros(0, dtype=torch.uint8))

    def delta(moved, new=y):
        C.energy_delta_cpu(
            views, view(x), view(new), view(moved), view(out), no_workspace, 0.0, 0.0, 0.0
        )

    delta(torch.tensor([[0, -1], [2, 1]]))
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    with pytest.raises(ValueError, match=r"moved holds 3, outside \[-1, 3\)"):
        delta(torch.tensor([[0, 3], [2, 1]]))
    with pytest.raises(ValueError, match=r"moved must have shape \(B, M\) with B = 2"):
        delta(torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="new_positions must have dtype float32, got float64"):
        delta(torch.tensor([[0, 1], [2, 1]]), new=y.double())


def test_energy_cuda_checks_the_workspace_before_any_cuda_call(cuda_C) -> None:
    C = cuda_C  # noqa: N806
    tables = energy_tables()

    def on_cuda(shape, dtype, k):  # distinct fake addresses: only outputs are checked for overlap
        return fake_view(C, tuple(shape), str(dtype).removeprefix("torch."), "cuda", 0, 4096 * k)

    views = [on_cuda(tables[name].shape, tables[name].dtype, 1 + k)
             for k, name in enumerate(C.ENERGY_TABLES)]  # fmt: skip
    positions = on_cuda((2, 3, 3), torch.float32, 100)
    out = on_cuda((2, 5), torch.float64, 200)
    need = C.workspace_size("energy", "cuda", (2, 3, 3))  # 1 bond + 1 angle + 1 exception
    short = on_cuda((need - 8,), torch.uint8, 300)
    with pytest.raises(ValueError, match=f"workspace must hold at least {need} bytes"):
        C.energy_cuda(views, positions, out, short, 0.0, 0.0, 0.0, 0)


# --- Philox-4x32-10 known answers (Random123 kat_vectors) ---------------------------------------

PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]  # fmt: skip


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answers(C, counter, key, expected) -> None:
    assert C.philox4x32_10(*counter, *key) == expected


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_philox_rejects_words_out_of_range(C, bad: int) -> None:
    with pytest.raises(ValueError, match=r"k1 must be an int in \[0, 2\*\*32\)"):
        C.philox4x32_10(0, 0, 0, 0, 0, bad)
