"""Number-format arguments: integer quantisation (``refimpl.int_formats``), floating-point formats and
their casts and scalings (``refimpl.formats``), and the scaling arguments (``refimpl.scaling``).

The classes and registries these checks need (``Format``, ``FORMATS``, the granularities) are passed
in by the calling module: this package stays a leaf."""

from __future__ import annotations

import numpy as np

from .arrays import as_float_array, int_array
from .scalars import axis_index, choice, count, fail, flag, plain


def within_float64(value, names: str, what: str):
    """``value`` (float or array) if finite, else ``<names>: expected <what> within float64 range, got one
    beyond it`` (a result a computation produced, not an argument as given)."""
    if not np.isfinite(np.asarray(value)).all():
        fail(names, f"{what} within float64 range", "one beyond it")
    return value


# ---------------------------------------------------------------------------
# integer formats (refimpl.int_formats)


def quant_bits(bits, symmetric) -> tuple[int, bool]:
    """(bits in [2, 16], symmetric a bool)."""
    return count(bits, "bits", minimum=2, maximum=16), flag(symmetric, "symmetric")


def quant_inputs(x, name: str, bits, symmetric, granularity, group_size, granularities) -> tuple:
    """``quant_params`` / ``quantize``: (x float64 (rows, cols) with rows, cols >= 1, bits, symmetric,
    group size g (None unless granularity "group"; g must divide cols))."""
    x = as_float_array(x, name, ndim=2, shape_doc="(rows, cols)", min_size={0: 1, 1: 1})
    bits, symmetric = quant_bits(bits, symmetric)
    choice(granularity, "granularity", granularities)
    g = None
    if granularity == "group":
        g = count(group_size, "group_size", minimum=1)
        if x.shape[1] % g:
            fail("group_size", f"a divisor of x's {x.shape[1]} columns", g)
    return x, bits, symmetric, g


def unit_ranges(span: np.ndarray, step: np.ndarray, name: str) -> None:
    """Each quantisation unit's range (max - min, or max |x|) within float64, and large enough that
    its step ``span / n`` is not 0."""
    if not np.isfinite(span).all():
        fail(name, "the range max - min of each quantisation unit within float64", "one beyond it")
    tiny = (step == 0) & (span > 0)
    if tiny.any():
        fail(name, "each unit's range large enough for a float64 step", f"{span[tiny].max():.3g}, too small")


def positive_steps(scale, name: str = "scale", *, ndim: int | None = None) -> np.ndarray:
    """Quantisation steps: a float64 array of entries > 0."""
    s = as_float_array(scale, name, ndim=ndim)
    if (s <= 0).any():
        fail(name, "positive steps", float(np.min(s)))
    return s


def dequant_inputs(q, scale, zero_point) -> tuple:
    """``dequantize``: (q int64 (rows, cols), scale (1 or rows, G) with G dividing cols and steps > 0,
    zero_point int64 of scale's shape)."""
    q = int_array(q, "q", ndim=2)
    s = positive_steps(scale, ndim=2)
    z = int_array(zero_point, "zero_point", shape=s.shape)
    rows, cols = q.shape
    if s.shape[0] not in (1, rows) or s.shape[1] < 1 or cols % s.shape[1]:
        fail("scale", f"shape (1 or {rows}, a divisor of {cols})", f"{s.shape}")
    return q, s, z


def int_matmul_inputs(a_q, b_q, acc_max: int) -> tuple:
    """``int_matmul``: a_q (M, K), b_q (K, N) integers with |entry| <= 2^15 whose every
    sum_k |a_ik| |b_kj| fits an accumulator of ``acc_max`` (int32: 2^31 - 1)."""
    a = int_array(a_q, "a_q", ndim=2, bound=2**15)
    b = int_array(b_q, "b_q", ndim=2, bound=2**15)
    if a.shape[1] != b.shape[0]:
        fail("b_q", f"{a.shape[1]} rows to match a_q's K", f"shape {b.shape}")
    if a.shape[1] > 2**32:
        fail("a_q, b_q", "K within int32 accumulation for non-zero entries", f"K = {a.shape[1]}")
    worst = np.abs(a) @ np.abs(b)  # int64: |entries| <= 2^15, K <= 2^32 keeps it below 2^62
    if worst.size and worst.max() > acc_max:
        fail("a_q, b_q", "sum_k |a_ik| |b_kj| <= 2^31 - 1 (an int32 accumulator)",
             f"{int(worst.max())}; split K (see int32_safe_depth)")
    return a, b


def quantized_matmul_inputs(a, b, bits, safe_depth=None) -> tuple:
    """``quantized_matmul`` / its bound: a (M, K), b (K, N) with M, K, N >= 1, bits in [2, 8];
    with ``safe_depth`` (bits -> the largest exact int32 depth) K must not exceed it."""
    a = as_float_array(a, "a", ndim=2, shape_doc="(M, K)", min_size={0: 1, 1: 1})
    b = as_float_array(b, "b", ndim=2, shape_doc="(K, N)", min_size={1: 1})
    if b.shape[0] != a.shape[1]:
        fail("b", f"{a.shape[1]} rows to match a's K", f"shape {b.shape}")
    bits = count(bits, "bits", minimum=2, maximum=8)
    if safe_depth is not None and a.shape[1] > safe_depth(bits, bits):
        fail("a, b", f"K <= int32_safe_depth({bits}, {bits})", f"K = {a.shape[1]}; split K")
    return a, b, bits


# ---------------------------------------------------------------------------
# floating-point formats (refimpl.formats)


def number_format(fmt, name: str, formats: dict, cls: type):
    """A ``cls`` (``refimpl.formats.Format``) from itself or its name in ``formats``."""
    if isinstance(fmt, cls):
        return fmt
    if isinstance(fmt, str) and fmt in formats:
        return formats[fmt]
    fail(name, f"a Format or one of {sorted(formats)}", repr(plain(fmt)))


def format_names(names, formats: dict, cls: type) -> list:
    """``format_table``'s ``names``: a sequence of formats (or their names), as a list of ``cls``."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        fail("names", "a sequence of format names", type(names).__name__, error=TypeError)
    return [number_format(n, f"names[{i}]", formats, cls) for i, n in enumerate(names)]


def channel_axis(axis, ndim: int):
    """``channel_axis``: None (per tensor) or an axis of a tensor of ``ndim`` >= 1 dimensions, as an int >= 0."""
    if axis is None:
        return None
    if ndim == 0:
        fail("channel_axis", "None for a 0-d tensor (it has no channels)", f"{plain(axis)}")
    return axis_index(axis, ndim, "channel_axis")


def amax_values(amax, name: str) -> np.ndarray:
    """An amax (largest magnitudes): a float64 array of entries >= 0."""
    a = as_float_array(amax, name)
    if (a < 0).any():
        fail(name, "entries >= 0 (an amax is a largest magnitude)", float(a.min()))
    return a


def fp8_scale_range(S: np.ndarray, a: np.ndarray, margin: int, names: str) -> np.ndarray:
    """The scales max_fmt / (amax 2^margin) of the amax ``a``: finite and > 0 (else x S or q / S
    cannot be formed); ``names``: the arguments the amax comes from."""
    if not (np.isfinite(S) & (S > 0)).all():
        fail(f"{names}{', margin' if margin else ''}",
             "an amax whose scale max_fmt / (amax 2^margin) is within float64's range",
             f"amax in [{float(a.min()):g}, {float(a.max()):g}] with margin {margin} (rescale the tensor)")
    return S


def _broadcasts(*shapes) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def dequant_scale(q, scale) -> tuple:
    """``formats.dequantize``: (q, scale) float64, scale positive and broadcasting against q."""
    q, S = as_float_array(q, "q"), as_float_array(scale, "scale")
    if not _broadcasts(q.shape, S.shape):
        fail("scale", f"a shape broadcasting against q {q.shape}", f"{S.shape}")
    if (S <= 0).any():
        fail("scale", "positive scales", "an entry <= 0")
    return q, S


def matmul_operands(a, b) -> tuple:
    """a (M, K), b (K, N) float64."""
    a = as_float_array(a, "a", ndim=2)
    b = as_float_array(b, "b", ndim=2)
    if a.shape[1] != b.shape[0]:
        fail("b", f"{a.shape[1]} rows to match a {a.shape}", f"shape {b.shape}")
    return a, b


def lowp_bound_inputs(rounded: dict, fmt) -> None:
    """``lowp_matmul_bound``: the inputs rounded to ``fmt`` stay finite (the bound assumes no overflow)."""
    for name, x in rounded.items():
        if not np.isfinite(x).all():
            fail(name, f"entries within the largest {fmt.name} value {fmt.max:g} (the bound assumes nothing "
                       f"overflows)", "one beyond it")


def lowp_bound_range(hat: np.ndarray, gamma: float, fmt) -> None:
    """``lowp_matmul_bound``: (1 + gamma_K) sum |a^||b^| within the output format's range."""
    if (hat * (1 + gamma) > fmt.max).any():
        fail("a, b", f"sum |a^||b^| within the largest {fmt.name} value {fmt.max:g} (beyond it the result may "
                     f"overflow and no bound holds)", "one beyond it")


# ---------------------------------------------------------------------------
# scaling arguments (refimpl.scaling)


def token_activations(x, name: str = "x") -> np.ndarray:
    """x (..., E): a float64 array of at least 1 dimension with E >= 1."""
    arr = as_float_array(x, name)
    if arr.ndim < 1:
        fail(name, "at least 1 dimension (..., E)", f"shape {arr.shape}")
    if arr.shape[-1] < 1:
        fail(name, "at least 1 entries along axis -1", f"shape {arr.shape}")
    return arr
