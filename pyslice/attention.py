"""Multi-head attention for the side-chain transformer, with a key-padding mask for batches of
proteins of different lengths.

``attention(q, k, v, key_padding_mask)`` computes ``softmax(scale * q k^T) v`` over the keys that
are not padding. Implementations (chosen by ``pyslice.backends``, op ``"attention"``):

- ``"triton"``: the fused flash-attention kernels in ``pyslice.kernels.attention`` (forward and
  backward; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` when forced), float32,
  float16 and bfloat16, head dims 32, 64 and 128. Chosen automatically for CUDA tensors that fit;
  other head dims fall back to the torch path.
- ``"reference"``: the torch path, ``torch.nn.functional.scaled_dot_product_attention`` with a
  boolean mask built from the padding mask. It runs on every device and dtype and is the CPU path.

:func:`attention_math` is the explicit ``softmax(q k^T) v`` in float32 (float64 for float64 inputs):
the test oracle, and the math the Triton backward's fall-back differentiates.

Every path gives exact zeros (and zero gradients) for a query row whose keys are all padding, and
every path is differentiable with respect to q, k and v.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from pyslice import backends
from pyslice.backends import BackendUnavailable

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TRITON_HEAD_DIMS = (32, 64, 128)

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim) if head_dim else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    value = float(scale)
    if not math.isfinite(value):
        raise ValueError(f"scale must be finite, got {value}")
    return value


def _check(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, S, D), got {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
            raise TypeError(f"{name} must have dtype {names}, got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if k.shape != v.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"k must have shape (B, H, Sk, D) = ({q.shape[0]}, {q.shape[1]}, Sk, {q.shape[3]}) "
            f"to match q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if key_padding_mask is None:
        return
    if not isinstance(key_padding_mask, torch.Tensor):
        kind = type(key_padding_mask).__name__
        raise TypeError(f"key_padding_mask must be a torch.Tensor or None, got {kind}")
    if key_padding_mask.dtype != torch.bool:
        raise TypeError(
            f"key_padding_mask must be a bool tensor (True = padding), got {key_padding_mask.dtype}"
        )
    expected = (k.shape[0], k.shape[2])
    if tuple(key_padding_mask.shape) != expected:
        raise ValueError(
            f"key_padding_mask must have shape (B, Sk) = {expected}, "
            f"got {tuple(key_padding_mask.shape)}"
        )
    if key_padding_mask.device != q.device:
        raise ValueError(
            f"key_padding_mask must be on q's device {q.device}, got {key_padding_mask.device}"
        )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over the keys that are not padding.

    Args:
        q: ``(B, H, Sq, D)`` queries; float32, float64, float16 or bfloat16.
        k, v: ``(B, H, Sk, D)`` keys and values, q's dtype and device.
        key_padding_mask: ``(B, Sk) bool`` or None; True marks a padding key, left out of every
            softmax. A row whose keys are all padding gives zeros.
        scale: the softmax scale, default ``1 / sqrt(D)``.
        backend: "triton", "reference" or None (automatic; ``PYSLICE_BACKEND`` forces one too).

    Returns:
        ``(B, H, Sq, D)`` in q's dtype, differentiable with respect to q, k and v. The fast paths
        accumulate in float32 whatever the input dtype.
    """
    _check(q, k, v, key_padding_mask)
    head_dim = q.shape[-1]
    scale_value = _check_scale(scale, head_dim)
    forced = backends.requested_backend(backend)
    impl = backends.select("attention", q.device, q.dtype, forced)
    if impl.backend == "triton" and head_dim not in TRITON_HEAD_DIMS:
        if forced == "triton":
            raise BackendUnavailable(
                f"backend 'triton' cannot run attention: the head dim q.shape[-1] must be one of "
                f"{TRITON_HEAD_DIMS}, got {head_dim}"
            )
        impl = backends.select("attention", q.device, q.dtype, "reference")
    return impl(q, k, v, key_padding_mask, scale_value)


def attention_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The torch path: ``F.scaled_dot_product_attention`` with the padding mask as a boolean
    ``attn_mask`` (True = attend). Rows whose keys are all padding attend to every key inside
    SDPA (so it never sees an all-False row, which would give NaN) and are then set to zero."""
    if k.shape[2] == 0:
        return attention_math(q, k, v, key_padding_mask, scale=scale)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    empty = key_padding_mask.all(dim=1)  # (B,)
    keep = ~key_padding_mask | empty[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], scale=scale)
    return torch.where(empty[:, None, None, None], out.new_zeros(()), out)


def attention_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Explicit ``softmax(scale * q k^T) v`` in float32 (float64 for float64 inputs), returned in
    q's dtype: the readable definition, the test oracle, and the math that the Triton backward's
    fall-back differentiates. Padding keys get a score of -inf; a row with no valid key gets
    probabilities 0, hence a zero output and zero gradients (never NaN)."""
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    qc, kc, vc = (t.to(compute) for t in (q, k, v))
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale  # (B, H, Sq, Sk)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
    if scores.shape[-1] == 0:
        probs = scores
    else:
        top = scores.amax(dim=-1, keepdim=True).detach()
        top = torch.where(torch.isfinite(top), top, torch.zeros((), dtype=compute))
        weights = torch.exp(scores - top)
        total = weights.sum(dim=-1, keepdim=True)
        probs = weights / torch.where(total > 0, total, torch.ones((), dtype=compute))
    return torch.matmul(probs, vc).to(q.dtype)
