"""Structured sparse attention patterns as masks (re-exported by ``refimpl.masks``; built on ``refimpl.mask_core``).

Global tokens (Longformer / BigBird), dilated and strided windows (Sparse
Transformer), block-sparse layouts, prefix-LM, document (packed sequences),
DSA and the dual-chunk pair, and BigBird's block pattern: each a
``refimpl.masks.Mask`` predicate over (query index i, key index j) with the
alignment conventions of ``refimpl.masks`` (query i at key position
p = i + offset). Every pattern here counts in closed form (``count`` allocates nothing
that Lq, Lk size; ``row_counts`` only its (Lq,) result); BigBird replays its seeded
random draw only when a partial last block makes the draw matter (budgeted). The
dual-chunk strided branch is a predicate: its counts materialise it, within the budget.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _validate as _V
from .mask_core import (Causal, Mask, SlidingWindow, _check_align, _check_lengths, _extent, _nonneg_int, _periodic_count,
                    _pos_int, _Predicate, _rows_budget, _sum_clip, _sum_clip_ap, offset)


def _index_set(indices, name: str) -> np.ndarray:
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of ints, got {type(indices).__name__}")
    arr = np.asarray(sorted(set(int(_nonneg_int(g, name)) for g in indices)), dtype=np.int64)
    return arr


class GlobalTokens(Mask):
    """Global tokens G (Longformer/BigBird, docs/notes.md#global-and-random-tokens): symmetric.

    Visible iff ``j in G`` (everyone reads a global token) or ``p in G`` (a global
    token reads everyone), with ``p = i + offset`` the query's position in key
    coordinates. Combine with ``|`` onto a local pattern.
    """

    def __init__(self, indices: Sequence[int], align: str = "bottom_right"):
        self.indices = _index_set(indices, "indices")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        p = i + offset(Lq, Lk, self.align)
        return np.isin(j, self.indices) | np.isin(p, self.indices)

    def _counts(self, Lq, Lk) -> tuple[int, int, int]:
        """(o, G_k, G_q): the offset, #{g in G: g < Lk} (global keys) and #{g in G: o <= g < o + Lq}
        (global query rows), by binary search in the sorted G."""
        o = offset(Lq, Lk, self.align)
        G = self.indices
        gk = int(np.searchsorted(G, Lk))
        gq = int(np.searchsorted(G, o + Lq)) - int(np.searchsorted(G, o)) if Lq else 0
        return o, gk, gq

    def row_counts(self, Lq, Lk):
        """Closed form per row: a global row (p in G) sees all Lk keys, any other row the G_k global keys."""
        Lq, Lk = _check_lengths(Lq, Lk)
        _rows_budget(Lq)
        o, gk, _ = self._counts(Lq, Lk)
        p = np.arange(Lq, dtype=np.int64) + o
        return np.where(np.isin(p, self.indices), Lk, gk).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(log |G|), no allocation: G_q Lk + (Lq - G_q) G_k (``_counts``)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        _, gk, gq = self._counts(Lq, Lk)
        return gq * Lk + (Lq - gq) * gk

    def __repr__(self):
        return f"GlobalTokens({self.indices.tolist()}, align={self.align!r})"


class Dilated(Mask):
    """Dilated causal window: ``0 <= p - j <= window * dilation`` and ``(p - j) % dilation == 0``.

    ``window + 1`` keys per interior row, every ``dilation``-th key back from the
    query, self included (Longformer dilated sliding window, one-sided).
    """

    def __init__(self, window: int, dilation: int, align: str = "bottom_right"):
        self.window = _extent(window, "window")
        self.dilation = _pos_int(dilation, "dilation")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        d = i + offset(Lq, Lk, self.align) - j
        return (d >= 0) & (d <= self.window * self.dilation) & (d % self.dilation == 0)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): keys p - m dilation, m = 0..window, within [0, Lk) (``mask_core._periodic_count``)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        o = offset(Lq, Lk, self.align)
        return _periodic_count(o, o + Lq, self.dilation, self.window, Lk)

    def __repr__(self):
        return f"Dilated({self.window}, {self.dilation}, align={self.align!r})"


class Strided(Mask):
    """Strided causal pattern (Sparse Transformer, Child et al. 2019, the "strided" head):

    visible iff ``j <= p`` and ``(p - j) % stride == 0``.
    """

    def __init__(self, stride: int, align: str = "bottom_right"):
        self.stride = _pos_int(stride, "stride")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        d = i + offset(Lq, Lk, self.align) - j
        return (d >= 0) & (d % self.stride == 0)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): keys p - m stride, m >= 0, within [0, Lk) (``mask_core._periodic_count``)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        o = offset(Lq, Lk, self.align)
        return _periodic_count(o, o + Lq, self.stride, None, Lk)

    def __repr__(self):
        return f"Strided({self.stride}, align={self.align!r})"


class BlockSparse(Mask):
    """Block-sparse layout: visible iff ``layout[i // block_q, j // block_k]``.

    ``layout`` is a bool array (ceil(Lq/block_q), ceil(Lk/block_k)) or larger
    (DeepSpeed sparse attention / Triton block-sparse layouts).
    """

    def __init__(self, layout, block_q: int, block_k: int):
        layout = np.asarray(layout)
        if layout.ndim != 2 or layout.dtype != np.bool_:
            raise TypeError(f"layout: expected a 2-D bool array, got {layout.dtype} {layout.shape}")
        self.layout = layout.copy()
        self.block_q = _pos_int(block_q, "block_q")
        self.block_k = _pos_int(block_k, "block_k")

    def _blocks(self, Lq, Lk) -> tuple[int, int]:
        """(n_q, n_k) = (ceil(Lq / block_q), ceil(Lk / block_k)), within the layout."""
        nq, nk = -(-Lq // self.block_q), -(-Lk // self.block_k)
        if self.layout.shape[0] < nq or self.layout.shape[1] < nk:
            raise ValueError(
                f"layout, Lq, Lk: expected a layout of at least ({nq}, {nk}) blocks for Lq = {Lq}, Lk = {Lk} "
                f"with blocks ({self.block_q}, {self.block_k}), got shape {self.layout.shape}"
            )
        return nq, nk

    def _visible(self, i, j, Lq, Lk):
        self._blocks(Lq, Lk)
        return self.layout[i // self.block_q, j // self.block_k]

    def row_counts(self, Lq, Lk):
        """Closed form per block row: block_k (visible blocks) - e_k [last key block visible], e_k = n_k block_k - Lk
        (the last key block's missing columns), repeated over the block's rows."""
        Lq, Lk = _check_lengths(Lq, Lk)
        _rows_budget(Lq)
        nq, nk = self._blocks(Lq, Lk)
        if nq == 0 or nk == 0:
            return np.zeros(Lq, dtype=np.int64)
        L = self.layout[:nq, :nk]
        per_block = self.block_k * L.sum(axis=1, dtype=np.int64) - (nk * self.block_k - Lk) * L[:, -1]
        return per_block.astype(np.int64)[np.arange(Lq) // self.block_q]  # O(Lq), never n_q block_q entries

    def count(self, Lq, Lk) -> int:
        """Closed form over the stored layout, no (Lq, Lk) allocation, exact (Python ints): with block sizes
        r_a = block_q except the last, r_{n_q-1} = block_q - e_q (e_q = n_q block_q - Lq), and c_b likewise,
        sum_ab L_ab r_a c_b = bq bk S - e_q bk R - bq e_k C + e_q e_k L_last,last, where S is the number of
        visible blocks, R those of the last block row and C of the last block column."""
        Lq, Lk = _check_lengths(Lq, Lk)
        nq, nk = self._blocks(Lq, Lk)
        if nq == 0 or nk == 0:
            return 0
        L = self.layout[:nq, :nk]
        bq, bk = self.block_q, self.block_k
        eq, ek = nq * bq - Lq, nk * bk - Lk
        S, R, C, corner = (int(np.count_nonzero(x)) for x in (L, L[-1], L[:, -1], L[-1, -1]))
        return bq * bk * S - eq * bk * R - bq * ek * C + eq * ek * corner

    def __repr__(self):
        return f"BlockSparse({self.layout.shape}, {self.block_q}, {self.block_k})"


class PrefixLM(Mask):
    """Prefix-LM (T5/UniLM): bidirectional over keys ``j < prefix``, causal after.

    visible iff ``j < prefix`` or ``j <= p``.
    """

    def __init__(self, prefix: int, align: str = "bottom_right"):
        self.prefix = _extent(prefix, "prefix")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        return (j < self.prefix) | (j <= i + offset(Lq, Lk, self.align))

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): row p sees max(P, clip(p + 1, 0, Lk)) keys, P = min(prefix, Lk); rows with
        p + 1 < P see P, the rest clip(p + 1, 0, Lk) (``mask_core._sum_clip``)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        o = offset(Lq, Lk, self.align)
        P = min(self.prefix, Lk)
        n_prefix = min(max(P - 1 - o, 0), Lq)  # rows i with i + o + 1 < P
        return n_prefix * P + _sum_clip(o + n_prefix + 1, Lq - n_prefix, Lk)

    def __repr__(self):
        return f"PrefixLM({self.prefix}, align={self.align!r})"


class Document(Mask):
    """Block-diagonal mask from segment ids (packed sequences): visible iff same segment.

    ``segment_ids_q`` (Lq,) and ``segment_ids_k`` (Lk,) integer arrays; with one
    argument both sides use it (self-attention, Lq == Lk). Combine with
    ``Causal`` for packed causal training (xformers ``BlockDiagonalCausalMask``).
    """

    def __init__(self, segment_ids_q, segment_ids_k=None):
        self.seg_q = self._ids(segment_ids_q, "segment_ids_q")
        self.seg_k = self.seg_q if segment_ids_k is None else self._ids(segment_ids_k, "segment_ids_k")

    @staticmethod
    def _ids(x, name):
        a = np.asarray(x)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name}: expected a 1-D integer array, got {a.dtype} {a.shape}")
        return a.astype(np.int64).copy()

    def _check(self, Lq, Lk) -> None:
        if (Lq, Lk) != (len(self.seg_q), len(self.seg_k)):
            raise ValueError(f"Lq, Lk: expected the lengths of segment_ids_q, segment_ids_k = ({len(self.seg_q)}, "
                             f"{len(self.seg_k)}) (the Document mask's own), got ({Lq}, {Lk})")

    def _visible(self, i, j, Lq, Lk):
        self._check(Lq, Lk)
        return self.seg_q[i] == self.seg_k[j]

    def _key_counts(self):
        """(segment ids of the keys, sorted, and the number of keys in each)."""
        return np.unique(self.seg_k, return_counts=True)

    def row_counts(self, Lq, Lk):
        """Closed form per row: the number of keys in the query's segment (O((Lq + Lk) log Lk), no (Lq, Lk))."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        ids, n_k = self._key_counts()
        at = np.minimum(np.searchsorted(ids, self.seg_q), max(len(ids) - 1, 0))
        hit = (ids[at] == self.seg_q) if len(ids) else np.zeros(Lq, dtype=bool)
        return np.where(hit, n_k[at] if len(ids) else 0, 0).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form: sum over segments s of n_q(s) n_k(s), from the segment sizes (O((Lq + Lk) log), no (Lq, Lk)
        allocation; the mask is defined by its Lq + Lk ids, so counting reads them once)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        ids_q, n_q = np.unique(self.seg_q, return_counts=True)
        ids_k, n_k = self._key_counts()
        _, iq, ik = np.intersect1d(ids_q, ids_k, assume_unique=True, return_indices=True)
        return sum(int(a) * int(b) for a, b in zip(n_q[iq].tolist(), n_k[ik].tolist()))

    def __repr__(self):
        return f"Document(<{len(self.seg_q)}>, <{len(self.seg_k)}>)"


class DSA(Mask):
    """DeepSeek-style deterministic sparse attention, simplified (docs/notes.md#dsa).

    For a query at key position ``p`` the visible set is

        local window      p - window <= j <= p            (window + 1 keys)
        representatives   j = p - window - stride * m,  m = 1, 2, ...,  j >= 0
        global tokens     j in G (default {0}, the BOS), j <= p

    i.e. every ``stride``-th key further back than the window, counted from the
    window's start. All three parts are causal. (The notes' example writes the
    window 744..1000 as "256 tokens": it is 257, docs/errata.md#e6.)
    """

    def __init__(self, window: int, stride: int, global_tokens: Sequence[int] = (0,), align: str = "bottom_right"):
        self.window = _extent(window, "window")
        self.stride = _pos_int(stride, "stride")
        self.global_tokens = _index_set(global_tokens, "global_tokens")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        d = i + offset(Lq, Lk, self.align) - j  # distance back from the query
        local = (d >= 0) & (d <= self.window)
        far = d - self.window
        rep = (far > 0) & (far % self.stride == 0)
        glob = np.isin(j, self.global_tokens) & (d >= 0)
        return local | rep | glob

    def row_counts(self, Lq, Lk):
        """Closed form per row, without materialising.

        For p in key range (p' = min(p, Lk-1) caps nothing for bottom_right):
        local = #[max(0, p-window), min(p, Lk-1)];
        reps  = #{m >= 1 : p - window - stride*m in [0, Lk)};
        global tokens g <= p that are in neither set.
        """
        Lq, Lk = _check_lengths(Lq, Lk)
        _V.check_budget("Lq, global_tokens", shape=(Lq,), itemsize=32 + 8 * len(self.global_tokens),
                        what=f"row counts of {Lq} rows")
        p = np.arange(Lq, dtype=np.int64) + offset(Lq, Lk, self.align)
        w, s = self.window, self.stride
        local = np.maximum(np.minimum(p, Lk - 1) - np.maximum(p - w, 0) + 1, 0)
        # representatives j = p - w - s*m in [0, Lk - 1]: m in [m_lo, m_hi]
        m_hi = np.where(p - w >= s, (p - w) // s, 0)  # j >= 0
        m_lo = np.maximum(1, -((Lk - 1 - (p - w)) // s))  # j <= Lk - 1  <=>  m >= ceil((p-w-(Lk-1))/s)
        reps = np.maximum(m_hi - m_lo + 1, 0)
        extra = np.zeros(Lq, dtype=np.int64)
        for g in self.global_tokens:
            if g >= Lk:
                continue
            d = p - g
            covered = (d <= w) | ((d - w) % s == 0)
            extra += ((d >= 0) & ~covered).astype(np.int64)
        return (local + reps + extra).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(|G|), no allocation. With d = p - j the distance back from the query position
        p in [o, o + Lq):

            local   0 <= d <= window                   SlidingWindow(window, 0) count
            reps    d = window + stride m, m >= 1      rows p' = p - window - stride, keys p' - stride m',
                                                       m' >= 0: ``masks._periodic_count``
            global  g in G, g < Lk, d > window, (d - window) % stride != 0 (in neither set above):
                    #{p >= g + window + 1} - #{p = g + window + stride m, m >= 1}, per g.
        """
        Lq, Lk = _check_lengths(Lq, Lk)
        o = offset(Lq, Lk, self.align)
        w, s = self.window, self.stride
        total = SlidingWindow(w, 0, self.align).count(Lq, Lk) + _periodic_count(o - w - s, o + Lq - w - s, s, None, Lk)
        for g in self.global_tokens.tolist():
            if g >= Lk:
                break  # sorted
            first = g + w + 1  # rows p >= first are beyond the window from g
            beyond = max(0, o + Lq - max(o, first))
            m_hi = (o + Lq - 1 - g - w) // s  # reps rows p = g + w + s m in [o, o + Lq), m >= 1
            m_lo = max(1, -((g + w - o) // s))
            total += beyond - max(0, m_hi - m_lo + 1)
        return total

    def __repr__(self):
        return f"DSA(window={self.window}, stride={self.stride}, global={self.global_tokens.tolist()}, align={self.align!r})"


def dual_chunk_masks(window: int, stride: int, align: str = "bottom_right") -> tuple[Mask, Mask]:
    """The two branches of the dual-chunk scheme as the notes describe it (docs/notes.md#dual-chunk).

    Returns ``(local, strided)``: ``local`` is the causal window of ``window``
    keys including self, ``SlidingWindow(window - 1, 0)``; ``strided`` reads
    every ``stride``-th key of the whole causal context at absolute positions
    ``j % stride == 0``. The notes blend the two branches' outputs with a
    learned gate. Note: this is the notes' simplified description, not
    Qwen's published Dual Chunk Attention (An et al. 2024), which remaps
    relative positions within and across chunks.
    """
    _pos_int(window, "window")
    _pos_int(stride, "stride")
    local = SlidingWindow(window - 1, 0, align)
    strided = Causal(align) & _Predicate(lambda i, j, Lq, Lk: j % stride == 0, f"(j % {stride} == 0)")
    return local, strided


def _sum_min_linear(first: int, slope: int, count: int, cap: int) -> int:
    """sum_{m=0}^{count-1} min(cap, first + slope m), exactly, for slope in {-1, 0, 1}."""
    if count <= 0:
        return 0
    if slope == 0:
        return count * min(cap, first)
    start = first if slope > 0 else first - (count - 1)  # the terms in increasing order
    return _sum_clip_ap(start, 1, count, min(start, cap), cap)


class BigBird(Mask):
    """BigBird block-sparse pattern (Zaheer et al. 2020), bidirectional, block granularity.

    Blocks of ``block`` tokens on both axes (Lq == Lk required). Query block
    ``a`` attends to key block ``b`` iff
      * window: ``|a - b| <= window_blocks // 2`` (``window_blocks`` odd, e.g. 3), or
      * global: ``a < global_blocks`` or ``b < global_blocks`` (the first blocks
        attend to and are attended by everything), or
      * random: ``b`` is one of ``random_blocks`` blocks drawn for ``a``,
        without replacement, from the blocks not already visible, by
        ``numpy.random.default_rng(seed)``, query blocks in order.
    The random draw depends on the number of blocks, so it is made per (Lq, Lk).
    """

    def __init__(self, block: int, window_blocks: int = 3, global_blocks: int = 1, random_blocks: int = 1, seed: int = 0):
        self.block = _pos_int(block, "block")
        self.window_blocks = _pos_int(window_blocks, "window_blocks")
        if self.window_blocks % 2 == 0:
            raise ValueError(f"window_blocks: expected an odd number, got {window_blocks}")
        self.global_blocks = _nonneg_int(global_blocks, "global_blocks")
        self.random_blocks = _nonneg_int(random_blocks, "random_blocks")
        self.seed = _nonneg_int(seed, "seed")
        self._cache: dict[int, np.ndarray] = {}

    def block_layout(self, n_blocks: int) -> np.ndarray:
        """bool (n_blocks, n_blocks) block layout, deterministic in ``seed`` (a new array on every call)."""
        n_blocks = _nonneg_int(n_blocks, "n_blocks")
        if n_blocks in self._cache:
            return self._cache[n_blocks].copy()
        _V.check_budget("n_blocks", shape=(n_blocks, n_blocks), itemsize=24, steps=n_blocks,
                        what=f"a ({n_blocks}, {n_blocks}) block layout")
        a = np.arange(n_blocks)[:, None]
        b = np.arange(n_blocks)[None, :]
        layout = (np.abs(a - b) <= self.window_blocks // 2) | (a < self.global_blocks) | (b < self.global_blocks)
        rng = np.random.default_rng(self.seed)
        for row in range(n_blocks):
            free = np.flatnonzero(~layout[row])
            take = min(self.random_blocks, free.size)
            if take:
                layout[row, rng.choice(free, size=take, replace=False)] = True
        self._cache[n_blocks] = layout
        return layout.copy()

    def _check(self, Lq, Lk) -> None:
        if Lq != Lk:
            raise ValueError(f"Lq, Lk: expected Lq == Lk (BigBird is a self-attention pattern), got {Lq}, {Lk}")

    def _fixed(self, a, n: int):
        """det(a): the window and global blocks of query block a (before the random draw), in closed form.
        Rows a < g' = min(global_blocks, n) see all n blocks; others the union of [0, g') and
        [a - h, a + h] ∩ [0, n) (h = window_blocks // 2), which is min(n, a + h + 1) - max(0, a - h - g')."""
        g, h = min(self.global_blocks, n), self.window_blocks // 2
        return np.where(a < g, n, np.minimum(n, a + h + 1) - np.maximum(0, a - h - g))

    def _last_block_draws(self, n: int) -> np.ndarray:
        """bool (n,): the query blocks whose random draw took key block n - 1 (not one of their fixed blocks).

        The draw is seeded and made query block by query block (``block_layout``), so this replays it
        row by row without the (n, n) layout: ``rng.choice(free)`` is ``free[rng.choice(len(free))]``
        with the same stream, and block n - 1, when free, is the last of the free blocks."""
        _V.check_budget("Lq, block", shape=(n,), itemsize=8, steps=0 if self.random_blocks == 0 else n,
                        what=f"the seeded random draw of {n} query blocks")
        out = np.zeros(n, dtype=bool)
        if self.random_blocks == 0 or n == 0:
            return out
        layout = self._cache.get(n)
        if layout is not None:
            return layout[:, n - 1] & ~self._fixed_sees_last(np.arange(n), n)
        rng = np.random.default_rng(self.seed)
        for a in range(n):
            free = n - int(self._fixed(a, n))
            take = min(self.random_blocks, free)
            if take:
                drawn = rng.choice(free, size=take, replace=False)
                out[a] = bool(not self._fixed_sees_last(a, n)) and bool((drawn == free - 1).any())
        return out

    def _fixed_sees_last(self, a, n: int):
        """Is key block n - 1 one of query block a's fixed blocks (global row, global column, or window)."""
        g, h = min(self.global_blocks, n), self.window_blocks // 2
        return (a < g) | (n - 1 < g) | (a >= n - 1 - h)

    def _block_rows(self, n: int, e: int) -> np.ndarray:
        """int64 (n,): the visible keys of each query block's rows: block vis(a) - e [n - 1 visible in a],
        vis(a) = min(n, det(a) + random_blocks), e = n block - L the last block's missing columns."""
        a = np.arange(n, dtype=np.int64)
        vis = np.minimum(n, self._fixed(a, n) + min(self.random_blocks, n))
        last = self._fixed_sees_last(a, n) | (self._last_block_draws(n) if e and self.random_blocks else False)
        return self.block * vis - e * last

    def row_counts(self, Lq, Lk):
        """Closed form per block row (``_block_rows``), without the (n, n) layout; with a partial last block and
        random blocks, which rows drew the last block replays the seeded draw (n steps, budgeted)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        _rows_budget(Lq)
        n = -(-Lq // self.block)
        return self._block_rows(n, n * self.block - Lq).astype(np.int64)[np.arange(Lq) // self.block]  # O(Lq)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1), no allocation, exact (Python ints). With n = ceil(L / block) blocks, the last
        short by e = n block - L, V visible block pairs, R visible blocks in the last row and C rows
        seeing the last column:

            count = block^2 V - e block (R + C) + e^2          (the diagonal block (n-1, n-1) is visible)

        V = sum_a min(n, det(a) + random_blocks) (``_fixed``) sums a piecewise linear function of a;
        R and the fixed part of C are closed forms. Only with e > 0 and random_blocks > 0 does C need
        which rows drew the last block: that replays the seeded draw (``_last_block_draws``: n steps
        within the work budget, no layout)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        n = -(-Lq // self.block)
        if n == 0:
            return 0
        e, b = n * self.block - Lq, self.block
        g, h, r = min(self.global_blocks, n), self.window_blocks // 2, min(self.random_blocks, n)
        # V: rows a < g see n; rows a in [g, n) see min(n, min(n, a + h + 1) - max(0, a - h - g) + r),
        # linear in a between the breakpoints n - h - 1 and h + g
        V = g * n
        cuts = sorted({g, n, min(max(n - h - 1, g), n), min(max(h + g, g), n)})
        for lo, hi in zip(cuts, cuts[1:]):
            grows = lo < n - h - 1  # min(n, a + h + 1) = a + h + 1 on [lo, hi)
            far = lo >= h + g  # max(0, a - h - g) = a - h - g on [lo, hi)
            first = (lo + h + 1 if grows else n) - (lo - h - g if far else 0) + r
            V += _sum_min_linear(first, int(grows) - int(far), hi - lo, n)
        if e == 0:
            return b * b * V
        R = min(n, int(self._fixed(n - 1, n)) + r)
        C_fixed = n if n - 1 < g else g + (n - max(g, n - 1 - h))
        C = C_fixed + (int(np.count_nonzero(self._last_block_draws(n))) if self.random_blocks else 0)
        return b * b * V - e * b * (R + C) + e * e

    def _visible(self, i, j, Lq, Lk):
        self._check(Lq, Lk)
        n = -(-Lq // self.block)
        layout = self._cache.get(n)
        layout = self.block_layout(n) if layout is None else layout
        return layout[i // self.block, j // self.block]

    def __repr__(self):
        return (
            f"BigBird(block={self.block}, window_blocks={self.window_blocks}, global_blocks={self.global_blocks}, "
            f"random_blocks={self.random_blocks}, seed={self.seed})"
        )


class Varlen(Mask):
    """Packed variable-length sequences (flash-attn varlen, xformers ``BlockDiagonal*Mask``).

    ``cu_seqlens_q`` (n + 1,) and ``cu_seqlens_k`` (n + 1,) non-decreasing int arrays
    starting at 0: sequence s holds queries [cq_s, cq_{s+1}) and keys [ck_s, ck_{s+1})
    (Lq_s, Lk_s of them; a length may be 0). Query i of sequence s sees key j iff j is
    in sequence s and, per sequence, with local indices a = i - cq_s, b = j - ck_s and
    o_s = Lk_s - Lq_s (``align="bottom_right"``) or 0 (``"top_left"``):

        causal:          b <= a + o_s
        window (l, r):   a + o_s - l <= b <= a + o_s + r   (a side None is unbounded)

    The alignment is per sequence, never of the packed (total_q, total_k) matrix.

    Sources: Dao-AILab/flash-attention v2.8.3 flash_attn/flash_attn_interface.py
    ``flash_attn_varlen_func`` (causal "aligned to the bottom right corner" of each
    sequence's attention matrix); facebookresearch/xformers 0.0.33
    xformers/ops/fmha/attn_bias.py ``BlockDiagonalCausalMask._create_block_mask``
    (per block ``LowerTriangularMask``: top-left) and
    ``BlockDiagonalCausalFromBottomRightMask`` (per block ``LowerTriangularFromBottomRightMask``).
    """

    def __init__(self, cu_seqlens_q, cu_seqlens_k=None, *, causal: bool = False, align: str = "bottom_right",
                 window=None):
        self.cu_q = self._cu(cu_seqlens_q, "cu_seqlens_q")
        self.cu_k = self.cu_q if cu_seqlens_k is None else self._cu(cu_seqlens_k, "cu_seqlens_k")
        if len(self.cu_q) != len(self.cu_k):
            raise ValueError(f"cu_seqlens_q, cu_seqlens_k: expected the same number of sequences, got "
                             f"{len(self.cu_q) - 1} and {len(self.cu_k) - 1}")
        if not isinstance(causal, (bool, np.bool_)):
            raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
        self.causal = bool(causal)
        self.align = _check_align(align)
        if window is not None:
            if not isinstance(window, (tuple, list)) or len(window) != 2:
                raise TypeError(f"window: expected (left, right), got {window!r}")
            window = tuple(None if w is None else _extent(w, "window") for w in window)
        self.window = window

    @staticmethod
    def _cu(x, name):
        a = _V.index_array(x, name, ndim=1)  # int64, entries in [0, 2**62)
        if a.size < 1:
            raise ValueError(f"{name}: expected offsets (n + 1,) with n >= 0, got shape {a.shape}")
        a = a.copy()
        if a[0] != 0 or np.any(np.diff(a) < 0):
            raise ValueError(f"{name}: expected non-decreasing offsets starting at 0, got {a.tolist()}")
        return a

    def _check(self, Lq, Lk) -> None:
        if (Lq, Lk) != (int(self.cu_q[-1]), int(self.cu_k[-1])):
            raise ValueError(f"Lq, Lk: expected the packed lengths (cu_seqlens_q[-1], cu_seqlens_k[-1]) = "
                             f"({int(self.cu_q[-1])}, {int(self.cu_k[-1])}), got ({Lq}, {Lk})")

    def _window(self) -> SlidingWindow:
        """The per-sequence mask on local indices: causal is right = 0, a window bounds both sides."""
        left, right = self.window if self.window is not None else (None, None)
        return SlidingWindow(left, 0 if self.causal else right, self.align)

    def count(self, Lq, Lk) -> int:
        """Closed form: the sum over sequences of the per-sequence window's closed-form count
        (``SlidingWindow.count`` on (Lq_s, Lk_s)); O(number of sequences), no (Lq, Lk) allocation."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        w = self._window()
        return sum(w.count(a, b) for a, b in zip(np.diff(self.cu_q).tolist(), np.diff(self.cu_k).tolist()))

    def row_counts(self, Lq, Lk):
        """Closed form per row: clip(p + right + 1, 0, Lk_s) - clip(p - left, 0, Lk_s) with p the query's
        aligned local position (``positions``) and Lk_s its sequence's keys."""
        Lq, Lk = _check_lengths(Lq, Lk)
        self._check(Lq, Lk)
        _rows_budget(Lq)
        p, _ = self.positions()
        nk = np.diff(self.cu_k)[np.searchsorted(self.cu_q, np.arange(Lq), side="right") - 1]
        w = self._window()
        hi = nk if w.right is None else np.clip(p + w.right + 1, 0, nk)
        lo = np.zeros(Lq, np.int64) if w.left is None else np.clip(p - w.left, 0, nk)
        return np.maximum(hi - lo, 0).astype(np.int64)

    def _visible(self, i, j, Lq, Lk):
        self._check(Lq, Lk)
        sq = np.searchsorted(self.cu_q, i, side="right") - 1  # sequence of each query
        sk = np.searchsorted(self.cu_k, j, side="right") - 1
        vis = sq == sk
        a, b = i - self.cu_q[sq], j - self.cu_k[np.clip(sk, 0, len(self.cu_k) - 2)]
        if self.align == "bottom_right":
            o = (self.cu_k[sq + 1] - self.cu_k[sq]) - (self.cu_q[sq + 1] - self.cu_q[sq])
        else:
            o = 0
        p = a + o
        if self.causal:
            vis = vis & (b <= p)
        if self.window is not None:
            left, right = self.window
            if left is not None:
                vis = vis & (b >= p - left)
            if right is not None:
                vis = vis & (b <= p + right)
        return vis

    def positions(self):
        """(p (total_q,), key (total_k,)): each query's aligned position a + o_s and each key's
        local index b within its own sequence (what causal, windows and ALiBi compare)."""
        _V.check_budget("cu_seqlens_q, cu_seqlens_k", shape=(int(self.cu_q[-1]) + int(self.cu_k[-1]),), itemsize=32,
                        what=f"positions of {int(self.cu_q[-1])} queries and {int(self.cu_k[-1])} keys")
        nq, nk = np.diff(self.cu_q), np.diff(self.cu_k)
        sq, sk = np.repeat(np.arange(len(nq)), nq), np.repeat(np.arange(len(nk)), nk)
        o = (nk - nq)[sq] if self.align == "bottom_right" else 0
        return np.arange(self.cu_q[-1]) - self.cu_q[sq] + o, np.arange(self.cu_k[-1]) - self.cu_k[sk]

    def __repr__(self):
        return (f"Varlen({self.cu_q.tolist()}, {self.cu_k.tolist()}, causal={self.causal}, align={self.align!r}, "
                f"window={self.window})")
