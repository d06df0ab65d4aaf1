"""The logistic function and its companions, accurate over the whole float64 range: one home.

    sigmoid(t)        = 1 / (1 + e^-t)          t >= -700    (SciPy's expit)
                      = e^t                     t < -700     (1 + e^t = 1 in float64)
    mul_sigmoid(x, t) = x sigmoid(t)            below t = -700: (x e^(t/2)) e^(t/2), 1 + e^t = 1 there
    silu(t)           = mul_sigmoid(t, t)       torch ``F.silu``
    softplus(t)       = max(t, 0) + log1p(e^-|t|)
    log_sigmoid(t)    = -softplus(-t)

Why here (issue 21): SciPy's ``expit`` is 1 / (1 + e^-t) for every t, so e^-t overflows below
t = -709.78 and sigmoid(t) = e^t (every digit of it, down to 5e-324 at t = -744.4) comes back as 0;
``u * expit(u)`` then gives silu(-711) = 0 for an exact -1.2e-306. Below -700 the sigmoid is e^t,
computed in range. A product x sigmoid(t) whose sigmoid alone is subnormal (t < -708.4) keeps only the
subnormal's bits (about 9 of them lost at silu(-715), all at silu(-744)) unless e^t is applied as
two normal halves, e^(t/2) twice (t / 2 is exact): ``mul_sigmoid``. log(1 + e^-|t|) by ``log1p``
keeps softplus(t) = e^t exact for t << 0 (log(1 + e^t) rounds 1 + e^t to 1 below t = -37).

Error (tests/test_logistic.py, against 50-digit mpmath over the finite float64 range, the
transition band and the subnormal tails |t| in [700, 750]): each result within
``LOGISTIC_MAX_ULP`` ulps of the exact value, or within one subnormal step (2^-1074) where the
result is subnormal, for exact inputs. sigmoid: one exp (<= 1 ulp), one sum and one quotient
(1/2 ulp each). Dtype: the input's, float32 or float64 (float32 with its own tail,
``TAIL_FLOAT32``; any other dtype and lists become float64); no argument checks (callers validate: refimpl._validate).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit as _expit

from ._exp import exp

LOGISTIC_MAX_ULP = 4.0
"""Stated error of every function here in ulps of the result (the floor: 2^-1074 for a subnormal one)."""

TAIL = -700.0
"""Below this t, e^t < 1e-304: 1 + e^t rounds to 1 and ``mul_sigmoid`` applies e^t in two halves."""
TAIL_FLOAT32 = -80.0
"""The same for float32 input (e^-80 = 1.8e-35; float32's e^-t overflows below -88.7)."""


def _float(t):
    """t as a float32 or float64 array (any other dtype as float64)."""
    t = np.asarray(t)
    return t if t.dtype in (np.float32, np.float64) else t.astype(np.float64)


def _tail(t):
    return TAIL_FLOAT32 if t.dtype == np.float32 else TAIL


def sigmoid(t) -> np.ndarray:
    """1 / (1 + e^-t) elementwise; e^t below t = ``TAIL`` (no overflow; subnormal results kept)."""
    return _sigmoid(_float(t))[0]


def _sigmoid(t):
    """(sigmoid(t), the mask t < TAIL or None where no entry is below it). SciPy's ``expit``
    (1 / (1 + e^-t), one pass: faster than the two-sided NumPy form, 25 against 41 ns per element
    here) is within 2 ulp down to t = -709.78, where e^-t overflows; below TAIL, 1 + e^t rounds to 1
    and sigmoid(t) is e^t to the last bit (the subnormal ones included), computed in range. The
    common path adds one reduction (min t) to expit: benchmarks/logistic_speed.py measured the MoE
    router, the selective scan and the FFN at 0.86-0.98 of their former time, sigmoid alone at 1.05."""
    s = np.asarray(_expit(t))
    if not t.size or not np.min(t) < _tail(t):  # one reduction, no mask, on the common path (NaN: not below)
        return s, None
    tail = t < _tail(t)
    s = s.copy() if s.ndim == 0 else s
    s[tail] = exp(t[tail])
    return s, tail


def mul_sigmoid(x, t) -> np.ndarray:
    """x * sigmoid(t) (broadcast), without the subnormal intermediate: below t = ``TAIL`` it is
    (x e^(t/2)) e^(t/2) (both halves normal for t > -1416; 1 + e^t = 1 there). Float32 only where
    both x and t are float32."""
    t = _float(t)
    x = np.asarray(x, dtype=np.result_type(_float(x), t))
    s, tail = _sigmoid(t)
    out = np.empty(np.broadcast_shapes(x.shape, t.shape), dtype=x.dtype)
    np.multiply(x, s, out=out)
    if tail is not None:
        xb, tb = np.broadcast_arrays(x, t)
        tail = np.broadcast_to(tail, out.shape)
        h = exp(0.5 * tb[tail])
        out[tail] = (xb[tail] * h) * h
    return out


def silu(t) -> np.ndarray:
    """silu(t) = t sigmoid(t) (torch ``F.silu``), by :func:`mul_sigmoid`."""
    t = _float(t)
    return mul_sigmoid(t, t)


def softplus(t) -> np.ndarray:
    """log(1 + e^t) = max(t, 0) + log1p(e^-|t|) (no overflow; e^t itself for t << 0)."""
    t = _float(t)
    return np.maximum(t, 0.0) + np.log1p(exp(-np.abs(t)))


def log_sigmoid(t) -> np.ndarray:
    """log sigmoid(t) = -softplus(-t) = min(t, 0) - log1p(e^-|t|) (never log 0)."""
    t = _float(t)
    return np.minimum(t, 0.0) - np.log1p(exp(-np.abs(t)))


__all__ = ["LOGISTIC_MAX_ULP", "TAIL", "TAIL_FLOAT32", "log_sigmoid", "mul_sigmoid", "sigmoid", "silu", "softplus"]
