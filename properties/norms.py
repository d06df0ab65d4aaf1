"""Properties of LayerNorm and RMSNorm (kind "norm"), forward and backward, against refimpl.norms.
This module holds the kind's declaration (KINDS), the strategies and checks (LayerNorm, RMSNorm,
their backwards, RMSNorm = LayerNorm on zero-mean rows, BatchNorm / GroupNorm) and the PROPERTIES
table; the naive baselines live in ``properties.norms_naive``, the adapters (refimpl's and the
wrong ones) in ``properties.norms_adapters``.

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
from typing import Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import norms as N

from .core import Property
from .norms_adapters import (REFIMPL, REFIMPL_GEMMA, REFIMPL_ZS, WRONG, NormAdapter, _rms_conv,  # noqa: F401
                             in_precision)
from .norms_naive import (naive_channel_norm, naive_layer_norm, naive_layer_norm_backward, naive_rms_norm,
                          naive_rms_norm_backward)
from .precision import compare_layer, invariant_bound, precision_of, round_inputs
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


BUNDLED = [REFIMPL, REFIMPL_GEMMA, REFIMPL_ZS]

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
