"""Slow-memory (HBM) traffic of tiled attention, in closed form and measured.

Counts are in *elements* (multiply by the bytes per element for bytes). For a
problem (Lq, Lk, D, Dv) cut into T_r = ceil(Lq / B_r) query tiles and
T_c = ceil(Lk / B_c) key tiles, write r_i for the rows of query tile i and
c_j for the columns of key tile j (the last tile of each may be shorter), and
C for the set of computed tile pairs (all T_r T_c of them, or fewer when block
skipping drops tiles the mask hides). Per batch entry and head (GQA: a K/V tile
serves the G query heads that share it, so K/V counts use Hkv):

Query tiles outer (FA2, Dao 2023 Algorithm 1). Q_i is read once, K_j and V_j
once per computed pair; O and lse are written once:

    reads   Q: D sum_{i in C} r_i            K: D sum_{(i,j) in C} c_j     V: Dv sum_{(i,j) in C} c_j
    writes  O: Dv Lq                         lse: Lq

Key tiles outer (FA1, Dao et al. 2022 Algorithm 1). K_j and V_j are read once;
every computed pair re-reads Q_i, O_i, l_i, m_i and writes O_i, l_i, m_i back
(docs/errata.md#e13: the count depends on the loop order); O, l, m are initialised in
slow memory first, and a final pass turns (l, m) into lse:

    R = sum_{(i,j) in C} r_i
    reads   K: D sum_{j in C} c_j   V: Dv sum_{j in C} c_j   Q: D R   O: Dv R   l, m: R + Lq
    writes  O: Dv (Lq + R)          l, m: Lq + R             lse: Lq

docs/notes.md#tile-traffic (n = 4096, B_r = B_c = 128, d = D = Dv, query tiles outer):
32 x 32 = 1024 tile pairs ("tile loads"), and Q + K + V reads
32 * 128 d + 32 * 32 * 128 * 2 d = 4,096 d + 262,144 d = 266,240 d elements,
against n^2 = 16,777,216 elements for materialising S once.

Backward (FA2 Algorithm 2, key tiles outer, with the D = rowsum(dO * O) pre-pass):

    reads   dO, O: Dv Lq (pre-pass)    K, V: as FA1     Q: D R   dO: Dv R   lse, D: R   dQ: D R
    writes  D: Lq    dQ: D (Lq + R) (zero-initialised, then read-modify-write)    dK: D Lk   dV: Dv Lk

Standard attention (Dao et al. 2022, Algorithm 0) materialises S and P in slow memory:

    reads   Q: D Lq   K: D Lk   S: Lq Lk   P: Lq Lk   V: Dv Lk
    writes  S: Lq Lk  P: Lq Lk  O: Dv Lq

``measured_io`` / ``measured_backward_io`` run ``refimpl.flash`` with its
slow-memory instrumentation and return what the code actually moved; the
tests check measured == formula, tensor by tensor.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._validate import choice, positive_int
from ._validate.accounting import io_problem, tile_grid
from .flash import flash_attention, flash_attention_backward

LOOP_ORDERS = ("q_outer", "kv_outer")
LOOP_ORDER_OF_VARIANT = {"fa2": "q_outer", "fa1": "kv_outer"}


@dataclasses.dataclass(frozen=True)
class IOCount:
    """Elements moved between slow memory and chip, per tensor.

    schedule:   "q_outer" (FA2), "kv_outer" (FA1), "backward" (FA2 backward) or "standard".
    tile_pairs: (query tile, key tile) pairs computed: the inner-loop iterations,
                each loading one tile of the inner operand (the notes' "tile loads").
    """

    schedule: str
    tile_pairs: int
    reads: dict
    writes: dict

    @property
    def elements_read(self) -> int:
        return sum(self.reads.values())

    @property
    def elements_written(self) -> int:
        return sum(self.writes.values())


def _tile_sizes(L: int, block: int) -> np.ndarray:
    starts = np.arange(0, L, block)
    return np.minimum(starts + block, L) - starts


def _tiles(Lq: int, Lk: int, block_q: int, block_k: int) -> tuple[int, int]:
    """(T_r, T_c) = (ceil(Lq / B_r), ceil(Lk / B_c))."""
    return -(-Lq // block_q), -(-Lk // block_k)


def _pair_sums(C, Lq: int, Lk: int, block_q: int, block_k: int):
    """(tile pairs, sum of c_j over computed pairs, sum of r_i over computed pairs, rows of the query
    tiles with a computed pair, columns of the key tiles with one) over the checked (T_r, T_c) grid
    ``C``. Without a grid (None) every pair is computed: closed form (T_r Lk, T_c Lq, ...), nothing
    allocated, any length."""
    T_r, T_c = _tiles(Lq, Lk, block_q, block_k)
    if C is None:
        return T_r * T_c, T_r * Lk, T_c * Lq, Lq if T_c else 0, Lk if T_r else 0
    r, c = _tile_sizes(Lq, block_q), _tile_sizes(Lk, block_k)
    return (int(C.sum()), int((C * c[None, :]).sum()), int((C * r[:, None]).sum()), int(r[C.any(axis=1)].sum()),
            int(c[C.any(axis=0)].sum()))


def _problem(Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv, computed=None):
    """The checked sizes, with nQ = batch heads_q and nK = batch heads_kv (K/V heads), and the
    checked ``computed`` grid (None: every tile pair)."""
    Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv = io_problem(Lq, Lk, D, Dv, block_q, block_k, batch,
                                                                           heads_q, heads_kv)
    grid = tile_grid(computed, *_tiles(Lq, Lk, block_q, block_k))
    return Lq, Lk, D, Dv, block_q, block_k, batch * heads_q, batch * heads_kv, grid


def forward_io(
    Lq, Lk, D, Dv=None, *, block_q, block_k, loop_order="q_outer", batch=1, heads_q=1, heads_kv=None, computed=None
) -> IOCount:
    """Closed-form slow-memory traffic of the tiled forward (see the module docstring).

    loop_order: "q_outer" (FA2) or "kv_outer" (FA1). computed: optional bool
    (T_r, T_c) grid of the tile pairs actually computed (default: all).
    """
    choice(loop_order, "loop_order", LOOP_ORDERS)
    Lq, Lk, D, Dv, bq, bk, nQ, nK, grid = _problem(Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv, computed)
    # pair_cols: sum over computed pairs of c_j; pair_rows: of r_i
    tiles, pair_cols, pair_rows, q_rows, key_cols = _pair_sums(grid, Lq, Lk, bq, bk)
    if loop_order == "q_outer":
        reads = {"Q": nQ * D * q_rows, "K": nK * D * pair_cols, "V": nK * Dv * pair_cols}
        writes = {"O": nQ * Dv * Lq, "lse": nQ * Lq}
    else:
        reads = {
            "K": nK * D * key_cols, "V": nK * Dv * key_cols, "Q": nQ * D * pair_rows, "O": nQ * Dv * pair_rows,
            "l": nQ * (pair_rows + Lq), "m": nQ * (pair_rows + Lq),
        }
        writes = {"O": nQ * Dv * (Lq + pair_rows), "l": nQ * (Lq + pair_rows), "m": nQ * (Lq + pair_rows), "lse": nQ * Lq}
    return IOCount(loop_order, tiles, _nonzero(reads), _nonzero(writes))


def backward_io(Lq, Lk, D, Dv=None, *, block_q, block_k, batch=1, heads_q=1, heads_kv=None, computed=None) -> IOCount:
    """Closed-form slow-memory traffic of the FA2 backward (see the module docstring)."""
    Lq, Lk, D, Dv, bq, bk, nQ, nK, grid = _problem(Lq, Lk, D, Dv, block_q, block_k, batch, heads_q, heads_kv, computed)
    tiles, _, R, _, key_cols = _pair_sums(grid, Lq, Lk, bq, bk)
    reads = {
        "O": nQ * Dv * Lq, "dO": nQ * Dv * (Lq + R), "K": nK * D * key_cols, "V": nK * Dv * key_cols,
        "Q": nQ * D * R, "lse": nQ * R, "D": nQ * R, "dQ": nQ * D * R,
    }
    writes = {"D": nQ * Lq, "dQ": nQ * D * (Lq + R), "dK": nK * D * Lk, "dV": nK * Dv * Lk}
    return IOCount("backward", tiles, _nonzero(reads), _nonzero(writes))


def standard_io(Lq, Lk, D, Dv=None, *, batch=1, heads_q=1, heads_kv=None) -> IOCount:
    """Standard attention (Dao et al. 2022, Algorithm 0): S and P written to and read from slow memory."""
    Lq, Lk, D, Dv, _, _, nQ, nK, _ = _problem(Lq, Lk, D, Dv, 1, 1, batch, heads_q, heads_kv)
    S = nQ * Lq * Lk
    reads = {"Q": nQ * D * Lq, "K": nK * D * Lk, "S": S, "P": S, "V": nK * Dv * Lk}
    writes = {"S": S, "P": S, "O": nQ * Dv * Lq}
    return IOCount("standard", 0, _nonzero(reads), _nonzero(writes))


def score_matrix_elements(Lq: int, Lk: int, *, batch: int = 1, heads: int = 1) -> int:
    """Elements of the materialised score matrix S: batch * heads * Lq * Lk."""
    return positive_int(batch, "batch") * positive_int(heads, "heads") * positive_int(Lq, "Lq", allow_zero=True) * positive_int(Lk, "Lk", allow_zero=True)


def _nonzero(d: dict) -> dict:
    return {k: int(v) for k, v in d.items() if v}


def measured_io(q, k, v, *, block_q, block_k, variant="fa2", **attention_kwargs) -> IOCount:
    """Run ``refimpl.flash_attention`` instrumented and return the traffic it actually caused."""
    _, _, stats = flash_attention(q, k, v, block_q=block_q, block_k=block_k, variant=variant, return_stats=True, **attention_kwargs)
    return IOCount(LOOP_ORDER_OF_VARIANT[variant], stats.tiles_computed, _nonzero(stats.reads), _nonzero(stats.writes))


def measured_backward_io(q, k, v, out, lse, dout, *, block_q, block_k, **attention_kwargs) -> IOCount:
    """Run ``refimpl.flash_attention_backward`` instrumented and return the traffic it caused."""
    _, stats = flash_attention_backward(q, k, v, out, lse, dout, block_q=block_q, block_k=block_k, return_stats=True, **attention_kwargs)
    return IOCount("backward", stats.tiles_computed, _nonzero(stats.reads), _nonzero(stats.writes))
