"""Unit tests of refimpl.flash: argument errors, statistics, edge shapes, and block
skipping checked against flash-attn's own tile range. The equality with naive
attention for every mask and shape is the job of tests/test_conformance.py."""

import math

import numpy as np
import pytest

import refimpl
from refimpl import masks as M
from refimpl.flash import FlashStats, flash_attention, flash_attention_backward, tile_grid

from properties import flash as F
from properties.attention_cases import AttnCase
from properties.tolerance import flash_forward_bounds
from properties.tolerance import compare_close, compare_lse


def _qkv(B=1, Hq=2, Hkv=1, Lq=5, Lk=7, D=3, Dv=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, Hq, Lq, D)), rng.standard_normal((B, Hkv, Lk, D)), rng.standard_normal((B, Hkv, Lk, Dv)))


def _assert_equals_naive(q, k, v, block_k, got, **kw):
    ref_out, ref_lse = refimpl.attention(q, k, v, **kw)
    atol_out, atol_lse = flash_forward_bounds(q, k, v, block_k=block_k, lse=ref_lse, **{x: kw[x] for x in ("scale", "softcap", "bias") if x in kw})
    compare_close("out", got[0], ref_out, atol_out, str(kw))
    compare_lse("lse", got[1], ref_lse, atol_lse, str(kw))


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        (dict(block_q=0, block_k=2), ValueError, "block_q"),
        (dict(block_q=2, block_k=-1), ValueError, "block_k"),
        (dict(block_q=2.0, block_k=2), TypeError, "block_q"),
        (dict(block_q=True, block_k=2), TypeError, "block_q"),
        (dict(block_q=2, block_k=2, variant="fa3"), ValueError, "variant"),
        (dict(block_q=2, block_k=2, skip_masked_tiles="yes"), TypeError, "skip_masked_tiles"),
        (dict(block_q=2, block_k=2, return_stats=1), TypeError, "return_stats"),
        (dict(block_q=2, block_k=2, window=(-1, 0)), ValueError, "window"),
        (dict(block_q=2, block_k=2, scale=0.0), ValueError, "scale"),
        (dict(block_q=2, block_k=2, dropout_p=0.2), ValueError, "dropout_mask"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kw, exc, words):
    q, k, v = _qkv()
    with pytest.raises(exc, match=words):
        flash_attention(q, k, v, **kw)


def test_block_sizes_are_required():
    q, k, v = _qkv()
    with pytest.raises(TypeError):
        flash_attention(q, k, v)


def test_bad_qkv_shapes_are_rejected_as_in_attention():
    q, k, v = _qkv(Hq=3, Hkv=2)
    with pytest.raises(ValueError, match="q, k: expected Hq a positive multiple of Hkv .*Hq = 3, Hkv = 2"):
        flash_attention(q, k, v, block_q=2, block_k=2)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q: expected finite entries, got an entry NaN"):
        flash_attention(np.full_like(q, np.nan), k, v, block_q=2, block_k=2)


def test_backward_validates_out_lse_dout():
    q, k, v = _qkv()
    out, lse = flash_attention(q, k, v, block_q=2, block_k=3)
    dout = np.ones_like(out)
    bw = dict(block_q=2, block_k=3)
    with pytest.raises(ValueError, match="out: expected shape"):
        flash_attention_backward(q, k, v, out[:, :, :-1], lse, dout, **bw)
    with pytest.raises(ValueError, match="lse: expected shape"):
        flash_attention_backward(q, k, v, out, lse[..., :-1], dout, **bw)
    with pytest.raises(ValueError, match="lse: expected finite entries.*got an entry NaN"):
        flash_attention_backward(q, k, v, out, np.full_like(lse, np.nan), dout, **bw)
    with pytest.raises(ValueError, match="lse: expected finite entries .*got an entry \\+inf"):
        flash_attention_backward(q, k, v, out, np.full_like(lse, np.inf), dout, **bw)
    with pytest.raises(ValueError, match="dout: expected shape"):
        flash_attention_backward(q, k, v, out, lse, dout[..., :1], **bw)


# --- results and statistics --------------------------------------------------------------


def test_return_stats_reports_grid_skips_and_traffic():
    q, k, v = _qkv(Lq=7, Lk=7)
    out, lse, stats = flash_attention(q, k, v, block_q=2, block_k=3, causal=True, return_stats=True)
    assert isinstance(stats, FlashStats)
    assert stats.grid == tile_grid(7, 7, 2, 3) == (4, 3)
    assert stats.tiles == 12 and stats.tiles_computed + stats.tiles_skipped == 12
    assert stats.elements_read == sum(stats.reads.values()) > 0
    assert stats.writes["O"] == out.size and stats.writes["lse"] == lse.size
    plain = flash_attention(q, k, v, block_q=2, block_k=3, causal=True)
    assert np.array_equal(plain[0], out) and np.array_equal(plain[1], lse)


def test_causal_square_skips_the_tiles_above_the_diagonal():
    """Lq = Lk = n, equal tiles of size b: T (T - 1) / 2 of the T^2 tiles are hidden (T = ceil(n / b))."""
    for n, b in ((8, 2), (9, 2), (16, 4), (10, 3)):
        q, k, v = _qkv(Lq=n, Lk=n)
        T = math.ceil(n / b)
        for variant in ("fa1", "fa2"):
            _, _, stats = flash_attention(q, k, v, block_q=b, block_k=b, causal=True, variant=variant, return_stats=True)
            assert stats.tiles_skipped == T * (T - 1) // 2, (n, b, variant, stats)
        _, stats = flash_attention_backward(q, k, v, *refimpl.attention(q, k, v, causal=True), np.ones((1, 2, n, 2)),
                                            block_q=b, block_k=b, causal=True, return_stats=True)
        assert stats.tiles_skipped == T * (T - 1) // 2


def _flash_attn_tile_range(Lq, Lk, bq, bk, left, right):
    """Tiles computed by flash-attn: for query tile m, key tiles [n_block_min, n_block_max) with
        n_block_min = max(0, (m bq + Lk - Lq - left) // bk)              (local only)
        n_block_max = min(ceil(Lk / bk), ceil(((m + 1) bq + Lk - Lq + right) / bk))
    (csrc/flash_attn/src/flash_fwd_kernel.h, compute_attn_1rowblock; right = 0 for causal)."""
    total = 0
    for m in range(math.ceil(Lq / bq)):
        lo = 0 if left is None else max(0, (m * bq + Lk - Lq - left) // bk)
        hi = math.ceil(Lk / bk)
        if right is not None:
            hi = min(hi, math.ceil(((m + 1) * bq + Lk - Lq + right) / bk))
        total += max(0, hi - lo)
    return total


@pytest.mark.parametrize("window", [(None, 0), (2, 0), (3, 1), (0, 0), (None, 2), (5, None)])
def test_block_skipping_matches_flash_attn_tile_range(window):
    """For causal and local masks (bottom-right, Lq <= Lk) the tiles computed are exactly flash-attn's range."""
    for Lq, Lk in ((1, 13), (5, 8), (8, 8), (5, 13), (13, 13)):
        q, k, v = _qkv(Hq=1, Lq=Lq, Lk=Lk)
        for bq, bk in ((1, 1), (2, 3), (4, 4), (4, 1)):
            _, _, stats = flash_attention(q, k, v, block_q=bq, block_k=bk, window=window, return_stats=True)
            assert stats.tiles_computed == _flash_attn_tile_range(Lq, Lk, bq, bk, *window), (Lq, Lk, bq, bk)


def test_no_skipping_without_a_mask_and_with_skipping_off():
    q, k, v = _qkv(Lq=6, Lk=6)
    assert flash_attention(q, k, v, block_q=2, block_k=2, return_stats=True)[2].tiles_skipped == 0
    assert flash_attention(q, k, v, block_q=2, block_k=2, causal=True, skip_masked_tiles=False, return_stats=True)[2].tiles_skipped == 0


def test_a_bias_of_minus_inf_hides_keys_but_never_causes_a_skip():
    q, k, v = _qkv(Lq=4, Lk=6)
    bias = np.zeros((4, 6))
    bias[:, 3:] = -np.inf
    out, lse, stats = flash_attention(q, k, v, block_q=2, block_k=3, bias=bias, return_stats=True)
    assert stats.tiles_skipped == 0
    _assert_equals_naive(q, k, v, 3, (out, lse), bias=bias)


@pytest.mark.parametrize("variant", ["fa1", "fa2"])
def test_fully_masked_rows_give_exactly_zero_and_minus_inf(variant):
    q, k, v = _qkv(Lq=6, Lk=4)
    # an array mask that hides rows 1 and 4 entirely
    mask = np.ones((6, 4), dtype=bool)
    mask[[1, 4]] = False
    out, lse = flash_attention(q, k, v, block_q=4, block_k=3, mask=mask, variant=variant)
    assert np.all(out[:, :, [1, 4]] == 0) and np.all(np.isneginf(lse[:, :, [1, 4]]))
    assert np.isfinite(lse[:, :, [0, 2, 3, 5]]).all()
    # bottom-right causal with Lq > Lk: the first Lq - Lk rows see nothing
    out, lse = flash_attention(q, k, v, block_q=4, block_k=3, causal=True, variant=variant)
    assert np.all(out[:, :, :2] == 0) and np.all(np.isneginf(lse[:, :, :2])) and np.isfinite(lse[:, :, 2:]).all()


@pytest.mark.parametrize("variant", ["fa1", "fa2"])
def test_edge_shapes(variant):
    """L = 1, tiles larger than L, no keys at all, no queries at all."""
    for Lq, Lk, bq, bk in ((1, 1, 1, 1), (1, 9, 4, 4), (9, 1, 2, 5), (3, 5, 100, 100)):
        q, k, v = _qkv(Lq=Lq, Lk=Lk)
        _assert_equals_naive(q, k, v, bk, flash_attention(q, k, v, block_q=bq, block_k=bk, variant=variant))
    q, k, v = _qkv(Lq=3, Lk=0)
    out, lse = flash_attention(q, k, v, block_q=2, block_k=2, variant=variant)
    assert np.all(out == 0) and np.all(np.isneginf(lse)) and out.shape == (1, 2, 3, 2)
    q, k, v = _qkv(Lq=0, Lk=3)
    out, lse = flash_attention(q, k, v, block_q=2, block_k=2, variant=variant)
    assert out.shape == (1, 2, 0, 2) and lse.shape == (1, 2, 0)


def test_float32_inputs_are_computed_in_float64():
    q, k, v = _qkv()
    out, lse = flash_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), block_q=2, block_k=3)
    assert out.dtype == np.float64 and lse.dtype == np.float64
    q64, k64, v64 = (x.astype(np.float32).astype(np.float64) for x in (q, k, v))
    _assert_equals_naive(q64, k64, v64, 3, (out, lse))


def test_predicate_masks_and_gqa():
    q, k, v = _qkv(B=2, Hq=6, Hkv=2, Lq=9, Lk=9)
    for mask in (M.Strided(3), M.DSA(window=2, stride=3), M.PrefixLM(2) & ~M.Dilated(2, 2)):
        for variant in ("fa1", "fa2"):
            got = flash_attention(q, k, v, block_q=2, block_k=4, mask=mask, variant=variant)
            _assert_equals_naive(q, k, v, 4, got, mask=mask)


def test_backward_matches_attention_backward_with_every_option():
    """All options at once (GQA, top-left causal, window, softcap, bias, dropout), with the
    bound of properties.attention.check_backward_matches_reference."""
    rng = np.random.default_rng(3)
    q, k, v = _qkv(B=2, Hq=4, Hkv=2, Lq=6, Lk=7, seed=3)
    kw = dict(causal=True, align="top_left", window=(3, None), softcap=2.0,
              bias=rng.standard_normal((1, 4, 6, 7)), dropout_p=0.25, dropout_mask=rng.random((2, 4, 6, 7)) > 0.25)
    case = F.FlashCase(AttnCase(q, k, v, kw, seed=3), block_q=4, block_k=3, variant="fa2", boundaries=())
    F.check_flash_backward_matches_reference(F.REFIMPL_FLASH, case)
    F.check_flash_backward_finite_differences(F.REFIMPL_FLASH, case)


def test_fa1_is_the_seed_step_d_update():
    """The FA1 update of docs/notes.md#flash-tiling: O <- diag(l')^-1 (diag(l) e^(m - m') O + e^(S - m') V), on two
    key blocks by hand, equals variant="fa1" with the same key tiles."""
    q, k, v = _qkv(Hq=1, Lq=3, Lk=6, D=2, Dv=2, seed=5)
    S = (q[0, 0] @ k[0, 0].T) / np.sqrt(2)
    O, l, m = np.zeros((3, 2)), np.zeros(3), np.full(3, -np.inf)
    for blk in (slice(0, 3), slice(3, 6)):
        m_new = np.maximum(m, S[:, blk].max(axis=1))
        l_new = l * np.exp(m - m_new) + np.exp(S[:, blk] - m_new[:, None]).sum(axis=1)
        O = ((l * np.exp(m - m_new))[:, None] * O + np.exp(S[:, blk] - m_new[:, None]) @ v[0, 0, blk]) / l_new[:, None]
        m, l = m_new, l_new
    out, lse = flash_attention(q, k, v, block_q=3, block_k=3, variant="fa1")
    assert np.allclose(out[0, 0], O, rtol=0, atol=1e-15) and np.allclose(lse[0, 0], m + np.log(l), rtol=0, atol=1e-15)


def test_inputs_are_not_mutated_and_results_are_deterministic():
    q, k, v = _qkv()
    copies = [x.copy() for x in (q, k, v)]
    a = flash_attention(q, k, v, block_q=2, block_k=3, causal=True)
    b = flash_attention(q, k, v, block_q=2, block_k=3, causal=True)
    assert all(np.array_equal(x, c) for x, c in zip((q, k, v), copies))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ---------------------------------------------------------------------------
# scores at the ends of the float64 range (issue 9): never the fully masked answer


def _capped_reference(q, k, v, c):
    """Attention with softcap c and D = 1 (scale 1), by hand: each raw score is one product,
    +-inf where it overflows, and c tanh(+-inf / c) = +-c."""
    with np.errstate(over="ignore"):
        raw = q[..., :, None, 0] * k[..., None, :, 0]
    s = c * np.tanh(raw / c)
    P, lse = refimpl.softmax(s), refimpl.logsumexp(s)
    return P @ v, lse


_HUGE_Q = np.array([1e200, -1e200, 1e-300]).reshape(1, 1, 3, 1)
_HUGE_K = np.array([1e200, 1e200, -1e200, 0.0, 3e250]).reshape(1, 1, 5, 1)
_HUGE_V = np.random.default_rng(7).standard_normal((1, 1, 5, 2))


@pytest.mark.parametrize("impl", ["attention", "fa1", "fa2", "split_kv"])
def test_softcap_bounds_scores_whose_raw_value_overflows(impl):
    """Raw scores beyond float64 (1e400) capped to +-c: the exact capped answer, not (0, -inf)."""
    c = 5.0
    fns = {
        "attention": lambda **kw: refimpl.attention(_HUGE_Q, _HUGE_K, _HUGE_V, **kw),
        "fa1": lambda **kw: flash_attention(_HUGE_Q, _HUGE_K, _HUGE_V, block_q=2, block_k=2, variant="fa1", **kw),
        "fa2": lambda **kw: flash_attention(_HUGE_Q, _HUGE_K, _HUGE_V, block_q=2, block_k=2, **kw),
        "split_kv": lambda **kw: refimpl.split_kv_attention(_HUGE_Q, _HUGE_K, _HUGE_V, block_q=1, block_k=2,
                                                            boundaries=[1, 3], **kw),
    }
    out, lse = fns[impl](softcap=c)
    ref_out, ref_lse = _capped_reference(_HUGE_Q, _HUGE_K, _HUGE_V, c)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=1e-14)
    assert np.isfinite(lse).all()
    with pytest.raises(ValueError, match="q, k, scale"):  # without the cap the scores do not exist in float64
        fns[impl]()


def test_scores_representable_only_after_scaling_are_computed_exactly():
    """q, k of magnitude 2^500 with scale 2^-1000 / sqrt(D): the plain GEMM would overflow,
    the scores (and so the result) are those of the unscaled problem."""
    q, k, v = _qkv(Lq=6, Lk=9, D=4)
    ref_out, ref_lse = refimpl.attention(q, k, v)
    big = dict(scale=2.0**-1000 / 2.0)
    for out, lse in (refimpl.attention(q * 2.0**500, k * 2.0**500, v, **big),
                     flash_attention(q * 2.0**500, k * 2.0**500, v, block_q=2, block_k=4, **big)):
        np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-14)
        np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=1e-14)


def test_backward_with_large_finite_dout_is_finite():
    """dout 1.5e307, v 2: dO V^T overflows float64, the gradients do not (dq, dk are ~0 here:
    dP is constant along each row, so dS = P (dP - D) vanishes). Before the fix: NaN."""
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal((1, 2, 6, 64)), rng.standard_normal((1, 2, 6, 64))
    v = np.full((1, 2, 6, 64), 2.0)
    out, lse = refimpl.attention(q, k, v)
    dout = np.full(out.shape, 1.5e307)
    for grads in (refimpl.attention_backward(q, k, v, dout),
                  flash_attention_backward(q, k, v, out, lse, dout, block_q=2, block_k=4)):
        dq, dk, dv = grads
        assert all(np.isfinite(g).all() for g in grads)
        assert np.abs(dq).max() < 1e-14 * 1.5e307 * 64 * 2 and np.abs(dk).max() < 1e-14 * 1.5e307 * 64 * 2
        # dv = P^T dout: each column of P sums to at most Lq = 6 (per kv head: G = 2 query heads)
        assert np.abs(dv).max() <= 12 * 1.5e307 * (1 + 1e-13)
    small = refimpl.attention_backward(q, k, v, dout / 2.0**1000)
    scaled = refimpl.attention_backward(q, k, v, dout)
    for g_small, g in zip(small, scaled):  # linear in dout, exactly (powers of two)
        np.testing.assert_array_equal(np.ldexp(g_small, 1000), g)
    with pytest.raises(ValueError, match="dout, v"):  # a gradient beyond float64 is an error, not inf
        refimpl.attention_backward(q, k, rng.standard_normal(v.shape) * 1e300, dout)
