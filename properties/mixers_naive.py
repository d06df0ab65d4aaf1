"""The naive mixer recurrences in one precision: the baselines of ``properties.precision``.

Each function is the recurrent definition of its refimpl.mixers module evaluated with
``NaiveOps(p)`` (every elementwise step rounded to p, every sum accumulated in float32 and
rounded to p), step by step as an eager framework runs the reference loop in dtype p (fla's
``naive_recurrent_*`` and mamba's ``selective_scan_ref`` are these loops; they upcast to float32,
which is the float32 case). WKV is the log-space weighted average (refimpl.mixers.rwkv4, form
"parallel"), the naive form that stays finite for any key: its exponents (t-1-j) w + k_j are
rounded to p like every other step. Returned as float64.
"""

from __future__ import annotations

import numpy as np

from .precision import NaiveOps


def _q():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def gla(o: NaiveOps, q, k, v, g, scale):
    """o_t = scale S_t^T q_t, S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T; (o (B,H,L,V), S_L (B,H,K,V))."""
    q, k, v = o.r(q), o.r(k), o.r(v)
    B, H, L, K = q.shape
    gg = None if g is None else o.r(g if g.ndim == 4 else g[..., None])
    S = np.zeros((B, H, K, v.shape[3]), dtype=o.compute)
    out = np.empty((B, H, L, v.shape[3]), dtype=o.compute)
    with _q():
        sc = o.r(scale)
        for t in range(L):
            if gg is not None:
                S = o.r(o.r(np.exp(gg[:, :, t]))[..., None] * S)
            S = o.r(S + o.r(k[:, :, t, :, None] * v[:, :, t, None, :]))
            out[:, :, t] = o.r(sc * o.sum(o.r(q[:, :, t, :, None] * S), axis=2))
    return o.out(out), o.out(S)


def gla_normalized(o: NaiveOps, q, k, v, scale, eps):
    """y = scale q S_t / (scale q z_t + eps) (Katharopoulos normaliser, no gate)."""
    ones = np.ones(v.shape[:3] + (1,))
    nd, _ = gla(o, q, k, np.concatenate([v, ones], axis=3), None, scale)
    num, den = o.r(nd[..., :-1]), o.r(nd[..., -1:])
    with _q():
        return o.out(o.r(num / o.r(den + eps)))


def delta(o: NaiveOps, q, k, v, beta, g, scale):
    """S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T, o_t = scale S_t^T q_t."""
    q, k, v = o.r(q), o.r(k), o.r(v)
    beta = o.r(beta if beta.ndim == 4 else beta[..., None])
    B, H, L, K = q.shape
    S = np.zeros((B, H, K, v.shape[3]), dtype=o.compute)
    out = np.empty((B, H, L, v.shape[3]), dtype=o.compute)
    with _q():
        sc = o.r(scale)
        for t in range(L):
            kt = k[:, :, t]
            if g is not None:
                S = o.r(o.r(np.exp(o.r(g[:, :, t])))[..., None, None] * S)
            read = o.sum(o.r(S * kt[..., :, None]), axis=2)
            u = o.r(beta[:, :, t] * o.r(v[:, :, t] - read))
            S = o.r(S + o.r(kt[..., :, None] * u[..., None, :]))
            out[:, :, t] = o.r(sc * o.sum(o.r(q[:, :, t, :, None] * S), axis=2))
    return o.out(out), o.out(S)


def wkv(o: NaiveOps, w, u, k, v):
    """RWKV-4 WKV as the softmax over j of the log weights (t-1-j) w + k_j (j < t), u + k_t (j = t)."""
    w, u, k, v = o.r(w), o.r(u), o.r(k), o.r(v)
    B, H, L, D = k.shape
    t = np.arange(L)
    lag = (t[:, None] - 1 - t[None, :]).astype(o.compute)
    with _q():
        past = o.r(o.r(lag[None, None, :, :, None] * w[None, :, None, None, :]) + k[:, :, None, :, :])
        lw = np.where((lag >= 0)[None, None, :, :, None], past, -np.inf).astype(o.compute)
        lw[:, :, t, t, :] = o.r(u[None, :, None, :] + k)
        m = lw.max(axis=3, keepdims=True)
        e = o.r(np.exp(o.r(lw - m)))
        p = o.r(e / o.sum(e, axis=3, keepdims=True))
        return o.out(o.sum(o.r(p * v[:, :, None, :, :]), axis=3))


def selective_scan(o: NaiveOps, u, delta, A, Bm, Cm, D, z, x0):
    """x_t = exp(delta A) x_{t-1} + delta B_t u_t, y_t = C_t x_t + D u_t, * silu(z); (y, x_L)."""
    u, delta, A, Bm, Cm = (o.r(a) for a in (u, delta, A, Bm, Cm))
    b, H, L, P = u.shape
    G = Bm.shape[1]
    Bg, Cg = np.repeat(Bm, H // G, axis=1), np.repeat(Cm, H // G, axis=1)
    x = np.zeros((b, H, P, A.shape[2]), dtype=o.compute) if x0 is None else o.r(x0)
    ys = np.empty(u.shape, dtype=o.compute)
    with _q():
        for t in range(L):
            dA = o.r(np.exp(o.r(delta[:, :, t, :, None] * A[None])))
            dBu = o.r(o.r(delta[:, :, t, :, None] * Bg[:, :, t, None, :]) * u[:, :, t, :, None])
            x = o.r(o.r(dA * x) + dBu)
            ys[:, :, t] = o.sum(o.r(x * Cg[:, :, t, None, :]), axis=3)
        if D is not None:
            ys = o.r(ys + o.r(o.r(D)[None, :, None] * u))
        if z is not None:
            zz = o.r(z)
            ys = o.r(ys * o.r(zz / o.r(1 + o.r(np.exp(-zz)))))
    return o.out(ys), o.out(x)
