"""Scalar arguments (counts, real numbers, flags, names, instances), finite results, and ``fail``:
the one raise of every argument error, in the one wording ``<names>: expected <what>, got <what>``."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .budget import MAX_COUNT


def fail(names: str, expected: str, got, *, error: type = ValueError):
    """Raise ``error`` (ValueError or TypeError) worded ``<names>: expected <expected>, got <got>``.

    The one raise of an argument check whose test is specific to its family (the checks of a
    family live in this package's module for it); ``got`` is shown as given (a str) or as its
    plain repr (see ``plain``)."""
    shown = got if isinstance(got, str) else repr(plain(got))
    raise error(f"{names}: expected {expected}, got {shown}")


def _type(x) -> str:
    return type(x).__name__


def plain(x):
    """x for a message: NumPy scalars as the Python int / float / str they hold (never ``np.float64(...)``)."""
    return x.item() if isinstance(x, np.generic) else x


def count(x, name: str, *, minimum: int = 0, maximum: int | None = MAX_COUNT, what: str = "") -> int:
    """An integer count in [minimum, maximum] (maximum None: unbounded, exact Python ints)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an int{what and ' (' + what + ')'}, got {_type(x)}")
    x = int(x)
    if x < minimum or (maximum is not None and x > maximum):
        hi = "" if maximum is None else f" and <= {maximum if maximum != MAX_COUNT else '2**62'}"
        raise ValueError(f"{name}: expected an int >= {minimum}{hi}{what and ' (' + what + ')'}, got {x}")
    return x


def positive_int(x, name: str, *, allow_zero: bool = False) -> int:
    """A positive (or, with allow_zero, non-negative) count <= MAX_COUNT."""
    return count(x, name, minimum=0 if allow_zero else 1)


def real_number(x, name: str, *, minimum: float | None = None, maximum: float | None = None,
                min_open: bool = False, max_open: bool = False, finite: bool = True) -> float:
    """A real number (Python or NumPy; bool and complex rejected) as a float in the given range."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a real number, got {_type(x)}")
    try:
        v = float(x)
    except OverflowError:
        raise ValueError(f"{name}: expected a number within float64 range, got {x}") from None
    lo = "" if minimum is None else f"{'>' if min_open else '>='} {minimum:g}"
    hi = "" if maximum is None else f"{'<' if max_open else '<='} {maximum:g}"
    rng = " and ".join(s for s in (lo, hi) if s)
    want = f"a {'finite ' if finite else ''}number{(' ' + rng) if rng else ''}"
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name}: expected {want}, got {plain(x)!r}")
    if minimum is not None and (v < minimum or (min_open and v == minimum)):
        raise ValueError(f"{name}: expected {want}, got {plain(x)!r}")
    if maximum is not None and (v > maximum or (max_open and v == maximum)):
        raise ValueError(f"{name}: expected {want}, got {plain(x)!r}")
    return v


def positive_float(x, name: str) -> float:
    return real_number(x, name, minimum=0.0, min_open=True)


def flag(x, name: str) -> bool:
    """A bool (Python or NumPy)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {_type(x)}")
    return bool(x)


def choice(x, name: str, options) -> str:
    """One of ``options`` (strings); the message lists them."""
    options = tuple(options)
    if not isinstance(x, str) or x not in options:
        raise ValueError(f"{name}: expected one of {options}, got {plain(x)!r}")
    return x


def instance(x, name: str, cls, what: str | None = None):
    """``x`` if it is a ``cls`` instance, else TypeError naming the expected class."""
    if not isinstance(x, cls):
        expected = what or (cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls))
        raise TypeError(f"{name}: expected a {expected}, got {_type(x)}")
    return x


def axis_index(axis, ndim: int, name: str = "axis") -> int:
    """An axis in [-ndim, ndim), as a non-negative int."""
    a = count(axis, name, minimum=-(2**62))
    if not -ndim <= a < ndim:
        raise ValueError(f"{name}: expected an int in [{-ndim}, {ndim}) for an array of {ndim} dimensions, got {a}")
    return a % ndim


def finite_result(value, what: str, names: str):
    """``value`` (a float or array) if finite; else ValueError: an exact value beyond float64 range."""
    v = np.asarray(value)
    if not np.isfinite(v).all():
        raise ValueError(f"{names}: expected {what} within float64 range (exact values are never reported as inf), "
                         f"got one beyond it")
    return value
