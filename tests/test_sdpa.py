"""refimpl.attention and friends: argument errors, edge cases, MHA with projections, ALiBi."""

import numpy as np
import pytest

import refimpl
from refimpl import masks as M

rng = np.random.default_rng(0)
q = rng.standard_normal((2, 4, 3, 5))
k = rng.standard_normal((2, 2, 6, 5))
v = rng.standard_normal((2, 2, 6, 7))


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(q=q[0]), ValueError, "q: expected shape"),
        (dict(k=rng.standard_normal((2, 3, 6, 5)), v=rng.standard_normal((2, 3, 6, 7))), ValueError, "multiple of Hkv"),
        (dict(k=rng.standard_normal((2, 2, 6, 4))), ValueError, "head dim"),
        (dict(v=rng.standard_normal((2, 2, 5, 7))), ValueError, r"\(Hkv, Lk\)"),
        (dict(q=q.astype(int)), TypeError, "floating"),
        (dict(q=np.where(q > 1, np.nan, q)), ValueError, "NaN"),
        (dict(window=(-1, 0)), ValueError, "None"),
        (dict(window=(1,)), ValueError, "left, right"),
        (dict(window=(1.0, 0)), TypeError, "int"),
        (dict(scale=0.0), ValueError, "scale"),
        (dict(scale=float("inf")), ValueError, "scale"),
        (dict(softcap=-1.0), ValueError, "softcap"),
        (dict(align="lower_right"), ValueError, "align"),
        (dict(causal=1), TypeError, "causal"),
        (dict(mask=np.ones((3, 6))), TypeError, "bool"),
        (dict(mask=np.ones((4, 6), bool)), ValueError, "broadcast"),
        (dict(bias=np.full((3, 6), np.inf)), ValueError, r"\+inf"),
        (dict(dropout_p=0.1), ValueError, "keep-mask"),
        (dict(dropout_p=1.0, dropout_mask=np.ones((3, 6), bool)), ValueError, "0 <= p < 1"),
        (dict(dropout_mask=np.ones((3, 6), bool)), ValueError, "dropout_p = 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, err, match):
    args = dict(q=q, k=k, v=v)
    args.update({n: kwargs.pop(n) for n in ("q", "k", "v") if n in kwargs})
    with pytest.raises(err, match=match):
        refimpl.attention(args["q"], args["k"], args["v"], **kwargs)


def test_inputs_are_not_mutated_and_outputs_are_float64():
    copies = [a.copy() for a in (q, k, v)]
    out, lse = refimpl.attention(q.astype(np.float32), k, v, causal=True, softcap=3.0)
    assert out.dtype == np.float64 and lse.dtype == np.float64
    for a, c in zip((q, k, v), copies):
        assert np.array_equal(a, c)


def test_fully_masked_rows_give_zero_and_minus_inf():
    out, lse = refimpl.attention(q, k[:, :, :2], v[:, :, :2], causal=True)  # Lq=3 > Lk=2: row 0 sees nothing
    assert np.all(out[:, :, 0] == 0) and np.all(np.isneginf(lse[:, :, 0]))
    assert np.all(np.isfinite(lse[:, :, 1:]))


def test_mqa_and_mha_are_gqa_special_cases():
    k1, v1 = k[:, :1], v[:, :1]
    out, _ = refimpl.attention(q, k1, v1)
    for h in range(4):
        o_h, _ = refimpl.attention(q[:, h : h + 1], k1, v1)
        assert np.allclose(out[:, h], o_h[:, 0], rtol=0, atol=1e-14)
    # head h reads kv head h // 2
    out, _ = refimpl.attention(q, k, v)
    o3, _ = refimpl.attention(q[:, 3:4], k[:, 1:2], v[:, 1:2])
    assert np.allclose(out[:, 3], o3[:, 0], rtol=0, atol=1e-14)


def test_mask_predicate_equals_its_materialised_array():
    m = M.DSA(window=2, stride=2) | M.GlobalTokens([4])
    a = refimpl.attention(q, k, v, mask=m)
    b = refimpl.attention(q, k, v, mask=m.materialize(3, 6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_window_wider_than_the_sequence_is_full_attention():
    a = refimpl.attention(q, k, v, window=(100, 100))
    b = refimpl.attention(q, k, v)
    assert np.array_equal(a[0], b[0])


def test_extreme_scores_do_not_overflow():
    big = refimpl.attention(q * 300, k * 300, v)
    assert np.isfinite(big[0]).all() and np.isfinite(big[1]).all() and np.abs(big[1]).max() > 1e4


def test_alibi_slopes_follow_press_et_al():
    assert np.allclose(refimpl.alibi_slopes(8), [2 ** (-(i + 1)) for i in range(8)])
    s12 = refimpl.alibi_slopes(12)
    assert np.allclose(s12[:8], refimpl.alibi_slopes(8)) and np.allclose(s12[8:], refimpl.alibi_slopes(16)[0::2][:4])
    bias = refimpl.alibi_bias([0.5, 1.0], 2, 4)  # -slope * |i + Lk - Lq - j|
    assert bias.shape == (1, 2, 2, 4)
    assert bias[0, 0].tolist() == [[-1.0, -0.5, 0.0, -0.5], [-1.5, -1.0, -0.5, 0.0]]


def test_multi_head_self_attention_matches_the_per_head_formula():
    """docs/notes.md#multi-head-attention: Q = XW_q, split heads, softmax(QK^T/sqrt(d_head) + M) V, concat, W_O."""
    r = np.random.default_rng(1)
    B, L, d_model, H = 2, 5, 12, 3
    d = d_model // H
    X = r.standard_normal((B, L, d_model))
    Wq, Wk, Wv, Wo = (r.standard_normal((d_model, d_model)) for _ in range(4))
    y = refimpl.multi_head_attention(X, X, Wq, Wk, Wv, Wo, num_heads=H, causal=True)
    heads = []
    for h in range(H):
        sl = slice(h * d, (h + 1) * d)
        Qh, Kh, Vh = X @ Wq[:, sl], X @ Wk[:, sl], X @ Wv[:, sl]
        S = Qh @ Kh.transpose(0, 2, 1) / np.sqrt(d) + np.where(np.tril(np.ones((L, L))) > 0, 0, -np.inf)
        P = np.exp(S - S.max(-1, keepdims=True))
        heads.append((P / P.sum(-1, keepdims=True)) @ Vh)
    expect = np.concatenate(heads, axis=-1) @ Wo
    assert np.allclose(y, expect, rtol=1e-12, atol=1e-12)


def test_cross_attention_and_gqa_projections():
    r = np.random.default_rng(2)
    Z, X = r.standard_normal((1, 2, 8)), r.standard_normal((1, 7, 8))
    Wq, Wo = r.standard_normal((8, 8)), r.standard_normal((8, 8))
    Wk, Wv = r.standard_normal((8, 4)), r.standard_normal((8, 4))  # 2 kv heads of dim 2 for 4 query heads
    y = refimpl.multi_head_attention(Z, X, Wq, Wk, Wv, Wo, num_heads=4, num_kv_heads=2)
    assert y.shape == (1, 2, 8)
    with pytest.raises(ValueError, match="W_k"):
        refimpl.multi_head_attention(Z, X, Wq, r.standard_normal((8, 6)), Wv, Wo, num_heads=4, num_kv_heads=2)
    with pytest.raises(ValueError, match="multiple"):
        refimpl.multi_head_attention(Z, X, Wq, Wk, Wv, Wo, num_heads=4, num_kv_heads=3)
