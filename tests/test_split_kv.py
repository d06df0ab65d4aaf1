"""Split-KV (flash-decoding): partials, the merge, flash-attn's even split, the realignment
pitfall, and argument errors. Equality with attention for any partition is the property
split_kv_matches_attention (tests/test_conformance.py)."""

import math

import numpy as np
import pytest

import refimpl
from refimpl.split_kv import attention_partials, even_boundaries, split_kv_attention

from properties.tolerance import flash_forward_bounds
from properties.tolerance import compare_close, compare_lse


def _qkv(Lq=1, Lk=40, Hq=4, Hkv=2, D=8, Dv=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, Hq, Lq, D)), rng.standard_normal((2, Hkv, Lk, D)), rng.standard_normal((2, Hkv, Lk, Dv)))


def _assert_equals_attention(q, k, v, got, chunks, block_k, **kw):
    ref_out, ref_lse = refimpl.attention(q, k, v, **kw)
    atol_out, atol_lse = flash_forward_bounds(q, k, v, block_k=block_k, lse=ref_lse, chunks=chunks)
    compare_close("out", got[0], ref_out, atol_out, str(kw))
    compare_lse("lse", got[1], ref_lse, atol_lse, str(kw))


def test_even_boundaries_follow_flash_attn():
    """n_blocks_per_split = ceil(ceil(Lk / block_k) / num_splits) key tiles per split
    (flash_fwd_kernel.h, compute_attn_1rowblock_splitkv); trailing splits may be empty."""
    assert even_boundaries(13, 3, 3) == (6, 12)  # 5 tiles -> 2 per split
    assert even_boundaries(100, 4, 16) == (32, 64, 96)  # 7 tiles -> 2 per split
    assert even_boundaries(10, 8, 4) == (4, 8, 10, 10, 10, 10, 10)  # 3 tiles, 8 splits: 5 empty
    assert even_boundaries(7, 1, 2) == ()
    for Lk, s, b in ((37, 5, 4), (64, 3, 16), (5, 2, 8)):
        cuts = (0, *even_boundaries(Lk, s, b), Lk)
        per = math.ceil(math.ceil(Lk / b) / s) * b
        assert all(hi - lo <= per for lo, hi in zip(cuts, cuts[1:])) and len(cuts) == s + 1


def test_decoding_with_many_splits_equals_attention():
    q, k, v = _qkv(Lq=1, Lk=40)
    for num_splits in (1, 2, 3, 7, 40, 64):
        got = split_kv_attention(q, k, v, block_q=1, block_k=4, num_splits=num_splits)
        _assert_equals_attention(q, k, v, got, num_splits, 4)


def test_chunks_a_row_cannot_see_are_the_merge_identity():
    """Top-left causal with Lq = 2: query 0 sees key 0, query 1 keys 0..1; every later chunk is
    (out 0, lse -inf) for both rows, and the merge is unchanged by them."""
    q, k, v = _qkv(Lq=2, Lk=12)
    kw = dict(causal=True, align="top_left")
    parts = attention_partials(q, k, v, block_q=2, block_k=2, boundaries=(1, 2, 6), **kw)
    assert len(parts) == 4
    for out_c, lse_c in parts[2:]:
        assert np.all(out_c == 0) and np.all(np.isneginf(lse_c))
    assert np.all(parts[1][0][:, :, 0] == 0) and np.all(np.isneginf(parts[1][1][:, :, 0]))  # key 1 hidden from row 0
    got = split_kv_attention(q, k, v, block_q=2, block_k=2, boundaries=(1, 2, 6), **kw)
    _assert_equals_attention(q, k, v, got, 4, 2, **kw)


def test_partials_are_attention_over_their_own_keys():
    """Without a mask, chunk c's partial is plain attention over k[:, :, a:b]."""
    q, k, v = _qkv(Lq=3, Lk=10)
    for (a, b), (out_c, lse_c) in zip(((0, 4), (4, 10)), attention_partials(q, k, v, block_q=2, block_k=3, boundaries=(4,))):
        _assert_equals_attention(q, k[:, :, a:b], v[:, :, a:b], (out_c, lse_c), 1, 3)


def test_pitfall_chunks_realigned_to_their_own_length_are_wrong():
    """Running a chunk as attention over k[:, :, a:b] with the same causal=True re-aligns the
    bottom-right diagonal to the chunk: the merged result is wrong. The chunk must be a column
    range of the full mask (what refimpl.split_kv does)."""
    q, k, v = _qkv(Lq=4, Lk=12)
    ref_out, _ = refimpl.attention(q, k, v, causal=True)
    parts = [refimpl.attention(q, k[:, :, a:b], v[:, :, a:b], causal=True) for a, b in ((0, 6), (6, 12))]
    wrong, _ = refimpl.merge_attention_states([o for o, _ in parts], [l for _, l in parts])
    assert np.max(np.abs(wrong - ref_out)) > 0.1
    right = split_kv_attention(q, k, v, block_q=2, block_k=2, boundaries=(6,), causal=True)
    _assert_equals_attention(q, k, v, right, 2, 2, causal=True)


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        (dict(), ValueError, "exactly one of"),
        (dict(boundaries=(3,), num_splits=2), ValueError, "exactly one of"),
        (dict(boundaries=(5, 3)), ValueError, "boundaries"),
        (dict(boundaries=(41,)), ValueError, "boundaries"),
        (dict(boundaries=(-1,)), ValueError, "boundaries"),
        (dict(boundaries=(2.5,)), TypeError, "boundaries"),
        (dict(boundaries="3"), TypeError, "boundaries"),
        (dict(num_splits=0), ValueError, "num_splits"),
        (dict(num_splits=2, causl=True), TypeError, "causl"),
    ],
)
def test_bad_arguments(kw, exc, words):
    q, k, v = _qkv()
    with pytest.raises(exc, match=words):
        split_kv_attention(q, k, v, block_q=1, block_k=4, **kw)


@pytest.mark.parametrize("offset", [1e12, 1e15])
def test_split_kv_stays_exact_when_all_scores_share_a_large_offset(offset):
    """A bias of 1e12 or 1e15 on every score: split-KV merges the chunks' (m, l) states, so it
    agrees with attention to rounding (|diff| <= 1e-14), as flash does. Merging by the
    partials' lse alone (merge_attention_states) errs by ~2 u |lse| per weight: 3e-5 at 1e12."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 5, 4)) for _ in range(3))
    bias = np.full((1, 2, 5, 5), offset)
    ref_out, ref_lse = refimpl.attention(q, k, v, bias=bias)
    for cuts in ([2, 3], [1, 1, 4], [0, 5]):
        out, lse = split_kv_attention(q, k, v, bias=bias, block_q=2, block_k=2, boundaries=cuts)
        np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(lse, ref_lse)
    # the documented cost of merging by lse alone, so that the claim above is tested against something
    parts = attention_partials(q, k, v, bias=bias, block_q=2, block_k=2, boundaries=[2, 3])
    out_lse, _ = refimpl.merge_attention_states([o for o, _ in parts], [l for _, l in parts])
    assert np.abs(out_lse - ref_out).max() > 1e-10
