"""Fused multi-head attention in Triton (flash-attention style), forward and backward.

``out = softmax(scale * q k^T + mask) v`` for ``q: (B, H, Sq, D)``, ``k, v: (B, H, Sk, D)`` with
``D`` in (32, 64, 128), in float32, float16 or bfloat16 (products accumulate in float32), and an
optional key-padding mask ``(B, Sk)`` bool (True = a padding key, left out of every softmax).
The public entry point, with argument checks and backend dispatch, is ``pyslice.attention``.

Forward. One program per (batch x head, block of BLOCK_M queries); it walks the keys in blocks
of BLOCK_N with an online softmax (running row maximum ``m``, running sum ``l``, an unnormalised
float32 accumulator rescaled by ``exp2(m_old - m_new)``), so the Sq x Sk score matrix never
exists in memory. Scores are taken in base 2 (``scale * log2(e)`` folded into one multiplier).
Keys past Sk and padding keys get a score of -inf; the row maximum used for the exponentials is
replaced by 0 while a row has seen no valid key, so a row whose keys are all padding keeps
``l = 0`` and is written as exact zeros (not NaN). Each row's log-sum-exp (base 2; +inf for an
all-padding row) is stored for the backward. The grid is one-dimensional (the query blocks of one
head are neighbours, so they share K and V in L2; no 65535 limit on batch x heads).

Backward: Triton kernels (the FlashAttention-2 scheme). A small kernel computes
``delta = rowsum(dO * O)`` in float32; then one kernel per block of keys accumulates dK and dV over
all query blocks, and another per block of queries accumulates dQ over all key blocks; both
recompute the probabilities from the stored log-sum-exp (no atomics, deterministic).
``attention(..., backward="reference")`` instead recomputes the forward with
``pyslice.attention.attention_math`` (explicit float32 softmax) under autograd and differentiates
that: a fall-back that needs no Triton backward at all (it materialises Sq x Sk scores).

Precision: float32 inputs use ``input_precision="ieee"`` (true float32 products, not TF32);
float16/bfloat16 inputs use tensor-core products with float32 accumulation and, as in
FlashAttention, the probabilities are rounded to the input dtype before ``P @ V``.

Triton versions: written against the core language of Triton 3.0+ (``tl.dot`` with
``input_precision``, ``tl.exp2``/``tl.log2``, pointer arithmetic; no tensor descriptors, no
``tl.range`` options), so it compiles with Triton 3.6 and 3.9. Under ``TRITON_INTERPRET=1`` (CPU
tensors, the tests) bfloat16 operands are widened to float32 before ``tl.dot``: the interpreter's
numpy matmul cannot multiply bfloat16 (stored as uint16); the widened values are the same bfloat16
numbers, so the products equal the GPU's bf16 x bf16 -> fp32 dot up to summation order. Roundings
to bfloat16 are done on the bits there (the interpreter's own cast truncates).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

HEAD_DIMS = (32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LOG2E = 1.4426950408889634


@triton.jit
def _mm(a, b, acc, WIDEN: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with float32 accumulation (bf16 operands widened in the interpreter)."""
    if WIDEN:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _round(x, dtype: tl.constexpr, WIDEN: tl.constexpr):
    """float32 x rounded to ``dtype`` (round to nearest even). In the interpreter with bfloat16
    (WIDEN) the result stays float32, holding the rounded bfloat16 value: the interpreter's own
    float32 -> bfloat16 cast truncates, so the rounding is done on the bits here."""
    if WIDEN:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def _tile(base, b, h, rows, cols, stride_b, stride_h, stride_r, stride_c):
    """Pointers (or offsets, with base 0) of a (rows, cols) tile of head (b, h)."""
    return base + b * stride_b + h * stride_h + rows[:, None] * stride_r + cols[None, :] * stride_c


@triton.jit
def _key_valid(PAD, pad_base, stride_ps, offs_n, SK, HAS_PAD: tl.constexpr):
    """Keys that exist (index < SK) and are not padding."""
    ok = offs_n < SK
    if HAS_PAD:
        pad = tl.load(PAD + pad_base + offs_n * stride_ps, mask=ok, other=1)
        ok = ok & (pad == 0)
    return ok


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE, PAD,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_pb, stride_ps,
    H, SQ, SK, qk_scale,
    HAS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, WIDEN: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(SQ, BLOCK_M)
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = (pid % n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_N)
    row_ok = offs_m < SQ
    q = tl.load(
        _tile(Q, b, h, offs_m, offs_d, stride_qb, stride_qh, stride_qm, stride_qd),
        mask=row_ok[:, None],
        other=0.0,
    )
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    pad_base = b * stride_pb

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start in range(0, SK, BLOCK_N):
        offs_n = start + offs_b
        in_range = offs_n < SK
        key_ok = _key_valid(PAD, pad_base, stride_ps, offs_n, SK, HAS_PAD)
        k = tl.load(
            k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
            mask=in_range[:, None],
            other=0.0,
        )
        s = _mm(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), WIDEN, PRECISION)
        s = tl.where(key_ok[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows that have seen no valid key yet: subtract 0, so exp2(-inf) = 0 and never NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=in_range[:, None],
            other=0.0,
        )
        acc = _mm(_round(p, V.dtype.element_ty, WIDEN), v, acc * alpha[:, None], WIDEN, PRECISION)
        m_i = m_new

    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(
        _tile(O, b, h, offs_m, offs_d, stride_ob, stride_oh, stride_om, stride_od),
        _round(out, O.dtype.element_ty, WIDEN).to(O.dtype.element_ty),
        mask=row_ok[:, None],
    )
    lse = tl.where(has_key, m_i + tl.log2(l_safe), float("inf"))
    tl.store(LSE + bh.to(tl.int64) * SQ + offs_m, lse, mask=row_ok)


@triton.jit
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, PAD, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gn, stride_gd,
    stride_pb, stride_ps,
    H, SQ, SK, qk_scale, sm_scale,
    HAS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, WIDEN: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dK, dV for one block of BLOCK_N keys, summed over all query blocks (stride_o*: DO's
    strides; stride_g*: those of DK and DV, which share a layout)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(SK, BLOCK_N)
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_n = (pid % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_M)
    in_range = offs_n < SK
    key_ok = _key_valid(PAD, b * stride_pb, stride_ps, offs_n, SK, HAS_PAD)
    k = tl.load(
        _tile(K, b, h, offs_n, offs_d, stride_kb, stride_kh, stride_kn, stride_kd),
        mask=in_range[:, None],
        other=0.0,
    )
    v = tl.load(
        _tile(V, b, h, offs_n, offs_d, stride_vb, stride_vh, stride_vn, stride_vd),
        mask=in_range[:, None],
        other=0.0,
    )
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_ob + h * stride_oh
    row_base = bh.to(tl.int64) * SQ

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for start in range(0, SQ, BLOCK_M):
        offs_m = start + offs_b
        row_ok = offs_m < SQ
        q = tl.load(
            q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
            mask=row_ok[:, None],
            other=0.0,
        )
        do = tl.load(
            do_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
            mask=row_ok[:, None],
            other=0.0,
        )
        lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
        zeros = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        s_t = _mm(k, tl.trans(q), zeros, WIDEN, PRECISION) * qk_scale
        p_t = tl.exp2(s_t - lse[None, :])
        p_t = tl.where(key_ok[:, None] & row_ok[None, :], p_t, 0.0)
        dv = _mm(_round(p_t, DO.dtype.element_ty, WIDEN), do, dv, WIDEN, PRECISION)
        dp_t = _mm(v, tl.trans(do), zeros, WIDEN, PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = _mm(_round(ds_t, Q.dtype.element_ty, WIDEN), q, dk, WIDEN, PRECISION)

    g_ptrs = _tile(0, b, h, offs_n, offs_d, stride_gb, stride_gh, stride_gn, stride_gd)
    tl.store(
        DK + g_ptrs,
        _round(dk * sm_scale, DK.dtype.element_ty, WIDEN).to(DK.dtype.element_ty),
        mask=in_range[:, None],
    )
    tl.store(
        DV + g_ptrs,
        _round(dv, DV.dtype.element_ty, WIDEN).to(DV.dtype.element_ty),
        mask=in_range[:, None],
    )


@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, PAD, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_pb, stride_ps,
    H, SQ, SK, qk_scale, sm_scale,
    HAS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, WIDEN: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ for one block of BLOCK_M queries, summed over all key blocks (stride_o*: DO's strides;
    stride_g*: DQ's)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(SQ, BLOCK_M)
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = (pid % n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_N)
    row_ok = offs_m < SQ
    q = tl.load(
        _tile(Q, b, h, offs_m, offs_d, stride_qb, stride_qh, stride_qm, stride_qd),
        mask=row_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        _tile(DO, b, h, offs_m, offs_d, stride_ob, stride_oh, stride_om, stride_od),
        mask=row_ok[:, None],
        other=0.0,
    )
    row_base = bh.to(tl.int64) * SQ
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    pad_base = b * stride_pb

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start in range(0, SK, BLOCK_N):
        offs_n = start + offs_b
        in_range = offs_n < SK
        key_ok = _key_valid(PAD, pad_base, stride_ps, offs_n, SK, HAS_PAD)
        k = tl.load(
            k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
            mask=in_range[:, None],
            other=0.0,
        )
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=in_range[:, None],
            other=0.0,
        )
        zeros = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        s = _mm(q, tl.trans(k), zeros, WIDEN, PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(key_ok[None, :] & row_ok[:, None], p, 0.0)
        dp = _mm(do, tl.trans(v), zeros, WIDEN, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = _mm(_round(ds, K.dtype.element_ty, WIDEN), k, dq, WIDEN, PRECISION)

    g_ptrs = _tile(0, b, h, offs_m, offs_d, stride_gb, stride_gh, stride_gm, stride_gd)
    tl.store(
        DQ + g_ptrs,
        _round(dq * sm_scale, DQ.dtype.element_ty, WIDEN).to(DQ.dtype.element_ty),
        mask=row_ok[:, None],
    )


@triton.jit
def _attention_bwd_delta_kernel(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gd,
    H, SQ,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """delta = rowsum(dO * O) in float32 (stride_o*: O's strides; stride_g*: DO's)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(SQ, BLOCK_M)
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = (pid % n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < SQ
    o = tl.load(
        _tile(O, b, h, offs_m, offs_d, stride_ob, stride_oh, stride_om, stride_od),
        mask=row_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        _tile(DO, b, h, offs_m, offs_d, stride_gb, stride_gh, stride_gm, stride_gd),
        mask=row_ok[:, None],
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + bh.to(tl.int64) * SQ + offs_m, delta, mask=row_ok)


# ------------------------------------------------------------------------------- launch helpers


def _clamp(block: int, length: int) -> int:
    """The block size, shrunk for short sequences (tl.dot needs at least 16)."""
    return max(16, min(block, triton.next_power_of_2(max(length, 1))))


def forward_config(dtype: torch.dtype, head_dim: int, sq: int, sk: int) -> dict:
    """Block sizes and launch options of the forward kernel (a fixed table, no autotuning:
    tuned for H100-class GPUs; float32 uses smaller tiles since its products are not on tensor
    cores)."""
    if dtype == torch.float32:
        block_m, block_n, warps, stages = (64 if head_dim <= 64 else 32), 32, 4, 2
    else:
        block_m, block_n = 128, 64
        warps, stages = (4, 3) if head_dim <= 64 else (8, 3)
    return dict(
        BLOCK_M=_clamp(block_m, sq), BLOCK_N=_clamp(block_n, sk), num_warps=warps, num_stages=stages
    )


def backward_config(dtype: torch.dtype, head_dim: int, sq: int, sk: int) -> dict:
    """Block sizes of the two backward kernels: the dK/dV kernel holds BLOCK_N keys and walks
    queries BLOCK_M at a time; the dQ kernel holds BLOCK_M queries and walks keys."""
    if dtype == torch.float32:
        big, small, warps, stages = 32, 32, 4, 2
    else:
        big, small = 64, 32
        warps, stages = (4, 3) if head_dim <= 64 else (8, 2)
    return dict(
        dkdv=dict(BLOCK_M=_clamp(small, sq), BLOCK_N=_clamp(big, sk)),
        dq=dict(BLOCK_M=_clamp(big, sq), BLOCK_N=_clamp(small, sk)),
        num_warps=warps,
        num_stages=stages,
    )


def _common(q: torch.Tensor, pad: torch.Tensor | None) -> dict:
    return dict(
        HAS_PAD=pad is not None,
        HEAD_DIM=q.shape[-1],
        # numpy (the interpreter) cannot matmul bfloat16: widen the operands there.
        WIDEN=q.dtype == torch.bfloat16 and q.device.type != "cuda",
        # True float32 products for float32 (not TF32); the default for 16-bit operands.
        PRECISION="ieee" if q.dtype == torch.float32 else None,
    )


def _pad(pad: torch.Tensor | None, q: torch.Tensor) -> tuple:
    """(pointer, stride_b, stride_s) of the padding mask; without one any pointer (never read)."""
    if pad is None:
        return q, 0, 0
    return pad, pad.stride(0), pad.stride(1)


def _forward(q, k, v, pad, scale):
    batch, heads, sq, head_dim = q.shape
    sk = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, sq), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    config = forward_config(q.dtype, head_dim, sq, sk)
    pad_ptr, *pad_strides = _pad(pad, q)
    grid = (batch * heads * triton.cdiv(sq, config["BLOCK_M"]),)
    _attention_fwd_kernel[grid](
        q, k, v, out, lse, pad_ptr,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *pad_strides,
        heads, sq, sk, scale * _LOG2E,
        **_common(q, pad), **config,
    )  # fmt: skip
    return out, lse


def _backward(q, k, v, pad, scale, out, lse, grad_out):
    """(dq, dk, dv), contiguous, in the inputs' dtype."""
    batch, heads, sq, head_dim = q.shape
    sk = k.shape[2]
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    delta = torch.empty((batch, heads, sq), dtype=torch.float32, device=q.device)
    if delta.numel():
        block = _clamp(64, sq)
        _attention_bwd_delta_kernel[(batch * heads * triton.cdiv(sq, block),)](
            out, grad_out, delta, *out.stride(), *grad_out.stride(), heads, sq,
            HEAD_DIM=head_dim, BLOCK_M=block,
        )  # fmt: skip
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(k.shape, dtype=v.dtype, device=v.device)
    if sq == 0:  # no queries: nothing depends on k or v
        dk.zero_()
        dv.zero_()
    config = backward_config(q.dtype, head_dim, sq, sk)
    common = _common(q, pad)
    launch = dict(num_warps=config["num_warps"], num_stages=config["num_stages"])
    pad_ptr, *pad_strides = _pad(pad, q)
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride())
    scalars = (heads, sq, sk, scale * _LOG2E, scale)
    if dk.numel() and sq:
        blocks = config["dkdv"]
        grid = (batch * heads * triton.cdiv(sk, blocks["BLOCK_N"]),)
        _attention_bwd_dkdv_kernel[grid](
            q, k, v, grad_out, lse, delta, pad_ptr, dk, dv,
            *strides, *dk.stride(), *pad_strides, *scalars,
            **common, **blocks, **launch,
        )  # fmt: skip
    if dq.numel():
        blocks = config["dq"]
        grid = (batch * heads * triton.cdiv(sq, blocks["BLOCK_M"]),)
        _attention_bwd_dq_kernel[grid](
            q, k, v, grad_out, lse, delta, pad_ptr, dq,
            *strides, *dq.stride(), *pad_strides, *scalars,
            **common, **blocks, **launch,
        )  # fmt: skip
    return dq, dk, dv


def _backward_reference(q, k, v, pad, scale, grad_out, needs):
    from pyslice.attention import attention_math

    with torch.enable_grad():
        inputs = [t.detach().requires_grad_(need) for t, need in zip((q, k, v), needs)]
        out = attention_math(*inputs, None if pad is None else pad.bool(), scale=scale)
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out)) if wanted else iter(())
    return tuple(next(grads) if need else None for need in needs)


def _on_device(t: torch.Tensor):
    """Launch on the tensors' GPU, whichever is current (Triton uses the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pad, scale, backward):
        with _on_device(q):
            out, lse = _forward(q, k, v, pad, scale)
        ctx.save_for_backward(q, k, v, pad, out, lse)
        ctx.scale = scale
        ctx.backward_mode = backward
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, pad, out, lse = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if ctx.backward_mode == "reference":
            grads = _backward_reference(q, k, v, pad, ctx.scale, grad_out, needs)
        else:
            with _on_device(q):
                dq, dk, dv = _backward(q, k, v, pad, ctx.scale, out, lse, grad_out)
            grads = tuple(g if need else None for g, need in zip((dq, dk, dv), needs))
        return (*grads, None, None, None)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    backward: str = "triton",
) -> torch.Tensor:
    """``q: (B, H, Sq, D)``, ``k, v: (B, H, Sk, D)`` (one dtype of float32/float16/bfloat16, one
    device), ``key_padding_mask: (B, Sk) bool`` or None -> ``(B, H, Sq, D)`` in q's dtype.

    ``backward``: "triton" (the fused backward kernels) or "reference" (recompute with
    ``pyslice.attention.attention_math`` under autograd). Arguments are checked by
    ``pyslice.attention.attention``; this function only makes layouts kernel-friendly.
    """
    if backward not in ("triton", "reference"):
        raise ValueError(f"backward must be 'triton' or 'reference', got {backward!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    # Any strides work in the kernels (views of a fused qkv projection are not copied); a unit
    # stride on the head dimension keeps loads coalesced.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    pad = None
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.uint8)
    out, _ = _Attention.apply(q, k, v, pad, float(scale), backward)
    return out
