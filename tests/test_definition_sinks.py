"""Attention with sinks equals its definition (``refimpl.sinks.attention_with_sinks_definition``).

The definition appends the per-head sink logit s_h as one more column of the final scores, takes the
softmax and drops the column (gpt-oss ``sdpa``). The fast form, ``attention_with_sinks``, rescales the
sink-free (out0, lse0) of ``refimpl.attention``: out = out0 sigmoid(lse0 - s_h), lse = logaddexp(lse0,
s_h) (``apply_sinks``). Cases: those of tests/test_definition.py (GQA, masks with fully masked rows,
softcap, bias with -inf, magnitudes across the float64 range) without dropout, sinks from -1e3 to 1e3.

The bound. With (out_b, lse_b) the attention bound of tests/test_definition.py (``error_bounds``, times
1.25 for the sink column, one more term in each sum: out_b >= 4 (Lk + D + 4) u P |V| >= 24 u P |V|),
and kappa = sigmoid(lse0 - s_h) the weight the keys keep,
one computation errs by at most (plus 2^-1060)

    out: kappa out_b + kappa |out0| (lse_b + 4 u (|lse0| + |s_h| + 2))    (kappa' <= kappa: lse0's error
                                                                            carried, the exp and log1p rounded)
    lse: lse_b + 4 u (|lse| + 1)

(a fully masked row is exact in both: out 0, lse s_h), plus 2^-1073 sum_j |v_j| for weights that
underflow (a sink far above the scores, e^(S - s_h) < 2^-1074, on values large enough that the
exact output is still a float64 number). The test asserts |fast - definition| <= 2 x
(both computations' bounds); ``test_the_bound_holds_against_a_50_digit_oracle`` checks the bound
itself against mpmath. Worst observed fraction (``test_worst_fraction_report``, -s): 0.062 (thorough);
0.11 of the bound vs 50 digits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from refimpl.sinks import attention_with_sinks, attention_with_sinks_definition

from . import _definitions as D
from ._definitions import FLOOR, U
from .test_definition import cases, error_bounds


def sinks_bound(q, k, v, kw, sinks, lse0, out0):
    """(out, lse) bounds of one computation."""
    out_b, lse_b = error_bounds(q, k, v, kw)
    out_b = 1.25 * out_b  # the sink column: one more term in each sum (out_b >= 24 u P|V| already covers 4 u of it)
    s = sinks[None, :, None]
    with np.errstate(over="ignore", invalid="ignore"):
        kappa = np.where(np.isneginf(lse0), 0.0, 1 / (1 + np.exp(s - lse0)))
        lse = np.logaddexp(lse0, s)
        a_lse0 = np.where(np.isfinite(lse0), np.abs(lse0), 0.0)
        ob = kappa[..., None] * (out_b + np.abs(out0) * (lse_b + 4 * U * (a_lse0 + np.abs(s) + 2))[..., None])
    G = q.shape[1] // k.shape[1]
    under = 2 * 2.0**-1074 * np.repeat(np.abs(v), G, axis=1).sum(axis=2)[:, :, None, :]  # weights below 2^-1074
    return ob + under + FLOOR, lse_b + 4 * U * (np.abs(lse) + 1)


def _case_with_sinks(case, data):
    """(q, k, v, keywords without dropout, sinks (H,)): one sink logit a head, from zero to +-1e3."""
    q, k, v, kw, _ = case
    kw = {n: x for n, x in kw.items() if n not in ("dropout_mask", "dropout_p")}
    sinks = np.array(data.draw(st.lists(st.sampled_from([0.0, -1e3, -5.0, 1.5, 30.0, 1e3]), min_size=q.shape[1],
                                        max_size=q.shape[1]), "sinks"))
    return q, k, v, kw, sinks


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)


@SETTINGS
@given(cases(), st.data())
def test_attention_with_sinks_equals_the_definition(case, data):
    q, k, v, kw, sinks = _case_with_sinks(case, data)
    try:
        want = attention_with_sinks_definition(q, k, v, sinks, **kw)
    except ValueError as e:  # scores beyond float64: outside the definition's domain
        assert "float64" in str(e), e
        want = None
    try:
        got = attention_with_sinks(q, k, v, sinks, **kw)
    except ValueError as e:  # a result beyond float64: the definition overflows too (or refused)
        assert "float64 range" in str(e) and want is None, e
        return
    assume(want is not None)
    from refimpl import attention
    out0, lse0 = attention(q, k, v, **kw)
    ob, lb = sinks_bound(q, k, v, kw, sinks, lse0, out0)
    D.assert_within("sinks", "out", got[0], want[0], 2 * np.nan_to_num(ob, nan=np.inf))
    D.assert_within("sinks", "lse", got[1], want[1], 2 * lb)


def _mp_sinks(q, k, v, sinks, visible, scale, softcap, bias):
    """(out, lse) at 50 digits (mpmath): the scores, the sink column, softmax, the column dropped."""
    import mpmath

    B, Hq, Lq, Dh = q.shape
    G, Lk, Dv = Hq // k.shape[1], k.shape[2], v.shape[3]
    out, lse = np.zeros((B, Hq, Lq, Dv)), np.zeros((B, Hq, Lq))
    F = lambda t: mpmath.mpf(float(t))  # noqa: E731
    with mpmath.workdps(50):
        for b in range(B):
            for h in range(Hq):
                for i in range(Lq):
                    S = {}
                    for j in range(Lk):
                        if visible[b, h, i, j]:
                            x = F(scale) * mpmath.fsum(F(q[b, h, i, d]) * F(k[b, h // G, j, d]) for d in range(Dh))
                            x = x if softcap is None else F(softcap) * mpmath.tanh(x / F(softcap))
                            S[j] = x if bias is None else x + F(bias[b, h, i, j])
                    m = max(list(S.values()) + [F(sinks[h])])
                    e = {j: mpmath.exp(x - m) for j, x in S.items()}
                    tot = mpmath.fsum(e.values()) + mpmath.exp(F(sinks[h]) - m)
                    lse[b, h, i] = float(m + mpmath.log(tot))
                    for d in range(Dv):
                        out[b, h, i, d] = float(mpmath.fsum(w * F(v[b, h // G, j, d]) for j, w in e.items()) / tot)
    return out, lse


@SETTINGS
@given(cases(), st.data())
def test_the_bound_holds_against_a_50_digit_oracle(case, data):
    """The derivation checked: the definition is within (2 x) its one-computation bound of the same
    computation at 50 digits, plus the final rounding u |exact| / 2."""
    from refimpl import attention
    from refimpl.definition import visibility

    q, k, v, kw, sinks = _case_with_sinks(case, data)
    try:
        want = attention_with_sinks_definition(q, k, v, sinks, **kw)
        out0, lse0 = attention(q, k, v, **kw)
    except ValueError:
        assume(False)
    full = q.shape[:3] + k.shape[2:3]
    visible = np.broadcast_to(visibility(kw.get("mask"), kw.get("causal", False), kw.get("align", "bottom_right"),
                                         kw.get("window"), full), full)
    bias = None if kw.get("bias") is None else np.broadcast_to(kw["bias"], full)
    if bias is not None:
        visible = visible & ~np.isneginf(bias)
    out, lse = _mp_sinks(q, k, v, sinks, visible, kw.get("scale") or 1 / np.sqrt(q.shape[3]), kw.get("softcap"),
                         bias)
    ob, lb = sinks_bound(q, k, v, kw, sinks, lse0, out0)
    D.assert_within("sinks vs 50 digits", "out", want[0], out, np.nan_to_num(ob, nan=np.inf) + U * np.abs(out) / 2)
    D.assert_within("sinks vs 50 digits", "lse", want[1], lse, lb + U * np.abs(lse) / 2)


@pytest.mark.parametrize("wrong", ["sink_scaled", "sink_as_key_with_value", "no_sink"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(9)
    q, k, v = rng.standard_normal((1, 4, 5, 3)), rng.standard_normal((1, 2, 6, 3)), rng.standard_normal((1, 2, 6, 2))
    sinks, kw = rng.standard_normal(4) * 2, dict(causal=True)
    want = attention_with_sinks_definition(q, k, v, sinks, **kw)
    from refimpl import attention
    out0, lse0 = attention(q, k, v, **kw)
    ob, lb = sinks_bound(q, k, v, kw, sinks, lse0, out0)
    D.assert_within("meta", "right", attention_with_sinks(q, k, v, sinks, **kw)[0], want[0], 2 * ob)
    if wrong == "sink_scaled":  # the sink multiplied by the softmax scale like a score
        got = attention_with_sinks(q, k, v, sinks / np.sqrt(3), **kw)[0]
    elif wrong == "sink_as_key_with_value":  # the sink's weight spent on the mean value instead of nothing
        keep = 1 / (1 + np.exp(sinks[None, :, None] - lse0))
        got = out0 * keep[..., None] + (1 - keep[..., None]) * np.repeat(v, 2, axis=1).mean(axis=2, keepdims=True)
    else:
        got = out0
    with pytest.raises(AssertionError):
        D.assert_within("meta", wrong, got, want[0], 2 * ob)


def test_worst_fraction_report():
    D.report("sinks")
    D.report("sinks vs 50 digits")


def test_definition_worked_example():
    """docs/notes.md#attention-sinks: one key with score 0 and s_h = 0 keeps half the weight: out = v / 2,
    lse = log 2; a row with no visible key: out 0, lse s_h."""
    z, v = np.zeros((1, 1, 1, 1)), np.full((1, 1, 1, 1), 3.0)
    out, lse = attention_with_sinks_definition(z, z, v, np.zeros(1))
    assert out[0, 0, 0, 0] == 1.5 and np.isclose(lse[0, 0, 0], np.log(2), rtol=1e-15)
    out, lse = attention_with_sinks_definition(z, z, v, np.array([-2.0]), mask=np.zeros((1, 1), bool))
    assert out[0, 0, 0, 0] == 0.0 and lse[0, 0, 0] == -2.0
