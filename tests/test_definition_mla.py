"""MLA's naive and absorbed forms equal the definition (``refimpl.mla.mla_definition``) within a derived bound.

The definition is the naive form over positions 0 .. L-1 built from the other definitions
(``rope_definition``, ``attention_definition``). Fast forms: ``mla_attention`` naive (k_nope, v expanded
per head, ``refimpl.attention``) and absorbed (W_UK folded into the query, W_UV into the output:
attention with one latent key/value head of width d_c + d_rope), each as one prefill and as a prefix
followed by the rest through its cache (``ContiguousCache`` / ``MLALatentCache``).

The bound (first-order, u = 2^-53, gamma_n = n u / (1 - n u); per computation). The projections err by
gamma_dm |x| |W_q| and gamma_dm |x| |W_dkv| (dm = d_model); RoPE adds its bound
(tests/test_definition_rope.py) and carries a pair's input errors (|cos| + |sin| <= 2 per entry). A
score is q_nope . (W_UK c) + q_pe . k_pe in either association, so each computation's score errs by at
most scale (gamma_(dn+dc+dr+2) (|q_nope| |W_UK| |c| + |q_pe| |k_pe|) + d_q_nope |W_UK| |c| + |q_nope|
|W_UK| d_c + d_q_pe |k_pe| + |q_pe| d_k_pe), passed to the attention bound of tests/test_definition.py
(``error_bounds(score_err=...)``) with |v| replaced by V = |c| |W_UV|^T >= |v| (which covers either
association of P c W_UV). The values add P (gamma_(L+dc+2) V + d_c |W_UV|^T); the output projection
adds gamma_(H dv) |o| |W_o| and carries d_o |W_o|. The test asserts |form - definition| <= 2 x (both
computations' bounds); ``test_the_bound_holds_against_a_50_digit_mla`` checks the bound itself.
Worst observed fraction (``test_worst_fraction_report``, -s): 0.012 (thorough); 0.056 of the bound vs 50 digits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from refimpl import mla as MLA
from refimpl.definition import attention_definition
from refimpl.mla import mla_definition
from refimpl.rope import rope_definition, rope_frequencies

from . import _definitions as D
from ._definitions import FLOOR, gamma
from .test_definition import error_bounds
from .test_definition_rope import bound as rope_bound


def _pair_sum(d, layout):
    """d_a + d_b on both entries of each rotated pair (a rotation carries a pair's input errors)."""
    h = d.shape[-1] // 2
    if layout == "half":
        s = d[..., :h] + d[..., h:]
        return np.concatenate([s, s], axis=-1)
    s = d[..., 0::2] + d[..., 1::2]
    return np.repeat(s, 2, axis=-1)


def mla_bound(x, w, scale=None, rope=None):
    """|y - exact| (B, L, d_model) of one computation."""
    rope = {"layout": "interleaved", **(rope or {})}
    B, L, dm = x.shape
    H, dn, dr, dv, dc = w.num_heads, w.d_nope, w.d_rope, w.d_v, w.d_c
    s = MLA.mla_softmax_scale(dn, dr) if scale is None else scale
    m, ax = np.arange(L), np.abs(x)
    heads = lambda t: t.reshape(B, L, H, -1).transpose(0, 2, 1, 3)  # noqa: E731
    q, dq = heads(x @ w.W_q), heads(gamma(dm) * (ax @ np.abs(w.W_q)))
    kv, dkv = x @ w.W_dkv, gamma(dm) * (ax @ np.abs(w.W_dkv))
    c, dc_ = kv[:, None, :, :dc], dkv[:, None, :, :dc]  # (B, 1, L, dc)
    q_pe, k_pe = rope_definition(q[..., dn:], m, **rope), rope_definition(kv[:, None, :, dc:], m, **rope)
    dq_pe = rope_bound(q[..., dn:], m, **rope) + _pair_sum(dq[..., dn:], rope["layout"])
    dk_pe = rope_bound(kv[:, None, :, dc:], m, **rope) + _pair_sum(dkv[:, None, :, dc:], rope["layout"])
    Wuk, Wuv = np.abs(w.W_uk()), np.abs(w.W_uv())  # (H, dn, dc), (H, dv, dc)
    T = lambda t: t.swapaxes(-1, -2)  # noqa: E731
    qW, dqW = np.abs(q[..., :dn]) @ Wuk, dq[..., :dn] @ Wuk  # (B, H, L, dc)
    score_err = s * (gamma(dn + dc + dr + 2) * (qW @ T(np.abs(c)) + np.abs(q_pe) @ T(np.abs(k_pe)))
                     + dqW @ T(np.abs(c)) + qW @ T(dc_) + dq_pe @ T(np.abs(k_pe)) + np.abs(q_pe) @ T(dk_pe))
    # the definition's expanded q and k; V = |c| |W_UV|^T >= |v| in place of v
    kk = (c[:, 0] @ w.W_ukv).reshape(B, L, H, dn + dv).transpose(0, 2, 1, 3)
    qd = np.concatenate([q[..., :dn], q_pe], axis=-1)
    kd = np.concatenate([kk[..., :dn], np.broadcast_to(k_pe, (B, H, L, dr))], axis=-1)
    V = np.abs(c) @ T(Wuv)  # (B, H, L, dv)
    kw = dict(causal=True, scale=s)
    out_b, _ = error_bounds(qd, kd, V, kw, score_err=score_err)
    P, _ = attention_definition(qd, kd, np.broadcast_to(np.eye(L), (B, H, L, L)), **kw)
    o_b = out_b + P @ (gamma(L + dc + 2) * V + dc_ @ T(Wuv))
    o = attention_definition(qd, kd, kk[..., dn:], **kw)[0]
    flat = lambda t: t.transpose(0, 2, 1, 3).reshape(B, L, H * dv)  # noqa: E731
    return flat(o_b) @ np.abs(w.W_o) + gamma(H * dv) * (np.abs(flat(o)) @ np.abs(w.W_o)) + FLOOR


@st.composite
def mla_cases(draw):
    B, L, dm = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    H, dc, dn, dr, dv = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3)),
                         2 * draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = MLA.init_mla_weights(rng, dm, H, dc, dn, dr, dv)
    x = rng.standard_normal((B, L, dm)) * draw(st.sampled_from([1.0, 1.0, 3.0, 30.0, 1e-100]))
    rope = draw(st.sampled_from([None, {"layout": "half"}, {"base": 500000.0}]))
    scale = draw(st.sampled_from([None, None, 0.3]))
    split = draw(st.integers(0, L))
    note(f"x{x.shape} H={H} dc={dc} dn={dn} dr={dr} dv={dv} rope={rope} scale={scale} split={split}")
    return x, w, rope, scale, split


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _with_cache(x, w, absorbed, split, **kw):
    cache = MLA.MLALatentCache(w.d_c, w.d_rope, batch=x.shape[0]) if absorbed else \
        MLA.ContiguousCache(w.num_heads, w.d_nope + w.d_rope, w.d_v, batch=x.shape[0])
    parts = [p for p in (x[:, :split], x[:, split:]) if p.shape[1]]
    return np.concatenate([MLA.mla_attention(p, w, absorbed=absorbed, cache=cache, **kw) for p in parts], axis=1)


@SETTINGS
@given(mla_cases())
def test_mla_forms_equal_the_definition(case):
    x, w, rope, scale, split = case
    want = mla_definition(x, w, scale=scale, rope=rope)
    b = 2 * mla_bound(x, w, scale, rope)
    assert np.isfinite(b).all(), "a vacuous bound (scores too large for the first-order analysis)"
    for absorbed in (False, True):
        name = "absorbed" if absorbed else "naive"
        D.assert_within("MLA", name, MLA.mla_attention(x, w, absorbed=absorbed, scale=scale, rope=rope), want, b)
        D.assert_within("MLA", f"{name} cached", _with_cache(x, w, absorbed, split, scale=scale, rope=rope), want, b)


def _mp_mla(x, w, scale, rope):
    """y at 50 digits (mpmath): the naive form, RoPE by the float64 angles m theta_i, causal softmax."""
    import mpmath

    rope = {"layout": "interleaved", **(rope or {})}
    B, L, dm = x.shape
    H, dn, dr, dv, dc = w.num_heads, w.d_nope, w.d_rope, w.d_v, w.d_c
    s = mpmath.mpf(float(MLA.mla_softmax_scale(dn, dr) if scale is None else scale))
    theta, f = rope_frequencies(dr, rope.get("base", 10000.0), None)
    i = np.arange(dr // 2)
    pa, pb = (i, i + dr // 2) if rope["layout"] == "half" else (2 * i, 2 * i + 1)
    F = lambda a: [[mpmath.mpf(float(t)) for t in row] for row in a]  # noqa: E731
    mm = lambda a, W: [[mpmath.fsum(r[d] * W[d][j] for d in range(len(r))) for j in range(len(W[0]))]  # noqa: E731
                       for r in a]
    Wq, Wdkv, Wukv, Wo = F(w.W_q), F(w.W_dkv), F(w.W_ukv), F(w.W_o)

    def rot(vec, m):
        out = list(vec)
        for a, b, th in zip(pa, pb, theta):
            al = mpmath.mpf(float(m * th))
            c, sn = mpmath.mpf(float(f)) * mpmath.cos(al), mpmath.mpf(float(f)) * mpmath.sin(al)
            out[a], out[b] = c * vec[a] - sn * vec[b], sn * vec[a] + c * vec[b]
        return out

    y = np.zeros_like(x)
    with mpmath.workdps(50):
        for bt in range(B):
            xs = F(x[bt])
            q, kv = mm(xs, Wq), mm(xs, Wdkv)
            c = [r[:dc] for r in kv]
            kpe = [rot(r[dc:], m) for m, r in enumerate(kv)]
            up = mm(c, Wukv)
            o = [[mpmath.mpf(0)] * (H * dv) for _ in range(L)]
            for h in range(H):
                qh = [r[h * (dn + dr):(h + 1) * (dn + dr)] for r in q]
                qh = [r[:dn] + rot(r[dn:], m) for m, r in enumerate(qh)]
                kh = [up[j][h * (dn + dv):h * (dn + dv) + dn] + kpe[j] for j in range(L)]
                vh = [up[j][h * (dn + dv) + dn:(h + 1) * (dn + dv)] for j in range(L)]
                for t in range(L):
                    sc = [s * mpmath.fsum(a * b for a, b in zip(qh[t], kh[j])) for j in range(t + 1)]
                    mx = max(sc)
                    e = [mpmath.exp(z - mx) for z in sc]
                    tot = mpmath.fsum(e)
                    for d in range(dv):
                        o[t][h * dv + d] = mpmath.fsum(e[j] * vh[j][d] for j in range(t + 1)) / tot
            y[bt] = [[float(v) for v in row] for row in mm(o, Wo)]
    return y


@SETTINGS
@given(mla_cases())
def test_the_bound_holds_against_a_50_digit_mla(case):
    """The derivation checked: the definition is within (2 x) its one-computation bound (``mla_bound``)
    of the naive form computed at 50 digits, plus the final rounding u |exact| / 2."""
    x, w, rope, scale, _ = case
    exact = _mp_mla(x, w, scale, rope)
    D.assert_within("MLA vs 50 digits", "definition", mla_definition(x, w, scale=scale, rope=rope), exact,
                    mla_bound(x, w, scale, rope) + 2.0**-53 * np.abs(exact) / 2)


# ----------------------------------------------------------------------------
# the bound rejects wrong forms (meta-tests)


@pytest.mark.parametrize("wrong", ["latent_width_scale", "half_layout", "heads_rolled"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(8)
    w = MLA.init_mla_weights(rng, 6, 2, 4, 3, 4, 3)  # d_rope 4: the layouts differ
    x = rng.standard_normal((1, 5, 6)) * 3
    want, b = mla_definition(x, w), 2 * mla_bound(x, w)
    D.assert_within("meta", "right", MLA.mla_attention(x, w, absorbed=True), want, b)
    if wrong == "latent_width_scale":  # absorbed scores scaled by 1/sqrt(d_c + d_rope), not the naive head dim's
        got = MLA.mla_attention(x, w, absorbed=True, scale=(w.d_c + w.d_rope) ** -0.5)
    elif wrong == "half_layout":  # RoPE pairs (i, i + d/2) where DeepSeek rotates (2i, 2i + 1)
        got = MLA.mla_attention(x, w, absorbed=True, rope={"layout": "half"})
    else:  # head h reads the up-projection of head h + 1
        Wukv = w.W_ukv.reshape(w.d_c, 2, -1)[:, ::-1].reshape(w.d_c, -1)
        wr = MLA.MLAWeights(w.W_q, w.W_dkv, Wukv, w.W_o, w.num_heads, w.d_nope, w.d_rope, w.d_v)
        got = MLA.mla_attention(x, wr, absorbed=True)
    with pytest.raises(AssertionError):
        D.assert_within("meta", wrong, got, want, b)


def test_worst_fraction_report():
    D.report("MLA")
    D.report("MLA vs 50 digits")
