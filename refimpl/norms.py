"""Normalisations with analytic backward: LayerNorm, RMSNorm (with the epsilon and weight
conventions real models use), BatchNorm and GroupNorm (docs/notes.md#norms).

One computation, four groupings. Over a set of axes A with n elements:

    mu   = mean_A x                       (LayerNorm, BatchNorm, GroupNorm; RMSNorm: mu = 0)
    xc   = x - mu
    v    = mean_A xc^2                    (biased: divide by n)
    r    = 1 / sqrt(v + eps)              eps_placement="inside_sqrt" (torch, HF Llama/T5/Gemma)
         = 1 / (sqrt(v) + eps)            eps_placement="outside_sqrt" (Zhang & Sennrich's
                                          reference RMSNorm, bzhangGo/rmsnorm rmsnorm_torch.py)
    xhat = xc r
    y    = xhat * g + b,  g = w (or 1 + w: Gemma), b optional

The notes write the short form gamma (X - mu) / sqrt(sigma + eps): sigma there must be
the variance sigma^2, as in its long form. Grouping A: LayerNorm / RMSNorm the last axis;
BatchNorm every axis but the channel axis 1 ((B, C) or (B, C, H, W)); GroupNorm the
channels of one group and the spatial axes, per sample.

Backward (dL/dy = dy given). With dxhat = dy * g and r = phi(v):

    dxc = r dxhat + kappa xc mean_A(dxhat xc),   kappa = 2 phi'(v) = -r^3 (inside)
                                                               = -r^2 / sqrt(v) (outside)
    dx  = dxc - mean_A(dxc)  when centred (the Jacobian of xc = x - mu is I - 11^T/n)
    dw  = sum dy xhat, db = sum dy, over every axis the parameter is broadcast along.

Extremes: the statistics are taken of xc / 2^e, 2^e a power of two per group (exact, see
``_Stats``), so that inputs near 1e300 or 1e-300 normalise as inputs near 1 do; the backward
uses r^2 xc = r xhat (inside: dxc = r (dxhat - xhat mean_A(dxhat xhat))) so that no r^3
overflows. eps = 0 on a group with zero variance is an error (0 / 0); an output or gradient
beyond float64 range is an error, never inf.

RMSNorm equals LayerNorm without bias on inputs whose mean over A is zero (v is then the
same); that is the notes' argument that the mean subtraction is what RMSNorm saves (docs/notes.md#norms).

Library conventions (checked in the sources; transformers 5.x ``modeling_*.py``):

* HF ``LlamaRMSNorm``: x.float() * rsqrt(mean(x^2) + eps), cast back to the input dtype,
  then * weight; eps 1e-6 (config ``rms_norm_eps``).
* HF ``T5LayerNorm``: variance in float32, x * rsqrt(variance + eps), cast to the weight's
  dtype if that is fp16/bf16, then weight * x; no mean, no bias; eps 1e-6.
* HF ``GemmaRMSNorm``: all in float32, output * (1 + weight.float()), cast at the end;
  weight initialised to 0; eps 1e-6.
* torch ``F.rms_norm`` (eps None: finfo(dtype).eps), ``F.layer_norm`` / ``group_norm`` /
  ``batch_norm`` eps 1e-5; BatchNorm normalises with the biased batch variance and updates
  running_var with the unbiased one (n / (n - 1)), momentum 0.1.

In float64 Llama and T5 compute the same function; they differ only in where a half-precision
cast happens (``RMSNORM_PRESETS`` notes). The spec computes in float64.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._validate import as_float_array, choice, finite_result, instance, real_number, same_shape
from ._validate import norms as _V
from ._validate.norms import feature_axis as last_axis  # noqa: F401  (public: the gpu facade's check of x)
from .preset_registry import Registry, Source

EPS_PLACEMENTS = ("inside_sqrt", "outside_sqrt")


# ----------------------------------------------------------------------------
# The definition: the module docstring's formulas, one line each, on the raw input (no power-of-two
# rescaling: valid while x^2 and, backward, r^3 stay normal float64 numbers). layer_norm, rms_norm,
# batch_norm, group_norm and their backwards are tested equal to it (tests/test_definition_norms.py;
# docs/notes.md#norms). RMSNorm has no bias: its dbias is None.

NORM_KINDS = ("layer", "rms", "batch", "group")


def norm_definition(x, weight=None, bias=None, *, kind, eps, eps_placement="inside_sqrt", weight_offset=0.0,
                    num_groups=1, dy=None):
    """y, or with ``dy`` (dx, dweight, dbias): LayerNorm / RMSNorm over the last axis, BatchNorm over
    every axis but 1, GroupNorm over (C / num_groups channels, spatial) per sample; float64."""
    kind, x, G, offset, w, b, eps, dy = _V.norm_definition_inputs(
        x, weight, bias, kind=kind, eps=eps, placement=eps_placement, weight_offset=weight_offset,
        num_groups=num_groups, dy=dy, kinds=NORM_KINDS, placements=EPS_PLACEMENTS)
    center, A, xs, shape = _grouping(x, kind, G)
    g, b = (None if p is None else p.reshape(shape) for p in (_gain(w, offset), b))
    inside = eps_placement == "inside_sqrt"
    # beyond the definition's range (x^2, r^3, the output beyond float64; eps = 0 on a zero variance) it refuses
    # by name: the errstate keeps NumPy's warnings out of that refusal
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        mu = xs.mean(axis=A, keepdims=True) if center else 0.0           # mu = mean_A x (RMSNorm: 0)
        xc = xs - mu                                                      # xc = x - mu
        v = (xc * xc).mean(axis=A, keepdims=True)                         # v = mean_A xc^2
        _V.definition_variance(v, eps)
        r = 1 / np.sqrt(v + eps) if inside else 1 / (np.sqrt(v) + eps)    # r = phi(v)
        xhat = (xc * r).reshape(x.shape)                                  # xhat = xc r
        y = xhat * (1.0 if g is None else g) + (0.0 if b is None else b)  # y = xhat g + b
        if dy is None:
            return finite_result(y, "the output", "x, weight, bias, weight_offset")
        P = tuple(i for i in range(x.ndim) if shape[i] == 1)              # axes a parameter is broadcast along
        dxhat = (dy * (1.0 if g is None else g)).reshape(xs.shape)        # dxhat = dy g
        kappa = -r**3 if inside else -r**2 / np.where(v > 0, np.sqrt(v), np.inf)  # kappa = 2 phi'(v) (v = 0: 0)
        dxc = r * dxhat + kappa * xc * (dxhat * xc).mean(axis=A, keepdims=True)  # r dxhat + kappa xc mean(dxhat xc)
        dx = dxc - dxc.mean(axis=A, keepdims=True) if center else dxc     # dx = dxc - mean_A dxc (centred)
        dw = None if g is None else np.sum(dy * xhat, axis=P)             # dw = sum dy xhat
        db = None if b is None else np.sum(dy, axis=P)                    # db = sum dy
    return tuple(None if t is None else finite_result(t, "a gradient", "x, dy, weight, weight_offset")
                 for t in (dx.reshape(x.shape), dw, db))


def _grouping(x, kind, G):
    """(centred?, the axes A of xs, xs: x viewed with A, the parameters' broadcast shape)."""
    if kind in ("layer", "rms"):
        return kind == "layer", (-1,), x, (1,) * (x.ndim - 1) + (-1,)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if kind == "batch":
        return True, (0,) + tuple(range(2, x.ndim)), x, shape
    per_group = (x.shape[1] // G) * math.prod(x.shape[2:])  # explicit: -1 is ambiguous for an empty batch
    return True, (2,), x.reshape(x.shape[0], G, per_group), shape


@dataclasses.dataclass(frozen=True)
class RMSNormConvention:
    """An RMSNorm as a library writes it: eps, where eps goes, the weight offset (g = offset + w)."""

    eps: float
    eps_placement: str = "inside_sqrt"
    weight_offset: float = 0.0
    source: str = ""

    def __post_init__(self):
        real_number(self.eps, "eps", minimum=0.0)
        choice(self.eps_placement, "eps_placement", EPS_PLACEMENTS)
        real_number(self.weight_offset, "weight_offset")
        instance(self.source, "source", str)


_RMS = "docs/conventions.md#rmsnorm-presets"
#: name -> RMSNormConvention, each with its Source (``RMSNORM_PRESETS.source(name)``); refimpl.preset_registry.
RMSNORM_PRESETS = Registry("preset", [
    ("hf_llama", RMSNormConvention(1e-6, source="transformers LlamaRMSNorm: normalise in fp32, cast to input dtype, then * w"),
     Source(_RMS, "transformers", "models/llama/modeling_llama.py", "LlamaRMSNorm.forward", "read at 5.25.0")),
    ("hf_t5", RMSNormConvention(1e-6, source="transformers T5LayerNorm: rsqrt(var + eps) in fp32, cast to w's dtype if half, w * x"),
     Source(_RMS, "transformers", "models/t5/modeling_t5.py", "T5LayerNorm.forward", "read at 5.25.0")),
    ("hf_gemma", RMSNormConvention(1e-6, weight_offset=1.0,
                                   source="transformers GemmaRMSNorm: (x rsqrt(...)) * (1 + w) in fp32, then cast"),
     Source(_RMS, "transformers", "models/gemma/modeling_gemma.py", "GemmaRMSNorm.forward", "read at 5.25.0")),
    ("torch_float32", RMSNormConvention(float(np.finfo(np.float32).eps),
                                        source="torch.nn.functional.rms_norm(eps=None) on float32 input: finfo(float32).eps"),
     Source(_RMS, "torch", "torch/nn/functional.py", "rms_norm (eps=None)", "run 2.13.0+cpu")),
    ("zhang_sennrich", RMSNormConvention(1e-8, eps_placement="outside_sqrt",
                                         source="bzhangGo/rmsnorm rmsnorm_torch.py: x / (||x|| d^-1/2 + eps)"),
     Source(_RMS, "bzhangGo/rmsnorm", "rmsnorm_torch.py", "RMSNorm.forward", "read; commit not recorded")),
])


# ----------------------------------------------------------------------------
# the shared core


@dataclasses.dataclass(frozen=True)
class _Stats:
    """The statistics of xc / s, s a power of two per group (that of x, times that of the
    centred values after cancellation) with max_A |xc / s| in [0.5, 1): dividing by a power
    of two is exact, so xhat is that of x, and no square overflows or underflows (inputs
    near 1e300 or 1e-300 are normalised as exactly as inputs near 1)."""

    xc: np.ndarray  # centred (or raw) input / s
    v: np.ndarray  # mean of xc^2 over the axes (keepdims): v(x) / s^2
    r: np.ndarray  # phi(v) with eps / s^2 (inside) or eps / s (outside): r(x) * s
    r_true: np.ndarray  # r(x) itself, for the backward pass
    e: np.ndarray  # s = 2^e (an int array: s itself may exceed float64 range)
    axes: tuple
    center: bool
    placement: str
    xhat: np.ndarray  # xc(x) r(x): xc r, or (xc r(x)) 2^e where eps / s^k overflowed (tiny groups)


def _standardize(x: np.ndarray, axes: tuple, *, center: bool, eps: float, placement: str) -> _Stats:
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        e1 = _exp2(x, axes)
        xs = np.ldexp(x, -e1)  # exact; the mean of xs cannot overflow
        xc = xs - xs.mean(axis=axes, keepdims=True) if center else xs
        e2 = _exp2(xc, axes)  # rescale after cancellation, so that xc^2 neither under- nor overflows
        xc = np.ldexp(xc, -e2)
        e = e1 + e2
        v = np.mean(xc * xc, axis=axes, keepdims=True)
        zero = v == 0  # xc = 0 on the whole group: xhat = 0, r only matters backward
        _V.zero_variance_with_eps(zero, eps)
        vs = np.where(zero, 1.0, v)
        if placement == "inside_sqrt":
            eps_s = np.ldexp(eps, -2 * e)
            r = 1.0 / np.sqrt(vs + eps_s)
            direct = 1.0 / np.sqrt(np.ldexp(v, 2 * e) + eps)
        else:
            eps_s = np.ldexp(eps, -e)
            r = 1.0 / (np.sqrt(vs) + eps_s)
            direct = 1.0 / (np.ldexp(np.sqrt(v), e) + eps)
        # r(x) = r / s exactly, except where eps / s^k overflowed (eps dominates: the direct form is exact
        # enough) or the group is zero (r(x) = phi(0))
        r_true = np.where(zero | ~np.isfinite(eps_s), direct, np.ldexp(r, -e))
        r = np.where(zero, 0.0, r)
        xhat = xc * r
        # eps / s^k beyond float64 (max |x| below ~1e-154 with eps 1e-6): r = 0 there, yet the exact xhat is
        # xc(x) r(x) = (xc r(x)) 2^e, tiny but representable (x / sqrt(eps) for RMSNorm): rebuild it
        tiny = ~np.isfinite(eps_s) & ~zero
        if tiny.any():
            xhat = np.where(tiny, np.ldexp(xc * r_true, e), xhat)
    return _Stats(xc, v, r, r_true, e, axes, center, placement, xhat)


def _exp2(x: np.ndarray, axes: tuple) -> np.ndarray:
    """e with max_A |x| in [2^(e-1), 2^e) per group (0 for an all-zero group)."""
    a = np.max(np.abs(x), axis=axes, keepdims=True, initial=0.0)
    return np.frexp(a)[1]


def _standardize_backward(dxhat: np.ndarray, st: _Stats) -> np.ndarray:
    """dxc = r (dxhat - xhat mean(dxhat xhat))             (inside: kappa xc = -r xhat r^2 xc)
           = r dxhat - xhat mean(dxhat xhat) / sqrt(v)   (outside; 0 where v = 0)
    the module docstring's formula with r^2 xc = r xhat folded in, so that no r^3 overflows."""
    xhat = st.xhat
    with np.errstate(over="ignore", invalid="ignore"):  # a gradient beyond float64 is refused by name (_grads)
        m = np.mean(dxhat * xhat, axis=st.axes, keepdims=True)
        if st.placement == "inside_sqrt":
            dxc = st.r_true * (dxhat - xhat * m)
        else:
            rms = np.ldexp(np.sqrt(st.v), st.e)
            dxc = st.r_true * dxhat - np.where(rms > 0, xhat * m / np.where(rms > 0, rms, 1.0), 0.0)
        if st.center:
            dxc = dxc - dxc.mean(axis=st.axes, keepdims=True)
    return dxc


def _finite(value, what, names):
    return finite_result(value, what, names) if value is not None else None


def _gain(w, offset: float):
    """g = offset + w (Gemma's 1 + w), None without a weight."""
    return None if w is None else offset + w


def check_eps(eps, placement):
    """``eps`` (a real >= 0, returned) and ``eps_placement`` (one of EPS_PLACEMENTS), validated."""
    return _V.norm_eps(eps, placement, EPS_PLACEMENTS)


def _affine(xhat, g, b, shape):
    with np.errstate(over="ignore", invalid="ignore"):
        y = xhat if g is None else xhat * g.reshape(shape)
        y = y if b is None else y + b.reshape(shape)
    return finite_result(y, "the output", "x, weight, bias, weight_offset")


def _grads(*gs):
    """The gradients, each finite (an exact gradient beyond float64 range is an error)."""
    return tuple(_finite(g, "the gradient", "x, dy, weight, weight_offset") for g in gs)


def _affine_backward(dy, xhat, g, b, shape, param_axes):
    with np.errstate(over="ignore", invalid="ignore"):
        return _affine_backward_raw(dy, xhat, g, b, shape, param_axes)


def _affine_backward_raw(dy, xhat, g, b, shape, param_axes):
    dxhat = dy if g is None else dy * g.reshape(shape)
    dw = None if g is None else np.sum(dy * xhat, axis=param_axes)
    db = None if b is None else np.sum(dy, axis=param_axes)
    return dxhat, dw, db


# ----------------------------------------------------------------------------
# LayerNorm and RMSNorm: over the last axis


def _feature_norm(x, w, eps, placement, center, offset):
    """(g, the statistics of x over its last axis)."""
    return _gain(w, offset), _standardize(x, (-1,), center=center, eps=eps, placement=placement)


def layer_norm(x, weight=None, bias=None, *, eps=1e-5, eps_placement="inside_sqrt") -> np.ndarray:
    """LayerNorm over the last axis: (x - mu) / sqrt(var + eps) * w + b (torch.nn.functional.layer_norm).
    x (..., d); weight, bias (d,) or None."""
    x, w, b, eps = _V.feature_norm_inputs(x, weight, bias, eps, eps_placement, EPS_PLACEMENTS)
    g, s = _feature_norm(x, w, eps, eps_placement, True, 0.0)
    return _affine(s.xhat, g, b, (-1,))


def layer_norm_backward(x, dy, weight=None, bias=None, *, eps=1e-5, eps_placement="inside_sqrt"):
    """(dx, dweight, dbias) of :func:`layer_norm` (None for an absent parameter)."""
    x, w, b, eps = _V.feature_norm_inputs(x, weight, bias, eps, eps_placement, EPS_PLACEMENTS)
    dy = _V.norm_gradient(dy, x.shape)
    g, s = _feature_norm(x, w, eps, eps_placement, True, 0.0)
    dxhat, dw, db = _affine_backward(dy, s.xhat, g, b, (-1,), tuple(range(x.ndim - 1)))
    return _grads(_standardize_backward(dxhat, s), dw, db)


def rms_args(eps, eps_placement, weight_offset, preset):
    """RMSNorm's (eps, eps_placement, weight_offset), from ``preset`` when one is named, validated."""
    if preset is not None:
        c = RMSNORM_PRESETS.lookup(preset)
        return c.eps, c.eps_placement, c.weight_offset
    return eps, eps_placement, real_number(weight_offset, "weight_offset")


def rms_norm(x, weight=None, *, eps=1e-6, eps_placement="inside_sqrt", weight_offset=0.0, preset=None) -> np.ndarray:
    """RMSNorm over the last axis: x r (offset + w), r = 1/sqrt(mean x^2 + eps) (or 1/(rms + eps)).
    ``preset`` (a key of ``RMSNORM_PRESETS``) sets eps, eps_placement and weight_offset."""
    eps, placement, offset = rms_args(eps, eps_placement, weight_offset, preset)
    x, w, _, eps = _V.feature_norm_inputs(x, weight, None, eps, placement, EPS_PLACEMENTS)
    g, s = _feature_norm(x, w, eps, placement, False, offset)
    return _affine(s.xhat, g, None, (-1,))


def rms_norm_backward(x, dy, weight=None, *, eps=1e-6, eps_placement="inside_sqrt", weight_offset=0.0, preset=None):
    """(dx, dweight) of :func:`rms_norm`; d(offset + w)/dw = 1, so dweight is the same for Gemma."""
    eps, placement, offset = rms_args(eps, eps_placement, weight_offset, preset)
    x, w, _, eps = _V.feature_norm_inputs(x, weight, None, eps, placement, EPS_PLACEMENTS)
    dy = _V.norm_gradient(dy, x.shape)
    g, s = _feature_norm(x, w, eps, placement, False, offset)
    dxhat, dw, _ = _affine_backward(dy, s.xhat, g, None, (-1,), tuple(range(x.ndim - 1)))
    return _grads(_standardize_backward(dxhat, s), dw)


# ----------------------------------------------------------------------------
# BatchNorm and GroupNorm: channel axis 1


def _bn_stats(x, eps):
    """(the batch statistics of x per channel, their axes, the parameters' broadcast shape)."""
    axes = (0,) + tuple(range(2, x.ndim))
    s = _standardize(x, axes, center=True, eps=eps, placement="inside_sqrt")
    return s, axes, (1, -1) + (1,) * (x.ndim - 2)


def batch_norm(x, weight=None, bias=None, *, eps=1e-5, running_mean=None, running_var=None, momentum=0.1):
    """Training-mode BatchNorm over (B, *spatial) per channel; x (B, C) or (B, C, H, W, ...).

    Returns (y, new_running_mean, new_running_var) (the running stats None when not given):
    running <- (1 - momentum) running + momentum batch_stat, with the unbiased variance (torch).
    """
    x, g, b, eps = _V.batch_norm_inputs(x, weight, bias, eps, EPS_PLACEMENTS)
    running = running_mean is not None and running_var is not None  # else momentum is unused
    if running:
        m = real_number(momentum, "momentum", minimum=0.0, maximum=1.0)
        rm, rv = _V.running_stats(running_mean, running_var, x.shape[1])
    s, axes, shape = _bn_stats(x, eps)
    y = _affine(s.xhat, g, b, shape)
    if not running:
        return y, None, None
    n = x.size // x.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        e1 = _exp2(x, axes)
        mean = np.ldexp(np.ldexp(x, -e1).mean(axis=axes, keepdims=True), e1).reshape(x.shape[1])
        unbiased = np.ldexp(s.v, 2 * s.e).reshape(x.shape[1]) * n / (n - 1)
        new = ((1 - m) * rm + m * mean, (1 - m) * rv + m * unbiased)
    return (y,) + tuple(finite_result(r, "the running statistic", "x, running_mean, running_var") for r in new)


def batch_norm_inference(x, running_mean, running_var, weight=None, bias=None, *, eps=1e-5) -> np.ndarray:
    """Eval-mode BatchNorm: (x - running_mean) / sqrt(running_var + eps) * w + b."""
    x = _V.channels_first(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rm, rv = _V.running_stats(running_mean, running_var, x.shape[1])
    g, b = _V.norm_params(weight, bias, x.shape[1])
    den = _V.positive_normaliser(np.sqrt(rv + real_number(eps, "eps", minimum=0.0)).reshape(shape))
    with np.errstate(over="ignore", invalid="ignore"):
        xhat = (x - rm.reshape(shape)) / den
    return _affine(finite_result(xhat, "the normalised input", "x, running_mean, running_var"), g, b, shape)


def batch_norm_backward(x, dy, weight=None, bias=None, *, eps=1e-5):
    """(dx, dweight, dbias) of training-mode :func:`batch_norm` (batch statistics differentiated)."""
    x, g, b, eps = _V.batch_norm_inputs(x, weight, bias, eps, EPS_PLACEMENTS)
    dy = _V.norm_gradient(dy, x.shape)
    s, axes, shape = _bn_stats(x, eps)
    dxhat, dw, db = _affine_backward(dy, s.xhat, g, b, shape, axes)
    return _grads(_standardize_backward(dxhat, s), dw, db)


def _gn_stats(x, G, eps):
    """(the statistics of each sample's G channel groups, the parameters' broadcast shape)."""
    B, C = x.shape[:2]
    xg = x.reshape((B, G, C // G) + x.shape[2:])
    s = _standardize(xg, tuple(range(2, xg.ndim)), center=True, eps=eps, placement="inside_sqrt")
    return s, (1, -1) + (1,) * (x.ndim - 2)


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5) -> np.ndarray:
    """GroupNorm (torch.nn.functional.group_norm): per sample, per group of C/G channels,
    over those channels and the spatial axes; weight and bias per channel."""
    x, G, g, b, eps = _V.group_norm_inputs(x, num_groups, weight, bias, eps, EPS_PLACEMENTS)
    s, shape = _gn_stats(x, G, eps)
    return _affine(s.xhat.reshape(x.shape), g, b, shape)


def group_norm_backward(x, dy, num_groups, weight=None, bias=None, *, eps=1e-5):
    """(dx, dweight, dbias) of :func:`group_norm`."""
    x, G, g, b, eps = _V.group_norm_inputs(x, num_groups, weight, bias, eps, EPS_PLACEMENTS)
    dy = _V.norm_gradient(dy, x.shape)
    s, shape = _gn_stats(x, G, eps)
    axes = (0,) + tuple(range(2, x.ndim))
    dxhat, dw, db = _affine_backward(dy, s.xhat.reshape(x.shape), g, b, shape, axes)
    return _grads(_standardize_backward(dxhat.reshape(s.xc.shape), s).reshape(x.shape), dw, db)


def rms_norm_cast_order(x, weight, *, preset: str, dtype: str = "bfloat16") -> np.ndarray:
    """The low-precision result of an RMSNorm preset, with its library's cast order, for x and
    weight already representable in ``dtype`` (values returned as float64):

        hf_llama, hf_t5:  y = rd( rd(x r) * w )       normalise in fp32, cast, multiply in dtype
        hf_gemma:         y = rd( fl32(x r (1 + w)) )  multiply in fp32, cast once
    rd = round to ``dtype`` (``refimpl.formats.round_to``); x r is formed in float64 and rounded
    to float32, which is how the fp32 kernels differ from it: by at most an fp32 rounding of r.
    """
    from .formats import _format, round_to

    _format(dtype, "dtype")
    c = RMSNORM_PRESETS[_V.cast_order_preset(preset)]
    x = last_axis(x)
    w = as_float_array(weight, "weight", ndim=1)
    same_shape(w, x.shape[-1:], "weight")
    s = _standardize(x, (-1,), center=False, eps=c.eps, placement=c.eps_placement)
    if c.weight_offset:
        return round_to(round_to(s.xhat * (c.weight_offset + w), "float32"), dtype)
    return round_to(round_to(round_to(s.xhat, "float32"), dtype) * w, dtype)


__all__ = [
    "EPS_PLACEMENTS", "NORM_KINDS", "norm_definition", "RMSNORM_PRESETS", "RMSNormConvention", "batch_norm", "batch_norm_backward",
    "batch_norm_inference", "group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward",
    "rms_norm", "rms_norm_backward", "rms_norm_cast_order",
]
