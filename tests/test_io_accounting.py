"""I/O accounting: the closed-form slow-memory traffic equals what the instrumented
tiled code actually moves, tensor by tensor, for both loop orders and the backward;
the figures of docs/notes.md#tile-traffic; and the loop-order dependence of docs/errata.md#e13."""

import numpy as np
import pytest
from hypothesis import given

from refimpl import io_accounting as IO

from properties.attention_cases import ALL_CAPS
from properties.flash import flash_case, visible_tile_grid


def _problem(fc):
    a = fc.attn
    B, Hq, Lq, D = a.q.shape
    return dict(Lq=Lq, Lk=a.k.shape[2], D=D, Dv=a.v.shape[3], block_q=fc.block_q, block_k=fc.block_k,
                batch=B, heads_q=Hq, heads_kv=a.k.shape[1], computed=visible_tile_grid(fc))


@given(fc=flash_case(ALL_CAPS - {"dropout", "backward"} | {"fa1", "fa2"}))
def test_measured_forward_traffic_equals_the_formula(fc):
    a = fc.attn
    measured = IO.measured_io(a.q, a.k, a.v, block_q=fc.block_q, block_k=fc.block_k, variant=fc.variant, **a.kwargs)
    formula = IO.forward_io(**_problem(fc), loop_order=IO.LOOP_ORDER_OF_VARIANT[fc.variant])
    assert measured == formula, f"{fc!r}\nmeasured {measured}\nformula  {formula}"


@given(fc=flash_case(ALL_CAPS - {"dropout", "backward"} | {"fa2"}, max_len=6))
def test_measured_backward_traffic_equals_the_formula(fc):
    import refimpl

    a = fc.attn
    out, lse = refimpl.attention(a.q, a.k, a.v, **a.kwargs)
    dout = np.ones_like(out)
    measured = IO.measured_backward_io(a.q, a.k, a.v, out, lse, dout, block_q=fc.block_q, block_k=fc.block_k, **a.kwargs)
    assert measured == IO.backward_io(**_problem(fc)), fc


# --- docs/notes.md#tile-traffic ------------------------------------------------------------------


def test_seed_problem_2_formula():
    """n = 4096, B_r = B_c = 128: 32 x 32 = 1024 tile loads; Q once + K, V per inner step:
    32*128 d + 32*32*128*2 d = 4,096 d + 262,144 d = 266,240 d elements; S would be n^2."""
    for d in (1, 64, 128):
        io = IO.forward_io(4096, 4096, d, block_q=128, block_k=128, loop_order="q_outer")
        assert io.tile_pairs == 32 * 32 == 1024
        assert io.reads == {"Q": 4096 * d, "K": 131_072 * d, "V": 131_072 * d}
        assert io.elements_read == 266_240 * d
    assert IO.score_matrix_elements(4096, 4096) == 4096**2 == 16_777_216


@pytest.mark.slow
def test_seed_problem_2_measured_by_running_the_tiled_code():
    """The instrumented FA2 run at the notes' size (d = 1 to keep it quick) reads 266,240 elements."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 4096, 1)) for _ in range(3))
    io = IO.measured_io(q, k, v, block_q=128, block_k=128, variant="fa2")
    assert io.tile_pairs == 1024
    assert io.reads == {"Q": 4096, "K": 131_072, "V": 131_072} and io.elements_read == 266_240


def test_loop_order_changes_the_count_errata_13():
    """FA1 (key tiles outer) reads Q and re-reads/re-writes O, l, m at every step; FA2 does not."""
    n, d, b = 4096, 128, 128
    fa2 = IO.forward_io(n, n, d, block_q=b, block_k=b, loop_order="q_outer")
    fa1 = IO.forward_io(n, n, d, block_q=b, block_k=b, loop_order="kv_outer")
    T = n // b
    assert fa1.tile_pairs == fa2.tile_pairs == T * T
    assert fa1.reads["K"] == n * d and fa1.reads["Q"] == T * n * d and fa1.reads["O"] == T * n * d
    assert fa1.writes["O"] == (T + 1) * n * d  # initialisation plus one write per step
    assert fa2.writes == {"O": n * d, "lse": n}
    assert fa1.elements_read > fa2.elements_read and fa1.elements_written > 30 * fa2.elements_written


def test_standard_attention_moves_S_and_P():
    io = IO.standard_io(4096, 4096, 128)
    assert io.reads["S"] == io.writes["S"] == io.reads["P"] == io.writes["P"] == 4096**2
    assert io.elements_written == 2 * 4096**2 + 4096 * 128


def test_block_skipping_cuts_traffic():
    n, b = 1024, 128
    T = n // b
    causal = np.tril(np.ones((T, T), dtype=bool))
    full = IO.forward_io(n, n, 64, block_q=b, block_k=b)
    half = IO.forward_io(n, n, 64, block_q=b, block_k=b, computed=causal)
    assert half.tile_pairs == T * (T + 1) // 2
    assert half.reads["K"] == 64 * b * T * (T + 1) // 2 < full.reads["K"]


def test_partial_tiles_and_gqa_are_counted_exactly():
    io = IO.forward_io(10, 7, 3, 2, block_q=4, block_k=3, batch=2, heads_q=6, heads_kv=2)
    # T_r = 3 (4, 4, 2 rows), T_c = 3 (3, 3, 1 columns); K/V per kv head, Q/O per query head
    assert io.tile_pairs == 9
    assert io.reads == {"Q": 2 * 6 * 3 * 10, "K": 2 * 2 * 3 * 3 * 7, "V": 2 * 2 * 2 * 3 * 7}
    assert io.writes == {"O": 2 * 6 * 2 * 10, "lse": 2 * 6 * 10}


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        (dict(loop_order="kv_first"), ValueError, "loop_order"),
        (dict(computed=np.ones((3, 3), dtype=bool)), ValueError, "computed"),
        (dict(computed=np.ones((2, 2))), ValueError, "computed"),
        (dict(block_q=0), ValueError, "block_q"),
        (dict(heads_q=3, heads_kv=2), ValueError, "heads_q"),
    ],
)
def test_bad_arguments(kw, exc, words):
    base = dict(Lq=8, Lk=8, D=4, block_q=4, block_k=4)
    with pytest.raises(exc, match=words):
        IO.forward_io(**{**base, **kw})
