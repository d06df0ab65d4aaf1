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
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import norms as N

from .core import Property
from .protocol import Capability, Kind
from .tolerance import U64, compare_close

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
          "channel_norms": Capability("supplies BatchNorm (training mode) and GroupNorm", ("batch_norm", "group_norm"))}),
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


def _rms_conv(caps):
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


@st.composite
def norm_case(draw, zero_mean=False):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.sampled_from([1, 2, 3, 8, 33]))
    shape = (draw(st.integers(1, 3)), d)
    scale = draw(st.sampled_from([1.0, 1e-3, 30.0]))  # small rows: eps dominates, so its placement shows
    x = rng.standard_normal(shape) * scale + draw(st.sampled_from([0.0, 0.0, 5.0])) * scale
    if draw(st.booleans()):
        x[0] = x[0, 0]  # a constant row: zero variance
    if zero_mean:  # integers summing to 0 times a power of two: the mean is exactly 0 in float64
        k = rng.integers(-1000, 1000, shape)
        k[:, -1] = -k[:, :-1].sum(axis=-1)
        x = k * 2.0 ** int(np.round(np.log2(scale))) / 512
    w = rng.standard_normal(d) if draw(st.booleans()) else None
    b = rng.standard_normal(d) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([1e-6, 1e-5, 1e-2, 1.0]))
    return NormCase(x, w, b, rng.standard_normal(shape), eps, seed)


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


def check_layer_norm(impl, case: NormCase):
    """layer_norm equals (x - mu) / sqrt(var + eps) * w + b (biased variance, eps inside)."""
    got = impl.layer_norm(case.x, case.w, case.b, case.eps)
    want = N.layer_norm(case.x, case.w, case.b, eps=case.eps)
    compare_close("layer_norm", got, want, _bound(case, _r_max(case.x, case.eps, True, "inside_sqrt"), case.w),
                  f"{impl.name}; {case!r}")


def check_rms_norm(impl, case: NormCase):
    """rms_norm equals x r g for the declared convention (eps placement, g = w or 1 + w)."""
    conv = _rms_conv(impl.capabilities)
    w = case.w if case.w is not None else np.zeros(case.x.shape[-1])  # a weight, so that 1 + w vs w shows
    got = impl.rms_norm(case.x, w, case.eps)
    want = N.rms_norm(case.x, w, eps=case.eps, **conv)
    r = _r_max(case.x, case.eps, False, conv["eps_placement"])
    compare_close("rms_norm", got, want, _bound(case, r, conv["weight_offset"] + w), f"{impl.name}; {case!r}")


def check_backward(impl, case: NormCase):
    """The analytic gradients equal refimpl.norms' (themselves checked against torch and finite differences)."""
    ctx = f"{impl.name}; {case!r}"
    dyn = np.abs(case.dy).max()
    r = _r_max(case.x, case.eps, True, "inside_sqrt")
    got = impl.layer_norm_backward(case.x, case.dy, case.w, case.b, case.eps)
    want = N.layer_norm_backward(case.x, case.dy, case.w, case.b, eps=case.eps)
    tol = _backward_bound(case, r, case.w, dyn)
    for name, g_, w_ in zip(("dx", "dweight", "dbias"), got, want):
        if (g_ is None) != (w_ is None):
            raise AssertionError(f"layer_norm_backward {name}: got {g_ is None and 'None' or 'an array'}; {ctx}")
        if w_ is not None:
            compare_close(f"layer_norm_backward {name}", g_, w_, tol * case.x.shape[0], ctx)
    conv = _rms_conv(impl.capabilities)
    w = case.w if case.w is not None else np.zeros(case.x.shape[-1])
    got = impl.rms_norm_backward(case.x, case.dy, w, case.eps)
    want = N.rms_norm_backward(case.x, case.dy, w, eps=case.eps, **conv)
    r = _r_max(case.x, case.eps, False, conv["eps_placement"])
    tol = _backward_bound(case, r, conv["weight_offset"] + w, dyn)
    for name, g_, w_ in zip(("dx", "dweight"), got, want):
        compare_close(f"rms_norm_backward {name}", g_, w_, tol * case.x.shape[0], ctx)


def check_rms_equals_layer_norm_on_zero_mean(impl, case: NormCase):
    """Seed 003 5.2: on rows with mean 0, RMSNorm (g = w) is LayerNorm without bias."""
    conv = _rms_conv(impl.capabilities)
    w = case.w if case.w is not None else np.ones(case.x.shape[-1])
    ln = impl.layer_norm(case.x, w, None, case.eps)
    if conv["eps_placement"] == "outside_sqrt":  # the identity holds per eps placement
        ln = N.layer_norm(case.x, w, None, eps=case.eps, eps_placement="outside_sqrt")
    rms = impl.rms_norm(case.x, w - conv["weight_offset"], case.eps)
    r = _r_max(case.x, case.eps, False, conv["eps_placement"])
    compare_close("rms_norm vs layer_norm (zero-mean rows)", rms, ln, 2 * _bound(case, r, w), f"{impl.name}; {case!r}")


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
def channel_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    G = draw(st.sampled_from([1, 2, 3]))
    C = G * draw(st.integers(1, 3))
    shape = (draw(st.integers(2, 4)), C) + tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    # per-channel offsets and scales, so that statistics over the wrong axes are visibly different
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, C) + (1,) * (len(shape) - 2)) \
        + rng.standard_normal((1, C) + (1,) * (len(shape) - 2)) * 2 + rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1))
    return ChannelCase(x, G, rng.standard_normal(C), rng.standard_normal(C), draw(st.sampled_from([1e-5, 1e-2])), seed)


def check_channel_norms(impl, case: ChannelCase):
    """BatchNorm normalises each channel over (batch, spatial); GroupNorm each sample's group of
    channels over (channels in the group, spatial) (seed 003 5.1; torch's functional forms)."""
    ctx = f"{impl.name}; {case!r}"
    n = case.x.size // case.x.shape[1]
    tol = 16 * (n + case.x[0].size + 4) * U64 * (np.abs(case.x).max() / np.sqrt(case.eps) * np.abs(case.w).max()
                                                 + np.abs(case.b).max() + 1)
    compare_close("batch_norm", impl.batch_norm(case.x, case.w, case.b, case.eps),
                  N.batch_norm(case.x, case.w, case.b, eps=case.eps)[0], tol, ctx)
    compare_close("group_norm", impl.group_norm(case.x, case.groups, case.w, case.b, case.eps),
                  N.group_norm(case.x, case.groups, case.w, case.b, eps=case.eps), tol, ctx)


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
}

PROPERTIES = [
    Property("layer_norm_matches", "norm", check_layer_norm, norm_case(),
             "LayerNorm = (x - mu)/sqrt(var + eps) w + b, biased variance, eps inside the sqrt",
             rejects=("layer_norm_unbiased_variance", "layer_norm_eps_outside_sqrt")),
    Property("rms_norm_matches_convention", "norm", check_rms_norm, norm_case(),
             "RMSNorm = x / sqrt(mean x^2 + eps) g for the declared eps placement and g = w or 1 + w",
             rejects=("rms_eps_outside_sqrt_declared_inside", "rms_eps_inside_sqrt_declared_outside",
                      "gemma_missing_one_plus_w")),
    Property("norm_backward_matches", "norm", check_backward, norm_case(),
             "analytic LayerNorm / RMSNorm gradients equal refimpl.norms'", requires=frozenset({"backward"}),
             rejects=("layer_norm_backward_missing_mean_term", "rms_backward_detached_normaliser")),
    Property("rms_equals_layer_norm_on_zero_mean", "norm", check_rms_equals_layer_norm_on_zero_mean,
             norm_case(zero_mean=True), "on zero-mean rows RMSNorm equals LayerNorm without bias (seed 003 5.2)",
             rejects=("layer_norm_unbiased_variance",)),
    Property("channel_norms_match", "norm", check_channel_norms, channel_case(),
             "BatchNorm: per channel over (batch, spatial); GroupNorm: per sample and group",
             requires=frozenset({"channel_norms"}),
             rejects=("batch_norm_statistics_per_sample", "group_norm_statistics_over_batch")),
]
