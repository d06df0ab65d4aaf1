"""The one validation layer shared by every public function (README "Contract").

Each argument is checked once, by name, with one wording:

    <name>: expected <what>, got <what was given>

* arrays: real floating point (integers accepted and converted; bool, complex,
  object and strings rejected with TypeError); rank and shape agreement stated
  in the message (``expected shape (T, E) = (4, 3)``); NaN and +inf rejected,
  -inf only where it means "hidden" (masked scores, log-sum-exps);
* counts: Python or NumPy integers (bool is not a count, a float is not a
  count even when integral); a range; counts that size arrays are at most
  ``MAX_COUNT`` = 2**62 (NumPy's int64 indices);
* real numbers: Python or NumPy reals (bool and complex rejected), finite
  unless stated, with a range;
* names: one of the listed values (the message lists them);
* objects: an instance of the expected class (``refimpl.moe.Routing``...).

Bounded work: every allocation an argument sizes is estimated first (``check_budget``);
one beyond the byte budget (``$REFIMPL_MAX_BYTES``, default half the machine's physical
memory, ``max_bytes()``) is a ValueError naming the sizing arguments and the bytes it would
take, never a MemoryError; a Python loop an argument bounds is bounded by the same budget
(one step counted as ``STEP_BYTES`` bytes), never a hang. Counting functions count in closed
form.

Extremes: an exact value outside float64 range is an error, never inf
(``finite_result``); attention rejects inputs whose scores may overflow
float64 (``check_score_range``) unless a softcap bounds them.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

MAX_COUNT = 2**62
"""Largest count (length, size, index) accepted where it sizes or indexes an array."""

FLOAT_MAX = float(np.finfo(np.float64).max)


STEP_BYTES = 4096
"""What one step of a Python loop an argument bounds counts for against the byte budget
(a step costs microseconds: at the default budget of a 24 GiB machine, about 3 million steps)."""


def _default_max_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: 4 GiB
        return 4 * 2**30


_DEFAULT_MAX_BYTES = _default_max_bytes()


def max_bytes() -> int:
    """The work budget in bytes: ``$REFIMPL_MAX_BYTES`` (an int) if set, else half the physical memory."""
    env = os.environ.get("REFIMPL_MAX_BYTES")
    if not env:
        return _DEFAULT_MAX_BYTES
    try:
        return max(int(env), 0)
    except ValueError:
        raise ValueError(f"REFIMPL_MAX_BYTES: expected an int (a number of bytes), got {env!r}") from None


def check_budget(names: str, *, shape=None, itemsize: int = 8, nbytes=None, steps=None, what: str = "") -> None:
    """Refuse work an argument sizes beyond ``max_bytes()`` before it is done.

    ``shape`` (ints, exact Python arithmetic) * ``itemsize``, ``nbytes``, and ``steps`` of a
    Python loop (``STEP_BYTES`` each) add up to the estimate; beyond the budget a ValueError:
    ``<names>: expected work within REFIMPL_MAX_BYTES = ..., got <what> of ... bytes``.
    """
    total = 0
    if shape is not None:
        total += math.prod(int(s) for s in shape) * int(itemsize)
    if nbytes is not None:
        total += int(nbytes)
    if steps is not None:
        total += int(steps) * STEP_BYTES
    budget = max_bytes()
    if total > budget:
        desc = what or (f"an array of shape {tuple(int(s) for s in shape)}" if shape is not None else "work")
        raise ValueError(f"{names}: expected work within the budget REFIMPL_MAX_BYTES = {budget} bytes, got {desc} "
                         f"needing {total} bytes (about {total / 2**30:.3g} GiB); pass smaller sizes or raise "
                         f"REFIMPL_MAX_BYTES")


def _type(x) -> str:
    return type(x).__name__


def plain(x):
    """x for a message: NumPy scalars as the Python int / float / str they hold (never ``np.float64(...)``)."""
    return x.item() if isinstance(x, np.generic) else x


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
    if arr.dtype == object or arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
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


def capacity_factor(x, rule) -> float:
    """``capacity_factor`` (``refimpl.moe.route``): a finite real >= 0 that replaces the factor of the
    capacity rule in force, ``rule`` (one with ``with_factor``; a rule whose ``fixed_capacity`` names a
    factorless expression, as fairseq's, refuses it). The one check of this argument."""
    f = real_number(x, "capacity_factor", minimum=0.0)
    if not hasattr(rule, "with_factor"):
        raise ValueError(f"capacity_factor: expected None with the capacity rule {rule!r} (it has no factor to "
                         f"replace), got {f!r}")
    fixed = getattr(rule, "fixed_capacity", None)
    if fixed:
        raise ValueError(f"capacity_factor: expected none for {fixed} (it has no factor), got {f!r}")
    return f


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


# ---------------------------------------------------------------------------
# attention arguments (shared by the definition, the fast paths and the gpu facade,
# so every form rejects alike)


def check_real_4d(x, name: str) -> np.ndarray:
    """``x`` as an array, checked to be a finite real floating-point (B, H, L, D) array
    (not converted; shared with the gpu facade)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, H, L, D), got {arr.shape}")
    if arr.size > 2**20:  # a broadcast view is cheap to pass, not to compute with
        check_budget(name, shape=arr.shape, what=f"a float64 array of shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else ("+inf" if np.isposinf(arr).any() else "-inf")
        raise ValueError(f"{name}: expected finite entries, got an entry {bad}")
    return arr


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


# ---------------------------------------------------------------------------
# the library's own objects passed back in (MoE routings, experts, states)


_CLASSES: dict = {}  # name -> (class, description), registered by the modules that define them


def register_class(name: str, cls: type, what: str) -> None:
    """Make ``cls`` checkable by ``name`` here without this module importing upward (it is a leaf)."""
    _CLASSES[name] = (cls, what)


def routing(x, name: str = "routing"):
    """A ``refimpl.moe.Routing`` (the result of ``route``; registered by ``refimpl.moe.options``)."""
    cls, what = _CLASSES["Routing"]
    return instance(x, name, cls, what)


def experts(x, name: str, E: int, D: int) -> list:
    """A sequence of E experts: callables mapping (N, D) rows to (N, D) with ``d_model`` == D."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or not hasattr(x, "__getitem__"):
        raise TypeError(f"{name}: expected a sequence of {E} experts, got {_type(x)}")
    if len(x) != E:
        raise ValueError(f"{name}: expected {E} experts (one per router column), got {len(x)}")
    for i, ex in enumerate(x):
        if not callable(ex):
            raise TypeError(f"{name}[{i}]: expected a callable expert (FFNExpert, SwiGLUExpert), got {_type(ex)}")
        if getattr(ex, "d_model", D) != D:
            raise ValueError(f"{name}[{i}]: expected d_model equal to x's D = {D}, got {ex.d_model}")
    return list(x)


def index_array(x, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``x`` as an int64 array of non-negative indices (< MAX_COUNT); bool and float rejected."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected an integer array, got {_type(x)}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected an integer array, got {_type(x)} ({e})") from None
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
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected an integer array, got {_type(x)}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected an integer array, got {_type(x)} ({e})") from None
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if arr.size and (int(arr.min()) < -bound or int(arr.max()) > bound):
        raise ValueError(f"{name}: expected entries in [-{bound}, {bound}], got range [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.int64, copy=False)
