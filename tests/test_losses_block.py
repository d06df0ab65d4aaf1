"""refimpl.losses and refimpl.block: torch's cross_entropy, the SFT and z/aux terms, router
collapse, the block arrangements, DropPath, the encoder-decoder data flow, and the
parameter / MAC counts wired to refimpl.accounting."""

import numpy as np
import pytest

from refimpl import accounting as A
from refimpl import block as Bk
from refimpl import losses as L
from refimpl import moe

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed: comparison with torch.nn.functional.cross_entropy")
RNG = np.random.default_rng(7)


@needs_torch
def test_cross_entropy_and_label_shift_match_torch():
    B, Lq, V = 3, 6, 11
    z = RNG.standard_normal((B, Lq, V)) * 4
    tok = RNG.integers(0, V, (B, Lq))
    tok[1, 2:] = -100
    zt = torch.tensor(z, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(zt[:, :-1].reshape(-1, V), torch.tensor(tok)[:, 1:].reshape(-1))
    loss.backward()
    assert abs(loss.item() - L.causal_lm_loss(z, tok)) <= 64 * (V + B * Lq) * 2.0**-53 * 5
    assert np.abs(zt.grad.numpy() - L.causal_lm_loss_grad(z, tok)).max() <= 64 * V * 2.0**-53
    flat, t = z.reshape(-1, V), tok.reshape(-1)
    for red in ("sum", "none"):
        ref = torch.nn.functional.cross_entropy(torch.tensor(flat), torch.tensor(t), reduction=red).numpy()
        np.testing.assert_allclose(L.cross_entropy(flat, t, reduction=red), ref, atol=1e-12)
    # every row ignored: torch gives NaN (0/0); the spec gives 0.0 (a stated difference)
    assert np.isnan(torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.tensor([-100, -100])).item())
    assert L.cross_entropy(np.zeros((2, 3)), np.array([-100, -100])) == 0.0


def test_sft_normalisations_and_sign():
    z = RNG.standard_normal((2, 6, 5))
    tok = RNG.integers(0, 5, (2, 6))
    resp = np.zeros((2, 6), bool)
    resp[0, 2:] = True
    resp[1, 5:] = True  # one response token in the second sequence
    per_token = L.sft_loss(z, tok, resp)
    per_seq = L.sft_loss(z, tok, resp, normalize="sequences")
    rows = [L.cross_entropy(z[b, :-1], np.where(resp[b], tok[b], -100)[1:], reduction="none") for b in range(2)]
    assert per_token == pytest.approx((rows[0].sum() + rows[1].sum()) / 5, rel=1e-13)
    assert per_seq == pytest.approx((rows[0].sum() / 4 + rows[1].sum()) / 2, rel=1e-13)
    assert per_token > 0 and per_seq > 0
    tok2 = tok.copy()
    tok2[0, :2] = (tok[0, :2] + 1) % 5  # prompt targets change: the loss does not
    assert L.sft_loss(z, tok2, resp) == per_token


def test_training_loss_adds_terms_with_their_coefficients():
    z = RNG.standard_normal((2, 5, 7))
    tok = RNG.integers(0, 7, (2, 5))
    router = [RNG.standard_normal((10, 4)) for _ in range(2)]
    routings = [moe.route(r, 2) for r in router]
    t = L.training_loss(z, tok, routings=routings, router_logits=router, z_coef=1e-4, aux_coef=0.01, router_z_coef=1e-3)
    assert t.lm == L.causal_lm_loss(z, tok)
    assert t.z == pytest.approx(moe.z_loss(z[:, :-1].reshape(-1, 7)), rel=1e-14)  # positions with a next-token target
    assert t.balance == pytest.approx(sum(moe.balance_loss(r) for r in routings), rel=1e-15)
    assert t.total == pytest.approx(t.lm + 1e-4 * t.z + 0.01 * t.balance + 1e-3 * t.router_z, rel=1e-15)


def test_router_collapses_without_balance_loss_and_not_with_it():
    bare = L.router_collapse_simulation(aux_coef=0.0)
    balanced = L.router_collapse_simulation(aux_coef=1.0)
    assert bare.experts_used() <= 3 and bare.final_loads().max() > 0.35
    assert balanced.experts_used() == 8 and balanced.final_loads().max() < 0.25


# ----------------------------------------------------------------------------
# blocks


def _blocks(n=2, **kw):
    base = dict(d_model=8, num_heads=2, d_ff=12)
    base.update(kw)
    return [Bk.init_block(i, **base) for i in range(n)]


@pytest.mark.parametrize("kw", [dict(ffn_kind="mlp", norm="layernorm", norm_bias=True),
                                dict(ffn_kind="glu", activation="silu", num_kv_heads=1)])
def test_block_counts_match_accounting(kw):
    """Parameters counted from the arrays and MACs tallied during a forward pass equal
    refimpl.accounting's per-layer figures (bidirectional attention: every pair counted)."""
    blk = _blocks(1, **kw)[0]
    cfg = Bk.block_config(blk)
    assert blk.num_params() == A.parameter_count(cfg).per_layer
    B, Lq = 2, 5
    c = Bk.MacCounter()
    Bk.block(RNG.standard_normal((B, Lq, 8)), blk, counter=c)
    assert c.total == B * Lq * A.compute_per_token(cfg, context_length=Lq).per_layer


def test_arrangements_and_drop_path():
    x = RNG.standard_normal((3, 4, 8))
    blk = _blocks(1)[0]
    keep = np.array([True, False, True])
    rand = Bk.Stochastic(drop_path_p=0.25, keep_attn=keep, keep_ffn=np.array([False, False, True]))
    y = Bk.block(x, blk, rand=rand)
    # sample 1: both branches dropped -> identity; sample 0: only the FFN branch dropped
    np.testing.assert_array_equal(y[1], x[1])
    attn_only = x + Bk.multi_head_attention(blk.norm1(x), blk.norm1(x), blk.attn.W_q, blk.attn.W_k, blk.attn.W_v,
                                            blk.attn.W_o, num_heads=2) / 0.75
    np.testing.assert_allclose(y[0], attn_only[0], atol=1e-13)
    def mha(h):
        return Bk.multi_head_attention(h, h, blk.attn.W_q, blk.attn.W_k, blk.attn.W_v, blk.attn.W_o, num_heads=2)

    h = blk.norm1(x + mha(x))  # post-norm: LN(x + Sublayer(x)) (docs/notes.md#transformer-block)
    post = blk.norm2(h + Bk._ffn.ffn(h, blk.ffn, activation=blk.activation))
    np.testing.assert_allclose(Bk.block(x, blk, arrangement="post_norm"), post, atol=1e-13)
    assert not np.allclose(post, Bk.block(x, blk))
    s = Bk.block(x, blk, arrangement="parallel", parallel_scale=2**-0.5) - x
    s1 = Bk.block(x, blk, arrangement="parallel") - x
    np.testing.assert_allclose(s, s1 * 2**-0.5, atol=1e-13)


def test_seq2seq_data_flow():
    """The decoder reads [BOS, y_1, ..., y_{L-1}] causally and the encoder output through cross-attention."""
    enc, dec = _blocks(2), _blocks(2, cross=True)
    E = RNG.standard_normal((13, 8))
    src, tgt = RNG.integers(1, 13, (2, 5)), RNG.integers(1, 13, (2, 4))
    base = Bk.seq2seq_logits(src, tgt, E, enc, dec, bos=0)
    assert base.shape == (2, 4, 13)
    t2 = tgt.copy()
    t2[:, 2] = (t2[:, 2] + 1) % 13  # y_3 (index 2) is read only at positions 3..
    d = np.abs(Bk.seq2seq_logits(src, t2, E, enc, dec, bos=0) - base).max(axis=(0, 2))
    assert (d[:3] == 0).all() and d[3] > 0
    s2 = src.copy()
    s2[:, 0] = (s2[:, 0] + 1) % 13  # every target position sees the whole source
    assert (np.abs(Bk.seq2seq_logits(s2, tgt, E, enc, dec, bos=0) - base).max(axis=(0, 2)) > 0).all()
    np.testing.assert_array_equal(L.shift_right(np.array([[5, 6, 7]]), 1), [[1, 5, 6]])


def test_block_argument_checks():
    blk = _blocks(1)[0]
    with pytest.raises(ValueError, match="memory"):
        Bk.block(np.ones((1, 2, 8)), blk, memory=np.ones((1, 2, 8)))
    with pytest.raises(ValueError, match="arrangement"):
        Bk.block(np.ones((1, 2, 8)), blk, arrangement="sandwich")
    with pytest.raises(TypeError, match="keep"):
        Bk.drop_path(np.ones((2, 3)), np.array([1, 0]), 0.5)
