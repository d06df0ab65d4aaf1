"""Attention adapters: the bundled implementations and the deliberately wrong ones.

``NaiveAttention`` is a second, independent float64 implementation (written
directly from the formula with ``np.repeat`` for GQA and a materialised mask),
so the suite never checks refimpl only against itself. With ``bug=...`` it
becomes one of the wrong implementations the meta-tests feed to the
properties; each bug is a mistake seen in real kernels or in the notes (docs/errata.md#e1, docs/errata.md#e2):

    top_left_for_bottom_right  causal/window aligned top-left although bottom-right was asked
    ignore_align               always bottom-right, even when top-left was asked
    window_off_by_one          left window one key too wide (W + 1 keys for W, docs/errata.md#e2)
    head_map_mod               GQA query head h reads kv head h % Hkv instead of h // G
    no_max_subtraction         exp(s) without subtracting the row max: overflows
    no_scale                   forgets the default 1/sqrt(D)
    inverted_causal            the causal mask as the notes print it (docs/errata.md#e1)
    nan_empty_rows             a fully masked row gives NaN (0/0), as the xformers reference
    uniform_empty_rows         a fully masked row averages all values (finite mask value, JAX)
    dropout_no_rescale         kept probabilities not divided by (1 - p)
    dropout_before_softmax     keep-mask applied to scores, then renormalised
    mutates_input              scales q in place (the caller's array changes)
    online_no_rescale          blockwise over keys, accumulator not rescaled when the max grows
    backward_no_D              dS = P * dP (drops the rowsum(dO * O) term)
    backward_no_softcap_grad   forgets the tanh' factor of softcap
    backward_dk_one_head       dK/dV from the first query head of each group only
    padding_on_queries         key_padding_mask applied to query rows instead of key columns
    alibi_top_left             ALiBi distances |i - j| even when bottom_right alignment was asked
    sink_in_numerator          exp(sink) added to every key's numerator too (weights no longer < 1)
    sink_scaled                the sink logit multiplied by the softmax scale like a score
    varlen_packed_causal       varlen causal aligned on the packed (total_q, total_k) matrix, not per sequence
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

import refimpl
from refimpl import masks as M

from .attention_cases import ALL_CAPS


@dataclasses.dataclass(frozen=True)
class AttentionAdapter:
    """Adapter protocol for attention implementations.

    forward(q, k, v, **kwargs) -> (out, lse) with the attention kind's keywords
    (``properties.attention_cases.ATTENTION_KIND``: refimpl.attention's plus
    key_padding_mask, alibi_slopes, sinks, cu_seqlens_q/k).
    backward(q, k, v, dout, **kwargs) -> (dq, dk, dv), if "backward" in capabilities.
    precision: "float64" (default), "float32", "bfloat16" or "float16": the
    arithmetic it is held to (``properties.tolerance``; inputs arrive as float64
    arrays whose values are exact in that precision).
    tiling: (block_k, chunks) for a tiled float64 implementation: its bound
    grows with the number of online-softmax steps (``flash_forward_bounds``).
    declines, tiles, head_dims, max_len: see properties.protocol (option values
    never drawn; the sizes strategies draw around).
    convention: a name in ``refimpl.conventions.PRESETS`` ("xformers", "hf_mistral",
    "flash_attn2", "jax", ...): expected values follow that library (its fully
    masked rows and their lse); keywords stay in the spec's form.
    """

    name: str
    forward: Callable
    capabilities: frozenset
    backward: Callable | None = None
    precision: str = "float64"
    tiling: tuple | None = None
    kind: str = "attention"
    declines: dict = dataclasses.field(default_factory=dict)
    tiles: tuple | None = None
    head_dims: tuple | None = None
    max_len: int | None = None
    convention: str | None = None


BUGS = (
    "top_left_for_bottom_right",
    "ignore_align",
    "window_off_by_one",
    "head_map_mod",
    "no_max_subtraction",
    "no_scale",
    "inverted_causal",
    "nan_empty_rows",
    "uniform_empty_rows",
    "dropout_no_rescale",
    "dropout_before_softmax",
    "mutates_input",
    "online_no_rescale",
    "backward_no_D",
    "backward_no_softcap_grad",
    "backward_dk_one_head",
    "padding_on_queries",
    "alibi_top_left",
    "sink_in_numerator",
    "sink_scaled",
    "varlen_packed_causal",
)


def _varlen_positions(cu_q, cu_k, Lq, Lk, align, bug):
    """Per query and key: sequence id, local index, and the per-sequence offset o_s of each query."""
    cu_q, cu_k = np.asarray(cu_q), np.asarray(cu_k)
    nq, nk = np.diff(cu_q), np.diff(cu_k)
    seq_q, seq_k = np.repeat(np.arange(len(nq)), nq), np.repeat(np.arange(len(nk)), nk)
    a = np.arange(Lq) - cu_q[seq_q]
    b = np.arange(Lk) - cu_k[seq_k]
    o = (nk - nq)[seq_q] if align == "bottom_right" else np.zeros(Lq, dtype=np.int64)
    if bug == "varlen_packed_causal":  # positions of the packed matrix
        a, b = np.arange(Lq), np.arange(Lk)
        o = np.full(Lq, Lk - Lq if align == "bottom_right" else 0)
    return seq_q, seq_k, a, b, o


def _visible(Lq, Lk, B, Hq, mask, causal, align, window, bias, bug, cu_seqlens=None, key_padding_mask=None):
    o = Lk - Lq if align == "bottom_right" else 0
    if bug == "top_left_for_bottom_right":
        o = 0
    if bug == "ignore_align":
        o = Lk - Lq
    i = np.arange(Lq)[:, None]
    j = np.arange(Lk)[None, :]
    vis = np.ones((B, Hq, Lq, Lk), dtype=bool)
    if cu_seqlens is not None:
        seq_q, seq_k, a, b, oo = _varlen_positions(*cu_seqlens, Lq, Lk, align, bug)
        vis &= seq_q[:, None] == seq_k[None, :]
        i, j, o = a[:, None], b[None, :], oo[:, None]
    if key_padding_mask is not None:
        kpm = np.asarray(key_padding_mask, dtype=bool)
        if bug == "padding_on_queries":
            vis &= kpm[:, None, np.minimum(np.arange(Lq), Lk - 1), None]
        else:
            vis &= kpm[:, None, None, :]
    if causal:
        vis &= (i + o < j) if bug == "inverted_causal" else (j <= i + o)
    if window is not None:
        left, right = window
        if left is not None:
            vis &= j >= i + o - (left + 1 if bug == "window_off_by_one" else left)
        if right is not None:
            vis &= j <= i + o + right
    if mask is not None:
        vis &= mask.materialize(Lq, Lk) if isinstance(mask, M.Mask) else np.asarray(mask, dtype=bool)
    if bias is not None:
        vis &= np.isfinite(bias)
    return vis


def _scores(q, k, scale, softcap, bias, bug):
    D = q.shape[-1]
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    if bug == "no_scale" and scale is None:
        sc = 1.0
    if bug == "mutates_input":
        q *= sc  # the bug: writes into the caller's array
        raw = q @ np.swapaxes(k, -1, -2)
    else:
        raw = sc * (q @ np.swapaxes(k, -1, -2))
    s = raw if softcap is None else softcap * np.tanh(raw / softcap)
    if bias is not None:
        s = s + np.where(np.isfinite(bias), bias, 0.0)
    return s, raw, sc


def _kv_heads(Hq, Hkv, bug):
    G = Hq // Hkv
    return np.arange(Hq) % Hkv if bug == "head_map_mod" else np.arange(Hq) // G


def _alibi(slopes, B, Hq, Lq, Lk, align, bug, cu_seqlens=None):
    """-slope_h |i + o - j| as a (B, Hq, Lq, Lk) array (local indices per sequence under varlen)."""
    sl = np.asarray(slopes, np.float64)
    sl = np.broadcast_to(sl if sl.ndim == 2 else sl[None], (B, Hq))[:, :, None, None]
    if bug == "alibi_top_left":
        align = "top_left"
    if cu_seqlens is not None:
        _, _, a, b, o = _varlen_positions(*cu_seqlens, Lq, Lk, align, None)
        return -sl * np.abs((a + o)[:, None] - b[None, :])
    o = Lk - Lq if align == "bottom_right" else 0
    dist = np.abs(np.arange(Lq)[:, None] + o - np.arange(Lk)[None, :])
    return -sl * dist


def naive_attention(
    q, k, v, *, mask=None, causal=False, align="bottom_right", window=None, scale=None,
    softcap=None, bias=None, dropout_mask=None, dropout_p=0.0, key_padding_mask=None, alibi_slopes=None,
    sinks=None, cu_seqlens_q=None, cu_seqlens_k=None, bug=None, return_probs=False,
):
    """Attention straight from the formula, independent of refimpl.attention.

    Sinks: the softmax runs over the row's scores and the head's sink logit, whose
    column is then dropped (gpt-oss ``sdpa``)."""
    if bug != "mutates_input":
        q = np.array(q, dtype=np.float64)
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    idx = _kv_heads(Hq, Hkv, bug)
    K, V = np.asarray(k, np.float64)[:, idx], np.asarray(v, np.float64)[:, idx]
    if alibi_slopes is not None:
        ab = _alibi(alibi_slopes, B, Hq, Lq, Lk, align, bug, None if cu_seqlens_q is None else (cu_seqlens_q, cu_seqlens_k))
        bias = ab if bias is None else bias + ab
    s, _, sc = _scores(q, K, scale, softcap, bias, bug)
    cu = None if cu_seqlens_q is None else (cu_seqlens_q, cu_seqlens_k)
    vis = _visible(Lq, Lk, B, Hq, mask, causal, align, window, bias, bug, cu, key_padding_mask)
    if sinks is not None:
        return _with_sink(s, vis, V, np.asarray(sinks, np.float64) * (sc if bug == "sink_scaled" else 1.0), bug)
    if dropout_mask is not None and bug == "dropout_before_softmax":
        vis = vis & dropout_mask
    s = np.where(vis, s, -np.inf)
    any_vis = vis.any(axis=-1, keepdims=True)
    m = np.where(any_vis, np.max(s, axis=-1, keepdims=True, initial=-np.inf), 0.0)
    if bug == "no_max_subtraction":
        m = np.zeros_like(m)
    if bug == "online_no_rescale":
        e, l = _online_no_rescale_weights(s)
    else:
        with np.errstate(over="ignore"):
            e = np.exp(s - m)
        l = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if bug == "nan_empty_rows":
            P = e / l
        else:
            P = np.where(l > 0, e / np.where(l > 0, l, 1.0), 0.0)
        if bug == "uniform_empty_rows":
            P = np.where(any_vis, P, 1.0 / Lk)
        lse = np.where(l[..., 0] > 0, m[..., 0] + np.log(np.where(l[..., 0] > 0, l[..., 0], 1.0)), -np.inf)
    Pd = P
    if dropout_mask is not None and bug != "dropout_before_softmax":
        Pd = P * dropout_mask if bug == "dropout_no_rescale" else P * dropout_mask / (1.0 - dropout_p)
    out = Pd @ V
    return (out, lse, P) if return_probs else (out, lse)


def _with_sink(s, vis, V, sinks, bug):
    """Softmax over [visible scores, sink] with the sink's column dropped; lse includes the sink."""
    sink = np.broadcast_to(sinks[None, :, None, None], s.shape[:3] + (1,))
    full = np.concatenate([np.where(vis, s, -np.inf), sink], axis=-1)
    m = np.max(full, axis=-1, keepdims=True)  # finite: the sink column always is
    e = np.exp(full - m)
    l = np.sum(e, axis=-1, keepdims=True)
    P = e[..., :-1] / l
    if bug == "sink_in_numerator":
        P = np.where(vis, (e[..., :-1] + e[..., -1:]) / l, 0.0)
    return P @ V, (m + np.log(l))[..., 0]


def _online_no_rescale_weights(s, block=2):
    """Blockwise over keys with the accumulator's rescale forgotten: the weight of an
    early block stays exp(s - m_old) after the running max grows to m_new."""
    Lk = s.shape[-1]
    m = np.full(s.shape[:-1] + (1,), -np.inf)
    l = np.zeros(s.shape[:-1] + (1,))
    e = np.zeros_like(s)
    for j0 in range(0, Lk, block):
        blk = s[..., j0 : j0 + block]
        m_new = np.maximum(m, np.max(blk, axis=-1, keepdims=True))
        safe = np.where(np.isfinite(m_new), m_new, 0.0)
        eb = np.where(np.isfinite(blk), np.exp(blk - safe), 0.0)
        l = l * np.where(np.isfinite(m), np.exp(m - safe), 0.0) + eb.sum(-1, keepdims=True)
        e[..., j0 : j0 + block] = eb  # earlier columns keep their stale scale: the bug
        m = m_new
    return e, l


def naive_attention_backward(q, k, v, dout, *, bug=None, **kw):
    """Gradients straight from the formula (see refimpl.attention_backward)."""
    q = np.asarray(q, np.float64)
    B, Hq, Lq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    idx = _kv_heads(Hq, Hkv, None)
    K, V = np.asarray(k, np.float64)[:, idx], np.asarray(v, np.float64)[:, idx]
    _, _, P = naive_attention(q, k, v, **kw, return_probs=True)
    _, raw, sc = _scores(q, K, kw.get("scale"), kw.get("softcap"), None, None)
    Z = 1.0
    if kw.get("dropout_mask") is not None:
        Z = kw["dropout_mask"] / (1.0 - kw["dropout_p"])
    dV = np.swapaxes(P * Z, -1, -2) @ dout
    dP = (dout @ np.swapaxes(V, -1, -2)) * Z
    Drow = 0.0 if bug == "backward_no_D" else np.sum(P * dP, axis=-1, keepdims=True)
    dS = P * (dP - Drow)
    if kw.get("softcap") is not None and bug != "backward_no_softcap_grad":
        dS = dS * (1.0 - np.tanh(raw / kw["softcap"]) ** 2)
    dq = sc * dS @ K
    dK = sc * np.swapaxes(dS, -1, -2) @ q
    if bug == "backward_dk_one_head":
        dk = dK.reshape(B, Hkv, G, *dK.shape[2:])[:, :, 0]
        dv = dV.reshape(B, Hkv, G, *dV.shape[2:])[:, :, 0]
    else:
        dk = dK.reshape(B, Hkv, G, *dK.shape[2:]).sum(axis=2)
        dv = dV.reshape(B, Hkv, G, *dV.shape[2:]).sum(axis=2)
    return dq, dk, dv


def naive_adapter(bug=None) -> AttentionAdapter:
    name = "properties.naive_attention" + (f"[bug={bug}]" if bug else "")
    return AttentionAdapter(
        name=name,
        forward=lambda q, k, v, **kw: naive_attention(q, k, v, bug=bug, **kw),
        backward=lambda q, k, v, do, **kw: naive_attention_backward(
            q, k, v, do, bug=bug if bug and bug.startswith("backward") else None, **kw
        ),
        capabilities=ALL_CAPS,
    )


REFIMPL_ATTENTION = AttentionAdapter(
    name="refimpl.attention",
    forward=refimpl.attention,
    backward=refimpl.attention_backward,
    capabilities=ALL_CAPS - {"key_padding", "alibi_slopes", "sinks", "varlen"},  # keywords it does not take
)

BUNDLED = [REFIMPL_ATTENTION, naive_adapter()]
WRONG = {bug: naive_adapter(bug) for bug in BUGS}
