"""Gated blends of two attention branches and per-head logit scales (docs/gated.md).

Gated fusion (``gated_fusion``), per token and channel:

    lambda = sigmoid(x W_lambda + b_lambda)            (L, d), in (0, 1)
    y      = x + lambda * o_local + (1 - lambda) * o_stride

so y - x lies between o_local and o_stride in every channel. ``dual_chunk_branches`` computes the two
branches over ``refimpl.masks.dual_chunk_masks`` (a causal window of ``window`` keys including self, and
every ``stride``-th key at absolute positions), the notes' simplified dual-chunk scheme
(docs/notes.md#dual-chunk; not Qwen's published Dual Chunk Attention, which remaps positions).

Per-head logit scale (``head_scaled_attention``): head h uses scores s_h q_h . k / sqrt(D), s_h > 0
learned, i.e. ``refimpl.attention`` with ``scale = s_h / sqrt(D)`` head by head; equal to scaling q_h by s_h.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float_array, finite_result, positive_int
from ._validate.layers import positive_entries
from .logistic import mul_sigmoid
from .mask_patterns import dual_chunk_masks
from .sdpa import attention


def gated_fusion(x, o_local, o_stride, W_lambda, b_lambda) -> np.ndarray:
    """y = x + lambda o_local + (1 - lambda) o_stride, lambda = sigmoid(x W_lambda + b_lambda); x, o_* (L, d)."""
    x = as_float_array(x, "x", ndim=2, shape_doc="(L, d)", min_size={1: 1})
    ol = as_float_array(o_local, "o_local", shape=x.shape, shape_doc="(L, d), as x")
    os_ = as_float_array(o_stride, "o_stride", shape=x.shape, shape_doc="(L, d), as x")
    W = as_float_array(W_lambda, "W_lambda", shape=(x.shape[1], x.shape[1]), shape_doc="(d, d)")
    b = as_float_array(b_lambda, "b_lambda", shape=(x.shape[1],), shape_doc="(d,)")
    with np.errstate(over="ignore", invalid="ignore"):
        z = finite_result(x @ W + b, "the gate logits", "x, W_lambda, b_lambda")
        y = x + mul_sigmoid(ol, z) + mul_sigmoid(os_, -z)  # 1 - lambda = sigmoid(-z): no cancellation at z >> 0
    return finite_result(y, "the output", "x, o_local, o_stride")


def dual_chunk_branches(q, k, v, *, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(o_local, o_stride): refimpl.attention of (B, H, L, D) inputs over the two dual_chunk_masks."""
    local, strided = dual_chunk_masks(positive_int(window, "window"), positive_int(stride, "stride"))
    q = as_float_array(q, "q", ndim=4, shape_doc="(B, H, L, D)")
    k = as_float_array(k, "k", ndim=4, shape_doc="(B, Hkv, Lk, D)")
    L, Lk = q.shape[2], k.shape[2]
    o_local, _ = attention(q, k, v, mask=local.materialize(L, Lk)[None, None])
    o_stride, _ = attention(q, k, v, mask=strided.materialize(L, Lk)[None, None])
    return o_local, o_stride


def head_scaled_attention(q, k, v, head_scale, *, causal: bool = False) -> np.ndarray:
    """Head h with scores head_scale[h] q.k / sqrt(D): q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv),
    head_scale (H,) > 0 (one K/V head per query head)."""
    q = as_float_array(q, "q", ndim=4, shape_doc="(B, H, Lq, D)", min_size={1: 1, 3: 1})
    B, H, _, D = q.shape
    k = as_float_array(k, "k", shape=(B, H, None, D), shape_doc="(B, H, Lk, D)")
    v = as_float_array(v, "v", shape=(B, H, k.shape[2], None), shape_doc="(B, H, Lk, Dv)")
    s = positive_entries(as_float_array(head_scale, "head_scale", shape=(H,), shape_doc="(H,)"), "head_scale",
                         "positive scales")
    return np.concatenate([attention(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], causal=causal,
                                     scale=float(s[h]) / np.sqrt(D))[0] for h in range(H)], axis=1)


__all__ = ["gated_fusion", "dual_chunk_branches", "head_scaled_attention"]
