"""Two scaling arguments about normalised activations (docs/scaling.md).

LM-head logits (``logit_variance``): for a token x in R^E and a head row w with i.i.d. entries of
mean 0 and variance sigma^2, the logit l = w . x has, over the weights,

    Var(l) = sigma^2 sum_t x_t^2 = E sigma^2 RMS(x)^2,

so E sigma^2 exactly when x comes out of an RMSNorm with unit gain (RMS(x) = 1, eps aside): the
logits' standard deviation grows like sqrt(E) unless sigma^2 ~ 1/E or the logits are divided by
sqrt(E).

Re-centring before an affine map (``recentred_affine``): for y with mean mu_y,

    W y + b = W (y - mu_y 1) + (b + mu_y W 1)

exactly, for each token. A fixed bias absorbs the shift only when mu_y is the same for every token;
across tokens the part (mu_y - mean mu) W 1 varies and no constant bias removes it
(``constant_bias_residual`` gives the least-squares remainder; it is 0 only when W 1 = 0 or all
means agree).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float_array, finite_result, real_number
from ._validate.formats import token_activations


def logit_variance(x, sigma: float) -> np.ndarray:
    """Var over the head weights of w . x for each token of x (..., E): sigma^2 sum_t x_t^2."""
    x = token_activations(x)
    s = real_number(sigma, "sigma", minimum=0.0)
    with np.errstate(over="ignore"):
        return finite_result(s * s * np.einsum("...e,...e->...", x, x), "the variance", "x, sigma")


def recentred_affine(y, W, b):
    """(W (y - mu_y 1) + (b + mu_y W 1), the per-token bias b + mu_y W 1) for y (T, d), W (d, n), b (n,)."""
    y = as_float_array(y, "y", ndim=2, shape_doc="(T, d)", min_size={1: 1})
    W = as_float_array(W, "W", shape=(y.shape[1], None), shape_doc="(d, n)")
    b = as_float_array(b, "b", shape=(W.shape[1],), shape_doc="(n,)")
    mu = y.mean(axis=1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        bias = b + mu * W.sum(axis=0)
        u = (y - mu) @ W + bias
    return finite_result(u, "the output", "y, W, b"), finite_result(bias, "the bias", "y, W, b")


def constant_bias_residual(y, W) -> float:
    """min over constant b' of the mean squared difference between (y - mu_y 1) W + b' and y W - mean: the
    variance over tokens of mu_y, times ||W 1||^2: sum_n (W 1)_n^2 Var_t(mu_y)."""
    y = as_float_array(y, "y", ndim=2, shape_doc="(T, d)", min_size={1: 1})
    W = as_float_array(W, "W", shape=(y.shape[1], None), shape_doc="(d, n)")
    with np.errstate(over="ignore", invalid="ignore"):
        out = float(np.var(y.mean(axis=1)) * np.sum(W.sum(axis=0) ** 2))
    return finite_result(out, "the residual", "y, W")


__all__ = ["logit_variance", "recentred_affine", "constant_bias_residual"]
