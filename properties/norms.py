"""Properties of LayerNorm and RMSNorm (kind "norm"), forward and backward, against refimpl.norms.

Adapter: ``layer_norm(x, weight, bias, eps)``, ``rms_norm(x, weight, eps)`` over the last
axis; with capability "backward" also ``layer_norm_backward(x, dy, weight, bias, eps) ->
(dx, dw, db)`` and ``rms_norm_backward(x, dy, weight, eps) -> (dx, dw)``. The RMSNorm
convention is declared: default eps inside the sqrt with g = w (HF Llama / T5, torch);
"gemma_offset": g = 1 + w (HF Gemma); "eps_outside_sqrt": x / (rms + eps) (Zhang & Sennrich).

Tolerance (float64): mean and variance carry relative errors <= (n + 2) u, so x - mu errs by
<= (n + 2) u max|x|, scaled by r <= 1 / sqrt(v + eps); the output errs by about
(n + 4) u (max|x| r |g| + |b|); times 8 for the few further operations. The backward has
two more reductions of the same size: the same form, times r |dy| instead of 1.

Rows are drawn with mean/spread up to 1e8 (``SHIFTS``): the float64 bound above already
scales with max|x| r, which is the mean/spread ratio, and two-pass statistics keep their
error at (n + 2) u max|x| there (measured: refimpl and torch's float64 LayerNorm well inside
it), while a variance taken as E[x^2] - E[x]^2 loses u (mean/spread)^2 relatively: O(1) at
1e8, 1e-8 at 1e4 (``layer_norm_variance_by_moments`` is rejected).

Precision (``properties.precision``): x, w, b and dy are drawn representable in the adapter's
precision; lower precisions are held to 2x the error of the naive computation in that
precision (``naive_layer_norm``, ``naive_rms_norm``, their backwards, ``naive_channel_norm``:
two-pass statistics, every step rounded as an eager framework does) plus
``precision.layer_floor`` (the float64 bound above at u = u32, plus 4 u_p |y|).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import norms as N

from .core import Property
from .precision import compare_layer, invariant_bound, naive_ops, precision_of, round_inputs
from .protocol import Capability, Kind
from .tolerance import U64, compare_close
from .strategy_cache import sampled

KINDS = (
    Kind("norm", "LayerNorm and RMSNorm over the last axis; compared with refimpl.norms",
         {"layer_norm": "layer_norm(x (..., d), weight (d,) | None, bias (d,) | None, eps) -> y",
          "rms_norm": "rms_norm(x (..., d), weight (d,) | None, eps) -> y",
          "layer_norm_backward": "layer_norm_backward(x, dy, weight, bias, eps) -> (dx, dweight | None, dbias | None)",
          "rms_norm_backward": "rms_norm_backward(x, dy, weight, eps) -> (dx, dweight | None)",
          "batch_norm": "batch_norm(x (B, C, ...), weight (C,), bias (C,), eps) -> y (training mode: batch statistics)",
          "group_norm": "group_norm(x (B, C, ...), num_groups, weight (C,), bias (C,), eps) -> y"},
         ("layer_norm", "rms_norm"),
         {"backward": Capability("supplies the analytic gradients", ("layer_norm_backward", "rms_norm_backward")),
          "gemma_offset": Capability("rms_norm scales by (1 + weight) (HF GemmaRMSNorm)"),
          "eps_outside_sqrt": Capability("rms_norm divides by sqrt(mean x^2) + eps (Zhang & Sennrich reference)"),
          "channel_norms": Capability("supplies BatchNorm (training mode) and GroupNorm", ("batch_norm", "group_norm"))},
         conventions={name: f"rms_norm (and its backward) with eps {c.eps_placement.replace('_', ' ')} and weight "
                            f"offset {c.weight_offset:g} (in place of the gemma_offset / eps_outside_sqrt "
                            f"capabilities); eps itself is still passed; {c.source}"
                      for name, c in N.RMSNORM_PRESETS.items()}),
)


@dataclasses.dataclass(frozen=True)
class NormAdapter:
    name: str
    layer_norm: Callable
    rms_norm: Callable
    layer_norm_backward: Optional[Callable] = None
    rms_norm_backward: Optional[Callable] = None
    batch_norm: Optional[Callable] = None
    group_norm: Optional[Callable] = None
    capabilities: frozenset = frozenset({"backward"})
    kind: str = "norm"
    precision: str = "float64"


def _rms_conv(adapter):
    """RMSNorm's eps placement and weight offset for an adapter or its Declared view: those of
    its ``convention`` (a key of refimpl.norms.RMSNORM_PRESETS) if it names one, else of its
    capabilities."""
    preset = N.RMSNORM_PRESETS.get(getattr(adapter, "convention", None))
    if preset is not None:
        return dict(eps_placement=preset.eps_placement, weight_offset=preset.weight_offset)
    caps = getattr(adapter, "capabilities", adapter)
    return dict(eps_placement="outside_sqrt" if "eps_outside_sqrt" in caps else "inside_sqrt",
                weight_offset=1.0 if "gemma_offset" in caps else 0.0)


@dataclasses.dataclass(frozen=True)
class NormCase:
    x: np.ndarray
    w: Optional[np.ndarray]
    b: Optional[np.ndarray]
    dy: np.ndarray
    eps: float
    seed: int

    def __repr__(self):
        return (f"NormCase(x{self.x.shape}, max|x|={np.abs(self.x).max():.3g}, weight={self.w is not None}, "
                f"bias={self.b is not None}, eps={self.eps}, seed={self.seed})")


#: mean / spread of a drawn row: centred, shifted, and the hard cases where a variance taken
#: as E[x^2] - E[x]^2 cancels (1e4: 1e-8 relative in float64; 1e8: all of it)
SHIFTS = (0.0, 0.0, 5.0, 1e2, 1e4, 1e8)


@st.composite
def norm_case(draw, caps=None, zero_mean=False):
    precision = getattr(caps, "precision", "float64")
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d = draw(sampled([1, 2, 3, 8, 33]))
    shape = (draw(st.integers(1, 3)), d)
    scale = draw(sampled([1.0, 1e-3, 30.0]))  # small rows: eps dominates, so its placement shows
    # float16 tops out at 65504: keep its rows (and their squares' float32 sums) in range
    shifts = [s for s in SHIFTS if precision != "float16" or (abs(s) + 6) * scale < 2**14]
    x = rng.standard_normal(shape) * scale + draw(sampled(shifts)) * scale
    if draw(st.booleans()):
        x[0] = x[0, 0]  # a constant row: zero variance
    if zero_mean:  # integers summing to 0 times a power of two: the mean is exactly 0 in float64
        k = rng.integers(-1000, 1000, shape)
        k[:, -1] = -k[:, :-1].sum(axis=-1)
        x = k * 2.0 ** int(np.round(np.log2(scale))) / 512
    w = rng.standard_normal(d) if draw(st.booleans()) else None
    b = rng.standard_normal(d) if draw(st.booleans()) else None
    eps = draw(sampled([1e-6, 1e-5, 1e-2, 1.0]))
    x, w, b, dy = round_inputs(precision, x, w, b, rng.standard_normal(shape))
    return NormCase(x, w, b, dy, eps, seed)


def _bound(case, r_max, g, extra=1.0):
    n = case.x.shape[-1]
    gmax = 1.0 if g is None else np.abs(g).max()
    bmax = 0.0 if case.b is None else np.abs(case.b).max()
    return 8 * (n + 4) * U64 * (np.abs(case.x).max() * r_max * gmax * extra + bmax + extra)


def _backward_bound(case, r_max, g, dyn):
    """Bound on the backward's entries (before the sum over rows of dweight / dbias).

    dx = r (g dy - mean(g dy) - xhat mean(g dy xhat)) (RMSNorm: r g dy - xhat mean(g dy xhat)):
    each product and mean of g dy xhat errs by about (n + 4) u |g| |dy| (1 + |xhat|^2) before
    the factor r, with |xhat| <= r max|x|, so r |g| |dy| (1 + (r max|x|)^2) is dx's scale: a
    d = 1 row with eps = 1e-6 has r = 1000, and torch's dx (exactly 0 in exact arithmetic) is
    r |g dy| u there. dweight = sum dy xhat and dbias = sum dy are covered by the first terms.
    """
    x_max = np.abs(case.x).max()
    gmax = 1.0 if g is None else np.abs(g).max()
    dx_scale = r_max * gmax * dyn * (1 + (r_max * x_max) ** 2)
    extra = dyn * (1 + r_max * x_max)
    return (_bound(case, r_max, g, extra=extra) + 8 * (case.x.shape[-1] + 4) * U64 * dx_scale) * case.x.shape[-1]


def _r_max(x, eps, center, placement):
    xc = x - x.mean(axis=-1, keepdims=True) if center else x
    v = np.mean(xc * xc, axis=-1)
    return float(np.max(1 / np.sqrt(v + eps) if placement == "inside_sqrt" else 1 / (np.sqrt(v) + eps)))


def _backward_terms(x, dy, g, eps, center, placement):
    """Sizes of the terms of dx, dweight, dbias (for ``precision.layer_floor``): dx =
    r (dxhat - mean dxhat - xhat mean(dxhat xhat)) cancels (to 0 on a two-element row), so its
    terms r (|dxhat| + |mean dxhat| + |xhat| |mean(dxhat xhat)|) set the size of one rounding
    of them; dweight and dbias sum |dy xhat| and |dy| over the rows."""
    xc = x - x.mean(-1, keepdims=True) if center else x
    v = np.mean(xc * xc, -1, keepdims=True)
    s = np.sqrt(v)
    r = 1 / np.sqrt(v + eps) if placement == "inside_sqrt" else 1 / (s + eps)
    xhat = xc * r
    dxhat = dy * (1.0 if g is None else g)
    m2 = np.abs(np.mean(dxhat * xhat, -1, keepdims=True))
    corr = np.abs(xhat) * m2 * (r if placement == "inside_sqrt" else np.where(s > 0, 1 / np.where(s > 0, s, 1), 0))
    t_dx = r * np.abs(dxhat) + corr + (r * np.abs(np.mean(dxhat, -1, keepdims=True)) if center else 0)
    rows = tuple(range(x.ndim - 1))
    return float(t_dx.max()), float(np.abs(dy * xhat).sum(rows).max()), float(np.abs(dy).sum(rows).max())


def _affine_terms(y, b):
    """Sizes of xhat g and b in y = xhat g + b (they may cancel)."""
    bmax = 0.0 if b is None else float(np.abs(b).max())
    return float(np.abs(y - (0 if b is None else b)).max()) + bmax


def check_layer_norm(impl, case: NormCase):
    """layer_norm equals (x - mu) / sqrt(var + eps) * w + b (biased variance, eps inside)."""
    p = precision_of(impl)
    got = impl.layer_norm(case.x, case.w, case.b, case.eps)
    want = N.layer_norm(case.x, case.w, case.b, eps=case.eps)
    compare_layer("layer_norm", got, want, precision=p,
                  float64_bound=_bound(case, _r_max(case.x, case.eps, True, "inside_sqrt"), case.w),
                  naive=lambda: naive_layer_norm(p, case.x, case.w, case.b, case.eps), magnitude=_affine_terms(want, case.b),
                  context=f"{impl.name}; {case!r}")


def check_rms_norm(impl, case: NormCase):
    """rms_norm equals x r g for the declared convention (eps placement, g = w or 1 + w)."""
    p = precision_of(impl)
    conv = _rms_conv(impl)
    w = case.w if case.w is not None else np.zeros(case.x.shape[-1])  # a weight, so that 1 + w vs w shows
    got = impl.rms_norm(case.x, w, case.eps)
    want = N.rms_norm(case.x, w, eps=case.eps, **conv)
    r = _r_max(case.x, case.eps, False, conv["eps_placement"])
    compare_layer("rms_norm", got, want, precision=p, float64_bound=_bound(case, r, conv["weight_offset"] + w),
                  naive=lambda: naive_rms_norm(p, case.x, w, case.eps, **conv), context=f"{impl.name}; {case!r}")


def check_backward(impl, case: NormCase):
    """The analytic gradients equal refimpl.norms' (themselves checked against torch and finite differences)."""
    p = precision_of(impl)
    ctx = f"{impl.name}; {case!r}"
    dyn = np.abs(case.dy).max()
    r = _r_max(case.x, case.eps, True, "inside_sqrt")
    got = impl.layer_norm_backward(case.x, case.dy, case.w, case.b, case.eps)
    want = N.layer_norm_backward(case.x, case.dy, case.w, case.b, eps=case.eps)
    tol = _backward_bound(case, r, case.w, dyn)
    naive = naive_layer_norm_backward(p, case.x, case.dy, case.w, case.b, case.eps) if p != "float64" else (None,) * 3
    terms = _backward_terms(case.x, case.dy, case.w, case.eps, True, "inside_sqrt")
    for name, g_, w_, n_, t_ in zip(("dx", "dweight", "dbias"), got, want, naive, terms):
        if (g_ is None) != (w_ is None):
            raise AssertionError(f"layer_norm_backward {name}: got {g_ is None and 'None' or 'an array'}; {ctx}")
        if w_ is not None:
            compare_layer(f"layer_norm_backward {name}", g_, w_, precision=p, float64_bound=tol * case.x.shape[0],
                          naive=n_, magnitude=t_, context=ctx)
    conv = _rms_conv(impl)
    w = case.w if case.w is not None else np.zeros(case.x.shape[-1])
    got = impl.rms_norm_backward(case.x, case.dy, w, case.eps)
    want = N.rms_norm_backward(case.x, case.dy, w, eps=case.eps, **conv)
    r = _r_max(case.x, case.eps, False, conv["eps_placement"])
    tol = _backward_bound(case, r, conv["weight_offset"] + w, dyn)
    naive = naive_rms_norm_backward(p, case.x, case.dy, w, case.eps, **conv) if p != "float64" else (None,) * 2
    terms = _backward_terms(case.x, case.dy, conv["weight_offset"] + w, case.eps, False, conv["eps_placement"])
    for name, g_, w_, n_, t_ in zip(("dx", "dweight"), got, want, naive, terms):
        compare_layer(f"rms_norm_backward {name}", g_, w_, precision=p, float64_bound=tol * case.x.shape[0],
                      naive=n_, magnitude=t_, context=ctx)


def check_rms_equals_layer_norm_on_zero_mean(impl, case: NormCase):
    """docs/notes.md#norms: on rows with mean 0, RMSNorm (g = w) is LayerNorm without bias."""
    p = precision_of(impl)
    conv = _rms_conv(impl)
    w = case.w if case.w is not None else np.ones(case.x.shape[-1])
    ln = impl.layer_norm(case.x, w, None, case.eps)
    placement = conv["eps_placement"]
    if placement == "outside_sqrt":  # the identity holds per eps placement
        ln = N.layer_norm(case.x, w, None, eps=case.eps, eps_placement="outside_sqrt")
    rms = impl.rms_norm(case.x, w - conv["weight_offset"], case.eps)
    r = _r_max(case.x, case.eps, False, placement)
    spec = N.layer_norm(case.x, w, None, eps=case.eps, eps_placement=placement)

    def naive():  # both sides, naively in the precision, against the one exact value
        return np.concatenate([naive_rms_norm(p, case.x, w, case.eps, eps_placement=placement).ravel(),
                               naive_layer_norm(p, case.x, w, None, case.eps, eps_placement=placement).ravel()])

    tol = invariant_bound(p, 2 * _bound(case, r, w), naive, np.concatenate([spec.ravel(), spec.ravel()]))
    compare_close("rms_norm vs layer_norm (zero-mean rows)", rms, ln, tol, f"{impl.name}; {case!r}; precision {p}")


@dataclasses.dataclass(frozen=True)
class ChannelCase:
    x: np.ndarray
    groups: int
    w: np.ndarray
    b: np.ndarray
    eps: float
    seed: int

    def __repr__(self):
        return f"ChannelCase(x{self.x.shape}, groups={self.groups}, eps={self.eps}, seed={self.seed})"


@st.composite
def channel_case(draw, caps=None):
    precision = getattr(caps, "precision", "float64")
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    G = draw(sampled([1, 2, 3]))
    C = G * draw(st.integers(1, 3))
    shape = (draw(st.integers(2, 4)), C) + tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    # per-channel offsets and scales, so that statistics over the wrong axes are visibly different
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, C) + (1,) * (len(shape) - 2)) \
        + rng.standard_normal((1, C) + (1,) * (len(shape) - 2)) * 2 + rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1))
    x, w, b = round_inputs(precision, x, rng.standard_normal(C), rng.standard_normal(C))
    return ChannelCase(x, G, w, b, draw(sampled([1e-5, 1e-2])), seed)


def check_channel_norms(impl, case: ChannelCase):
    """BatchNorm normalises each channel over (batch, spatial); GroupNorm each sample's group of
    channels over (channels in the group, spatial) (docs/notes.md#norms; torch's functional forms)."""
    ctx = f"{impl.name}; {case!r}"
    n = case.x.size // case.x.shape[1]
    tol = 16 * (n + case.x[0].size + 4) * U64 * (np.abs(case.x).max() / np.sqrt(case.eps) * np.abs(case.w).max()
                                                 + np.abs(case.b).max() + 1)
    p = precision_of(impl)
    bn_axes = (0,) + tuple(range(2, case.x.ndim))
    shape = (1, -1) + (1,) * (case.x.ndim - 2)
    want = N.batch_norm(case.x, case.w, case.b, eps=case.eps)[0]
    compare_layer("batch_norm", impl.batch_norm(case.x, case.w, case.b, case.eps), want, precision=p,
                  float64_bound=tol, naive=lambda: naive_channel_norm(p, case.x, bn_axes, case.w, case.b, case.eps),
                  magnitude=_affine_terms(want, case.b.reshape(shape)), context=ctx)
    want = N.group_norm(case.x, case.groups, case.w, case.b, eps=case.eps)
    compare_layer("group_norm", impl.group_norm(case.x, case.groups, case.w, case.b, case.eps), want, precision=p,
                  float64_bound=tol,
                  naive=lambda: naive_channel_norm(p, case.x, None, case.w, case.b, case.eps, groups=case.groups),
                  magnitude=_affine_terms(want, case.b.reshape(shape)), context=ctx)


# ----------------------------------------------------------------------------
# naive baselines in a precision (properties.precision): what an eager framework computes in
# that dtype, two-pass statistics, every elementwise step rounded, sums in float32


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


# ----------------------------------------------------------------------------
# adapters


def _ref(name="refimpl.norms", caps=frozenset({"backward", "channel_norms"})):
    conv = _rms_conv(caps)
    return NormAdapter(
        name,
        lambda x, w, b, eps: N.layer_norm(x, w, b, eps=eps),
        lambda x, w, eps: N.rms_norm(x, w, eps=eps, **conv),
        lambda x, dy, w, b, eps: N.layer_norm_backward(x, dy, w, b, eps=eps),
        lambda x, dy, w, eps: N.rms_norm_backward(x, dy, w, eps=eps, **conv),
        lambda x, w, b, eps: N.batch_norm(x, w, b, eps=eps)[0],
        lambda x, G, w, b, eps: N.group_norm(x, G, w, b, eps=eps),
        caps,
    )


def _bn_per_sample(x, w, b, eps):
    """Statistics per sample over (C, spatial): a LayerNorm, not a BatchNorm."""
    axes = tuple(range(1, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * w.reshape(shape) + b.reshape(shape)


def _gn_pooled_over_batch(x, G, w, b, eps):
    """Group statistics pooled over the whole batch."""
    B, C = x.shape[:2]
    xg = x.reshape((B, G, C // G) + x.shape[2:])
    axes = (0,) + tuple(range(2, xg.ndim))
    y = ((xg - xg.mean(axis=axes, keepdims=True)) / np.sqrt(xg.var(axis=axes, keepdims=True) + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * w.reshape(shape) + b.reshape(shape)


def _ln_unbiased(x, w, b, eps):
    n = x.shape[-1]
    xc = x - x.mean(-1, keepdims=True)
    y = xc / np.sqrt((xc**2).sum(-1, keepdims=True) / max(n - 1, 1) + eps)
    return (y if w is None else y * w) + (0 if b is None else b)


def _ln_backward_no_mean_term(x, dy, w, b, eps):
    """Drops the -mean(dxhat) term of dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))."""
    dx, dw, db = N.layer_norm_backward(x, dy, w, b, eps=eps)
    dxhat = dy if w is None else dy * w
    return dx + np.mean(dxhat, axis=-1, keepdims=True) / np.sqrt(np.var(x, axis=-1, keepdims=True) + eps), dw, db


def _rms_backward_detached_r(x, dy, w, eps):
    """Treats r as a constant (a 'detached' normaliser): dx = r g dy."""
    r = 1 / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
    return r * dy * (1.0 if w is None else w), np.sum(dy * x * r, axis=tuple(range(x.ndim - 1)))


def _ln_variance_by_moments(x, w, b, eps):
    """var = E[x^2] - E[x]^2 (one pass): cancels for rows whose mean dwarfs their spread."""
    mu = x.mean(-1, keepdims=True)
    var = np.maximum((x * x).mean(-1, keepdims=True) - mu * mu, 0.0)
    y = (x - mu) / np.sqrt(var + eps)
    return (y if w is None else y * w) + (0 if b is None else b)


def in_precision(adapter, precision: str, name: str | None = None):
    """``adapter`` declaring ``precision``, each float result rounded to it (a kernel storing
    its outputs in that dtype; used to make low-precision wrong adapters of a float64 mistake)."""
    from .precision import round_inputs as _r

    def wrap(fn):
        if fn is None:
            return None

        def call(*a):
            out = fn(*a)
            if isinstance(out, tuple):
                return tuple(None if o is None else _r(precision, o) for o in out)
            return _r(precision, out)
        return call

    methods = {f: wrap(getattr(adapter, f)) for f in ("layer_norm", "rms_norm", "layer_norm_backward",
                                                      "rms_norm_backward", "batch_norm", "group_norm")}
    return dataclasses.replace(adapter, name=name or f"{adapter.name}[{precision}]", precision=precision, **methods)


_REF = _ref()
REFIMPL = _REF
REFIMPL_GEMMA = _ref("refimpl.norms[hf_gemma]", frozenset({"backward", "gemma_offset"}))
REFIMPL_ZS = _ref("refimpl.norms[zhang_sennrich]", frozenset({"backward", "eps_outside_sqrt"}))
BUNDLED = [REFIMPL, REFIMPL_GEMMA, REFIMPL_ZS]

WRONG = {
    "rms_eps_outside_sqrt_declared_inside": dataclasses.replace(
        _REF, name="wrong[rms_eps_outside_sqrt_declared_inside]",
        rms_norm=lambda x, w, eps: N.rms_norm(x, w, eps=eps, eps_placement="outside_sqrt")),
    "rms_eps_inside_sqrt_declared_outside": dataclasses.replace(
        REFIMPL_ZS, name="wrong[rms_eps_inside_sqrt_declared_outside]",
        rms_norm=lambda x, w, eps: N.rms_norm(x, w, eps=eps)),
    "gemma_missing_one_plus_w": dataclasses.replace(
        REFIMPL_GEMMA, name="wrong[gemma_missing_one_plus_w]", rms_norm=lambda x, w, eps: N.rms_norm(x, w, eps=eps)),
    "layer_norm_unbiased_variance": dataclasses.replace(_REF, name="wrong[layer_norm_unbiased_variance]",
                                                        layer_norm=_ln_unbiased),
    "layer_norm_eps_outside_sqrt": dataclasses.replace(
        _REF, name="wrong[layer_norm_eps_outside_sqrt]",
        layer_norm=lambda x, w, b, eps: N.layer_norm(x, w, b, eps=eps, eps_placement="outside_sqrt")),
    "layer_norm_backward_missing_mean_term": dataclasses.replace(
        _REF, name="wrong[layer_norm_backward_missing_mean_term]", layer_norm_backward=_ln_backward_no_mean_term),
    "rms_backward_detached_normaliser": dataclasses.replace(
        _REF, name="wrong[rms_backward_detached_normaliser]", rms_norm_backward=_rms_backward_detached_r),
    "batch_norm_statistics_per_sample": dataclasses.replace(
        _REF, name="wrong[batch_norm_statistics_per_sample]", batch_norm=_bn_per_sample),
    "group_norm_statistics_over_batch": dataclasses.replace(
        _REF, name="wrong[group_norm_statistics_over_batch]", group_norm=_gn_pooled_over_batch),
    "layer_norm_variance_by_moments": dataclasses.replace(
        _REF, name="wrong[layer_norm_variance_by_moments]", layer_norm=_ln_variance_by_moments),
}
# the same mistakes made by float32 / bfloat16 kernels (outputs stored in that precision): the
# low-precision bound must still reject them
WRONG.update({
    "layer_norm_unbiased_variance_float32": in_precision(WRONG["layer_norm_unbiased_variance"], "float32"),
    "layer_norm_unbiased_variance_bfloat16": in_precision(WRONG["layer_norm_unbiased_variance"], "bfloat16"),
    "gemma_missing_one_plus_w_bfloat16": in_precision(WRONG["gemma_missing_one_plus_w"], "bfloat16"),
    "layer_norm_backward_missing_mean_term_float32": in_precision(WRONG["layer_norm_backward_missing_mean_term"],
                                                                  "float32"),
    "rms_backward_detached_normaliser_bfloat16": in_precision(WRONG["rms_backward_detached_normaliser"], "bfloat16"),
    "batch_norm_statistics_per_sample_float32": in_precision(WRONG["batch_norm_statistics_per_sample"], "float32"),
})

PROPERTIES = [
    Property("layer_norm_matches", "norm", check_layer_norm, lambda caps: norm_case(caps),
             "LayerNorm = (x - mu)/sqrt(var + eps) w + b, biased variance, eps inside the sqrt",
             rejects=("layer_norm_unbiased_variance", "layer_norm_eps_outside_sqrt", "layer_norm_variance_by_moments",
                      "layer_norm_unbiased_variance_float32", "layer_norm_unbiased_variance_bfloat16")),
    Property("rms_norm_matches_convention", "norm", check_rms_norm, lambda caps: norm_case(caps),
             "RMSNorm = x / sqrt(mean x^2 + eps) g for the declared eps placement and g = w or 1 + w",
             rejects=("rms_eps_outside_sqrt_declared_inside", "rms_eps_inside_sqrt_declared_outside",
                      "gemma_missing_one_plus_w", "gemma_missing_one_plus_w_bfloat16")),
    Property("norm_backward_matches", "norm", check_backward, lambda caps: norm_case(caps),
             "analytic LayerNorm / RMSNorm gradients equal refimpl.norms'", requires=frozenset({"backward"}),
             rejects=("layer_norm_backward_missing_mean_term", "rms_backward_detached_normaliser",
                      "layer_norm_backward_missing_mean_term_float32", "rms_backward_detached_normaliser_bfloat16")),
    Property("rms_equals_layer_norm_on_zero_mean", "norm", check_rms_equals_layer_norm_on_zero_mean,
             lambda caps: norm_case(caps, zero_mean=True),
             "on zero-mean rows RMSNorm equals LayerNorm without bias (docs/notes.md#norms)",
             rejects=("layer_norm_unbiased_variance", "layer_norm_unbiased_variance_float32")),
    Property("channel_norms_match", "norm", check_channel_norms, lambda caps: channel_case(caps),
             "BatchNorm: per channel over (batch, spatial); GroupNorm: per sample and group",
             requires=frozenset({"channel_norms"}),
             rejects=("batch_norm_statistics_per_sample", "group_norm_statistics_over_batch",
                      "batch_norm_statistics_per_sample_float32")),
]
