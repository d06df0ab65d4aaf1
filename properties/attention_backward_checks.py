"""The backward checks of the attention kind (moved from ``properties/attention.py``, whose
``PROPERTIES`` lists them and which re-exports them): ``check_backward_finite_differences``
compares an adapter's (dq, dk, dv) with central differences (of its own float64 forward, or, in
a lower precision, of the float64 spec forward: ``spec_gradients_fd``, which does not use
refimpl.attention_backward); ``check_backward_matches_reference`` compares them with
refimpl.attention_backward; both within ``_backward_bounds`` (float64: the forward bound scaled
by the gradient sums' size; lower precisions: ``properties.attention_lowp.backward_kernel_bounds``)
for the cotangent ``_dout``.
"""

from __future__ import annotations

import numpy as np

import refimpl

from . import attention_cases as C
from . import attention_impls
from .attention_check_helpers import _scale
from .attention_lowp import backward_kernel_bounds
from .precision import precision_of
from .tolerance import U64, attention_forward_bounds, compare_close, round_to


def _dout(case, precision):
    """The cotangent of the backward checks: N(0, 1), representable in the adapter's precision."""
    rng = np.random.default_rng(case.seed + 7)
    return round_to(rng.standard_normal(case.q.shape[:3] + (case.v.shape[3],)), precision)


def _backward_bounds(impl, case, dout, ref):
    """(atol_dq, atol_dk, atol_dv) against the float64 spec gradients ``ref``.

    float64: the gradients are sums of at most Lq*G (or Lk) products of the forward
    quantities; the bound is the forward bound scaled by max|dout| * (1 + S) * (Lq*G + Lk),
    with S = scale * max||q|| * max||k|| the score magnitude. Lower precisions: the one
    precision rule, ``properties.attention_lowp.backward_kernel_bounds`` (the naive eager
    backward in that precision, D = rowsum(dO * O), and its rounding floor).
    """
    kw = C.spec_kwargs(case)
    precision = precision_of(impl)
    if precision != "float64":
        return backward_kernel_bounds(case.q, case.k, case.v, dout, ref, C.visible(case), _scale(case), precision,
                                      kw.get("softcap"), kw.get("bias"), kw.get("dropout_mask"),
                                      kw.get("dropout_p", 0.0))
    atol, _ = attention_forward_bounds(case.q, case.k, case.v, scale=kw.get("scale"), bias=kw.get("bias"))
    S = _scale(case) * np.max(np.linalg.norm(case.q, axis=-1)) * np.max(np.linalg.norm(case.k, axis=-1))
    G = case.q.shape[1] // case.k.shape[1]
    mag = (1 + S) * (1 + np.max(np.abs(case.q)) + np.max(np.abs(case.k))) * np.max(np.abs(dout)) \
        * (case.q.shape[2] * G + case.k.shape[2])
    return (atol * mag + 1e-13,) * 3


def check_backward_finite_differences(impl, case):
    """Analytic (dq, dk, dv) agree with central differences of f = sum(dout * out).

    float64 adapters, of their own forward. Directional: for each of q, k, v a random unit
    direction e, compare <grad, e> with (f(x + h e) - f(x - h e)) / 2h, h = 1e-5. Truncation
    error is h^2/6 |f'''| (inputs of magnitude <= 3 and D <= 6 keep |f'''| below ~1e2 here),
    roundoff about u |f| / h ~ 1e-11 |f|; the tolerance 1e-6 (1 + |f| + |<grad,e>|) sits
    orders of magnitude above both and far below the O(1e-2..1) errors of a wrong gradient.

    Lower precisions: a step h far below the precision's resolution cannot be taken through a
    low-precision forward, so every entry of the gradient is compared with the central
    difference of the float64 spec forward (``spec_gradients_fd``, independent of
    refimpl.attention_backward), within the precision's backward bound plus the difference's
    own error estimate.
    """
    precision = precision_of(impl)
    dout = _dout(case, precision)
    grads = impl.backward(case.q, case.k, case.v, dout, **case.kwargs)
    if precision != "float64":
        fd, fd_err = spec_gradients_fd(case, dout)
        for name, g, r, atol, e in zip(("dq", "dk", "dv"), grads, fd, _backward_bounds(impl, case, dout, fd), fd_err):
            compare_close(f"{name} (vs central differences of the spec)", np.asarray(g, np.float64), r, atol + e,
                          f"{impl.name}; {case!r}")
        return
    rng = np.random.default_rng(case.seed + 8)
    h = 1e-5

    def f(q, k, v):
        return float(np.sum(np.asarray(impl.forward(q, k, v, **case.kwargs)[0]) * dout))

    f0 = f(case.q, case.k, case.v)
    for idx, name in enumerate("qkv"):
        x = (case.q, case.k, case.v)[idx]
        e = rng.standard_normal(x.shape)
        e /= np.linalg.norm(e)
        args_p = [case.q, case.k, case.v]
        args_m = [case.q, case.k, case.v]
        args_p[idx] = x + h * e
        args_m[idx] = x - h * e
        fd = (f(*args_p) - f(*args_m)) / (2 * h)
        an = float(np.sum(np.asarray(grads[idx]) * e))
        tol = 1e-6 * (1 + abs(f0) + abs(an))
        if not abs(fd - an) <= tol:
            raise AssertionError(
                f"{impl.name}: d{name} . e = {an:.9g} but central difference gives {fd:.9g} "
                f"(|diff| {abs(fd - an):.2e} > {tol:.2e}); {case!r}"
            )


def spec_gradients_fd(case, dout, h: float = 1e-5):
    """((dq, dk, dv), (err_dq, err_dk, err_dv)): every entry of the gradient of
    f = sum(dout * out) by central differences of the spec's forward in float64 (the
    independent formula ``attention_impls.naive_attention``, vectorised over the batch of
    steps; neither refimpl.attention_backward nor the adapter's forward), and an error bound.

    Entries separate: out row i depends on q row i only, so one step along q[..., d] for all
    rows at once gives dq[..., d] from the per-row f; a step along k[b, h, j, d] (v likewise)
    for all (b, h) at once gives dk[..., j, d] from the f of each (b, kv head). All steps of
    one array run as one batched call. Error: |difference at h - difference at 2h| (the
    truncation error at h is a third of it) plus the float64 roundoff of f,
    8 u sum |dout * out| / h.
    """
    q, k, v = case.q, case.k, case.v
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    steps = np.array([h, -h, 2 * h, -2 * h])
    spec = C.spec_kwargs(case)

    def run(qs, ks, vs, n):  # n copies stacked on the batch axis -> per-copy out * dout
        kw = {key: (np.tile(val, (n, 1, 1, 1)) if isinstance(val, np.ndarray) and val.ndim == 4
                    and val.shape[0] == B > 1 else val) for key, val in spec.items()}
        out = attention_impls.naive_attention(qs.reshape(n * B, Hq, Lq, D), ks.reshape(n * B, Hkv, Lk, D),
                                              vs.reshape(n * B, Hkv, Lk, Dv), **kw)[0]
        return out.reshape(n, B, Hq, Lq, Dv) * dout

    def diff(vals):  # vals (4, ...): f at +h, -h, +2h, -2h
        d1, d2 = (vals[0] - vals[1]) / (2 * h), (vals[2] - vals[3]) / (4 * h)
        return d1, np.abs(d1 - d2)

    n = 4 * D
    qs = np.broadcast_to(q, (4, D) + q.shape).copy()
    for d in range(D):
        qs[:, d, ..., d] += steps[:, None, None, None]
    fq = run(qs, np.broadcast_to(k, (n,) + k.shape), np.broadcast_to(v, (n,) + v.shape), n)
    dq, eq = diff(np.moveaxis(fq.sum(-1).reshape(4, D, B, Hq, Lq), 1, -1))
    grads, errs = [dq], [eq]
    for which, x in (("k", k), ("v", v)):
        width = x.shape[-1]
        n = 4 * Lk * width
        xs = np.broadcast_to(x, (4, Lk, width) + x.shape).copy()
        for j in range(Lk):
            for d in range(width):
                xs[:, j, d, :, :, j, d] += steps[:, None, None]
        arrays = {"q": np.broadcast_to(q, (n,) + q.shape), "k": np.broadcast_to(k, (n,) + k.shape),
                  "v": np.broadcast_to(v, (n,) + v.shape), which: xs.reshape((n,) + x.shape)}
        fx = run(arrays["q"], arrays["k"], arrays["v"], n).reshape(4, Lk, width, B, Hkv, G, Lq, Dv)
        g, e = diff(np.moveaxis(fx.sum(axis=(5, 6, 7)), (1, 2), (-2, -1)))
        grads.append(g)
        errs.append(e)
    out = attention_impls.naive_attention(q, k, v, **spec)[0]
    roundoff = 8 * U64 * float(np.sum(np.abs(out * dout))) / h
    return tuple(grads), tuple(float(np.max(e, initial=0.0)) + roundoff for e in errs)


def check_backward_matches_reference(impl, case):
    """(dq, dk, dv) equal refimpl.attention_backward's within the adapter's precision bound
    (``_backward_bounds``)."""
    dout = _dout(case, precision_of(impl))
    got = impl.backward(case.q, case.k, case.v, dout, **case.kwargs)
    ref = refimpl.attention_backward(case.q, case.k, case.v, dout, **C.spec_kwargs(case))
    for name, g, r, atol in zip(("dq", "dk", "dv"), got, ref, _backward_bounds(impl, case, dout, ref)):
        compare_close(name, g, r, atol, f"{impl.name}; {case!r}")
