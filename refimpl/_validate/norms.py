"""The norms' checks (``refimpl.norms``: layer, RMS, batch and group norm, their definition and backwards).

Imports only NumPy and its siblings."""

from __future__ import annotations

import numpy as np

from .arrays import as_float_array, same_shape
from .scalars import choice, fail, plain, positive_int, real_number


def feature_axis(x, name: str = "x") -> np.ndarray:
    """``x`` as a float64 array with at least one feature on its last axis (the normalised axis)."""
    x = as_float_array(x, name)
    if x.ndim < 1 or x.shape[-1] < 1:
        fail(name, "at least one feature on the last axis", f"shape {x.shape}")
    return x


def channels_first(x) -> np.ndarray:
    """``x`` as a float64 (B, C, ...) array with C >= 1."""
    x = as_float_array(x, "x")
    if x.ndim < 2 or x.shape[1] < 1:
        fail("x", "(B, C, ...) with C >= 1", f"shape {x.shape}")
    return x


def batch_statistics_input(x) -> np.ndarray:
    """BatchNorm's x (B, C, ...): at least 2 values per channel."""
    x = channels_first(x)
    if x.size // x.shape[1] < 2:
        fail("x", "at least 2 values per channel (batch statistics)", f"shape {x.shape}")
    return x


def channel_groups(C: int, num_groups) -> int:
    """GroupNorm's number of groups: a positive divisor of the C channels."""
    G = positive_int(num_groups, "num_groups")
    if C % G:
        fail("num_groups", f"a divisor of the {C} channels", str(G))
    return G


def zero_variance_with_eps(zero: np.ndarray, eps: float) -> None:
    """eps = 0 needs a non-zero variance in every group (``zero``: the groups' v == 0)."""
    if eps == 0 and np.any(zero):
        fail("x, eps", "eps > 0 or a non-zero variance in every group (else 1 / sqrt(0))",
             "a zero-variance group with eps = 0")


def definition_variance(v: np.ndarray, eps: float) -> None:
    """The definition (no rescaling) needs mean_A xc^2 within float64 and, with eps = 0, non-zero."""
    if not np.isfinite(v).all():
        fail("x", "mean_A (x - mu)^2 within float64 range (the definition does not rescale; layer_norm, rms_norm, "
             "batch_norm and group_norm do)", "one beyond it")
    zero_variance_with_eps(v == 0, eps)


def norm_params(weight, bias, n: int) -> tuple:
    """A norm's weight and bias: None or (n,) each, float64."""
    w = None if weight is None else as_float_array(weight, "weight", ndim=1)
    b = None if bias is None else as_float_array(bias, "bias", ndim=1)
    for name, p in (("weight", w), ("bias", b)):
        if p is not None:
            same_shape(p, (n,), name)
    return w, b


def norm_eps(eps, placement, placements) -> float:
    """``eps`` (a real >= 0, returned) and ``eps_placement`` (one of ``placements``)."""
    choice(placement, "eps_placement", placements)
    return real_number(eps, "eps", minimum=0.0)


def norm_gradient(dy, shape: tuple) -> np.ndarray:
    """dL/dy of a norm: a float64 array of the output's shape."""
    dy = as_float_array(dy, "dy")
    same_shape(dy, shape, "dy")
    return dy


def feature_norm_inputs(x, weight, bias, eps, placement, placements) -> tuple:
    """LayerNorm's / RMSNorm's (x (..., d) with d >= 1, weight, bias (d,) or None, eps)."""
    x = feature_axis(x)
    eps = norm_eps(eps, placement, placements)
    w, b = norm_params(weight, bias, x.shape[-1])
    return x, w, b, eps


def batch_norm_inputs(x, weight, bias, eps, placements) -> tuple:
    """BatchNorm's (x (B, C, ...) with 2 values per channel, weight, bias (C,) or None, eps)."""
    x = batch_statistics_input(x)
    w, b = norm_params(weight, bias, x.shape[1])
    eps = norm_eps(eps, "inside_sqrt", placements)
    return x, w, b, eps


def group_norm_inputs(x, num_groups, weight, bias, eps, placements) -> tuple:
    """GroupNorm's (x (B, C, ...), G dividing C, weight, bias (C,) or None, eps)."""
    x = channels_first(x)
    G = channel_groups(x.shape[1], num_groups)
    w, b = norm_params(weight, bias, x.shape[1])
    eps = norm_eps(eps, "inside_sqrt", placements)
    return x, G, w, b, eps


def norm_definition_inputs(x, weight, bias, *, kind, eps, placement, weight_offset, num_groups, dy, kinds,
                           placements) -> tuple:
    """``norm_definition``'s (kind, x, G, weight_offset, weight, bias, eps, dy): x (..., d) for LayerNorm and
    RMSNorm, (B, C, ...) for BatchNorm and GroupNorm (G groups dividing C; 1 otherwise)."""
    kind = choice(kind, "kind", kinds)
    feature = kind in ("layer", "rms")
    x = feature_axis(x) if feature else channels_first(x)
    G = channel_groups(x.shape[1], num_groups) if kind == "group" else 1
    offset = real_number(weight_offset, "weight_offset")
    w, b = norm_params(weight, bias, x.shape[-1] if feature else x.shape[1])
    eps = norm_eps(eps, placement, placements)
    return kind, x, G, offset, w, b, eps, None if dy is None else norm_gradient(dy, x.shape)


def running_stats(running_mean, running_var, C: int) -> tuple:
    """BatchNorm's running mean and variance, (C,) each, variances >= 0."""
    rm = as_float_array(running_mean, "running_mean", shape=(C,), shape_doc="(C,)")
    rv = as_float_array(running_var, "running_var", shape=(C,), shape_doc="(C,)")
    if (rv < 0).any():
        fail("running_var", "variances >= 0", "a negative entry")
    return rm, rv


def positive_normaliser(den: np.ndarray) -> np.ndarray:
    """sqrt(running_var + eps) > 0 in every channel."""
    if (den == 0).any():
        fail("running_var, eps", "running_var + eps > 0 in every channel (else no normalisation)", "a channel with 0")
    return den


def cast_order_preset(preset, presets=("hf_llama", "hf_t5", "hf_gemma")) -> str:
    """An RMSNorm preset whose cast order ``rms_norm_cast_order`` knows."""
    if preset not in presets:
        fail("preset", "'hf_llama', 'hf_t5' or 'hf_gemma'", repr(plain(preset)))
    return preset
