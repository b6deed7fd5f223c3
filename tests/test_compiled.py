"""The compiled module pyslice._C: build information, argument checks, determinism, Philox.

numpy only; the statistics of the sampler are tested against the reference in
test_distributions.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from pyslice import _compiled

# Without PYSLICE_DISABLE_COMPILED, a missing _C is a failure here (with the reason), not a skip.
pytestmark = pytest.mark.skipif(
    os.environ.get("PYSLICE_DISABLE_COMPILED", "").strip() not in ("", "0"),
    reason="PYSLICE_DISABLE_COMPILED is set",
)

BUILD_INFO_KEYS = {
    "version",
    "compiler",
    "cxx_standard",
    "openmp",
    "openmp_version",
    "cuda",
    "cuda_version",
    "cuda_architectures",
    "build_type",
    "pybind11_version",
}


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


def make_table(loc: np.ndarray, kappa: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(6, rows, K) float32 table: cdf, loc, kappa, s - 1, s + 1, sigma."""
    loc, kappa, weights = (np.asarray(a, dtype=np.float64) for a in (loc, kappa, weights))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    s = best_fisher_s(kappa)
    sigma = 1.0 / np.sqrt(np.maximum(kappa, 1e-8))
    table = np.stack([np.cumsum(weights, axis=-1), loc, kappa, s - 1.0, s + 1.0, sigma])
    return np.ascontiguousarray(table, dtype=np.float32)


@pytest.fixture
def table() -> np.ndarray:
    # 3 rows, 2 components: moderate, tiny (uniform) and huge (wrapped normal) concentrations.
    loc = [[0.5, -2.0], [3.0, 1.0], [-1.0, 0.0]]
    kappa = [[4.0, 0.3], [1e-9, 50.0], [2e4, 2.0]]
    weights = [[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]]
    return make_table(loc, kappa, weights)


def sample(C, table: np.ndarray, n: int, seed: int = 1, offset: int = 0, pi_periodic=False):
    out = np.full(n, np.nan, dtype=np.float32)
    C.sample_mixture_cpu(table, out, seed, offset, pi_periodic)
    return out


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


def test_installed_package_has_compiled_module_and_kernels() -> None:
    # CI runs the `pytest` script on the installed package: both must resolve.
    assert importlib.util.find_spec("pyslice._C") is not None
    assert importlib.util.find_spec("pyslice.kernels") is not None


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


# --- sample_mixture_cpu: results ---------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 4099])
def test_fills_every_element_in_range(C, table, n: int) -> None:
    out = sample(C, table, n)
    assert out.shape == (n,)
    assert np.all(np.isfinite(out))
    assert np.all((out >= -math.pi) & (out < math.pi))


@pytest.mark.parametrize("pi_periodic", [False, True])
def test_same_seed_is_bit_identical(C, table, pi_periodic: bool) -> None:
    a = sample(C, table, 5000, seed=123, offset=7, pi_periodic=pi_periodic)
    b = sample(C, table, 5000, seed=123, offset=7, pi_periodic=pi_periodic)
    assert a.tobytes() == b.tobytes()


def test_element_depends_only_on_its_index(C, table) -> None:
    # the parallel path (large n) and the serial path (small n) agree element for element
    big = sample(C, table, 10_000, seed=99)
    small = sample(C, table, 33, seed=99)
    np.testing.assert_array_equal(big[:33], small)


def test_offset_and_seed_change_the_stream(C, table) -> None:
    base = sample(C, table, 2000, seed=5, offset=0)
    other_offset = sample(C, table, 2000, seed=5, offset=1)
    other_seed = sample(C, table, 2000, seed=6, offset=0)
    high_seed = sample(C, table, 2000, seed=5 + 2**32, offset=0)  # the key's high word counts
    for other in (other_offset, other_seed, high_seed):
        assert np.mean(base == other) < 0.05


def test_extreme_seed_and_offset(C, table) -> None:
    out = sample(C, table, 100, seed=2**64 - 1, offset=2**32 - 1)
    assert np.all(np.isfinite(out))
    out = sample(C, table, 100, seed=np.uint64(2**64 - 1), offset=np.int64(3))
    assert np.all(np.isfinite(out))


def test_concentrated_component_centres_on_loc(C) -> None:
    table = make_table([[1.0]], [[200.0]], [[1.0]])
    out = sample(C, table, 4000, seed=3).astype(np.float64)
    mean = math.atan2(np.sin(out).mean(), np.cos(out).mean())
    assert abs(mean - 1.0) < 0.01
    half = sample(C, table, 4000, seed=3, pi_periodic=True).astype(np.float64)
    # pi-periodic: x/2 + {0, pi}, so 2x wraps to loc
    mean2 = math.atan2(np.sin(2 * half).mean(), np.cos(2 * half).mean())
    assert abs(mean2 - 1.0) < 0.01


def test_accepts_numpy_bool(C, table) -> None:
    a = sample(C, table, 50, pi_periodic=np.bool_(True))
    b = sample(C, table, 50, pi_periodic=True)
    np.testing.assert_array_equal(a, b)


# --- sample_mixture_cpu: argument checks ---------------------------------------------------------


def call(C, table, out=None, seed=0, offset=0, pi_periodic=False):
    if out is None:
        out = np.zeros(10, dtype=np.float32)
    C.sample_mixture_cpu(table, out, seed, offset, pi_periodic)


def test_rejects_float64_table(C, table) -> None:
    with pytest.raises(TypeError, match="table.*float32"):
        call(C, table.astype(np.float64))


def test_rejects_non_native_byte_order(C, table) -> None:
    with pytest.raises(TypeError, match="table"):
        call(C, table.astype(table.dtype.newbyteorder()))


def test_rejects_non_array_table(C, table) -> None:
    with pytest.raises(TypeError, match="table.*numpy.ndarray"):
        call(C, table.tolist())


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 2, 1), (18,)])
def test_rejects_wrong_ndim(C, shape) -> None:
    with pytest.raises(ValueError, match="table.*dimension"):
        call(C, np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("first", [5, 7, 1])
def test_rejects_first_dim_not_6(C, first: int) -> None:
    with pytest.raises(ValueError, match=r"table must have shape \(6, rows, n_components\)"):
        call(C, np.zeros((first, 3, 2), dtype=np.float32))


@pytest.mark.parametrize("shape", [(6, 0, 2), (6, 3, 0)])
def test_rejects_empty_rows_or_components(C, shape) -> None:
    with pytest.raises(ValueError, match="table.*rows >= 1"):
        call(C, np.zeros(shape, dtype=np.float32))


def test_rejects_non_contiguous_table(C, table) -> None:
    wide = np.zeros((6, 3, 4), dtype=np.float32)
    wide[:, :, ::2] = table
    view = wide[:, :, ::2]
    assert not view.flags.c_contiguous
    with pytest.raises(ValueError, match="table.*C-contiguous"):
        call(C, view)
    with pytest.raises(ValueError, match="table.*C-contiguous"):
        call(C, np.asfortranarray(table))


def test_rejects_unaligned_table(C, table) -> None:
    raw = np.zeros(table.nbytes + 1, dtype=np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(table.shape)
    if unaligned.flags.aligned:
        pytest.skip("numpy reports this view as aligned")
    with pytest.raises(ValueError, match="table.*aligned"):
        call(C, unaligned)


def test_rejects_bad_out(C, table) -> None:
    with pytest.raises(TypeError, match="out.*float32"):
        call(C, table, out=np.zeros(10, dtype=np.float64))
    with pytest.raises(ValueError, match="out.*dimension"):
        call(C, table, out=np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="out.*C-contiguous"):
        call(C, table, out=np.zeros(20, dtype=np.float32)[::2])
    readonly = np.zeros(10, dtype=np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out.*writable"):
        call(C, table, out=readonly)
    with pytest.raises(TypeError, match="out.*numpy.ndarray"):
        call(C, table, out=[0.0] * 10)


def test_rejects_out_sharing_memory_with_table(C, table) -> None:
    with pytest.raises(ValueError, match="out.*share memory"):
        call(C, table, out=table.reshape(-1)[:10])


def test_empty_out(C, table) -> None:
    out = np.zeros(0, dtype=np.float32)
    assert C.sample_mixture_cpu(table, out, 0, 0, False) is None


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


# --- sample_mixture_cuda -------------------------------------------------------------------------

CUDA_ARGS = dict(
    table_ptr=0,
    rows=1,
    n_components=1,
    out_ptr=0,
    n=0,
    seed=0,
    offset=0,
    pi_periodic=False,
    stream=0,
)


def test_cuda_binding_without_cuda(C) -> None:
    if C.cuda_compiled():
        pytest.skip("pyslice._C was built with CUDA")
    with pytest.raises(RuntimeError, match="pyslice._C was built without CUDA"):
        C.sample_mixture_cuda(**CUDA_ARGS)


@pytest.fixture
def cuda_C(C):
    if not C.cuda_compiled():
        pytest.skip("pyslice._C was built without CUDA")
    return C


def test_cuda_empty_launch_does_nothing(cuda_C) -> None:
    # n == 0 returns before any CUDA call, null pointers included (no GPU needed)
    assert cuda_C.sample_mixture_cuda(**CUDA_ARGS) is None


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("rows", 0, ValueError, "rows must be an int >= 1"),
        ("n_components", 0, ValueError, "n_components must be an int >= 1"),
        ("n", -1, ValueError, "n must be an int >= 0"),
        ("table_ptr", -1, ValueError, "table_ptr must be an int in"),
        ("out_ptr", 2**64, ValueError, "out_ptr must be an int in"),
        ("seed", 2**64, ValueError, "seed must be an int in"),
        ("offset", 2**32, ValueError, "offset must be an int in"),
        ("stream", -1, ValueError, "stream must be an int in"),
        ("rows", 1.5, TypeError, "rows must be an int"),
        ("pi_periodic", 0, TypeError, "pi_periodic must be a bool"),
    ],
)
def test_cuda_argument_checks(cuda_C, name, value, error, message) -> None:
    # all raised before any CUDA call, so safe with or without a GPU
    with pytest.raises(error, match=message):
        cuda_C.sample_mixture_cuda(
            **{**CUDA_ARGS, "n": 4, "table_ptr": 256, "out_ptr": 512, name: value}
        )


def test_cuda_rejects_null_pointers(cuda_C) -> None:
    for name in ("table_ptr", "out_ptr"):
        args = {**CUDA_ARGS, "n": 4, "table_ptr": 256, "out_ptr": 512, name: 0}
        with pytest.raises(ValueError, match=f"{name} must not be 0"):
            cuda_C.sample_mixture_cuda(**args)


def test_cuda_without_device_raises(cuda_C) -> None:
    if cuda_C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present")
    # no driver or no device: the pointer check fails before any launch
    with pytest.raises(RuntimeError, match="CUDA|cuda"):
        cuda_C.sample_mixture_cuda(**{**CUDA_ARGS, "n": 4, "table_ptr": 256, "out_ptr": 512})


def test_cuda_rejects_host_pointers(cuda_C, table) -> None:
    if cuda_C.cuda_device_count() == 0:
        pytest.skip("needs a CUDA device")
    out = np.zeros(4, dtype=np.float32)
    args = {
        **CUDA_ARGS,
        "table_ptr": table.ctypes.data,
        "rows": 3,
        "n_components": 2,
        "out_ptr": out.ctypes.data,
        "n": 4,
    }
    with pytest.raises(ValueError, match="device"):
        cuda_C.sample_mixture_cuda(**args)


# --- Philox-4x32-10 known answers (Random123 kat_vectors) ---------------------------------------

PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answers(C, counter, key, expected) -> None:
    assert C.philox4x32_10(*counter, *key) == expected


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_philox_rejects_words_out_of_range(C, bad: int) -> None:
    with pytest.raises(ValueError, match=r"k1 must be an int in \[0, 2\*\*32\)"):
        C.philox4x32_10(0, 0, 0, 0, 0, bad)
