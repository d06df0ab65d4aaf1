"""Trigonometric random Fourier features (Rahimi & Recht 2007) and the softmax kernel they estimate.

docs/mixers.md#trigonometric-random-features. Bochner's theorem: a shift-invariant kernel is
the Fourier transform of a probability density; for the Gaussian kernel that density is N(0, I)::

    exp(-|x - y|^2 / 2) = E_{w ~ N(0, I)} [cos(w . (x - y))]

With m frequencies w_1..w_m (rows of W, (m, d)) and

    phi(x) = m^(-1/2) [cos(W x); sin(W x)]                     (2m features)

the identity cos a cos b + sin a sin b = cos(a - b) gives, exactly,
phi(x) . phi(y) = (1/m) sum_i cos(w_i . (x - y)): a Monte Carlo average whose expectation is the
Gaussian kernel (each term lies in [-1, 1], so Hoeffding bounds its error by
sqrt(2 ln(2 / delta) / m) with probability 1 - delta). The softmax kernel follows from
exp(x . y) = exp(|x|^2 / 2) exp(-|x - y|^2 / 2) exp(|y|^2 / 2):

    phi_sm(x) = exp(|x|^2 / 2) phi(x),   E[phi_sm(x) . phi_sm(y)] = exp(x . y)

(Performer's "trigonometric" estimator, Choromanski et al. 2021 sec. 2.2). Unlike FAVOR+'s
positive features (:func:`refimpl.mixers.linear_attention.favor_features`) these can make a
normaliser sum negative or near zero, which is why FAVOR+ replaced them. The notes'
exp(w . x) / sqrt(m) map is neither (docs/errata.md#e8).

Layout as the rest of :mod:`refimpl.mixers`: x (B, H, L, d); W (m, d).
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array, check_budget, count, finite_result, positive_int, real_number
from .._validate import mixers as VX


def gaussian_frequencies(m: int, d: int, seed) -> np.ndarray:
    """(m, d) frequencies, each row drawn i.i.d. from N(0, I_d) with ``numpy.random.default_rng(seed)``."""
    m, d = positive_int(m, "m"), positive_int(d, "d")
    check_budget("m, d", shape=(m, d), what=f"an ({m}, {d}) frequency matrix")
    return np.random.default_rng(count(seed, "seed", maximum=None)).standard_normal((m, d))


def trig_features(x, W):
    """phi(x) = m^-1/2 [cos(W x); sin(W x)], (B, H, L, 2m): phi(x).phi(y) estimates exp(-|x - y|^2 / 2)."""
    x, W = VX.feature_matrix(x, W, "x")
    check_budget("x, W", shape=x.shape[:3] + (2 * W.shape[0],), what="the features")
    with np.errstate(over="ignore", invalid="ignore"):
        a = x @ W.T
    a = finite_result(a, "an angle W x", "x, W")
    return np.concatenate([np.cos(a), np.sin(a)], axis=-1) / np.sqrt(W.shape[0])


def softmax_trig_features(x, W):
    """phi_sm(x) = exp(|x|^2 / 2) phi(x), (B, H, L, 2m): phi_sm(q).phi_sm(k) estimates exp(q . k) without bias."""
    x, W = VX.feature_matrix(x, W, "x")
    with np.errstate(over="ignore"):
        amp = np.exp(0.5 * np.sum(x * x, axis=-1, keepdims=True))
    amp = finite_result(amp, "exp(|x|^2 / 2)", "x")
    return amp * trig_features(x, W)


def gaussian_kernel(x, y):
    """exp(-|x_i - y_j|^2 / 2) for x (B, H, Lx, d), y (B, H, Ly, d): (B, H, Lx, Ly), the exact kernel."""
    x, y = as_float_array(x, "x", ndim=4), as_float_array(y, "y", ndim=4)
    VX.kernel_points(x, y)
    with np.errstate(over="ignore", invalid="ignore"):
        diff = x[:, :, :, None, :] - y[:, :, None, :, :]
        sq = np.sum(diff * diff, axis=-1)
    return np.exp(-0.5 * np.where(np.isnan(sq), np.inf, sq))


def hoeffding_radius(m: int, delta: float) -> float:
    """sqrt(2 ln(2 / delta) / m): a mean of m independent terms in [-1, 1] is within this of its
    expectation with probability at least 1 - delta."""
    m = positive_int(m, "m")
    delta = real_number(delta, "delta", minimum=0.0, maximum=1.0, min_open=True, max_open=True)
    return float(np.sqrt(2.0 * np.log(2.0 / delta) / m))


__all__ = ["gaussian_frequencies", "gaussian_kernel", "hoeffding_radius", "softmax_trig_features", "trig_features"]
