"""Multi-head (self- or cross-) attention with input and output projections (docs/notes.md#multi-head-attention)."""

from __future__ import annotations

import numpy as np

from . import _validate as V
from .rope import apply_rope, check_rope_kwargs
from .sdpa import attention


_PROJECTED = {"q": "x_q, W_q", "k": "x_kv, W_k", "v": "x_kv, W_v"}


def _caller_names(msg: str) -> str:
    """An attention message "<names>: ..." with q, k, v replaced by the arguments they are projected from
    ("q, k, scale: expected every visible score ..." -> "x_q, W_q, x_kv, W_k, scale: expected ...")."""
    head, sep, rest = msg.partition(": ")
    names = head.split(", ")
    if not sep or not set(names) & set(_PROJECTED):
        return msg
    out = []
    for n in names:
        out += [m for m in _PROJECTED.get(n, n).split(", ") if m not in out]
    return ", ".join(out) + sep + rest


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
    Hq = V.count(num_heads, "num_heads", minimum=1)
    Hkv = Hq if num_kv_heads is None else V.count(num_kv_heads, "num_kv_heads", minimum=1)
    if Hq % Hkv:
        raise ValueError(f"num_heads, num_kv_heads: expected num_heads a positive multiple of num_kv_heads, "
                         f"got {num_heads} and {num_kv_heads}")
    x_q = V.as_float_array(x_q, "x_q", ndim=3, shape_doc="(B, Lq, d_model)")
    x_kv = V.as_float_array(x_kv, "x_kv", shape=(x_q.shape[0], None, x_q.shape[2]),
                            shape_doc="(B, Lk, d_model) with B, d_model from x_q")
    W = {n: V.as_float_array(w, n, ndim=2) for n, w in dict(W_q=W_q, W_k=W_k, W_v=W_v, W_o=W_o).items()}
    d_model = x_q.shape[2]
    for name, heads in (("W_q", Hq), ("W_k", Hkv), ("W_v", Hkv)):
        if W[name].ndim != 2 or W[name].shape[0] != d_model or W[name].shape[1] % heads:
            hn = "num_heads" if name == "W_q" else "num_kv_heads"
            raise ValueError(f"{name}, {hn}: expected {name} of shape (d_model, heads * head_dim) with d_model = {d_model}, "
                             f"heads = {heads}, got {W[name].shape}")
    D, Dv = W["W_q"].shape[1] // Hq, W["W_v"].shape[1] // Hkv
    if W["W_k"].shape[1] != Hkv * D:
        raise ValueError(f"W_k: expected (d_model, {Hkv * D}) to match W_q's head dim {D}, got {W['W_k'].shape}")
    if W["W_o"].ndim != 2 or W["W_o"].shape[0] != Hq * Dv:
        raise ValueError(f"W_o: expected ({Hq * Dv}, d_out), got {W['W_o'].shape}")

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
    try:
        A, _ = attention(Q, K, Vh, **attention_kwargs)
    except (ValueError, TypeError) as e:  # attention names its q, k, v: these are projections of the arguments here
        raise type(e)(_caller_names(str(e))) from None
    B, _, Lq, _ = A.shape
    with np.errstate(over="ignore", invalid="ignore"):
        return V.finite_result(A.transpose(0, 2, 1, 3).reshape(B, Lq, Hq * Dv) @ W["W_o"], "an output", "W_o")
