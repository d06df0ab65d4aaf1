"""Attention masks as predicates over (query index, key index).

A mask says which keys each query *may attend to* (True = visible). It is a
predicate ``mask(i, j, Lq, Lk)`` evaluated on integer index arrays that
broadcast against each other, so a kernel can evaluate it on one tile without
materialising the whole (Lq, Lk) matrix. Masks compose with ``&``, ``|``, ``~``.

Positional conventions (pinned by this spec):

* Alignment. When Lq != Lk the query rows are aligned to the key columns with
  an offset ``o``: query ``i`` sits at key position ``p = i + o``.
  ``align="bottom_right"`` (default; flash-attn >= 2.1, xformers
  ``...FromBottomRight``): ``o = Lk - Lq``, so the last query sees the last key
  (decoding with a KV cache). ``align="top_left"`` (torch SDPA ``is_causal``,
  FlexAttention, JAX): ``o = 0``. The two agree when Lq == Lk.
* Causal: key ``j`` is visible to query ``i`` iff ``j <= p``. (The causal mask
  written in seed 001 section 14.5 is inverted, ERRATA 1: it hides the past and
  shows the future; ``seed_inverted_causal`` keeps it so tests can show it leaks.)
* Sliding window ``(left, right)`` in the flash-attn sense: visible iff
  ``p - left <= j <= p + right`` (both ends inclusive, ``left + 1 + right`` keys
  in the interior); ``None`` on a side means unbounded. Converters:
  ``window_from_keys_including_self(W) = (W - 1, 0)`` (HF Mistral
  ``sliding_window=W``) and ``window_from_seed_mw(w) = (w, 0)`` (seed 000
  section 1, ``max(0, i-w) <= j <= i``: w + 1 keys; seed 000 Problem 1 instead
  counts w keys per row, ERRATA 2).

Every mask has ``materialize(Lq, Lk)`` -> bool (Lq, Lk), ``count(Lq, Lk)`` (number
of visible pairs) and ``row_counts(Lq, Lk)``; masks with a closed form
(causal, window, DSA) compute counts without materialising, and the tests
check the closed form against the materialised count.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from . import _validate as _V

ALIGNMENTS = ("bottom_right", "top_left")


def _check_align(align: str) -> str:
    return _V.choice(align, "align", ALIGNMENTS)


def offset(Lq: int, Lk: int, align: str = "bottom_right") -> int:
    """Key position of query 0: ``Lk - Lq`` (bottom_right) or ``0`` (top_left)."""
    Lq, Lk = _check_lengths(Lq, Lk)
    return Lk - Lq if _check_align(align) == "bottom_right" else 0


def _nonneg_int(x, name: str) -> int:
    """A length or index: a non-negative int <= 2**62 (int64 index arithmetic stays exact)."""
    return _V.count(x, name)


def _extent(x, name: str) -> int:
    """A window side, width or prefix: a non-negative int; anything beyond 2**62 keys is wider
    than any sequence an int64 index can address, so it is clamped there (same mask, no overflow)."""
    return min(_V.count(x, name, maximum=None), _V.MAX_COUNT)


def _pos_int(x, name: str) -> int:
    x = _nonneg_int(x, name)
    if x == 0:
        raise ValueError(f"{name}: expected a positive int, got 0")
    return x


def _check_lengths(Lq, Lk) -> tuple[int, int]:
    return _nonneg_int(Lq, "Lq"), _nonneg_int(Lk, "Lk")


class Mask:
    """Base class: a predicate over (query index i, key index j) for lengths (Lq, Lk).

    Subclasses implement ``_visible(i, j, Lq, Lk)`` on broadcastable int64
    arrays; they may override ``row_counts`` with a closed form.
    """

    def __call__(self, i, j, Lq: int, Lk: int) -> np.ndarray:
        Lq, Lk = _check_lengths(Lq, Lk)
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        return np.broadcast_to(self._visible(i, j, Lq, Lk), np.broadcast_shapes(i.shape, j.shape))

    def _visible(self, i, j, Lq, Lk):  # pragma: no cover - abstract
        raise NotImplementedError

    def tile(self, q_start: int, q_stop: int, k_start: int, k_stop: int, Lq: int, Lk: int) -> np.ndarray:
        """The (q_stop - q_start, k_stop - k_start) block of the mask."""
        i = np.arange(q_start, q_stop, dtype=np.int64)[:, None]
        j = np.arange(k_start, k_stop, dtype=np.int64)[None, :]
        return np.array(self(i, j, Lq, Lk), dtype=bool)

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
        Lq, Lk = _check_lengths(Lq, Lk)
        return self.tile(0, Lq, 0, Lk, Lq, Lk)

    def row_counts(self, Lq: int, Lk: int) -> np.ndarray:
        """Visible keys per query row, int64 (Lq,). Materialises unless overridden."""
        return self.materialize(Lq, Lk).sum(axis=1, dtype=np.int64)

    def count(self, Lq: int, Lk: int) -> int:
        """Number of visible (query, key) pairs."""
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
        self.parts = _masks(parts)

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
        self.parts = _masks(parts)

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
        (self.part,) = _masks([part], "part")

    def _visible(self, i, j, Lq, Lk):
        return ~np.asarray(self.part._visible(i, j, Lq, Lk), dtype=bool)

    def __repr__(self):
        return f"~{self.part!r}"


def _masks(parts: Iterable, name: str = "parts") -> tuple:
    parts = tuple(parts)
    for p in parts:
        _V.instance(p, name, Mask, "refimpl.masks.Mask predicate")
    if not parts:
        raise ValueError(f"{name}: need at least one mask to combine")
    return parts


class Full(Mask):
    """Every key visible to every query."""

    def _visible(self, i, j, Lq, Lk):
        return np.ones(np.broadcast_shapes(i.shape, j.shape), dtype=bool)

    def row_counts(self, Lq, Lk):
        Lq, Lk = _check_lengths(Lq, Lk)
        return np.full(Lq, Lk, dtype=np.int64)

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
        self.left = None if left is None else _extent(left, "window left")
        self.right = None if right is None else _extent(right, "window right")
        self.align = _check_align(align)

    def _visible(self, i, j, Lq, Lk):
        p = i + offset(Lq, Lk, self.align)
        ok = np.ones(np.broadcast_shapes(i.shape, j.shape), dtype=bool)
        if self.left is not None:
            ok = ok & (j >= p - self.left)
        if self.right is not None:
            ok = ok & (j <= p + self.right)
        return ok

    def _covers(self, q_start, q_stop, k_start, k_stop, Lq, Lk) -> bool:
        """Every (i, j) of the block visible: min(j - p) >= -left and max(j - p) <= right."""
        o = offset(Lq, Lk, self.align)
        return (self.left is None or k_start - (q_stop - 1 + o) >= -self.left) and \
            (self.right is None or (k_stop - 1) - (q_start + o) <= self.right)

    def _hides(self, q_start, q_stop, k_start, k_stop, Lq, Lk) -> bool:
        """Every (i, j) of the block hidden: max(j - p) < -left or min(j - p) > right."""
        o = offset(Lq, Lk, self.align)
        return (self.left is not None and (k_stop - 1) - (q_start + o) < -self.left) or \
            (self.right is not None and k_start - (q_stop - 1 + o) > self.right)

    def _key_span(self, q_start, q_stop, Lq, Lk):
        """[p_first - left, p_last + right + 1) clipped to [0, Lk)."""
        o = offset(Lq, Lk, self.align)
        lo = 0 if self.left is None else min(max(q_start + o - self.left, 0), Lk)
        hi = Lk if self.right is None else min(max(q_stop - 1 + o + self.right + 1, 0), Lk)
        return lo, max(lo, hi)

    def row_counts(self, Lq, Lk):
        """Keys in [0, Lk) within [p - left, p + right]: clip(p+right+1, 0, Lk) - clip(p-left, 0, Lk)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        p = np.arange(Lq, dtype=np.int64) + offset(Lq, Lk, self.align)
        hi = np.full(Lq, Lk) if self.right is None else np.clip(p + self.right + 1, 0, Lk)
        lo = np.zeros(Lq, np.int64) if self.left is None else np.clip(p - self.left, 0, Lk)
        return np.maximum(hi - lo, 0).astype(np.int64)

    def count(self, Lq, Lk) -> int:
        """Closed form, O(1): sum over rows of clip(p+right+1, 0, Lk) - clip(p-left, 0, Lk)."""
        Lq, Lk = _check_lengths(Lq, Lk)
        o = offset(Lq, Lk, self.align)
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
    return (_pos_int(W, "W") - 1, 0)


def window_from_seed_mw(w: int) -> tuple[int, int]:
    """Seed 000 section 1, ``M_w``: ``max(0, i-w) <= j <= i`` -> (w, 0): w + 1 keys incl. self."""
    return (_extent(w, "w"), 0)


def seed_inverted_causal() -> Mask:
    """The causal mask as printed in seed 001 section 14.5 (ERRATA 1): visible iff i < j.

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
    if not callable(fn):
        raise TypeError("predicate: fn must be callable")
    return _Predicate(fn, name)


def _index_set(indices, name: str) -> np.ndarray:
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of ints, got {type(indices).__name__}")
    arr = np.asarray(sorted(set(int(_nonneg_int(g, name)) for g in indices)), dtype=np.int64)
    return arr


class GlobalTokens(Mask):
    """Global tokens G (Longformer/BigBird, seed 000 section 1): symmetric.

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
                f"layout {self.layout.shape} too small for Lq={Lq}, Lk={Lk} "
                f"with blocks ({self.block_q}, {self.block_k}): need at least ({nq}, {nk})"
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
    """DeepSeek-style deterministic sparse attention, simplified (seed 001 section 22.3).

    For a query at key position ``p`` the visible set is

        local window      p - window <= j <= p            (window + 1 keys)
        representatives   j = p - window - stride * m,  m = 1, 2, ...,  j >= 0
        global tokens     j in G (default {0}, the BOS), j <= p

    i.e. every ``stride``-th key further back than the window, counted from the
    window's start. All three parts are causal. (Seed 22.3's example writes the
    window 744..1000 as "256 tokens": it is 257, ERRATA 6.)
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
    """The two branches of the dual-chunk scheme as seed 001 section 23.2 describes it.

    Returns ``(local, strided)``: ``local`` is the causal window of ``window``
    keys including self, ``SlidingWindow(window - 1, 0)``; ``strided`` reads
    every ``stride``-th key of the whole causal context at absolute positions
    ``j % stride == 0``. The seed blends the two branches' outputs with a
    learned gate. Note: this is the seed's simplified description, not
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
        """bool (n_blocks, n_blocks) block layout, deterministic in ``seed``."""
        if n_blocks in self._cache:
            return self._cache[n_blocks]
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
        return layout

    def _visible(self, i, j, Lq, Lk):
        if Lq != Lk:
            raise ValueError(f"BigBird is a self-attention pattern: need Lq == Lk, got {Lq}, {Lk}")
        layout = self.block_layout(-(-Lq // self.block))
        return layout[i // self.block, j // self.block]

    def __repr__(self):
        return (
            f"BigBird(block={self.block}, window_blocks={self.window_blocks}, global_blocks={self.global_blocks}, "
            f"random_blocks={self.random_blocks}, seed={self.seed})"
        )
