"""refimpl.latent (Perceiver-style latent block): an independent einsum oracle, the symmetries, the
score count; each check rejects a wrong implementation (meta-tests). docs/errata.md#e26: not refimpl.mla."""

import dataclasses
import types

import numpy as np
import pytest
from scipy.special import erf, softmax

from refimpl import latent as LT

H = 2


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _mha(xq, xkv, Wq, Wk, Wv, Wo):
    B, M, d = xq.shape
    hd = Wq.shape[1] // H
    q = (xq @ Wq).reshape(B, M, H, hd)
    k = (xkv @ Wk).reshape(B, -1, H, hd)
    v = (xkv @ Wv).reshape(B, -1, H, hd)
    p = softmax(np.einsum("bmhe,blhe->bhml", q, k) / np.sqrt(hd), axis=-1)
    return np.einsum("bhml,blhe->bmhe", p, v).reshape(B, M, -1) @ Wo


def oracle(x, w):
    z = np.broadcast_to(w.latents, (x.shape[0],) + w.latents.shape)
    z = z + _mha(_ln(z, *w.ln_q), _ln(x, *w.ln_kv), *w.cross)
    z = z + _mha(_ln(z, *w.ln_s), _ln(z, *w.ln_s), *w.self_attn)
    W1, b1, W2, b2 = w.mlp
    h = _ln(z, *w.ln_f) @ W1 + b1
    return z + 0.5 * h * (1 + erf(h / np.sqrt(2))) @ W2 + b2


W = LT.init_latent_block(1, d_model=6, num_latents=3, num_heads=H, d_ff=8)
X = np.random.default_rng(2).standard_normal((2, 7, 6))


def check_oracle(impl):
    np.testing.assert_allclose(impl.latent_block(X, W, num_heads=H), oracle(X, W), rtol=1e-12, atol=1e-12)


def check_input_order_free(impl):
    perm = np.random.default_rng(3).permutation(X.shape[1])
    np.testing.assert_allclose(impl.latent_block(X[:, perm], W, num_heads=H), impl.latent_block(X, W, num_heads=H),
                               rtol=1e-12, atol=1e-12)


def check_latent_equivariance(impl):
    perm = np.array([2, 0, 1])
    Wp = dataclasses.replace(W, latents=W.latents[perm])
    np.testing.assert_allclose(impl.latent_block(X, Wp, num_heads=H), impl.latent_block(X, W, num_heads=H)[:, perm],
                               rtol=1e-12, atol=1e-12)


CHECKS = [check_oracle, check_input_order_free, check_latent_equivariance]


def _causal_cross(x, w, *, num_heads):
    """Latent m reads input tokens 0..m only (a causal mask where none belongs)."""
    x = np.asarray(x)
    out = [LT.latent_block(x[:, : min(m + 1, x.shape[1])], w, num_heads=num_heads)[:, m] for m in range(len(w.latents))]
    return np.stack(out, axis=1)


def _no_self_attention(x, w, *, num_heads):
    zero = tuple(np.zeros_like(a) for a in w.self_attn)
    return LT.latent_block(x, dataclasses.replace(w, self_attn=zero), num_heads=num_heads)


def _input_positions(x, w, *, num_heads):
    x = np.asarray(x)
    pos = np.sin(np.arange(x.shape[1])[:, None] + np.arange(x.shape[2])[None, :])  # varies across features too
    return LT.latent_block(x + pos, w, num_heads=num_heads)


def _latents_fixed_order(x, w, *, num_heads):
    return LT.latent_block(x, dataclasses.replace(w, latents=np.sort(w.latents, axis=0)), num_heads=num_heads)


WRONG = {
    "causal_cross_attention": (_causal_cross, check_oracle),
    "self_attention_skipped": (_no_self_attention, check_oracle),
    "positions_added_inside": (_input_positions, check_input_order_free),
    "latents_reordered": (_latents_fixed_order, check_latent_equivariance),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(LT)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    fn, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(types.SimpleNamespace(latent_block=fn))


def test_output_size_and_scores():
    assert LT.latent_block(np.ones((1, 50, 6)), W, num_heads=H).shape == (1, 3, 6)  # M rows whatever L
    assert LT.latent_block_scores(1, 512, 224 * 224) == 512 * 50_176 + 512**2 == 25_952_256
    with pytest.raises(TypeError, match="weights"):
        LT.latent_block(X, (1, 2), num_heads=H)
    with pytest.raises(ValueError, match="num_heads"):
        LT.init_latent_block(0, d_model=6, num_latents=2, num_heads=4)
