"""Packed sequences as masks: ``Document`` (segment ids) and ``Varlen`` (cu_seqlens offsets, per-sequence
causal, window and alignment).

A lower module of ``refimpl.mask_patterns`` (which re-exports both; read ``refimpl.masks`` for the
conventions). Built on ``refimpl.mask_core``; argument checks in ``refimpl._validate.masks``. Both
count in closed form.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_budget
from ._validate.masks import document_lengths, lengths, packed_lengths, rows_budget, segment_ids, varlen_inputs
from .mask_core import ALIGNMENTS, Mask, SlidingWindow


class Document(Mask):
    """Block-diagonal mask from segment ids (packed sequences): visible iff same segment.

    ``segment_ids_q`` (Lq,) and ``segment_ids_k`` (Lk,) integer arrays; with one
    argument both sides use it (self-attention, Lq == Lk). Combine with
    ``Causal`` for packed causal training (xformers ``BlockDiagonalCausalMask``).
    """

    def __init__(self, segment_ids_q, segment_ids_k=None):
        self.seg_q = segment_ids(segment_ids_q, "segment_ids_q")
        self.seg_k = self.seg_q if segment_ids_k is None else segment_ids(segment_ids_k, "segment_ids_k")

    def _visible(self, i, j, Lq, Lk):
        document_lengths(Lq, Lk, len(self.seg_q), len(self.seg_k))
        return self.seg_q[i] == self.seg_k[j]

    def _key_counts(self):
        """(segment ids of the keys, sorted, and the number of keys in each)."""
        return np.unique(self.seg_k, return_counts=True)

    def row_counts(self, Lq, Lk):
        """Closed form per row: the number of keys in the query's segment (O((Lq + Lk) log Lk), no (Lq, Lk))."""
        Lq, Lk = lengths(Lq, Lk)
        document_lengths(Lq, Lk, len(self.seg_q), len(self.seg_k))
        ids, n_k = self._key_counts()
        at = np.minimum(np.searchsorted(ids, self.seg_q), max(len(ids) - 1, 0))
        hit = (ids[at] == self.seg_q) if len(ids) else np.zeros(Lq, dtype=bool)
        return np.where(hit, n_k[at] if len(ids) else 0, 0).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form: sum over segments s of n_q(s) n_k(s), from the segment sizes (O((Lq + Lk) log), no (Lq, Lk)
        allocation; the mask is defined by its Lq + Lk ids, so counting reads them once)."""
        Lq, Lk = lengths(Lq, Lk)
        document_lengths(Lq, Lk, len(self.seg_q), len(self.seg_k))
        ids_q, n_q = np.unique(self.seg_q, return_counts=True)
        ids_k, n_k = self._key_counts()
        _, iq, ik = np.intersect1d(ids_q, ids_k, assume_unique=True, return_indices=True)
        return sum(int(a) * int(b) for a, b in zip(n_q[iq].tolist(), n_k[ik].tolist()))

    def __repr__(self):
        return f"Document(<{len(self.seg_q)}>, <{len(self.seg_k)}>)"


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
        self.cu_q, self.cu_k, self.causal, self.align, self.window = varlen_inputs(
            cu_seqlens_q, cu_seqlens_k, causal, align, window, ALIGNMENTS)

    def _window(self) -> SlidingWindow:
        """The per-sequence mask on local indices: causal is right = 0, a window bounds both sides."""
        left, right = self.window if self.window is not None else (None, None)
        return SlidingWindow(left, 0 if self.causal else right, self.align)

    def count(self, Lq, Lk) -> int:
        """Closed form: the sum over sequences of the per-sequence window's closed-form count
        (``SlidingWindow.count`` on (Lq_s, Lk_s)); O(number of sequences), no (Lq, Lk) allocation."""
        Lq, Lk = lengths(Lq, Lk)
        packed_lengths(Lq, Lk, int(self.cu_q[-1]), int(self.cu_k[-1]))
        w = self._window()
        return sum(w.count(a, b) for a, b in zip(np.diff(self.cu_q).tolist(), np.diff(self.cu_k).tolist()))

    def row_counts(self, Lq, Lk):
        """Closed form per row: clip(p + right + 1, 0, Lk_s) - clip(p - left, 0, Lk_s) with p the query's
        aligned local position (``positions``) and Lk_s its sequence's keys."""
        Lq, Lk = lengths(Lq, Lk)
        packed_lengths(Lq, Lk, int(self.cu_q[-1]), int(self.cu_k[-1]))
        rows_budget(Lq)
        p, _ = self.positions()
        nk = np.diff(self.cu_k)[np.searchsorted(self.cu_q, np.arange(Lq), side="right") - 1]
        w = self._window()
        hi = nk if w.right is None else np.clip(p + w.right + 1, 0, nk)
        lo = np.zeros(Lq, np.int64) if w.left is None else np.clip(p - w.left, 0, nk)
        return np.maximum(hi - lo, 0).astype(np.int64)

    def _visible(self, i, j, Lq, Lk):
        packed_lengths(Lq, Lk, int(self.cu_q[-1]), int(self.cu_k[-1]))
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
        check_budget("cu_seqlens_q, cu_seqlens_k", shape=(int(self.cu_q[-1]) + int(self.cu_k[-1]),), itemsize=32,
                        what=f"positions of {int(self.cu_q[-1])} queries and {int(self.cu_k[-1])} keys")
        nq, nk = np.diff(self.cu_q), np.diff(self.cu_k)
        sq, sk = np.repeat(np.arange(len(nq)), nq), np.repeat(np.arange(len(nk)), nk)
        o = (nk - nq)[sq] if self.align == "bottom_right" else 0
        return np.arange(self.cu_q[-1]) - self.cu_q[sq] + o, np.arange(self.cu_k[-1]) - self.cu_k[sk]

    def __repr__(self):
        return (f"Varlen({self.cu_q.tolist()}, {self.cu_k.tolist()}, causal={self.causal}, align={self.align!r}, "
                f"window={self.window})")


__all__ = ["Document", "Varlen"]
