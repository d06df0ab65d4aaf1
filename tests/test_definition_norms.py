"""The normalisations equal their definition (``refimpl.norms.norm_definition``) within a derived bound.

Fast forms: ``layer_norm``, ``rms_norm`` (both eps placements, Gemma's weight offset), ``batch_norm``,
``group_norm`` and their backwards: statistics of x / 2^e (a power of two per group, so inputs near
1e300 or 1e-300 normalise like inputs near 1) and a backward with r^2 xc folded into r xhat. The
definition is the textbook formula on x itself, so it is compared where x^2 stays within float64
and, backward, where its r^3 does not underflow (max |x| < 2^300); elsewhere the definition
under- or overflows and the fast forms' behaviour there is tests/test_norms_ffn.py's.

The bound (first-order rounding analysis, u = 2^-53, gamma_n = n u / (1 - n u); n elements per group,
exact quantities replaced by the definition's values, as first order allows). One computation errs by

    mu:    gamma_(n+1) mean|x|                      (centred kinds; 0 for RMSNorm)
    xc:    d_mu + u |xc|
    v:     2 d_mu mean|xc| + (2u + gamma_(n+2)) v + n 2^-1074 (squares that underflow)
    r:     rho_r = (d_v + u q) / (2 q) + 2u,  q = v + eps              (inside the sqrt)
                 = (d_s + u q) / q + u,  q = sqrt v + eps,
                   d_s = min(d_v / (2 sqrt v), sqrt d_v) + u sqrt v     (outside)
    xhat:  d_xc r + |xhat| rho_r + u |xhat|
    y:     d_xhat |g| + 2u |xhat g| + u |y|          (g = offset + w rounded, the product, + b)

and backward, with dxhat = dy g (2u), m = mean(dxhat xhat) (d_m = mean(2u |dxhat| |xhat| + |dxhat|
d_xhat) + gamma_(n+2) mean|dxhat xhat|), the correction T = xhat m phi (phi = r inside, 1 / sqrt v
outside; d_T = d_xhat |m| phi + |xhat| d_m phi + |T| (rho_phi + 4u)), dxc = r dxhat - T
(|dxhat| r rho_r + 2u r |dxhat| + d_T + u (r |dxhat| + |T|)), the centring (d_dxc + mean d_dxc +
gamma_(n+2) mean(r |dxhat| + |T|)), dw = sum dy xhat (sum |dy| d_xhat + gamma_(N+1) sum |dy xhat|)
and db = sum dy (gamma_N sum |dy|). A floor of 2^-1060 per entry covers subnormal results. The test
asserts |fast - definition| <= 2 x (the sum of both computations' bounds), the factor 2 for the
second-order terms; ``test_the_bound_holds_against_a_50_digit_oracle`` checks the forward bound
itself (the definition within it of the mpmath result: worst 0.19 of the bound, thorough). The
worst fraction observed is printed by ``test_worst_fraction_report`` (-s):
0 forward (both forms run the same operations on x and on x / 2^e: bit for bit equal)
and about 0.06 backward (thorough profile).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from refimpl import norms as N
from refimpl.norms import norm_definition

from . import _definitions as D
from ._definitions import FLOOR, U, gamma

TINY = 2.0**-1074


def _view(x, kind, G):
    """(x grouped, axes A, parameter shape, axes a parameter is broadcast along)."""
    if kind in ("layer", "rms"):
        return x, (-1,), (1,) * (x.ndim - 1) + (-1,), tuple(range(x.ndim - 1))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    P = (0,) + tuple(range(2, x.ndim))
    if kind == "batch":
        return x, P, shape, P
    return x.reshape(x.shape[0], G, -1), (2,), shape, P


def bounds(x, kw, dy=None):
    """Bounds on |computed - exact| of one computation: y, or (dx, dw, db) with dy."""
    kind, G = kw["kind"], kw.get("num_groups", 1)
    eps, inside = kw["eps"], kw.get("eps_placement", "inside_sqrt") == "inside_sqrt"
    xs, A, shape, P = _view(x, kind, G)
    n = int(np.prod([xs.shape[a] for a in A]))
    mean = lambda t: t.mean(axis=A, keepdims=True)  # noqa: E731
    w, b = kw.get("weight"), kw.get("bias")
    g = np.ones(1) if w is None else (kw.get("weight_offset", 0.0) + w).reshape(shape)
    center = kind != "rms"
    xc = xs - mean(xs) if center else xs
    v = mean(xc * xc)
    d_mu = gamma(n + 1) * mean(np.abs(xs)) if center else 0.0
    d_xc = d_mu + U * np.abs(xc)
    d_v = 2 * d_mu * mean(np.abs(xc)) + (2 * U + gamma(n + 2)) * v + n * TINY
    if inside:
        q = v + eps
        r = 1 / np.sqrt(q)
        rho_r = (d_v + U * q) / (2 * q) + 2 * U
        phi, rho_phi = r, rho_r
    else:
        sv = np.sqrt(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            d_s = np.where(sv > 0, np.minimum(d_v / (2 * sv), np.sqrt(d_v)), np.sqrt(d_v)) + U * sv
            q = sv + eps
            r = 1 / q
            rho_r = (d_s + U * q) / q + U
            phi = np.where(sv > 0, 1 / sv, 0.0)
            rho_phi = np.where(sv > 0, d_v / (2 * np.where(v > 0, v, 1.0)) + 2 * U, 0.0)
    xhat = xc * r
    d_xhat = d_xc * r + np.abs(xhat) * rho_r + U * np.abs(xhat)
    xhat_f, d_xhat_f = xhat.reshape(x.shape), d_xhat.reshape(x.shape)
    if dy is None:
        y = xhat_f * g + (0.0 if b is None else b.reshape(shape))
        return d_xhat_f * np.abs(g) + 2 * U * np.abs(xhat_f * g) + U * np.abs(y) + FLOOR
    dxhat = (dy * g).reshape(xs.shape)
    dd = 2 * U * np.abs(dxhat)
    m = mean(dxhat * xhat)
    d_m = mean(dd * np.abs(xhat) + np.abs(dxhat) * d_xhat) + gamma(n + 2) * mean(np.abs(dxhat * xhat))
    T = np.abs(xhat * m * phi)
    d_T = d_xhat * np.abs(m) * phi + np.abs(xhat) * d_m * phi + T * (rho_phi + 4 * U)
    a_dxc = r * np.abs(dxhat) + T
    d_dxc = np.abs(dxhat) * r * rho_r + r * dd + d_T + U * a_dxc
    d_dx = d_dxc + mean(d_dxc) + gamma(n + 2) * mean(a_dxc) if center else d_dxc
    Nsum = x.size // (x.shape[-1] if kind in ("layer", "rms") else x.shape[1])
    d_dw = np.sum(np.abs(dy) * d_xhat_f + gamma(Nsum + 1) * np.abs(dy * xhat_f), axis=P) + FLOOR
    d_db = gamma(Nsum) * np.sum(np.abs(dy), axis=P) + FLOOR
    return d_dx.reshape(x.shape) + FLOOR, d_dw, d_db


def fast(x, kw, dy=None):
    """The fast form for kw["kind"]: y, or (dx, dw, db) (None for an absent parameter)."""
    kind, w, b = kw["kind"], kw.get("weight"), kw.get("bias")
    eps, pl = kw["eps"], kw.get("eps_placement", "inside_sqrt")
    if kind == "layer":
        return N.layer_norm(x, w, b, eps=eps, eps_placement=pl) if dy is None else \
            N.layer_norm_backward(x, dy, w, b, eps=eps, eps_placement=pl)
    if kind == "rms":
        o = kw.get("weight_offset", 0.0)
        return N.rms_norm(x, w, eps=eps, eps_placement=pl, weight_offset=o) if dy is None else \
            N.rms_norm_backward(x, dy, w, eps=eps, eps_placement=pl, weight_offset=o) + (None,)
    if kind == "batch":
        return N.batch_norm(x, w, b, eps=eps)[0] if dy is None else N.batch_norm_backward(x, dy, w, b, eps=eps)
    G = kw["num_groups"]
    return N.group_norm(x, G, w, b, eps=eps) if dy is None else N.group_norm_backward(x, dy, G, w, b, eps=eps)


@st.composite
def norm_cases(draw, kinds=N.NORM_KINDS, placements=N.EPS_PLACEMENTS):
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind in ("layer", "rms"):
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)))
    else:
        G = draw(st.integers(1, 3))
        spatial = (draw(st.integers(1, 3)),) if draw(st.booleans()) else ()
        shape = (draw(st.integers(1, 3)), G * draw(st.integers(1, 3))) + spatial
        if kind == "batch" and np.prod(shape) // shape[1] < 2:
            shape = (2,) + shape[1:]
    band = draw(st.sampled_from(["unit", "unit", "tiny", "small", "large", "huge", "offset"]))
    scale = {"unit": 1.0, "tiny": 1e-170, "small": 1e-100, "large": 1e90, "huge": 1e150, "offset": 1.0}[band]
    x = rng.standard_normal(shape) * scale
    if band == "offset":  # a large common value: the mean cancels (LayerNorm's hard case)
        x = x + 10.0 ** draw(st.integers(2, 12))
    if draw(st.booleans()):  # a constant group (zero variance)
        x[0] = x.flat[0]
    kw = dict(kind=kind, eps=draw(st.sampled_from([0.0, 1e-12, 1e-6, 1e-5, 1.0])))
    if kind in ("layer", "rms"):
        kw["eps_placement"] = draw(st.sampled_from(placements))
    if kind == "group":
        kw["num_groups"] = G
    C = shape[-1] if kind in ("layer", "rms") else shape[1]
    if draw(st.booleans()):
        kw["weight"] = rng.standard_normal(C) * draw(st.sampled_from([1.0, 1e-3, 1e3]))
    if kind != "rms" and draw(st.booleans()):
        kw["bias"] = rng.standard_normal(C)
    if kind == "rms" and draw(st.booleans()):
        kw["weight_offset"] = 1.0
    dy = rng.standard_normal(shape) * 10.0 ** draw(st.sampled_from([0, -50, 50]))
    note(f"band={band} shape={shape} kw={ {n: v for n, v in kw.items() if n not in ('weight', 'bias')} }")
    return x, kw, dy


def _definition(x, kw, dy=None):
    """The definition's result, or None outside its domain (a square, a result or r^3 beyond float64)."""
    with np.errstate(all="ignore"):
        try:
            res = norm_definition(x, **kw, dy=dy)
        except ValueError as e:
            assert "expected" in str(e), e
            return None
    return res


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@SETTINGS
@given(norm_cases())
def test_norm_forms_equal_the_definition(case):
    x, kw, dy = case
    want = _definition(x, kw)
    try:
        got = fast(x, kw)
    except ValueError as e:  # eps = 0 on a zero-variance group, or a result beyond float64: the definition too
        assert want is None, f"the fast form refused ({e}) where the definition is finite"
        return
    assume(want is not None and np.isfinite(x * x).all())
    D.assert_within("norms forward", f"{kw['kind']} y", got, want, 2 * bounds(x, kw))


@SETTINGS
@given(norm_cases())
def test_norm_backwards_equal_the_definition(case):
    x, kw, dy = case
    want = _definition(x, kw, dy)
    try:
        got = fast(x, kw, dy)
    except ValueError as e:
        assert want is None, f"the fast form refused ({e}) where the definition is finite"
        return
    assume(want is not None and np.abs(x).max() < 2.0**300)  # the definition's r^3 stays a normal number
    with np.errstate(over="ignore", invalid="ignore"):
        bnd = bounds(x, kw, dy)
    for name, g, w, bd in zip(("dx", "dw", "db"), got, want, bnd):
        assert (g is None) == (w is None), name
        if g is not None:
            D.assert_within("norms backward", f"{kw['kind']} {name}", g, w, 2 * np.nan_to_num(bd, nan=np.inf))


# ----------------------------------------------------------------------------
# the bound rejects wrong forms (meta-tests)


def _wrong(wrong, x, w, b, dy):
    xc = x - x.mean(-1, keepdims=True)
    if wrong == "unbiased_variance":  # divide by n - 1 (torch.var's default)
        return xc / np.sqrt((xc**2).sum(-1, keepdims=True) / (x.shape[-1] - 1) + 1e-5) * w + b
    if wrong == "eps_outside":  # 1 / (sqrt(v) + eps) where the convention is inside the sqrt
        return xc / (np.sqrt((xc**2).mean(-1, keepdims=True)) + 1e-5) * w + b
    # backward without the mean-of-dxc term: the Jacobian of x - mu dropped
    r = 1 / np.sqrt((xc**2).mean(-1, keepdims=True) + 1e-5)
    dxh = dy * w
    return r * dxh - r**3 * xc * (dxh * xc).mean(-1, keepdims=True)


@pytest.mark.parametrize("wrong", ["unbiased_variance", "eps_outside", "uncentred_backward"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((3, 6)) * 1e-3, rng.standard_normal((3, 6))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    kw = dict(kind="layer", eps=1e-5, weight=w, bias=b)
    if wrong == "uncentred_backward":
        want, bnd = norm_definition(x, **kw, dy=dy)[0], 2 * bounds(x, kw, dy)[0]
        D.assert_within("meta", "right", N.layer_norm_backward(x, dy, w, b)[0], want, bnd)
    else:
        want, bnd = norm_definition(x, **kw), 2 * bounds(x, kw)
        D.assert_within("meta", "right", N.layer_norm(x, w, b), want, bnd)
    with pytest.raises(AssertionError):
        D.assert_within("meta", wrong, _wrong(wrong, x, w, b, dy), want, bnd)


def test_definition_worked_example():
    """x = (1, 3), eps = 0: mu = 2, v = 1, xhat = (-1, 1); RMSNorm: r = 1/sqrt(5), y = (1, 3) / sqrt(5)."""
    x = np.array([[1.0, 3.0]])
    assert norm_definition(x, kind="layer", eps=0.0).tolist() == [[-1.0, 1.0]]
    np.testing.assert_allclose(norm_definition(x, kind="rms", eps=0.0), x / np.sqrt(5), rtol=1e-15)


@SETTINGS
@given(norm_cases(kinds=("layer", "rms"), placements=("inside_sqrt",)))
def test_the_bound_holds_against_a_50_digit_oracle(case):
    """The derivation checked: the definition itself is within (2 x) its one-computation bound of the
    50-digit LayerNorm / RMSNorm (``properties.mp_oracle``; eps inside the sqrt, no affine), plus the
    oracle's own final rounding u |exact|."""
    from properties.mp_oracle import mp_layer_norm, mp_rms_norm

    x, kw, _ = case
    kw = dict(kind=kw["kind"], eps=kw["eps"])
    want = _definition(x, kw)
    assume(want is not None and np.isfinite(x * x).all())
    try:
        exact = (mp_layer_norm if kw["kind"] == "layer" else mp_rms_norm)(x, kw["eps"]).reshape(x.shape)
    except ZeroDivisionError:  # eps = 0 on an exactly constant row: 0 / 0, no exact value to compare with
        assume(False)
    D.assert_within("norms vs 50 digits", "definition", want, exact, bounds(x, kw) + U * np.abs(exact) / 2)


def test_worst_fraction_report():
    """Prints the worst fractions of the bound the tests above observed in this process."""
    D.report("norms forward")
    D.report("norms backward")
    D.report("norms vs 50 digits")
