"""refimpl.kv_cache: block-table semantics, copy-on-write, ring eviction, and why decoding needs bottom-right."""

import numpy as np
import pytest

import refimpl
from refimpl import kv_cache as KV


def _qkv(L=9, B=1, Hq=2, Hkv=1, D=4, Dv=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, Hq, L, D)), rng.standard_normal((B, Hkv, L, D)),
            rng.standard_normal((B, Hkv, L, Dv)))


def test_top_left_decode_fails_bottom_right_succeeds():
    """With 5 tokens cached, a 3-query chunk aligned top-left sees keys 0..i of the cache instead of 0..5+i."""
    q, k, v = _qkv(L=8)
    ref = KV.prefill_reference(q, k, v)
    outs = {}
    for align in ("bottom_right", "top_left"):
        c = KV.ContiguousCache(1, 4, 3)
        c.update(k[:, :, :5], v[:, :, :5])
        outs[align] = KV.decode_step(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], c, align=align)
    np.testing.assert_allclose(outs["bottom_right"], ref[:, :, 5:], rtol=0, atol=1e-13)
    assert np.max(np.abs(outs["top_left"] - ref[:, :, 5:])) > 0.1


def test_paged_block_table_follows_vllm_slot_mapping():
    """Token p of a sequence sits in physical block table[p // block_size] at offset p % block_size."""
    _, k, v = _qkv(L=7, B=2)
    c = KV.PagedCache(1, 4, 3, batch=2, block_size=3, num_blocks=8)
    for s in (slice(0, 2), slice(2, 3), slice(3, 7)):
        c.update(k[:, :, s], v[:, :, s])
    t0, t1 = c.block_table(0), c.block_table(1)
    assert len(t0) == len(t1) == 3 and not set(t0) & set(t1)  # ceil(7 / 3) blocks each, none shared
    for b, table in enumerate((t0, t1)):
        for p in range(7):
            assert np.array_equal(c.k_pool[table[p // 3], :, p % 3], k[b, :, p])
    K, V, pos = c.contents()
    assert np.array_equal(K, k) and np.array_equal(V, v) and pos.tolist() == list(range(7))


def test_paged_fork_copy_on_write():
    _, k, v = _qkv(L=6, B=2)
    c = KV.PagedCache(1, 4, 3, batch=1, block_size=4, num_blocks=8)
    c.append(0, k[0, :, :5], v[0, :, :5])  # blocks: [full, partial]
    b = c.fork(0)
    assert c.block_table(b) == c.block_table(0) and c.blocks_in_use == 2
    c.append(b, k[1, :, 5:], v[1, :, 5:])  # writes into the shared partial block: copied first
    assert c.block_table(b)[0] == c.block_table(0)[0] and c.block_table(b)[1] != c.block_table(0)[1]
    Ka, _ = c.gather(0)
    Kb, _ = c.gather(b)
    assert np.array_equal(Ka, k[0, :, :5])
    assert np.array_equal(Kb, np.concatenate([k[0, :, :5], k[1, :, 5:]], axis=1))
    assert c.blocks_in_use == 3


def test_paged_pool_exhaustion_raises():
    c = KV.PagedCache(1, 2, batch=1, block_size=2, num_blocks=1)
    with pytest.raises(KV.PoolExhausted, match="num_blocks: expected 2 free blocks") as e:
        c.update(np.zeros((1, 1, 3, 2)), np.zeros((1, 1, 3, 2)))
    assert isinstance(e.value, ValueError) and isinstance(e.value, MemoryError)
    assert c.length == 0 and c.blocks_in_use == 0  # nothing written


def test_ring_overwrites_and_rejects_a_window_it_cannot_serve():
    q, k, v = _qkv(L=10)
    c = KV.RingCache(1, 4, 3, capacity=3)
    for t in range(10):
        c.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
    K, _, pos = c.contents()
    assert pos.tolist() == [7, 8, 9] and np.array_equal(K, k[:, :, 7:])
    assert c.slot_position.tolist() == [9, 7, 8]  # position p in slot p % 3
    with pytest.raises(ValueError, match="evict"):
        KV.decode_step(q[:, :, :1], k[:, :, :1], v[:, :, :1], KV.RingCache(1, 4, 3, capacity=3), window=(3, 0))
    with pytest.raises(ValueError, match="finite window"):
        KV.make_cache("ring", 1, 4)


def test_long_chunk_through_a_small_ring():
    """A prefill chunk longer than the ring still sees every key its window allows."""
    q, k, v = _qkv(L=12)
    c = KV.make_cache("ring", 1, 4, 3, window=(2, 0))
    out = KV.decode(q, k, v, c, chunks=[9, 3], window=(2, 0))
    np.testing.assert_allclose(out, KV.prefill_reference(q, k, v, window=(2, 0)), rtol=0, atol=1e-13)
    assert c.contents()[2].tolist() == [9, 10, 11]


def test_decode_validation_and_no_mutation():
    q, k, v = _qkv(L=4)
    before = [a.copy() for a in (q, k, v)]
    with pytest.raises(ValueError, match="chunks"):
        KV.decode(q, k, v, KV.ContiguousCache(1, 4, 3), chunks=[1, 2])
    with pytest.raises(ValueError, match="window"):
        KV.decode(q, k, v, KV.ContiguousCache(1, 4, 3), chunks=[4], window=(1, 1))
    with pytest.raises(ValueError, match="k"):
        KV.ContiguousCache(2, 4, 3).update(k, v)
    KV.decode(q, k, v, KV.make_cache("paged", 1, 4, 3, block_size=2), chunks=[1, 3],
              rope={"layout": "interleaved"})
    assert all(np.array_equal(a, b) for a, b in zip((q, k, v), before))


def test_stored_values_matches_cache_size_formula():
    _, k, v = _qkv(L=5, B=2, Hkv=2)
    c = KV.ContiguousCache(2, 4, 3, batch=2)
    c.update(k, v)
    assert c.stored_values == refimpl.cache.kv_cache_values(5, 2, 4, v_head_dim=3, batch=2)


def test_contiguous_cache_grows_keeping_every_position():
    """Appending token by token across buffer doublings (keys stored transposed): every update returns
    the keys and values so far in position order, as C-ordered copies; ``key_max`` is max |k|."""
    _, k, v = _qkv(L=37, B=2, Hkv=2)
    c = KV.ContiguousCache(2, 4, 3, batch=2)
    for t in range(37):
        K, V = c.update(k[:, :, t : t + 1], v[:, :, t : t + 1])
        assert np.array_equal(K, k[:, :, : t + 1]) and np.array_equal(V, v[:, :, : t + 1])
    K, V, pos = c.contents()
    assert np.array_equal(K, k) and np.array_equal(V, v) and K.flags.c_contiguous and pos.tolist() == list(range(37))
    assert c.key_max == np.abs(k).max() and np.array_equal(c.k, k)


def test_a_step_whose_products_may_overflow_takes_attentions_rescaled_path():
    """The one-pass step (``_attend``, a plain GEMM) runs only where max|q| max|k| max(1, scale) D < 2^1000
    (``refimpl.attention``'s own test), with max|k| over the whole cache (``key_max``), not the new keys.
    Here an earlier key is large: q = 2^520 (1, 1), k_0 = 2^520 (1, -1), k_1 = 0. The products q_d k_0d
    overflow while both exact scores are 0, so out = (v_0 + v_1) / 2 = 1.5; attention's rescaled path
    gives it exactly, the one-pass form (what a test of the new keys alone would run) does not: its
    score for k_0 comes out inf, -inf or NaN, depending on the GEMM's order of operations."""
    big = 2.0**520
    c = KV.ContiguousCache(1, 2, 1)
    KV.decode_step(np.array([[[[1.0, 0.0]]]]), np.array([[[[big, -big]]]]), np.array([[[[1.0]]]]), c)
    q1, k1, v1 = np.array([[[[big, big]]]]), np.zeros((1, 1, 1, 2)), np.array([[[[2.0]]]])
    got = KV.decode_step(q1, k1, v1, c)
    K, V, _ = c.contents()
    assert got.item() == 1.5 and np.array_equal(got, refimpl.attention(q1, K, V, causal=True)[0])
    with np.errstate(over="ignore", invalid="ignore"):
        assert not KV._attend(q1, K, V, None, 2**-0.5).item() == 1.5  # the meta-check: the plain GEMM fails here
    with pytest.raises(ValueError, match="q, k, scale: expected every visible score"):  # a score beyond float64
        KV.decode_step(np.array([[[[big, 0.0]]]]), np.array([[[[big, 0.0]]]]), np.array([[[[1.0]]]]),
                       KV.ContiguousCache(1, 2, 1))
