"""Attention, the definition: the spec in one screen. Every fast form is tested equal to it.

``attention_definition`` is scaled dot-product attention written once, whole
arrays, one line of NumPy per step of the formula (flash-attn's order of
operations; ``tests/test_flash_attn.py::attention_ref`` in Dao-AILab/flash-attention):

    s_ij  = scale * <q_i, k_j>                    scale = 1/sqrt(D) unless given
    s_ij  = softcap * tanh(s_ij / softcap)        if softcap
    s_ij  = s_ij + bias_ij                        if bias (ALiBi, additive masks)
    s_ij  = -inf where (i, j) is hidden           mask & causal & window
    P_ij  = exp(s_ij - m_i) / l_i                 m_i = max_j s_ij, l_i = sum_j exp(s_ij - m_i); 0 if l_i = 0
    out_i = sum_j P_ij * keep_ij / (1 - p) * v_j  dropout by an explicit keep-mask
    lse_i = m_i + log l_i                         -inf for a fully masked row

GQA: query head h reads kv head h // (Hq // Hkv). Visibility: query i sits at
key position p_i = i + o (o = Lk - Lq for ``align="bottom_right"``, 0 for
"top_left"; ``refimpl.masks``); causal shows j <= p_i, ``window=(left, right)``
shows p_i - left <= j <= p_i + right (None: unbounded side).

``attention_backward_definition`` is its gradient written out (no autograd):
dV = (P Z)^T dO, dP = (dO V^T) Z, dS = P (dP - rowsum(P dP)), times
1 - tanh^2(R / c) under softcap c (R the pre-softcap scores), dQ = scale dS K,
dK = scale dS^T Q, dK and dV summed over the query heads of a group.

The fast forms, each tested equal to these within a derived bound
(tests/test_definition.py, whose docstring derives the bound):
``refimpl.attention`` / ``attention_backward`` / ``attention_probs`` (chunked,
threaded, rescaled near the float64 range: ``refimpl.sdpa``),
``refimpl.flash_attention`` FA1 / FA2 and ``flash_attention_backward`` (tiled:
``refimpl.flash``), ``refimpl.split_kv_attention`` (split-KV), and ring attention (forward and
backward) and Ulysses over simulated ranks (``refimpl.distributed``).

Arguments and errors are those of ``refimpl.attention`` (checks in
``refimpl._validate``). The definition materialises (B, Hq, Lq, Lk) and
computes scores as they come: it is the formula, not a path for scores beyond
float64 (where ``refimpl.attention`` rescales by powers of two or refuses).
"""

from __future__ import annotations

import numpy as np

from . import _validate as V
from ._validate.conventions import definition_scores_finite
from .masks import Mask, offset

__all__ = ["attention_definition", "attention_backward_definition"]  # and attention_arguments, visibility (helpers)


def attention_definition(q, k, v, *, mask=None, causal=False, align="bottom_right", window=None, scale=None,
                         softcap=None, bias=None, dropout_mask=None, dropout_p=0.0):
    """(out (B, Hq, Lq, Dv), lse (B, Hq, Lq)), float64: the formula of the module docstring."""
    q, k, v, scale, softcap, visible, bias, Z = attention_arguments(q, k, v, mask, causal, align, window, scale,
                                                                    softcap, bias, dropout_mask, dropout_p, work=64)
    k, v = np.repeat(k, q.shape[1] // k.shape[1], axis=1), np.repeat(v, q.shape[1] // k.shape[1], axis=1)  # GQA
    r = scale * (q @ k.swapaxes(-1, -2))                                  # r = scale <q_i, k_j>
    s = r if softcap is None else softcap * np.tanh(r / softcap)          # s = c tanh(r / c)
    s = s if bias is None else s + bias                                   # s = s + bias
    s = np.where(_in_range(visible, r, s, bias), s, -np.inf)              # s = -inf where hidden
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)                # m_i = max_j s_ij
    e = np.exp(s - np.where(np.isneginf(m), 0.0, m))                      # exp(s - m), 0 where hidden
    l = np.sum(e, axis=-1, keepdims=True)                                 # l_i = sum_j exp(s_ij - m_i)
    P = np.divide(e, l, out=np.zeros_like(e), where=l > 0)                # P = e / l, 0 in a fully masked row
    out = (P * Z) @ v                                                     # out = (P * Z) V
    with np.errstate(divide="ignore"):
        lse = (m + np.log(l))[..., 0]                                     # lse = m + log l (-inf: fully masked)
    return V.finite_result(out, "the output", "v, dropout_p"), lse


def attention_backward_definition(q, k, v, dout, *, mask=None, causal=False, align="bottom_right", window=None,
                                  scale=None, softcap=None, bias=None, dropout_mask=None, dropout_p=0.0):
    """(dq, dk, dv), float64: the gradients of sum(dout * out), the formulas of the module docstring."""
    q, k, v, scale, softcap, visible, bias, Z = attention_arguments(q, k, v, mask, causal, align, window, scale,
                                                                    softcap, bias, dropout_mask, dropout_p, work=96)
    dout = V.check_real_4d(dout, "dout").astype(np.float64, copy=False)
    V.same_shape(dout, q.shape[:3] + v.shape[3:], "dout")
    G = q.shape[1] // k.shape[1]
    kr, vr = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
    R = scale * (q @ kr.swapaxes(-1, -2))                                 # pre-softcap scores
    s = R if softcap is None else softcap * np.tanh(R / softcap)
    s = s if bias is None else s + bias
    P = attention_probs_of(np.where(_in_range(visible, R, s, bias), s, -np.inf))
    dv = (P * Z).swapaxes(-1, -2) @ dout                                  # dV = (P Z)^T dO
    dP = (dout @ vr.swapaxes(-1, -2)) * Z                                 # dP = (dO V^T) Z
    dS = P * (dP - np.sum(P * dP, axis=-1, keepdims=True))                # dS = P (dP - D)
    dS = dS if softcap is None else dS * (1.0 - np.tanh(R / softcap) ** 2)  # dR = dS (1 - tanh^2(R / c))
    dq, dk = scale * (dS @ kr), scale * (dS.swapaxes(-1, -2) @ q)         # dQ = scale dS K, dK = scale dS^T Q
    group = lambda x: x.reshape(x.shape[0], k.shape[1], G, *x.shape[2:]).sum(axis=2)  # noqa: E731
    grads = dq, group(dk), group(dv)
    return tuple(V.finite_result(g, f"the gradient {n}", "dout, v") for g, n in zip(grads, ("dq", "dk", "dv")))


def attention_probs_of(s: np.ndarray) -> np.ndarray:
    """softmax over the last axis of final scores s (-inf = hidden), 0 in a fully masked row."""
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)
    e = np.exp(s - np.where(np.isneginf(m), 0.0, m))
    l = np.sum(e, axis=-1, keepdims=True)
    return np.divide(e, l, out=np.zeros_like(e), where=l > 0)


def _in_range(visible: np.ndarray, r: np.ndarray, s: np.ndarray, bias) -> np.ndarray:
    """``visible``, after checking that every visible score is a float64 number, before (r) and after
    (s) softcap and bias (a -inf bias hides its key): overflowed arithmetic is no definition."""
    bad = visible & (~np.isfinite(r) | ~np.isfinite(s))
    if bias is not None:
        bad &= ~np.isneginf(bias)
    definition_scores_finite(bad)
    return visible


def visibility(mask, causal, align, window, full_shape: tuple) -> np.ndarray:
    """bool, broadcastable to (B, Hq, Lq, Lk): True where query i may attend to key j."""
    Lq, Lk = full_shape[2], full_shape[3]
    p = np.arange(Lq)[:, None] + offset(Lq, Lk, align)                   # key position of query i
    V.flag(causal, "causal")
    j = np.arange(Lk)[None, :]
    left, right = (None if w is None or w > Lq + Lk else w for w in V.check_window(window) or (None, None))  # wider: unbounded
    visible = np.ones((Lq, Lk), dtype=bool)
    visible &= (j <= p) if causal else True
    visible &= (j >= p - left) if left is not None else True
    visible &= (j <= p + right) if right is not None else True
    if isinstance(mask, Mask):
        return visible & mask.materialize(Lq, Lk)
    return visible if mask is None else visible & V.attention_bool_mask(mask, full_shape)


def attention_arguments(q, k, v, mask=None, causal=False, align="bottom_right", window=None, scale=None,
                        softcap=None, bias=None, dropout_mask=None, dropout_p=0.0, *, work=1):
    """``refimpl.attention``'s arguments validated, in its order of checks and with its messages:
    (q, k, v as float64 (B, H, L, D) arrays, scale, softcap or None, visible (bool, broadcastable
    to (B, Hq, Lq, Lk)), bias (4-D, broadcastable) or None, Z = keep / (1 - p) (broadcastable;
    1.0 without dropout)). For implementations that want the spec's arguments, not its arithmetic
    (the properties' independent tiled kernels). ``work``: bytes per (b, h, i, j) the caller will
    hold (1: the visibility mask built here); beyond REFIMPL_MAX_BYTES a ValueError naming q, k."""
    q, k, v = (V.check_real_4d(x, n).astype(np.float64, copy=False) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    B, Hq, _, Lq, Lk, D, _ = V.check_qkv_shapes(q, k, v)
    full = (B, Hq, Lq, Lk)
    V.check_budget("q, k", shape=full, itemsize=work, what="the (B, Hq, Lq, Lk) arrays of the definition")
    scale = V.attention_scale(scale, D)
    softcap = None if softcap is None else V.positive_float(softcap, "softcap")
    visible = visibility(mask, causal, align, window, full)
    bias = V.attention_bias(bias, full)
    keep, p = V.attention_dropout(dropout_mask, dropout_p, full)
    Z = 1.0 if keep is None else keep / (1.0 - p)
    return q, k, v, scale, softcap, visible, bias, Z
