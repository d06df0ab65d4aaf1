"""Integer formats: INT8 / INT4 quantisation (symmetric and asymmetric, per tensor, row, column
or group), its step and error, and the integer matmul with exact int32 accumulation
(docs/integer_formats.md).

Ranges (``int_range``), b bits:

    symmetric   q in [-(2^(b-1) - 1), 2^(b-1) - 1]   +-127 (INT8), +-7 (INT4); -2^(b-1) unused
    asymmetric  q in [0, 2^b - 1]                    0..255 (UINT8), 0..15 (UINT4)

Step (scale) s and zero point z, from the values x of one quantisation unit:

    symmetric   s = amax / (2^(b-1) - 1),  amax = max |x|;                     z = 0
    asymmetric  lo = min(min x, 0), hi = max(max x, 0) (0 stays exact),
                s = (hi - lo) / (2^b - 1),  z = rint(-lo / s)
    s = 1 (and z = 0) where the unit is all zeros.

    q = clip(rint(x / s) + z, qmin, qmax)       rint: round half to even (np.rint, torch
                                                ``fake_quantize_per_tensor_affine``'s nearbyint)
    x_hat = s (q - z)                            ``dequantize``
    |x - x_hat| <= s / 2                         for every x of the unit (no clipping happens:
                                                 x / s + z stays within half a step of the range)

Units (``granularity``) of a 2-D x (rows, cols): ``"tensor"`` (one s, shape (1, 1)), ``"row"``
(one per row, (rows, 1): per output channel of a (out, in) weight, per token of activations),
``"column"`` ((1, cols)) and ``"group"`` (``group_size`` g consecutive entries along each row,
(rows, cols / g): the GPTQ / AWQ layout). ``dequantize`` repeats group scales along the row.

Integer matmul (``int_matmul``): C = a_q b_q with every product and partial sum an exact integer;
int32 accumulators are exact in any summation order when sum_k |a_ik| |b_kj| <= 2^31 - 1, which
holds for any int8 inputs (|q| <= 128) when K <= ``int32_safe_depth(8, 8)`` = 131071. Beyond it a
kernel's sum may wrap, so the spec refuses (ValueError) instead of returning a number no int32
kernel computes in every order. ``quantized_matmul``: symmetric row scales for a (per token) and
column scales for b (per output channel), C = s_a s_b^T * int_matmul(q_a, q_b) (LLM.int8's
vector-wise form); ``quantized_matmul_bound`` bounds |C - a b|.
"""

from __future__ import annotations

import numpy as np

from ._validate import count
from ._validate.formats import (dequant_inputs, int_matmul_inputs, positive_steps, quant_bits, quant_inputs,
                               quantized_matmul_inputs, unit_ranges, within_float64)

GRANULARITY = ("tensor", "row", "column", "group")
INT32_MAX = 2**31 - 1


def int_range(bits: int = 8, *, symmetric: bool = True) -> tuple[int, int]:
    """(qmin, qmax): (-(2^(b-1) - 1), 2^(b-1) - 1) symmetric, (0, 2^b - 1) asymmetric; 2 <= b <= 16."""
    return _int_range(*quant_bits(bits, symmetric))


def _int_range(b: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1) if symmetric else (0, 2**b - 1)


def _units(x: np.ndarray, granularity: str, g) -> np.ndarray:
    """x reshaped to (units..., unit values) views: (1, 1, n), (rows, 1, cols), (1, cols, rows), (rows, G, g)."""
    rows, cols = x.shape
    if granularity == "tensor":
        return x.reshape(1, 1, rows * cols)
    if granularity == "row":
        return x.reshape(rows, 1, cols)
    if granularity == "column":
        return x.T.reshape(1, cols, rows)
    return x.reshape(rows, cols // g, g)


def quant_params(x, *, bits: int = 8, symmetric: bool = True, granularity: str = "tensor",
                 group_size=None) -> tuple[np.ndarray, np.ndarray]:
    """(scale s float64, zero_point z int64) per unit, shaped (1, 1), (rows, 1), (1, cols) or (rows, cols / g)."""
    x, bits, symmetric, g = quant_inputs(x, "x", bits, symmetric, granularity, group_size, GRANULARITY)
    return _quant_params(x, "x", bits, symmetric, granularity, g)


def _quant_params(x, name, bits, symmetric, granularity, g):
    """s, z of a checked x (``name``: the caller's argument, for a unit whose range float64 cannot step)."""
    qmin, qmax = _int_range(bits, symmetric)
    u = _units(x, granularity, g)
    if symmetric:
        span, n = np.abs(u).max(axis=-1), qmax
        lo = np.zeros_like(span)
    else:
        lo, hi = np.minimum(u.min(axis=-1), 0.0), np.maximum(u.max(axis=-1), 0.0)
        with np.errstate(over="ignore"):
            span, n = hi - lo, qmax - qmin
    s = span / n
    unit_ranges(span, s, name)
    s = np.where(span > 0, s, 1.0)
    z = np.rint(-lo / s).astype(np.int64) if not symmetric else np.zeros(s.shape, np.int64)
    shape = {"tensor": (1, 1), "row": (x.shape[0], 1), "column": (1, x.shape[1])}.get(granularity, s.shape)
    return s.reshape(shape), np.clip(z, qmin, qmax).reshape(shape)


def _expand(p: np.ndarray, shape: tuple) -> np.ndarray:
    """A per-unit parameter broadcast to x's shape (group parameters repeated along the row)."""
    if p.shape[1] not in (1, shape[1]):
        p = np.repeat(p, shape[1] // p.shape[1], axis=1)
    return np.broadcast_to(p, shape)


def quantize(x, *, bits: int = 8, symmetric: bool = True, granularity: str = "tensor",
             group_size=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q int64 (rows, cols), s, z) with q = clip(rint(x / s) + z, qmin, qmax); see the module docstring."""
    x, bits, symmetric, g = quant_inputs(x, "x", bits, symmetric, granularity, group_size, GRANULARITY)
    return _quantize(x, "x", bits, symmetric, granularity, g)


def _quantize(xf, name, bits, symmetric, granularity, g):
    s, z = _quant_params(xf, name, bits, symmetric, granularity, g)
    qmin, qmax = _int_range(bits, symmetric)
    q = np.clip(np.rint(xf / _expand(s, xf.shape)) + _expand(z, xf.shape), qmin, qmax).astype(np.int64)
    return q, s, z


def dequantize(q, scale, zero_point) -> np.ndarray:
    """x_hat = s (q - z), float64 (rows, cols); scale and zero_point as ``quant_params`` returns them."""
    q, s, z = dequant_inputs(q, scale, zero_point)
    with np.errstate(over="ignore"):
        out = _expand(s, q.shape) * (q - _expand(z, q.shape))
    return within_float64(out, "scale", "s (q - z)")


def quantization_error_bound(scale) -> np.ndarray:
    """The largest |x - x_hat| of round-to-nearest: s / 2 per unit (half a step)."""
    return positive_steps(scale) / 2


def int32_safe_depth(bits_a: int = 8, bits_b: int = 8) -> int:
    """Largest K with K 2^(bits_a-1) 2^(bits_b-1) <= 2^31 - 1: any signed inputs sum exactly in int32."""
    ba, bb = count(bits_a, "bits_a", minimum=2, maximum=16), count(bits_b, "bits_b", minimum=2, maximum=16)
    return INT32_MAX // (2 ** (ba - 1) * 2 ** (bb - 1))


def int_matmul(a_q, b_q) -> np.ndarray:
    """C = a_q (M, K) @ b_q (K, N), exact integers (int64), as an int32-accumulating kernel computes it.

    Requires sum_k |a_ik| |b_kj| <= 2^31 - 1 for every (i, j) (no partial sum overflows int32 in
    any order); ValueError naming a_q, b_q otherwise.
    """
    a, b = int_matmul_inputs(a_q, b_q, INT32_MAX)
    return a @ b


def quantized_matmul(a, b, *, bits: int = 8) -> np.ndarray:
    """a (M, K) @ b (K, N) through symmetric integers: s_a (M, 1) per row of a, s_b (1, N) per column
    of b, C = (s_a s_b) * int_matmul(q_a, q_b), float64; 2 <= bits <= 8."""
    a, b, bits = quantized_matmul_inputs(a, b, bits, int32_safe_depth)
    qa, sa, _ = _quantize(a, "a", bits, True, "row", None)
    qb, sb, _ = _quantize(b, "b", bits, True, "column", None)
    with np.errstate(over="ignore"):
        out = (sa * sb) * (qa @ qb)  # exact: K <= int32_safe_depth(bits, bits) keeps every sum within int32
    return within_float64(out, "a, b", "the product")


def quantized_matmul_bound(a, b, *, bits: int = 8) -> np.ndarray:
    """|quantized_matmul(a, b) - a b| <= sum_k (|a_ik| e_b,j + e_a,i |b_kj| + e_a,i e_b,j) + 8 u sum_k (|a| + e_a)(|b| + e_b),
    with e = s / 2 (each input's rounding) and u = 2^-53 (x / s and the scaling of the exact integer sum)."""
    a, b, bits = quantized_matmul_inputs(a, b, bits)
    ea = _quant_params(a, "a", bits, True, "row", None)[0] / 2
    eb = _quant_params(b, "b", bits, True, "column", None)[0] / 2
    with np.errstate(over="ignore"):
        absa, absb = np.abs(a), np.abs(b)
        bound = absa.sum(1, keepdims=True) * eb + ea * absb.sum(0, keepdims=True) + a.shape[1] * ea * eb
        bound = bound * (1 + 2.0**-50) + 8 * 2.0**-53 * (absa + ea) @ (absb + eb)
    return within_float64(bound, "a, b", "the bound")


__all__ = ["int_range", "quant_params", "quantize", "dequantize", "quantization_error_bound", "int32_safe_depth",
           "int_matmul", "quantized_matmul", "quantized_matmul_bound", "GRANULARITY"]
