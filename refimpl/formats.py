"""Number formats: the bit layouts, round-to-nearest-even casts, FP8 scaling, fp16 loss
scaling, and an emulated low-precision matmul.

A binary floating-point format with ``e`` exponent bits and ``m`` mantissa (fraction)
bits stores (-1)^s * 1.f * 2^(E - bias) for exponent fields E >= 1 (normals) and
(-1)^s * 0.f * 2^(1 - bias) for E = 0 (subnormals), bias = 2^(e-1) - 1. Then

    ulp(1)            = 2^-m                      (unit roundoff u = 2^-(m+1))
    smallest normal   = 2^(1 - bias)
    smallest subnormal= 2^(1 - bias - m)
    max (IEEE-like)   = (2 - 2^-m) 2^(2^e - 2 - bias)     E = 2^e - 1 is inf/NaN
    max (e4m3fn)      = (2 - 2^(1-m)) 2^(2^e - 1 - bias)  no inf; only S.1111.111 is NaN
                        (OCP 8-bit FP spec v1.0; "fn" = finite + NaN): 448

so E4M3 has smallest normal 2^-6 and E5M2 2^-14 (the notes print 9.2e-8 and
3.0e-10: docs/errata.md#e16). :func:`format_table` computes every row from (e, m, kind);
tests check each against ``ml_dtypes.finfo`` / ``numpy.finfo`` (ml_dtypes 0.6.0).

Rounding (:func:`round_to`): round to nearest, ties to even, on the format's grid,
with subnormals (gradual underflow). Written from the layout, independent of any
library: q = rint(x / 2^(k - m)) 2^(k - m) with k = max(floor(log2|x|), 1 - bias);
np.rint rounds ties to even and the scalings by powers of two are exact.

Overflow (a rounded magnitude above max) is a named convention, ``overflow=``:

* ``"format"``: the format's non-saturating rule: inf where the format has inf
  (fp16, bf16, fp32, e5m2), NaN where it has none (e4m3fn). ml_dtypes 0.6.0
  ``astype`` and numpy follow it for every format; torch 2.13 follows it for e5m2.
* ``"saturate"``: clamp to +-max (OCP "saturating" mode; NVIDIA ``__NV_SATFINITE``
  conversions; torch 2.13 ``Tensor.to(torch.float8_e4m3fn)``, which also maps inf
  to 448, checked on CPU).

Note the tie at the top: for e4m3fn, 464 = (448 + 480) / 2 rounds to 448 (even
mantissa) and only values above 464 overflow.

FP8 scaling (docs/notes.md#fp8-scaling): x_scaled = x * S with S = max_fmt / (amax * 2^margin)
(Transformer Engine ``DelayedScaling``: ``scale = fp8_max / amax / 2^margin``), per
tensor (one S) or per channel (one S per output row of a weight). Delayed scaling
computes S from an amax history of previous steps (``amax_compute_algo`` "max" or
"most_recent") and appends the current amax after the cast. amax = 0 gives S = 1.

Loss scaling for fp16 (docs/notes.md#fp8-scaling): gradients of L_scaled = S L are S times
larger, pushing small gradients above fp16's underflow; divide by S before the update.
Dynamic scaling (torch ``GradScaler``: init 2^16, growth 2 every 2000 clean steps,
backoff 0.5 on inf/NaN and the step is skipped): :func:`loss_scale_update`.

Emulated low-precision matmul (:func:`lowp_matmul`): inputs rounded to ``input_dtype``,
products exact (two p-bit significands fit in 2p <= 24 bits for bf16, fp16, FP8),
accumulated sequentially over k in float32 (or float64), output rounded to
``output_dtype``. :func:`lowp_matmul_bound` states the error bound against the exact
product of the unrounded inputs (derivation in its docstring).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._validate import (FLOAT_MAX, as_float_array, choice, count, finite_result, flag, positive_float, positive_int,
                        real_number)
from ._validate.formats import (amax_values, channel_axis as check_channel_axis, dequant_scale, format_names,
                                fp8_scale_range, lowp_bound_inputs, lowp_bound_range, matmul_operands, number_format)

OVERFLOW = ("format", "saturate")


@dataclasses.dataclass(frozen=True)
class Format:
    """A binary floating-point format: ``exponent_bits`` e, ``mantissa_bits`` m, and
    ``finite_nan`` (True for the OCP "fn" layout: no inf, only all-ones is NaN)."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    finite_nan: bool = False
    note: str = ""

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def has_inf(self) -> bool:
        return not self.finite_nan

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def emax(self) -> int:
        top = 2**self.exponent_bits - 1  # all-ones exponent field
        return top - self.bias if self.finite_nan else top - 1 - self.bias

    @property
    def max(self) -> float:
        frac = 2.0 - 2.0 ** (1 - self.mantissa_bits) if self.finite_nan else 2.0 - 2.0 ** (-self.mantissa_bits)
        return frac * 2.0**self.emax

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mantissa_bits)

    @property
    def ulp_at_1(self) -> float:
        return 2.0 ** (-self.mantissa_bits)

    @property
    def unit_roundoff(self) -> float:
        return 2.0 ** (-self.mantissa_bits - 1)

    def numpy_dtype(self):
        """The NumPy / ml_dtypes dtype storing this format (None for TF32, a compute mode)."""
        if self.name in ("float32", "float16", "float64"):
            return np.dtype(self.name)
        if self.name == "tf32":
            return None
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, self.name))


FORMATS = {
    f.name: f
    for f in (
        Format("float64", 11, 52, note="reference arithmetic of this spec"),
        Format("float32", 8, 23, note="master weights, optimizer state, GEMM accumulation"),
        Format("tf32", 8, 10, note="Ampere+ matmul input mode; stored as float32"),
        Format("float16", 5, 10, note="IEEE binary16; needs loss scaling"),
        Format("bfloat16", 8, 7, note="float32's range, 8-bit significand"),
        Format("float8_e4m3fn", 4, 3, finite_nan=True, note="FP8 forward (weights, activations)"),
        Format("float8_e5m2", 5, 2, note="FP8 backward (gradients); IEEE-like, has inf"),
    )
}


def get_format(fmt) -> Format:
    """A :class:`Format` from itself or its name (``"bfloat16"``, ``"float8_e4m3fn"``, ...)."""
    return _format(fmt, "fmt")


def _format(fmt, name: str) -> Format:
    """get_format, the message naming the caller's argument (``input_dtype``, ``dtype``...)."""
    return number_format(fmt, name, FORMATS, Format)


def format_table(names=("float32", "tf32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")) -> list:
    """One row per format, every figure computed from the layout (replaces the notes' tables,
    docs/notes.md#number-formats)."""
    rows = []
    for f in format_names(names, FORMATS, Format):
        rows.append(dict(name=f.name, bits=f.bits, exponent_bits=f.exponent_bits, mantissa_bits=f.mantissa_bits,
                         bias=f.bias, max=f.max, smallest_normal=f.smallest_normal,
                         smallest_subnormal=f.smallest_subnormal, ulp_at_1=f.ulp_at_1, has_inf=f.has_inf))
    return rows


def round_to(x, fmt, *, overflow: str = "format") -> np.ndarray:
    """x rounded to nearest, ties to even, on ``fmt``'s grid (float64 values out).

    Finite inputs only. ``overflow``: "format" (inf, or NaN for e4m3fn) or "saturate"
    (+-max); see the module docstring. Signed zeros are kept (-tiny rounds to -0.0).
    One rounding from float64, as ml_dtypes >= 0.7 casts; ml_dtypes 0.5-0.6 and torch 2.13 take
    float64 to bfloat16 through float32 (two roundings), which differs in rare near-tie cases
    such as 1 + 2^-8 + 2^-30 (tests/test_formats.py).
    """
    f = get_format(fmt)
    choice(overflow, "overflow", OVERFLOW)
    return _round_to(as_float_array(x, "x"), f, overflow)


def _round_to(x: np.ndarray, f: Format, overflow: str) -> np.ndarray:
    """``round_to`` of checked arguments."""
    _, e2 = np.frexp(x)  # x = mant * 2^e2, 0.5 <= |mant| < 1, so floor(log2|x|) = e2 - 1
    k = np.maximum(e2 - 1, f.emin)  # subnormals share the quantum of the smallest binade
    quantum = np.ldexp(1.0, k - f.mantissa_bits)
    q = np.rint(x / quantum) * quantum  # rint: ties to even
    over = np.abs(q) > f.max
    if over.any():
        big = np.copysign(f.max, x) if overflow == "saturate" else (np.copysign(np.inf, x) if f.has_inf else np.nan)
        q = np.where(over, big, q)
    return q


def amax(x, *, channel_axis=None) -> np.ndarray:
    """max |x| over the whole tensor (``channel_axis=None``) or per index of ``channel_axis``."""
    x = as_float_array(x, "x")
    return _amax(x, check_channel_axis(channel_axis, x.ndim))


def _amax(x: np.ndarray, axis) -> np.ndarray:
    """max |x| over every axis but ``axis`` (a checked int, or None: every axis)."""
    axes = tuple(a for a in range(x.ndim) if a != axis)
    return np.max(np.abs(x), axis=axes, keepdims=True, initial=0.0)


def scale_from_amax(amax_value, fmt, *, margin: int = 0) -> np.ndarray:
    """S = max_fmt / (amax 2^margin); S = 1 where amax = 0 (nothing to scale).

    margin in [0, 1023]; a scale that overflows float64 (amax below max_fmt / FLOAT_MAX, a
    subnormal amax) or underflows to 0 is an error: x S or q / S could not be formed."""
    a = as_float_array(amax_value, "amax_value")
    f = get_format(fmt)
    a = amax_values(a, "amax_value")
    return _scale_from_amax(a, f, count(margin, "margin", maximum=MAX_MARGIN), "amax_value")


def _scale_from_amax(a: np.ndarray, f: Format, m: int, names: str) -> np.ndarray:
    """``scale_from_amax`` of a checked amax (>= 0), format and margin; ``names``: the caller's arguments
    the amax comes from (a scale beyond float64 is refused under them)."""
    safe = np.where(a > 0, a, 1.0)
    with np.errstate(over="ignore", divide="ignore"):
        S = np.where(a > 0, np.ldexp(f.max / safe, -m), 1.0)
    return fp8_scale_range(S, a, m, names)


def quantize(x, fmt, *, channel_axis=None, margin: int = 0, overflow: str = "saturate"):
    """Scaled cast: returns (q, S) with q = round_to(x S) and x ~= q / S. Per tensor
    (``channel_axis=None``) or per channel (S has size 1 on every other axis)."""
    x = as_float_array(x, "x")
    axis = check_channel_axis(channel_axis, x.ndim)
    f = get_format(fmt)
    m = count(margin, "margin", maximum=MAX_MARGIN)
    choice(overflow, "overflow", OVERFLOW)
    return _quantize(x, f, axis, m, overflow, "x")


def _quantize(x: np.ndarray, f: Format, axis, m: int, overflow: str, name: str):
    """``quantize`` of checked arguments; a scale beyond float64 is refused under ``name``."""
    S = _scale_from_amax(_amax(x, axis), f, m, name)
    return _round_to(x * S, f, overflow), S


MAX_MARGIN = 1023
"""Largest ``margin``: 2^-margin is then still a normal float64."""


def dequantize(q, scale) -> np.ndarray:
    """q / scale (the scale of :func:`quantize`: positive, broadcasting against q)."""
    q, S = dequant_scale(q, scale)
    with np.errstate(over="ignore"):
        return finite_result(q / S, "q / scale", "q, scale")


@dataclasses.dataclass(frozen=True)
class DelayedScaling:
    """Transformer Engine's delayed-scaling recipe: the scale of step t comes from the
    amax history of steps < t; ``history_len`` entries kept, newest last."""

    fmt: str = "float8_e4m3fn"
    history_len: int = 16
    algo: str = "max"  # "max" | "most_recent"
    margin: int = 0

    def __post_init__(self):
        get_format(self.fmt)
        positive_int(self.history_len, "history_len")
        choice(self.algo, "algo", ("max", "most_recent"))
        count(self.margin, "margin", maximum=MAX_MARGIN)

    def scale(self, history) -> float:
        h = as_float_array(history, "history", ndim=1)
        if h.size == 0:
            return 1.0
        a = h.max() if self.algo == "max" else h[-1]
        return float(scale_from_amax(a, self.fmt, margin=self.margin))

    def step(self, x, history, *, overflow: str = "saturate"):
        """Cast x with the delayed scale; returns (q, S, new_history)."""
        h = as_float_array(history, "history", ndim=1)
        S = self.scale(h)
        x = as_float_array(x, "x")
        q = round_to(x * S, self.fmt, overflow=overflow)
        new = np.append(h, np.max(np.abs(x), initial=0.0))
        return q, S, new[-self.history_len:]


def loss_scale_update(scale: float, grads_finite: bool, good_steps: int, *, growth_factor: float = 2.0,
                      backoff_factor: float = 0.5, growth_interval: int = 2000):
    """One step of dynamic loss scaling (torch.amp.GradScaler.update). Returns
    (new_scale, new_good_steps, apply_step): on inf/NaN gradients the step is skipped
    and the scale backs off; after ``growth_interval`` clean steps it grows."""
    scale = positive_float(scale, "scale")
    grads_finite = flag(grads_finite, "grads_finite")
    good_steps = positive_int(good_steps, "good_steps", allow_zero=True)
    # torch.amp.GradScaler.__init__ asserts growth_factor > 1.0 and backoff_factor < 1.0
    growth_factor = real_number(growth_factor, "growth_factor", minimum=1.0, min_open=True)
    backoff_factor = real_number(backoff_factor, "backoff_factor", minimum=0.0, maximum=1.0, min_open=True, max_open=True)
    growth_interval = positive_int(growth_interval, "growth_interval")
    if not grads_finite:
        return scale * backoff_factor, 0, False
    good_steps += 1
    if good_steps >= growth_interval:
        return finite_result(scale * growth_factor, "the grown scale", "scale, growth_factor"), 0, True
    return scale, good_steps, True


def scaled_gradient_in(grad, fmt, loss_scale: float) -> np.ndarray:
    """What survives of a gradient stored in ``fmt`` under loss scaling: round_to(S g) / S.
    A scaled gradient beyond ``fmt``'s range is inf (NaN for e4m3fn): the overflow the loss
    scaler detects (:func:`loss_scale_update` with grads_finite=False)."""
    S = positive_float(loss_scale, "loss_scale")
    f = get_format(fmt)
    g = as_float_array(grad, "grad")
    with np.errstate(over="ignore"):
        sg = g * S
        # S g beyond float64 is beyond every format's range too: it overflows the format as documented
        sg = np.where(np.isinf(sg), np.copysign(FLOAT_MAX, sg), sg)
        return round_to(sg, f) / S


ACCUMULATE = ("float32", "float64")


def lowp_matmul(a, b, *, input_dtype, accumulate: str = "float32", output_dtype, overflow: str = "format"):
    """C = round_out( sum_k round_in(a)_ik round_in(b)_kj ), the sum taken sequentially
    over k = 0, 1, ... in ``accumulate`` precision; a (M, K), b (K, N); float64 values out.

    Products are formed exactly (float64 holds them) and rounded once into the
    accumulator, which is what an fp32-accumulating tensor core does for bf16/fp16/FP8
    inputs (their products are exact in fp32). FP8 inputs: scale first (:func:`quantize`)
    and divide C by S_a S_b after. Non-finite results are part of the spec: with
    ``overflow="format"`` a value beyond a format's range is inf (NaN for e4m3fn), and an
    accumulator that overflows is inf or NaN (inf - inf), as on the hardware.
    """
    a, b = matmul_operands(a, b)
    choice(accumulate, "accumulate", ACCUMULATE)
    fi, fo = _format(input_dtype, "input_dtype"), _format(output_dtype, "output_dtype")
    choice(overflow, "overflow", OVERFLOW)
    ar, br = _round_to(a, fi, overflow), _round_to(b, fi, overflow)
    acc_t = np.float32 if accumulate == "float32" else np.float64
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=acc_t)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(a.shape[1]):
            # the float64 sum of a float32 partial and an exact product, rounded to float32: one fp32
            # addition up to a double-rounding tie (an error still <= u32 (1 + 2^-29), inside gamma_K)
            acc = (acc + np.outer(ar[:, k], br[k, :])).astype(acc_t)
    out = acc.astype(np.float64)
    finite = np.isfinite(out)
    return np.where(finite, _round_to(np.where(finite, out, 0.0), fo, overflow), out)


def lowp_matmul_bound(a, b, *, input_dtype, accumulate: str = "float32", output_dtype) -> np.ndarray:
    """Elementwise bound B with |lowp_matmul(a, b) - a @ b| <= B (exact a @ b), when nothing overflows.

    Derivation (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 2.2, 3.1),
    with a^, b^ the rounded inputs, u_acc, u_out unit roundoffs, t_out the output's
    smallest subnormal:
      inputs:  a b - a^ b^ = (a - a^) b + a^ (b - b^), so the input rounding costs at most
               |a - a^| |b| + |a^| |b - b^| (computed from the actual rounding errors: zero
               when the inputs are already representable)
      sum:     K exact products added in order in u_acc arithmetic:
               |fl(sum) - sum| <= gamma_K sum |a^||b^|, gamma_K = K u_acc / (1 - K u_acc)
      output:  |round_out(c) - c| <= u_out |c| + t_out / 2, |c| <= (1 + gamma_K) sum |a^||b^|
    The float64 evaluation of B itself is inflated by (1 + 1e-12) to cover its own rounding.
    """
    a, b = matmul_operands(a, b)
    choice(accumulate, "accumulate", ACCUMULATE)
    fi, fo, fa = _format(input_dtype, "input_dtype"), _format(output_dtype, "output_dtype"), FORMATS[accumulate]
    ar, br = _round_to(a, fi, "format"), _round_to(b, fi, "format")
    lowp_bound_inputs({"a": ar, "b": br}, fi)
    K = a.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        inputs = np.abs(a - ar) @ np.abs(b) + np.abs(ar) @ np.abs(b - br)
        hat = np.abs(ar) @ np.abs(br)
        gamma = K * fa.unit_roundoff / (1 - K * fa.unit_roundoff)
        bound = inputs + gamma * hat + fo.unit_roundoff * (1 + gamma) * hat + fo.smallest_subnormal / 2
    lowp_bound_range(hat, gamma, fo)
    return finite_result(bound * (1 + 1e-12), "the bound", "a, b")


def fp8_matmul(a, b, *, fmt: str = "float8_e4m3fn", per_channel: bool = False, output_dtype: str = "float32"):
    """Scaled FP8 GEMM (docs/notes.md#fp8-scaling): O = FP8GEMM(a S_a, b S_b) / (S_a S_b).

    a (M, K), b (K, N); S_a per tensor or per row of a (token), S_b per tensor or per column
    of b (output channel), S = max_fmt / amax; the scaled operands are cast (saturating),
    multiplied with fp32 accumulation, and the fp32 result is unscaled before the single
    output rounding (the epilogue of cuBLASLt-style FP8 GEMMs). Returns (O, S_a, S_b);
    an entry of O beyond ``output_dtype``'s range is inf (round_to, overflow="format").
    """
    a, b = matmul_operands(a, b)
    per_channel = flag(per_channel, "per_channel")
    out_fmt = _format(output_dtype, "output_dtype")
    f = get_format(fmt)
    qa, Sa = _quantize(a, f, 0 if per_channel else None, 0, "saturate", "a")
    qb, Sb = _quantize(b, f, 1 if per_channel else None, 0, "saturate", "b")
    acc = lowp_matmul(qa, qb, input_dtype=f, output_dtype="float32")
    return round_to(acc / Sa / Sb, out_fmt), Sa, Sb  # two divisions: Sa Sb alone may overflow


__all__ = [
    "ACCUMULATE", "DelayedScaling", "FORMATS", "Format", "OVERFLOW", "amax", "dequantize", "format_table", "fp8_matmul",
    "get_format", "loss_scale_update", "lowp_matmul", "lowp_matmul_bound", "quantize", "round_to",
    "scale_from_amax", "scaled_gradient_in",
]
