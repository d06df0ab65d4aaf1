"""refimpl.mixers: definitions against hand loops, argument checks, conv1d, presets and cost accounting."""

import numpy as np
import pytest

from properties.mixers_common import rounding_bound
from refimpl import _parallel
from refimpl.mixers import _chunks, cost, presets
from refimpl.mixers import delta_rule as DR
from refimpl.mixers import gated as GL
from refimpl.mixers import linear_attention as LA
from refimpl.mixers import rwkv4 as RW
from refimpl.mixers import ssm as SSM

rng = np.random.default_rng(11)


def test_linear_attention_matches_the_seed_loop_and_the_non_causal_sum():
    """docs/notes.md#linear-attention: S_t = S_{t-1} + phi(k_t) v_t^T, z likewise, y = phi(q)S / (phi(q)z + eps)."""
    q, k = rng.standard_normal((2, 1, 1, 7, 3))
    v = rng.standard_normal((1, 1, 7, 2))
    phi = LA.FEATURE_MAPS["elu+1"]
    fq, fk = phi(q[0, 0]), phi(k[0, 0])
    S, z, y = np.zeros((3, 2)), np.zeros(3), np.empty((7, 2))
    for t in range(7):
        S, z = S + np.outer(fk[t], v[0, 0, t]), z + fk[t]
        y[t] = fq[t] @ S / (fq[t] @ z + 1e-10)
    np.testing.assert_allclose(LA.linear_attention(q, k, v)[0, 0], y, rtol=1e-13)
    nc = LA.linear_attention(q, k, v, causal=False)[0, 0]
    np.testing.assert_allclose(nc, (fq @ (fk.T @ v[0, 0])) / (fq @ fk.sum(0) + 1e-10)[:, None], rtol=1e-13)
    assert np.all(phi(np.array([-50.0, 0.0, 2.0])) > 0)


def test_retention_gammas_and_decay():
    np.testing.assert_allclose(GL.retnet_gammas(3), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128])
    q, k, v = rng.standard_normal((3, 1, 2, 5, 2))
    o = GL.retention(q, k, v)
    gam = GL.retnet_gammas(2)
    ref = np.einsum("htj,htj,hjd->htd",
                    np.einsum("htd,hjd->htj", q[0], k[0]) / np.sqrt(2),
                    np.tril(gam[:, None, None] ** (np.arange(5)[:, None] - np.arange(5)[None, :]).clip(0)), v[0])
    np.testing.assert_allclose(o[0], ref, rtol=1e-13)


def test_initial_state_is_carried_by_every_form():
    q, k, v = rng.standard_normal((3, 1, 1, 6, 2))
    g = -rng.random((1, 1, 6, 2))
    S0 = rng.standard_normal((1, 1, 2, 2))
    o1, S1 = GL.gated_linear_attention(q[:, :, :3], k[:, :, :3], v[:, :, :3], g[:, :, :3])
    o2, S2 = GL.gated_linear_attention(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:], g[:, :, 3:], initial_state=S1)
    for form in GL.FORMS:
        o, S = GL.gated_linear_attention(q, k, v, g, form=form, chunk_size=4)
        np.testing.assert_allclose(o, np.concatenate([o1, o2], axis=2), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(S, S2, rtol=1e-12, atol=1e-14)
        o3, _ = GL.gated_linear_attention(q, k, v, g, form=form, chunk_size=4, initial_state=S0)
        np.testing.assert_allclose(o3 - o, GL.gated_linear_attention(q, k, 0 * v, g, initial_state=S0)[0], atol=1e-12)
    od, Sd = DR.delta_rule(q, k / np.linalg.norm(k, axis=-1, keepdims=True), v, np.full((1, 1, 6), 0.5),
                           g[..., 0], initial_state=S0)
    oc, Sc = DR.delta_rule(q, k / np.linalg.norm(k, axis=-1, keepdims=True), v, np.full((1, 1, 6), 0.5),
                           g[..., 0], initial_state=S0, form="chunked", chunk_size=4)
    np.testing.assert_allclose(oc, od, atol=1e-13)
    np.testing.assert_allclose(Sc, Sd, atol=1e-13)


def test_empty_sequence_and_inputs_not_mutated():
    q, k, v = rng.standard_normal((3, 1, 1, 5, 2))
    copies = [x.copy() for x in (q, k, v)]
    for form in GL.FORMS:
        GL.gated_linear_attention(q, k, v, -np.ones((1, 1, 5)), form=form, chunk_size=2)
        o, S = GL.gated_linear_attention(q[:, :, :0], k[:, :, :0], v[:, :, :0], form=form)
        assert o.shape == (1, 1, 0, 2) and not S.any()
    DR.delta_rule(q, k, v, np.ones((1, 1, 5)), form="chunked", chunk_size=2)
    for a, b in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, arg", [
    (lambda: GL.gated_linear_attention(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 2))), "k"),
    (lambda: GL.gated_linear_attention(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3))), "g"),
    (lambda: GL.gated_linear_attention(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), form="chunked", chunk_size=0), "chunk_size"),
    (lambda: GL.gated_linear_attention(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), form="scan"), "form"),
    (lambda: LA.linear_attention(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), feature_map="tanh"), "feature_map"),
    (lambda: DR.delta_rule(np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2)), np.ones((1, 1, 2))), "beta"),
    (lambda: RW.wkv(np.ones(3), np.ones(2), np.ones((1, 1, 3, 2)), np.ones((1, 1, 3, 2))), "w"),
    (lambda: SSM.selective_scan(np.ones((1, 3, 4, 2)), np.ones((1, 3, 4, 2)), -np.ones((3, 2, 2)), np.ones((1, 2, 4, 2)), np.ones((1, 2, 4, 2))), "B"),
    (lambda: SSM.selective_scan(np.ones((1, 1, 4, 1)), np.arange(4.0).reshape(1, 1, 4, 1), -np.ones((1, 1, 2)), np.ones((1, 1, 4, 2)), np.ones((1, 1, 4, 2)), form="convolution"), "time-invariant"),
    (lambda: SSM.selective_scan(np.ones((1, 1, 4, 1)), np.ones((1, 1, 4, 1)), -np.ones((1, 1, 2)), np.ones((1, 1, 4, 2)), np.ones((1, 1, 4, 2)), discretization="euler"), "discretization"),
    (lambda: SSM.selective_scan(np.ones((1, 1, 4, 1)), -np.ones((1, 1, 4, 1)), -np.ones((1, 1, 2)), np.ones((1, 1, 4, 2)), np.ones((1, 1, 4, 2))), "delta"),
    (lambda: SSM.selective_scan(np.ones((1, 1, 4, 1)), np.ones((1, 1, 4, 1)), np.ones((1, 1, 2)), np.ones((1, 1, 4, 2)), np.ones((1, 1, 4, 2))), "A"),
])
def test_bad_arguments_name_themselves(call, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        call()


def test_normaliser_never_divides_zero_by_zero():
    q, k, v = -np.ones((3, 1, 1, 3, 2))  # relu features all 0: numerator and normaliser 0
    y = LA.linear_attention(q, k, v, feature_map="relu", eps=0.0)
    assert np.array_equal(y, np.zeros_like(y))


def test_nan_input_rejected():
    x = np.ones((1, 1, 3, 2))
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="q: expected finite entries, got an entry NaN"):
        GL.gated_linear_attention(x, np.ones_like(x), np.ones_like(x))


def test_ssm_zoh_b_and_discretisations():
    """Full ZOH: Bbar = (exp(delta A) - 1)/A B, which -> delta B as delta A -> 0 (then Euler-B = ZOH-B)."""
    u = rng.standard_normal((1, 1, 5, 1))
    A, Bm, Cm = -np.ones((1, 1, 1)), np.ones((1, 1, 5, 1)), np.ones((1, 1, 5, 1))
    small = np.full((1, 1, 5, 1), 1e-9)
    y_e, _ = SSM.selective_scan(u, small, A, Bm, Cm)
    y_z, _ = SSM.selective_scan(u, small, A, Bm, Cm, discretization="zoh")
    np.testing.assert_allclose(y_z, y_e, rtol=1e-8)
    dt = np.ones((1, 1, 5, 1))
    x, ys = 0.0, []
    for t in range(5):
        x = np.exp(-1.0) * x + (1 - np.exp(-1.0)) * u[0, 0, t, 0]
        ys.append(x)
    np.testing.assert_allclose(SSM.selective_scan(u, dt, A, Bm, Cm, discretization="zoh")[0][0, 0, :, 0], ys, rtol=1e-13)


def test_causal_conv1d_definition():
    x = rng.standard_normal((1, 1, 6, 2))
    w = rng.standard_normal((1, 2, 3))
    out = SSM.causal_conv1d(x, w)
    for t in range(6):
        want = sum(w[0, :, i] * x[0, 0, t - 2 + i] for i in range(3) if t - 2 + i >= 0)
        np.testing.assert_allclose(out[0, 0, t], want, rtol=1e-14)
    # weight[W-1] multiplies the current token: an impulse at t = 0 reads the weights backwards
    imp = np.zeros((1, 1, 3, 1))
    imp[0, 0, 0, 0] = 1.0
    np.testing.assert_allclose(SSM.causal_conv1d(imp, np.array([[[1.0, 2.0, 3.0]]]))[0, 0, :, 0], [3.0, 2.0, 1.0])
    np.testing.assert_allclose(SSM.causal_conv1d(x, w, np.ones((1, 2)), activation="silu"), SSM.silu(out + 1))


def test_presets_layouts_round_trip():
    q, k = rng.standard_normal((2, 2, 5, 3, 4))  # (B, L, H, D)
    v, gk = rng.standard_normal((2, 2, 5, 3, 4))
    o, _ = presets.fla_gla(q, k, v, -np.abs(gk))
    o2, _ = GL.gated_linear_attention(*(np.swapaxes(x, 1, 2) for x in (q, k, v, -np.abs(gk))))
    np.testing.assert_array_equal(o, np.swapaxes(o2, 1, 2))
    w, u = -np.exp(rng.standard_normal(4)), rng.standard_normal(4)
    y = presets.rwkv4_wkv(w, u, q[:, :, 0], v[:, :, 0])
    np.testing.assert_allclose(y, RW.wkv(w, u, q[:, None, :, 0], v[:, None, :, 0])[:, 0], rtol=1e-14)


def test_cost_accounting():
    """State and MACs per token (per head) beside softmax attention; docs/notes.md#mixer-costs."""
    assert cost.softmax_attention(t=4096, d=128, d_v=128) == cost.MixerCost(state=4096 * 256, macs=4096 * 256, exps=4096)
    la = cost.linear_attention(d_phi=128, d_v=128)
    assert (la.state, la.macs) == (128 * 128 + 128, 2 * 128 * 128 + 2 * 128)
    assert cost.delta_rule(64, 64, gated=True).macs == 4 * 64 * 64
    assert cost.rwkv4(768).state == 3 * 768
    assert cost.selective_scan(P=16, N=16).state == 256
    # whole sequences: n^2 d against n d_phi d_v; the ratio grows linearly in n
    n, d = 8192, 128
    soft, lin = cost.sequence_macs_softmax(n, d, d), cost.sequence_macs_linear(n, d, d)
    assert soft == n * (n + 1) // 2 * 2 * d and lin == 2 * n * d * d
    assert cost.sequence_macs_softmax(2 * n, d, d) / cost.sequence_macs_linear(2 * n, d, d) > 1.99 * soft / lin
    # break-even: causal softmax (n + 1) d MACs per token vs 2 d^2 when n + 1 = 2 d
    assert cost.sequence_macs_softmax(2 * d - 1, d, d) == cost.sequence_macs_linear(2 * d - 1, d, d)
    tab = cost.attention_table(B=2, H=4, L=16, d_head=8, Lq=16, Lk=32, t=10)
    assert tab["scores"] == 2 * 4 * 16 * 16 * 8 and tab["softmax"] == 2 * 4 * 256
    assert tab["cross_attention"] == (2 * 2 * 4 * 16 * 32 * 8, 2 * 4 * 16 * 32)  # no stray factor L (docs/errata.md#e18)
    assert tab["decode_step"] == 2 * 4 * 10 * 8 and tab["kv_cache"] == 2 * 16 * 32
    with pytest.raises(ValueError, match="d_phi"):
        cost.linear_attention(0, 4)


def test_cost_counts_match_an_operation_count_of_the_recurrence():
    """The recurrent gated step does exactly decay (d_k d_v), write (d_k d_v) and read (d_k d_v) multiplies."""
    d_k, d_v = 3, 5
    count = d_k * d_v + d_k * d_v + d_k * d_v
    assert cost.gated_linear_attention(d_k, d_v).macs == count
    # delta rule: recall S^T k (d_k d_v), write k u^T (d_k d_v), read (d_k d_v); gated adds the decay
    assert cost.delta_rule(d_k, d_v).macs == 3 * d_k * d_v


@pytest.mark.parametrize("gate_shape", [(1, 2, 24, 3)])
def test_chunked_gla_factored_and_elementwise_chunks_equal_the_recurrence(gate_shape):
    """Channel gates: chunks whose decay stays within FACTOR_SPAN take the matrix-product form, the others
    the elementwise form (and so does a chunk whose scaled keys would overflow): both equal the definition.
    (One gate per head and step takes ``_chunked_scalar``, which never factors: the test below.)"""
    q, k, v = rng.standard_normal((3, 1, 2, 24, 3))
    g = -rng.random(gate_shape) * 0.1
    g[:, :, 9] = -GL.FACTOR_SPAN - 5.0  # the chunk [8, 16) spans more than FACTOR_SPAN
    calls = {"factored": 0, "elementwise": 0}
    real_einsum = np.einsum

    def counting(*a, **kw):
        calls["elementwise"] += a[0] == "bhtc,bhjc,bhtjc->bhtj"
        return real_einsum(*a, **kw)

    GL.np.einsum = counting
    try:
        oc, Sc = GL.gated_linear_attention(q, k, v, g, form="chunked", chunk_size=8)
        assert calls["elementwise"] == 1  # one chunk of three
        # keys near the top of float64 with a decay of 5 a step (span 35 <= FACTOR_SPAN): k e^{35}
        # overflows, so every chunk falls back to the elementwise form; outputs ~ (q k) stay finite
        big = (q * 1e-292, k * 1e292, v, np.full(gate_shape, -5.0))
        ob, Sb = GL.gated_linear_attention(*big, form="chunked", chunk_size=8)
        assert calls["elementwise"] == 4
    finally:
        GL.np.einsum = real_einsum
    o, S = GL.gated_linear_attention(q, k, v, g)
    np.testing.assert_allclose(oc, o, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(Sc, S, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ob, GL.gated_linear_attention(*big)[0], rtol=1e-12, atol=1e-13)


def test_scalar_gate_chunks_take_the_batched_form_and_equal_the_recurrence(monkeypatch):
    """One gate per head and step (B, H, L), and g None: the chunked form is ``_chunked_scalar`` (every
    exponent <= 0: nothing to factor), equal to the recurrence for a decay past FACTOR_SPAN inside a
    chunk, keys near the top of float64, a partial last chunk, L = 1, an initial state, batches of chunks
    (L = 300 > SCALAR_SPAN), a gate constant in time (RetNet: one decay table for every chunk; one head's
    decay past FACTOR_SPAN a step), and one thread or two head groups on threads, bit for bit alike."""
    calls = {"n": 0}
    real = GL._chunked_scalar

    def counting(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(GL, "_chunked_scalar", counting)
    monkeypatch.setattr(_parallel, "MIN_PARALLEL_WORK", 0)
    for L, c in ((24, 8), (23, 8), (1, 4), (300, 64)):
        q, k, v = rng.standard_normal((3, 1, 3, L, 3))
        g = -rng.random((1, 3, L)) * 0.1
        g[:, :, L // 2] = -GL.FACTOR_SPAN - 5.0
        constant = np.broadcast_to(np.array([-0.05, -GL.FACTOR_SPAN - 5.0, -1e-3])[None, :, None], (1, 3, L))
        S0 = rng.standard_normal((1, 3, 3, 3))
        for args in ((q, k, v, g), (q * 1e-292, k * 1e292, v, np.full(g.shape, -5.0)), (q, k, v, None),
                     (q, k, v, constant), (q * 1e-292, k * 1e292, v, constant)):
            o, S = GL.gated_linear_attention(*args, initial_state=S0)
            runs = []
            for threads in ("1", "2"):
                monkeypatch.setenv("REFIMPL_NUM_THREADS", threads)
                oc, Sc = GL.gated_linear_attention(*args, initial_state=S0, form="chunked", chunk_size=c)
                np.testing.assert_allclose(oc, o, rtol=1e-12, atol=1e-13)
                np.testing.assert_allclose(Sc, S, rtol=1e-12, atol=1e-12)
                runs.append((oc, Sc))
            assert all(np.array_equal(x, y) for x, y in zip(*runs)), "threads changed the bits"
    assert calls["n"] == 40


def _ssd_case(seed, b=2, H=4, L=13, P=3, G=2, N=5, dt_scale=1.0):
    rng = np.random.default_rng(seed)
    x, z = rng.standard_normal((2, b, H, L, P))
    dt = np.log1p(np.exp(rng.standard_normal((b, H, L)))) * dt_scale
    A = -np.exp(rng.standard_normal(H))
    Bm, Cm = rng.standard_normal((2, b, G, L, N))
    return x, dt, A, Bm, Cm, rng.standard_normal(H), z, rng.standard_normal((b, H, P, N))


@pytest.mark.parametrize("seed", range(4))
def test_ssd_is_the_selective_scan_with_one_decay_per_head(seed):
    """SSM.ssd (sequential and chunked, chunks of 1, 4, 5 and 64 tokens, L = 13) equals
    selective_scan with A[h, p, n] = a_h and delta[b, h, t, p] = dt[b, h, t]; D (H,) as (H, P)."""
    x, dt, A, Bm, Cm, D, z, x0 = _ssd_case(seed)
    H, P, N = x.shape[1], x.shape[3], Bm.shape[3]
    for kw in ({}, {"D": D, "z": z, "initial_state": x0}):
        Dk = kw.get("D")
        y0, h0 = SSM.selective_scan(x, np.broadcast_to(dt[..., None], x.shape), np.broadcast_to(A[:, None, None], (H, P, N)),
                                    Bm, Cm, None if Dk is None else np.broadcast_to(Dk[:, None], (H, P)), kw.get("z"),
                                    initial_state=kw.get("initial_state"))
        for form, Q in (("sequential", 64), ("chunked", 1), ("chunked", 4), ("chunked", 5), ("chunked", 64)):
            y, h = SSM.ssd(x, dt, A, Bm, Cm, form=form, chunk_size=Q, **kw)
            np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-12 * np.abs(y0).max())
            np.testing.assert_allclose(h, h0, rtol=1e-12, atol=1e-12 * np.abs(h0).max())


def test_ssd_chunked_survives_decays_past_underflow():
    """dt a down to -1000 a step (e^{dt a} = 0 exactly): the chunked form sums exponents and never
    takes the log of a decay, so it stays equal to the recurrence (no -inf - -inf = NaN)."""
    x, dt, A, Bm, Cm, D, z, x0 = _ssd_case(7, dt_scale=400.0)
    y0, h0 = SSM.ssd(x, dt, A, Bm, Cm, D, z, initial_state=x0)
    y, h = SSM.ssd(x, dt, A, Bm, Cm, D, z, initial_state=x0, form="chunked", chunk_size=4)
    assert np.isfinite(y).all() and np.isfinite(h).all()
    np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-12 * np.abs(y0).max())


@pytest.mark.parametrize("kw, arg", [
    ({"A": -np.ones((4, 3, 5))}, "A"), ({"A": np.ones(4)}, "A"), ({"dt": -np.ones((2, 4, 13))}, "dt"),
    ({"D": np.ones(3)}, "D"), ({"form": "scan"}, "form"), ({"chunk_size": 0}, "chunk_size"),
])
def test_ssd_bad_arguments_name_themselves(kw, arg):
    x, dt, A, Bm, Cm, D, z, x0 = _ssd_case(0)
    args = {"x": x, "dt": dt, "A": A, "B": Bm, "C": Cm, "form": "chunked", **kw}
    with pytest.raises(ValueError, match=arg):
        SSM.ssd(**args)


def _scan_case(L, strong, seed=0):
    r = np.random.default_rng(seed)
    u, z = r.standard_normal((2, 2, 2, L, 3))
    delta = r.random((2, 2, L, 3)) / 2  # strong: decays to ~1e4 a step in the even chunks (CHUNK = 8) only
    if strong:
        delta = delta * np.where((r.random((2, 2, L, 3)) < 0.3) & (np.arange(L) // 8 % 2 == 0)[:, None], 2000.0, 1.0)
    A = -np.exp(r.standard_normal((2, 3, 4)))
    Bm, Cm = r.standard_normal((2, 2, 1, L, 4))
    return (u, delta, A, Bm, Cm, r.standard_normal((2, 3)), z), r.standard_normal((2, 2, 3, 4))


@pytest.mark.parametrize("L", [0, 1, 7, 8, 9, 21])
@pytest.mark.parametrize("strong", [False, True])
@pytest.mark.parametrize("discretization", SSM.DISCRETIZATIONS)
def test_chunked_scan_equals_the_sequential_scan_on_hard_cases(L, strong, discretization):
    """Partial last chunks (CHUNK = 8), L = 0 / 1, an initial state, and decays delta |A| up to ~1e4 a
    step (exp underflows to 0; chunks past SPAN_MAX run the loop): the rounding bound of the module doc."""
    args, x0 = _scan_case(L, strong)
    copies = [a.copy() for a in args + (x0,)]
    y, x = SSM.selective_scan(*args, initial_state=x0, form="chunked", discretization=discretization)
    ry, rx = SSM.selective_scan(*args, initial_state=x0, discretization=discretization)
    u, delta, A, Bm, Cm, D, z = args
    My, Mx = SSM.selective_scan(np.abs(u), delta, A, np.abs(Bm), np.abs(Cm), np.abs(D), None,
                                initial_state=np.abs(x0), discretization=discretization)
    n = 3 * L + 4 + 40 + (2 * SSM.CHUNK + 1) * float(np.max(delta.sum(axis=2)[..., None] * -A[None], initial=0.0))
    assert np.all(np.abs(y - ry) <= rounding_bound(My * np.abs(SSM.silu(z)), n))
    assert np.all(np.abs(x - rx) <= rounding_bound(Mx, n))
    assert all(np.array_equal(a, c) for a, c in zip(args + (x0,), copies))
    assert not np.shares_memory(x, x0)


def test_chunked_scan_near_float64_max_equals_the_loop():
    """Inputs Bbar u ~ 1e306 with a chunk decay of ~30: exp(-S_j) Bbar_j u_j passes float64 while every
    state stays finite; the chunk runs the loop (no ValueError for a finite exact result)."""
    L = 16
    u = np.full((1, 1, L, 1), 1e306)
    delta, A = np.full((1, 1, L, 1), 1.0), np.full((1, 1, 1), -4.0)
    Bm = Cm = np.full((1, 1, L, 1), 0.5)
    y, x = SSM.selective_scan(u, delta, A, Bm, Cm, form="chunked")
    ry, rx = SSM.selective_scan(u, delta, A, Bm, Cm)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(x, rx, rtol=1e-13)


def test_chunked_scan_hard_cases_take_both_paths():
    """Meta: the strong-decay case above has chunks whose span (max over channels of |A| sum_{a<i<b} delta_i)
    exceeds SPAN_MAX (they run the loop) and chunks within it (they factor exp(S_t) exp(-S_j))."""
    (u, delta, A, *_), _ = _scan_case(21, True)
    spans = [float(np.max(delta[:, :, a + 1:a + SSM.CHUNK].sum(axis=2)[..., None] * -A[None], initial=0.0))
             for a in range(0, 21, SSM.CHUNK)]
    assert max(spans) > SSM.SPAN_MAX and min(spans) <= SSM.SPAN_MAX, spans


@pytest.mark.parametrize("L", [0, 1, 5, 9])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("block", [512, 8])
def test_chunked_delta_rule_equals_the_recurrence_on_hard_cases(L, per_channel, block, monkeypatch):
    """Batched UT chunks: L = 0 / 1, partial chunks (c = 4), batches of chunks (block 8: the state carried
    between batches), per-value-channel beta, gates to -30, an initial state; the bound of
    properties.mixers_linear (|S_t| <= |S_0| + sum beta |v|)."""
    monkeypatch.setattr(_chunks, "BLOCK", block)
    r = np.random.default_rng(L)
    q, k = r.standard_normal((2, 1, 2, L, 3))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = r.standard_normal((1, 2, L, 2))
    beta = r.random((1, 2, L, 2) if per_channel else (1, 2, L))
    g = -30 * r.random((1, 2, L)) ** 4
    S0 = r.standard_normal((1, 2, 3, 2))
    o, S = DR.delta_rule(q, k, v, beta, g, scale=1.0, initial_state=S0, form="chunked", chunk_size=4)
    ro, rS = DR.delta_rule(q, k, v, beta, g, scale=1.0, initial_state=S0)
    bmax = beta if beta.ndim == 3 else beta.max(axis=-1)
    run = np.linalg.norm(S0, ord=2, axis=(2, 3))[..., None, None] + np.cumsum(bmax * np.linalg.norm(v, axis=-1), axis=2)[..., None]
    n = 2 * L + 3 + 8 + L * float(-g.sum(axis=2).min(initial=0.0))
    assert np.all(np.abs(o - ro) <= rounding_bound(np.linalg.norm(q, axis=-1)[..., None] * run, n))
    assert np.all(np.abs(S - rS) <= rounding_bound(np.max(run, axis=2, initial=0.0)[..., None] if L else np.abs(S0), n))
    assert not np.shares_memory(S, S0)
    assert not np.shares_memory(rS, S0)


@pytest.mark.parametrize("L", [0, 1, 5, 9, 21])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("block", [512, 8])
def test_chunked_linear_attention_equals_the_recurrence(L, normalize, block, monkeypatch):
    monkeypatch.setattr(_chunks, "BLOCK", block)
    r = np.random.default_rng(L)
    q, k, v = r.standard_normal((3, 2, 2, L, 3))
    y = LA.linear_attention(q, k, v, normalize=normalize, form="chunked", chunk_size=4)
    ry = LA.linear_attention(q, k, v, normalize=normalize)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-14)
