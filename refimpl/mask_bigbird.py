"""BigBird's block pattern (Zaheer et al. 2020) as a mask: window, global and seeded random blocks.

A lower module of ``refimpl.mask_patterns`` (which re-exports ``BigBird``; read ``refimpl.masks`` for
the conventions). Built on ``refimpl.mask_core``; argument checks in ``refimpl._validate.masks``. It
counts in closed form and replays its seeded random draw only when a partial last block makes the
draw matter (budgeted).
"""

from __future__ import annotations

import numpy as np

from ._validate import check_budget
from ._validate.masks import length, lengths, odd_count, positive_length, rows_budget, self_attention_lengths
from .mask_core import Mask, _sum_clip_ap


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
        self.block = positive_length(block, "block")
        self.window_blocks = odd_count(window_blocks, "window_blocks")
        self.global_blocks = length(global_blocks, "global_blocks")
        self.random_blocks = length(random_blocks, "random_blocks")
        self.seed = length(seed, "seed")
        self._cache: dict[int, np.ndarray] = {}

    def block_layout(self, n_blocks: int) -> np.ndarray:
        """bool (n_blocks, n_blocks) block layout, deterministic in ``seed`` (a new array on every call)."""
        n_blocks = length(n_blocks, "n_blocks")
        if n_blocks in self._cache:
            return self._cache[n_blocks].copy()
        check_budget("n_blocks", shape=(n_blocks, n_blocks), itemsize=24, steps=n_blocks,
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
        check_budget("Lq, block", shape=(n,), itemsize=8, steps=0 if self.random_blocks == 0 else n,
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
        Lq, Lk = lengths(Lq, Lk)
        self_attention_lengths(Lq, Lk, "BigBird")
        rows_budget(Lq)
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
        Lq, Lk = lengths(Lq, Lk)
        self_attention_lengths(Lq, Lk, "BigBird")
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
        self_attention_lengths(Lq, Lk, "BigBird")
        n = -(-Lq // self.block)
        layout = self._cache.get(n)
        layout = self.block_layout(n) if layout is None else layout
        return layout[i // self.block, j // self.block]

    def __repr__(self):
        return (
            f"BigBird(block={self.block}, window_blocks={self.window_blocks}, global_blocks={self.global_blocks}, "
            f"random_blocks={self.random_blocks}, seed={self.seed})"
        )


__all__ = ["BigBird"]
