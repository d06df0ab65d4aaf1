"""The attention kernel's slow-memory traffic, counted by an instrumented build
(-DCOUNT_IO=1 of gpu.attention_c, run on OpenCL), equals the tiled-attention
formula of refimpl.io_accounting.forward_io (query tiles outer), tile pair by
tile pair: the same count for partial tiles, GQA, and the tiles the
causal/window band lets the kernel skip.

The kernel reads K/V once per *query* head (blocks of different heads do not
share tiles), so the formula is evaluated with heads_kv = heads_q; the set of
computed tile pairs is derived from refimpl.masks (a pair is computed iff the
mask shows at least one of its entries), independently of the kernel's bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

import refimpl
from gpu import api, attention_c
from refimpl.io_accounting import forward_io

from .cases import AttentionCase, visible_mask
from .support import opencl_backend_or_missing

IO_CASES = [
    AttentionCase("full", (1, 2, 1, 7, 9, 5, 3), {}, (4, 3)),
    AttentionCase("causal_bottom_right_skips", (2, 2, 2, 12, 12, 4, 4), {"causal": True}, (4, 4), seed=1),
    AttentionCase("causal_empty_query_tiles", (1, 1, 1, 9, 3, 3, 2), {"causal": True}, (2, 2), seed=2),
    AttentionCase("window_band", (1, 1, 1, 16, 16, 4, 4), {"window": (2, 1)}, (3, 3), seed=3),
    AttentionCase("top_left_lq_lt_lk", (1, 4, 2, 6, 13, 8, 4), {"causal": True, "align": "top_left"}, (2, 4), seed=4),
    AttentionCase("seed000_problem2_scaled", (1, 1, 1, 64, 64, 4, 4), {}, (16, 16), seed=5),
]


def computed_tiles(case: AttentionCase) -> np.ndarray:
    _, _, _, Lq, Lk, _, _ = case.shape
    vis = visible_mask(case)[0, 0]
    br, bc = case.tiles
    Tr, Tc = -(-Lq // br), -(-Lk // bc)
    return np.array([[vis[i * br:(i + 1) * br, j * bc:(j + 1) * bc].any() for j in range(Tc)] for i in range(Tr)])


@pytest.mark.parametrize("case", IO_CASES, ids=lambda c: c.name)
def test_instrumented_kernel_io_equals_formula(case):
    be = opencl_backend_or_missing()
    q, k, v = case.inputs()
    q32, k32, v32, p = api.prepare_attention(q, k, v, block_q=case.tiles[0], block_k=case.tiles[1], **case.options)
    B, Hq, _, Lq, Lk, D, Dv = case.shape
    out = np.full((B, Hq, Lq, Dv), np.nan, np.float32)
    lse = np.full((B, Hq, Lq), np.nan, np.float32)
    out, lse, io = attention_c.run(be.runtime(), attention_c.SOURCE, q32, k32, v32, out, lse, p, count_io=True)
    ref_out, _ = refimpl.attention(q, k, v, **case.options)
    assert np.allclose(out, ref_out, atol=1e-5)  # the instrumented build still computes attention
    grid = computed_tiles(case)
    f = forward_io(Lq, Lk, D, Dv, block_q=case.tiles[0], block_k=case.tiles[1], batch=B, heads_q=Hq,
                   heads_kv=Hq, computed=grid)
    assert io["read"] == f.elements_read, (io, f)
    assert io["written"] == f.elements_written, (io, f)
    print(f"{case.name}: {f.tile_pairs} tile pairs of {grid.size}, read {io['read']}, written {io['written']}")


def test_seed000_problem2_figure():
    """docs/notes.md#tile-traffic at n = 4096, B_r = B_c = 128, d = 64, one head: the formula
    the kernel was just shown to follow gives 1024 tile pairs and 266,240 d reads."""
    f = forward_io(4096, 4096, 64, block_q=128, block_k=128)
    assert f.tile_pairs == 32 * 32 == 1024
    assert f.elements_read == 266_240 * 64
