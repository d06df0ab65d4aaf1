"""The mask predicate base class, its combinators, causal and sliding-window masks.

The lower layer of ``refimpl.masks`` (which re-exports every public name here and the structured
patterns of ``refimpl.mask_patterns``; read its docstring for the conventions: alignment, causal,
window). ``refimpl.mask_patterns`` (its lower modules ``mask_sparse``, ``mask_bigbird``, ``mask_packed``)
builds on this module, never the other way round. Argument checks: ``refimpl._validate.masks``; the
predicates (``_visible``, ``_tile``) run on checked lengths and compute only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._validate.masks import (alignment, extent, lengths, mask_indices, mask_parts, mask_predicate, positive_length,
                              rows_budget, tile_bounds, tile_budget)

ALIGNMENTS = ("bottom_right", "top_left")


def offset(Lq: int, Lk: int, align: str = "bottom_right") -> int:
    """Key position of query 0: ``Lk - Lq`` (bottom_right) or ``0`` (top_left)."""
    Lq, Lk = lengths(Lq, Lk)
    return _offset(Lq, Lk, alignment(align, ALIGNMENTS))


def _offset(Lq: int, Lk: int, align: str) -> int:
    """``offset`` on checked arguments (the predicates and closed forms call this one)."""
    return Lk - Lq if align == "bottom_right" else 0


def _sum_clip_ap(c: int, d: int, n: int, lo: int, hi: int) -> int:
    """sum_{m=0}^{n-1} clip(c + m d, lo, hi), exactly, in O(1) (d >= 1, lo <= hi).

    Terms with c + m d <= lo are lo (m < n_lo), those with c + m d >= hi are hi
    (m >= m_hi), the m in between an arithmetic series."""
    if n <= 0:
        return 0
    n_lo = min(max((lo - c) // d + 1, 0), n)
    m_hi = min(max(max(-((c - hi) // d), 0), n_lo), n)
    mid = m_hi - n_lo
    return n_lo * lo + (n - m_hi) * hi + mid * c + d * (m_hi * (m_hi - 1) - n_lo * (n_lo - 1)) // 2


def _periodic_count(a: int, b: int, d: int, W, Lk: int) -> int:
    """#{(p, m): a <= p < b, 0 <= m <= W, 0 <= p - m d <= Lk - 1} (W None: unbounded): the visible
    pairs of a pattern whose keys sit every d positions back from the query position p.
    Swapping the sums: for each m the rows p in [m d, m d + Lk - 1] ∩ [a, b), i.e.
    clip(m d + Lk, a, b) - clip(m d, a, b), each an arithmetic clip series."""
    if b <= max(a, 0) or Lk == 0:
        return 0
    n = (b - 1) // d + 1  # m with m d <= b - 1
    if W is not None:
        n = min(n, W + 1)
    return _sum_clip_ap(Lk, d, n, a, b) - _sum_clip_ap(0, d, n, a, b)


class Mask:
    """Base class: a predicate over (query index i, key index j) for lengths (Lq, Lk).

    Subclasses implement ``_visible(i, j, Lq, Lk)`` on broadcastable int64
    arrays; they may override ``row_counts`` with a closed form.
    """

    def __call__(self, i, j, Lq: int, Lk: int) -> np.ndarray:
        """The predicate at query indices i in [0, Lq) and key indices j in [0, Lk) (broadcast)."""
        Lq, Lk = lengths(Lq, Lk)
        i, j = mask_indices(i, j, Lq, Lk)
        return self._at(i, j, Lq, Lk)

    def _at(self, i, j, Lq, Lk):
        return np.broadcast_to(self._visible(i, j, Lq, Lk), np.broadcast_shapes(i.shape, j.shape))

    def _visible(self, i, j, Lq, Lk):  # pragma: no cover - abstract
        raise NotImplementedError

    def tile(self, q_start: int, q_stop: int, k_start: int, k_stop: int, Lq: int, Lk: int) -> np.ndarray:
        """The (q_stop - q_start, k_stop - k_start) block of the mask,
        0 <= q_start <= q_stop <= Lq and 0 <= k_start <= k_stop <= Lk."""
        Lq, Lk = lengths(Lq, Lk)
        return self._tile(*tile_bounds(q_start, q_stop, k_start, k_stop, Lq, Lk), Lq, Lk)

    def _tile(self, q_start: int, q_stop: int, k_start: int, k_stop: int, Lq: int, Lk: int) -> np.ndarray:
        """``tile`` on checked bounds (the tiled attention paths call this one)."""
        i = np.arange(q_start, q_stop, dtype=np.int64)[:, None]
        j = np.arange(k_start, k_stop, dtype=np.int64)[None, :]
        return np.array(self._at(i, j, Lq, Lk), dtype=bool)

    def _covers(self, q_start: int, q_stop: int, k_start: int, k_stop: int, Lq: int, Lk: int) -> bool:
        """True if the block is known to be visible everywhere without building it
        (closed form where a subclass has one; False means "build the tile")."""
        return False

    def _hides(self, q_start: int, q_stop: int, k_start: int, k_stop: int, Lq: int, Lk: int) -> bool:
        """True if the block is known to be hidden everywhere without building it."""
        return False

    def _key_span(self, q_start: int, q_stop: int, Lq: int, Lk: int):
        """(lo, hi): keys outside [lo, hi) are hidden from every query in [q_start, q_stop),
        in closed form; None where no closed form is known."""
        return None

    def materialize(self, Lq: int, Lk: int) -> np.ndarray:
        """bool (Lq, Lk); True where query i may attend to key j."""
        Lq, Lk = lengths(Lq, Lk)
        tile_budget(Lq, Lk, "Lq, Lk")
        return self._tile(0, Lq, 0, Lk, Lq, Lk)

    def row_counts(self, Lq: int, Lk: int) -> np.ndarray:
        """Visible keys per query row, int64 (Lq,). A predicate has no closed form: this materialises
        it within the work budget (the structured masks override it with a closed form)."""
        return self.materialize(Lq, Lk).sum(axis=1, dtype=np.int64)

    def count(self, Lq: int, Lk: int) -> int:
        """Number of visible (query, key) pairs (a closed form where a subclass has one; a predicate
        or a composition has none, so this sums ``row_counts``: materialised, within the work budget)."""
        return int(np.sum(self.row_counts(Lq, Lk)))

    def __and__(self, other: "Mask") -> "Mask":
        return And(self, other)

    def __or__(self, other: "Mask") -> "Mask":
        return Or(self, other)

    def __invert__(self) -> "Mask":
        return Not(self)


class And(Mask):
    """Visible iff visible in every part."""

    def __init__(self, *parts: Mask):
        self.parts = mask_parts(parts, "parts", Mask)

    def _visible(self, i, j, Lq, Lk):
        out = True
        for m in self.parts:
            out = out & m._visible(i, j, Lq, Lk)
        return out

    def __repr__(self):
        return "(" + " & ".join(map(repr, self.parts)) + ")"


class Or(Mask):
    """Visible iff visible in some part."""

    def __init__(self, *parts: Mask):
        self.parts = mask_parts(parts, "parts", Mask)

    def _visible(self, i, j, Lq, Lk):
        out = False
        for m in self.parts:
            out = out | m._visible(i, j, Lq, Lk)
        return out

    def __repr__(self):
        return "(" + " | ".join(map(repr, self.parts)) + ")"


class Not(Mask):
    """Visible iff not visible in ``part``."""

    def __init__(self, part: Mask):
        (self.part,) = mask_parts([part], "part", Mask)

    def _visible(self, i, j, Lq, Lk):
        return ~np.asarray(self.part._visible(i, j, Lq, Lk), dtype=bool)

    def __repr__(self):
        return f"~{self.part!r}"


class Full(Mask):
    """Every key visible to every query."""

    def _visible(self, i, j, Lq, Lk):
        return np.ones(np.broadcast_shapes(i.shape, j.shape), dtype=bool)

    def row_counts(self, Lq, Lk):
        Lq, Lk = lengths(Lq, Lk)
        rows_budget(Lq)
        return np.full(Lq, Lk, dtype=np.int64)

    def count(self, Lq, Lk) -> int:
        Lq, Lk = lengths(Lq, Lk)
        return Lq * Lk

    def __repr__(self):
        return "Full()"


def _sum_clip(c: int, n: int, K: int) -> int:
    """sum_{t=c}^{c+n-1} clip(t, 0, K), exactly, in O(1).

    With G(N) = sum_{t=0}^{N-1} min(t, K) = N(N-1)/2 for N <= K+1, else
    K(K+1)/2 + (N-1-K)K, the sum is G(max(c+n, 0)) - G(max(c, 0)).
    """

    def G(N: int) -> int:
        return N * (N - 1) // 2 if N <= K + 1 else K * (K + 1) // 2 + (N - 1 - K) * K

    return G(max(c + n, 0)) - G(max(c, 0))


class SlidingWindow(Mask):
    """``p - left <= j <= p + right`` with ``p = i + offset``; None = unbounded side.

    flash-attn ``window_size=(left, right)`` (flash_attn_interface.py,
    ``flash_attn_func``: keys in ``[i + Lk - Lq - left, i + Lk - Lq + right]``);
    ``-1`` there means unbounded, here ``None``. Causal is ``SlidingWindow(None, 0)``.
    """

    def __init__(self, left: int | None, right: int | None, align: str = "bottom_right"):
        self.left = None if left is None else extent(left, "window left")
        self.right = None if right is None else extent(right, "window right")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        p = i + _offset(Lq, Lk, self.align)
        ok = np.ones(np.broadcast_shapes(i.shape, j.shape), dtype=bool)
        if self.left is not None:
            ok = ok & (j >= p - self.left)
        if self.right is not None:
            ok = ok & (j <= p + self.right)
        return ok

    def _tile(self, q_start, q_stop, k_start, k_stop, Lq, Lk) -> np.ndarray:
        """The block in the block's own indices i' = i - q_start, j' = j - k_start:
        j - p = j' - i' + c with c = k_start - q_start - offset, so the band is
        -left - c <= j' - i' <= right - c. j' - i' lies in [-nq, nk]: the bounds clipped
        to that range leave the block unchanged and keep every index in int32, which
        NumPy compares several times faster than int64 (a 512 x 512 causal block:
        0.2 ms -> 0.04 ms on the EPYC of issue 23)."""
        nq, nk = q_stop - q_start, k_stop - k_start
        c = k_start - q_start - _offset(Lq, Lk, self.align)
        dt = np.int32 if nq + nk < 2**30 else np.int64
        i, j = np.arange(nq, dtype=dt)[:, None], np.arange(nk, dtype=dt)
        ok = np.ones((nq, nk), dtype=bool)
        if self.left is not None:
            ok &= j >= i + dt(min(max(-self.left - c, -nq), nk))
        if self.right is not None:
            ok &= j <= i + dt(min(max(self.right - c, -nq), nk))
        return ok

    def _covers(self, q_start, q_stop, k_start, k_stop, Lq, Lk) -> bool:
        """Every (i, j) of the block visible: min(j - p) >= -left and max(j - p) <= right."""
        o = _offset(Lq, Lk, self.align)
        return (self.left is None or k_start - (q_stop - 1 + o) >= -self.left) and \
            (self.right is None or (k_stop - 1) - (q_start + o) <= self.right)

    def _hides(self, q_start, q_stop, k_start, k_stop, Lq, Lk) -> bool:
        """Every (i, j) of the block hidden: max(j - p) < -left or min(j - p) > right."""
        o = _offset(Lq, Lk, self.align)
        return (self.left is not None and (k_stop - 1) - (q_start + o) < -self.left) or \
            (self.right is not None and k_start - (q_stop - 1 + o) > self.right)

    def _key_span(self, q_start, q_stop, Lq, Lk):
        """[p_first - left, p_last + right + 1) clipped to [0, Lk)."""
        o = _offset(Lq, Lk, self.align)
        lo = 0 if self.left is None else min(max(q_start + o - self.left, 0), Lk)
        hi = Lk if self.right is None else min(max(q_stop - 1 + o + self.right + 1, 0), Lk)
        return lo, max(lo, hi)

    def row_counts(self, Lq, Lk):
        """Keys in [0, Lk) within [p - left, p + right]: clip(p+right+1, 0, Lk) - clip(p-left, 0, Lk)."""
        Lq, Lk = lengths(Lq, Lk)
        rows_budget(Lq)
        p = np.arange(Lq, dtype=np.int64) + _offset(Lq, Lk, self.align)
        hi = np.full(Lq, Lk) if self.right is None else np.clip(p + self.right + 1, 0, Lk)
        lo = np.zeros(Lq, np.int64) if self.left is None else np.clip(p - self.left, 0, Lk)
        return np.maximum(hi - lo, 0).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): sum over rows of clip(p+right+1, 0, Lk) - clip(p-left, 0, Lk)."""
        Lq, Lk = lengths(Lq, Lk)
        o = _offset(Lq, Lk, self.align)
        hi = Lq * Lk if self.right is None else _sum_clip(o + self.right + 1, Lq, Lk)
        lo = 0 if self.left is None else _sum_clip(o - self.left, Lq, Lk)
        return hi - lo

    def __repr__(self):
        return f"SlidingWindow({self.left}, {self.right}, align={self.align!r})"


class Causal(SlidingWindow):
    """Key j visible to query i iff ``j <= i + offset`` (see module docstring)."""

    def __init__(self, align: str = "bottom_right"):
        super().__init__(None, 0, align)

    def __repr__(self):
        return f"Causal(align={self.align!r})"


def window_from_keys_including_self(W: int) -> tuple[int, int]:
    """"Attend to the last W keys, self included" (HF Mistral/Qwen2 ``sliding_window``) -> (W - 1, 0)."""
    return (positive_length(W, "W") - 1, 0)


def window_from_seed_mw(w: int) -> tuple[int, int]:
    """The notes' ``M_w``: ``max(0, i-w) <= j <= i`` -> (w, 0): w + 1 keys incl. self
    (docs/notes.md#sliding-window)."""
    return (extent(w, "w"), 0)


def seed_inverted_causal() -> Mask:
    """The causal mask as printed in the notes (docs/errata.md#e1): visible iff i < j.

    Kept only to demonstrate the pitfall: it hides the past and the diagonal
    and exposes the future. Never use it as a spec.
    """
    return _Predicate(lambda i, j, Lq, Lk: i < j, "seed_inverted_causal()")


class _Predicate(Mask):
    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name

    def _visible(self, i, j, Lq, Lk):
        return self.fn(i, j, Lq, Lk)

    def __repr__(self):
        return self.name


def predicate(fn: Callable, name: str = "predicate") -> Mask:
    """Wrap ``fn(i, j, Lq, Lk) -> bool array`` (like a FlexAttention mask_mod) as a Mask."""
    mask_predicate(fn, name)
    return _Predicate(fn, name)


__all__ = ["ALIGNMENTS", "offset", "Mask", "And", "Or", "Not", "Full", "SlidingWindow", "Causal",
           "window_from_keys_including_self", "window_from_seed_mw", "seed_inverted_causal", "predicate"]
