"""Structured sparse patterns as masks: global tokens (Longformer / BigBird), dilated and strided
windows (Sparse Transformer), block-sparse layouts, prefix-LM, DSA and the dual-chunk pair.

A lower module of ``refimpl.mask_patterns`` (which re-exports every public name here; read
``refimpl.masks`` for the conventions). Built on ``refimpl.mask_core``; argument checks in
``refimpl._validate.masks``. Every pattern here counts in closed form (``count`` allocates nothing
that Lq, Lk size; ``row_counts`` only its (Lq,) result). The dual-chunk strided branch is a predicate:
its counts materialise it, within the budget.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._validate import check_budget
from ._validate.masks import (alignment, block_layout, extent, index_set, layout_covers, lengths, positive_length,
                              rows_budget)
from .mask_core import (ALIGNMENTS, Causal, Mask, SlidingWindow, _offset, _periodic_count, _Predicate, _sum_clip)


class GlobalTokens(Mask):
    """Global tokens G (Longformer/BigBird, docs/notes.md#global-and-random-tokens): symmetric.

    Visible iff ``j in G`` (everyone reads a global token) or ``p in G`` (a global
    token reads everyone), with ``p = i + offset`` the query's position in key
    coordinates. Combine with ``|`` onto a local pattern.
    """

    def __init__(self, indices: Sequence[int], align: str = "bottom_right"):
        self.indices = index_set(indices, "indices")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        p = i + _offset(Lq, Lk, self.align)
        return np.isin(j, self.indices) | np.isin(p, self.indices)

    def _counts(self, Lq, Lk) -> tuple[int, int, int]:
        """(o, G_k, G_q): the offset, #{g in G: g < Lk} (global keys) and #{g in G: o <= g < o + Lq}
        (global query rows), by binary search in the sorted G."""
        o = _offset(Lq, Lk, self.align)
        G = self.indices
        gk = int(np.searchsorted(G, Lk))
        gq = int(np.searchsorted(G, o + Lq)) - int(np.searchsorted(G, o)) if Lq else 0
        return o, gk, gq

    def row_counts(self, Lq, Lk):
        """Closed form per row: a global row (p in G) sees all Lk keys, any other row the G_k global keys."""
        Lq, Lk = lengths(Lq, Lk)
        rows_budget(Lq)
        o, gk, _ = self._counts(Lq, Lk)
        p = np.arange(Lq, dtype=np.int64) + o
        return np.where(np.isin(p, self.indices), Lk, gk).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(log |G|), no allocation: G_q Lk + (Lq - G_q) G_k (``_counts``)."""
        Lq, Lk = lengths(Lq, Lk)
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
        self.window = extent(window, "window")
        self.dilation = positive_length(dilation, "dilation")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        d = i + _offset(Lq, Lk, self.align) - j
        return (d >= 0) & (d <= self.window * self.dilation) & (d % self.dilation == 0)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): keys p - m dilation, m = 0..window, within [0, Lk) (``mask_core._periodic_count``)."""
        Lq, Lk = lengths(Lq, Lk)
        o = _offset(Lq, Lk, self.align)
        return _periodic_count(o, o + Lq, self.dilation, self.window, Lk)

    def __repr__(self):
        return f"Dilated({self.window}, {self.dilation}, align={self.align!r})"


class Strided(Mask):
    """Strided causal pattern (Sparse Transformer, Child et al. 2019, the "strided" head):

    visible iff ``j <= p`` and ``(p - j) % stride == 0``.
    """

    def __init__(self, stride: int, align: str = "bottom_right"):
        self.stride = positive_length(stride, "stride")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        d = i + _offset(Lq, Lk, self.align) - j
        return (d >= 0) & (d % self.stride == 0)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): keys p - m stride, m >= 0, within [0, Lk) (``mask_core._periodic_count``)."""
        Lq, Lk = lengths(Lq, Lk)
        o = _offset(Lq, Lk, self.align)
        return _periodic_count(o, o + Lq, self.stride, None, Lk)

    def __repr__(self):
        return f"Strided({self.stride}, align={self.align!r})"


class BlockSparse(Mask):
    """Block-sparse layout: visible iff ``layout[i // block_q, j // block_k]``.

    ``layout`` is a bool array (ceil(Lq/block_q), ceil(Lk/block_k)) or larger
    (DeepSpeed sparse attention / Triton block-sparse layouts).
    """

    def __init__(self, layout, block_q: int, block_k: int):
        self.layout = block_layout(layout)
        self.block_q = positive_length(block_q, "block_q")
        self.block_k = positive_length(block_k, "block_k")

    def _blocks(self, Lq, Lk) -> tuple[int, int]:
        """(n_q, n_k) = (ceil(Lq / block_q), ceil(Lk / block_k)), within the layout."""
        nq, nk = -(-Lq // self.block_q), -(-Lk // self.block_k)
        layout_covers(self.layout.shape, nq, nk, Lq, Lk, self.block_q, self.block_k)
        return nq, nk

    def _visible(self, i, j, Lq, Lk):
        self._blocks(Lq, Lk)
        return self.layout[i // self.block_q, j // self.block_k]

    def row_counts(self, Lq, Lk):
        """Closed form per block row: block_k (visible blocks) - e_k [last key block visible], e_k = n_k block_k - Lk
        (the last key block's missing columns), repeated over the block's rows."""
        Lq, Lk = lengths(Lq, Lk)
        rows_budget(Lq)
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
        Lq, Lk = lengths(Lq, Lk)
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
        self.prefix = extent(prefix, "prefix")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        return (j < self.prefix) | (j <= i + _offset(Lq, Lk, self.align))

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): row p sees max(P, clip(p + 1, 0, Lk)) keys, P = min(prefix, Lk); rows with
        p + 1 < P see P, the rest clip(p + 1, 0, Lk) (``mask_core._sum_clip``)."""
        Lq, Lk = lengths(Lq, Lk)
        o = _offset(Lq, Lk, self.align)
        P = min(self.prefix, Lk)
        n_prefix = min(max(P - 1 - o, 0), Lq)  # rows i with i + o + 1 < P
        return n_prefix * P + _sum_clip(o + n_prefix + 1, Lq - n_prefix, Lk)

    def __repr__(self):
        return f"PrefixLM({self.prefix}, align={self.align!r})"


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
        self.window = extent(window, "window")
        self.stride = positive_length(stride, "stride")
        self.global_tokens = index_set(global_tokens, "global_tokens")
        self.align = alignment(align, ALIGNMENTS)

    def _visible(self, i, j, Lq, Lk):
        d = i + _offset(Lq, Lk, self.align) - j  # distance back from the query
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
        Lq, Lk = lengths(Lq, Lk)
        check_budget("Lq, global_tokens", shape=(Lq,), itemsize=32 + 8 * len(self.global_tokens),
                        what=f"row counts of {Lq} rows")
        p = np.arange(Lq, dtype=np.int64) + _offset(Lq, Lk, self.align)
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
        Lq, Lk = lengths(Lq, Lk)
        o = _offset(Lq, Lk, self.align)
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
    positive_length(window, "window")
    positive_length(stride, "stride")
    local = SlidingWindow(window - 1, 0, align)
    strided = Causal(align) & _Predicate(lambda i, j, Lq, Lk: j % stride == 0, f"(j % {stride} == 0)")
    return local, strided


__all__ = ["GlobalTokens", "Dilated", "Strided", "BlockSparse", "PrefixLM", "DSA", "dual_chunk_masks"]
