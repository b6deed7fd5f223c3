"""Attention (the side-chain transformer's), pyslice side by side with torch SDPA in one session.

CUDA: pyslice's fused Triton kernels against torch.nn.functional.scaled_dot_product_attention
with each of its CUDA backends forced through torch.nn.attention.sdpa_kernel (flash, efficient,
math), bfloat16, batch 4096 x 4 heads, head dim 64, S in {64, 128, 256}; forward, and forward +
backward; without padding, and with ragged key padding at the longest S (flash SDPA takes no mask,
so it sits that group out). A contestant that torch cannot run on this GPU is skipped with the
reason. CPU (no GPU): one small case, pyslice's torch path (SDPA with the padding mask) against
the explicit float32 softmax. Every contestant is checked against the explicit softmax first.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from bench_common import DEVICE, size, sync

from pyslice.attention import attention, attention_math

HEADS, HEAD_DIM = 4, 64
CHECK_BATCH = 8  # the correctness check compares this many proteins with the explicit softmax

if DEVICE == "cuda":
    BATCH = size(4096, 2)
    DTYPE = torch.bfloat16
    CASES = [(64, False), (128, False), (256, False), (256, True)]
    CONTESTANTS = ["triton", "sdpa-flash", "sdpa-efficient", "sdpa-math"]
    TOLERANCE = 4e-2
else:
    BATCH = size(64, 2)
    DTYPE = torch.float32
    CASES = [(size(64, 16), True)]
    CONTESTANTS = ["reference", "explicit softmax"]
    TOLERANCE = 1e-4
MODES = ["forward", "forward+backward"]


def _sdpa(backend_name: str, q, k, v, mask):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend_name]
    attn_mask = None if mask is None else ~mask[:, None, None, :]
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def _function(contestant: str):
    if contestant in ("triton", "reference"):
        return functools.partial(attention, backend=contestant)
    if contestant == "explicit softmax":
        return attention_math
    return functools.partial(_sdpa, contestant.removeprefix("sdpa-"))


@functools.cache
def _inputs(seq: int, ragged: bool):
    gen = torch.Generator(device=DEVICE).manual_seed(seq)
    shape = (BATCH, HEADS, seq, HEAD_DIM)
    q, k, v = (torch.randn(shape, generator=gen, device=DEVICE, dtype=DTYPE) for _ in range(3))
    grad_out = torch.randn(shape, generator=gen, device=DEVICE, dtype=DTYPE)
    mask = None
    if ragged:  # every protein has at least half of the keys (no all-padding rows: raw SDPA NaNs)
        lengths = torch.randint(seq // 2, seq + 1, (BATCH,), generator=gen, device=DEVICE)
        mask = torch.arange(seq, device=DEVICE)[None, :] >= lengths[:, None]
    return q, k, v, mask, grad_out


def _step(fn, q, k, v, mask, grad_out, backward: bool):
    if not backward:
        return (fn(q, k, v, mask),)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, mask)
    return (out.detach(), *torch.autograd.grad(out, leaves, grad_out))


def _check(results, q, k, v, mask, grad_out, backward: bool) -> None:
    n = CHECK_BATCH
    small = [t[:n].float() for t in (q, k, v, grad_out)]
    small_mask = None if mask is None else mask[:n]
    expected = _step(attention_math, *small[:3], small_mask, small[3], backward)
    for name, got, ref in zip(("out", "dq", "dk", "dv"), results, expected):
        err = float((got[:n].float() - ref).abs().max())
        bound = TOLERANCE * max(1.0, float(ref.abs().max()))
        assert err <= bound, f"{name}: max error {err:.3e} > {bound:.1e}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("seq", "ragged"), CASES, ids=[f"S{s}{'-ragged' * r}" for s, r in CASES])
@pytest.mark.parametrize("contestant", CONTESTANTS)
def test_attention(benchmark, contestant: str, seq: int, ragged: bool, mode: str) -> None:
    if contestant == "sdpa-flash" and ragged:
        pytest.skip("flash SDPA takes no attention mask")
    q, k, v, mask, grad_out = _inputs(seq, ragged)
    backward = mode == "forward+backward"
    fn = _function(contestant)
    dtype_name = str(DTYPE).removeprefix("torch.")
    benchmark.group = f"attention {mode} {dtype_name} B={BATCH} H={HEADS} S={seq} D={HEAD_DIM}" + (
        " ragged" if ragged else ""
    )
    benchmark.extra_info.update(
        device=DEVICE, backend=contestant, batch=BATCH, heads=HEADS, seq=seq, dtype=dtype_name
    )
    try:
        results = _step(fn, q, k, v, mask, grad_out, backward)
    except RuntimeError as exc:  # e.g. an SDPA backend this GPU or dtype does not support
        if contestant.startswith("sdpa-"):
            pytest.skip(f"{contestant} cannot run here: {str(exc).splitlines()[0]}")
        raise
    _check(results, q, k, v, mask, grad_out, backward)
    del results

    def run():
        out = _step(fn, q, k, v, mask, grad_out, backward)
        sync()
        return out

    benchmark.pedantic(run, rounds=size(20, 1), iterations=1, warmup_rounds=size(2, 0))
