"""A 50-digit mpmath oracle for log-sum-exp and attention (small inputs only).

Used to *measure* the float64 spec's rounding error and show that the bounds in
``properties.tolerance`` hold with a margin. Inputs are converted exactly
(every float64 is a rational number mpmath represents exactly at this precision).
"""

from __future__ import annotations

import mpmath
import numpy as np

DPS = 50


def mp_logsumexp(row) -> mpmath.mpf:
    """log sum exp(x_j) of a 1-D row in 50-digit arithmetic; -inf if every entry is -inf."""
    with mpmath.workdps(DPS):
        vals = [mpmath.mpf(float(x)) for x in row if np.isfinite(x)]
        if not vals:
            return mpmath.mpf("-inf")
        m = max(vals)
        return m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in vals))


def mp_attention(q, k, v, visible, scale, softcap=None, bias=None):
    """(out, lse) as float64 arrays rounded from 50-digit values; q (B,Hq,Lq,D), GQA by h // G.

    ``visible`` bool (B, Hq, Lq, Lk). Scores: scale * q.k, softcap c*tanh(s/c), + bias.
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    out = np.zeros((B, Hq, Lq, Dv))
    lse = np.full((B, Hq, Lq), -np.inf)
    with mpmath.workdps(DPS):
        sc = mpmath.mpf(float(scale))
        for b in range(B):
            for h in range(Hq):
                kh = h // G
                for i in range(Lq):
                    s = {}
                    for j in range(Lk):
                        if not visible[b, h, i, j]:
                            continue
                        x = sc * mpmath.fsum(mpmath.mpf(float(q[b, h, i, d])) * mpmath.mpf(float(k[b, kh, j, d])) for d in range(D))
                        if softcap is not None:
                            c = mpmath.mpf(float(softcap))
                            x = c * mpmath.tanh(x / c)
                        if bias is not None:
                            x = x + mpmath.mpf(float(bias[b, h, i, j]))
                        s[j] = x
                    if not s:
                        continue
                    m = max(s.values())
                    e = {j: mpmath.exp(x - m) for j, x in s.items()}
                    l = mpmath.fsum(e.values())
                    lse[b, h, i] = float(m + mpmath.log(l))
                    for d in range(Dv):
                        out[b, h, i, d] = float(mpmath.fsum(e[j] * mpmath.mpf(float(v[b, kh, j, d])) for j in e) / l)
    return out, lse


# ---------------------------------------------------------------------------
# activations and their derivatives (refimpl.ffn), for the tails: exact at any float64 input


def _mp_act_pair(name: str, u: mpmath.mpf):
    """(act(u), act'(u)) in 50-digit arithmetic (the formulas of refimpl.ffn's docstring). 1 - sigmoid(t) is
    sigmoid(-t), never a difference: at t = 100, 1 - sigmoid(t) = e^-100 would keep 7 of the 50 digits,
    at t = 700 none, while float64 holds sigmoid'(700) = e^-700 to every digit."""
    sig = lambda t: 1 / (1 + mpmath.exp(-t))  # noqa: E731
    if name == "relu":
        return (u if u > 0 else mpmath.mpf(0)), mpmath.mpf(1 if u > 0 else 0)
    if name == "gelu":
        if abs(u) > 60:  # Phi's tail below e^-1800: |u| Phi(-|u|) underflows any float64 (mpmath's erfc needs |u| small)
            Phi = mpmath.mpf(0 if u < 0 else 1)
        else:
            Phi = mpmath.erfc(-u / mpmath.sqrt(2)) / 2
        return u * Phi, Phi + u * mpmath.exp(-u * u / 2) / mpmath.sqrt(2 * mpmath.pi)
    if name == "gelu_tanh":
        c, a = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf(0.044715)
        t = 2 * c * (u + a * u**3)
        s, s_neg = sig(t), sig(-t)
        return u * s, s + 2 * u * s * s_neg * c * (1 + 3 * a * u * u)
    if name == "silu":
        s, s_neg = sig(u), sig(-u)
        return u * s, s * (1 + u * s_neg)
    s, s_neg = sig(u), sig(-u)
    return s, s * s_neg


def mp_act(name: str, u) -> np.ndarray:
    """refimpl.ffn.act(name, u) rounded from 50-digit values (u a small float64 array)."""
    with mpmath.workdps(DPS):
        return np.array([float(_mp_act_pair(name, mpmath.mpf(float(x)))[0]) for x in np.ravel(u)]).reshape(np.shape(u))


def mp_act_grad(name: str, u) -> np.ndarray:
    """refimpl.ffn.act_grad(name, u) rounded from 50-digit values."""
    with mpmath.workdps(DPS):
        return np.array([float(_mp_act_pair(name, mpmath.mpf(float(x)))[1]) for x in np.ravel(u)]).reshape(np.shape(u))


def mp_rms_norm(x, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) per row (last axis), rounded from 50-digit values: any magnitude."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    out = np.zeros_like(x)
    with mpmath.workdps(DPS):
        for i, row in enumerate(x):
            xs = [mpmath.mpf(float(t)) for t in row]
            r = 1 / mpmath.sqrt(mpmath.fsum(t * t for t in xs) / len(xs) + mpmath.mpf(float(eps)))
            out[i] = [float(t * r) for t in xs]
    return out


def mp_layer_norm(x, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) per row (biased variance), rounded from 50-digit values."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    out = np.zeros_like(x)
    with mpmath.workdps(DPS):
        for i, row in enumerate(x):
            xs = [mpmath.mpf(float(t)) for t in row]
            mu = mpmath.fsum(xs) / len(xs)
            r = 1 / mpmath.sqrt(mpmath.fsum((t - mu) ** 2 for t in xs) / len(xs) + mpmath.mpf(float(eps)))
            out[i] = [float((t - mu) * r) for t in xs]
    return out


# ---------------------------------------------------------------------------
# the logistic function and its companions (refimpl.logistic), exact at any float64 input


def _mp_logistic(name: str, t: mpmath.mpf, x: mpmath.mpf):
    sig = 1 / (1 + mpmath.exp(-t))  # no difference anywhere: exact to 50 digits at any t
    if name == "sigmoid":
        return sig
    if name == "mul_sigmoid":
        return x * sig
    if name == "silu":
        return t * sig
    # log1p: 1 + e^-700 at 50 digits is 1, and log(1 + e^t) would be 0 for an exact e^t
    if name == "softplus":
        return max(t, 0) + mpmath.log1p(mpmath.exp(-abs(t)))
    if name == "log_sigmoid":
        return min(t, 0) - mpmath.log1p(mpmath.exp(-abs(t)))
    raise ValueError(f"name: expected one of 'sigmoid', 'mul_sigmoid', 'silu', 'softplus', 'log_sigmoid', got {name!r}")


def mp_logistic(name: str, t, x=None) -> list:
    """refimpl.logistic's ``name`` at each float64 t (and x, for mul_sigmoid), as 50-digit mpf values
    (unrounded, so that a test measures the error in ulps of the exact value). Finite inputs only."""
    t = np.ravel(np.asarray(t, dtype=np.float64))
    x = np.ones_like(t) if x is None else np.ravel(np.asarray(x, dtype=np.float64))
    with mpmath.workdps(DPS):
        return [+_mp_logistic(name, mpmath.mpf(float(a)), mpmath.mpf(float(b))) for a, b in zip(t, x)]
