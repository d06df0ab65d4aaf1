"""One precision rule for every kind, forward and backward.

An adapter declares ``precision`` in {float64, float32, bfloat16, float16}; its inputs are drawn
exactly representable in that precision (``round_inputs``), so the adapter, the naive baseline
and the spec see the same numbers. Every floating-point output of every property is then held
to one of two bounds:

* **float64**: the property's own derived float64 bound, stated beside it (a forward error
  analysis in the unit roundoff u = 2^-53, times a small safety factor).
* **float32, bfloat16, float16**: the flash-attn rule (its tests/test_flash_attn.py compares a
  kernel's error against the fp32 reference with the error of ``attention_ref(upcast=False)``):

      |got - spec| <= FACTOR * max |naive_p - spec| + floor

  where ``naive_p`` is the same quantity computed naively in precision p from the same inputs
  (``naive_ops(p)``: what an eager framework computes in that dtype: every elementwise step
  rounded to p, every sum and matmul accumulated in float32 and its result rounded to p; plain
  float32 NumPy for float32), ``spec`` is refimpl's float64 result, and ``floor`` is the
  rounding no computation in p can avoid and the naive baseline may escape by luck on a small
  problem, derived per quantity (``output_floor``: the output's own rounding u_p |y| plus the
  float32 accumulation n u32 |terms|, times ``FLOOR_SAFETY``).

FACTOR is 2, as in flash-attn's tests: a correct kernel that orders its operations differently
from the naive baseline makes errors of the same size, not the same errors; a kernel with a real
bug (a missing rescale, a dropped tile, a wrong convention) errs by O(|y|), far beyond.

Integer outputs (indices, counts, masks) are compared exactly in every precision; where the
spec's competing scores differ by less than the precision resolves, the comparison is by score
(each kind states its near-tie rule).
"""

from __future__ import annotations

import numpy as np

from .comparison import U32, U64, UNIT_ROUNDOFF, compare_close, numpy_dtype, round_to

__all__ = ["PRECISIONS", "FACTOR", "FLOOR_SAFETY", "precision_of", "unit_roundoff", "round_inputs",
           "naive_ops", "NaiveOps", "naive_error", "lowp_bound", "output_floor", "compare_in_precision"]

PRECISIONS = ("float64", "float32", "bfloat16", "float16")
FACTOR = 2.0
FLOOR_SAFETY = 4.0


def precision_of(impl) -> str:
    """The adapter's declared precision (float64 when it declares none)."""
    return getattr(impl, "precision", None) or "float64"


def unit_roundoff(precision: str) -> float:
    """u of a precision name: 2^-53, 2^-24, 2^-8, 2^-11."""
    return UNIT_ROUNDOFF[precision]


def round_inputs(precision: str, *arrays):
    """Each array rounded to ``precision`` (float64 values, exactly representable); None kept."""
    out = tuple(None if a is None else round_to(a, precision) for a in arrays)
    return out[0] if len(out) == 1 else out


class NaiveOps:
    """The arithmetic of a naive computation in one precision.

    ``r(x)``: x as the compute dtype (float32 for the low precisions, float64 for float64),
    rounded to the precision. Elementwise results go through ``r``; ``sum`` and ``matmul``
    accumulate in the compute dtype and round their results with ``r``. Results are returned
    to float64 with ``out``.
    """

    def __init__(self, precision: str):
        if precision not in UNIT_ROUNDOFF:
            raise ValueError(f"precision: expected one of {list(UNIT_ROUNDOFF)}, got {precision!r}")
        self.precision = precision
        self.compute = np.float64 if precision == "float64" else np.float32
        self._store = numpy_dtype(precision)

    def r(self, x):
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.asarray(x, dtype=self.compute)
            if self.precision in ("float64", "float32"):
                return a
            return a.astype(self._store).astype(self.compute)

    def sum(self, x, axis=-1, keepdims=False):
        with np.errstate(over="ignore", invalid="ignore"):
            return self.r(np.sum(np.asarray(x, dtype=self.compute), axis=axis, keepdims=keepdims, dtype=self.compute))

    def mean(self, x, axis=-1, keepdims=False):
        n = np.shape(x)[axis] if np.ndim(x) else 1
        return self.r(self.sum(x, axis=axis, keepdims=keepdims) / self.compute(max(n, 1)))

    def matmul(self, a, b):
        with np.errstate(over="ignore", invalid="ignore"):
            return self.r(np.asarray(a, dtype=self.compute) @ np.asarray(b, dtype=self.compute))

    @staticmethod
    def out(x):
        return np.asarray(x, dtype=np.float64)


def naive_ops(precision: str) -> NaiveOps:
    return NaiveOps(precision)


def naive_error(naive, spec) -> float:
    """max |naive - spec| over the entries where both are finite; 0 when the baseline overflows
    (a float16 baseline beyond 65504 says nothing about a kernel accumulating in float32: the
    floor alone then applies)."""
    naive, spec = np.asarray(naive, np.float64), np.asarray(spec, np.float64)
    both = np.isfinite(naive) & np.isfinite(spec)
    if not both.any():
        return 0.0
    with np.errstate(invalid="ignore"):
        err = np.abs(naive[both] - spec[both])
    e = float(np.max(err, initial=0.0))
    return e if np.isfinite(e) else 0.0


def output_floor(precision: str, magnitude: float, n_accumulated: int = 1, term_magnitude: float | None = None) -> float:
    """The floor of a low-precision bound, for an output of size ``magnitude`` (max |y|) that
    accumulates ``n_accumulated`` terms of size at most ``term_magnitude`` (default: magnitude):

        FLOOR_SAFETY * (u_p * magnitude + n * u32 * term_magnitude)

    u_p |y|: the output stored in precision p (zero extra for float32 beyond the sum term);
    n u32 |terms|: the float32 accumulation every kernel does, in whatever order.
    """
    u = UNIT_ROUNDOFF[precision]
    t = magnitude if term_magnitude is None else term_magnitude
    acc = U32 if precision != "float64" else U64
    return FLOOR_SAFETY * (u * magnitude + max(int(n_accumulated), 1) * acc * t)


def lowp_bound(naive, spec, floor: float, factor: float = FACTOR) -> float:
    """FACTOR x the naive baseline's error against the spec, plus the floor."""
    return factor * naive_error(naive, spec) + floor


def compare_in_precision(name: str, got, spec, *, precision: str, float64_bound: float, naive=None,
                         floor: float = 0.0, context: str = "") -> float:
    """Compare ``got`` with the float64 ``spec`` under the adapter's precision; returns the bound used.

    float64: ``float64_bound`` (the property's derived bound). Lower precisions: ``naive``
    (the same quantity computed with ``naive_ops(precision)``; a callable is called with no
    arguments) and ``floor`` give ``lowp_bound``. The bound is never below the float64 bound.
    """
    if precision != "float64" and naive is None:
        raise ValueError(f"naive: expected the naive {precision} baseline of {name} for a {precision} comparison, got None")
    bound = float(precision_bound(precision, float64_bound, naive, spec, floor))
    compare_close(name, got, spec, bound, f"{context}; precision {precision}" if context else f"precision {precision}")
    return bound


# ----------------------------------------------------------------------------
# Layer kinds (norm, ffn, loss, cast, lowp_matmul, block, rope): one floor and the invariant rule.
# (Kept apart from the attention helpers so the two can grow independently; not in __all__
# to keep that line one engineer's: import them by name.)


def layer_floor(precision: str, float64_bound: float, magnitude: float) -> float:
    """The floor of a layer property's low-precision bound:

        float64_bound * u32 / u64  +  FLOOR_SAFETY * u_p * magnitude

    Each layer property's float64 bound is a forward error analysis linear in the unit
    roundoff u of the arithmetic (its sums, products and divisions; see each module), so
    evaluating it at u = u32 bounds what the float32 accumulation every low-precision kernel
    does can add, in whatever order it adds. ``magnitude`` is the size of the terms the output
    is formed from (max |output| where nothing cancels; e.g. r (|dxhat| + |xhat| |mean(dxhat
    xhat)|) for a norm's dx, which cancels to almost 0 on a two-element row): u_p * magnitude
    is one rounding to precision p of those terms, which a kernel storing an intermediate in p
    makes and the naive baseline may escape by luck on a small problem; FLOOR_SAFETY of them.
    """
    u = UNIT_ROUNDOFF[precision]
    return float(float64_bound) * (U32 / U64) + FLOOR_SAFETY * u * float(magnitude)


def _max_abs(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.max(np.abs(a), initial=0.0))


def compare_layer(name: str, got, spec, *, precision: str, float64_bound: float, naive, magnitude: float | None = None,
                  context: str = "") -> float:
    """``compare_in_precision`` with ``layer_floor`` (``magnitude``: the terms' size, default
    max |spec|); returns the bound."""
    if precision == "float64":
        floor = 0.0
    else:
        floor = layer_floor(precision, float64_bound, _max_abs(spec) if magnitude is None else magnitude)
    return compare_in_precision(name, got, spec, precision=precision, float64_bound=float64_bound, naive=naive,
                                floor=floor, context=context)


def invariant_bound(precision: str, float64_bound: float, naive=None, spec=None, magnitude: float | None = None) -> float:
    """The bound on |a - b| for two results of the adapter that agree in exact arithmetic
    (an invariant: norm preservation, a shift, a layout permutation, causality).

    float64: ``float64_bound`` (the property's own, which counts both sides). Lower
    precisions: each side lies within the low-precision bound of the exact value, so
    |a - b| <= 2 (FACTOR * max |naive - spec| + layer_floor), with ``naive`` the invariant's
    quantity computed naively in the precision, ``spec`` its float64 value (a callable
    ``naive`` is called with no arguments) and ``magnitude`` as in ``layer_floor``.
    """
    if precision == "float64":
        return float(float64_bound)
    base = naive() if callable(naive) else naive
    one = lowp_bound(base, spec, layer_floor(precision, float64_bound, _max_abs(spec) if magnitude is None else magnitude))
    return max(2.0 * one, float(float64_bound))


# --------------------------------------------------------------------------------------------
# MoE and linear-time mixers: the bound alone (for checks that measure the error their own way)


def precision_bound(precision: str, float64_bound, naive, spec, floor: float = 0.0):
    """The bound ``compare_in_precision`` applies: ``float64_bound`` for float64, else
    max(``lowp_bound(naive, spec, floor)``, float64_bound). ``float64_bound`` may be an array
    (an entrywise bound); ``naive`` may be a callable (called only below float64)."""
    if precision == "float64":
        return float64_bound
    if naive is None:
        raise ValueError(f"naive: expected the naive {precision} baseline for a {precision} bound, got None")
    base = naive() if callable(naive) else naive
    return np.maximum(lowp_bound(base, spec, floor), float64_bound)


def resolution(precision: str, score_bound: float) -> float:
    """Two competing spec scores closer than this are a near-tie in ``precision``: a correct
    computation in that precision may err by ``score_bound`` on each, so it may order them
    either way (2 x the score bound; 0 when the bound is 0)."""
    return 2.0 * float(score_bound)
