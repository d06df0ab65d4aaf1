"""Mask arguments (``refimpl.mask_core`` and the patterns below ``refimpl.mask_patterns``): lengths,
extents, index arrays and tile bounds, the parts of a combinator, predicates, and each structured
pattern's own inputs (index sets, block layouts, segment ids, cu_seqlens) and the lengths it fixes.

Classes (``Mask``) and name tuples (the alignments) are passed in: this module imports nothing above
the package."""

from __future__ import annotations

import inspect

import numpy as np

from .arrays import index_array
from .budget import MAX_COUNT, check_budget
from .scalars import _type, choice, count, fail, flag, instance


def length(x, name: str) -> int:
    """A length or index: a non-negative int <= 2**62 (int64 index arithmetic stays exact)."""
    return count(x, name)


def lengths(Lq, Lk) -> tuple[int, int]:
    return count(Lq, "Lq"), count(Lk, "Lk")


def positive_length(x, name: str) -> int:
    """A positive int <= 2**62 (a stride, a block, a window of keys)."""
    x = count(x, name)
    if x == 0:
        fail(name, "a positive int", 0)
    return x


def extent(x, name: str) -> int:
    """A window side, width or prefix: a non-negative int; anything beyond 2**62 keys is wider
    than any sequence an int64 index can address, so it is clamped there (same mask, no overflow)."""
    return min(count(x, name, maximum=None), MAX_COUNT)


def alignment(align, options: tuple) -> str:
    return choice(align, "align", options)


def tile_budget(nq: int, nk: int, names: str) -> None:
    """A tile evaluates its predicate on (nq, nk) int64 index arrays (a few temporaries of 8 bytes),
    built from an index vector per axis (which an empty other axis does not make free)."""
    check_budget(names, shape=(nq, nk), itemsize=32, nbytes=8 * (nq + nk), what=f"a ({nq}, {nk}) mask tile")


def rows_budget(Lq: int) -> None:
    """Per-row closed forms build a few int64 arrays of Lq entries."""
    check_budget("Lq", shape=(Lq,), itemsize=32, what=f"row counts of {Lq} rows")


def mask_indices(i, j, Lq: int, Lk: int) -> tuple[np.ndarray, np.ndarray]:
    """Query indices i in [0, Lq) and key indices j in [0, Lk), int64 arrays that broadcast (within the
    work budget); Lq, Lk checked by the caller."""
    i, j = index_array(i, "i"), index_array(j, "j")
    for x, L, n, Ln in ((i, Lq, "i", "Lq"), (j, Lk, "j", "Lk")):
        if x.size and int(x.max()) >= L:
            fail(n, f"indices in [0, {Ln}) = [0, {L})", int(x.max()))
    try:
        shape = np.broadcast_shapes(i.shape, j.shape)
    except ValueError:
        fail("i, j", "index arrays that broadcast", f"shapes {i.shape} and {j.shape}")
    check_budget("i, j", shape=shape, itemsize=32, what=f"a mask of shape {shape}")
    return i, j


def tile_bounds(q_start, q_stop, k_start, k_stop, Lq: int, Lk: int) -> tuple[int, int, int, int]:
    """0 <= q_start <= q_stop <= Lq and 0 <= k_start <= k_stop <= Lk, as ints (tile within the budget)."""
    out = []
    for a, b, L, an, bn, Ln in ((q_start, q_stop, Lq, "q_start", "q_stop", "Lq"),
                                (k_start, k_stop, Lk, "k_start", "k_stop", "Lk")):
        a, b = length(a, an), length(b, bn)
        if not a <= b <= L:
            fail(f"{an}, {bn}", f"0 <= {an} <= {bn} <= {Ln} = {L}", f"{a}, {b}")
        out += [a, b]
    tile_budget(out[1] - out[0], out[3] - out[2], "q_start, q_stop, k_start, k_stop")
    return tuple(out)


def mask_parts(parts, name: str, cls) -> tuple:
    """At least one ``cls`` (``refimpl.masks.Mask``) to combine."""
    parts = tuple(parts)
    for p in parts:
        instance(p, name, cls, "refimpl.masks.Mask predicate")
    if not parts:
        fail(name, "at least one mask to combine", "none")
    return parts


def mask_predicate(fn, name) -> None:
    """``fn(i, j, Lq, Lk) -> bool array`` (a callable of four arguments) and its display ``name`` (a str)."""
    if not callable(fn):
        fail("fn", "a callable fn(i, j, Lq, Lk) -> bool array", _type(fn), error=TypeError)
    if not isinstance(name, str):
        fail("name", "a str", _type(name), error=TypeError)
    try:
        inspect.signature(fn).bind(0, 0, 0, 0)
    except TypeError:
        fail("fn", "a callable of four arguments fn(i, j, Lq, Lk)", repr(fn), error=TypeError)
    except ValueError:  # a builtin without a signature: checked when called
        pass


# --- the structured patterns ---------------------------------------------------------------------


def index_set(indices, name: str) -> np.ndarray:
    """A sequence of non-negative ints (<= 2**62) as a sorted int64 array without repeats."""
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        fail(name, "a sequence of ints", _type(indices), error=TypeError)
    return np.asarray(sorted(set(int(length(g, name)) for g in indices)), dtype=np.int64)


def block_layout(layout) -> np.ndarray:
    """A 2-D bool block layout (a copy: the mask keeps its own)."""
    layout = np.asarray(layout)
    if layout.ndim != 2 or layout.dtype != np.bool_:
        fail("layout", "a 2-D bool array", f"{layout.dtype} {layout.shape}", error=TypeError)
    return layout.copy()


def layout_covers(shape: tuple, nq: int, nk: int, Lq: int, Lk: int, block_q: int, block_k: int) -> None:
    """A block layout of ``shape`` holds the (nq, nk) blocks of (Lq, Lk)."""
    if shape[0] < nq or shape[1] < nk:
        fail("layout, Lq, Lk", f"a layout of at least ({nq}, {nk}) blocks for Lq = {Lq}, Lk = {Lk} "
             f"with blocks ({block_q}, {block_k})", f"shape {shape}")


def odd_count(x, name: str) -> int:
    """A positive odd int (a window of blocks centred on the diagonal)."""
    n = positive_length(x, name)
    if n % 2 == 0:
        fail(name, "an odd number", x)
    return n


def self_attention_lengths(Lq: int, Lk: int, what: str) -> None:
    """Lq == Lk for a self-attention pattern (``what`` names it)."""
    if Lq != Lk:
        fail("Lq, Lk", f"Lq == Lk ({what} is a self-attention pattern)", f"{Lq}, {Lk}")


def segment_ids(x, name: str) -> np.ndarray:
    """A 1-D integer array of segment ids, as an int64 copy."""
    a = np.asarray(x)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        fail(name, "a 1-D integer array", f"{a.dtype} {a.shape}", error=TypeError)
    return a.astype(np.int64).copy()


def document_lengths(Lq: int, Lk: int, nq: int, nk: int) -> None:
    """(Lq, Lk) equal to the lengths of a Document mask's segment ids."""
    if (Lq, Lk) != (nq, nk):
        fail("Lq, Lk", f"the lengths of segment_ids_q, segment_ids_k = ({nq}, {nk}) (the Document mask's own)",
             f"({Lq}, {Lk})")


def cu_seqlens(x, name: str) -> np.ndarray:
    """Offsets (n + 1,), n >= 0, non-decreasing from 0, as an int64 copy."""
    a = index_array(x, name, ndim=1)  # int64, entries in [0, 2**62)
    if a.size < 1:
        fail(name, "offsets (n + 1,) with n >= 0", f"shape {a.shape}")
    a = a.copy()
    if a[0] != 0 or np.any(np.diff(a) < 0):
        fail(name, "non-decreasing offsets starting at 0", str(a.tolist()))
    return a


def varlen_inputs(cu_seqlens_q, cu_seqlens_k, causal, align, window, alignments: tuple) -> tuple:
    """(cu_q, cu_k, causal, align, window) of ``Varlen``: one number of sequences on both sides,
    window None or (left, right) with each side None or an extent."""
    cu_q = cu_seqlens(cu_seqlens_q, "cu_seqlens_q")
    cu_k = cu_q if cu_seqlens_k is None else cu_seqlens(cu_seqlens_k, "cu_seqlens_k")
    if len(cu_q) != len(cu_k):
        fail("cu_seqlens_q, cu_seqlens_k", "the same number of sequences", f"{len(cu_q) - 1} and {len(cu_k) - 1}")
    causal = flag(causal, "causal")
    align = alignment(align, alignments)
    if window is not None:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            fail("window", "(left, right)", repr(window), error=TypeError)
        window = tuple(None if w is None else extent(w, "window") for w in window)
    return cu_q, cu_k, causal, align, window


def packed_lengths(Lq: int, Lk: int, total_q: int, total_k: int) -> None:
    """(Lq, Lk) equal to the packed lengths (cu_seqlens_q[-1], cu_seqlens_k[-1])."""
    if (Lq, Lk) != (total_q, total_k):
        fail("Lq, Lk", f"the packed lengths (cu_seqlens_q[-1], cu_seqlens_k[-1]) = ({total_q}, {total_k})",
             f"({Lq}, {Lk})")
