"""Naive baselines of the ffn kind in a lower precision (``properties.precision``): the
activations and their derivatives with every step rounded (float32 constants, scipy's float32 erf
and expit), and the MLP / GLU forward and backward with every matmul accumulated in float32 and
rounded and every elementwise step (bias, activation, gate, dropout scale) rounded, as an eager
framework computes. ``properties.ffn``'s checks hold a low-precision adapter to 2x their error.
"""

from __future__ import annotations

import numpy as np

from refimpl import ffn as Fn

from .precision import naive_ops

_F32 = np.float32


def naive_act(ops, name, u):
    """The activation with every step rounded (float32 constants, scipy's float32 erf / expit)."""
    from scipy.special import erf, expit

    u = ops.r(u)
    with np.errstate(over="ignore", under="ignore"):
        if name == "relu":
            return np.maximum(u, _F32(0))
        if name == "gelu":
            return ops.r(ops.r(_F32(0.5) * u) * ops.r(_F32(1) + ops.r(erf(ops.r(u / _F32(np.sqrt(2.0)))))))
        if name == "gelu_tanh":
            inner = ops.r(u + ops.r(_F32(0.044715) * ops.r(ops.r(u * u) * u)))
            t = ops.r(np.tanh(ops.r(_F32(np.sqrt(2 / np.pi)) * inner)))
            return ops.r(ops.r(_F32(0.5) * u) * ops.r(_F32(1) + t))
        s = ops.r(expit(u))
        return ops.r(u * s) if name == "silu" else s


def naive_act_grad(ops, name, u):
    """d act / du with every step rounded."""
    from scipy.special import erf, expit

    u = ops.r(u)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if name == "relu":
            return (u > 0).astype(ops.compute)
        if name == "gelu":
            cdf = ops.r(_F32(0.5) * ops.r(_F32(1) + ops.r(erf(ops.r(u / _F32(np.sqrt(2.0)))))))
            pdf = ops.r(ops.r(np.exp(ops.r(_F32(-0.5) * ops.r(u * u)))) / _F32(np.sqrt(2 * np.pi)))
            return ops.r(cdf + ops.r(u * pdf))
        if name == "gelu_tanh":
            c, a = _F32(np.sqrt(2 / np.pi)), _F32(0.044715)
            t = ops.r(np.tanh(ops.r(c * ops.r(u + ops.r(a * ops.r(ops.r(u * u) * u))))))
            uc = np.clip(u, _F32(-50), _F32(50))
            inner = ops.r(ops.r(_F32(1) - ops.r(t * t)) * ops.r(c * ops.r(_F32(1) + ops.r(_F32(3) * a * ops.r(uc * uc)))))
            return ops.r(ops.r(_F32(0.5) * ops.r(_F32(1) + t)) + ops.r(_F32(0.5) * ops.r(uc * inner)))
        s = ops.r(expit(u))
        if name == "silu":
            return ops.r(s * ops.r(_F32(1) + ops.r(u * ops.r(_F32(1) - s))))
        return ops.r(s * ops.r(_F32(1) - s))


def _naive_forward(ops, case=None, *, x=None, params=None, activation=None, keep=None, p=0.0):
    """The forward's intermediates, naively (from an FFNCase, or from x, params, activation, keep, p)."""
    if case is not None:
        x, params, activation, keep, p = case.x, case.params, case.activation, case.keep, case.p
    f = params
    glu = isinstance(f, Fn.GLUParams)
    W1, b1 = (f.W_gate, f.b_gate) if glu else (f.W1, f.b1)
    W2, b2 = (f.W_down, f.b_down) if glu else (f.W2, f.b2)

    def lin(x, W, b):
        y = ops.matmul(x, ops.r(W))
        return y if b is None else ops.r(y + ops.r(b))

    x = ops.r(x)
    u = lin(x, W1, b1)
    a = naive_act(ops, activation, u)
    v = lin(x, f.W_up, f.b_up) if glu else None
    g = a if v is None else ops.r(a * v)
    h = g if keep is None else np.where(keep, ops.r(g / ops.compute(1 - p)), ops.compute(0))
    return dict(x=x, u=u, a=a, v=v, h=h, y=lin(h, W2, b2), W1=ops.r(W1), W2=ops.r(W2),
                Wv=ops.r(f.W_up) if glu else None, glu=glu)


def naive_ffn(precision, case):
    """(y,) computed naively in ``precision``."""
    ops = naive_ops(precision)
    return (ops.out(_naive_forward(ops, case)["y"]),)


def naive_ffn_backward(precision, case):
    """{"x": dx, parameter field name: its gradient} computed naively in ``precision``."""
    ops = naive_ops(precision)
    t = _naive_forward(ops, case)
    dy = ops.r(case.dy)
    dh = ops.matmul(dy, t["W2"].T)
    if case.keep is not None:
        dh = np.where(case.keep, ops.r(dh / ops.compute(1 - case.p)), ops.compute(0))
    g_act = naive_act_grad(ops, case.activation, t["u"])
    if t["glu"]:
        dv = ops.r(dh * t["a"])
        du = ops.r(ops.r(dh * t["v"]) * g_act)
        dx = ops.r(ops.matmul(du, t["W1"].T) + ops.matmul(dv, t["Wv"].T))
        names = dict(W_gate=("x", "du"), W_up=("x", "dv"), W_down=("h", "dy"), b_gate="du", b_up="dv", b_down="dy")
    else:
        du = ops.r(dh * g_act)
        dx = ops.matmul(du, t["W1"].T)
        dv = None
        names = dict(W1=("x", "du"), W2=("h", "dy"), b1="du", b2="dy")
    grads = {"du": du, "dv": dv, "dy": dy}
    out = {"x": ops.out(dx)}
    for field, src in names.items():
        if isinstance(src, tuple):
            out[field] = ops.out(ops.matmul(t[src[0]].T, grads[src[1]]))
        else:
            out[field] = ops.out(ops.sum(grads[src], axis=0))
    return out

