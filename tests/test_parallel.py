"""Threads change nothing: results are bit for bit the same for 1 and n threads.

``refimpl._parallel.map_blocks`` runs independent blocks (FA2's query tiles, the
dense path's row chunks and heads) on threads; each block computes exactly what
it computes alone, so out, lse, gradients and the I/O statistics must be equal
bit for bit whatever the thread count. The work threshold is set to 0 here so
that small cases take the threaded path. Also: the row strips of partially
hidden tiles (a wrong strip, one key column short, is caught), the closed-form
tile classification of causal / window masks against the built tiles, and the
BLAS thread count restored after a threaded call, and FA2's kv heads per thread
block (one or all) and their groups within a block changing no result.
"""

import numpy as np
import pytest

import refimpl
from refimpl import _parallel, flash
from refimpl.masks import Causal, SlidingWindow
from refimpl.sdpa import AttentionMask


@pytest.fixture
def threaded(monkeypatch):
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_WORK", 0)

    def run(n, fn):
        monkeypatch.setenv("REFIMPL_NUM_THREADS", str(n))
        return fn()

    return run


def _case(seed=0, B=2, Hq=4, Hkv=2, Lq=37, Lk=45, D=8):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, Lq, D))
    k = rng.standard_normal((B, Hkv, Lk, D))
    v = rng.standard_normal((B, Hkv, Lk, D))
    return q, k, v, rng


KWARGS = [
    {},
    {"causal": True},
    {"causal": True, "align": "top_left"},
    {"window": (5, 3)},
    {"softcap": 2.0, "causal": True},
    {"mask": "array"},
    {"dropout": True},
    {"bias": True, "causal": True},
]


def _kwargs(kw, rng, q, k):
    kw = dict(kw)
    if kw.pop("mask", None):
        kw["mask"] = rng.random((q.shape[0], 1, q.shape[2], k.shape[2])) < 0.7
    if kw.pop("bias", None):
        bias = rng.standard_normal((1, q.shape[1], q.shape[2], k.shape[2]))
        bias[..., ::5] = -np.inf  # a -inf bias hides keys (and, with causal, some whole rows)
        kw["bias"] = bias
    if kw.pop("dropout", None):
        kw["dropout_mask"] = rng.random((q.shape[0], q.shape[1], q.shape[2], k.shape[2])) < 0.9
        kw["dropout_p"] = 0.1
    return kw


def _equal(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True), "results differ between 1 and n threads"
    else:
        assert a == b


@pytest.mark.parametrize("kw", KWARGS, ids=lambda kw: ",".join(kw) or "plain")
def test_flash_and_dense_are_the_same_bits_for_any_thread_count(threaded, kw):
    q, k, v, rng = _case()
    kw = _kwargs(kw, rng, q, k)
    dout = rng.standard_normal((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
    calls = {
        "fa2": lambda: flash.flash_attention(q, k, v, block_q=8, block_k=16, return_stats=True, **kw),
        "fa2_bwd": lambda: flash.flash_attention_backward(q, k, v, *refimpl.attention(q, k, v, **kw), dout,
                                                          block_q=8, block_k=16, return_stats=True, **kw),
        "dense": lambda: refimpl.attention(q, k, v, **kw),
        "dense_bwd": lambda: refimpl.attention_backward(q, k, v, dout, **kw),
        "probs": lambda: refimpl.attention_probs(q, k, **{n: x for n, x in kw.items() if "dropout" not in n}),
    }
    for name, call in calls.items():
        one = threaded(1, call)
        for n in (2, 3):
            _equal(one, threaded(n, call))


@pytest.mark.parametrize("kw", KWARGS, ids=lambda kw: ",".join(kw) or "plain")
def test_kv_heads_per_thread_block_change_no_result(monkeypatch, kw):
    """FA2's thread blocks take 1, 2 (the last block 1) or all 3 kv heads as the score-tile budget
    allows: same results (to rounding) and the same tile and I/O counts."""
    q, k, v, rng = _case(5, Hq=6, Hkv=3)
    kw = _kwargs(kw, rng, q, k)
    st = flash._setup(q, k, v, 8, 16, dict(mask=None, causal=False, align="bottom_right", window=None, scale=None,
                                            softcap=None, bias=None, dropout_mask=None, dropout_p=0.0))
    one_head = 8 * 2 * 8 * 16  # bytes of one kv head's score tile: G = 2 query heads, 8 x 16
    results = {}
    for budget, heads in ((1, 1), (2 * one_head, 2), (2**40, 3)):
        monkeypatch.setattr(flash, "_TILE_BYTES", budget)
        assert flash._heads_per_block(st, 8, 16) == heads
        results[heads] = flash.flash_attention(q, k, v, block_q=8, block_k=16, return_stats=True, **kw)
    for heads in (1, 2):
        for a, b in zip(results[heads][:2], results[3][:2]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        assert results[heads][2] == results[3][2]


@pytest.mark.parametrize("kw", KWARGS + [{"mask_per_head": True, "causal": True}], ids=lambda kw: ",".join(kw) or "plain")
def test_kv_head_groups_within_a_thread_block_change_no_result(monkeypatch, kw):
    """Under a mask a thread block holds as many kv heads as a 32-row strip allows and takes its
    whole tiles a head at a time (``_head_groups``): same results (to rounding) as one group, the
    mask, bias and dropout of each group its own heads', and the same tile and I/O counts."""
    q, k, v, rng = _case(6, B=2, Hq=6, Hkv=3, Lq=150, Lk=140, D=8)
    kw = _kwargs(kw, rng, q, k)
    if kw.pop("mask_per_head", None):  # a mask of its own per query head: each group reads its heads' part
        kw["mask"] = rng.random((2, 6, 150, 140)) < 0.3 + 0.1 * np.arange(6)[:, None, None]
    st = flash._setup(q, k, v, 64, 64, dict(mask=None, causal=True, align="bottom_right", window=None, scale=None,
                                              softcap=None, bias=None, dropout_mask=None, dropout_p=0.0))
    strip_of_three = 8 * 2 * 32 * 64 * 3  # bytes of a 32 x 64 strip for 3 kv heads of G = 2 query heads
    monkeypatch.setattr(flash, "_TILE_BYTES", strip_of_three)
    assert flash._heads_per_block(st, 64, 64) == 3
    assert flash._head_groups(st, 64, 64) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # whole tiles: one head
    grouped = flash.flash_attention(q, k, v, block_q=64, block_k=64, return_stats=True, **kw)
    monkeypatch.setattr(flash, "_TILE_BYTES", 2**40)
    one_group = flash.flash_attention(q, k, v, block_q=64, block_k=64, return_stats=True, **kw)
    dense = refimpl.attention(q, k, v, **kw)
    for a, b, c in zip(grouped[:2], one_group[:2], dense):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)
    assert grouped[2] == one_group[2]


def test_a_head_group_left_out_is_caught(monkeypatch):
    """Meta-test: groups that leave out a thread block's last kv head change the result."""
    q, k, v, _ = _case(7, B=1, Hq=6, Hkv=3, Lq=150, Lk=150, D=8)
    right = refimpl.attention(q, k, v, causal=True)[0]
    original = flash._head_groups

    def short(st, rows, cols):
        return [g for g in original(st, rows, cols) if g.stop < st.Hkv] or original(st, rows, cols)

    monkeypatch.setattr(flash, "_TILE_BYTES", 8 * 2 * 32 * 64 * 3)
    monkeypatch.setattr(flash, "_head_groups", short)
    wrong = flash.flash_attention(q, k, v, block_q=64, block_k=64, causal=True)[0]
    assert not np.allclose(wrong, right, rtol=1e-6, atol=1e-8)


def test_split_kv_is_the_same_bits_for_any_thread_count(threaded):
    q, k, v, _ = _case(1)
    call = lambda: refimpl.split_kv_attention(q, k, v, num_splits=3, block_q=8, block_k=8, causal=True)  # noqa: E731
    _equal(threaded(1, call), threaded(2, call))


def test_map_blocks_keeps_order_propagates_errors_and_runs_nested_calls_inline(threaded):
    assert threaded(3, lambda: _parallel.map_blocks(lambda x: x * x, range(10), work=1)) == [x * x for x in range(10)]

    def boom(x):
        if x == 3:
            raise ValueError("block 3")
        return x

    with pytest.raises(ValueError, match="block 3"):
        threaded(2, lambda: _parallel.map_blocks(boom, range(6), work=1))
    nested = threaded(2, lambda: _parallel.map_blocks(
        lambda x: _parallel.map_blocks(lambda y: (x, y), range(3), work=1), range(4), work=1))
    assert nested == [[(x, y) for y in range(3)] for x in range(4)]


def test_blas_threads_are_restored_after_a_threaded_call(threaded):
    before = _parallel._blas_controller().info()
    q, k, v, _ = _case()
    threaded(2, lambda: flash.flash_attention(q, k, v, block_q=8, block_k=8))
    assert _parallel._blas_controller().info() == before


def test_one_blas_thread_limits_blas_inside_and_restores_it_after_an_error():
    """``one_blas_thread`` (the router's product before the experts' threads): BLAS at one thread
    inside, nested ones too, the original count after it, an error
    included."""
    before = _parallel._blas_controller().info()
    blas = lambda: [lib["num_threads"] for lib in _parallel._blas_controller().info() if lib["user_api"] == "blas"]  # noqa: E731
    with pytest.raises(ValueError, match="inside"):
        with _parallel.one_blas_thread():
            assert set(blas()) == {1}
            with _parallel.one_blas_thread():
                assert set(blas()) == {1}
            assert set(blas()) == {1}
            raise ValueError("inside")
    assert _parallel._blas_controller().info() == before


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_a_bad_thread_count_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("REFIMPL_NUM_THREADS", bad)
    with pytest.raises(ValueError, match="REFIMPL_NUM_THREADS"):
        _parallel.num_threads()


def test_blas_thread_count_is_the_default(monkeypatch):
    monkeypatch.delenv("REFIMPL_NUM_THREADS", raising=False)
    blas = [lib["num_threads"] for lib in _parallel._blas_controller().info() if lib["user_api"] == "blas"]
    assert _parallel.num_threads() == max(blas)


# ---------------------------------------------------------------------------
# row strips of partially hidden tiles


@pytest.mark.parametrize("kw", [{"causal": True}, {"window": (20, 3)}, {"causal": True, "align": "top_left"}])
def test_strips_compute_what_whole_tiles_compute(kw):
    q, k, v, _ = _case(2, Lq=150, Lk=170, D=16)
    strips = flash.flash_attention(q, k, v, block_q=96, block_k=96, **kw)
    whole = flash.flash_attention(q, k, v, block_q=96, block_k=96, skip_masked_tiles=False, **kw)
    dense = refimpl.attention(q, k, v, **kw)
    for a, b in zip(strips, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(strips, dense):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_a_strip_one_key_short_is_caught(monkeypatch):
    """Meta-test: strips that stop one column before the last visible key change the result."""
    q, k, v, _ = _case(3, Lq=150, Lk=150, D=16)
    right = refimpl.attention(q, k, v, causal=True)[0]
    original = flash._row_strips

    def short(visible, nq, nk):
        return [(r, slice(c.start, max(c.start, (c.stop or nk) - 1))) for r, c in original(visible, nq, nk)]

    monkeypatch.setattr(flash, "_row_strips", short)
    wrong = flash.flash_attention(q, k, v, block_q=96, block_k=96, causal=True)[0]
    assert not np.allclose(wrong, right, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("pred", [Causal("bottom_right"), Causal("top_left"), SlidingWindow(3, 2),
                                  SlidingWindow(None, 5, "top_left"), SlidingWindow(0, None), SlidingWindow(7, 0)])
def test_closed_form_tile_classes_agree_with_the_built_tiles(pred):
    rng = np.random.default_rng(4)
    for _ in range(300):
        Lq, Lk = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        q0, k0 = int(rng.integers(0, Lq)), int(rng.integers(0, Lk))
        q1, k1 = int(rng.integers(q0 + 1, Lq + 1)), int(rng.integers(k0 + 1, Lk + 1))
        tile = pred.tile(q0, q1, k0, k1, Lq, Lk)
        # exact for one window: a block is classified all / none exactly when it is
        assert pred._covers(q0, q1, k0, k1, Lq, Lk) == bool(tile.all())
        assert pred._hides(q0, q1, k0, k1, Lq, Lk) == (not tile.any())


def test_attention_mask_visible_returns_none_only_for_fully_visible_tiles():
    mask = AttentionMask(None, True, "bottom_right", (4, None), (1, 1, 64, 64))
    for qs in (slice(0, 16), slice(16, 48), slice(48, 64)):
        for ks in (slice(0, 16), slice(16, 40), slice(40, 64)):
            built = mask.tile(qs, ks)
            assert mask.covers(qs, ks) == bool(built.all())
            assert mask.hides(qs, ks) == (not built.any())


@pytest.mark.parametrize("kw", [{}, {"preset": "deepseek_v3"}, {"capacity_factor": 1.0, "preset": "gshard"}],
                         ids=["plain", "deepseek_v3", "gshard"])
def test_route_is_the_same_for_any_thread_count_and_chunking(threaded, monkeypatch, kw):
    from refimpl.moe import router

    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 16))
    z[::7, 3] = z[::7, 5]  # ties
    extra = {"selection_bias": rng.standard_normal(16)} if kw.get("preset") == "deepseek_v3" else {}
    k = 8 if kw.get("preset") == "deepseek_v3" else 2
    whole = threaded(1, lambda: router.route(z, k, **kw, **extra))
    monkeypatch.setattr(router, "_SELECT_CHUNK", 16 * 7)  # chunks of 7 tokens, the last one shorter
    chunked = threaded(3, lambda: router.route(z, k, **kw, **extra))
    for field in ("probs", "indices", "gates", "kept", "position", "counts", "token_mask"):
        _equal(getattr(whole, field), getattr(chunked, field))
    assert whole.capacity == chunked.capacity


def test_calls_from_several_user_threads_restore_blas_threads(threaded):
    """Overlapping threaded calls from user threads: the BLAS limit is set by the first and
    lifted by the last, so the original thread count survives (and results are unchanged)."""
    import threading

    before = _parallel._blas_controller().info()
    q, k, v, _ = _case(6, Lq=64, Lk=64)
    want = threaded(1, lambda: flash.flash_attention(q, k, v, block_q=8, block_k=8))
    got, errors = [], []

    def user():
        try:
            for _ in range(5):
                got.append(flash.flash_attention(q, k, v, block_q=8, block_k=8))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def run_users():
        users = [threading.Thread(target=user) for _ in range(4)]
        for t in users:
            t.start()
        for t in users:
            t.join()

    threaded(2, run_users)
    assert not errors
    assert len(got) == 20
    for out in got:
        _equal(out, want)
    assert _parallel._blas_controller().info() == before
