"""A compact second tiled (FlashAttention) implementation of kind "flash": the FA2 and FA1
forward loops, the FA2 backward and split-KV written out again (see refimpl.flash for the formulas;
scores from ``properties.attention_problem``). With ``bug=...`` each becomes one of the
deliberately wrong implementations listed in ``properties.flash``'s docstring, which wraps them as
adapters (``compact_adapter``, ``WRONG``).
"""

from __future__ import annotations

import math

import numpy as np

import refimpl
from refimpl.flash import FlashStats, flash_attention
from refimpl.softmax import OnlineSoftmaxState

from .attention_problem import Problem, exp_shift as _exp_shift, merge_heads as _merge_heads, split_heads as _split_heads


def _setup(q, k, v, kw) -> Problem:
    return Problem(q, k, v, kw)  # the spec's arguments; the scores computed by properties.attention_problem


def _starts(L: int, block: int, bug_drop: bool) -> list[int]:
    stop = L - L % block if bug_drop else L
    return list(range(0, stop, block))


def _key_tiles(k0: int, k1: int, block_k: int, bug) -> list[slice]:
    starts = _starts(k1 - k0, block_k, bug == "drop_last_partial_k_tile")
    tiles = [slice(k0 + a, min(k0 + a + block_k, k1)) for a in starts]
    if bug == "double_count_last_partial_k_tile" and (k1 - k0) % block_k:
        tiles.append(tiles[-1])  # a "tail" pass over the partial tile the main loop already did
    return tiles


def _skips(st: Problem, qs, ks, bug) -> bool:
    if st.trivial:
        return False
    vis = st.visible_tile(qs, ks)
    return not vis.all() if bug == "skip_partial_tile" else not vis.any()


def compact_flash(q, k, v, *, block_q, block_k, variant="fa2", skip_masked_tiles=True, return_stats=False,
                  key_range=None, bug=None, **kw):
    """FA2 / FA1 written out directly (see refimpl.flash for the formulas); ``bug`` injects a mistake."""
    st = _setup(q, k, v, kw)
    B, Hkv, G, Lq, Dv = st.B, st.Hkv, st.G, st.Lq, st.Dv
    k0, k1 = key_range or (0, st.Lk)
    q_tiles = [slice(a, min(a + block_q, Lq)) for a in _starts(Lq, block_q, bug == "drop_last_partial_q_tile")]
    k_tiles = _key_tiles(k0, k1, block_k, bug)
    O = np.zeros((B, Hkv, G, Lq, Dv))
    m = np.full((B, Hkv, G, Lq), -np.inf)
    l = np.zeros((B, Hkv, G, Lq))
    skipped = 0
    pairs = [(qs, ks) for qs in q_tiles for ks in k_tiles] if variant == "fa2" else [(qs, ks) for ks in k_tiles for qs in q_tiles]
    l_last = np.zeros_like(l)
    for qs, ks in pairs:
        if skip_masked_tiles and _skips(st, qs, ks, bug):
            skipped += 1
            continue
        S, _ = st.scores(qs, ks)
        V = st.kv(ks)[1]
        Z = st.dropout_scale(qs, ks)
        rows, orows = (Ellipsis, qs), (Ellipsis, qs, slice(None))  # rows of m, l and of O
        if variant == "fa2":  # O holds the unnormalised accumulator
            m_new = np.maximum(m[rows], S.max(axis=-1))
            P = _exp_shift(S, m_new[..., None])
            alpha = _exp_shift(m[rows], m_new)
            l[rows] = alpha * l[rows] + P.sum(axis=-1)
            l_last[rows] = P.sum(axis=-1)
            keep = 1.0 if bug == "no_rescale" else alpha[..., None]
            O[orows] = keep * O[orows] + np.einsum("bhgqk,bhkd->bhgqd", P if Z is None else P * Z, V)
            m[rows] = m_new
        else:  # FA1: O normalised after every step
            m_t = S.max(axis=-1)
            P = _exp_shift(S, m_t[..., None])
            m_new = np.maximum(m[rows], m_t)
            a, b = _exp_shift(m[rows], m_new), _exp_shift(m_t, m_new)
            l_new = a * l[rows] + b * P.sum(axis=-1)
            rescale = np.ones_like(a) if bug == "no_rescale" else a
            old = O[orows] * rescale[..., None]
            if bug != "fa1_forgets_old_l":
                old = l[rows][..., None] * old
            num = old + b[..., None] * np.einsum("bhgqk,bhkd->bhgqd", P if Z is None else P * Z, V)
            denom = b * P.sum(axis=-1) if bug == "wrong_l" else l_new
            O[orows] = np.where(denom[..., None] > 0, num / np.where(denom > 0, denom, 1.0)[..., None], 0.0)
            l[rows], m[rows] = l_new, m_new
    if variant == "fa2":
        denom = l_last if bug == "wrong_l" else l
        O = np.where(denom[..., None] > 0, O / np.where(denom > 0, denom, 1.0)[..., None], 0.0)
    lse = OnlineSoftmaxState(m, l).lse
    out, lse = _merge_heads(O), _merge_heads(lse)
    if return_stats:
        grid = (math.ceil(Lq / block_q), math.ceil((k1 - k0) / block_k))
        return out, lse, FlashStats(grid, skipped, {}, {})
    return out, lse


def compact_flash_backward(q, k, v, out, lse, dout, *, block_q, block_k, skip_masked_tiles=True, bug=None, **kw):
    """FA2 backward written out directly (see refimpl.flash); ``bug`` injects a mistake."""
    st = _setup(q, k, v, kw)
    Hkv = st.Hkv
    O5, dO5 = _split_heads(np.asarray(out, float), Hkv), _split_heads(np.asarray(dout, float), Hkv)
    L5 = _split_heads(np.asarray(lse, float), Hkv)
    Drow = np.zeros(L5.shape) if bug == "backward_no_D" else np.sum(dO5 * O5, axis=-1)
    dq = np.zeros(O5.shape[:-1] + (st.D,))
    dk, dv = np.zeros_like(st.k), np.zeros_like(st.v)
    for k0 in range(0, st.Lk, block_k):
        ks = slice(k0, min(k0 + block_k, st.Lk))
        K, V = st.kv(ks)
        for q0 in range(0, st.Lq, block_q):
            qs = slice(q0, min(q0 + block_q, st.Lq))
            if skip_masked_tiles and _skips(st, qs, ks, None):
                continue
            S, R = st.scores(qs, ks)
            Lrow = L5[..., qs, None]
            P = np.where(np.isneginf(Lrow), 0.0, _exp_shift(S, Lrow))
            Z = st.dropout_scale(qs, ks)
            Z = 1.0 if Z is None else Z
            dv[:, :, ks] += np.einsum("bhgqk,bhgqd->bhkd", P * Z, dO5[..., qs, :])
            dP = np.einsum("bhgqd,bhkd->bhgqk", dO5[..., qs, :], V) * Z
            dS = P * (dP - Drow[..., qs, None])
            if st.softcap is not None:
                dS = dS * (1.0 - np.tanh(R / st.softcap) ** 2)
            contrib = st.scale * np.einsum("bhgqk,bhkd->bhgqd", dS, K)
            dq[..., qs, :] = contrib if bug == "backward_dq_not_accumulated" else dq[..., qs, :] + contrib
            dk[:, :, ks] += st.scale * np.einsum("bhgqk,bhgqd->bhkd", dS, st.q5(qs))
    return _merge_heads(dq), dk, dv


def _slice_keys(kw: dict, a: int, b: int) -> dict:
    """The keywords for attention over keys [a, b) run as a problem of its own (the buggy way)."""
    out = dict(kw)
    for key in ("mask", "bias", "dropout_mask"):
        arr = kw.get(key)
        if isinstance(arr, np.ndarray) and arr.ndim >= 1 and arr.shape[-1] > 1:
            out[key] = arr[..., a:b]
    return out


def compact_split_kv(q, k, v, *, block_q, block_k, boundaries, bug=None, **kw):
    """Split-KV: one compact FA2 run per key chunk (a column range of the full problem), then the merge."""
    Lk = np.shape(k)[2]
    edges = (0, *boundaries, Lk)
    outs, lses = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if bug == "split_chunk_mask_realigned":
            if b == a:
                continue
            o, l = flash_attention(q, k[:, :, a:b], v[:, :, a:b], block_q=block_q, block_k=block_k, **_slice_keys(kw, a, b))
        else:
            o, l = compact_flash(q, k, v, block_q=block_q, block_k=block_k, key_range=(a, b), **kw)
        outs.append(o)
        lses.append(l)
    if bug == "split_merge_average":
        _, lse = refimpl.merge_attention_states(outs, lses)
        seen = np.stack([np.isfinite(l) for l in lses])  # chunks the row could see
        out = np.einsum("c...,c...d->...d", seen, np.stack(outs)) / np.maximum(seen.sum(axis=0), 1)[..., None]
        return out, lse
    return refimpl.merge_attention_states(outs, lses)
