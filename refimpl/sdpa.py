"""Exact (naive) scaled dot-product attention, its analytic backward, GQA/MQA, ALiBi.

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
over the group by the GEMM itself). Softmax is per row, so the rows are taken
a chunk at a time (about 8 MiB of scores, ``_CHUNK_BYTES``), each chunk over
the span of keys its rows can see (under a causal mask, about half): keys
outside the span are hidden and would get weight exactly 0. The chunks (the
forward) and the (batch, kv head) pairs (the backward) run on threads
(``refimpl._parallel``), with the same bits for any thread count. Scores that
would overflow float64 are handled in ``_Setup.scores`` (softcap applied to
+-inf is exact; otherwise an error naming q, k and scale), and the backward
runs on dout and v divided by powers of two, so a large finite dout never
turns into inf - inf = NaN.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from . import masks as _masks
from . import _validate as V
from ._parallel import map_blocks
from ._validate import positive_float
from .softmax import _softmax_lse


# ----------------------------------------------------------------------------
# argument handling


def check_real_4d(x, name: str) -> np.ndarray:
    """``x`` as an array, checked to be a finite real floating-point (B, H, L, D) array
    (not converted; shared with the gpu facade)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, H, L, D), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _real_4d(x, name: str) -> np.ndarray:
    return check_real_4d(x, name).astype(np.float64, copy=False)


def check_qkv_shapes(q, k, v) -> tuple:
    """Validate the shapes of 4-D q, k, v; return (B, Hq, Hkv, Lq, Lk, D, Dv).

    q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv), D, Dv >= 1, Hq a
    positive multiple of Hkv. Shared with the gpu facade so both reject alike.
    """
    B, Hq, Lq, D = q.shape
    Bk, Hkv, Lk, Dk = k.shape
    if Bk != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q {q.shape}, k {k.shape}, v {v.shape}")
    if Dk != D:
        raise ValueError(f"head dim differs: q has D={D}, k has D={Dk}")
    if v.shape[1:3] != (Hkv, Lk):
        raise ValueError(f"k {k.shape} and v {v.shape} must agree on (Hkv, Lk)")
    if D < 1 or v.shape[3] < 1:
        raise ValueError(f"head dims must be positive, got D={D}, Dv={v.shape[3]}")
    if Hkv < 1 or Hq % Hkv != 0:
        raise ValueError(f"Hq={Hq} must be a positive multiple of Hkv={Hkv} (GQA groups)")
    return B, Hq, Hkv, Lq, Lk, D, v.shape[3]


def _check_qkv(q, k, v):
    q, k, v = _real_4d(q, "q"), _real_4d(k, "k"), _real_4d(v, "v")
    check_qkv_shapes(q, k, v)
    return q, k, v


def check_window(window):
    """Validate ``window``: None or (left, right), each a non-negative int or None."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window: expected (left, right), got {window!r}")
    out = []
    for side, w in zip(("left", "right"), window):
        if w is None:
            out.append(None)
            continue
        if isinstance(w, bool) or not isinstance(w, (numbers.Integral, np.integer)):
            raise TypeError(f"window {side}: expected an int or None, got {type(w).__name__}")
        if w < 0:
            raise ValueError(
                f"window {side}: expected >= 0 or None (unbounded), got {w}"
                + (" (flash-attn writes -1 for unbounded; here that is None)" if w == -1 else "")
            )
        out.append(int(w))
    return tuple(out)


class _Broadcast:
    """An array broadcastable to (B, Hq, Lq, Lk), sliced per tile without materialising."""

    def __init__(self, arr: np.ndarray, name: str, full_shape: tuple):
        if arr.ndim > 4:
            raise ValueError(f"{name}: expected at most 4 dimensions, got shape {arr.shape}")
        arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
        try:
            ok = np.broadcast_shapes(arr.shape, full_shape) == tuple(full_shape)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: shape {arr.shape} does not broadcast to (B, Hq, Lq, Lk) = {tuple(full_shape)}")
        self.arr = arr

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
        _masks._check_align(align)
        if not isinstance(causal, (bool, np.bool_)):
            raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
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
                arr = np.asarray(mask)
                if arr.dtype != np.bool_:
                    raise TypeError(
                        f"mask: expected a bool array (True = may attend) or a refimpl.masks.Mask, "
                        f"got dtype {arr.dtype}; pass additive float masks as bias="
                    )
                self.arrays.append(_Broadcast(arr, "mask", full_shape))

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
        out = np.ones((1, 1, q1 - q0, k1 - k0), dtype=bool)
        for p in self.predicates:
            out = out & p.tile(q0, q1, k0, k1, self.Lq, self.Lk)[None, None]
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
    a = float(np.max(np.abs(x), initial=0.0))
    return int(np.frexp(a)[1]) if a > 0 else 0


def _fold(x: np.ndarray) -> np.ndarray:
    """(B, Hkv, G, n, d) -> (B, Hkv, G*n, d): the G query heads of a kv head as rows of one GEMM."""
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])


def _merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, Hkv, G, ...) -> (B, Hq, ...)."""
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


_CHUNK_BYTES = 8 * 2**20  # scores of one chunk of query rows in the dense path (bounded, cache-friendly)


class _Setup:
    """Validated arguments of attention / attention_backward / flash_attention."""

    def __init__(self, q, k, v, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p):
        self.q, self.k, self.v = _check_qkv(q, k, v)
        B, Hq, Lq, D = self.q.shape
        Hkv, Lk, Dv = self.k.shape[1], self.k.shape[2], self.v.shape[3]
        self.B, self.Hq, self.Hkv, self.Lq, self.Lk, self.D, self.Dv = B, Hq, Hkv, Lq, Lk, D, Dv
        self.G = Hq // Hkv
        full = (B, Hq, Lq, Lk)
        self.scale = 1.0 / np.sqrt(D) if scale is None else positive_float(scale, "scale")
        self.softcap = None if softcap is None else positive_float(softcap, "softcap")
        self.mask = AttentionMask(mask, causal, align, window, full)
        self.bias = None
        if bias is not None:
            b = np.asarray(bias)
            if not np.issubdtype(b.dtype, np.floating):
                raise TypeError(f"bias: expected a floating-point array, got dtype {b.dtype}")
            if np.isnan(b).any() or np.isposinf(b).any():
                raise ValueError("bias: contains NaN or +inf (-inf is allowed and hides the key)")
            self.bias = _Broadcast(b.astype(np.float64, copy=False), "bias", full)
        self.exact_range = _exponent(self.q) + _exponent(self.k) + _exponent(max(self.scale, 1.0)) \
            + int(np.ceil(np.log2(max(D, 1)))) <= 1000 and (
                self.bias is None or _exponent(np.where(np.isfinite(self.bias.arr), self.bias.arr, 0.0)) <= 1000)
        if isinstance(dropout_p, bool) or not isinstance(dropout_p, (numbers.Real, np.floating)):
            raise TypeError(f"dropout_p: expected a float, got {type(dropout_p).__name__}")
        if not 0.0 <= float(dropout_p) < 1.0:
            raise ValueError(f"dropout_p: expected 0 <= p < 1, got {dropout_p}")
        self.dropout_p = float(dropout_p)
        self.keep = None
        if dropout_mask is not None:
            if self.dropout_p == 0.0:
                raise ValueError("dropout_mask given with dropout_p = 0: pass the drop rate the mask was drawn with")
            km = np.asarray(dropout_mask)
            if km.dtype != np.bool_:
                raise TypeError(f"dropout_mask: expected a bool keep-mask (True = keep), got dtype {km.dtype}")
            self.keep = _Broadcast(km, "dropout_mask", full)
        elif self.dropout_p > 0.0:
            raise ValueError(
                "dropout_p > 0 needs an explicit dropout_mask (bool keep-mask): the spec has no hidden RNG"
            )

    # --- tiles in the (B, Hkv, G, ...) layout -------------------------------

    def q5(self, qs=slice(None)):
        return _split_heads(self.q[:, :, qs], self.Hkv)

    def kv(self, ks=slice(None)):
        """Key and value tiles, (B, Hkv, nk, D) and (B, Hkv, nk, Dv)."""
        return self.k[:, :, ks], self.v[:, :, ks]

    def unit(self, b: int, h: int) -> "_Setup":
        """The problem of batch entry b and kv head h alone (its G query heads): B = Hkv = 1."""
        part = copy.copy(self)
        heads = slice(h * self.G, (h + 1) * self.G)
        part.q, part.k, part.v = self.q[b:b + 1, heads], self.k[b:b + 1, h:h + 1], self.v[b:b + 1, h:h + 1]
        part.B, part.Hq, part.Hkv = 1, self.G, 1
        part.mask = self.mask.unit(b, heads)
        part.bias = None if self.bias is None else self.bias.unit(b, heads)
        part.keep = None if self.keep is None else self.keep.unit(b, heads)
        return part

    def row_chunks(self) -> list[slice]:
        """Chunks of query rows whose scores, (B, Hq, rows, Lk) float64, take about _CHUNK_BYTES."""
        rows = max(1, _CHUNK_BYTES // (8 * max(self.B * self.Hq * self.Lk, 1)))
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

    def scores_of(self, q5, k, qs: slice, ks: slice, visible=False):
        """``scores`` from operands already loaded: q5 = Q[qs] (B, Hkv, G, nq, D),
        k = K[ks] (B, Hkv, nk, D); ``visible`` = ``self.visible(qs, ks)`` if known."""
        B, Hkv, G, nq, D = q5.shape
        if visible is False:
            visible = self.visible(qs, ks)
        if self.exact_range:
            raw = np.matmul(_fold(q5), k.swapaxes(-1, -2)).reshape(B, Hkv, G, nq, k.shape[2])
            raw *= self.scale  # s = scale * <q_i, k_j>
        else:
            raw = self._scores_far_from_one(q5, k)
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
        if visible is not None and not visible.all():
            np.copyto(s, -np.inf, where=~_split_heads(visible, self.Hkv))  # s = -inf where hidden
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
        if bad.any():
            raise ValueError(
                "q, k, scale: a visible score scale * <q_i, k_j> (plus bias) exceeds the float64 range "
                "(|s| > 1.8e308); rescale q, k or scale, or pass softcap= to bound the scores")

    def dropout_scale(self, qs: slice, ks: slice):
        """keep / (1 - p) for a tile, (B?, Hkv?, G?, nq, nk), or None without dropout."""
        if self.keep is None:
            return None
        return _split_heads(self.keep.tile(qs, ks), self.Hkv) / (1.0 - self.dropout_p)


# ----------------------------------------------------------------------------
# forward and backward


def attention(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    align="bottom_right",
    window=None,
    scale=None,
    softcap=None,
    bias=None,
    dropout_mask=None,
    dropout_p=0.0,
):
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


def attention_probs(q, k, *, mask=None, causal=False, align="bottom_right", window=None, scale=None, softcap=None, bias=None):
    """The attention weights P (B, Hq, Lq, Lk) before dropout: rows sum to 1, or 0 if fully masked."""
    k = np.asarray(k)
    v = np.zeros(k.shape[:3] + (1,), dtype=np.float64) if k.ndim == 4 else k
    st = _Setup(q, k, v, mask, causal, align, window, scale, softcap, bias, None, 0.0)
    return _merge_heads(_forward(st, probs=True)[2])


def _forward(st: _Setup, probs: bool = False):
    """(out, lse, P or None) in the (B, Hkv, G, ...) layout, one chunk of query rows at a time.

    Rows are independent: a chunk's scores S (B, Hkv, G, rows, n) are formed
    whole over the keys its rows can see (``AttentionMask.key_span``: the keys
    outside are hidden, weight exactly 0), then P = softmax(S) and
    out = (P * Z) V. Chunks run on threads (``refimpl._parallel``).
    """
    B, Hkv, G, Lq, Lk, Dv = st.B, st.Hkv, st.G, st.Lq, st.Lk, st.Dv
    out = np.zeros((B, Hkv, G, Lq, Dv))
    lse = np.full((B, Hkv, G, Lq), -np.inf)
    P_all = np.zeros((B, Hkv, G, Lq, Lk)) if probs else None

    def chunk(qs: slice):
        ks = st.mask.key_span(qs)
        s, _ = st.scores(qs, ks)
        P, lse_rows = _softmax_lse(s, inplace=True)  # P 0 where hidden; lse -inf for a fully masked row
        lse[..., qs] = lse_rows
        if P_all is not None:
            P_all[..., qs, ks] = P
        Z = st.dropout_scale(qs, ks)
        PZ = P if Z is None else P * Z
        out[..., qs, :] = np.matmul(_fold(PZ), st.v[:, :, ks]).reshape(PZ.shape[:-1] + (Dv,))  # out = (P * Z) V

    map_blocks(chunk, st.row_chunks(), work=B * st.Hq * Lq * Lk * (st.D + Dv))
    return out, lse, P_all


def attention_backward(
    q,
    k,
    v,
    dout,
    *,
    mask=None,
    causal=False,
    align="bottom_right",
    window=None,
    scale=None,
    softcap=None,
    bias=None,
    dropout_mask=None,
    dropout_p=0.0,
):
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
    if dout.shape != (st.B, st.Hq, st.Lq, st.Dv):
        raise ValueError(f"dout: expected shape {(st.B, st.Hq, st.Lq, st.Dv)}, got {dout.shape}")
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
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        if not np.isfinite(g).all():
            raise ValueError(f"{culprits}: the gradient {name} exceeds the float64 range (|{name}| > 1.8e308) "
                             f"or is NaN; rescale dout or v")
    return dq, dk, dv
