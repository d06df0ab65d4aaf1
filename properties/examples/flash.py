"""Worked examples on tiled attention (docs/notes.md#flash-tiling, docs/notes.md#tile-traffic), reproduced
with refimpl."""

from __future__ import annotations

from refimpl import io_accounting as IO

from . import WorkedExample

# --- docs/notes.md#tile-traffic: n = 4096, B_r = B_c = 128 ------------------------------------------

N, B_R, B_C = 4096, 128, 128


def _fa2(d: int) -> IO.IOCount:
    """Query tiles outer (the loop order the notes' answer counts: "each Q tile iterates over all K,V tiles")."""
    return IO.forward_io(N, N, d, block_q=B_R, block_k=B_C, loop_order="q_outer")


def _tile_loads():
    return _fa2(1).tile_pairs


def _elements_per_d():
    """Q, K and V elements read, per unit of d (the count is linear in d = D = Dv)."""
    io = _fa2(1)
    return io.reads["Q"], io.reads["K"] + io.reads["V"], io.elements_read


def _d128():
    """d = 128: elements read and fp16 megabytes; S materialised once: n^2 elements and fp16 megabytes."""
    reads = _fa2(128).elements_read
    S = IO.score_matrix_elements(N, N)
    return reads, reads * 2 / 1e6, S, S * 2 / 1e6


def _both_orders():
    fa2, fa1 = _fa2(1), IO.forward_io(N, N, 1, block_q=B_R, block_k=B_C, loop_order="kv_outer")
    std = IO.standard_io(N, N, 1)
    return (
        f"per d: Q outer (FA2) reads {fa2.elements_read:,} d, writes {fa2.writes['O']:,} d (O) + {fa2.writes['lse']:,} (lse); "
        f"KV outer (FA1) reads {fa1.reads['K'] + fa1.reads['V'] + fa1.reads['Q'] + fa1.reads['O']:,} d "
        f"(K, V once; Q and O per step) + {fa1.reads['l'] + fa1.reads['m']:,} statistics, "
        f"writes {fa1.writes['O']:,} d + {fa1.writes['l'] + fa1.writes['m'] + fa1.writes['lse']:,} (docs/errata.md#e13); "
        f"standard attention writes S and P: {std.writes['S'] + std.writes['P']:,} and reads them back"
    )


EXAMPLES = [
    WorkedExample(
        "flash_tile_loads", "docs/notes.md#tile-traffic", "32 × 32 = 1024 tile loads",
        _tile_loads, 1024, 0.0,
        "ceil(4096/128) = 32 query tiles, each iterating over 32 key/value tiles: refimpl.io_accounting "
        "counts the (query tile, key tile) pairs; tests/test_io_accounting.py runs the tiled code at this "
        "size and its instrumented count is the same",
    ),
    WorkedExample(
        "flash_elements_read", "docs/notes.md#tile-traffic", "4096·d + 262,144·d = 266,240·d",
        _elements_per_d, (4096, 262_144, 266_240), 0.0,
        "Q read once (32 · 128 d), K and V once per inner step (32 · 32 · 128 · 2 d); query tiles outer (FA2)",
        beside=_both_orders,
    ),
    WorkedExample(
        "flash_vs_materialised_S", "docs/notes.md#tile-traffic", "~34M elements ≈ 68 MB; S: n² = 16.8M elements ≈ 34 MB (fp16)",
        _d128, (34e6, 68.0, 16.8e6, 34.0), 1.5e-2,
        "d = 128: 266,240 · 128 = 34,078,720 elements (68.2 MB in fp16) against 4096² = 16,777,216 (33.6 MB); "
        "tolerance 1.5%: the notes print two significant digits (34M, 68, 34), i.e. +-0.5 in the last one. "
        "The tiled loop reads more but never writes S or P to slow memory",
    ),
]
