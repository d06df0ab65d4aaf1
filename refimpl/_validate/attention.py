"""Attention arguments, shared by the definition, the fast paths and the gpu facade (so every form
rejects alike): q, k, v shapes, the score range, window, scale, bias, dropout and bool masks."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .budget import FLOAT_MAX, check_budget
from .scalars import positive_float


def _log_max_norm(x: np.ndarray) -> float:
    """log of max_i ||x_i|| over the last axis, without overflow (-inf for all-zero x)."""
    if x.size == 0:
        return -math.inf
    a = float(np.abs(x).max())
    if a == 0.0:
        return -math.inf
    return math.log(a) + math.log(float(np.sqrt(np.square(x / a).sum(axis=-1)).max()))


def check_score_range(q: np.ndarray, k: np.ndarray, scale: float, softcap, bias, *,
                      limit: float = FLOAT_MAX / 2, what: str = "float64") -> None:
    """Reject attention inputs whose scores may overflow float64.

    Cauchy-Schwarz bounds every partial sum of <q_i, k_j> (and its product with
    ``scale`` in either order) by max(1, scale) * max_i ||q_i|| * max_j ||k_j||.
    Below FLOAT_MAX / 2 (with max |bias| added), no score and no difference of
    two scores overflows; above it they may, and a silent inf or NaN would turn
    a row into the fully masked answer. A softcap c bounds the exact scores by
    c, so only the bias term is checked then (the tiled paths then compute
    tanh from the scaled scores; see refimpl/flash.py).
    """
    limit_value, limit = limit, math.log(limit)
    if softcap is None:
        lq, lk = _log_max_norm(q), _log_max_norm(k)
        bound = lq + lk + max(0.0, math.log(scale))
        if bound > limit:
            raise ValueError(
                f"q, k, scale: expected scores within {what} range (Cauchy-Schwarz bound "
                f"max(1, scale) * max ||q_i|| * max ||k_j|| <= {limit_value:.3g}), got a bound of e^{bound:.1f}; "
                f"rescale q or k" + (", or pass a softcap" if what == "float64" else ""))
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64)
        fin = b[np.isfinite(b)]
        if fin.size and float(np.abs(fin).max()) > FLOAT_MAX / 4:
            raise ValueError(f"bias: expected entries within FLOAT_MAX / 4 = {FLOAT_MAX / 4:.3g} (beyond it the scores "
                             f"may overflow), got {float(np.abs(fin).max()):.3g}")


def check_real_4d(x, name: str) -> np.ndarray:
    """``x`` as an array, checked to be a finite real floating-point (B, H, L, D) array
    (not converted; shared with the gpu facade)."""
    return real_4d_extent(x, name)[0]


def real_4d_extent(x, name: str) -> tuple[np.ndarray, float]:
    """``check_real_4d`` and max |x| (0.0 when empty), read off the min and max the check takes."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, H, L, D), got {arr.shape}")
    if arr.size > 2**20:  # a broadcast view is cheap to pass, not to compute with
        check_budget(name, shape=arr.shape, what=f"a float64 array of shape {arr.shape}")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)  # NaN propagates; no full-size temporary
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = "NaN" if np.isnan(arr).any() else ("+inf" if np.isposinf(arr).any() else "-inf")
        raise ValueError(f"{name}: expected finite entries, got an entry {bad}")
    return arr, max(hi, -lo)


def check_qkv_shapes(q, k, v) -> tuple:
    """Validate the shapes of 4-D q, k, v; return (B, Hq, Hkv, Lq, Lk, D, Dv).

    q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv), D, Dv >= 1, Hq a
    positive multiple of Hkv. Shared with the gpu facade so both reject alike.
    """
    shapes = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        shapes[name] = tuple(np.shape(x))
        if len(shapes[name]) != 4:
            raise ValueError(f"{name}: expected 4 dimensions (B, H, L, D), got shape {shapes[name]}")
    (B, Hq, Lq, D), (Bk, Hkv, Lk, Dk), vs = shapes["q"], shapes["k"], shapes["v"]
    if Bk != B or vs[0] != B:
        raise ValueError(f"q, k, v: expected one batch size B, got shapes {shapes['q']}, {shapes['k']}, {vs}")
    if Dk != D:
        raise ValueError(f"q, k: expected one head dim D, got D = {D} and {Dk}")
    if vs[1:3] != (Hkv, Lk):
        raise ValueError(f"k, v: expected the same (Hkv, Lk), got shapes {shapes['k']} and {vs}")
    if D < 1 or vs[3] < 1:
        raise ValueError(f"q, v: expected head dims D, Dv >= 1, got D = {D}, Dv = {vs[3]}")
    if Hkv < 1 or Hq % Hkv != 0:
        raise ValueError(f"q, k: expected Hq a positive multiple of Hkv (GQA groups), got Hq = {Hq}, Hkv = {Hkv}")
    return B, Hq, Hkv, Lq, Lk, D, vs[3]


def check_window(window):
    """Validate ``window``: None or (left, right), each a non-negative int or None."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window: expected (left, right), got {window!r}")
    out = []
    for side, w in zip(("left", "right"), window):
        if w is None:
            out.append(None)
            continue
        if isinstance(w, bool) or not isinstance(w, (numbers.Integral, np.integer)):
            raise TypeError(f"window {side}: expected an int or None, got {type(w).__name__}")
        if w < 0:
            raise ValueError(
                f"window {side}: expected >= 0 or None (unbounded), got {w}"
                + (" (flash-attn writes -1 for unbounded; here that is None)" if w == -1 else "")
            )
        out.append(int(w))
    return tuple(out)


def broadcastable(arr: np.ndarray, name: str, full_shape: tuple) -> np.ndarray:
    """``arr`` (at most 4 dimensions) reshaped to 4 dimensions that broadcast to ``full_shape``
    = (B, Hq, Lq, Lk) (a view; never materialised)."""
    if arr.ndim > 4:
        raise ValueError(f"{name}: expected at most 4 dimensions, got shape {arr.shape}")
    arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
    try:
        ok = np.broadcast_shapes(arr.shape, full_shape) == tuple(full_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a shape that broadcasts to (B, Hq, Lq, Lk) = {tuple(full_shape)}, "
                         f"got {arr.shape}")
    return arr


def attention_scale(scale, D: int) -> float:
    """``scale``: finite positive, default 1/sqrt(D)."""
    return 1.0 / np.sqrt(D) if scale is None else positive_float(scale, "scale")


def attention_bias(bias, full_shape: tuple):
    """``bias``: None or a float array broadcastable to (B, Hq, Lq, Lk), finite or -inf
    (hides the key); returned float64, 4-D (see ``broadcastable``)."""
    if bias is None:
        return None
    b = np.asarray(bias)
    if not np.issubdtype(b.dtype, np.floating):
        raise TypeError(f"bias: expected a floating-point array, got dtype {b.dtype}")
    if np.isnan(b).any() or np.isposinf(b).any():
        raise ValueError("bias: expected finite entries or -inf (which hides the key), got NaN or +inf")
    return broadcastable(b.astype(np.float64, copy=False), "bias", full_shape)


def attention_dropout(dropout_mask, dropout_p, full_shape: tuple):
    """(keep, p): the bool keep-mask (True = keep; 4-D, broadcastable to (B, Hq, Lq, Lk)) or None,
    and the rate 0 <= p < 1. A mask needs p > 0 and p > 0 needs a mask (no hidden RNG)."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (numbers.Real, np.floating)):
        raise TypeError(f"dropout_p: expected a float, got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"dropout_p: expected 0 <= p < 1, got {dropout_p}")
    p = float(dropout_p)
    if dropout_mask is None:
        if p > 0.0:
            raise ValueError(f"dropout_mask: expected a bool keep-mask with dropout_p = {p} > 0 (the spec has no hidden "
                             f"RNG), got None")
        return None, p
    if p == 0.0:
        raise ValueError("dropout_mask: expected None with dropout_p = 0 (or pass the drop rate the mask was "
                         "drawn with), got a mask")
    km = np.asarray(dropout_mask)
    if km.dtype != np.bool_:
        raise TypeError(f"dropout_mask: expected a bool keep-mask (True = keep), got dtype {km.dtype}")
    return broadcastable(km, "dropout_mask", full_shape), p


def attention_bool_mask(mask, full_shape: tuple) -> np.ndarray:
    """``mask`` given as an array: bool (True = may attend), broadcastable to (B, Hq, Lq, Lk)."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(
            f"mask: expected a bool array (True = may attend) or a refimpl.masks.Mask, "
            f"got dtype {arr.dtype}; pass additive float masks as bias="
        )
    return broadcastable(arr, "mask", full_shape)
