"""Validated attention problems: arguments, masks, and the scores of one tile.

The part of the attention spec shared by the dense path (``refimpl.sdpa``),
the tiled path (``refimpl.flash``) and split-KV: argument checks (shared with
the gpu facade), ``AttentionMask`` (causal / window / predicate / bool-array
masks, with closed-form tile classes and key spans), and ``_Setup``, which
forms the final scores S of any (query rows, keys) tile in the order of
operations stated in ``refimpl.sdpa``: scale * <q_i, k_j>, softcap, bias,
mask. Heads are kept as (B, Hkv, G, ...): query head h = kv * G + g reads kv
head kv (GQA).
"""

from __future__ import annotations

import copy

import numpy as np

from . import masks as _masks
from ._validate import (attention_bias, attention_bool_mask, attention_dropout, attention_scale, broadcastable,
                        check_qkv_shapes, check_real_4d, real_4d_extent, check_window, choice, flag, positive_float)
from ._validate.conventions import gradients_finite, tile_scores_finite


# ----------------------------------------------------------------------------
# argument handling (the checks themselves live in ``refimpl._validate``)


def _real_4d(x, name: str) -> np.ndarray:
    return check_real_4d(x, name).astype(np.float64, copy=False)


def _check_qkv(q, k, v):
    """(q, k, v) as float64, checked, and (max|q|, max|k|, max|v|) from the same check."""
    (q, eq), (k, ek), (v, ev) = (real_4d_extent(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    q, k, v = (x.astype(np.float64, copy=False) for x in (q, k, v))
    check_qkv_shapes(q, k, v)
    return (q, k, v), (eq, ek, ev)


class _Broadcast:
    """An array broadcastable to (B, Hq, Lq, Lk), sliced per tile without materialising."""

    def __init__(self, arr: np.ndarray, name: str, full_shape: tuple):
        self.arr = broadcastable(arr, name, full_shape)

    def tile(self, qs: slice, ks: slice) -> np.ndarray:
        a = self.arr
        return a[:, :, qs if a.shape[2] > 1 else slice(None), ks if a.shape[3] > 1 else slice(None)]

    def unit(self, b: int, heads: slice) -> "_Broadcast":
        """The part for batch entry b and query heads ``heads`` (broadcast axes stay size 1)."""
        part = copy.copy(self)
        a = self.arr
        part.arr = a[slice(b, b + 1) if a.shape[0] > 1 else slice(None), heads if a.shape[1] > 1 else slice(None)]
        return part


class AttentionMask:
    """The visibility of every (b, h, i, j), from ``mask``, ``causal``, ``align``, ``window``.

    ``tile(qs, ks)`` returns the bool block broadcastable to (B, Hq, nq, nk)
    (a block with no True is hidden entirely: block skipping). Shared by the
    naive and the tiled paths so both see the same mask.
    """

    def __init__(self, mask, causal, align, window, full_shape):
        choice(align, "align", _masks.ALIGNMENTS)
        flag(causal, "causal")
        self.Lq, self.Lk = full_shape[2], full_shape[3]
        self.predicates: list[_masks.Mask] = []
        self.arrays: list[_Broadcast] = []
        if causal:
            self.predicates.append(_masks.Causal(align))
        window = check_window(window)
        if window is not None:
            self.predicates.append(_masks.SlidingWindow(window[0], window[1], align))
        if mask is not None:
            if isinstance(mask, _masks.Mask):
                self.predicates.append(mask)
            else:
                self.arrays.append(_Broadcast(attention_bool_mask(mask, full_shape), "mask", full_shape))

    @property
    def trivial(self) -> bool:
        return not self.predicates and not self.arrays

    def unit(self, b: int, heads: slice) -> "AttentionMask":
        """The mask of batch entry b and query heads ``heads``."""
        part = copy.copy(self)
        part.arrays = [a.unit(b, heads) for a in self.arrays]
        return part

    def covers(self, qs: slice, ks: slice) -> bool:
        """True if every entry of the tile is known visible without building it (closed forms)."""
        q0, q1, _ = qs.indices(self.Lq)
        k0, k1, _ = ks.indices(self.Lk)
        return not self.arrays and all(p._covers(q0, q1, k0, k1, self.Lq, self.Lk) for p in self.predicates)

    def hides(self, qs: slice, ks: slice) -> bool:
        """True if some predicate is known to hide the whole non-empty tile (closed forms)."""
        q0, q1, _ = qs.indices(self.Lq)
        k0, k1, _ = ks.indices(self.Lk)
        return q1 > q0 and k1 > k0 and any(p._hides(q0, q1, k0, k1, self.Lq, self.Lk) for p in self.predicates)

    def key_span(self, qs: slice) -> slice:
        """The smallest slice of keys outside which every key is hidden from every query of
        ``qs`` (all batch entries and heads): closed forms narrow it, a built tile finishes."""
        q0, q1, _ = qs.indices(self.Lq)
        lo, hi = 0, self.Lk
        unknown = bool(self.arrays)
        for p in self.predicates:
            span = p._key_span(q0, q1, self.Lq, self.Lk)
            if span is None:
                unknown = True
            else:
                lo, hi = max(lo, span[0]), min(hi, span[1])
        if hi <= lo or q1 <= q0:
            return slice(0, 0)
        if unknown:
            cols = np.flatnonzero(self.tile(qs, slice(lo, hi)).any(axis=(0, 1, 2)))
            return slice(lo + int(cols[0]), lo + int(cols[-1]) + 1) if cols.size else slice(0, 0)
        return slice(lo, hi)

    def tile(self, qs: slice, ks: slice) -> np.ndarray:
        q0, q1, _ = qs.indices(self.Lq)
        k0, k1, _ = ks.indices(self.Lk)
        tiles = [p._tile(q0, q1, k0, k1, self.Lq, self.Lk)[None, None] for p in self.predicates]  # fresh arrays
        out = tiles[0] if tiles else np.ones((1, 1, q1 - q0, k1 - k0), dtype=bool)
        for t in tiles[1:]:
            out = out & t
        for a in self.arrays:
            out = out & a.tile(qs, ks)
        return out


def _split_heads(x: np.ndarray, Hkv: int) -> np.ndarray:
    """(B, Hq, ...) -> (B, Hkv, G, ...): head h = kv * G + g reads kv head h // G.

    A broadcast head axis of size 1 stays size 1 on both new axes.
    """
    if x.shape[1] == 1:
        return x[:, :, None]
    return x.reshape(x.shape[0], Hkv, x.shape[1] // Hkv, *x.shape[2:])


def _exponent(x) -> int:
    """e with max|x| < 2^e (frexp's exponent of the largest magnitude; 0 for all zeros or empty)."""
    x = np.asarray(x)
    return _exponent_of(max(float(x.max()), -float(x.min())) if x.size else 0.0)  # max |x| without an |x| temporary


def _exponent_of(a: float) -> int:
    """``_exponent`` from a = max |x| >= 0."""
    return int(np.frexp(a)[1]) if a > 0 else 0


def _fold(x: np.ndarray) -> np.ndarray:
    """(B, Hkv, G, n, d) -> (B, Hkv, G*n, d): the G query heads of a kv head as rows of one GEMM."""
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])


def _hide(s: np.ndarray, visible: np.ndarray) -> None:
    """s = -inf where ``visible`` (broadcastable to s) is False, in place; the pass covers only
    the span of key columns with a hidden entry (a causal strip: its diagonal block)."""
    cols = np.flatnonzero(~visible.all(axis=tuple(range(visible.ndim - 1))))
    if cols.size:
        part = slice(int(cols[0]), int(cols[-1]) + 1)
        np.copyto(s[..., part], -np.inf, where=~visible[..., part])


def _merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, Hkv, G, ...) -> (B, Hq, ...)."""
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


_CHUNK_BYTES = 8 * 2**20  # scores of one chunk of query rows in the dense path (bounded, cache-friendly)
_CHUNK_ROWS = 256


class _Setup:
    """Validated arguments of attention / attention_backward / flash_attention."""

    def __init__(self, q, k, v, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p):
        (self.q, self.k, self.v), (eq, ek, self.v_extent) = _check_qkv(q, k, v)  # and max |q|, |k|, |v|
        B, Hq, Lq, D = self.q.shape
        Hkv, Lk, Dv = self.k.shape[1], self.k.shape[2], self.v.shape[3]
        self.B, self.Hq, self.Hkv, self.Lq, self.Lk, self.D, self.Dv = B, Hq, Hkv, Lq, Lk, D, Dv
        self.G = Hq // Hkv
        full = (B, Hq, Lq, Lk)
        self.scale = attention_scale(scale, D)
        self.softcap = None if softcap is None else positive_float(softcap, "softcap")
        self.mask = AttentionMask(mask, causal, align, window, full)
        bias = attention_bias(bias, full)
        self.bias = None if bias is None else _Broadcast(bias, "bias", full)
        self.exact_range = _exponent_of(eq) + _exponent_of(ek) + _exponent(max(self.scale, 1.0)) \
            + int(np.ceil(np.log2(max(D, 1)))) <= 1000 and (
                self.bias is None or _exponent(np.where(np.isfinite(self.bias.arr), self.bias.arr, 0.0)) <= 1000)
        keep, self.dropout_p = attention_dropout(dropout_mask, dropout_p, full)
        self.keep = None if keep is None else _Broadcast(keep, "dropout_mask", full)

    # --- tiles in the (B, Hkv, G, ...) layout -------------------------------

    def q5(self, qs=slice(None)):
        return _split_heads(self.q[:, :, qs], self.Hkv)

    def kv(self, ks=slice(None)):
        """Key and value tiles, (B, Hkv, nk, D) and (B, Hkv, nk, Dv)."""
        return self.k[:, :, ks], self.v[:, :, ks]

    def unit(self, b: int, h: int, n: int = 1) -> "_Setup":
        """The problem of batch entry b and kv heads h .. h + n - 1 alone (their G query heads
        each): B = 1, Hkv = n."""
        part = copy.copy(self)
        heads = slice(h * self.G, (h + n) * self.G)
        part.q, part.k, part.v = self.q[b:b + 1, heads], self.k[b:b + 1, h:h + n], self.v[b:b + 1, h:h + n]
        part.B, part.Hq, part.Hkv = 1, n * self.G, n
        part.mask = self.mask.unit(b, heads)
        part.bias = None if self.bias is None else self.bias.unit(b, heads)
        part.keep = None if self.keep is None else self.keep.unit(b, heads)
        return part

    def row_chunks(self) -> list[slice]:
        """Chunks of at most _CHUNK_ROWS query rows whose scores, (B, Hq, rows, Lk) float64, take
        at most about _CHUNK_BYTES (short chunks let a causal mask trim each one's keys)."""
        rows = max(1, min(_CHUNK_ROWS, _CHUNK_BYTES // (8 * max(self.B * self.Hq * self.Lk, 1))))
        return [slice(a, min(a + rows, self.Lq)) for a in range(0, self.Lq, rows)]

    def scores(self, qs: slice, ks: slice) -> tuple[np.ndarray, np.ndarray | None]:
        """Final scores S of a tile and, with softcap, the pre-softcap ones R; (B, Hkv, G, nq, nk).

        Hidden entries are -inf in S. R is None without softcap. One GEMM per
        (b, kv head): the G query heads sharing a kv head are folded into the
        rows, (B, Hkv, G, nq, D) -> (B, Hkv, G*nq, D), times K^T (B, Hkv, D, nk).
        The remaining passes over the tile: the scale, softcap's tanh, the bias,
        and the mask (skipped where the tile is entirely visible).
        """
        return self.scores_of(self.q5(qs), self.kv(ks)[0], qs, ks)

    def visible(self, qs: slice, ks: slice):
        """The mask's bool tile, broadcastable to (B, Hq, nq, nk); None where the tile is
        known to be visible everywhere (no mask, or a causal / window mask in closed form)."""
        if self.mask.trivial or self.mask.covers(qs, ks):
            return None
        if self.mask.hides(qs, ks):
            return np.zeros((1, 1, len(range(*qs.indices(self.Lq))), len(range(*ks.indices(self.Lk)))), dtype=bool)
        return self.mask.tile(qs, ks)

    def scaled_q(self, q5):
        """scale * q5 where the scores are formed as <scale q_i, k_j> (``exact_range``), else q5.

        Folding the scale into a query tile once replaces a pass over every score tile it
        meets. Rounding: each product (scale q_id) k_jd carries two roundings instead of one,
        and the final multiply by scale is gone, so the score error stays within
        gamma_(D+1) scale sum_d |q_id k_jd| <= (D + 2) u S, the score bound of
        ``properties.tolerance`` (``score_error_bound``). A power-of-two scale (1 / sqrt(D),
        D = 4^n) multiplies exactly (barring underflow), so there the scores are the same
        bits as scale * <q_i, k_j>.
        """
        return q5 * self.scale if self.exact_range else q5

    def scores_of(self, q5, k, qs: slice, ks: slice, visible=False, q_scaled=False):
        """``scores`` from operands already loaded: q5 = Q[qs] (B, Hkv, G, nq, D),
        k = K[ks] (B, Hkv, nk, D); ``visible`` = ``self.visible(qs, ks)`` if known;
        ``q_scaled``: q5 is ``scaled_q(Q[qs])`` (the scale already folded in)."""
        B, Hkv, G, nq, D = q5.shape
        if visible is False:
            visible = self.visible(qs, ks)
        if self.exact_range:
            raw = np.matmul(_fold(q5), k.swapaxes(-1, -2)).reshape(B, Hkv, G, nq, k.shape[2])
            if not q_scaled:
                raw *= self.scale  # s = scale * <q_i, k_j>
        else:
            raw = self._scores_far_from_one(q5, k)  # (scaled_q leaves q5 unscaled here)
        if self.softcap is not None:
            with np.errstate(over="ignore"):  # raw / c beyond float64 is +-inf, and c tanh(+-inf) = +-c exactly
                s = np.divide(raw, self.softcap)
            s = np.multiply(np.tanh(s, out=s), self.softcap, out=s)  # s = c tanh(s / c)
        else:
            s = raw if self.exact_range else raw.copy()
        if self.bias is not None:
            b = _split_heads(self.bias.tile(qs, ks), self.Hkv)
            s += b  # s = s + bias
            if not self.exact_range:
                np.copyto(s, -np.inf, where=np.isneginf(b))  # a -inf bias hides its key, even from an inf score
        if visible is not None:
            _hide(s, _split_heads(visible, self.Hkv))  # s = -inf where hidden
        if not self.exact_range:
            self._check_no_overflow(s, visible, qs, ks)
        return s, (raw if self.softcap is not None else None)

    # Scores near the ends of the float64 range. ``exact_range`` (set in
    # __init__) holds when D max|q| max|k| max(scale, 1) and max|bias| are below
    # 2^1000: then no partial sum of the plain GEMM can overflow. Otherwise the
    # tile is computed from q and k scaled by powers of two (exactly) and
    # scaled back with ldexp: a score representable in float64 comes out as the
    # plain path would give it, with softcap an overflowing raw score is +-inf
    # and caps to exactly +-c, and a visible final score beyond the float64
    # range is an error (never a masked entry: issue 9).

    def _scores_far_from_one(self, q5, k):
        B, Hkv, G, nq, D = q5.shape
        eq, ek, es = _exponent(q5), _exponent(k), _exponent(self.scale)
        dot = np.matmul(_fold(np.ldexp(q5, -eq)), np.ldexp(k, -ek).swapaxes(-1, -2)).reshape(B, Hkv, G, nq, k.shape[2])
        with np.errstate(over="ignore"):
            return np.ldexp(dot * np.ldexp(self.scale, -es), eq + ek + es)

    def _check_no_overflow(self, s, visible, qs, ks):
        bad = ~np.isfinite(s)
        if self.bias is not None:
            bad &= ~np.isneginf(_split_heads(self.bias.tile(qs, ks), self.Hkv))
        if visible is not None:
            bad &= _split_heads(visible, self.Hkv)
        tile_scores_finite(bad)

    def dropout_scale(self, qs: slice, ks: slice):
        """keep / (1 - p) for a tile, (B?, Hkv?, G?, nq, nk), or None without dropout."""
        if self.keep is None:
            return None
        return _split_heads(self.keep.tile(qs, ks), self.Hkv) / (1.0 - self.dropout_p)


# ----------------------------------------------------------------------------
# gradients (shared by the dense and the tiled backward)


def _softcap_grad(raw: np.ndarray, c: float) -> np.ndarray:
    """1 - tanh^2(R / c): d(c tanh(R / c)) / dR."""
    t = np.tanh(raw / c)
    return np.subtract(1.0, np.multiply(t, t, out=t), out=t)


# The gradients are linear in dout, and dq, dk linear in v (through dP): the
# backward passes run on dout / 2^e_do and v / 2^e_v, both of magnitude < 1
# (powers of two: exact), and scale the results back. A large but finite dout
# or v then cannot overflow an intermediate (dP - D would be inf - inf = NaN);
# a gradient that itself exceeds the float64 range is an error.


def _unit_scaled(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(x / 2^e, e) with max|x / 2^e| < 1, exactly (e = 0 for zeros)."""
    e = _exponent(x)
    return (x if e == 0 else np.ldexp(x, -e)), e


def _grads_back_to_scale(dq, dk, dv, e_do: int, e_v: int, culprits: str = "dout, v"):
    if e_do or e_v:
        with np.errstate(over="ignore"):
            dq, dk, dv = np.ldexp(dq, e_do + e_v), np.ldexp(dk, e_do + e_v), np.ldexp(dv, e_do)
    gradients_finite({"dq": dq, "dk": dk, "dv": dv}, culprits)
    return dq, dk, dv
