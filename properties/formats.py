"""Properties of casts to low-precision formats (kind "cast") and of emulated or real
low-precision matmuls (kind "lowp_matmul"), against ``refimpl.formats``.

Cast adapter: ``cast(x, fmt) -> float64 values`` for x float64 holding float32 values
(float64 -> bf16 goes through float32 in ml_dtypes 0.6 and torch 2.13, a double rounding
the spec does not make; float32 inputs keep the comparison to one rounding). Its
capabilities name the formats it supports and ``"saturate"`` when its overflow clamps
to +-max instead of the format's own rule (inf, or NaN for e4m3fn).

Lowp-matmul adapter: ``matmul(a, b, input_dtype, output_dtype) -> float64 values``
with fp32 accumulation, for a and b holding float32 values; capabilities name the (input, output) pairs it supports as
"input->output".

Precision (``properties.precision``): a cast's result is a rounding, defined exactly, so it is
compared bit for bit in every precision; the adapter's ``precision`` is the dtype it takes its
input in: inputs are drawn representable in it (float32 values for float64 and float32, as
above; bfloat16 or float16 values for those), so a kernel casting from bf16 tensors is judged
on the values it can receive. A low-precision matmul's precision is its (input, output)
pair; its bound, ``refimpl.formats.lowp_matmul_bound``, is derived for exactly that
computation (inputs rounded once, float32 accumulation of K products, the output rounded) and
is the same for every adapter; ``precision`` again sets the values a and b are drawn in.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import formats as F

from .core import Property
from .precision import round_inputs
from .protocol import Capability, Kind
from .strategy_cache import sampled

CAST_FORMATS = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")
MATMUL_PAIRS = ("bfloat16->float32", "bfloat16->bfloat16", "float16->float16", "float16->float32",
                "float8_e4m3fn->float32", "float8_e5m2->float32", "float8_e4m3fn->bfloat16")

KINDS = (
    Kind("cast", "rounds float32 values to a low-precision format; compared with refimpl.formats.round_to",
         {"cast": "cast(x: float64 array of float32 values, fmt: str) -> float64 array of the rounded values",
          "quantize": "quantize(x (rows, cols), fmt, channel_axis: None | 0) -> (q, S): q = cast(x S), S = max / amax, "
                      "one S per tensor or per row (channel_axis=0), S shaped to broadcast against x"},
         ("cast",),
         {**{f: Capability(f"cast supports fmt={f!r}") for f in CAST_FORMATS},
          "saturate": Capability("overflow clamps to +-max of the format (no inf, no NaN from finite input), every format"),
          **{f"saturate_{f}": Capability(f"overflow of fmt={f!r} only clamps to +-max (the other formats follow their "
                                         f"own rule): e.g. a kernel saturating e4m3fn but not e5m2")
             for f in CAST_FORMATS},
          "scaling": Capability("supplies amax scaling for FP8 casts", ("quantize",))}),
    Kind("lowp_matmul", "a (M, K) @ b (K, N) with inputs rounded to input_dtype, fp32 accumulation, output "
         "rounded to output_dtype; bounded by refimpl.formats.lowp_matmul_bound",
         {"matmul": "matmul(a, b, input_dtype: str, output_dtype: str) -> float64 array (M, N)"},
         ("matmul",),
         {p: Capability(f"matmul supports input->output = {p}") for p in MATMUL_PAIRS}),
)


@dataclasses.dataclass(frozen=True)
class CastAdapter:
    name: str
    cast: Callable
    capabilities: frozenset = frozenset(CAST_FORMATS)
    quantize: Optional[Callable] = None
    kind: str = "cast"
    precision: str = "float64"


@dataclasses.dataclass(frozen=True)
class MatmulAdapter:
    name: str
    matmul: Callable
    capabilities: frozenset = frozenset(MATMUL_PAIRS)
    kind: str = "lowp_matmul"
    precision: str = "float64"


@dataclasses.dataclass(frozen=True)
class CastCase:
    x: np.ndarray
    fmt: str

    def __repr__(self):
        return f"CastCase({self.fmt}, x={self.x.tolist()})"


def _input_values(x, caps) -> np.ndarray:
    """float32 values, further rounded to the adapter's precision when it is narrower."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    prec = getattr(caps, "precision", "float64")
    if prec not in ("bfloat16", "float16"):
        return x
    with np.errstate(over="ignore"):  # beyond float16's range: inf, dropped by the strategies
        return round_inputs(prec, x)


def _grid_points(rng, f: F.Format, n: int) -> np.ndarray:
    """Values of the format, midpoints (exact ties) and near-ties, across normal and subnormal binades."""
    k = rng.integers(f.emin - 1, f.emax + 1, n)
    mant = rng.integers(0, 2**f.mantissa_bits, n)
    q = np.ldexp(1.0, np.maximum(k, f.emin) - f.mantissa_bits)
    base = np.where(k < f.emin, mant, 2**f.mantissa_bits + mant) * q
    kind = rng.integers(0, 4, n)
    off = np.select([kind == 0, kind == 1, kind == 2], [0.0, q / 2, q / 2 * (1 + 2.0**-20)], q / 2 * (1 - 2.0**-20))
    return np.where(rng.random(n) < 0.5, -1.0, 1.0) * (base + off)


@st.composite
def cast_case(draw, caps, overflow=False):
    fmts = [f for f in CAST_FORMATS if f in caps]
    fmt = draw(sampled(fmts))
    f = F.get_format(fmt)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if overflow:  # at and beyond the top: max, the tie max + ulp/2, above it, and far above
        ulp_top = 2.0 ** (f.emax - f.mantissa_bits)
        x = f.max + np.array([0.0, ulp_top / 2, ulp_top / 2 + ulp_top / 8, ulp_top, 3 * ulp_top, 2 * f.max])
        x = x * np.where(rng.random(x.size) < 0.5, -1.0, 1.0)
        x = x[np.abs(x) < np.finfo(np.float32).max]
    else:
        x = np.concatenate([_grid_points(rng, f, 24), rng.standard_normal(8) * 2.0 ** rng.integers(f.emin, f.emax, 8)])
        x = x[np.abs(x) <= f.max]
    x = _input_values(x, caps)
    return CastCase(x[np.isfinite(x)], fmt)


def check_cast_round_nearest_even(impl, case: CastCase):
    """In range, the cast is round-to-nearest, ties-to-even, with subnormals: bit-exact."""
    got = np.asarray(impl.cast(case.x, case.fmt), dtype=np.float64)
    want = F.round_to(case.x, case.fmt)
    bad = ~((got == want) & (np.signbit(got) == np.signbit(want)) | (got == 0) & (want == 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(f"{impl.name}: {case.fmt} cast of {case.x[i]!r} gave {got[i]!r}, round-to-nearest-even "
                             f"gives {want[i]!r}; {case!r}")


def check_cast_overflow_convention(impl, case: CastCase):
    """Above max the cast follows the declared convention: +-max ("saturate"), else the format's
    rule (+-inf where the format has inf, NaN for e4m3fn); the tie max + ulp/2 is a tie to even."""
    saturating = "saturate" in impl.capabilities or f"saturate_{case.fmt}" in impl.capabilities
    conv = "saturate" if saturating else "format"
    got = np.asarray(impl.cast(case.x, case.fmt), dtype=np.float64)
    want = F.round_to(case.x, case.fmt, overflow=conv)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        i = int(np.argmax(~same))
        raise AssertionError(f"{impl.name}: {case.fmt} cast of {case.x[i]!r} gave {got[i]!r}; the declared overflow "
                             f"convention {conv!r} gives {want[i]!r}; {case!r}")


@dataclasses.dataclass(frozen=True)
class ScaleCase:
    x: np.ndarray
    fmt: str
    channel_axis: Optional[int]

    def __repr__(self):
        return f"ScaleCase({self.fmt}, x{self.x.shape}, row amax={np.abs(self.x).max(axis=1).tolist()}, channel_axis={self.channel_axis})"


@st.composite
def scale_case(draw, caps=None):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    x = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-4, 4, (rows, 1))  # loud and quiet rows
    if draw(st.booleans()):
        x[0] = 0.0  # an all-zero channel: S = 1
    fmt = draw(sampled(["float8_e4m3fn", "float8_e5m2"]))
    x = _input_values(x, caps)
    return ScaleCase(np.where(np.isfinite(x), x, 0.0), fmt, draw(sampled([None, 0])))


def check_fp8_scaling(impl, case: ScaleCase):
    """S = max_fmt / amax (per tensor, or per row for channel_axis=0; 1 where amax = 0), so each
    channel's amax lands on the format's max, and q = round(x S) to nearest even (docs/notes.md#fp8-scaling)."""
    q, S = impl.quantize(case.x, case.fmt, case.channel_axis)
    q, S = np.asarray(q, dtype=np.float64), np.asarray(S, dtype=np.float64)
    f = F.get_format(case.fmt)
    amax = np.abs(case.x).max(axis=None if case.channel_axis is None else 1, keepdims=True)
    want_S = np.where(amax > 0, f.max / np.where(amax > 0, amax, 1.0), 1.0)
    ctx = f"{impl.name}; {case!r}"
    if S.size != want_S.size or not np.allclose(S.reshape(want_S.shape), want_S, rtol=4 * 2.0**-24, atol=0):
        raise AssertionError(f"scales {S.ravel().tolist()}, expected max/amax = {want_S.ravel().tolist()}; {ctx}")
    want_q = F.round_to(case.x * S.reshape(want_S.shape), case.fmt, overflow="saturate")
    if not np.array_equal(q, want_q):
        raise AssertionError(f"q differs from round(x S): got {q.tolist()}, expected {want_q.tolist()}; {ctx}")


@dataclasses.dataclass(frozen=True)
class MatmulCase:
    a: np.ndarray
    b: np.ndarray
    pair: str

    def __repr__(self):
        return f"MatmulCase({self.pair}, a{self.a.shape}, b{self.b.shape}, max|a|={np.abs(self.a).max():.3g})"


@st.composite
def matmul_case(draw, caps):
    pair = draw(sampled([p for p in MATMUL_PAIRS if p in caps]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    M, K, N = draw(st.integers(1, 4)), draw(sampled([1, 7, 64, 257])), draw(st.integers(1, 4))
    a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    if draw(st.booleans()):  # all-positive sums: accumulation errors add up instead of cancelling
        a, b = np.abs(a), np.abs(b)
    if draw(st.booleans()):  # inputs already representable: the bound is then all accumulation + output
        inp = pair.split("->")[0]
        a, b = F.round_to(a, inp), F.round_to(b, inp)
    # float32 values, as a kernel receives them (a float64 -> float32 -> bf16 detour would round twice)
    a, b = _input_values(a, caps), _input_values(b, caps)  # standard normal: finite in every precision
    return MatmulCase(a, b, pair)


def check_lowp_matmul(impl, case: MatmulCase):
    """|C - a b| <= refimpl.formats.lowp_matmul_bound elementwise, C lies on the output grid,
    and rounding the inputs first changes nothing (the inputs are rounded once)."""
    inp, out = case.pair.split("->")
    C = np.asarray(impl.matmul(case.a, case.b, inp, out), dtype=np.float64)
    B = F.lowp_matmul_bound(case.a, case.b, input_dtype=inp, output_dtype=out)
    err = np.abs(C - case.a @ case.b)
    if not (np.isfinite(C).all() and (err <= B).all()):
        i = np.unravel_index(np.argmax(np.where(np.isfinite(err), err / B, np.inf)), err.shape)
        raise AssertionError(f"{impl.name}: |C - ab| = {err[i]:.3e} exceeds the bound {B[i]:.3e} at {list(map(int, i))}; {case!r}")
    if not (F.round_to(C, out) == C).all():
        raise AssertionError(f"{impl.name}: output not representable in {out}; {case!r}")
    C2 = np.asarray(impl.matmul(F.round_to(case.a, inp), F.round_to(case.b, inp), inp, out), dtype=np.float64)
    if not (C2 == C).all():
        raise AssertionError(f"{impl.name}: result changes when the inputs are rounded to {inp} first, "
                             f"so the inputs were not rounded to {inp}; {case!r}")


# ----------------------------------------------------------------------------
# adapters


def _ml_dtypes_cast(x, fmt):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32).astype(F.get_format(fmt).numpy_dtype()).astype(np.float64)


def _refimpl_matmul(a, b, inp, out):
    return F.lowp_matmul(a, b, input_dtype=inp, output_dtype=out)


def _ml_dtypes_matmul(a, b, inp, out):
    """numpy float32 matmul (BLAS order) on ml_dtypes-rounded inputs, output cast by ml_dtypes."""
    dt_in, dt_out = F.get_format(inp).numpy_dtype(), F.get_format(out).numpy_dtype()
    A = np.asarray(a, np.float32).astype(dt_in).astype(np.float32)
    B = np.asarray(b, np.float32).astype(dt_in).astype(np.float32)
    return (A @ B).astype(dt_out).astype(np.float64)


# wrong implementations


def _round_half_away(x, fmt):
    f = F.get_format(fmt)
    _, e2 = np.frexp(x)
    q = np.ldexp(1.0, np.maximum(e2 - 1, f.emin) - f.mantissa_bits)
    r = np.sign(x) * np.floor(np.abs(x) / q + 0.5) * q
    return np.where(np.abs(r) > f.max, np.copysign(np.inf, x) if f.has_inf else np.nan, r)


def _truncate(x, fmt):
    f = F.get_format(fmt)
    _, e2 = np.frexp(x)
    q = np.ldexp(1.0, np.maximum(e2 - 1, f.emin) - f.mantissa_bits)
    return np.trunc(x / q) * q


def _flush_subnormals(x, fmt):
    r = F.round_to(x, fmt)
    return np.where(np.abs(r) < F.get_format(fmt).smallest_normal, 0.0, r)


def _saturating(x, fmt):
    return F.round_to(x, fmt, overflow="saturate")


def _matmul_accumulate_in_input(a, b, inp, out):
    ar, br = F.round_to(a, inp), F.round_to(b, inp)
    acc = np.zeros((ar.shape[0], br.shape[1]))
    for k in range(ar.shape[1]):
        acc = F.round_to(acc + np.outer(ar[:, k], br[k]), inp, overflow="saturate")
    return F.round_to(acc, out)


def _matmul_inputs_not_rounded(a, b, inp, out):
    return F.round_to((np.asarray(a) @ np.asarray(b)).astype(np.float32).astype(np.float64), out)


def _matmul_output_not_rounded(a, b, inp, out):
    return F.lowp_matmul(a, b, input_dtype=inp, output_dtype="float32")


def _ref_quantize(x, fmt, axis):
    return F.quantize(x, fmt, channel_axis=axis)


def _quantize_inverted(x, fmt, axis):
    q, S = F.quantize(x, fmt, channel_axis=axis)
    return F.round_to(np.asarray(x) / S, fmt, overflow="saturate"), 1 / S


def _quantize_wrong_axis(x, fmt, axis):
    return F.quantize(x, fmt, channel_axis=None if axis is None else 1)


REFIMPL_CAST = CastAdapter("refimpl.formats.round_to", lambda x, fmt: F.round_to(x, fmt),
                           frozenset(CAST_FORMATS) | {"scaling"}, _ref_quantize)
ML_DTYPES_CAST = CastAdapter("ml_dtypes.astype", _ml_dtypes_cast)
REFIMPL_MATMUL = MatmulAdapter("refimpl.formats.lowp_matmul", _refimpl_matmul)
ML_DTYPES_MATMUL = MatmulAdapter("numpy float32 matmul on ml_dtypes inputs", _ml_dtypes_matmul)
BUNDLED = [REFIMPL_CAST, ML_DTYPES_CAST, REFIMPL_MATMUL, ML_DTYPES_MATMUL]

WRONG = {
    "round_half_away_from_zero": CastAdapter("wrong[round_half_away_from_zero]", _round_half_away),
    "truncate_toward_zero": CastAdapter("wrong[truncate_toward_zero]", _truncate),
    "flush_subnormals_to_zero": CastAdapter("wrong[flush_subnormals_to_zero]", _flush_subnormals),
    "e4m3fn_saturates_where_format_gives_nan": CastAdapter(
        "wrong[e4m3fn_saturates_where_format_gives_nan]", _saturating, frozenset({"float8_e4m3fn"})),
    "e4m3fn_nan_where_declared_saturating": CastAdapter(
        "wrong[e4m3fn_nan_where_declared_saturating]", lambda x, fmt: F.round_to(x, fmt),
        frozenset({"float8_e4m3fn", "saturate"})),
    "saturates_formats_not_declared": CastAdapter(
        "wrong[saturates_formats_not_declared]", _saturating,
        frozenset({"float8_e4m3fn", "float8_e5m2", "saturate_float8_e4m3fn"})),
    "scale_inverted": CastAdapter("wrong[scale_inverted]", _ml_dtypes_cast, frozenset({"scaling"}), _quantize_inverted),
    "per_channel_amax_over_wrong_axis": CastAdapter("wrong[per_channel_amax_over_wrong_axis]", _ml_dtypes_cast,
                                                    frozenset({"scaling"}), _quantize_wrong_axis),
    "accumulate_in_input_dtype": MatmulAdapter("wrong[accumulate_in_input_dtype]", _matmul_accumulate_in_input,
                                               frozenset({"bfloat16->float32", "float16->float32"})),
    "inputs_not_rounded": MatmulAdapter("wrong[inputs_not_rounded]", _matmul_inputs_not_rounded),
    "output_not_rounded": MatmulAdapter("wrong[output_not_rounded]", _matmul_output_not_rounded,
                                        frozenset({"bfloat16->bfloat16", "float16->float16"})),
    # the same mistakes by kernels taking bfloat16 / float16 inputs
    "truncate_toward_zero_bfloat16": CastAdapter("wrong[truncate_toward_zero][bfloat16]", _truncate,
                                                 frozenset({"float8_e4m3fn", "float8_e5m2"}), precision="bfloat16"),
    "flush_subnormals_to_zero_float16": CastAdapter("wrong[flush_subnormals_to_zero][float16]", _flush_subnormals,
                                                    frozenset({"float8_e4m3fn", "float8_e5m2", "bfloat16"}),
                                                    precision="float16"),
    "accumulate_in_input_dtype_bfloat16": MatmulAdapter("wrong[accumulate_in_input_dtype][bfloat16]",
                                                        _matmul_accumulate_in_input, frozenset({"bfloat16->float32"}),
                                                        precision="bfloat16"),
}

PROPERTIES = [
    Property("cast_round_nearest_even", "cast", check_cast_round_nearest_even, lambda caps: cast_case(caps),
             "in range, casts round to nearest with ties to even, keeping subnormals (bit-exact)",
             rejects=("round_half_away_from_zero", "truncate_toward_zero", "flush_subnormals_to_zero",
                      "truncate_toward_zero_bfloat16", "flush_subnormals_to_zero_float16")),
    Property("cast_overflow_convention", "cast", check_cast_overflow_convention,
             lambda caps: cast_case(caps, overflow=True),
             "above max: +-max if declared saturating, else inf (NaN for e4m3fn); max + ulp/2 ties to even",
             rejects=("e4m3fn_saturates_where_format_gives_nan", "e4m3fn_nan_where_declared_saturating",
                      "saturates_formats_not_declared")),
    Property("fp8_amax_scaling", "cast", check_fp8_scaling, lambda caps: scale_case(caps),
             "FP8 scaling: S = max / amax per tensor or per channel, q = round(x S)", requires=frozenset({"scaling"}),
             rejects=("scale_inverted", "per_channel_amax_over_wrong_axis")),
    Property("lowp_matmul_within_bound", "lowp_matmul", check_lowp_matmul, lambda caps: matmul_case(caps),
             "low-precision matmul error <= refimpl.formats.lowp_matmul_bound, output on its grid, inputs rounded once",
             rejects=("accumulate_in_input_dtype", "inputs_not_rounded", "output_not_rounded",
                      "accumulate_in_input_dtype_bfloat16")),
]
