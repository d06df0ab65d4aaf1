"""Exact scaled dot-product attention, its analytic backward, GQA/MQA: the fast dense path.

The definition, in one screen, is ``refimpl.definition.attention_definition`` (and
``attention_backward_definition``); this module computes the same thing fast and is tested
equal to it (tests/test_definition.py).

Shapes (layout B, H, L, D):
    q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv)
    out (B, Hq, Lq, Dv), lse (B, Hq, Lq)
Query head ``h`` reads key/value head ``h // (Hq // Hkv)`` (GQA; MQA is Hkv = 1,
MHA is Hkv = Hq). Equivalent to ``repeat_interleave`` of k and v along heads.

Order of operations for the score of query i and key j (flash-attn's order;
see ``tests/test_flash_attn.py::attention_ref`` in Dao-AILab/flash-attention):

    s_ij = scale * <q_i, k_j>                    scale = 1/sqrt(D) unless given
    s_ij = softcap * tanh(s_ij / softcap)        if softcap (Gemma-2 style)
    s_ij = s_ij + bias_ij                        if bias (e.g. ALiBi)
    s_ij = -inf where the mask hides (i, j)      mask & causal & window
    m_i = max_j s_ij,  l_i = sum_j exp(s_ij - m_i)
    P_ij  = exp(s_ij - m_i) / l_i                (0 in a fully masked row)
    lse_i = m_i + log l_i                        natural log, of the final scores
    out_i = sum_j P_ij * keep_ij / (1 - p) * v_j dropout by an explicit keep-mask

Conventions: causal alignment ``bottom_right`` by default (see refimpl.masks);
``window=(left, right)`` in the flash-attn sense, None = unbounded side; a fully
masked row gives ``out = 0`` and ``lse = -inf``; computation in float64; inputs
are never mutated. Masked entries are excluded exactly (weight 0), not by a
large finite negative number.

Computation. Every product is one BLAS GEMM per (batch, kv head): the G query
heads that share kv head h are folded into the rows, (B, Hkv, G, Lq, D) ->
(B, Hkv, G*Lq, D), so S = Q K^T, out = P V, dV = P^T dO, dP = dO V^T,
dQ = dS K and dK = dS^T Q are each a single ``np.matmul`` (dK and dV summed
over the group by the GEMM itself). Softmax is per row, so the rows are
taken a chunk at a time, per (batch entry, kv head) (at most 256 rows and
about 8 MiB of scores, ``_CHUNK_ROWS``, ``_CHUNK_BYTES``), each chunk over the
span of keys its rows can see (under a causal mask, about half): keys
outside the span are hidden and would get weight exactly 0. The forward's
chunks and the backward's (batch, kv head) pairs run on threads
(``refimpl._parallel``), with the same bits for any thread count. The
validated problem, the masks and the scores of a tile are
``refimpl._problem``'s (shared with the tiled path; the argument checks,
``check_real_4d``, ``check_qkv_shapes`` and ``check_window``, re-exported
here, are ``refimpl._validate``'s); scores that would
overflow float64 are handled there (softcap applied to +-inf is exact;
otherwise an error naming q, k and scale). The backward runs on dout and v
divided by powers of two, so a large finite dout never turns into
inf - inf = NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import masks as _masks
from ._parallel import map_blocks
from ._problem import (AttentionMask, _fold, _grads_back_to_scale, _merge_heads, _real_4d, _Setup,  # noqa: F401
                       _softcap_grad, _split_heads, _unit_scaled)
from ._validate import check_budget, check_qkv_shapes, check_real_4d, check_window, same_shape  # noqa: F401 (API)
from .softmax import _softmax_lse


# ----------------------------------------------------------------------------
# forward and backward


def attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    mask: ArrayLike | _masks.Mask | None = None,
    causal: bool = False,
    align: str = "bottom_right",
    window: tuple[int | None, int | None] | None = None,
    scale: float | None = None,
    softcap: float | None = None,
    bias: ArrayLike | None = None,
    dropout_mask: ArrayLike | None = None,
    dropout_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact attention, the scores of each chunk of query rows formed whole. Returns (out, lse).

    Arguments (see the module docstring for the formula and the order of operations):
      mask:    bool array broadcastable to (B, Hq, Lq, Lk), True = may attend, or a
               ``refimpl.masks.Mask`` predicate; combined (AND) with causal/window.
      causal:  hide keys after the query's aligned position.
      align:   "bottom_right" (default, flash-attn) or "top_left" (torch is_causal).
      window:  (left, right) keys around the aligned position, None = unbounded side.
      scale:   finite positive; default 1/sqrt(D).
      softcap: finite positive c: scores -> c * tanh(scores / c), before bias and mask.
      bias:    float array broadcastable to (B, Hq, Lq, Lk) added to the scores (ALiBi:
               ``alibi_bias``); -inf entries act as a mask.
      dropout_mask, dropout_p: bool keep-mask (True = keep) and the rate p; kept
               probabilities are scaled by 1/(1-p). LSE is unaffected by dropout.
    Returns out (B, Hq, Lq, Dv) and lse (B, Hq, Lq), float64; a fully masked row
    gives out 0 and lse -inf.
    """
    st = _Setup(q, k, v, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p)
    out, lse, _ = _forward(st)
    return _merge_heads(out), _merge_heads(lse)


def attention_probs(q: ArrayLike, k: ArrayLike, *, mask: ArrayLike | _masks.Mask | None = None, causal: bool = False,
                    align: str = "bottom_right", window: tuple[int | None, int | None] | None = None,
                    scale: float | None = None, softcap: float | None = None,
                    bias: ArrayLike | None = None) -> np.ndarray:
    """The attention weights P (B, Hq, Lq, Lk) before dropout: rows sum to 1, or 0 if fully masked."""
    k = np.asarray(k)
    v = np.zeros(k.shape[:3] + (1,), dtype=np.float64) if k.ndim == 4 else k
    st = _Setup(q, k, v, mask, causal, align, window, scale, softcap, bias, None, 0.0)
    check_budget("q, k", shape=(st.B, st.Hq, st.Lq, st.Lk), itemsize=16, what="the weights P (B, Hq, Lq, Lk)")
    return _merge_heads(_forward(st, probs=True)[2])


def _forward(st: _Setup, probs: bool = False):
    """(out, lse, P or None) in the (B, Hkv, G, ...) layout, one (batch entry, kv head) and
    chunk of query rows at a time.

    Rows are independent: a chunk's scores S (1, 1, G, rows, n) are formed whole
    over the keys its rows can see (``AttentionMask.key_span``: the keys outside
    are hidden, weight exactly 0), then P = softmax(S) and out = (P * Z) V.
    Chunks run on threads (``refimpl._parallel``); those of one kv head come
    together, so its K and V stay in cache while they run.
    """
    B, Hkv, G, Lq, Lk, Dv = st.B, st.Hkv, st.G, st.Lq, st.Lk, st.Dv
    out = np.zeros((B, Hkv, G, Lq, Dv))
    lse = np.full((B, Hkv, G, Lq), -np.inf)
    P_all = np.zeros((B, Hkv, G, Lq, Lk)) if probs else None

    def chunk(item):
        b, h, qs = item
        u, bh = st.unit(b, h), (slice(b, b + 1), slice(h, h + 1))
        ks = u.mask.key_span(qs)
        s, _ = u.scores(qs, ks)
        P, lse_rows = _softmax_lse(s, inplace=True)  # P 0 where hidden; lse -inf for a fully masked row
        lse[bh + (Ellipsis, qs)] = lse_rows
        if P_all is not None:
            P_all[bh + (Ellipsis, qs, ks)] = P
        Z = u.dropout_scale(qs, ks)
        PZ = P if Z is None else P * Z
        out[bh + (Ellipsis, qs, slice(None))] = np.matmul(_fold(PZ), u.v[:, :, ks]).reshape(PZ.shape[:-1] + (Dv,))  # out = (P * Z) V

    chunks = st.unit(0, 0).row_chunks() if B and Hkv else []
    map_blocks(chunk, [(b, h, qs) for b in range(B) for h in range(Hkv) for qs in chunks],
               work=B * st.Hq * Lq * Lk * (st.D + Dv))
    return out, lse, P_all


def attention_backward(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    dout: ArrayLike,
    *,
    mask: ArrayLike | _masks.Mask | None = None,
    causal: bool = False,
    align: str = "bottom_right",
    window: tuple[int | None, int | None] | None = None,
    scale: float | None = None,
    softcap: float | None = None,
    bias: ArrayLike | None = None,
    dropout_mask: ArrayLike | None = None,
    dropout_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic gradients (dq, dk, dv) of ``sum(dout * out)``; same keywords as ``attention``.

    With P the attention weights, Z = keep / (1 - p) (1 without dropout), S the
    final scores and R the pre-softcap scores:

        dV   = (P * Z)^T dO                     summed over the G query heads of a group
        dP   = (dO V^T) * Z
        D_i  = sum_j P_ij dP_ij = rowsum(dO * O)_i     (FlashAttention-2's D)
        dS   = P * (dP - D)
        dR   = dS * (1 - (S_cap / c)^2)          softcap c, S_cap = c tanh(R / c); else dR = dS
        dQ   = scale * dR K,    dK = scale * dR^T Q   (dK summed over the group)

    Hidden entries and fully masked rows have P = 0 and get no gradient.
    """
    st = _Setup(q, k, v, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p)
    dout = _real_4d(dout, "dout")
    same_shape(dout, (st.B, st.Hq, st.Lq, st.Dv), "dout")
    dout, e_do = _unit_scaled(dout)
    vs, e_v = _unit_scaled(st.v)
    do5 = _split_heads(dout, st.Hkv)
    dq = np.zeros(st.q5().shape)
    dk, dv = np.zeros(st.k.shape), np.zeros(st.v.shape)

    def unit(bh):  # one (batch entry, kv head): its gradients depend on nothing else
        b, h = bh
        sl = (slice(b, b + 1), slice(h, h + 1))
        _backward_unit(st.unit(b, h), do5[sl], vs[sl], dq[sl], dk[sl], dv[sl])

    map_blocks(unit, [(b, h) for b in range(st.B) for h in range(st.Hkv)],
               work=st.B * st.Hq * st.Lq * st.Lk * (3 * st.D + 2 * st.Dv))
    return _grads_back_to_scale(_merge_heads(dq), dk, dv, e_do, e_v)


def _backward_unit(st: _Setup, do5, vs, dq, dk, dv) -> None:
    """The formulas of ``attention_backward`` for one (batch entry, kv head), B = Hkv = 1,
    one chunk of query rows at a time over the keys they can see; dq (1, 1, G, Lq, D) is
    written per chunk, dk, dv accumulate over the chunks in order."""
    q5, k = st.q5(), st.k
    for qs in st.row_chunks():
        ks = st.mask.key_span(qs)
        s, raw = st.scores(qs, ks)
        P, _ = _softmax_lse(s, inplace=True)
        Z = st.dropout_scale(qs, ks)
        PZ = P if Z is None else P * Z
        dO = _fold(do5[..., qs, :])  # (1, 1, G*rows, Dv): the G heads of the kv head as rows
        dv[:, :, ks] += np.matmul(_fold(PZ).swapaxes(-1, -2), dO)  # dV = (P * Z)^T dO, summed over the group
        dP = np.matmul(dO, vs[:, :, ks].swapaxes(-1, -2)).reshape(P.shape)  # dP = dO V^T
        if Z is not None:
            dP *= Z  # dP = (dO V^T) * Z
        Drow = np.sum(P * dP, axis=-1, keepdims=True)  # D_i = sum_j P_ij dP_ij
        dS = np.multiply(P, np.subtract(dP, Drow, out=dP), out=dP)  # dS = P * (dP - D)
        if st.softcap is not None:
            dS *= _softcap_grad(raw, st.softcap)  # dR = dS * (1 - tanh^2(R / c))
        dS_f = _fold(dS)
        dq[..., qs, :] = st.scale * np.matmul(dS_f, k[:, :, ks]).reshape(dS.shape[:-1] + (st.D,))  # dQ = scale dR K
        dk[:, :, ks] += st.scale * np.matmul(dS_f.swapaxes(-1, -2), _fold(q5[..., qs, :]))  # dK = scale dR^T Q
        del s, raw, P, PZ, dP, dS, dS_f  # one chunk of each alive at a time
