"""refimpl.testing: the public assertions accept correct kernels in every precision (fully
masked rows, windows, GQA, softcap included) and reject wrong ones with a message naming the
quantity, the index, the error and the bound; ``import refimpl`` does not import properties."""

import subprocess
import sys

import numpy as np
import pytest

import refimpl
from properties.tolerance import float32_naive_attention, lowp_naive_attention, round_to
from refimpl import testing as T


def _problem(seed, Lq=7, Lk=11, D=8, Hq=4, Hkv=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, Hq, Lq, D)), rng.standard_normal((1, Hkv, Lk, D)),
            rng.standard_normal((1, Hkv, Lk, D)), rng.standard_normal((1, Hq, Lq, D)))


OPTIONS = [dict(), dict(causal=True), dict(causal=True, align="top_left"), dict(window=(2, 0)),
           dict(causal=True, window=(1, 1), softcap=5.0), dict(window=(0, 0), align="top_left")]


@pytest.mark.parametrize("opts", OPTIONS, ids=str)
def test_correct_kernels_pass_in_every_precision(opts):
    q, k, v, _ = _problem(1)
    out, lse = refimpl.attention(q, k, v, **opts)
    T.assert_attention_close(out, q, k, v, lse=lse, **opts)
    vis = T._visible(q, k, None, opts.get("causal", False), opts.get("align", "bottom_right"), opts.get("window"), None)
    scale = 1 / np.sqrt(q.shape[-1])
    o32, l32 = float32_naive_attention(q, k, v, vis, scale, opts.get("softcap"))
    T.assert_attention_close(o32, q, k, v, lse=l32, precision="float32", **opts)
    for p in ("bfloat16", "float16"):
        qr, kr, vr = (round_to(a, p) for a in (q, k, v))
        olp, llp = lowp_naive_attention(qr, kr, vr, vis, scale, p, opts.get("softcap"))
        T.assert_attention_close(olp, q, k, v, lse=llp, precision=p, **opts)


def test_fully_masked_rows_follow_the_spec():
    q, k, v, _ = _problem(2, Lq=9, Lk=3)
    opts = dict(causal=True, align="top_left", window=(0, 0))  # rows 3.. see no key
    out, lse = refimpl.attention(q, k, v, **opts)
    assert np.isneginf(lse).any()
    T.assert_attention_close(out, q, k, v, lse=lse, **opts)
    bad = lse.copy()
    bad[np.isneginf(bad)] = np.inf  # flash-attn 2's +inf convention: not the spec's
    with pytest.raises(AssertionError, match="-inf pattern"):
        T.assert_attention_close(out, q, k, v, lse=bad, **opts)


def test_wrong_forward_is_rejected_with_where_and_how_much():
    q, k, v, _ = _problem(3)
    out, lse = refimpl.attention(q, k, v, causal=True, align="top_left")  # asked: bottom_right
    with pytest.raises(AssertionError, match=r"out: max \|error\| .* at \[0, \d, \d, \d\] exceeds bound"):
        T.assert_attention_close(out.astype(np.float32), q, k, v, causal=True, precision="float32")
    out, lse = refimpl.attention(q, k, v, scale=1.0)  # missing 1/sqrt(D)
    with pytest.raises(AssertionError, match="exceeds bound"):
        T.assert_attention_close(out, q, k, v, lse=lse, precision="bfloat16")


@pytest.mark.parametrize("opts", OPTIONS[:5], ids=str)
def test_gradients(opts):
    q, k, v, dout = _problem(4)
    grads = refimpl.attention_backward(q, k, v, dout, **opts)
    for p in T.PRECISIONS:
        T.assert_attention_grads_close(*grads, q, k, v, dout, precision=p, **opts)
    vis = T._visible(q, k, None, opts.get("causal", False), opts.get("align", "bottom_right"), opts.get("window"), None)
    for p in ("float32", "bfloat16"):
        naive = T._naive_attention_grads(*(round_to(a, p) for a in (q, k, v, dout)), vis, 1 / np.sqrt(8),
                                         opts.get("softcap"), None, p)
        T.assert_attention_grads_close(*naive, q, k, v, dout, precision=p, **opts)
    dq, dk, dv = grads
    with pytest.raises(AssertionError, match="dk: max"):  # dK of one query head per kv head only
        G = 2
        T.assert_attention_grads_close(dq, dk / G, dv, q, k, v, dout, precision="bfloat16", **opts)


def test_gradients_against_torch_autograd():
    torch = pytest.importorskip("torch")
    q, k, v, dout = _problem(5, Lq=13, Lk=13, D=16)
    for p, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        tq, tk, tv = (torch.tensor(round_to(a, p), dtype=dt, requires_grad=True) for a in (q, k, v))
        o = torch.nn.functional.scaled_dot_product_attention(tq, tk.repeat_interleave(2, 1), tv.repeat_interleave(2, 1),
                                                             is_causal=True)
        o.backward(torch.tensor(round_to(dout, p), dtype=dt))
        T.assert_attention_close(o, q, k, v, causal=True, precision=p)
        T.assert_attention_grads_close(tq.grad, tk.grad, tv.grad, q, k, v, dout, causal=True, precision=p)


def test_softmax_and_logsumexp():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 40)) * 4
    x[1] = -np.inf  # a fully masked row: zeros, lse -inf
    T.assert_softmax_close(refimpl.softmax(x), x)
    T.assert_logsumexp_close(refimpl.logsumexp(x), x)
    T.assert_softmax_close(refimpl.softmax(x, axis=0), x, axis=0)
    for p in ("float32", "bfloat16", "float16"):
        p_naive, lse_naive = T._naive_softmax(round_to(x, p), p)
        T.assert_softmax_close(p_naive, x, precision=p)
        T.assert_logsumexp_close(lse_naive, x, precision=p)
    with pytest.raises(AssertionError, match="softmax: max"):
        T.assert_softmax_close(refimpl.softmax(x * 1.2), x, precision="bfloat16")  # no 1/temperature


def test_bad_arguments():
    q, k, v, _ = _problem(7)
    out, _ = refimpl.attention(q, k, v)
    with pytest.raises(ValueError, match="precision"):
        T.assert_attention_close(out, q, k, v, precision="fp8")
    with pytest.raises(AssertionError, match="shape"):
        T.assert_attention_close(out[..., :3], q, k, v)
    with pytest.raises(TypeError, match="out"):
        T.assert_attention_close(None, q, k, v)


def test_inputs_not_mutated():
    q, k, v, dout = _problem(8)
    copies = [a.copy() for a in (q, k, v, dout)]
    T.assert_attention_grads_close(*refimpl.attention_backward(q, k, v, dout), q, k, v, dout, precision="bfloat16")
    assert all(np.array_equal(a, b) for a, b in zip((q, k, v, dout), copies))


def test_import_refimpl_does_not_import_properties():
    code = "import sys, refimpl, refimpl.testing; assert 'properties' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_norms_rope_cross_entropy():
    from refimpl import norms

    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((5, 16)) * 3 + 2, rng.standard_normal(16), rng.standard_normal(16)
    T.assert_layer_norm_close(norms.layer_norm(x, w, b, eps=1e-5), x, w, b, eps=1e-5)
    T.assert_rms_norm_close(norms.rms_norm(x, w, eps=1e-6, weight_offset=1.0), x, w, eps=1e-6, weight_offset=1.0)
    with pytest.raises(AssertionError, match="rms_norm: max"):  # Gemma's 1 + w read as w
        T.assert_rms_norm_close(norms.rms_norm(x, w, eps=1e-6), x, w, eps=1e-6, weight_offset=1.0, precision="bfloat16")
    with pytest.raises(AssertionError, match="layer_norm: max"):  # unbiased variance
        var = x.var(axis=-1, ddof=1, keepdims=True)
        T.assert_layer_norm_close((x - x.mean(-1, keepdims=True)) / np.sqrt(var + 1e-5) * w + b, x, w, b,
                                  precision="float32")
    q = rng.standard_normal((1, 2, 6, 8))
    pos = np.arange(6) * 1000
    T.assert_rope_close(refimpl.apply_rope(q, pos, layout="interleaved"), q, pos, layout="interleaved")
    with pytest.raises(AssertionError, match="rope: max"):  # the other layout
        T.assert_rope_close(refimpl.apply_rope(q, pos), q, pos, layout="interleaved", precision="bfloat16")
    z, t = rng.standard_normal((6, 10)) * 4, np.array([1, 2, -100, 9, 0, 3])
    T.assert_cross_entropy_close(refimpl.losses.cross_entropy(z, t), z, t)
    with pytest.raises(AssertionError, match="cross_entropy: max"):  # ignored rows counted in the mean
        T.assert_cross_entropy_close(refimpl.losses.cross_entropy(z, t) * 5 / 6, z, t, precision="bfloat16")


def test_norms_and_cross_entropy_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x, w, b = rng.standard_normal((4, 64)) * 2 + 1, rng.standard_normal(64), rng.standard_normal(64)
    z, t = rng.standard_normal((8, 50)) * 3, rng.integers(0, 50, 8)
    for p, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        tx, tw, tb = (torch.tensor(round_to(a, p), dtype=dt) for a in (x, w, b))
        T.assert_layer_norm_close(torch.nn.functional.layer_norm(tx, (64,), tw, tb, eps=1e-5), x, w, b, precision=p)
        T.assert_rms_norm_close(torch.nn.functional.rms_norm(tx, (64,), tw, eps=1e-6), x, w, eps=1e-6, precision=p)
        got = torch.nn.functional.cross_entropy(torch.tensor(round_to(z, p), dtype=dt), torch.tensor(t))
        T.assert_cross_entropy_close(got, z, t, precision=p)
