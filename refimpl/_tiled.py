"""The machinery the tiled forward (``refimpl.flash``) and backward (``refimpl.flash_backward``) share.

``FlashStats`` (what a tiled call did), ``_SlowMemory`` (the slow-memory counter of each thread
block), ``_TiledSetup`` (``refimpl._problem._Setup`` with the counter and the value shift near the
top of float64), tile slicing and the grouped P V product. See ``refimpl.flash`` for the algorithms.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from ._problem import _exponent_of, _fold, _Setup
from ._validate import FLOAT_MAX, finite_result, flag, positive_int


@dataclasses.dataclass(frozen=True)
class FlashStats:
    """What one tiled call did (returned with ``return_stats=True``).

    grid:          (T_r, T_c): the number of query tiles and of key tiles.
    tiles_skipped: tiles (i, j) never computed because the mask hides all of
                   them (for every batch entry and head): block skipping.
    reads, writes: elements moved from / to slow memory, per tensor name
                   ("Q", "K", "V", "O", "l", "m", "lse", "dO", "D", "dQ", "dK", "dV").
    """

    grid: tuple
    tiles_skipped: int
    reads: dict
    writes: dict

    @property
    def tiles(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tiles_computed(self) -> int:
        return self.tiles - self.tiles_skipped

    @property
    def elements_read(self) -> int:
        return sum(self.reads.values())

    @property
    def elements_written(self) -> int:
        return sum(self.writes.values())


class _SlowMemory:
    """Counts elements moved between slow memory (HBM) and one thread block's SRAM.

    ``load(name, rows, tile)`` brings the tile of ``name`` covering ``rows`` on
    chip, counted unless this thread block already holds exactly that tile;
    ``store`` writes a tile back (always counted); ``new_block()`` starts a
    thread block with empty SRAM. Returns the tile itself, so the loops read
    their operands through it.
    """

    def __init__(self):
        self.reads: Counter = Counter()
        self.writes: Counter = Counter()
        self._held: dict = {}

    def new_block(self) -> None:
        self._held.clear()

    def load(self, name: str, rows: slice, tile: np.ndarray) -> np.ndarray:
        key = (rows.start, rows.stop)
        if self._held.get(name) != key:
            self.reads[name] += tile.size
            self._held[name] = key
        return tile

    def store(self, name: str, tile: np.ndarray) -> np.ndarray:
        self.writes[name] += tile.size
        return tile

    def absorb(self, other: "_SlowMemory") -> None:
        """Add the counts of another thread block (run concurrently) to these."""
        self.reads.update(other.reads)
        self.writes.update(other.writes)


class _TiledSetup(_Setup):
    """``_Setup`` (validation, scores, masks, dropout) with the slow-memory counter."""

    def __init__(self, q, k, v, *, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p):
        super().__init__(q, k, v, mask, causal, align, window, scale, softcap, bias, dropout_mask, dropout_p)
        self.memory = _SlowMemory()
        # The accumulator sum_j p_j z_j v_j (p_j <= 1 after the running max, z_j <= 1 / (1 - dropout_p)) is
        # bounded by Lk max|v| / (1 - p): near the top of float64 it would overflow although the output, a
        # weighted mean, does not. Then V is divided by 2^v_shift (exact) and the output multiplied back.
        headroom = self.Lk.bit_length() + 1 + (int(np.frexp(1.0 / (1.0 - self.dropout_p))[1]) if self.dropout_p else 0)
        self.v_shift = headroom if _exponent_of(self.v_extent) + headroom > 1023 else 0
        if self.v_shift:
            self.v = np.ldexp(self.v, -self.v_shift)

    def unshift(self, out: np.ndarray) -> np.ndarray:
        """An output computed from V / 2^v_shift, scaled back. Without dropout it is a convex combination
        of the values, within [-FLOAT_MAX, FLOAT_MAX] exactly: a rounding spill past it is clipped."""
        if not self.v_shift:
            return out
        with np.errstate(over="ignore"):
            out = np.ldexp(out, self.v_shift)
        if self.dropout_p == 0.0:
            return np.clip(out, -FLOAT_MAX, FLOAT_MAX)
        return finite_result(out, "an output with dropout scaling 1 / (1 - dropout_p)", "v, dropout_p")

    def load(self, mem: _SlowMemory, qs: slice, ks: slice):
        """Q_i (B, Hkv, G, nq, D), K_j, V_j (B, Hkv, nk, D / Dv), each read through ``mem``."""
        return (mem.load("Q", qs, self.q5(qs)), mem.load("K", ks, self.k[:, :, ks]),
                mem.load("V", ks, self.v[:, :, ks]))

    def hidden(self, qs: slice, ks: slice) -> bool:
        """True if the mask hides every entry of tile (qs, ks) for every batch entry and head."""
        visible = self.visible(qs, ks)
        return visible is not None and not visible.any()

    def stats(self, grid, skipped) -> FlashStats:
        return FlashStats(tuple(grid), int(skipped), dict(self.memory.reads), dict(self.memory.writes))


def _tiles(start: int, stop: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` covering [start, stop); the last may be shorter."""
    return [slice(a, min(a + size, stop)) for a in range(start, stop, size)]


_check_flag = flag  # a bool (same message): "<name>: expected a bool, got <type>"


def _pv(P: np.ndarray, V: np.ndarray) -> np.ndarray:
    """P V: (B, Hkv, G, nq, nk) x (B, Hkv, nk, Dv) -> (B, Hkv, G, nq, Dv), one GEMM per
    (b, kv head) with the G query heads folded into the rows."""
    return np.matmul(_fold(P), V).reshape(P.shape[:-1] + (V.shape[-1],))


def _setup(q, k, v, block_q, block_k, kw) -> _TiledSetup:
    positive_int(block_q, "block_q")
    positive_int(block_k, "block_k")
    return _TiledSetup(q, k, v, **kw)
