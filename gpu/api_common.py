"""What every topic of the facade (``gpu.api``) shares: the backends' names, the launch limits, the
argument rules of the float32 kernels (arrays copied to float32 and checked finite, positive scalars
validated after their float32 cast, tile sizes, threads per row) and the check that a kernel wrote
every output element (outputs start as NaN or ``INT_UNWRITTEN``, ``gpu.constants``)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from refimpl import validation as V
from refimpl.sdpa import check_real_4d  # the spec's own argument rules

from .constants import INT_UNWRITTEN
from .errors import unsupported


BACKENDS = ("numba", "cupy", "opencl")
#: launch limits every kernel respects (CUDA: threads per block, static shared memory per block)
MAX_THREADS_PER_BLOCK = 1024
MAX_STATIC_SHARED_BYTES = 48 * 1024
#: the kernels index with 32-bit ints
_INT32_LIMIT = 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def _float_4d(x, name: str) -> np.ndarray:
    arr = check_real_4d(x, name)
    if arr.size > _INT32_LIMIT:
        raise unsupported(name, f"at most {_INT32_LIMIT} elements (the kernels index with int32)", arr.size)
    with np.errstate(over="ignore"):  # reported below as a ValueError
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if out is arr:  # never hand the caller's own buffer to a kernel
        out = out.copy()
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: expected values within float32 range, got one that overflows float32")
    return out


def _positive_float32(x, name: str) -> float:
    """A positive number as the float32 kernels will use it: validated after the cast, so a
    value that float32 turns into 0, a subnormal or inf is an error, never silently another value."""
    v = V.positive_float(x, name)
    v32 = float(np.float32(v)) if v <= _F32_MAX else math.inf
    if not _F32_TINY <= v32 <= _F32_MAX:
        raise ValueError(f"{name}: expected a value representable as a normal float32 "
                         f"[{_F32_TINY:.3g}, {_F32_MAX:.3g}] (the kernels compute in float32), got {x}")
    return v32


def _tile(x, name: str, default: int) -> int:
    if x is None:
        return default
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)) or x < 1:
        raise ValueError(f"{name}: expected a positive int, got {V.plain(x)!r}")
    return int(x)


def _int_array(x, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


DEFAULT_ROW_THREADS = 128


def _row_threads(threads) -> int:
    t = _tile(threads, "threads", DEFAULT_ROW_THREADS)
    if t & (t - 1) or t > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected a power of two <= {MAX_THREADS_PER_BLOCK} (the tree reduction), got {t}")
    return t


def _rows(x, name: str = "x") -> np.ndarray:
    from refimpl.norms import last_axis

    x = last_axis(x, name)
    if x.size > _INT32_LIMIT:
        raise unsupported(name, f"at most {_INT32_LIMIT} elements (the kernels index with int32)", x.size)
    with np.errstate(over="ignore"):
        x32 = np.array(x, dtype=np.float32)  # a copy, C-contiguous
    if not np.isfinite(x32).all():
        raise ValueError(f"{name}: expected values within float32 range, got one that overflows float32")
    return x32.reshape(-1, x.shape[-1])


def _check_written(**arrays) -> None:
    """Raise if a kernel left an output element unwritten (NaN / sentinel)."""
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating):
            bad = np.isnan(a)
        else:
            bad = a == INT_UNWRITTEN
        if bad.any():
            first = tuple(int(x) for x in np.argwhere(bad)[0])
            raise RuntimeError(f"{name}: {int(bad.sum())} element(s) never written by the kernel, first at {first}")
