"""Assertions for your own tests, the way ``numpy.testing`` and ``torch.testing`` serve theirs.

Each ``assert_*_close`` takes your result, the inputs it was computed from, the options
(the keywords of the matching refimpl function) and the precision your kernel computes in;
computes the spec's float64 result and the *reasoned* bound for that precision (the bounds
of the conformance suite, ``properties/tolerance.py`` and ``properties/precision.py``, with
masks, windows, bias and fully masked rows handled); and raises an ``AssertionError`` naming
the quantity, the worst index, the error and the bound when your result is outside it::

    from refimpl.testing import assert_attention_close
    out, lse = my_kernel(q, k, v, causal=True, window=(128, 0))
    assert_attention_close(out, q, k, v, lse=lse, causal=True, window=(128, 0), precision="bfloat16")

Precision (``precision=``):

* ``"float64"``: the derived float64 bound (a forward error analysis in u = 2^-53, times a
  safety factor 4).
* ``"float32"``, ``"bfloat16"``, ``"float16"``: the flash-attn rule: at most 2x the error of a
  naive computation of the same quantity in that precision from the same inputs, plus a
  derived floor (what no computation in that precision avoids).

Inputs are taken as your kernel saw them: arrays (NumPy, ml_dtypes bfloat16, or anything with
``__array__``; torch tensors are converted with ``.detach().cpu().double()``); for a
precision below float64 they are rounded to it first (a no-op for values already
representable), as the suite draws them. Fully masked rows follow the spec: out 0 and
lse -inf (convert a library's convention first, see ``refimpl.conventions``).

The bound arithmetic lives in the conformance suite's ``properties`` package (installed with
this one); it is imported inside each function, so ``import refimpl`` never imports it. The
norm, RoPE and loss checks use the suite's property modules, which need the ``[test]`` extra
(Hypothesis); the attention and softmax checks need NumPy only.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._validate.accounting import float64_array, precision_name

__all__ = [
    "PRECISIONS",
    "assert_close",
    "attention_bounds",
    "assert_attention_close",
    "attention_grads_bounds",
    "assert_attention_grads_close",
    "assert_softmax_close",
    "assert_logsumexp_close",
    "assert_layer_norm_close",
    "assert_rms_norm_close",
    "assert_rope_close",
    "assert_cross_entropy_close",
]

PRECISIONS = ("float64", "float32", "bfloat16", "float16")

ArrayLike = Any
Window = Optional[Tuple[Optional[int], Optional[int]]]


def _inputs(precision: str, **arrays) -> dict:
    from properties.tolerance import round_to

    return {k: (None if v is None else round_to(float64_array(v, k), precision)) for k, v in arrays.items()}


def assert_close(actual: ArrayLike, expected: ArrayLike, *, atol: float, name: str = "value", context: str = "") -> None:
    """Assert ``|actual - expected| <= atol`` everywhere; the message names the worst index.

    Shapes must match and ``actual`` must be finite. ``atol`` is yours to reason; the other
    functions of this module compute it.
    """
    from properties.tolerance import compare_close

    compare_close(name, float64_array(actual, "actual"), float64_array(expected, "expected"), float(atol), context or "assert_close")


# ----------------------------------------------------------------------------
# attention


def _visible(q: np.ndarray, k: np.ndarray, mask, causal: bool, align: str, window: Window, bias) -> np.ndarray:
    """bool (B, Hq, Lq, Lk): which keys each query sees (refimpl's mask logic; -inf bias hides too)."""
    from .sdpa import AttentionMask

    B, Hq, Lq, _ = q.shape
    Lk = k.shape[2]
    am = AttentionMask(mask, causal, align, window, (B, Hq, Lq, Lk))
    vis = np.broadcast_to(am.tile(slice(None), slice(None)), (B, Hq, Lq, Lk))
    if bias is not None:
        vis = vis & np.isfinite(np.broadcast_to(bias, (B, Hq, Lq, Lk)))
    return vis


def attention_bounds(q: ArrayLike, k: ArrayLike, v: ArrayLike, *, precision: str = "float64", mask=None,
                     causal: bool = False, align: str = "bottom_right", window: Window = None,
                     scale: Optional[float] = None, softcap: Optional[float] = None, bias: ArrayLike = None,
                     block_k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """(ref_out, ref_lse, atol_out, atol_lse): the spec's attention and the bounds a kernel of
    ``precision`` is held to (``properties.tolerance``: ``attention_forward_bounds`` or, with
    ``block_k``, ``flash_forward_bounds`` for float64; ``float32_kernel_bounds``;
    ``lowp_kernel_bounds`` for bfloat16 / float16)."""
    from properties import tolerance as T

    from .sdpa import attention

    precision_name(precision, PRECISIONS)
    a = _inputs(precision, q=q, k=k, v=v, bias=bias)
    q, k, v, bias = a["q"], a["k"], a["v"], a["bias"]
    kw = dict(mask=mask, causal=causal, align=align, window=window, scale=scale, softcap=softcap, bias=bias)
    ref_out, ref_lse = attention(q, k, v, **kw)
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    if precision == "float64":
        if block_k is not None:
            atol_out, atol_lse = T.flash_forward_bounds(q, k, v, block_k=block_k, scale=scale, softcap=softcap,
                                                        bias=bias, lse=ref_lse)
        else:
            atol_out, atol_lse = T.attention_forward_bounds(q, k, v, scale=scale, bias=bias, lse=ref_lse)
    else:
        vis = _visible(q, k, mask, causal, align, window, bias)
        if precision == "float32":
            atol_out, atol_lse = T.float32_kernel_bounds(q, k, v, ref_out, ref_lse, vis, sc, softcap, bias)
        else:
            atol_out, atol_lse = T.lowp_kernel_bounds(q, k, v, ref_out, ref_lse, vis, sc, precision, softcap, bias)
    return ref_out, ref_lse, float(atol_out), float(atol_lse)


def assert_attention_close(out: ArrayLike, q: ArrayLike, k: ArrayLike, v: ArrayLike, *, lse: ArrayLike = None,
                           precision: str = "float64", mask=None, causal: bool = False, align: str = "bottom_right",
                           window: Window = None, scale: Optional[float] = None, softcap: Optional[float] = None,
                           bias: ArrayLike = None, block_k: Optional[int] = None) -> None:
    """Assert ``out`` (and ``lse``, if given) equal ``refimpl.attention(q, k, v, **options)``
    within the bound of ``precision`` (:func:`attention_bounds`).

    q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv); out (B, Hq, Lq, Dv), lse (B, Hq, Lq)
    (natural log). Options as ``refimpl.attention``: ``mask`` (bool array, True = visible, or a
    ``refimpl.masks`` mask), ``causal`` with ``align`` ("bottom_right" | "top_left"), ``window``
    = (left, right) inclusive (None side = unbounded), ``scale`` (default 1/sqrt(D)),
    ``softcap``, ``bias``. ``block_k``: your kernel's key tile, for a float64 tiled kernel (its
    bound grows with the number of online-softmax steps). A fully masked row must give out 0
    and lse -inf; an lse of -inf anywhere else, or a non-finite out, fails.
    """
    from properties.tolerance import compare_close, compare_lse

    ref_out, ref_lse, atol_out, atol_lse = attention_bounds(
        q, k, v, precision=precision, mask=mask, causal=causal, align=align, window=window, scale=scale,
        softcap=softcap, bias=bias, block_k=block_k)
    ctx = f"assert_attention_close, precision {precision}"
    compare_close("out", float64_array(out, "out"), ref_out, atol_out, ctx)
    if lse is not None:
        compare_lse("lse", float64_array(lse, "lse"), ref_lse, atol_lse, ctx)


def _naive_attention_grads(q, k, v, dout, vis, scale, softcap, bias, precision):
    """(dq, dk, dv) computed naively in ``precision`` (``properties.precision.NaiveOps``: every
    elementwise step rounded to it, sums and matmuls accumulated in float32 and rounded), as an
    eager framework's autograd computes them: P recomputed, dV = P^T dO, dP = dO V^T,
    D = rowsum(dO * O), dS = P (dP - D) (times the softcap's 1 - tanh^2), dQ = scale dS K,
    dK = scale dS^T Q; GQA heads summed into their kv head."""
    from properties.precision import NaiveOps

    ops = NaiveOps(precision)
    r, f = ops.r, ops.compute
    B, Hq, Lq, _ = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    qq, kk, vv, do = r(q), r(np.repeat(k, G, axis=1)), r(np.repeat(v, G, axis=1)), r(dout)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        raw = ops.matmul(r(qq * f(scale)), np.swapaxes(kk, -1, -2))
        s = raw
        if softcap is not None:
            t = r(np.tanh(raw / f(softcap)))
            s = r(f(softcap) * t)
        if bias is not None:
            s = r(s + r(np.where(np.isfinite(bias), bias, 0.0)))
        s = np.where(vis, s, f(-np.inf))
        m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # Lk = 0: no key, a fully masked row
        m = np.where(np.isfinite(m), m, f(0))
        e = r(np.exp(s - m))
        l = ops.sum(e, axis=-1, keepdims=True)
        P = r(np.where(l > 0, e / np.where(l > 0, l, f(1)), f(0)))
        o = ops.matmul(P, vv)
        dv = ops.matmul(np.swapaxes(P, -1, -2), do)
        dP = ops.matmul(do, np.swapaxes(vv, -1, -2))
        Dr = ops.sum(r(do * o), axis=-1, keepdims=True)
        dS = r(P * r(dP - Dr))
        if softcap is not None:
            dS = r(dS * r(f(1) - r(t * t)))
        dq = r(ops.matmul(dS, kk) * f(scale))
        dk = r(ops.matmul(np.swapaxes(dS, -1, -2), qq) * f(scale))
    # sizes named (not -1): with B, Hkv or Lk = 0 a -1 is ambiguous and NumPy refuses the reshape
    dk = dk.reshape(B, Hkv, G, Lk, q.shape[-1]).sum(axis=2, dtype=f)
    dv = dv.reshape(B, Hkv, G, Lk, v.shape[-1]).sum(axis=2, dtype=f)
    return tuple(np.asarray(g, dtype=np.float64) for g in (dq, dk, dv))


def attention_grads_bounds(q: ArrayLike, k: ArrayLike, v: ArrayLike, dout: ArrayLike, *, precision: str = "float64",
                           mask=None, causal: bool = False, align: str = "bottom_right", window: Window = None,
                           scale: Optional[float] = None, softcap: Optional[float] = None,
                           bias: ArrayLike = None) -> Tuple[tuple, Tuple[float, float, float]]:
    """((dq, dk, dv) of ``refimpl.attention_backward``, (atol_dq, atol_dk, atol_dv)).

    float64: the suite's backward bound (``properties/attention.py``,
    ``check_backward_matches_reference``): the forward bound times
    max|dout| (1 + S)(1 + max|q| + max|k|)(G Lq + Lk), S = scale max||q|| max||k||, plus 1e-13:
    each gradient entry is a sum of at most G Lq (or Lk) products of forward quantities.
    Lower precisions: the suite's rule, ``properties.attention_lowp.backward_kernel_bounds``
    (2x the error of the eager backward in that precision, the worse of its two orders, plus
    the first-order rounding floor). Never below the float64 bound.
    """
    from properties.tolerance import attention_forward_bounds

    from .sdpa import attention_backward

    precision_name(precision, PRECISIONS)
    a = _inputs(precision, q=q, k=k, v=v, dout=dout, bias=bias)
    q, k, v, dout, bias = a["q"], a["k"], a["v"], a["dout"], a["bias"]
    kw = dict(mask=mask, causal=causal, align=align, window=window, scale=scale, softcap=softcap, bias=bias)
    ref = attention_backward(q, k, v, dout, **kw)
    atol, _ = attention_forward_bounds(q, k, v, scale=scale, bias=bias)
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    qn, kn = float(np.max(np.linalg.norm(q, axis=-1), initial=0.0)), float(np.max(np.linalg.norm(k, axis=-1), initial=0.0))
    S = sc * qn * kn
    G = q.shape[1] // k.shape[1]
    Lq, Lk = q.shape[2], k.shape[2]
    qmax, kmax = float(np.max(np.abs(q), initial=0.0)), float(np.max(np.abs(k), initial=0.0))
    domax = float(np.max(np.abs(dout), initial=0.0))
    mag = (1 + S) * (1 + qmax + kmax) * domax * (Lq * G + Lk)
    b64 = atol * mag + 1e-13
    if precision == "float64":
        return ref, (b64, b64, b64)
    from properties.attention_lowp import backward_kernel_bounds

    vis = _visible(q, k, mask, causal, align, window, bias)
    lowp = backward_kernel_bounds(q, k, v, dout, ref, vis, sc, precision, softcap, bias)
    bounds = [max(b, b64) for b in lowp]
    return ref, tuple(bounds)


def assert_attention_grads_close(dq: ArrayLike, dk: ArrayLike, dv: ArrayLike, q: ArrayLike, k: ArrayLike,
                                 v: ArrayLike, dout: ArrayLike, *, precision: str = "float64", mask=None,
                                 causal: bool = False, align: str = "bottom_right", window: Window = None,
                                 scale: Optional[float] = None, softcap: Optional[float] = None,
                                 bias: ArrayLike = None) -> None:
    """Assert (dq, dk, dv) equal ``refimpl.attention_backward(q, k, v, dout, **options)``
    within the bound of ``precision`` (:func:`attention_grads_bounds`).

    Shapes: dq like q, dk like k, dv like v (GQA: summed over the query heads of each kv
    head); dout like the forward's out. Options as :func:`assert_attention_close`; a fully
    masked row has zero gradients.
    """
    from properties.tolerance import compare_close

    ref, bounds = attention_grads_bounds(q, k, v, dout, precision=precision, mask=mask, causal=causal, align=align,
                                         window=window, scale=scale, softcap=softcap, bias=bias)
    ctx = f"assert_attention_grads_close, precision {precision}"
    for name, got, want, atol in zip(("dq", "dk", "dv"), (dq, dk, dv), ref, bounds):
        compare_close(name, float64_array(got, name), want, atol, ctx)


# ----------------------------------------------------------------------------
# softmax and log-sum-exp


def _row_bound(x: np.ndarray) -> float:
    """The suite's float64 bound for softmax / log-sum-exp entries of rows x
    (``properties.softmax``): 4 (n + 4) u (1 + max|x|), n the row length."""
    from properties.tolerance import U64

    mag = float(np.max(np.abs(np.where(np.isfinite(x), x, 0.0)), initial=0.0))
    return 4 * (x.shape[-1] + 4) * U64 * (1.0 + mag)


def _naive_softmax(x: np.ndarray, precision: str) -> Tuple[np.ndarray, np.ndarray]:
    """(softmax, logsumexp) of the last axis computed naively in ``precision`` (max subtracted)."""
    from properties.precision import NaiveOps

    ops = NaiveOps(precision)
    r, f = ops.r, ops.compute
    xx = r(x)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m = np.max(xx, axis=-1, keepdims=True, initial=-np.inf)  # an empty row: fully masked
        m = np.where(np.isfinite(m), m, f(0))
        e = r(np.exp(xx - m))
        s = ops.sum(e, axis=-1, keepdims=True)
        p = r(np.where(s > 0, e / np.where(s > 0, s, f(1)), f(0)))
        lse = np.where(s[..., 0] > 0, r(m[..., 0] + r(np.log(np.where(s[..., 0] > 0, s[..., 0], f(1))))), -np.inf)
    return np.asarray(p, np.float64), np.asarray(lse, np.float64)


def _softmax_bounds(x: np.ndarray, precision: str, which: int, ref: np.ndarray) -> float:
    from properties import precision as Pr

    b64 = _row_bound(x)
    if precision == "float64":
        return b64
    naive = _naive_softmax(x, precision)[which]
    mag = float(np.max(np.abs(np.where(np.isfinite(ref), ref, 0.0)), initial=0.0))
    # softmax entries: their own rounding plus a float32 row sum of n terms <= 1;
    # lse: its rounding plus the row sum, relative (log), on top of max|x|
    floor = Pr.output_floor(precision, mag, x.shape[-1], 1.0)
    return max(Pr.lowp_bound(naive, ref, floor), b64)


def assert_softmax_close(actual: ArrayLike, x: ArrayLike, *, axis: int = -1, precision: str = "float64") -> None:
    """Assert ``actual`` equals ``refimpl.softmax(x, axis)`` within the bound of ``precision``.

    float64: 4 (n + 4) u (1 + max|x|) per entry (n = the row length; the shift by the row max
    is exact, exp and the sum of n terms add (n + 4) u relative, |x| u from rounding x);
    lower precisions: 2x a naive softmax in that precision (max subtracted, float32 row sum)
    plus the floor u_p max|p| + n u32. A row of -inf (fully masked) must give zeros.
    """
    from properties.tolerance import compare_close

    from .softmax import softmax

    precision_name(precision, PRECISIONS)
    x = np.moveaxis(_inputs(precision, x=x)["x"], axis, -1)
    ref = softmax(x, axis=-1)
    got = np.moveaxis(float64_array(actual, "actual"), axis, -1)
    compare_close("softmax", got, ref, _softmax_bounds(x, precision, 0, ref),
                  f"assert_softmax_close, precision {precision}")


def assert_logsumexp_close(actual: ArrayLike, x: ArrayLike, *, axis: int = -1, precision: str = "float64") -> None:
    """Assert ``actual`` equals ``refimpl.logsumexp(x, axis)`` within the bound of ``precision``
    (as :func:`assert_softmax_close`); an all -inf row must give -inf and only those."""
    from properties.tolerance import compare_lse

    from .softmax import logsumexp

    precision_name(precision, PRECISIONS)
    x = np.moveaxis(_inputs(precision, x=x)["x"], axis, -1)
    ref = logsumexp(x, axis=-1)
    compare_lse("logsumexp", float64_array(actual, "actual"), ref, _softmax_bounds(x, precision, 1, ref),
                f"assert_logsumexp_close, precision {precision}")


# ----------------------------------------------------------------------------
# norms, RoPE, cross-entropy: the bounds of the suite's property modules


def _suite_compare(name: str, got, want, precision: str, float64_bound: float, naive) -> None:
    from properties.precision import compare_layer

    compare_layer(name, float64_array(got, name), want, precision=precision, float64_bound=float(float64_bound), naive=naive,
                  context=f"assert_{name}_close, precision {precision}")


def assert_layer_norm_close(actual: ArrayLike, x: ArrayLike, weight: ArrayLike = None, bias: ArrayLike = None, *,
                            eps: float = 1e-5, precision: str = "float64") -> None:
    """Assert ``actual`` equals ``refimpl.norms.layer_norm(x, weight, bias, eps=eps)`` (over the last
    axis, biased variance, eps inside the square root) within the bound of ``precision``.

    float64: 8 (n + 4) u (max|x| r max|w| + max|b| + 1), r = max 1/sqrt(var + eps) over the rows
    (``properties/norms.py``); lower precisions: 2x a naive LayerNorm in that precision
    (``properties.norms.naive_layer_norm``) plus the layer floor (``properties.precision``).
    """
    from properties import norms as PN

    from . import norms

    precision_name(precision, PRECISIONS)
    a = _inputs(precision, x=x, w=weight, b=bias)
    x, w, b = a["x"], a["w"], a["b"]
    want = norms.layer_norm(x, w, b, eps=eps)
    case = PN.NormCase(x, w, b, np.zeros_like(x), eps, 0)
    bound = PN._bound(case, PN._r_max(x, eps, True, "inside_sqrt"), w)
    _suite_compare("layer_norm", actual, want, precision, bound, lambda: PN.naive_layer_norm(precision, x, w, b, eps))


def assert_rms_norm_close(actual: ArrayLike, x: ArrayLike, weight: ArrayLike = None, *, eps: float = 1e-6,
                          eps_placement: str = "inside_sqrt", weight_offset: float = 0.0,
                          precision: str = "float64") -> None:
    """Assert ``actual`` equals ``refimpl.norms.rms_norm(x, weight, eps=eps, eps_placement=...,
    weight_offset=...)`` within the bound of ``precision`` (``weight_offset=1.0``: Gemma's
    x r (1 + w); ``eps_placement="outside_sqrt"``: x / (sqrt(mean x^2) + eps)).

    float64: the bound of :func:`assert_layer_norm_close` with g = weight_offset + w and r the
    RMSNorm's; lower precisions: 2x ``properties.norms.naive_rms_norm`` plus the layer floor.
    """
    from properties import norms as PN

    from . import norms

    precision_name(precision, PRECISIONS)
    a = _inputs(precision, x=x, w=weight)
    x = a["x"]
    w = a["w"] if a["w"] is not None else np.zeros(x.shape[-1])
    want = norms.rms_norm(x, w, eps=eps, eps_placement=eps_placement, weight_offset=weight_offset)
    case = PN.NormCase(x, w, None, np.zeros_like(x), eps, 0)
    bound = PN._bound(case, PN._r_max(x, eps, False, eps_placement), weight_offset + w)
    _suite_compare("rms_norm", actual, want, precision, bound,
                   lambda: PN.naive_rms_norm(precision, x, w, eps, eps_placement=eps_placement,
                                             weight_offset=weight_offset))


def assert_rope_close(actual: ArrayLike, x: ArrayLike, positions: ArrayLike, *, layout: str = "half",
                      rotary_dim: Optional[int] = None, base: float = 10000.0, scaling: Optional[dict] = None,
                      precision: str = "float64") -> None:
    """Assert ``actual`` equals ``refimpl.apply_rope(x, positions, ...)`` within the bound of ``precision``.

    x (B, H, L, D), positions int (L,) or (B, L). float64: 2 a (|x_a| + |x_b|)(A + 3u) per
    column with A = max m theta (ln(base) + 20) u the angle error and a the attention factor
    (``properties/rope.py``); lower precisions: 2x ``properties.rope.naive_rope`` (angles as
    an eager framework computes them in that precision) plus the layer floor.
    """
    from properties import rope as PR
    from properties.tolerance import U64

    from .rope import apply_rope

    precision_name(precision, PRECISIONS)
    x = _inputs(precision, x=x)["x"]
    positions = np.asarray(positions)
    kw = dict(layout=layout, rotary_dim=rotary_dim, base=base, scaling=scaling)
    want = apply_rope(x, positions, **kw)
    case = PR.RopeCase(x, positions, {k: v for k, v in kw.items() if v is not None}, 0)
    bound = 2 * PR._attn(case) * 2 * float(np.max(np.abs(x), initial=0.0)) * (PR._angle_bound(case) + 3 * U64) + 1e-300
    _suite_compare("rope", actual, want, precision, bound, lambda: PR.naive_rope(precision, x, positions, **kw))


def assert_cross_entropy_close(actual: ArrayLike, logits: ArrayLike, targets: ArrayLike, *,
                               ignore_index: int = -100, precision: str = "float64") -> None:
    """Assert the mean cross-entropy ``actual`` (a scalar) equals the spec's: the mean over the rows
    whose target is not ``ignore_index`` of logsumexp(z) - z_target (0.0 when every row is ignored),
    within the bound of ``precision``.

    logits (N, V), targets int (N,). float64: 8 (V + 4 + N) u (max|z| + 1)
    (``properties/losses.py``); lower precisions: 2x ``properties.losses.naive_cross_entropy``
    plus the layer floor.
    """
    from properties import losses as PL

    from .losses import cross_entropy

    precision_name(precision, PRECISIONS)
    z = _inputs(precision, z=logits)["z"]
    t = np.asarray(targets)
    want = np.float64(cross_entropy(z, t, ignore_index=ignore_index))
    bound = PL._ce_tol(z, len(t))
    _suite_compare("cross_entropy", np.float64(float64_array(actual, "actual")), want, precision, bound,
                   lambda: PL.naive_cross_entropy(precision, z, t, ignore_index))
