"""refimpl.norms and refimpl.ffn: against torch on CPU (skipped with a reason when torch is
absent), against central finite differences, conventions and argument checks."""

import numpy as np
import pytest

from refimpl import ffn as Fn
from refimpl import norms as N

try:
    import torch
except ImportError:  # the comparisons with torch are skipped, with the reason, when it is absent
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed: comparison with torch's CPU implementation")


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


RNG = np.random.default_rng(12)
X = RNG.standard_normal((3, 4, 8)) * 2 + 0.5
W, B, DY = RNG.standard_normal(8), RNG.standard_normal(8), RNG.standard_normal((3, 4, 8))
# float64 on both sides: both sum the same few terms; 64 (d + 4) u bounds the difference
TOL = 64 * 12 * 2.0**-53 * 10


def _torch_grads(fn, *arrays):
    ts = [_t(a, True) for a in arrays]
    y = fn(*ts)
    y.backward(_t(DY if y.shape == DY.shape else np.ones(y.shape)))
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


@needs_torch
def test_layer_norm_matches_torch():
    y, (gx, gw, gb) = _torch_grads(lambda x, w, b: torch.nn.functional.layer_norm(x, (8,), w, b, 1e-5), X, W, B)
    np.testing.assert_allclose(N.layer_norm(X, W, B), y, atol=TOL, rtol=0)
    for mine, ref in zip(N.layer_norm_backward(X, DY, W, B), (gx, gw, gb)):
        np.testing.assert_allclose(mine, ref, atol=TOL * 10, rtol=0)


@needs_torch
@pytest.mark.parametrize("preset", ["hf_llama", "hf_t5", "hf_gemma", "zhang_sennrich"])
def test_rms_norm_presets_match_their_source_formula_in_torch(preset):
    c = N.RMSNORM_PRESETS[preset]

    def ref(x, w):  # the sources' formulas, written in torch (float64: the casts are identities)
        ms = x.pow(2).mean(-1, keepdim=True)
        xn = x * torch.rsqrt(ms + c.eps) if c.eps_placement == "inside_sqrt" else x / (ms.sqrt() + c.eps)
        return xn * (c.weight_offset + w)

    y, (gx, gw) = _torch_grads(ref, X, W)
    np.testing.assert_allclose(N.rms_norm(X, W, preset=preset), y, atol=TOL, rtol=0)
    for mine, r in zip(N.rms_norm_backward(X, DY, W, preset=preset), (gx, gw)):
        np.testing.assert_allclose(mine, r, atol=TOL * 10, rtol=0)


@needs_torch
def test_rms_norm_matches_torch_functional():
    y, (gx, gw) = _torch_grads(lambda x, w: torch.nn.functional.rms_norm(x, (8,), w, 1e-6), X, W)
    np.testing.assert_allclose(N.rms_norm(X, W, eps=1e-6), y, atol=TOL, rtol=0)
    np.testing.assert_allclose(N.rms_norm_backward(X, DY, W, eps=1e-6)[0], gx, atol=TOL * 10, rtol=0)


@needs_torch
def test_group_norm_and_batch_norm_match_torch():
    x = RNG.standard_normal((4, 6, 3, 2))
    w, b, dy = RNG.standard_normal(6), RNG.standard_normal(6), RNG.standard_normal(x.shape)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    torch.nn.functional.group_norm(xt, 3, wt, bt, 1e-5).backward(_t(dy))
    np.testing.assert_allclose(N.group_norm(x, 3, w, b), torch.nn.functional.group_norm(_t(x), 3, _t(w), _t(b), 1e-5).numpy(), atol=TOL)
    for mine, ref in zip(N.group_norm_backward(x, dy, 3, w, b), (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(mine, ref.numpy(), atol=TOL * 10)
    rm, rv = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    yt = torch.nn.functional.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5)
    yt.backward(_t(dy))
    y, new_m, new_v = N.batch_norm(x, w, b, running_mean=np.zeros(6), running_var=np.ones(6))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=TOL)
    np.testing.assert_allclose(new_m, rm.numpy(), atol=TOL)
    np.testing.assert_allclose(new_v, rv.numpy(), atol=TOL)  # unbiased variance in the running estimate
    for mine, ref in zip(N.batch_norm_backward(x, dy, w, b), (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(mine, ref.numpy(), atol=TOL * 10)
    ev = torch.nn.functional.batch_norm(_t(x), rm, rv, _t(w), _t(b), training=False, eps=1e-5)
    np.testing.assert_allclose(N.batch_norm_inference(x, new_m, new_v, w, b), ev.numpy(), atol=TOL)


def _fd_check(f, x, dy, analytic, h=1e-6):
    """Central differences of <f(x), dy> along 5 random directions; error O(h^2 f''') + O(u/h)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.standard_normal(x.shape)
        fd = (np.sum(f(x + h * v) * dy) - np.sum(f(x - h * v) * dy)) / (2 * h)
        assert abs(fd - np.sum(analytic * v)) <= 1e-6 * (1 + abs(fd)), (fd, np.sum(analytic * v))


@pytest.mark.parametrize("placement", N.EPS_PLACEMENTS)
def test_norm_backward_matches_finite_differences(placement):
    _fd_check(lambda x: N.rms_norm(x, W, eps=1e-2, eps_placement=placement), X, DY,
              N.rms_norm_backward(X, DY, W, eps=1e-2, eps_placement=placement)[0])
    _fd_check(lambda x: N.layer_norm(x, W, B, eps=1e-2, eps_placement=placement), X, DY,
              N.layer_norm_backward(X, DY, W, B, eps=1e-2, eps_placement=placement)[0])
    x4 = RNG.standard_normal((3, 4, 2, 2))
    dy4 = RNG.standard_normal(x4.shape)
    _fd_check(lambda x: N.group_norm(x, 2, eps=1e-2), x4, dy4, N.group_norm_backward(x4, dy4, 2, eps=1e-2)[0])


def test_zero_variance_rows_are_finite_and_gemma_offset_is_one_plus_w():
    x = np.ones((2, 5))
    assert np.isfinite(N.layer_norm(x)).all() and np.isfinite(N.layer_norm_backward(x, x)[0]).all()
    assert np.isfinite(N.rms_norm(np.zeros((1, 4)), eps_placement="outside_sqrt", eps=1e-8)).all()
    assert np.isfinite(N.rms_norm_backward(np.zeros((1, 4)), np.ones((1, 4)), eps_placement="outside_sqrt")[0]).all()
    w = RNG.standard_normal(8)
    np.testing.assert_array_equal(N.rms_norm(X, w, preset="hf_gemma"), N.rms_norm(X, 1 + w, eps=1e-6))


@pytest.mark.parametrize("bad, err", [
    (dict(eps=-1.0), ValueError), (dict(eps_placement="after"), ValueError), (dict(weight=np.ones(3)), ValueError),
    (dict(x="a"), TypeError), (dict(x=np.full((2, 3), np.nan)), ValueError),
])
def test_norm_argument_checks(bad, err):
    kw = dict(x=np.ones((2, 4)), weight=None, eps=1e-5, eps_placement="inside_sqrt")
    kw.update(bad)
    with pytest.raises(err):
        N.rms_norm(kw.pop("x"), kw.pop("weight"), **kw)


# ----------------------------------------------------------------------------
# activations and FFN


_TORCH_ACTS = {
    "gelu": lambda t: torch.nn.functional.gelu(t),
    "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    "silu": lambda t: torch.nn.functional.silu(t), "relu": lambda t: torch.relu(t), "sigmoid": lambda t: torch.sigmoid(t),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(_TORCH_ACTS))
def test_activations_and_derivatives_match_torch(name):
    ref = _TORCH_ACTS[name]
    u = np.concatenate([np.linspace(-9, 9, 181), [0.0]])
    ut = _t(u, True)
    y = ref(ut)
    y.backward(torch.ones_like(y))
    # for u << 0 the GELUs and their derivatives cancel (1 + erf, 1 + tanh, and the derivative's two
    # terms): both libraries evaluate the same formulas in float64, so allow 32 u (1 + |u|) absolute
    atol = 32 * 2.0**-53 * (1 + np.abs(u))
    assert np.all(np.abs(Fn.act(name, u) - y.detach().numpy()) <= atol)
    assert np.all(np.abs(Fn.act_grad(name, u) - ut.grad.numpy()) <= atol)


def test_gelu_variants_differ_by_a_named_amount():
    u = np.linspace(-6, 6, 12001)
    gap = np.abs(Fn.act("gelu", u) - Fn.act("gelu_tanh", u))
    assert 4e-4 < gap.max() < 5e-4  # large enough to matter, small enough to slip past a loose test


@needs_torch
def test_glu_split_conventions():
    h2 = RNG.standard_normal((3, 10))
    a, b = h2[:, :5], h2[:, 5:]
    np.testing.assert_allclose(Fn.glu_split(h2, "sigmoid", gate_half="second"),
                               torch.nn.functional.glu(_t(h2), dim=-1).numpy(), atol=1e-15)  # a * sigmoid(b)
    np.testing.assert_allclose(Fn.glu_split(h2, "silu"), Fn.act("silu", a) * b)  # gate first (vLLM SiluAndMul)


def test_llama_hidden_dim_matches_published_configs():
    assert Fn.llama_hidden_dim(4096) == 11008  # Llama 1/2 7B intermediate_size
    assert Fn.llama_hidden_dim(5120) == 13824  # 13B
    assert Fn.llama_hidden_dim(6656) == 17920  # Llama 1 33B
    assert Fn.llama_hidden_dim(4096, ffn_dim_multiplier=1.3, multiple_of=1024) == 14336  # Llama 3 8B
    assert Fn.llama_hidden_dim(8192, ffn_dim_multiplier=1.3, multiple_of=4096) == 28672  # Llama 2/3 70B


def test_ffn_backward_matches_finite_differences_and_dropout_is_explicit():
    d, dff = 5, 7
    p = Fn.GLUParams(RNG.standard_normal((d, dff)), RNG.standard_normal((d, dff)), RNG.standard_normal((dff, d)))
    x, dy = RNG.standard_normal((4, d)), RNG.standard_normal((4, d))
    keep = RNG.random((4, dff)) < 0.8
    dx, g = Fn.ffn_backward(x, dy, p, variant="geglu_tanh", keep_mask=keep, dropout_p=0.2)
    _fd_check(lambda z: Fn.ffn(z, p, variant="geglu_tanh", keep_mask=keep, dropout_p=0.2), x, dy, dx)
    _fd_check(lambda W: Fn.ffn(x, Fn.GLUParams(p.W_gate, W, p.W_down), variant="geglu_tanh", keep_mask=keep,
                               dropout_p=0.2), p.W_up, dy, g.W_up)
    with pytest.raises(ValueError, match="keep_mask"):
        Fn.ffn(x, p, variant="swiglu", dropout_p=0.1)  # randomness is never drawn inside
    with pytest.raises(ValueError, match="contradicts"):
        Fn.ffn(x, p, variant="swiglu", activation="gelu")
    np.testing.assert_array_equal(Fn.dropout(np.ones(3), np.array([True, False, True]), 0.5), [2.0, 0.0, 2.0])


def _bf16_case():
    from refimpl.formats import round_to

    rng = np.random.default_rng(4)
    x = round_to(rng.standard_normal((500, 64)) * 3, "bfloat16")
    # Gemma's w with 1 + w exact in bf16 (Llama's weight): w = w1 - 1 for bf16 w1 in [0.5, 2] (Sterbenz)
    w = round_to(np.clip(1 + 0.3 * rng.standard_normal(64), 0.5, 2.0), "bfloat16") - 1
    return x, w, round_to


def test_llama_and_gemma_cast_orders_give_different_bf16_results():
    """Same effective weight 1 + w, different cast order: a quarter of the bf16 outputs differ by an ulp."""
    x, w, round_to = _bf16_case()
    assert np.array_equal(round_to(1 + w, "bfloat16"), 1 + w)
    llama = N.rms_norm_cast_order(x, 1 + w, preset="hf_llama")
    gemma = N.rms_norm_cast_order(x, w, preset="hf_gemma")
    differ = llama != gemma
    assert 0.1 < differ.mean() < 0.5
    assert np.all(np.abs(llama - gemma)[differ] <= np.abs(gemma[differ]) * 2.0**-7 * 1.01)


@needs_torch
@pytest.mark.parametrize("preset", ["hf_llama", "hf_gemma"])
def test_cast_order_matches_torch_bf16(preset):
    """The HF forwards written in torch bf16 (fp32 inside) against rms_norm_cast_order: bit-equal but for
    rare 1-ulp differences where torch's fp32 reduction rounds differently from float64."""
    x, w, _ = _bf16_case()
    xt = torch.tensor(x, dtype=torch.bfloat16)
    if preset == "hf_llama":
        wt = torch.tensor(1 + w, dtype=torch.bfloat16)
        hf = xt.float()
        ref = wt * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
        mine = N.rms_norm_cast_order(x, 1 + w, preset=preset)
    else:
        wt = torch.tensor(w, dtype=torch.bfloat16)
        o = xt.float()
        ref = ((o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)) * (1.0 + wt.float())).type_as(xt)
        mine = N.rms_norm_cast_order(x, w, preset=preset)
    ref = ref.double().numpy()
    assert (ref == mine).mean() > 0.999
    assert np.all(np.abs(ref - mine) <= np.abs(mine) * 2.0**-7 * 1.01)


# ---------------------------------------------------------------------------
# numeric extremes (issue 9, found by tests/contract_recipes_layers.py)


@pytest.mark.parametrize("k", [-1000, -500, 0, 500, 1000])  # x 2^k stays normal: exact
def test_norms_are_exact_under_power_of_two_scaling_at_eps_0(k):
    """With eps = 0 the norms are scale-invariant, and x * 2^k is exact: the statistics are taken
    of x / 2^e, so 1e300 (squares overflow) and 1e-300 (squares underflow) give the answer of x."""
    x = np.random.default_rng(0).normal(size=(3, 6))
    xs = np.ldexp(x, k)
    for f in (N.layer_norm, N.rms_norm):
        np.testing.assert_array_equal(f(xs, eps=0.0), f(x, eps=0.0))
    np.testing.assert_allclose(N.rms_norm_backward(xs, x, eps=0.0)[0], np.ldexp(N.rms_norm_backward(x, x, eps=0.0)[0], -k),
                               rtol=1e-12)


def test_layer_norm_of_values_whose_centred_sum_overflows():
    np.testing.assert_array_equal(N.layer_norm(np.array([[1e308, -1.7e308]])), [[1.0, -1.0]])
    x = np.full((1, 2), 1e300)  # xc = 0: xhat = 0, dx = (I - 11^T / n) dy / sqrt(eps)
    assert np.array_equal(N.layer_norm(x), np.zeros((1, 2)))
    dx = N.layer_norm_backward(x, np.array([[1.0, 2.0]]), eps=1e-4)[0]
    np.testing.assert_allclose(dx, [[-50.0, 50.0]], rtol=1e-12)
    with pytest.raises(ValueError, match="x, eps"):
        N.layer_norm(x, eps=0.0)  # 0 / 0
    with pytest.raises(ValueError, match="running statistic"):  # the unbiased variance ~ 1e616
        N.batch_norm(np.array([[1e308], [-1.7e308]]), running_mean=np.zeros(1), running_var=np.ones(1))


def test_activation_gradients_at_huge_inputs_are_the_limits():
    u = np.array([-1e300, -1e150, 1e150, 1e300])
    for name in Fn.ACTIVATIONS:
        g = Fn.act_grad(name, u)
        assert np.isfinite(g).all(), name
        np.testing.assert_array_equal(g[2:], 0.0 if name == "sigmoid" else 1.0)
        np.testing.assert_array_equal(g[:2], 0.0)
    with pytest.raises(ValueError, match="act\\(gate\\) \\* value"):  # the exact product ~ 1e600
        Fn.glu_split(np.array([1e300, 1e300]), "relu")
