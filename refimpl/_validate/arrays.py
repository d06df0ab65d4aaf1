"""Array arguments: float64 arrays (finite, shaped), bool arrays, index and integer arrays, shapes."""

from __future__ import annotations

import numbers

import numpy as np

from .budget import MAX_COUNT, check_budget
from .scalars import _type, positive_int


def as_float_array(x, name: str, *, ndim: int | None = None, allow_neg_inf: bool = False,
                   shape: tuple | None = None, shape_doc: str = "", min_size: dict | None = None) -> np.ndarray:
    """``x`` as a float64 array (callers never write to it, so no copy is made).

    Rejects non-numeric, bool and complex input (TypeError), wrong rank or shape,
    NaN, +inf, and -inf unless ``allow_neg_inf`` (ValueError). ``shape`` may hold
    None for a free axis; ``shape_doc`` names the axes, e.g. "(T, E)".
    ``min_size`` {axis: n} requires at least n entries along an axis.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected a real floating-point array, got {_type(x)}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested sequences
        raise TypeError(f"{name}: expected a real floating-point array, got {_type(x)} ({e})") from None
    if arr.dtype != np.float64 and (arr.dtype == object or arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer))):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    doc = f" {shape_doc}" if shape_doc else ""
    if arr.size > 2**20:  # a broadcast view or memory map is cheap to pass, not to compute with
        check_budget(name, shape=arr.shape, what=f"a float64 array of shape {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions{doc}, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
            want = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name}: expected shape{doc} = {want}, got {arr.shape}")
    for axis, n in (min_size or {}).items():
        if arr.shape[axis] < n:
            raise ValueError(f"{name}: expected at least {n} entries along axis {axis}{doc}, got shape {arr.shape}")
    if arr.dtype != np.float64:
        if np.issubdtype(arr.dtype, np.integer) and arr.size and np.abs(arr).max() >= 2**53:
            raise ValueError(f"{name}: expected integer entries within 2**53 (exact in float64), got one beyond it")
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():  # one pass when all is well; find the culprit only when not
        want_finite = "finite entries (or -inf, hidden)" if allow_neg_inf else "finite entries"
        if np.isnan(arr).any():
            raise ValueError(f"{name}: expected {want_finite}, got an entry NaN")
        if np.isposinf(arr).any():
            raise ValueError(f"{name}: expected {want_finite}, got an entry +inf")
        if not allow_neg_inf:
            raise ValueError(f"{name}: expected {want_finite}, got an entry -inf")
    return arr


def bool_array(x, name: str, *, shape: tuple | None = None, shape_doc: str = "") -> np.ndarray:
    """``x`` as a bool array of the given shape (None entries free)."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected a bool array, got {_type(x)}")
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name}: expected a bool array, got dtype {arr.dtype}")
    if shape is not None and (arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape))):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape{(' ' + shape_doc) if shape_doc else ''} = {want}, got {arr.shape}")
    return arr


def leading_shape(arr: np.ndarray, name: str, expected: tuple, what: str) -> None:
    """Require ``arr.shape[:len(expected)] == expected`` (``None`` entries match anything)."""
    got = arr.shape[: len(expected)]
    if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
        raise ValueError(f"{name}: expected leading shape {what} = {expected}, got shape {arr.shape}")


def chunk_starts(L: int, chunk_size, name: str = "chunk_size") -> list:
    """Start offsets of consecutive chunks of ``chunk_size`` tokens (the last may be shorter)."""
    c = positive_int(chunk_size, name)
    return list(range(0, L, c))

def same_shape(x: np.ndarray, ref_shape: tuple, name: str) -> None:
    if x.shape != tuple(ref_shape):
        raise ValueError(f"{name}: expected shape {tuple(ref_shape)}, got {x.shape}")


def _integer_candidate(x, name: str) -> np.ndarray:
    """``x`` as an array, before its dtype is checked: None, strings and ragged sequences are TypeErrors."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected an integer array, got {_type(x)}")
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected an integer array, got {_type(x)} ({e})") from None


def index_array(x, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``x`` as an int64 array of non-negative indices (< MAX_COUNT); bool and float rejected."""
    arr = _integer_candidate(x, name)
    if arr.size == 0 and arr.dtype == np.float64:  # [] or np.zeros(0): an empty index set
        arr = arr.astype(np.int64)
    if arr.dtype == object and arr.size and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                 for v in arr.flat):
        if any(not 0 <= int(v) < MAX_COUNT for v in arr.flat):
            raise ValueError(f"{name}: expected indices in [0, 2**62), got an entry out of range")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= MAX_COUNT):
        raise ValueError(f"{name}: expected indices in [0, 2**62), got range [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.int64, copy=False)


def int_array(x, name: str, *, ndim: int | None = None, shape: tuple | None = None, bound: int = MAX_COUNT) -> np.ndarray:
    """``x`` as an int64 array of signed integers with |entry| <= ``bound``; bool, float and object rejected."""
    arr = _integer_candidate(x, name)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if arr.size and (int(arr.min()) < -bound or int(arr.max()) > bound):
        raise ValueError(f"{name}: expected entries in [-{bound}, {bound}], got range [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.int64, copy=False)
