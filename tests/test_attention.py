"""Attention (pyslice.attention): the Triton kernels and the torch SDPA path against the explicit
float64 softmax (attention_math).

The accuracy bar is the issue's: in each dtype, the Triton result's largest error against the
float64 oracle is at most twice the error of torch's own scaled_dot_product_attention computed in
that dtype on the same device, plus one unit of the dtype's precision (``eps * max|oracle|``, a
floor for cases where SDPA happens to be exact, e.g. S = 1). Gradients are held to the same bar.

Without a GPU the Triton cases run under TRITON_INTERPRET=1 (tests/conftest.py) at small sizes;
with one they run compiled on CUDA, and the gpu-marked tests add larger sizes, bfloat16/float16 on
CUDA and grids past 65535 heads.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyslice import backends
from pyslice.attention import attention, attention_math
from pyslice.backends import BackendUnavailable

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]

triton_mark = pytest.mark.triton


def _inputs(batch, heads, sq, head_dim, dtype, *, sk=None, seed=0, device=DEVICE):
    gen = torch.Generator().manual_seed(seed)
    sk = sq if sk is None else sk
    q = torch.randn(batch, heads, sq, head_dim, generator=gen)
    k = torch.randn(batch, heads, sk, head_dim, generator=gen)
    v = torch.randn(batch, heads, sk, head_dim, generator=gen)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def _ragged_mask(lengths, sk):
    """(B, Sk) bool on the CPU, True past each protein's length (0: every key is padding)."""
    return torch.arange(sk)[None, :] >= torch.tensor(lengths)[:, None]


def _lengths(sk: int) -> list[int]:
    """Full, about half (ragged, odd), and none at all (a fully padded protein)."""
    return [sk, max(1, (sk + 1) // 2), 0]


def _oracle(q, k, v, mask, scale=None):
    q, k, v = (t.double().cpu() for t in (q, k, v))
    return attention_math(q, k, v, None if mask is None else mask.cpu(), scale=scale)


def _max_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double().cpu() - ref).abs().max()) if ref.numel() else 0.0


def _assert_within_bar(ours: torch.Tensor, sdpa: torch.Tensor, ref: torch.Tensor, what: str):
    eps = torch.finfo(ours.dtype).eps
    floor = eps * max(float(ref.abs().max()) if ref.numel() else 0.0, 1e-30)
    err, err_sdpa = _max_error(ours, ref), _max_error(sdpa, ref)
    assert not torch.isnan(ours).any(), f"{what}: NaN"
    assert err <= 2.0 * err_sdpa + floor, (
        f"{what}: error {err:.3e} > 2 x SDPA's {err_sdpa:.3e} + {floor:.1e} ({ours.dtype})"
    )


def _sdpa(q, k, v, mask, scale=None):
    """Plain torch SDPA in the inputs' dtype, rows with no key zeroed (the comparison baseline)."""
    return attention(q, k, v, mask, scale=scale, backend="reference")


def _grads(fn, inputs, grad_out):
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out.to(device=out.device, dtype=out.dtype))
    return out, [t.grad for t in leaves]


# ----------------------------------------------------------------------------- forward accuracy


FORWARD_CASES = [(d, s) for d in (32, 64, 128) for s in (1, 7, 64, 100)]


@triton_mark
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    ("head_dim", "seq"), FORWARD_CASES, ids=[f"D{d}-S{s}" for d, s in FORWARD_CASES]
)
def test_triton_forward_within_twice_sdpa_error(dtype, head_dim: int, seq: int) -> None:
    q, k, v = _inputs(3, 1, seq, head_dim, dtype, seed=seq + head_dim)
    mask = _ragged_mask(_lengths(seq), seq).to(DEVICE)
    out = attention(q, k, v, mask, backend="triton")
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    ref = _oracle(q, k, v, mask)
    _assert_within_bar(out, _sdpa(q, k, v, mask), ref, f"D={head_dim} S={seq}")
    assert torch.equal(out[2].float().cpu(), torch.zeros_like(out[2].float().cpu()))


@triton_mark
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_triton_forward_without_mask_and_with_a_scale(dtype) -> None:
    q, k, v = _inputs(2, 2, 50, 64, dtype, seed=3)
    for scale in (None, 0.3):
        out = attention(q, k, v, scale=scale, backend="triton")
        ref = _oracle(q, k, v, None, scale=scale)
        _assert_within_bar(out, _sdpa(q, k, v, None, scale=scale), ref, f"scale={scale}")


@triton_mark
def test_triton_cross_attention_lengths_differ() -> None:
    q, k, v = _inputs(2, 2, 5, 32, torch.float32, sk=40, seed=4)
    mask = _ragged_mask([40, 17], 40).to(DEVICE)
    out = attention(q, k, v, mask, backend="triton")
    assert out.shape == (2, 2, 5, 32)
    _assert_within_bar(out, _sdpa(q, k, v, mask), _oracle(q, k, v, mask), "Sq=5 Sk=40")


@triton_mark
def test_triton_large_scores_stay_finite() -> None:
    """Scores of +-1e4 (a naive exp would overflow): the online softmax is shift-invariant."""
    q, k, v = _inputs(1, 2, 40, 32, torch.float32, seed=5)
    q = q * 30.0
    out = attention(q, k, v, backend="triton")
    assert torch.isfinite(out).all()
    _assert_within_bar(out, _sdpa(q, k, v, None), _oracle(q, k, v, None), "large scores")


# ----------------------------------------------------------------------------------- backward


BACKWARD_CASES = [(dtype, d) for dtype in DTYPES for d in (32, 64, 128)]


@triton_mark
@pytest.mark.parametrize(
    ("dtype", "head_dim"),
    BACKWARD_CASES,
    ids=[f"{DTYPE_IDS[DTYPES.index(t)]}-D{d}" for t, d in BACKWARD_CASES],
)
def test_triton_backward_within_twice_sdpa_error(dtype, head_dim: int) -> None:
    seq = 37  # odd, several key and query blocks of the backward kernels
    q, k, v = _inputs(3, 1, seq, head_dim, dtype, seed=head_dim)
    mask = _ragged_mask(_lengths(seq), seq).to(DEVICE)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    _, ours = _grads(
        lambda a, b, c: attention(a, b, c, mask, backend="triton"), (q, k, v), grad_out
    )
    _, sdpa = _grads(lambda a, b, c: _sdpa(a, b, c, mask), (q, k, v), grad_out)
    _, ref = _grads(
        lambda a, b, c: attention_math(a, b, c, mask.cpu()),
        [t.double().cpu() for t in (q, k, v)],
        grad_out.double().cpu(),
    )
    for name, g, g_sdpa, g_ref in zip("qkv", ours, sdpa, ref):
        assert g.dtype == dtype and g.shape == g_ref.shape
        _assert_within_bar(g, g_sdpa, g_ref, f"d{name} D={head_dim}")
    # The fully padded protein (batch 2): output 0 whatever q, k, v, so zero gradients.
    for g in ours:
        assert not g[2].float().abs().any()
    # Padding keys take no part: their dk and dv are zero.
    assert not ours[1][1, :, _lengths(seq)[1] :].float().abs().any()
    assert not ours[2][1, :, _lengths(seq)[1] :].float().abs().any()


@triton_mark
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_reference_fallback_backward(dtype) -> None:
    """backward="reference" (recompute with attention_math under autograd) meets the same bar,
    and in float32 agrees with the Triton backward."""
    from pyslice.kernels.attention import attention as triton_attention

    q, k, v = _inputs(2, 2, 20, 32, dtype, seed=8)
    mask = _ragged_mask([20, 0], 20).to(DEVICE)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    _, fused = _grads(lambda a, b, c: triton_attention(a, b, c, mask), (q, k, v), grad_out)
    _, fallback = _grads(
        lambda a, b, c: triton_attention(a, b, c, mask, backward="reference"), (q, k, v), grad_out
    )
    _, sdpa = _grads(lambda a, b, c: _sdpa(a, b, c, mask), (q, k, v), grad_out)
    _, ref = _grads(
        lambda a, b, c: attention_math(a, b, c, mask.cpu()),
        [t.double().cpu() for t in (q, k, v)],
        grad_out.double(),
    )
    for name, a, b, g_sdpa, g_ref in zip("qkv", fused, fallback, sdpa, ref):
        _assert_within_bar(b, g_sdpa, g_ref, f"fall-back d{name}")
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="backward"):
        triton_attention(q, k, v, backward="torch")


@triton_mark
def test_triton_only_some_inputs_need_gradients() -> None:
    q, k, v = _inputs(1, 2, 9, 32, torch.float32, seed=9)
    k = k.requires_grad_()
    attention(q, k, v, backend="triton").sum().backward()
    k_ref = k.detach().double().requires_grad_()
    attention_math(q.double(), k_ref, v.double()).sum().backward()
    torch.testing.assert_close(k.grad.double(), k_ref.grad, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------- layouts and degenerate sizes


@triton_mark
def test_triton_non_contiguous_views_of_a_fused_projection() -> None:
    """q, k, v as views of one (B, S, 3, H, D) projection (no copies) give what contiguous
    copies give, forward and backward, bit for bit."""
    gen = torch.Generator().manual_seed(10)
    qkv = torch.randn(2, 21, 3, 2, 32, generator=gen).to(DEVICE)
    views = [qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3)]  # (B, H, S, D), strided
    assert not views[0].is_contiguous()
    mask = _ragged_mask([21, 6], 21).to(DEVICE)
    grad_out = torch.randn(2, 2, 21, 32, generator=gen).to(DEVICE)
    strided_grad = grad_out.transpose(2, 3).contiguous().transpose(2, 3)  # stride(-1) != 1
    strided_out, strided = _grads(
        lambda a, b, c: attention(a, b, c, mask, backend="triton"), views, strided_grad
    )
    dense_out, dense = _grads(
        lambda a, b, c: attention(a, b, c, mask, backend="triton"),
        [t.contiguous() for t in views],
        grad_out,
    )
    assert torch.equal(strided_out, dense_out)
    for a, b in zip(strided, dense):
        assert torch.equal(a, b)
    # A head dimension with a stride other than 1 is copied first.
    odd = torch.randn(1, 1, 32, 16, generator=gen).to(DEVICE).transpose(2, 3)  # (1, 1, 16, 32)
    torch.testing.assert_close(
        attention(odd, odd, odd, backend="triton"), attention_math(odd, odd, odd), atol=1e-5, rtol=0
    )


@triton_mark
@pytest.mark.parametrize(
    ("batch", "heads", "sq", "sk"),
    [(0, 2, 5, 5), (2, 0, 5, 5), (2, 2, 0, 5), (2, 2, 5, 0), (1, 1, 1, 1)],
    ids=["no-batch", "no-heads", "no-queries", "no-keys", "single"],
)
def test_triton_empty_and_single(batch: int, heads: int, sq: int, sk: int) -> None:
    q, k, v = _inputs(batch, heads, sq, 32, torch.float32, sk=sk, seed=11)
    ones = torch.ones(batch, heads, sq, 32)
    out, grads = _grads(lambda a, b, c: attention(a, b, c, backend="triton"), (q, k, v), ones)
    ref_out, ref_grads = _grads(attention_math, (q, k, v), ones)
    assert out.shape == (batch, heads, sq, 32)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-6)
    if sk == 0:
        assert not out.abs().any()
    # The SDPA path agrees on the degenerate sizes too.
    torch.testing.assert_close(_sdpa(q, k, v, None), ref_out, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------- the torch paths and the dispatch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_sdpa_path_matches_the_explicit_softmax(dtype) -> None:
    q, k, v = _inputs(3, 2, 13, 16, dtype, seed=12, device="cpu")
    mask = _ragged_mask(_lengths(13), 13)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    _, sdpa = _grads(lambda a, b, c: attention(a, b, c, mask), (q, k, v), torch.ones(q.shape))
    out, ref = _grads(lambda a, b, c: attention_math(a, b, c, mask), (q, k, v), torch.ones(q.shape))
    torch.testing.assert_close(attention(q, k, v, mask), out, atol=tol, rtol=tol)
    assert not out[2].any() and not torch.isnan(out).any()
    for a, b in zip(sdpa, ref):
        assert not torch.isnan(a).any()
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_explicit_softmax_matches_a_hand_computation() -> None:
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[1.0, 1.0], [2.0, 0.0], [5.0, 5.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]], dtype=torch.float64)
    mask = torch.tensor([[False, False, True]])
    out = attention_math(q, k, v, mask, scale=0.5)
    for row, query in enumerate(q[0, 0]):
        w = torch.softmax(0.5 * (k[0, 0, :2] @ query), 0)
        torch.testing.assert_close(out[0, 0, row], w @ v[0, 0, :2], atol=1e-15, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_sdpa_path_runs_in_half_precision_on_cpu(dtype) -> None:
    q, k, v = _inputs(2, 2, 9, 32, dtype, seed=13, device="cpu")
    mask = _ragged_mask([9, 0], 9)
    out = attention(q, k, v, mask)
    assert out.dtype == dtype and not out[1].float().abs().any()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), _oracle(q, k, v, mask), atol=4 * eps, rtol=0)


def test_automatic_choice_on_cpu_is_the_sdpa_path(monkeypatch) -> None:
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    impl = backends.select("attention", "cpu", torch.float32)
    assert impl.backend == "reference" and impl.function.__name__ == "attention_sdpa"
    # Never the interpreter unless forced.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backends.select("attention", "cpu", torch.float16).backend == "reference"


@triton_mark
def test_forced_triton_rejects_what_it_cannot_run() -> None:
    q, k, v = _inputs(1, 1, 4, 48, torch.float32, seed=14)
    with pytest.raises(BackendUnavailable, match=r"head dim q.shape\[-1\].*48"):
        attention(q, k, v, backend="triton")
    q, k, v = _inputs(1, 1, 4, 32, torch.float64, seed=14)
    with pytest.raises(BackendUnavailable, match="float64"):
        attention(q, k, v, backend="triton")
    # The automatic choice runs such inputs on the torch path.
    torch.testing.assert_close(attention(q, k, v), attention_math(q, k, v), atol=1e-12, rtol=0)


def _bad_arguments():
    q = torch.zeros(2, 3, 5, 32)
    k = torch.zeros(2, 3, 7, 32)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    return [
        ("q-type", dict(q=q.numpy()), TypeError, "q must be a torch.Tensor"),
        ("q-rank", dict(q=q[0]), ValueError, r"q must have shape \(B, H, S, D\)"),
        ("q-dtype", dict(q=q.int(), k=k.int(), v=k.int()), TypeError, "q must have dtype"),
        ("k-dtype", dict(k=k.double()), TypeError, "k must have q's dtype"),
        ("v-shape", dict(v=k[:, :, :6]), ValueError, "v must have k's shape"),
        ("k-heads", dict(k=k[:, :2], v=k[:, :2]), ValueError, "k must have shape"),
        ("k-head-dim", dict(k=k[..., :16], v=k[..., :16]), ValueError, "k must have shape"),
        ("k-device", dict(k=k.to("meta")), ValueError, "k must be on q's device"),
        ("mask-type", dict(key_padding_mask=[0] * 7), TypeError, "key_padding_mask must be"),
        ("mask-dtype", dict(key_padding_mask=mask.int()), TypeError, "key_padding_mask.*bool"),
        ("mask-shape", dict(key_padding_mask=mask[:, :5]), ValueError, r"mask.*\(2, 7\)"),
        ("mask-device", dict(key_padding_mask=mask.to("meta")), ValueError, "mask.*device"),
        ("scale-type", dict(scale="0.1"), TypeError, "scale must be a real number"),
        ("scale-bool", dict(scale=True), TypeError, "scale must be a real number"),
        ("scale-nan", dict(scale=math.nan), ValueError, "scale must be finite"),
        ("backend", dict(backend="opencl"), ValueError, "backend must be one of"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [pytest.param(c, e, m, id=i) for i, c, e, m in _bad_arguments()],
)
def test_bad_arguments_raise_clear_errors(change: dict, error: type, match: str) -> None:
    args = dict(
        q=torch.zeros(2, 3, 5, 32),
        k=torch.zeros(2, 3, 7, 32),
        v=torch.zeros(2, 3, 7, 32),
        key_padding_mask=None,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        attention(**args)


def test_float64_gradcheck_of_the_sdpa_path() -> None:
    q, k, v = (
        t.requires_grad_() for t in _inputs(2, 1, 4, 3, torch.float64, seed=15, device="cpu")
    )
    mask = _ragged_mask([4, 2], 4)
    assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, mask), (q, k, v))


# ------------------------------------------------------------------------------------ GPU only


@pytest.mark.gpu
@triton_mark
def test_cuda_automatic_choice_is_triton_and_falls_back_for_other_head_dims() -> None:
    assert backends.select("attention", "cuda", torch.bfloat16).backend == "triton"
    q, k, v = _inputs(2, 2, 33, 48, torch.float16, seed=16)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


GPU_CASES = [(dtype, d, s) for dtype in DTYPES for d in (32, 64, 128) for s in (128, 255, 1000)]


@pytest.mark.gpu
@triton_mark
@pytest.mark.parametrize(
    ("dtype", "head_dim", "seq"),
    GPU_CASES,
    ids=[f"{DTYPE_IDS[DTYPES.index(t)]}-D{d}-S{s}" for t, d, s in GPU_CASES],
)
def test_cuda_large_forward_and_backward_within_twice_sdpa_error(dtype, head_dim, seq) -> None:
    batch, heads = 6, 4
    q, k, v = _inputs(batch, heads, seq, head_dim, dtype, seed=seq)
    lengths = [seq, seq - 1, seq // 2, 17, 1, 0]
    mask = _ragged_mask(lengths, seq).to(DEVICE)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    out, ours = _grads(lambda a, b, c: attention(a, b, c, mask), (q, k, v), grad_out)
    sdpa_out, sdpa = _grads(lambda a, b, c: _sdpa(a, b, c, mask), (q, k, v), grad_out)
    ref_out, ref = _grads(
        lambda a, b, c: attention_math(a, b, c, mask),
        [t.double() for t in (q, k, v)],
        grad_out.double(),
    )
    ref_out, ref = ref_out.cpu(), [g.cpu() for g in ref]
    _assert_within_bar(out, sdpa_out, ref_out, "out")
    for name, g, g_sdpa, g_ref in zip("qkv", ours, sdpa, ref):
        _assert_within_bar(g, g_sdpa, g_ref, f"d{name}")


@pytest.mark.gpu
@triton_mark
def test_cuda_more_heads_than_one_grid_dimension_holds() -> None:
    """batch x heads = 70000 > 65535 (the CUDA grid's y/z limit): the 1-D grid covers them all."""
    q, k, v = _inputs(35000, 2, 16, 32, torch.bfloat16, seed=17)
    out = attention(q, k, v, backend="triton")
    _assert_within_bar(out, _sdpa(q, k, v, None), _oracle(q, k, v, None), "70000 heads")


@pytest.mark.gpu
@triton_mark
def test_cuda_bf16_training_step_is_finite_with_padding() -> None:
    q, k, v = _inputs(64, 8, 300, 64, torch.bfloat16, seed=18)
    mask = _ragged_mask(torch.randint(0, 301, (64,)).tolist(), 300).to(DEVICE)
    _, grads = _grads(lambda a, b, c: attention(a, b, c, mask), (q, k, v), torch.ones(q.shape))
    assert all(torch.isfinite(g).all() for g in grads)
