"""Structured sparse attention patterns as masks (re-exported by ``refimpl.masks``; built on ``refimpl.mask_core``).

Global tokens (Longformer / BigBird), dilated and strided windows (Sparse
Transformer), block-sparse layouts, prefix-LM, document (packed sequences),
DSA and the dual-chunk pair, and BigBird's block pattern: each a
``refimpl.masks.Mask`` predicate over (query index i, key index j) with the
alignment conventions of ``refimpl.masks`` (query i at key position
p = i + offset). Closed-form counts where a pattern has one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _validate as _V
from .mask_core import (Causal, Mask, SlidingWindow, _check_align, _check_lengths, _extent, _nonneg_int, _periodic_count,
                    _pos_int, _Predicate, _rows_budget, _sum_clip, offset)


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

    def _visible(self, i, j, Lq, Lk):
        nq, nk = -(-Lq // self.block_q), -(-Lk // self.block_k)
        if self.layout.shape[0] < nq or self.layout.shape[1] < nk:
            raise ValueError(
                f"layout, Lq, Lk: expected a layout of at least ({nq}, {nk}) blocks for Lq = {Lq}, Lk = {Lk} "
                f"with blocks ({self.block_q}, {self.block_k}), got shape {self.layout.shape}"
            )
        return self.layout[i // self.block_q, j // self.block_k]

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

    def _visible(self, i, j, Lq, Lk):
        if (Lq, Lk) != (len(self.seg_q), len(self.seg_k)):
            raise ValueError(
                f"segment_ids_q, segment_ids_k: Document mask built for (Lq, Lk) = ({len(self.seg_q)}, {len(self.seg_k)}), used with ({Lq}, {Lk})"
            )
        return self.seg_q[i] == self.seg_k[j]

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

    def _visible(self, i, j, Lq, Lk):
        if Lq != Lk:
            raise ValueError(f"Lq, Lk: expected Lq == Lk (BigBird is a self-attention pattern), got {Lq}, {Lk}")
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
            raise ValueError(f"cu_seqlens_q, cu_seqlens_k: {len(self.cu_q) - 1} and {len(self.cu_k) - 1} sequences; "
                             "expected the same number")
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

    def _visible(self, i, j, Lq, Lk):
        if (Lq, Lk) != (int(self.cu_q[-1]), int(self.cu_k[-1])):
            raise ValueError(f"cu_seqlens_q, cu_seqlens_k: packed lengths ({self.cu_q[-1]}, {self.cu_k[-1]}), "
                             f"used with (Lq, Lk) = ({Lq}, {Lk})")
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
