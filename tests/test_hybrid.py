"""Item 2 of issue 24 (docs/hybrid.md): the Mamba block, per-layer masks in stacks and receptive fields, hybrid
stacks, learnable per-branch scales, a pre-norm block with RoPE. Each check rejects the wrong implementations kept
beside it (meta-tests); the libraries' own code runs in tests/test_seeds_libraries.py."""

import dataclasses
import types

import numpy as np
import pytest
from scipy.special import expit

import refimpl
from refimpl import block as BL
from refimpl import ffn as FF
from refimpl import hybrid as HY
from refimpl import mamba_block as MB
from refimpl import masks as M
from refimpl.mha import multi_head_attention
from refimpl.receptive_field import receptive_field, receptive_interval
from refimpl.rope import apply_rope

RNG = np.random.default_rng(47)


def _silu(x):
    return x * expit(x)


# --------------------------------------------------------------------------- the Mamba block

def _mamba_loop(x, w, *, bias_outside=False, swap_halves=False, centred_conv=False, conv_no_silu=False):
    """The module doc token by token, channel by channel (explicit state, explicit convolution window)."""
    di, N, R, W = w.d_inner, w.d_state, w.dt_rank, w.conv_weight.shape[1]
    xz = x @ w.in_proj
    u, z = (xz[..., di:], xz[..., :di]) if swap_halves else (xz[..., :di], xz[..., di:])
    Bn, L, _ = x.shape
    uc = np.zeros_like(u)
    for t in range(L):
        for i in range(W):
            s = t - (W - 1) + i + ((W - 1) // 2 if centred_conv else 0)
            if 0 <= s < L:
                uc[:, t] += w.conv_weight[:, i] * u[:, s]
    uc = uc + w.conv_bias
    uc = uc if conv_no_silu else _silu(uc)
    out = np.empty((Bn, L, w.d_model))
    A = -np.exp(w.A_log)
    for b in range(Bn):
        state = np.zeros((di, N))
        for t in range(L):
            xd = uc[b, t] @ w.x_proj
            r, Bt, Ct = xd[:R], xd[R:R + N], xd[R + N:]
            pre = r @ w.dt_proj
            dt = np.logaddexp(0, pre) + w.dt_bias if bias_outside else np.logaddexp(0, pre + w.dt_bias)
            state = np.exp(dt[:, None] * A) * state + (dt * uc[b, t])[:, None] * Bt[None, :]
            y = state @ Ct + w.D * uc[b, t]
            out[b, t] = (y * _silu(z[b, t])) @ w.out_proj
    return out


def check_mamba(impl):
    w = MB.init_mamba(5, d_model=6, d_state=3, d_conv=3)
    x = RNG.standard_normal((2, 7, 6))
    np.testing.assert_allclose(impl.mamba_mixer(x, w), _mamba_loop(x, w), rtol=1e-11, atol=1e-12)
    assert w.num_params() == MB.mamba_params(6, d_state=3, d_conv=3) == (
        2 * 6 * 12 + 12 * 3 + 12 + 12 * (1 + 6) + 1 * 12 + 12 + 12 * 3 + 12 + 12 * 6)


MAMBA_WRONG = {n: (lambda kw: lambda x, w: _mamba_loop(x, w, **kw))({n: True})
               for n in ("bias_outside", "swap_halves", "centred_conv", "conv_no_silu")}


def test_mamba_weights_validate_and_copy():
    w = MB.init_mamba(0, d_model=4, d_state=2)
    A = w.A_log.copy()
    w2 = dataclasses.replace(w, A_log=A)
    A[0, 0] = 99.0
    assert w2.A_log[0, 0] != 99.0  # a copy, never the caller's array
    with pytest.raises(ValueError, match="^dt_proj: expected"):
        dataclasses.replace(w, dt_proj=np.ones((2, 8)))
    with pytest.raises(ValueError, match="^x: expected"):
        MB.mamba_mixer(np.ones((1, 3, 5)), w)


# --------------------------------------------------------------------------- per-layer masks, receptive fields

def _dependence(f, x, i):
    """bool (L,): does output i change when input j is perturbed (the measured receptive field)."""
    base = f(x)[0, i]
    out = []
    for j in range(x.shape[1]):
        y = x.copy()
        y[0, j] += 1.0
        out.append(not np.allclose(f(y)[0, i], base, rtol=0, atol=1e-13))
    return np.array(out)


def check_stack_masks(impl):
    """A stack with one mask per layer depends on exactly the inputs receptive_field(per-layer masks) names."""
    L, d = 12, 4
    blocks = [BL.init_block(s, d_model=d, num_heads=1, d_ff=4) for s in range(3)]
    doc = M.And(M.Document(np.repeat([0, 1], 6)), M.Causal())  # two packed documents of 6 tokens
    masks = [doc, M.SlidingWindow(1, 0), M.Strided(4)]  # Document(layer 1) then window, not commuting
    x = RNG.standard_normal((1, L, d))
    f = lambda y: impl.stack(y, blocks, causal=True, masks=masks)  # noqa: E731
    R = impl.receptive_field(masks, L)
    for i in (11, 7, 6):
        np.testing.assert_array_equal(_dependence(f, x, i), R[i])
    assert impl.receptive_field([M.SlidingWindow(2, 0), M.Causal(), M.SlidingWindow(2, 0)], L)[11].all()
    assert receptive_interval([M.SlidingWindow(2, 0)] * 3, 11, n=L) == (5, 11)  # the closed form i - sum w


STACK_WRONG = {
    "first_mask_everywhere": dict(stack=lambda x, blocks, causal, masks: BL.stack(x, blocks, causal=causal,
                                                                              masks=[masks[0]] * len(masks))),
    "masks_ignored": dict(stack=lambda x, blocks, causal, masks: BL.stack(x, blocks, causal=causal)),
    "receptive_product_reversed": dict(receptive_field=lambda masks, n: receptive_field(list(masks)[::-1], n)),
}


def test_hybrid_stack_composes_its_layers():
    d = 4
    b = BL.init_block(1, d_model=d, num_heads=2, d_ff=8)
    ml = HY.MambaLayer(BL.Norm(1 + 0.1 * RNG.standard_normal(d)), MB.init_mamba(2, d_model=d, d_state=2))
    la = HY.LinearAttentionLayer(BL.Norm(np.ones(d)), BL.init_block(3, d_model=d, num_heads=2, d_ff=4).attn, "squared_relu")
    x = RNG.standard_normal((2, 6, d))
    win = M.SlidingWindow(1, 0)
    got = HY.hybrid_stack(x, [b, ml, la, b], masks=[win, None, None, None])
    h = BL.block(x, b, causal=True, mask=win)
    h = h + MB.mamba_mixer(ml.norm(h), ml.mixer)
    hn = la.norm(h)
    q, k, v = ((hn @ W).reshape(2, 6, 2, 2).transpose(0, 2, 1, 3) for W in (la.attn.W_q, la.attn.W_k, la.attn.W_v))
    o = refimpl.mixers.linear_attention_fn(q, k, v, feature_map="squared_relu")
    h = h + o.transpose(0, 2, 1, 3).reshape(2, 6, 4) @ la.attn.W_o
    np.testing.assert_allclose(got, BL.block(h, b, causal=True), rtol=1e-12, atol=1e-12)
    f = lambda y: HY.hybrid_stack(y, [b, ml, b], masks=[win, None, win])  # noqa: E731
    assert _dependence(f, x[:1], 5).all()  # the SSM layer carries the whole prefix
    with pytest.raises(ValueError, match=r"^masks\[1\]: expected None"):
        HY.hybrid_stack(x, [b, ml], masks=[None, win])
    with pytest.raises(TypeError, match=r"^layers\[0\]"):
        HY.hybrid_stack(x, [ml.mixer])


# --------------------------------------------------------------------------- per-branch scales, RoPE

D_MODEL = 8


def _branches(x, blk, rope=False):
    a = blk.attn
    kw = dict(rope=a.rope) if rope else {}
    attn = lambda h: multi_head_attention(h, h, a.W_q, a.W_k, a.W_v, a.W_o, num_heads=a.num_heads,  # noqa: E731
                                          num_kv_heads=a.num_kv_heads, causal=True, **kw)
    ffn = lambda h: FF.ffn(h, blk.ffn, activation=blk.activation)  # noqa: E731
    return attn, ffn


def check_branch_scales(impl):
    blk = BL.init_block(7, d_model=D_MODEL, num_heads=2, d_ff=16)
    aa, af = 1e-2 * np.arange(1, D_MODEL + 1), np.array(0.3)
    sb = dataclasses.replace(blk, attn_scale=aa, ffn_scale=af)
    x = RNG.standard_normal((2, 5, D_MODEL))
    attn, ffn = _branches(x, blk)
    h = x + aa * attn(blk.norm1(x))
    np.testing.assert_allclose(impl.block(x, sb, causal=True), h + af * ffn(blk.norm2(h)), rtol=1e-12, atol=1e-13)
    hp = blk.norm1(x)
    want = x + 0.5 * (aa * attn(hp) + af * ffn(hp))
    np.testing.assert_allclose(impl.block(x, sb, arrangement="parallel", causal=True, parallel_scale=0.5), want,
                               rtol=1e-12, atol=1e-13)
    r2 = np.array(2 ** -0.5)  # docs/notes.md#transformer-block's 1/sqrt(2) as two learnable scales
    np.testing.assert_allclose(
        impl.block(x, dataclasses.replace(blk, attn_scale=r2, ffn_scale=r2), arrangement="parallel", causal=True),
        BL.block(x, blk, arrangement="parallel", causal=True, parallel_scale=2 ** -0.5), rtol=1e-13, atol=1e-14)
    assert sb.num_params() == blk.num_params() + D_MODEL + 1


def _scales_swapped(x, blk, **kw):
    return BL.block(x, dataclasses.replace(blk, attn_scale=blk.ffn_scale, ffn_scale=blk.attn_scale), **kw)


def _scale_on_residual(x, blk, **kw):
    plain = dataclasses.replace(blk, attn_scale=None, ffn_scale=None)
    if kw.get("arrangement") == "parallel":
        return BL.block(x, plain, **kw)
    a, f = blk.attn_scale, blk.ffn_scale
    attn, ffn = _branches(x, plain)
    h = a * (x + attn(plain.norm1(x))) if a is not None else x + attn(plain.norm1(x))
    return f * (h + ffn(plain.norm2(h))) if f is not None else h + ffn(plain.norm2(h))


def check_rope_block(impl):
    """Pre-norm block with RoPE: q and k of every head rotated at positions 0..L-1 (half layout) before the scores."""
    blk = BL.init_block(9, d_model=D_MODEL, num_heads=2, d_ff=16, num_kv_heads=1, ffn_kind="glu", activation="silu")
    rb = dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope={"layout": "half", "base": 10000.0}))
    x = RNG.standard_normal((2, 6, D_MODEL))
    a = blk.attn
    hn = blk.norm1(x)
    heads = lambda W, H: (hn @ W).reshape(2, 6, H, -1).transpose(0, 2, 1, 3)  # noqa: E731
    pos = np.arange(6)
    q, k, v = apply_rope(heads(a.W_q, 2), pos), apply_rope(heads(a.W_k, 1), pos), heads(a.W_v, 1)
    o, _ = refimpl.attention(q, k, v, causal=True)
    h = x + o.transpose(0, 2, 1, 3).reshape(2, 6, -1) @ a.W_o
    want = h + FF.ffn(blk.norm2(h), blk.ffn, activation="silu")
    np.testing.assert_allclose(impl.block(x, rb, causal=True), want, rtol=1e-12, atol=1e-13)
    assert not np.allclose(want, BL.block(x, blk, causal=True))  # the rotation is visible at this size


def _rope_interleaved(x, blk, **kw):
    a = dict(blk.attn.rope or {}, layout="interleaved")
    return BL.block(x, dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope=a)), **kw)


def _rope_dropped(x, blk, **kw):
    return BL.block(x, dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope=None)), **kw)


# --------------------------------------------------------------------------- meta-tests

SPEC = types.SimpleNamespace(mamba_mixer=MB.mamba_mixer, stack=BL.stack, receptive_field=receptive_field, block=BL.block)
CHECKS = [check_mamba, check_stack_masks, check_branch_scales, check_rope_block]
WRONG = {
    **{f"mamba_{n}": (dict(mamba_mixer=f), check_mamba) for n, f in MAMBA_WRONG.items()},
    **{f"stack_{n}": (o, check_stack_masks) for n, o in STACK_WRONG.items()},
    "scales_swapped": (dict(block=_scales_swapped), check_branch_scales),
    "scale_on_residual": (dict(block=_scale_on_residual), check_branch_scales),
    "rope_interleaved": (dict(block=_rope_interleaved), check_rope_block),
    "rope_dropped": (dict(block=_rope_dropped), check_rope_block),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(SPEC)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    overrides, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(types.SimpleNamespace(**{**vars(SPEC), **overrides}))
