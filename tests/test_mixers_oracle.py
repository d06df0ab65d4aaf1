"""The mixer bounds measured against a 50-digit mpmath evaluation of each definition.

``properties/mixers_common.py`` derives |computed - exact| <= gamma_n M for one float64 evaluation
(M: the same computation on absolute values); the properties allow 4 gamma_n M between two forms.
Here every form of the spec is compared with the exact value on seeded small cases, and the
measured error / (gamma_n M) is asserted below 1/2 and printed with -s.
"""

import mpmath
import numpy as np
import pytest

from properties.mixers_common import SAFETY, rounding_bound
from refimpl.mixers import gated as GL
from refimpl.mixers import rwkv4 as RW
from refimpl.mixers import ssm as SSM

mp = mpmath.mp


def _gamma_bound(M, n):
    return rounding_bound(M, n) / SAFETY  # gamma_n M: one evaluation against the exact value


def _mp_gla(q, k, v, g):
    """o_t = sum_{j<=t} sum_c q_tc k_jc exp(G_tc - G_jc) v_j at 50 digits; q already scaled."""
    B, H, L, K = q.shape
    out = np.zeros(v.shape)
    with mpmath.workdps(50):
        for b in range(B):
            for h in range(H):
                G = [[mpmath.mpf(0)] * K]
                for t in range(L):
                    G.append([G[-1][c] + mpmath.mpf(float(g[b, h, t, c])) for c in range(K)])
                for t in range(L):
                    for dv in range(v.shape[3]):
                        acc = mpmath.fsum(mpmath.mpf(float(q[b, h, t, c])) * mpmath.mpf(float(k[b, h, j, c]))
                                          * mpmath.exp(G[t + 1][c] - G[j + 1][c]) * mpmath.mpf(float(v[b, h, j, dv]))
                                          for j in range(t + 1) for c in range(K))
                        out[b, h, t, dv] = float(acc)
    return out


@pytest.mark.parametrize("gate", ["channel", "scalar", "constant"])
@pytest.mark.parametrize("seed", range(3))
def test_gated_linear_attention_forms_against_the_exact_value(seed, gate):
    """Every form against the 50-digit value. A channel gate (B, H, L, K) takes the factored / elementwise
    chunks; one gate per head and step (B, H, L: RetNet, simple GLA) the batched ``_chunked_scalar``, whose
    chunks of 4 and 5 leave a partial last chunk over L = 9; a gate constant in time (RetNet's gamma per
    head) its decay table e^{(t - j) g}, built once for every chunk."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 2, 9, 3))
    v = rng.standard_normal((1, 2, 9, 2))
    shape = {"channel": (1, 2, 9, 3), "scalar": (1, 2, 9), "constant": (1, 2, 1)}[gate]
    g = np.broadcast_to(-rng.random(shape) * 2, (1, 2, 9) + shape[3:])
    assert (GL.GatedSetup(q, k, v, g, 1.0, None).gate is not None) == (gate == "constant")
    exact = _mp_gla(q, k, v, g if gate == "channel" else np.repeat(g[..., None], 3, axis=-1))
    M = GL.gated_linear_attention(np.abs(q), np.abs(k), np.abs(v), g, scale=1.0)[0]
    n = 2 * 9 + 3 + 8 + 9 * float(np.max(-g.sum(axis=2)))
    for form, c in (("recurrent", 64), ("parallel", 64), ("chunked", 4), ("chunked", 5), ("chunked", 64)):
        got = GL.gated_linear_attention(q, k, v, g, scale=1.0, form=form, chunk_size=c)[0]
        ratio = float(np.max(np.abs(got - exact) / _gamma_bound(M, n)))
        print(f"gla {gate} gate, {form} (chunk {c}): error / (gamma_n M) = {ratio:.3g}")
        assert ratio < 0.5


@pytest.mark.parametrize("seed", range(3))
def test_wkv_forms_against_the_exact_value(seed):
    rng = np.random.default_rng(seed)
    L = 10
    k = rng.standard_normal((1, 1, L, 2)) * 20
    v = rng.standard_normal((1, 1, L, 2))
    w, u = -np.exp(rng.standard_normal((1, 2))), rng.standard_normal((1, 2))
    exact = np.zeros(v.shape)
    with mpmath.workdps(50):
        for t in range(L):
            for d in range(2):
                a = [(t - 1 - j) * mpmath.mpf(float(w[0, d])) + mpmath.mpf(float(k[0, 0, j, d])) for j in range(t)]
                a.append(mpmath.mpf(float(u[0, d])) + mpmath.mpf(float(k[0, 0, t, d])))
                wts = [mpmath.exp(x) for x in a]
                exact[0, 0, t, d] = float(mpmath.fsum(wt * mpmath.mpf(float(v[0, 0, j, d])) for j, wt in enumerate(wts)) / mpmath.fsum(wts))
    vmax = np.maximum.accumulate(np.abs(v), axis=2)
    n = np.abs(k).max() + np.abs(u).max() + L * np.abs(w).max() + 2 * L + 8
    for form in RW.FORMS:
        ratio = float(np.max(np.abs(RW.wkv(w, u, k, v, form=form) - exact) / _gamma_bound(2 * vmax, n)))
        print(f"wkv {form}: error / (gamma_n M) = {ratio:.3g}")
        assert ratio < 0.5


@pytest.mark.parametrize("seed", range(3))
def test_selective_scan_forms_against_the_exact_value(seed):
    rng = np.random.default_rng(seed)
    L, P, N = 10, 2, 3
    u = rng.standard_normal((1, 1, L, P))
    delta = np.broadcast_to(rng.random((1, 1, 1, P)), (1, 1, L, P)).copy()
    A = -np.exp(rng.standard_normal((1, P, N)))
    Bm, Cm = (np.broadcast_to(x, (1, 1, L, N)).copy() for x in rng.standard_normal((2, 1, 1, 1, N)))
    exact = np.zeros(u.shape)
    with mpmath.workdps(50):
        for p in range(P):
            dl = mpmath.mpf(float(delta[0, 0, 0, p]))
            for t in range(L):
                exact[0, 0, t, p] = float(mpmath.fsum(
                    mpmath.mpf(float(Cm[0, 0, 0, n])) * mpmath.exp(dl * (t - j) * mpmath.mpf(float(A[0, p, n])))
                    * dl * mpmath.mpf(float(Bm[0, 0, 0, n])) * mpmath.mpf(float(u[0, 0, j, p]))
                    for j in range(t + 1) for n in range(N)))
    M = SSM.selective_scan(np.abs(u), delta, A, np.abs(Bm), np.abs(Cm))[0]
    n = 3 * L + N + 8 + float(np.max(delta.sum(axis=2)[..., None] * -A[None]))
    for form in SSM.FORMS:
        got = SSM.selective_scan(u, delta, A, Bm, Cm, form=form)[0]
        ratio = float(np.max(np.abs(got - exact) / _gamma_bound(M, n)))
        print(f"scan {form}: error / (gamma_n M) = {ratio:.3g}")
        assert ratio < 0.5


@pytest.mark.parametrize("seed", range(3))
def test_delta_rule_forms_against_the_exact_value(seed):
    from refimpl.mixers import delta_rule as DR

    rng = np.random.default_rng(seed)
    L, K, V = 9, 3, 2
    q, k = rng.standard_normal((2, 1, 1, L, K))
    q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
    v = rng.standard_normal((1, 1, L, V))
    beta, g = rng.random((1, 1, L)), -rng.random((1, 1, L))
    exact = np.zeros(v.shape)
    with mpmath.workdps(50):
        S = mpmath.zeros(K, V)
        f = lambda x: mpmath.mpf(float(x))  # noqa: E731
        for t in range(L):
            S = S * mpmath.exp(f(g[0, 0, t]))
            kt = mpmath.matrix([f(x) for x in k[0, 0, t]])
            u = (mpmath.matrix([f(x) for x in v[0, 0, t]]) - S.T * kt) * f(beta[0, 0, t])
            S = S + kt * u.T
            o = S.T * mpmath.matrix([f(x) for x in q[0, 0, t]])
            exact[0, 0, t] = [float(o[i]) for i in range(V)]
    run = np.cumsum(beta * np.linalg.norm(v, axis=-1), axis=2)[..., None]  # |S_t| bound (contraction)
    M = np.linalg.norm(q, axis=-1)[..., None] * run
    n = 2 * L + K + 8 + L * float(-g.sum())
    for form, c in (("recurrent", 64), ("chunked", 4)):
        got = DR.delta_rule(q, k, v, beta, g, scale=1.0, form=form, chunk_size=c)[0]
        ratio = float(np.max(np.abs(got - exact) / _gamma_bound(M, n)))
        print(f"delta {form}: error / (gamma_n M) = {ratio:.3g}")
        assert ratio < 0.5


def _mp_scan(u, delta, A, Bm, Cm, x0):
    """y_t = C_t . x_t with x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t (Euler B), 50 digits, P x N channels."""
    f = lambda x: mpmath.mpf(float(x))  # noqa: E731
    L, P, N = u.shape[2], u.shape[3], A.shape[2]
    out = np.zeros(u.shape)
    with mpmath.workdps(50):
        for p in range(P):
            x = [f(x0[0, 0, p, n]) for n in range(N)]
            for t in range(L):
                dl = f(delta[0, 0, t, p])
                x = [mpmath.exp(dl * f(A[0, p, n])) * x[n] + dl * f(Bm[0, 0, t, n]) * f(u[0, 0, t, p]) for n in range(N)]
                out[0, 0, t, p] = float(mpmath.fsum(f(Cm[0, 0, t, n]) * x[n] for n in range(N)))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_chunked_selective_scan_within_its_derived_bound(seed):
    """The chunked form (ssm module doc: n = 3L + N + 40 + (2c + 1) Dmax, c = CHUNK) on time-varying
    steps, a partial last chunk (L = 21 = 8 + 8 + 5), an initial state, and a band of steps whose
    decay delta |A| reaches 300, so some chunks exceed SPAN_MAX and run the loop while others
    factor exp(S_t) exp(-S_j)."""
    rng = np.random.default_rng(seed)
    L, P, N = 21, 2, 3
    u = rng.standard_normal((1, 1, L, P))
    delta = rng.random((1, 1, L, P)) * np.where(np.arange(L)[:, None] % 9 == 4, 100.0, 1.0)
    A = -np.exp(rng.standard_normal((1, P, N)))
    Bm, Cm = rng.standard_normal((2, 1, 1, L, N))
    x0 = rng.standard_normal((1, 1, P, N))
    exact = _mp_scan(u, delta, A, Bm, Cm, x0)
    M = SSM.selective_scan(np.abs(u), delta, A, np.abs(Bm), np.abs(Cm), initial_state=np.abs(x0))[0]
    D = float(np.max(delta.sum(axis=2)[..., None] * -A[None]))
    n = 3 * L + N + 40 + (2 * SSM.CHUNK + 1) * D
    got = SSM.selective_scan(u, delta, A, Bm, Cm, initial_state=x0, form="chunked")[0]
    ratio = float(np.max(np.abs(got - exact) / _gamma_bound(M, n)))
    print(f"scan chunked (strong decays): error / (gamma_n M) = {ratio:.3g}")
    assert ratio < 0.5


@pytest.mark.parametrize("seed", range(2))
def test_linear_attention_chunked_against_the_exact_value(seed):
    """linear_attention's own chunked form (all chunks batched; chunk 4 over L = 9: a partial last chunk)."""
    from refimpl.mixers import linear_attention as LA

    rng = np.random.default_rng(seed)
    q, k = np.abs(rng.standard_normal((2, 1, 2, 9, 3)))
    v = rng.standard_normal((1, 2, 9, 2))
    exact = _mp_gla(q, k, v, np.zeros(q.shape))
    M = GL.gated_linear_attention(q, k, np.abs(v), None, scale=1.0)[0]
    got = LA.linear_attention(q, k, v, feature_map="identity", normalize=False, form="chunked", chunk_size=4)
    ratio = float(np.max(np.abs(got - exact) / _gamma_bound(M, 2 * 9 + 3 + 8)))
    print(f"linear attention chunked: error / (gamma_n M) = {ratio:.3g}")
    assert ratio < 0.5
