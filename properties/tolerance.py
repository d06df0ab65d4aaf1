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

Float32 kernels are compared the flash-attn way (CONVENTIONS.md, Tolerances):
their error against the float64 spec may be at most ``2x`` (forward) the error
of a naive float32 NumPy computation of the same attention, plus a
rounding-noise floor of a few float32 ulps (see ``float32_kernel_bounds``).

bfloat16 / float16 kernels (``lowp_kernel_bounds``) are held the same way,
following flash-attn's tests (tests/test_flash_attn.py: ``attention_ref`` with
``upcast=False`` is the naive low-precision baseline, and the kernel's error
against the fp32 reference must be at most 2x the baseline's plus a small
constant). Inputs are drawn exactly representable in the precision (the
strategies round them: ``round_to``), so kernel, baseline and spec see the same
numbers. The baseline (``lowp_naive_attention``) is what an eager framework
computes in that dtype: every matmul accumulates in float32 and rounds its
result to the dtype, and so does every elementwise step (scale, softcap, bias,
exp, row sum, division); its lse stays float32. Floor, with u the dtype's unit
roundoff (2^-8 bfloat16, 2^-11 float16), V = max|v|, S the score magnitude:

    out:  2 u V + 4 (D + Lk) u32 V (1 + S)
          (an output rounded to the dtype: u |out| <= u V; weights rounded to
          the dtype before the PV matmul, as flash-attn does: relative u each,
          sum_j |dP_j| |v_j| <= u V; plus float32 accumulation of the scores and
          the sums: (D + Lk) u32 relative on weights with scores of size S)
    lse:  u max(1, |lse|) + 4 (D + Lk) u32 (max(1, |lse|) + S)
          (an lse stored in the dtype, plus the float32 terms)

FP8 (e4m3/e5m2) is not supported: an FP8 kernel quantises q, k, v and P with
per-tensor or per-block scales that are part of the kernel, not of the inputs,
so no bound stated from the inputs alone would be both safe and tight.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

U64 = 2.0**-53
ETA64 = 2.0**-1074  # the smallest float64 subnormal: the absolute error floor of an underflowing product
U32 = 2.0**-24
FLOAT64_SAFETY = 4.0

#: unit roundoff of each precision an adapter may declare
UNIT_ROUNDOFF = {"float64": U64, "float32": U32, "bfloat16": 2.0**-8, "float16": 2.0**-11}


def numpy_dtype(precision: str):
    """The NumPy dtype of a precision name (bfloat16 from ml_dtypes)."""
    if precision == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(precision)


def round_to(x, precision: str) -> np.ndarray:
    """x rounded to ``precision`` (nearest even), returned as float64 (exactly representable)."""
    x = np.asarray(x, dtype=np.float64)
    if precision == "float64":
        return x
    return x.astype(numpy_dtype(precision)).astype(np.float64)


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


#: the list ``recording()`` collects into in this context (None: not recording)
_RECORDER: contextvars.ContextVar = contextvars.ContextVar("refimpl_compare_recorder", default=None)


@contextlib.contextmanager
def recording():
    """Collect ``(name, max |error|, bound)`` of every :func:`compare_close` in this context.

    The runners wrap each example in it to report a property's worst error against its
    bound (the headroom); the comparisons themselves are unchanged.
    """
    log: list = []
    token = _RECORDER.set(log)
    try:
        yield log
    finally:
        _RECORDER.reset(token)


def compare_lse(name: str, got, ref, atol: float, context: str) -> None:
    """Assert -inf positions equal and finite entries within ``atol``."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {ref.shape}; {context}")
    if np.isnan(got).any():
        raise AssertionError(f"{name}: NaN at {np.argwhere(np.isnan(got))[:3].tolist()}; {context}")
    inf_got, inf_ref = np.isneginf(got), np.isneginf(ref)
    if not np.array_equal(inf_got, inf_ref):
        where = np.argwhere(inf_got != inf_ref)[0].tolist()
        raise AssertionError(
            f"{name}: -inf pattern differs at {where} (got {float(got[tuple(where)])!r}, "
            f"expected {float(ref[tuple(where)])!r}); "
            f"a fully masked row must give -inf and only those; {context}"
        )
    fin = ~inf_ref
    compare_close(name, got[fin], ref[fin], atol, context)


def compare_close(name: str, got, ref, atol: float, context: str) -> None:
    """Assert |got - ref| <= atol everywhere, with a message naming the worst entry."""
    if not atol >= 0:  # a NaN bound would pass everything
        raise ValueError(f"{name}: the tolerance is {atol!r}, not a number >= 0; {context}")
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {ref.shape}; {context}")
    if got.size == 0:
        return
    if not np.isfinite(got).all():
        bad = np.argwhere(~np.isfinite(got))[0].tolist()
        raise AssertionError(f"{name}: non-finite value {float(got[tuple(bad)])!r} at {bad}; {context}")
    err = np.abs(got - ref)
    worst = np.unravel_index(np.argmax(err), err.shape)
    log = _RECORDER.get()
    if log is not None:
        log.append((name, float(err[worst]), float(atol)))
    if err[worst] > atol:
        raise AssertionError(
            f"{name}: max |error| {err[worst]:.3e} at {list(map(int, worst))} exceeds bound {atol:.3e} "
            f"(got {float(got[worst])!r}, expected {float(ref[worst])!r}); {context}"
        )


def float32_naive_attention(q, k, v, mask_bool, scale, softcap=None, bias=None):
    """A naive float32 NumPy attention (the baseline a float32 kernel is held to).

    ``mask_bool`` (broadcastable to (B, Hq, Lq, Lk)) True = visible; GQA by repeat.
    Returns (out, lse) in float32 arithmetic (converted to float64 for comparison).
    """
    f = np.float32
    G = q.shape[1] // k.shape[1]
    q32, k32, v32 = q.astype(f), np.repeat(k, G, axis=1).astype(f), np.repeat(v, G, axis=1).astype(f)
    s = (q32 @ np.swapaxes(k32, -1, -2)) * f(scale)
    if softcap is not None:
        s = f(softcap) * np.tanh(s / f(softcap))
    if bias is not None:
        s = s + np.asarray(bias).astype(f)
    s = np.where(mask_bool, s, f(-np.inf))
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, f(0))
    e = np.exp(s - m)
    l = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(l > 0, (e / np.where(l > 0, l, f(1))) @ v32, f(0))
        lse = np.where(l[..., 0] > 0, m[..., 0] + np.log(np.where(l[..., 0] > 0, l[..., 0], f(1))), -np.inf)
    return out.astype(np.float64), lse.astype(np.float64)


def float32_kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, softcap=None, bias=None, factor: float = 2.0):
    """(atol_out, atol_lse) for a float32 kernel: factor x naive-float32 error + noise floor.

    The floor covers what no float32 computation can avoid and what the naive
    baseline may escape by luck on a small problem: each score is rounded with
    an absolute error of order u32 |s|, which moves its weight by a relative
    u32 |s| in a direction set by the order of operations. With S = scale *
    max||q|| * max||k|| (softcap c caps it at c) the floor is
    8 u32 max|v| (1 + S) on out and 8 u32 (max(1, |lse|) + S) on lse: a few
    float32 ulps at ordinary score magnitudes, wider only where the scores
    themselves are large (the extreme-score properties, |s| up to ~1e4).
    """
    o32, l32 = float32_naive_attention(q, k, v, mask_bool, scale, softcap, bias)
    fin = np.isfinite(ref_lse)
    err_out = float(np.max(np.abs(o32 - ref_out), initial=0.0))
    with np.errstate(invalid="ignore"):  # -inf - -inf in fully masked rows, excluded by fin
        err_lse = float(np.max(np.abs(np.where(fin, l32 - ref_lse, 0.0)), initial=0.0))
    V = float(np.max(np.abs(v), initial=0.0))
    lse_mag = max(1.0, float(np.max(np.abs(np.where(fin, ref_lse, 0.0)), initial=0.0)))
    S = scale * _norms(np.asarray(q, np.float64)) * _norms(np.asarray(k, np.float64))
    if softcap is not None:
        S = min(S, softcap)
    return factor * err_out + 8 * U32 * V * (1 + S), factor * err_lse + 8 * U32 * (lse_mag + S)


def flash_forward_bounds(q, k, v, *, block_k, scale=None, softcap=None, bias=None, lse=None, chunks: int = 1):
    """(atol_out, atol_lse) for a tiled float64 result against refimpl.attention.

    The tiled path computes the same weights exp(s - lse) as the naive one, but
    reaches them through T = ceil(Lk / block_k) online steps, so on top of
    ``attention_forward_bounds`` (which covers the score error delta and a sum
    of Lk terms in any order) each weight carries the rounding of its
    rescalings. With u = 2^-53:

    * the running max m_1 <= m_2 <= ... <= m_T is exact (a max of computed
      scores); the factor exp(m_t - m_{t+1}) is computed with relative error
      <= u |m_t - m_{t+1}| + 2u (the subtraction, the exp, the multiply);
    * a weight from tile t is multiplied by the factors of the later tiles, so
      its relative error grows by at most u sum_t |m_t - m_{t+1}| + 2 T u
      <= u R + 2 T u, where R <= 2 (S_eff + b) bounds the spread of the row's
      scores: S_eff = scale max||q|| max||k|| (at most c with softcap c),
      b = max |bias| (the sum telescopes: the max only grows);
    * FA1 also divides by l' and multiplies by l at every step: at most
      3 more roundings per step, so 5 T u covers both variants;
    * weights normalised by their sum: a relative error e per weight moves the
      output by at most 2 e max|v| and the log-sum-exp by at most e.

    Hence the extra terms ``safety * max|v| * 2 (u R + 5 T u)`` for out and
    ``safety * (u R + 5 T u)`` for lse. Split-KV with ``chunks`` partial results
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
    e = U64 * 2 * (S + b) + 5 * T * U64
    atol_out += FLOAT64_SAFETY * V * 2 * e
    atol_lse += FLOAT64_SAFETY * e
    if chunks > 1:
        lse_mag = 1.0 if lse is None else max(1.0, float(np.max(np.abs(lse[np.isfinite(lse)]), initial=0.0)))
        atol_out += FLOAT64_SAFETY * (V * 2 * (2 * atol_lse + (chunks + 4) * U64) + (chunks + 4) * ETA64)
        atol_lse += FLOAT64_SAFETY * (chunks + 4) * U64 * lse_mag
    return atol_out, atol_lse


def lowp_naive_attention(q, k, v, mask_bool, scale, precision: str, softcap=None, bias=None):
    """The naive attention an eager framework computes in ``precision`` (bfloat16/float16).

    Every matmul accumulates in float32 and rounds its result to the dtype; every
    elementwise step is rounded to the dtype; the lse stays float32 (see the
    module docstring). Returns float64 (out, lse).
    """
    dt, f = numpy_dtype(precision), np.float32

    def r(x):
        with np.errstate(over="ignore"):
            return np.asarray(x, dtype=f).astype(dt).astype(f)

    G = q.shape[1] // k.shape[1]
    q, k, v = r(q), r(np.repeat(k, G, axis=1)), r(np.repeat(v, G, axis=1))
    with np.errstate(over="ignore", invalid="ignore"):  # float16 may overflow: handled by the caller
        s = r(r(q * f(scale)) @ np.swapaxes(k, -1, -2))  # q scaled first, as flash-attn's attention_ref
    if softcap is not None:
        s = r(f(softcap) * np.tanh(s / f(softcap)))
    if bias is not None:
        s = r(s + r(np.where(np.isfinite(bias), bias, 0.0)))
        mask_bool = mask_bool & np.isfinite(bias)
    s = np.where(mask_bool, s, f(-np.inf))
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, f(0))
    with np.errstate(over="ignore"):
        e = r(np.exp(s - m))
    l32 = np.sum(e, axis=-1, keepdims=True, dtype=f)
    l = r(l32)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = r(np.where(l > 0, e / np.where(l > 0, l, f(1)), f(0)))
        out = r(P @ v)
        lse = np.where(l32[..., 0] > 0, m[..., 0] + np.log(np.where(l32[..., 0] > 0, l32[..., 0], f(1))), -np.inf)
    return out.astype(np.float64), lse.astype(np.float64)


def lowp_kernel_bounds(q, k, v, ref_out, ref_lse, mask_bool, scale, precision: str, softcap=None, bias=None,
                       factor: float = 2.0):
    """(atol_out, atol_lse) for a bfloat16/float16 kernel: factor x the naive low-precision
    error (``lowp_naive_attention``) + the floor derived in the module docstring."""
    o_lp, l_lp = lowp_naive_attention(q, k, v, mask_bool, scale, precision, softcap, bias)
    fin = np.isfinite(ref_lse)
    with np.errstate(invalid="ignore"):
        err_out = float(np.max(np.abs(o_lp - ref_out), initial=0.0))
        err_lse = float(np.max(np.abs(np.where(fin, l_lp - ref_lse, 0.0)), initial=0.0))
    # A baseline that overflows the format (float16 scores beyond 65504) says nothing about
    # the kernel, which accumulates scores in float32: then the floor alone applies (its
    # float32 term grows with the score magnitude S).
    err_out = err_out if np.isfinite(err_out) else 0.0
    err_lse = err_lse if np.isfinite(err_lse) else 0.0
    u = UNIT_ROUNDOFF[precision]
    V = float(np.max(np.abs(v), initial=0.0))
    lse_mag = max(1.0, float(np.max(np.abs(np.where(fin, ref_lse, 0.0)), initial=0.0)))
    S = scale * _norms(np.asarray(q, np.float64)) * _norms(np.asarray(k, np.float64))
    if softcap is not None:
        S = min(S, softcap)
    D, Lk = q.shape[-1], k.shape[-2]
    f32 = 4 * (D + Lk) * U32
    floor_out = 2 * u * V + f32 * V * (1 + S)
    floor_lse = u * lse_mag + f32 * (lse_mag + S)
    return factor * err_out + floor_out, factor * err_lse + floor_lse
