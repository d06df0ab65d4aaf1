"""Every fast attention form equals the definition (``refimpl.definition``) within a derived bound.

Fast forms: ``refimpl.attention`` / ``attention_probs`` / ``attention_backward`` (chunked, threaded,
rescaled by powers of two near the float64 range), ``flash_attention`` FA1 and FA2 and
``flash_attention_backward`` (tiled, any block sizes, block skipping on and off),
``split_kv_attention`` (any partition of the keys), and the distributed forms over simulated ranks:
ring attention forward and backward (any contiguous sharding) and Ulysses (self-attention only). Cases are drawn by Hypothesis: GQA, causal in both
alignments, windows, bool-array and predicate masks with fully masked rows, softcap, bias with -inf
entries, dropout, and magnitudes of q, k, v and dout across the float64 range (scores near 1, and
scores up to about 1e300 with or without softcap).

The bound (first-order rounding analysis, u = 2^-53; ``error_bounds``). Each of the two computations
forms a score with error at most d_ij = (D + 3) u (a_ij + |bias_ij|), a_ij = scale sum_d |q_id| |k_jd|
(any summation order: gamma_D); under softcap c the error passes through c tanh(x / c), whose slope is
sech^2(x / c) <= min(1, 4 exp(-2 |x| / c)), taken at |R_ij| - d_ij, plus 2 u c. A score error d changes
the weight exp(s - m) by the factor e^d; the shifts s - m and the rescalings by exp(m_old - m_new) of
the tiled forms add relative errors summing to at most u (2 max_j |s_ij| + 4). So each unnormalised
weight has relative error rho_i = max_j d_ij + u (2 max_j |s_ij| + 4) (visible j), P_ij one of at most
e^(2 rho_i) - 1 (a normalised weight: numerator and denominator), and

    |out_i - exact_i| <= (e^(2 rho_i) - 1 + 4 (Lk + D + 4) u) (P Z |V|)_i    per computation,
    |lse_i - exact_i| <= rho_i + (Lk + 2) u + u |lse_i|,

the (Lk + D + 4) u term covering the sums (gamma_Lk) and FA1's per-step renormalisation. The
backward carries e_P = e^(2 rho) - 1 + 4 (Lk + D + 4) u (which covers FA2's P = exp(S - lse): the
lse error rho + u |lse| is within 2 rho) through dP = dO V^T Z (gamma_Dv), D = rowsum(P dP),
dS = P (dP - D), the softcap factor 1 - tanh^2 (error 2 sech^2 d / c + 3 u) and the three GEMMs
(gamma over their inner length), on the absolute values of the operands (``error_bounds``). The test
asserts |fast - definition| <= 2 x (sum of both computations' bounds) + a floor of 16 (Lq + Lk + D +
Dv) 2^-1022 for results near the underflow threshold: the factor 2 absorbs the second-order terms.

``test_the_bound_holds_against_a_50_digit_oracle`` checks the forward bound itself: the definition is
within it of ``properties.mp_oracle.mp_attention`` (worst 0.16 of 2 x the bound, thorough profile).

Fully masked rows are compared exactly (out 0, lse -inf, no gradient). Where a fast form refuses
(a visible score or a gradient beyond float64) the definition must overflow too (its result is not
finite). Where the definition's own scores overflow but the rescaled fast path's do not, the case is
outside the definition's domain and is not compared (the fast path's behaviour there is
tests/test_sdpa.py's and tests/test_tile_scale.py's).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import refimpl
from refimpl import masks as M
from refimpl.definition import attention_backward_definition, attention_definition

from . import _definitions as _D

U = 2.0**-53
TINY = 2.0**-1022


# ----------------------------------------------------------------------------
# the bound


def _abs_scores(q, k, scale):
    G = q.shape[1] // k.shape[1]
    return scale * (np.abs(q) @ np.repeat(np.abs(k), G, axis=1).swapaxes(-1, -2))


def error_bounds(q, k, v, kw, dout=None, score_err=0.0):
    """Bounds on |computed - exact| of one computation: (out, lse) or, with dout, (dq, dk, dv).
    ``score_err`` (broadcastable to (B, Hq, Lq, Lk)): a further error of each pre-softcap score, from
    inputs that are themselves computed (RoPE'd q and k in tests/test_definition_decode.py)."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    scale = kw.get("scale") or 1.0 / np.sqrt(D)
    c = kw.get("softcap")
    bias = kw.get("bias")
    b_abs = 0.0 if bias is None else np.where(np.isfinite(bias), np.abs(bias), 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        a = _abs_scores(q, k, scale)
        d_raw = (D + 3) * U * (a + b_abs) + (D + 1) * 2.0**-1074 * max(1.0, scale) + score_err
        R = scale * (q @ np.repeat(k, G, axis=1).swapaxes(-1, -2))
        if c is not None:  # an infinite R caps to exactly +-c in both computations: slope 0, no error carried
            gap = np.where(np.isinf(R), np.inf, np.maximum(np.abs(R) - d_raw, 0.0))
            slope = np.minimum(1.0, 4.0 * np.exp(-2.0 * gap / c))
            d = np.where(slope > 0, ((D + 3) * U * a + score_err) * slope, 0.0) + U * (2 * c + (D + 3) * b_abs)
            s_abs = np.minimum(np.abs(R), c) + b_abs
        else:
            d, s_abs = d_raw, np.abs(R) + b_abs
    Z = _dropout_scale(kw, (B, Hq, Lq, Lk))
    # the visible pattern and P from the definition itself (V = identity gives out = P)
    eye = np.broadcast_to(np.eye(Lk), (B, Hkv, Lk, Lk))
    P, lse = attention_definition(q, k, eye, **{n: x for n, x in kw.items() if n not in ("dropout_mask", "dropout_p")})
    visible = _visible(kw, (B, Hq, Lq, Lk))
    if bias is not None:
        visible = visible & ~np.isneginf(bias)
    rho = np.max(np.where(visible, d + U * 2 * s_abs, 0.0), axis=-1, initial=0.0) + 4 * U
    with np.errstate(over="ignore"):
        eP = np.expm1(2 * rho) + 4 * (Lk + D + 4) * U  # e^(2 rho) - 1: not first order, large rho stays a bound
    floor = 16 * (Lq + Lk + D + Dv) * TINY  # results near the underflow threshold
    with np.errstate(over="ignore", invalid="ignore"):
        Pe = eP[..., None] * P + 8 * 2.0**-1074  # |error of P|: relative, plus subnormal weights' absolute ulp
    Vr = np.repeat(np.abs(v), G, axis=1)
    if dout is None:
        out_b = (Pe * Z) @ Vr + floor
        lse_b = np.where(np.isfinite(lse), rho + (Lk + 2) * U + U * np.abs(np.nan_to_num(lse)), 0.0)
        return _vacuous_nan(out_b, lse_b)
    g = (max(Lk, Lq * G, D, Dv) + 4) * U  # gamma of the longest inner product
    # dS underflows below 2^-1074: in the definition, and in the fast backwards, which run on dout / 2^e_do
    # and v / 2^e_v (magnitudes < 1) and scale the gradients back by 2^(e_do + e_v)
    e_do, e_v = (int(np.frexp(np.max(np.abs(x), initial=0.0))[1]) for x in (dout, v))
    sub = 16 * 2.0**-1074 * max(1.0, 2.0**(e_do + e_v))
    rowsum = lambda x: np.sum(x, axis=-1, keepdims=True)  # noqa: E731
    with np.errstate(over="ignore", invalid="ignore"):
        A_dP = (np.abs(dout) @ Vr.swapaxes(-1, -2)) * Z  # |dP| and gamma_Dv times it bounds dP's error
        A_dS = P * (A_dP + rowsum(P * A_dP))  # |dS| <= P (|dP| + |D|)
        E_dS = Pe * (A_dP + rowsum(P * A_dP)) + P * (g * A_dP + rowsum(Pe * A_dP) + 2 * g * rowsum(P * A_dP)) \
            + 2 * U * A_dS + sub  # dS = P (dP - D): dP's, D's and P's errors, two roundings, underflow
        if c is not None:  # times 1 - tanh^2(R / c) <= 1, itself off by 2 sech^2 d / c + 3 u
            E_dS = E_dS + A_dS * (np.where(slope > 0, 2 * slope * d_raw / c, 0.0) + 3 * U)
        E_dR = E_dS + g * A_dS  # with the rounding of the GEMMs that follow
        Kr, Qa = np.repeat(np.abs(k), G, axis=1), np.abs(q)
        group = lambda x: x.reshape(B, Hkv, G, *x.shape[2:]).sum(axis=2)  # noqa: E731
        dq_b = scale * (E_dR @ Kr) + floor * max(1.0, 2.0**(e_do + e_v))
        dk_b = group(scale * (E_dR.swapaxes(-1, -2) @ Qa)) + floor * max(1.0, 2.0**(e_do + e_v))
        dv_b = group(((Pe + g * P) * Z).swapaxes(-1, -2) @ np.abs(dout)) + floor * max(1.0, 2.0**e_do)
    return _vacuous_nan(dq_b, dk_b, dv_b)


def _vacuous_nan(*bounds):
    """inf * 0 in a bound (an unbounded weight error times a zero weight) reads as no bound: inf."""
    return tuple(np.nan_to_num(b, nan=np.inf, posinf=np.inf) for b in bounds)


def _visible(kw, full):
    from refimpl.definition import visibility

    return np.broadcast_to(visibility(kw.get("mask"), kw.get("causal", False), kw.get("align", "bottom_right"),
                                      kw.get("window"), full), full)


def _dropout_scale(kw, full):
    if kw.get("dropout_mask") is None:
        return np.ones(full)
    return np.broadcast_to(kw["dropout_mask"], full) / (1.0 - kw["dropout_p"])


def assert_within(name, got, want, bound):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert not np.isnan(got).any() and not np.isposinf(got).any(), f"{name}: NaN or +inf"
    same_inf = np.isneginf(got) == np.isneginf(want)
    assert same_inf.all(), f"{name}: -inf (fully masked rows) differ"
    fin = np.isfinite(want)
    with np.errstate(invalid="ignore"):
        err = np.abs(np.where(fin, got - want, 0.0))
    excess = err - 2 * np.where(fin, bound, 0.0)
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else None
    assert excess.size == 0 or excess.max() <= 0, (
        f"{name}: |fast - definition| = {err[worst]:.3g} > 2 x bound {2 * bound[worst]:.3g} at {worst}")
    note(f"{name}: worst error / bound = {np.max(err / np.maximum(2 * bound, TINY), initial=0):.3g}")


# ----------------------------------------------------------------------------
# cases


@st.composite
def cases(draw, backward=False):
    B = draw(st.integers(1, 2))
    Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    Lq, Lk = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    D, Dv = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    band = draw(st.sampled_from(["unit", "unit", "far", "huge"]))
    if band == "unit":  # scores near 1
        eq, ek = 0, 0
    elif band == "far":  # q and k far from 1, their scores near 1 (the rescaled score path)
        eq = draw(st.integers(-300, 300))
        ek = -eq + draw(st.integers(-4, 2))
    else:  # scores up to about 1e300: softcap, or a refusal
        eq = draw(st.integers(-100, 150))
        ek = draw(st.integers(3, 200))
    ev = draw(st.sampled_from([0, 0, -300, -150, 150, 290])) if not backward else draw(st.sampled_from([0, -100, 100]))
    q = rng.standard_normal((B, Hkv * G, Lq, D)) * 10.0**eq
    k = rng.standard_normal((B, Hkv, Lk, D)) * 10.0**ek
    v = rng.standard_normal((B, Hkv, Lk, Dv)) * 10.0**ev
    kw = {}
    if draw(st.booleans()):
        kw["causal"] = True
    if draw(st.booleans()):
        kw["align"] = draw(st.sampled_from(["bottom_right", "top_left"]))
    if draw(st.booleans()):
        kw["window"] = (draw(st.one_of(st.none(), st.integers(0, 6))), draw(st.one_of(st.none(), st.integers(0, 6))))
    masking = draw(st.sampled_from(["none", "none", "array", "predicate"]))
    if masking == "array":  # rows with no visible key included
        kw["mask"] = rng.random(draw(st.sampled_from([(Lq, Lk), (B, 1, Lq, Lk), (B, Hkv * G, Lq, Lk)]))) < 0.6
    elif masking == "predicate":
        kw["mask"] = M.Causal("top_left") | M.SlidingWindow(1, 1)
    if (band == "huge" and draw(st.integers(0, 3))) or draw(st.booleans()):
        kw["softcap"] = draw(st.sampled_from([0.5, 5.0, 30.0, 1e3]))
    if draw(st.booleans()):
        kw["scale"] = draw(st.sampled_from([0.125, 1.0, 3.0]))
    if draw(st.booleans()):
        bias = rng.standard_normal((Hkv * G, Lq, Lk)) * draw(st.sampled_from([1.0, 30.0]))
        bias[rng.random(bias.shape) < 0.15] = -np.inf
        kw["bias"] = bias
    if draw(st.booleans()):
        kw["dropout_p"] = draw(st.sampled_from([0.1, 0.5]))
        kw["dropout_mask"] = rng.random((B, Hkv * G, Lq, Lk)) >= kw["dropout_p"]
    dout = rng.standard_normal((B, Hkv * G, Lq, Dv)) * 10.0**draw(st.sampled_from([0, -100, 100])) if backward else None
    note(f"band={band} eq={eq} ek={ek} ev={ev} shapes q{q.shape} k{k.shape} v{v.shape} kw={sorted(kw)}")
    return q, k, v, kw, dout


def _definition(fn, q, k, *args, **kw):
    """The definition's result, or None outside its domain: a product or partial sum of its scores
    may overflow float64 (its scores would not be the exact ones), or its result does (it refuses)."""
    scale = kw.get("scale") or 1.0 / np.sqrt(q.shape[3])
    kr = np.repeat(k, q.shape[1] // k.shape[1], axis=1).swapaxes(-1, -2)
    with np.errstate(all="ignore"):
        no_overflow = np.isfinite(scale * (np.abs(q) @ np.abs(kr)))  # no product or partial sum overflows
        if not no_overflow.all():
            return None
        try:
            res = fn(q, k, *args, **kw)
        except ValueError as e:  # its scores or its result beyond float64
            assert "float64" in str(e), e
            return None
    ok = all(not np.isnan(r).any() and not np.isposinf(r).any() for r in res) and np.isfinite(res[0]).all()
    return res if ok else None


def _fast_or_refusal(fn, definition, bounds):
    """The fast form's result, or None where it refuses (a result beyond float64): then the definition
    must have overflowed too, or the error bound must (the result is not determined in float64)."""
    try:
        return fn()
    except ValueError as e:
        assert "float64 range" in str(e), e
        with np.errstate(all="ignore"):
            undetermined = definition is None or not all(np.isfinite(b).all() for b in bounds())
        assert undetermined, f"the fast form refused ({e}) where the definition and its bound are finite"
        return None


FORWARD_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)


@FORWARD_SETTINGS
@given(cases(), st.integers(1, 6), st.integers(1, 6), st.booleans(), st.data())
def test_fast_forward_forms_equal_the_definition(case, block_q, block_k, skip, data):
    q, k, v, kw, _ = case
    want = _definition(attention_definition, q, k, v, **kw)
    fast = {
        "attention": lambda: refimpl.attention(q, k, v, **kw),
        "flash fa2": lambda: refimpl.flash_attention(q, k, v, block_q=block_q, block_k=block_k,
                                                     skip_masked_tiles=skip, **kw),
        "flash fa1": lambda: refimpl.flash_attention(q, k, v, block_q=block_q, block_k=block_k, variant="fa1",
                                                     skip_masked_tiles=skip, **kw),
        "split-kv": lambda: refimpl.split_kv_attention(q, k, v, block_q=block_q, block_k=block_k,
                                                       num_splits=data.draw(st.integers(1, 4), "num_splits"), **kw),
    }
    results = {name: _fast_or_refusal(f, want, lambda: error_bounds(q, k, v, kw)) for name, f in fast.items()}
    assume(want is not None)
    out_b, lse_b = error_bounds(q, k, v, kw)
    for name, got in results.items():
        if got is None:  # refused, checked above
            continue
        assert_within(f"{name} out", got[0], want[0], 2 * out_b)
        assert_within(f"{name} lse", got[1], want[1], 2 * lse_b)


@FORWARD_SETTINGS
@given(cases())
def test_attention_probs_equal_the_definition(case):
    q, k, v, kw, _ = case
    kw = {n: x for n, x in kw.items() if n not in ("dropout_mask", "dropout_p")}
    eye = np.broadcast_to(np.eye(k.shape[2]), k.shape[:3] + (k.shape[2],))
    want = _definition(attention_definition, q, k, eye, **kw)  # out = P I = P
    got = _fast_or_refusal(lambda: (refimpl.attention_probs(q, k, **kw),), want, lambda: error_bounds(q, k, eye, kw))
    assume(want is not None and got is not None)
    out_b, _ = error_bounds(q, k, eye, kw)
    assert_within("attention_probs", got[0], want[0], 2 * out_b)


@FORWARD_SETTINGS
@given(cases(backward=True), st.integers(1, 6), st.integers(1, 6))
def test_fast_backward_forms_equal_the_gradient_definition(case, block_q, block_k):
    q, k, v, kw, dout = case
    want = _definition(attention_backward_definition, q, k, v, dout, **kw)
    bounds = lambda: error_bounds(q, k, v, kw, dout)  # noqa: E731
    got = {"attention_backward": _fast_or_refusal(lambda: refimpl.attention_backward(q, k, v, dout, **kw), want,
                                                  bounds)}
    fwd = _fast_or_refusal(lambda: refimpl.flash_attention(q, k, v, block_q=block_q, block_k=block_k, **kw), None,
                           lambda: ())
    if fwd is not None:
        got["flash_attention_backward"] = _fast_or_refusal(lambda: refimpl.flash_attention_backward(
            q, k, v, fwd[0], fwd[1], dout, block_q=block_q, block_k=block_k, **kw), want, bounds)
    assume(want is not None)
    with np.errstate(over="ignore"):
        bound = bounds()
    for name, res in got.items():
        if res is None:  # refused, checked above
            continue
        for g, w, b, n in zip(res, want, bound, ("dq", "dk", "dv")):
            assert_within(f"{name} {n}", g, w, 2 * b)


# ----------------------------------------------------------------------------
# the definition itself: worked values, and the bound rejects wrong forms


def test_definition_worked_example():
    """One query, two keys, D = 1, scale 1: scores (1, 0), P = (e, 1) / (e + 1), lse = log(e + 1)."""
    q = np.ones((1, 1, 1, 1))
    k = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    v = np.array([2.0, -1.0]).reshape(1, 1, 2, 1)
    out, lse = attention_definition(q, k, v, scale=1.0)
    e = np.e
    assert np.isclose(out[0, 0, 0, 0], (2 * e - 1) / (e + 1), rtol=1e-15)
    assert np.isclose(lse[0, 0, 0], np.log(e + 1), rtol=1e-15)
    out, lse = attention_definition(q, k[:, :, :1], v[:, :, :1], causal=True, align="top_left",
                                    mask=np.zeros((1, 1), bool))
    assert out[0, 0, 0, 0] == 0.0 and np.isneginf(lse[0, 0, 0])


@pytest.mark.parametrize("wrong", ["no_scale", "key_shift", "gqa_tiled"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((1, 4, 5, 3)), rng.standard_normal((1, 2, 6, 3)), rng.standard_normal((1, 2, 6, 2))
    kw = dict(causal=True)
    want = attention_definition(q, k, v, **kw)
    if wrong == "no_scale":  # scale 1 instead of 1/sqrt(D)
        got = refimpl.attention(q, k, v, scale=1.0, **kw)
    elif wrong == "key_shift":  # causal off by one key
        got = refimpl.attention(q, k, v, causal=True, align="top_left")
    else:  # query head h reading kv head h % Hkv (tile instead of repeat)
        got = refimpl.attention(q, np.tile(k, (1, 2, 1, 1)), np.tile(v, (1, 2, 1, 1)), **kw)
    out_b, _ = error_bounds(q, k, v, kw)
    with pytest.raises(AssertionError):
        assert_within("out", got[0], want[0], 2 * out_b)


def test_definition_rejects_like_the_fast_form():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 1, 5, 4)), rng.standard_normal((1, 1, 5, 2))
    bad = [dict(window=(-1, 0)), dict(scale=0.0), dict(causal=1), dict(align="x"), dict(mask=np.ones((3, 5))),
           dict(bias=np.full((3, 5), np.inf)), dict(dropout_p=0.1), dict(mask=np.ones((4, 5), bool))]
    for kw in bad:
        with pytest.raises((ValueError, TypeError)) as fast:
            refimpl.attention(q, k, v, **kw)
        with pytest.raises(type(fast.value)) as ref:
            attention_definition(q, k, v, **kw)
        assert str(ref.value) == str(fast.value)


# ----------------------------------------------------------------------------
# distributed forms: ring and Ulysses attention over simulated ranks (self-attention, Lq = Lk)


@st.composite
def distributed_cases(draw):
    q, k, v, kw, dout = draw(cases(backward=True))
    L = min(q.shape[2], k.shape[2])
    q, k, v, dout = q[:, :, :L], k[:, :, :L], v[:, :, :L], dout[:, :, :L]
    kw = {n: x for n, x in kw.items() if n in ("causal", "window", "scale", "softcap")}
    if draw(st.booleans()):
        kw["mask"] = M.Causal("top_left") | M.SlidingWindow(1, 1)
    P = draw(st.integers(1, min(L, 4)))
    cuts = sorted(draw(st.lists(st.integers(1, L - 1), min_size=P - 1, max_size=P - 1, unique=True))) if P > 1 else []
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [L])]
    return q, k, v, kw, dout, sizes


@FORWARD_SETTINGS
@given(distributed_cases())
def test_distributed_forms_equal_the_definition(case):
    from refimpl.distributed import ring as R, sharding as SH, ulysses as U

    q, k, v, kw, dout, sizes = case
    positions = SH.contiguous(sizes)
    want = _definition(attention_definition, q, k, v, **kw)
    want_grads = _definition(attention_backward_definition, q, k, v, dout, **kw)
    ring = _fast_or_refusal(lambda: R.ring_attention(q, k, v, positions, **kw)[:2], want,
                            lambda: error_bounds(q, k, v, kw))
    L, Pu = q.shape[2], (2 if k.shape[1] % 2 == 0 and q.shape[2] >= 2 else 1)  # Ulysses: P divides the heads
    ulysses = _fast_or_refusal(lambda: U.ulysses_attention(q, k, v, SH.contiguous([L // Pu] * (Pu - 1) + [L - L // Pu * (Pu - 1)]),
                                                           **kw), want, lambda: error_bounds(q, k, v, kw))
    grads = _fast_or_refusal(lambda: R.ring_attention_backward(q, k, v, dout, positions, **kw), want_grads,
                             lambda: error_bounds(q, k, v, kw, dout))
    assume(want is not None)
    out_b, lse_b = error_bounds(q, k, v, kw)
    for name, got in (("ring", ring), ("ulysses", ulysses)):
        if got is not None:
            assert_within(f"{name} out", got[0], want[0], 2 * out_b)
            assert_within(f"{name} lse", got[1], want[1], 2 * lse_b)
    if grads is not None and want_grads is not None:
        with np.errstate(over="ignore"):
            bound = error_bounds(q, k, v, kw, dout)
        for g, w, b, n in zip(grads, want_grads, bound, ("dq", "dk", "dv")):
            assert_within(f"ring backward {n}", g, w, 2 * b)


def test_definitions_refuse_work_beyond_the_budget(monkeypatch):
    """The definitions materialise (B, Hq, Lq, Lk) arrays (RoPE's: (B, L, D, D)): beyond REFIMPL_MAX_BYTES a
    ValueError naming the sizing arguments, before anything is allocated (never a MemoryError)."""
    from refimpl.rope import rope_definition
    from refimpl.sinks import attention_with_sinks_definition

    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(2**20))
    q = np.zeros((1, 1, 200, 1))  # 200 x 200 x 64 bytes > 1 MiB
    calls = [lambda: attention_definition(q, q, q), lambda: attention_backward_definition(q, q, q, q),
             lambda: attention_with_sinks_definition(q, q, q, np.zeros(1)),
             lambda: rope_definition(np.zeros((1, 1, 200, 64)), np.arange(200))]
    for call in calls:
        with pytest.raises(ValueError, match="^(q, k|x, positions): expected work within"):
            call()


@FORWARD_SETTINGS
@given(cases())
def test_the_bound_holds_against_a_50_digit_oracle(case):
    """The derivation checked: the definition's out and lse are within (2 x) one computation's bound
    (``error_bounds``) of ``properties.mp_oracle.mp_attention`` (50 digits), plus its final rounding
    u |exact| / 2. (The decode, MLA and sinks bounds of tests/test_definition_*.py build on this one.)"""
    from properties.mp_oracle import mp_attention

    q, k, v, kw, _ = case
    kw = {n: x for n, x in kw.items() if n not in ("dropout_mask", "dropout_p")}
    want = _definition(attention_definition, q, k, v, **kw)
    assume(want is not None)
    full = q.shape[:3] + k.shape[2:3]
    visible = _visible(kw, full)
    bias = kw.get("bias")
    if bias is not None:
        bias = np.broadcast_to(bias, full)
        visible = visible & ~np.isneginf(bias)
    out, lse = mp_attention(q, k, v, visible, kw.get("scale") or 1.0 / np.sqrt(q.shape[3]), kw.get("softcap"), bias)
    out_b, lse_b = error_bounds(q, k, v, kw)
    out_b, lse_b = out_b + U * np.abs(out) / 2, lse_b + U * np.abs(np.nan_to_num(lse, neginf=0)) / 2
    assert_within("definition out vs 50 digits", want[0], out, out_b)
    assert_within("definition lse vs 50 digits", want[1], lse, lse_b)
    fin = np.isfinite(lse)
    with np.errstate(invalid="ignore", divide="ignore"):
        fracs = [np.where(np.abs(g - w) == 0, 0.0, np.abs(g - w) / (2 * b))[f] for g, w, b, f in
                 ((want[0], out, out_b, np.broadcast_to(fin[..., None], out.shape)), (want[1], lse, lse_b, fin))]
    _D.WORST.setdefault("attention vs 50 digits", []).append(max(np.max(f, initial=0.0) for f in fracs))


def test_worst_fraction_report():
    """Prints the worst fraction of the bound the 50-digit check observed in this process (-s)."""
    _D.report("attention vs 50 digits")
