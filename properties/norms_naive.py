"""Naive baselines of the norm kind in a lower precision (``properties.precision``): LayerNorm,
RMSNorm, their backwards, and BatchNorm / GroupNorm, as an eager framework computes them in that
dtype (two-pass statistics, every elementwise step rounded, sums in float32).
``properties.norms``' checks hold a low-precision adapter to 2x their error.
"""

from __future__ import annotations

import numpy as np

from .precision import naive_ops


def _stats(ops, x, axes, center, eps, eps_placement):
    """(xc, rstd, s) naively: xc = x - mean (or x), v = mean xc^2, rstd = 1/sqrt(v + eps)
    (or 1/(sqrt v + eps)); s = sqrt v (for the outside placement's backward)."""
    c = ops.compute
    mu = ops.r(ops.sum(x, axis=axes, keepdims=True) / c(_count(x, axes))) if center else 0
    xc = ops.r(x - mu)
    v = ops.r(ops.sum(ops.r(xc * xc), axis=axes, keepdims=True) / c(_count(x, axes)))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ops.r(np.sqrt(v))
        rstd = ops.r(1 / ops.r(np.sqrt(ops.r(v + c(eps))))) if eps_placement == "inside_sqrt" else ops.r(1 / ops.r(s + c(eps)))
    return xc, rstd, s


def _count(x, axes):
    return int(np.prod([x.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))


def naive_layer_norm(precision, x, w, b, eps, eps_placement="inside_sqrt"):
    ops = naive_ops(precision)
    xc, rstd, _ = _stats(ops, ops.r(x), -1, True, eps, eps_placement)
    y = ops.r(xc * rstd)
    y = y if w is None else ops.r(y * ops.r(w))
    return ops.out(y if b is None else ops.r(y + ops.r(b)))


def naive_rms_norm(precision, x, w, eps, eps_placement="inside_sqrt", weight_offset=0.0):
    ops = naive_ops(precision)
    x = ops.r(x)
    _, rstd, _ = _stats(ops, x, -1, False, eps, eps_placement)
    g = ops.r(ops.compute(weight_offset) + ops.r(w if w is not None else np.zeros(x.shape[-1])))
    return ops.out(ops.r(ops.r(x * rstd) * g))


def _naive_standardize_backward(ops, dxhat, xhat, rstd, s, center, eps_placement):
    """dx = r (dxhat - mean dxhat - xhat mean(dxhat xhat)) (inside; no mean term uncentred);
    outside: r dxhat - mean dxhat r - xhat mean(dxhat xhat) / sqrt v (0 where v = 0)."""
    m2 = ops.mean(ops.r(dxhat * xhat), keepdims=True)
    if eps_placement == "inside_sqrt":
        t = ops.r(dxhat - ops.mean(dxhat, keepdims=True)) if center else dxhat
        return ops.r(rstd * ops.r(t - ops.r(xhat * m2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(s > 0, ops.r(xhat * ops.r(m2 / np.where(s > 0, s, 1))), 0)
    t = ops.r(dxhat - ops.mean(dxhat, keepdims=True)) if center else dxhat
    return ops.r(ops.r(rstd * t) - corr)


def _rows_sum(ops, a):
    return ops.sum(a.reshape(-1, a.shape[-1]), axis=0)


def naive_layer_norm_backward(precision, x, dy, w, b, eps, eps_placement="inside_sqrt"):
    ops = naive_ops(precision)
    x, dy = ops.r(x), ops.r(dy)
    xc, rstd, s = _stats(ops, x, -1, True, eps, eps_placement)
    xhat = ops.r(xc * rstd)
    dxhat = dy if w is None else ops.r(dy * ops.r(w))
    dx = _naive_standardize_backward(ops, dxhat, xhat, rstd, s, True, eps_placement)
    dw = None if w is None else _rows_sum(ops, ops.r(dy * xhat))
    db = None if b is None else _rows_sum(ops, dy)
    return tuple(None if a is None else ops.out(a) for a in (dx, dw, db))


def naive_rms_norm_backward(precision, x, dy, w, eps, eps_placement="inside_sqrt", weight_offset=0.0):
    ops = naive_ops(precision)
    x, dy = ops.r(x), ops.r(dy)
    _, rstd, s = _stats(ops, x, -1, False, eps, eps_placement)
    xhat = ops.r(x * rstd)
    g = ops.r(ops.compute(weight_offset) + ops.r(w))
    dx = _naive_standardize_backward(ops, ops.r(dy * g), xhat, rstd, s, False, eps_placement)
    return ops.out(dx), ops.out(_rows_sum(ops, ops.r(dy * xhat)))


def naive_channel_norm(precision, x, axes, w, b, eps, groups=None):
    """BatchNorm over ``axes`` (groups None) or GroupNorm (statistics per sample and group)."""
    ops = naive_ops(precision)
    x = ops.r(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if groups is not None:
        xg = x.reshape((x.shape[0], groups, -1))
        xc, rstd, _ = _stats(ops, xg, -1, True, eps, "inside_sqrt")
        xhat = ops.r(xc * rstd).reshape(x.shape)
    else:
        xc, rstd, _ = _stats(ops, x, axes, True, eps, "inside_sqrt")
        xhat = ops.r(xc * rstd)
    return ops.out(ops.r(ops.r(xhat * ops.r(w).reshape(shape)) + ops.r(b).reshape(shape)))
