"""Units of rounding and the comparisons that record their headroom (a leaf of ``properties``).

``UNIT_ROUNDOFF`` per precision, ``round_to`` (round float64 values to a precision and back),
``compare_close`` / ``compare_lse`` (assert a bound, naming the worst entry) and ``recording``
(collect each comparison's error and bound for the reports). ``properties.tolerance`` (the float64
bounds), ``properties.precision`` (the low-precision rule) and ``properties.attention_lowp`` build
on it and ``properties.tolerance`` re-exports it.
"""

from __future__ import annotations

import contextlib
import contextvars

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
        raise ValueError(f"atol: expected a tolerance >= 0 for {name}, got {atol!r}; {context}")
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
