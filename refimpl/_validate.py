"""Argument checks shared by the refimpl modules: clear errors, never silent NaN."""

from __future__ import annotations

import numbers

import numpy as np


def as_float_array(x, name: str, *, ndim: int | None = None, allow_neg_inf: bool = False) -> np.ndarray:
    """``x`` as a float64 array (a copy is never needed: callers never write to it).

    Rejects non-numeric and complex input, wrong rank, NaN, +inf, and -inf unless
    ``allow_neg_inf`` (masked scores and log-sum-exps may legitimately be -inf).
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name}: expected a real array, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN")
    if np.isposinf(arr).any():
        raise ValueError(f"{name}: contains +inf")
    if not allow_neg_inf and np.isneginf(arr).any():
        raise ValueError(f"{name}: contains -inf")
    return arr


def positive_int(x, name: str, *, allow_zero: bool = False) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}")
    x = int(x)
    if x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name}: expected {'a non-negative' if allow_zero else 'a positive'} int, got {x}")
    return x


def positive_float(x, name: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a real number, got {type(x).__name__}")
    x = float(x)
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"{name}: expected a finite positive number, got {x}")
    return x


def leading_shape(arr: np.ndarray, name: str, expected: tuple, what: str) -> None:
    """Require ``arr.shape[:len(expected)] == expected`` (``None`` entries match anything)."""
    got = arr.shape[: len(expected)]
    if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
        raise ValueError(f"{name}: expected leading shape {what} = {expected}, got shape {arr.shape}")


def chunk_starts(L: int, chunk_size, name: str = "chunk_size") -> list:
    """Start offsets of consecutive chunks of ``chunk_size`` tokens (the last may be shorter)."""
    c = positive_int(chunk_size, name)
    return list(range(0, L, c))
