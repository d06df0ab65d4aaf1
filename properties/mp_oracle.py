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
