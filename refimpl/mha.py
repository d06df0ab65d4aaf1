"""Multi-head (self- or cross-) attention with input and output projections (docs/notes.md#multi-head-attention)."""

from __future__ import annotations

import numpy as np

from . import _validate as V
from ._validate import layers as _L
from .rope import apply_rope, check_rope_kwargs
from .sdpa import attention


# attention names its q, k, v: here they are projections of the arguments ("q, k, scale: expected ..." ->
# "x_q, W_q, x_kv, W_k, scale: expected ...")
_PROJECTED = {"q": "x_q, W_q", "k": "x_kv, W_k", "v": "x_kv, W_v"}


def multi_head_attention(x_q, x_kv, W_q, W_k, W_v, W_o, *, num_heads: int, num_kv_heads: int | None = None, rope=None,
                         **attention_kwargs):
    """Multi-head (self- or cross-) attention with projections, inputs (B, L, d_model).

        Q = x_q W_q, K = x_kv W_k, V = x_kv W_v           (docs/notes.md#multi-head-attention)
        split into heads: (B, L, H*d) -> (B, L, H, d) -> (B, H, L, d)
        Q, K rotated at positions 0..Lq-1, 0..Lk-1 when ``rope`` (a dict of
        ``refimpl.rope.apply_rope`` keywords) is given (Llama: {"layout": "half", "base": theta})
        A = attention(Q, K, V, **attention_kwargs)          (GQA when num_kv_heads < num_heads)
        concat heads: (B, H, Lq, dv) -> (B, Lq, H*dv);  MHA = A W_o  (eq. 8)

    Shapes: x_q (B, Lq, d_model), x_kv (B, Lk, d_model); W_q (d_model, Hq*D),
    W_k (d_model, Hkv*D), W_v (d_model, Hkv*Dv), W_o (Hq*Dv, d_out). Returns (B, Lq, d_out).
    Self-attention: ``x_kv is x_q``; cross-attention: queries from one sequence,
    keys and values from another (Lq may differ from Lk).
    """
    Hq, Hkv, x_q, x_kv, W, D, Dv = _L.mha_inputs(x_q, x_kv, dict(W_q=W_q, W_k=W_k, W_v=W_v, W_o=W_o), num_heads,
                                                 num_kv_heads)

    def heads(x, Wm, H, d, names):
        B, L, _ = x.shape
        with np.errstate(over="ignore", invalid="ignore"):
            proj = V.finite_result(x @ Wm, "a projection", names)
        return proj.reshape(B, L, H, d).transpose(0, 2, 1, 3)

    Q = heads(x_q, W["W_q"], Hq, D, "x_q, W_q")
    K = heads(x_kv, W["W_k"], Hkv, D, "x_kv, W_k")
    if rope is not None:
        kw = check_rope_kwargs(rope, D)
        Q = apply_rope(Q, np.arange(Q.shape[2]), **kw)
        K = apply_rope(K, np.arange(K.shape[2]), **kw)
    Vh = heads(x_kv, W["W_v"], Hkv, Dv, "x_kv, W_v")
    with _L.renamed(_L.caller_names(_PROJECTED)):
        A, _ = attention(Q, K, Vh, **attention_kwargs)
    B, _, Lq, _ = A.shape
    with np.errstate(over="ignore", invalid="ignore"):
        return V.finite_result(A.transpose(0, 2, 1, 3).reshape(B, Lq, Hq * Dv) @ W["W_o"], "an output", "W_o")
