"""Sequence sharding for context parallelism: which global positions each rank holds.

A *layout* is a partition of the positions 0..L-1 of one sequence over P ranks:
``positions[r]`` is the sorted int64 array of the global positions rank r holds
(its query rows and its key/value rows alike). Two layouts:

    contiguous(sizes)        rank r holds [s_r, s_r + n_r), s_r = n_0 + ... + n_{r-1}
                             (Ring Attention, Liu et al. 2023; any sizes, empty allowed)
    zigzag(chunk_sizes)      the sequence cut into 2P chunks c_0 .. c_{2P-1};
                             rank r holds chunks r and 2P-1-r
                             (load-balanced causal sharding: Megatron-LM context
                             parallelism, ``get_batch_on_this_cp_rank`` in
                             megatron/training/utils.py; zhuzilin/ring-flash-attention
                             ``zigzag_ring_flash_attn``)

Why zig-zag: under a causal mask query position i sees i + 1 keys, so with
contiguous shards the last rank does about 2P - 1 times the work of the first.
With 2P equal chunks of c positions, chunk i carries i c^2 + c (c + 1) / 2
visible pairs and rank r's two chunks carry (2P - 1) c^2 + c (c + 1) in total:
the same for every r (``visible_pairs_per_rank`` checks it).

The mask of the sharded problem is the mask of the *gathered* problem (self
attention over the whole sequence, Lq = Lk = L, so both causal alignments
agree) evaluated at global positions: ``visible(qpos, kpos)``. Evaluating it at
shard-local indices (``causal=True`` on the shard) is the classic bug.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import masks as _masks
from .._validate import as_float_array, check_budget, axis_index, count, flag, index_array, instance, positive_int
from .._validate.distributed import global_positions, layout, rank_parts, rank_sizes, zigzag_chunks
from ..sdpa import check_window

__all__ = ["GlobalMask", "contiguous", "even_sizes", "gather", "shard", "visible_pairs_per_rank", "zigzag"]

MAX_RANKS = 2**16
"""Most ranks (or zig-zag chunks) a layout may have: each is a Python-level loop iteration."""


def contiguous(sizes) -> tuple:
    """Positions of each rank for contiguous shards of the given sizes (one per rank)."""
    return _contiguous(rank_sizes(sizes, "sizes", MAX_RANKS))


def _contiguous(sizes: tuple) -> tuple:
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return tuple(np.arange(edges[r], edges[r + 1], dtype=np.int64) for r in range(len(sizes)))


def zigzag(chunk_sizes) -> tuple:
    """Positions of each of P ranks from 2P chunk sizes: rank r holds chunks r and 2P-1-r."""
    chunks = _contiguous(zigzag_chunks(chunk_sizes, 2 * MAX_RANKS))
    P = len(chunks) // 2
    return tuple(np.concatenate([chunks[r], chunks[2 * P - 1 - r]]) for r in range(P))


def even_sizes(L: int, parts: int) -> tuple:
    """``parts`` sizes summing to L, differing by at most one (the larger first)."""
    L, parts = positive_int(L, "L", allow_zero=True), count(parts, "parts", minimum=1, maximum=MAX_RANKS)
    return tuple(L // parts + (1 if r < L % parts else 0) for r in range(parts))


def check_layout(positions, L: int | None = None) -> tuple:
    """Validate that ``positions`` (one 1-D int array per rank) partition 0..L-1 (L = their total size
    when None); return them as int64."""
    return layout(positions, L, MAX_RANKS)


def shard(x: np.ndarray, positions: tuple, axis: int = 2) -> list:
    """Each rank's rows of ``x`` (sequence along ``axis``): ``x.take(positions[r], axis)``.

    ``positions`` must partition 0..L-1, L = ``x.shape[axis]``. Entries are moved, not computed:
    -inf (the lse of a fully masked row) is accepted and passes through; NaN and +inf are rejected."""
    x = as_float_array(x, "x", allow_neg_inf=True)  # -inf: the lse of fully masked rows
    axis = axis_index(axis, x.ndim)
    positions = check_layout(positions, x.shape[axis])
    return [np.take(x, p, axis=axis) for p in positions]


def gather(parts, positions: tuple, axis: int = 2) -> np.ndarray:
    """Inverse of ``shard``: put each rank's rows back at their global positions.

    ``parts[r]`` holds ``len(positions[r])`` rows along ``axis``; every other axis agrees.
    -inf entries pass through as in ``shard``."""
    positions = check_layout(positions)
    parts, axis = rank_parts(parts, positions, axis)
    L = sum(len(p) for p in positions)
    shape = list(parts[0].shape)
    shape[axis] = L
    out = np.zeros(shape, dtype=np.float64)
    for part, pos in zip(parts, positions):
        idx = [slice(None)] * len(shape)
        idx[axis] = pos
        out[tuple(idx)] = part
    return out


@dataclasses.dataclass(frozen=True)
class GlobalMask:
    """The gathered problem's mask (causal, window, an optional Mask predicate), over global positions.

    ``L`` is the sequence length; the gathered problem is self-attention with
    Lq = Lk = L, so ``align`` does not matter. ``window=(left, right)`` in the
    flash-attn sense (see refimpl.masks). ``mask`` is a ``refimpl.masks.Mask``
    evaluated on global indices (e.g. ``Document``), or None.
    """

    L: int
    causal: bool = False
    window: tuple | None = None
    mask: _masks.Mask | None = None

    def __post_init__(self):
        object.__setattr__(self, "L", positive_int(self.L, "L", allow_zero=True))  # a Python int from here on
        flag(self.causal, "causal")
        object.__setattr__(self, "window", check_window(self.window))
        if self.mask is not None:
            instance(self.mask, "mask", _masks.Mask, "refimpl.masks.Mask or None")

    def predicates(self) -> list:
        """The refimpl.masks predicates whose conjunction is this mask."""
        out = []
        if self.causal:
            out.append(_masks.Causal())
        if self.window is not None:
            out.append(_masks.SlidingWindow(*self.window))
        if self.mask is not None:
            out.append(self.mask)
        return out

    def visible(self, qpos, kpos) -> np.ndarray:
        """bool (nq, nk): may the query at global position qpos[i] attend the key at kpos[j]."""
        i = index_array(qpos, "qpos", ndim=1)[:, None]
        j = index_array(kpos, "kpos", ndim=1)[None, :]
        global_positions(i, j, self.L)
        check_budget("qpos, kpos", shape=(i.shape[0], j.shape[1]), itemsize=32,
                     what=f"a ({i.shape[0]}, {j.shape[1]}) mask")
        out = np.ones((i.shape[0], j.shape[1]), dtype=bool)
        for p in self.predicates():
            out = out & p._at(i, j, self.L, self.L)
        return out

    def attention_kwargs(self) -> dict:
        """The keywords of ``refimpl.attention`` for the gathered problem."""
        return dict(causal=bool(self.causal), window=self.window, mask=self.mask)


def visible_pairs_per_rank(gmask: GlobalMask, positions: tuple) -> np.ndarray:
    """(P,) int64: visible (query, key) pairs whose query rank r holds (the compute of rank r)."""
    instance(gmask, "gmask", GlobalMask)
    positions = check_layout(positions, gmask.L)
    allpos = np.arange(gmask.L)
    return np.array([int(gmask.visible(p, allpos).sum()) for p in positions], dtype=np.int64)
