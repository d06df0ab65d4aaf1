"""Reasoned error bounds for comparing attention implementations.

Float64 bound (a float64 implementation against the exact value).
Write u = 2^-53 (unit roundoff). For one score s_ij = scale * <q_i, k_j>
computed in floating point, the dot product's error is at most
gamma_D * scale * ||q_i|| ||k_j|| with gamma_D = D u / (1 - D u) (Higham,
*Accuracy and Stability of Numerical Algorithms*, eq. 3.5, plus Cauchy-Schwarz);
softcap (|d tanh| <= 1) does not amplify it and a bias adds u |bias|.
A perturbation delta of the scores changes each weight P_ij = exp(s_ij - lse_i)
by a relative amount of at most 2 delta, and the sum over Lk keys and the exp,
log and division add (Lk + c) u. Hence, with V = max |v|,

    |out - out_exact| <= V * (2 delta + (Lk + 8) u),   delta = (D + 2) u * S + u * max|bias|
    |lse - lse_exact| <= delta + (Lk + 8) u * max(1, |lse|)

where S = scale * max_i ||q_i|| * max_j ||k_j||. Two float64 implementations
each within this bound differ by at most twice it; the suite uses
``FLOAT64_SAFETY`` (4) times the one-sided bound, and ``tests/test_tolerance.py``
measures refimpl's actual error against a 50-digit mpmath oracle to show the
spec sits far inside (the measured margin is printed there).

float32, bfloat16 and float16 kernels are held to the one precision rule of
``properties.precision`` (FACTOR x the error of a naive computation in that precision from
the same rounded inputs, plus a derived floor); the attention baselines (both eager orders
of flash-attn's ``attention_ref``) and floors, forward and backward, are
``properties.attention_lowp``.

FP8 (e4m3/e5m2) is not supported: an FP8 kernel quantises q, k, v and P with
per-tensor or per-block scales that are part of the kernel, not of the inputs,
so no bound stated from the inputs alone would be both safe and tight.
"""

from __future__ import annotations

import math

import numpy as np

from refimpl.softmax import EXP_MAX_ULP

from .comparison import (ETA64, FLOAT64_SAFETY, U32, U64, UNIT_ROUNDOFF, _RECORDER, compare_close,  # noqa: F401
                         compare_lse, numpy_dtype, recording, round_to)
from .attention_lowp import kernel_bounds as _kernel_bounds, naive_attention as _naive_attention

def _norms(x: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(x, axis=-1), initial=0.0))


def score_error_bound(q, k, scale: float, bias=None) -> float:
    """delta: bound on the absolute error of any final score, float64."""
    D = q.shape[-1]
    S = scale * _norms(q) * _norms(k)
    b = 0.0 if bias is None else float(np.max(np.abs(np.where(np.isfinite(bias), bias, 0.0)), initial=0.0))
    return (D + 2) * U64 * S + U64 * b


def attention_forward_bounds(q, k, v, *, scale=None, bias=None, lse=None, safety: float = FLOAT64_SAFETY):
    """(atol_out, atol_lse) for comparing two float64 attention results.

    ``lse`` (the reference's) scales the lse bound; pass None to use 1.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    D, Lk = q.shape[-1], k.shape[-2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    delta = score_error_bound(q, k, scale, bias)
    V = float(np.max(np.abs(v), initial=0.0))
    # + an underflow floor: each product p_j v_j may lose up to ETA64 absolutely (a
    # subnormal v makes the relative terms 0), and the Lk-term sum and the division keep it
    atol_out = safety * (V * (2 * delta + (Lk + 8) * U64) + (Lk + 8) * ETA64)
    lse_mag = 1.0 if lse is None else max(1.0, float(np.max(np.abs(lse[np.isfinite(lse)]), initial=0.0)))
    atol_lse = safety * (delta + (Lk + 8) * U64 * lse_mag)
    return atol_out, atol_lse


def flash_forward_bounds(q, k, v, *, block_k, scale=None, softcap=None, bias=None, lse=None, chunks: int = 1):
    """(atol_out, atol_lse) for a tiled float64 result against refimpl.attention.

    The tiled path computes the same weights exp(s - lse) as the naive one, but
    reaches them through T = ceil(Lk / block_k) online steps, so on top of
    ``attention_forward_bounds`` (which covers the score error delta and a sum
    of Lk terms in any order) each weight carries the rounding of its
    rescalings. With u = 2^-53:

    * the running max m_1 <= m_2 <= ... <= m_T is exact (a max of computed
      scores); the factor exp(m_t - m_{t+1}) is computed with relative error
      <= u |m_t - m_{t+1}| + (1 + 2 X) u: the subtraction, the exp (X =
      ``refimpl.softmax.EXP_MAX_ULP`` (from ``refimpl._exp``) = 1 ulp, relative 2 X u) and the multiply;
    * a weight from tile t is multiplied by the factors of the later tiles, so
      its relative error grows by at most u sum_t |m_t - m_{t+1}| + 2 T u
      <= u R + 2 T u, where R <= 2 (S_eff + b) bounds the spread of the row's
      scores: S_eff = scale max||q|| max||k|| (at most c with softcap c),
      b = max |bias| (the sum telescopes: the max only grows);
    * FA1 also divides by l' and multiplies by l at every step: at most
      3 more roundings per step, so (4 + 2 X) T u = 6 T u covers both variants;
    * weights normalised by their sum: a relative error e per weight moves the
      output by at most 2 e max|v| and the log-sum-exp by at most e.

    Hence the extra terms ``safety * max|v| * 2 (u R + 6 T u)`` for out and
    ``safety * (u R + 6 T u)`` for lse. Split-KV with ``chunks`` partial results
    adds the merge: weights exp(lse_c - lse) perturbed by the partials' lse
    errors e_l (relative 2 e_l) and C + 4 roundings, i.e. 2 max|v| (2 e_l + (C + 4) u)
    on out and e_l + (C + 4) u max(1, |lse|) on lse.
    The bound grows with the number of tiles, as it must; it is not a looser
    constant. Measured: over 1,500 random cases (L <= 24, block_k 1..5, fa1 and
    fa2, masks, softcap, bias, |q|, |k| up to ~100 so |scores| up to ~1e4) the
    worst error was 0.021 of this bound (0.040 of the naive bound alone).
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    atol_out, atol_lse = attention_forward_bounds(q, k, v, scale=scale, bias=bias, lse=lse)
    D, Lk = q.shape[-1], k.shape[-2]
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    S = sc * float(np.max(np.linalg.norm(q, axis=-1), initial=0.0)) * float(np.max(np.linalg.norm(k, axis=-1), initial=0.0))
    if softcap is not None:
        S = min(S, softcap)
    b = 0.0 if bias is None else float(np.max(np.abs(np.where(np.isfinite(bias), bias, 0.0)), initial=0.0))
    T = math.ceil(Lk / block_k)
    V = float(np.max(np.abs(v), initial=0.0))
    e = U64 * 2 * (S + b) + (4 + 2 * EXP_MAX_ULP) * T * U64
    atol_out += FLOAT64_SAFETY * V * 2 * e
    atol_lse += FLOAT64_SAFETY * e
    if chunks > 1:
        lse_mag = 1.0 if lse is None else max(1.0, float(np.max(np.abs(lse[np.isfinite(lse)]), initial=0.0)))
        atol_out += FLOAT64_SAFETY * (V * 2 * (2 * atol_lse + (chunks + 4) * U64) + (chunks + 4) * ETA64)
        atol_lse += FLOAT64_SAFETY * (chunks + 4) * U64 * lse_mag
    return atol_out, atol_lse


# The low-precision attention bounds live in properties.attention_lowp (they build on
# properties.precision and properties.comparison, never on this module); these names delegate to it.


def float32_naive_attention(q, k, v, mask_bool, scale, softcap=None, bias=None):
    """The naive float32 attention (``properties.attention_lowp.naive_attention``): (out, lse)."""
    return _naive_attention(q, k, v, mask_bool, scale, "float32", softcap, bias)


def lowp_naive_attention(q, k, v, mask_bool, scale, precision: str, softcap=None, bias=None):
    """The naive eager attention in ``precision`` (``properties.attention_lowp.naive_attention``)."""
    return _naive_attention(q, k, v, mask_bool, scale, precision, softcap, bias)


def float32_kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, softcap=None, bias=None):
    """(atol_out, atol_lse) of a float32 kernel (``properties.attention_lowp.kernel_bounds``)."""
    return _kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, "float32", softcap, bias)


def lowp_kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, precision: str, softcap=None, bias=None):
    """(atol_out, atol_lse) of a float32/bfloat16/float16 kernel (``properties.attention_lowp.kernel_bounds``)."""
    return _kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, precision, softcap, bias)
