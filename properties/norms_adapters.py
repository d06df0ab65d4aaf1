"""Adapters of the norm kind: the adapter class ``NormAdapter``, the RMSNorm convention an adapter
declares (``_rms_conv``), the refimpl adapters (``REFIMPL`` and its HF Gemma and Zhang & Sennrich
conventions), ``in_precision`` (an adapter storing its results in a lower precision), and the wrong
implementations ``WRONG`` that ``properties.norms``' properties must reject (unbiased variance, eps
misplaced, 1 + w missing, the backward's mean term dropped or its normaliser detached, BatchNorm
and GroupNorm statistics over the wrong axes, variance by moments, and some of these stored in
float32 or bfloat16).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from refimpl import norms as N


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
