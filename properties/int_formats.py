"""Properties of integer quantisation (kind "int_quant") and integer matmuls (kind "int_matmul"),
against ``refimpl.int_formats`` (docs/integer_formats.md).

Quantise adapter: ``quantize(x, bits, symmetric, granularity, group_size) -> (q, scale, zero_point)``
for x float64 (rows, cols) holding float32 values; q integers, scale and zero_point one per unit
(shapes as ``refimpl.int_formats.quant_params``: (1, 1), (rows, 1), (1, cols), (rows, cols / g)).
The step may be computed in float32: scales are compared to within 2^-21 relative, and q is
checked against the adapter's own scale and zero point, where a value that is not an exact tie
but lies within 2^-20 of one may round either way. Exact ties (drawn on purpose: steps that are
powers of two and half-integer multiples of them) must round to even.

Integer-matmul adapter: ``int_matmul(a_q, b_q) -> integer array (M, N)`` for int8 or int4 values
(int64 arrays); the result must equal the exact integer product, bit for bit. Cases reach sums
beyond 2^24 (float32 accumulation is inexact there) and beyond 2^15 (an int16 accumulator wraps).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl import int_formats as I

from .core import Property
from .protocol import Capability, Kind
from .strategy_cache import sampled

UNITS = {"per_tensor": "tensor", "per_row": "row", "per_column": "column", "per_group": "group"}
BITS = {"int8": 8, "int4": 4}

KINDS = (
    Kind("int_quant", "quantises float32 values to INT8 / INT4 with a step (and zero point) per unit; compared "
         "with refimpl.int_formats.quantize",
         {"quantize": "quantize(x (rows, cols), bits: 8 | 4, symmetric: bool, granularity: 'tensor' | 'row' | "
                      "'column' | 'group', group_size: int | None) -> (q integers (rows, cols), scale, zero_point) "
                      "with one scale and zero point per unit"},
         ("quantize",),
         {"int8": Capability("quantises to 8 bits"), "int4": Capability("quantises to 4 bits"),
          "symmetric": Capability("symmetric: q in [-(2^(b-1)-1), 2^(b-1)-1], s = amax / (2^(b-1)-1), z = 0"),
          "asymmetric": Capability("asymmetric: q in [0, 2^b - 1], s = (max(x, 0) - min(x, 0)) / (2^b - 1), "
                                   "z = rint(-min(x, 0) / s)"),
          **{c: Capability(f"one step per {u}" + (" (group_size consecutive entries of a row)" if u == "group" else ""))
             for c, u in UNITS.items()}},
         one_of=(("int8", "int4"), ("symmetric", "asymmetric"), tuple(UNITS))),
    Kind("int_matmul", "a_q (M, K) @ b_q (K, N) on integers with exact (int32) accumulation; compared bit for bit "
         "with refimpl.int_formats.int_matmul",
         {"int_matmul": "int_matmul(a_q: int64 array (M, K), b_q: int64 array (K, N)) -> integer array (M, N)"},
         ("int_matmul",),
         {"int8": Capability("inputs in [-128, 127]"), "int4": Capability("inputs in [-8, 7]")},
         one_of=(("int8", "int4"),)),
)


@dataclasses.dataclass(frozen=True)
class QuantAdapter:
    name: str
    quantize: Callable
    capabilities: frozenset = frozenset({"int8", "int4", "symmetric", "asymmetric", *UNITS})
    kind: str = "int_quant"


@dataclasses.dataclass(frozen=True)
class IntMatmulAdapter:
    name: str
    int_matmul: Callable
    capabilities: frozenset = frozenset({"int8", "int4"})
    kind: str = "int_matmul"


@dataclasses.dataclass(frozen=True)
class QuantCase:
    x: np.ndarray
    bits: int
    symmetric: bool
    granularity: str
    group_size: Optional[int]

    def __repr__(self):
        return (f"QuantCase(bits={self.bits}, symmetric={self.symmetric}, {self.granularity}, "
                f"group_size={self.group_size}, x={self.x.tolist()})")


def _unit_ids(shape, granularity, g):
    """An integer per entry naming its unit (the same partition as refimpl.int_formats)."""
    rows, cols = shape
    r, c = np.indices(shape)
    return {"tensor": 0 * r, "row": r, "column": c, "group": r * cols + c // (g or 1)}[granularity]


@st.composite
def quant_case(draw, caps):
    bits = BITS[draw(sampled([c for c in BITS if c in caps]))]
    symmetric = draw(sampled([s for s in (True, False) if ("symmetric" if s else "asymmetric") in caps]))
    granularity = UNITS[draw(sampled([c for c in UNITS if c in caps]))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = draw(sampled([1, 2, 4])) if granularity == "group" else None
    rows, cols = draw(st.integers(1, 4)), (g or 1) * draw(st.integers(1, 4))
    qmin, qmax = I.int_range(bits, symmetric=symmetric)
    if draw(st.booleans()):  # exact ties: a step 2^e per case, values on the grid and half-way between
        e = int(rng.integers(-8, 8))
        lo = 0 if symmetric else -int(rng.integers(0, qmax + 1))  # the unit's min(x, 0) in steps
        lo_s, hi_s = (-qmax, qmax) if symmetric else (lo, lo + qmax)
        y = rng.integers(2 * lo_s, 2 * hi_s + 1, (rows, cols)) / 2.0  # half-integers and integers
        ids = _unit_ids((rows, cols), granularity, g)
        for u in np.unique(ids):  # every unit reaches both ends, so its step is exactly 2^e
            where = np.flatnonzero(ids.ravel() == u)
            if symmetric:
                y.flat[rng.choice(where)] = qmax * rng.choice([-1.0, 1.0])
            elif where.size >= 2:
                a, b = rng.choice(where, 2, replace=False)
                y.flat[a], y.flat[b] = lo_s, hi_s
            else:
                y.flat[where[0]] = hi_s if lo_s == 0 else lo_s  # one value: the range is [min(v, 0), max(v, 0)]
        x = y * 2.0**e
    else:  # loud and quiet rows, zero rows, one-signed units
        x = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-3, 3, (rows, 1))
        if draw(st.booleans()):
            x = np.abs(x) + draw(sampled([0.0, 1.0]))
        if draw(st.booleans()):
            x[0] = 0.0
    return QuantCase(x.astype(np.float32).astype(np.float64), bits, symmetric, granularity, g)


def _call_quantize(impl, case):
    q, s, z = impl.quantize(case.x, case.bits, case.symmetric, case.granularity, case.group_size)
    ref_s, ref_z = I.quant_params(case.x, bits=case.bits, symmetric=case.symmetric, granularity=case.granularity,
                                  group_size=case.group_size)
    s = np.asarray(s, dtype=np.float64).reshape(ref_s.shape) if np.size(s) == ref_s.size else np.asarray(s)
    z = np.asarray(z).reshape(ref_z.shape) if np.size(z) == ref_z.size else np.asarray(z)
    if s.shape != ref_s.shape or z.shape != ref_z.shape:
        raise AssertionError(f"{impl.name}: scale / zero_point shapes {s.shape} / {z.shape}, expected one per unit "
                             f"{ref_s.shape}; {case!r}")
    return np.asarray(q), s, z, ref_s, ref_z


def _near_tie(r):
    """Near a half-integer but not on it: either rounding is what a float32 kernel may compute."""
    d = np.abs(r - np.floor(r) - 0.5)
    return (d > 0) & (d <= 2.0**-20 * (np.abs(r) + 1))


def check_int_quant_params(impl, case: QuantCase):
    """Step s = amax / (2^(b-1)-1) (symmetric) or (max(x,0) - min(x,0)) / (2^b-1) per unit (2^-21 relative,
    for float32 arithmetic); zero point z = rint(-min(x,0) / s) (0 when symmetric), exact except at near-ties."""
    q, s, z, ref_s, ref_z = _call_quantize(impl, case)
    if not (np.abs(s - ref_s) <= 2.0**-21 * ref_s).all():
        i = np.unravel_index(np.argmax(np.abs(s - ref_s) / ref_s), s.shape)
        raise AssertionError(f"{impl.name}: step {s[i]!r} at unit {list(map(int, i))}, the spec's is {ref_s[i]!r}; {case!r}")
    if case.symmetric:
        ok = z == 0
    else:
        lo = np.minimum(I._units(case.x, case.granularity, case.group_size).min(axis=-1), 0).reshape(s.shape)
        r = -lo / s
        ok = (z == np.clip(np.rint(r), 0, 2**case.bits - 1)) | (_near_tie(r) & (np.abs(z - r) < 1))
    if not ok.all():
        i = np.unravel_index(np.argmax(~ok), ok.shape)
        raise AssertionError(f"{impl.name}: zero point {z[i]!r} at unit {list(map(int, i))}, expected {ref_z[i]!r}; {case!r}")


def check_int_quant_rounding(impl, case: QuantCase):
    """q = clip(rint(x / s) + z, qmin, qmax) with the adapter's own s and z: round half to even on exact
    ties, in range, and so |x - s (q - z)| <= s / 2."""
    q, s, z, _, _ = _call_quantize(impl, case)
    qmin, qmax = I.int_range(case.bits, symmetric=case.symmetric)
    S, Z = I._expand(s, q.shape), I._expand(z, q.shape)
    r = case.x / S
    want = np.clip(np.rint(r) + Z, qmin, qmax)
    alt = np.clip(np.where(np.rint(r) == np.floor(r), np.ceil(r), np.floor(r)) + Z, qmin, qmax)
    ok = (q == want) | (_near_tie(r) & (q == alt))
    if q.shape != case.x.shape or not ok.all():
        i = np.unravel_index(np.argmax(~ok), ok.shape) if q.shape == case.x.shape else (0, 0)
        raise AssertionError(f"{impl.name}: q = {q[i]!r} for x = {case.x[i]!r} (x / s = {r[i]!r}, z = {Z[i]}); "
                             f"round half to even gives {want[i]!r}; {case!r}")


@dataclasses.dataclass(frozen=True)
class IntMatmulCase:
    a: np.ndarray
    b: np.ndarray

    def __repr__(self):
        return f"IntMatmulCase(a{self.a.shape}, b{self.b.shape}, max|a|={np.abs(self.a).max()}, max|b|={np.abs(self.b).max()})"


@st.composite
def int_matmul_case(draw, caps):
    bits = BITS[draw(sampled([c for c in BITS if c in caps]))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    M, K, N = draw(st.integers(1, 3)), draw(sampled([1, 5, 64, 300, 4096])), draw(st.integers(1, 3))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    a, b = rng.integers(lo, hi + 1, (M, K)), rng.integers(lo, hi + 1, (K, N))
    if draw(st.booleans()):  # extreme entries: odd products hi^2 summed beyond 2^24 at K = 4096 (int8),
        ea, eb = draw(sampled([(hi, hi), (lo, lo), (lo, hi)]))  # lo^2 = 2^(2b-2) sums exactly
        a[0], b[:, 0] = ea, eb
    return IntMatmulCase(a.astype(np.int64), b.astype(np.int64))


def check_int_matmul_exact(impl, case: IntMatmulCase):
    """The integer product, exactly (int32 accumulation in any order is exact for these sizes)."""
    got = np.asarray(impl.int_matmul(case.a, case.b))
    want = I.int_matmul(case.a, case.b)
    if got.shape != want.shape:
        raise AssertionError(f"{impl.name}: result shape {got.shape}, expected {want.shape}; {case!r}")
    got = got.astype(np.int64) if np.issubdtype(got.dtype, np.integer) else got.astype(np.float64)
    bad = got != want  # want is exact in float64 too (|C| < 2^31)
    if bad.any():
        i = np.unravel_index(np.argmax(bad), want.shape)
        raise AssertionError(f"{impl.name}: C{list(map(int, i))} = {got[i]!r}, the exact sum is {want[i]}; {case!r}")


# ----------------------------------------------------------------------------
# adapters


def _refimpl_quantize(x, bits, symmetric, granularity, group_size):
    return I.quantize(x, bits=bits, symmetric=symmetric, granularity=granularity, group_size=group_size)


def _torch_quantize(x, bits, symmetric, granularity, group_size):
    """torch.fake_quantize_per_channel_affine (float32, x * (1 / s), nearbyint) with the step computed
    in float32 by the adapter; q read back as rint(out / s) + z. torch 2.13, aten FakeQuantPerChannelAffine."""
    import torch

    qmin, qmax = I.int_range(bits, symmetric=symmetric)
    x32 = torch.tensor(np.asarray(x, np.float32))
    rows, cols = x32.shape
    u = {"tensor": x32.reshape(1, -1), "row": x32, "column": x32.T,
         "group": x32.reshape(-1, group_size or 1)}[granularity]
    if symmetric:
        span, lo = u.abs().amax(dim=1), torch.zeros(u.shape[0])
    else:
        lo, hi = torch.clamp(u.amin(dim=1), max=0.0), torch.clamp(u.amax(dim=1), min=0.0)
        span = hi - lo
    s = torch.where(span > 0, span / float(qmax - qmin if not symmetric else qmax), torch.ones_like(span))
    z = torch.clamp(torch.round(-lo / s), qmin, qmax).to(torch.int32) if not symmetric else torch.zeros_like(s, dtype=torch.int32)
    out = torch.fake_quantize_per_channel_affine(u, s, z, 0, qmin, qmax)
    q = torch.round(out / s[:, None]).to(torch.int64) + z[:, None].to(torch.int64)
    q = {"tensor": q.reshape(rows, cols), "row": q, "column": q.T, "group": q.reshape(rows, cols)}[granularity]
    shape = {"tensor": (1, 1), "row": (rows, 1), "column": (1, cols)}.get(granularity, (rows, cols // (group_size or 1)))
    return q.numpy(), s.double().numpy().reshape(shape), z.numpy().astype(np.int64).reshape(shape)


def _int32_matmul(a, b):
    """numpy matmul in int32 (wraps on overflow; exact in the spec's range)."""
    return np.asarray(a, np.int32) @ np.asarray(b, np.int32)


# wrong implementations


def _wrong_quantize(rounding=np.rint, qmax_shift=0, unit=None, zero_sign=1, lo_with_zero=True):
    def q_fn(x, bits, symmetric, granularity, group_size):
        x = np.asarray(x, np.float64)
        qmin, qmax = I.int_range(bits, symmetric=symmetric)
        gran = unit.get(granularity, granularity) if unit else granularity
        u = I._units(x, gran, group_size) if gran != "strided_group" else \
            x.reshape(x.shape[0], group_size, -1).transpose(0, 2, 1)
        if symmetric:
            span, lo, n = np.abs(u).max(-1), np.zeros(u.shape[:2]), qmax + qmax_shift
        else:
            lo = np.minimum(u.min(-1), 0) if lo_with_zero else u.min(-1)
            span, n = np.maximum(u.max(-1), 0) - lo, qmax - qmin + qmax_shift
        s = np.where(span > 0, span / n, 1.0)
        z = np.clip(np.rint(-zero_sign * lo / s), qmin, qmax).astype(np.int64) if not symmetric else np.zeros(s.shape, np.int64)
        ref_s, _ = I.quant_params(x, bits=bits, symmetric=symmetric, granularity=granularity, group_size=group_size)
        if gran != granularity:  # per-unit values of the wrong partition, reported in the right layout
            s, z = s.reshape(ref_s.shape) if s.size == ref_s.size else np.full(ref_s.shape, s.ravel()[0]), \
                z.reshape(ref_s.shape) if z.size == ref_s.size else np.full(ref_s.shape, z.ravel()[0])
        s, z = s.reshape(ref_s.shape), z.reshape(ref_s.shape)
        q = np.clip(rounding(x / I._expand(s, x.shape)) + I._expand(z, x.shape), qmin, qmax).astype(np.int64)
        return q, s, z
    return q_fn


def _half_away(r):
    return np.sign(r) * np.floor(np.abs(r) + 0.5)


def _float32_accumulate(a, b):
    return (np.asarray(a, np.float32) @ np.asarray(b, np.float32)).astype(np.int64)


def _int16_accumulate(a, b):
    acc = np.zeros((a.shape[0], b.shape[1]), np.int16)
    for k in range(a.shape[1]):
        acc = (acc.astype(np.int64) + np.outer(a[:, k], b[k])).astype(np.int16)  # wraps
    return acc


REFIMPL_QUANT = QuantAdapter("refimpl.int_formats.quantize", _refimpl_quantize)
TORCH_QUANT = QuantAdapter("torch.fake_quantize_per_channel_affine (float32 step)", _torch_quantize)
REFIMPL_INT_MATMUL = IntMatmulAdapter("refimpl.int_formats.int_matmul", I.int_matmul)
INT32_MATMUL = IntMatmulAdapter("numpy int32 matmul", _int32_matmul)


def _torch_available() -> bool:  # installed, not imported: importing torch costs seconds the runner may not need
    import importlib.util

    return importlib.util.find_spec("torch") is not None


BUNDLED = [REFIMPL_QUANT, REFIMPL_INT_MATMUL, INT32_MATMUL] + ([TORCH_QUANT] if _torch_available() else [])

_SYM = frozenset({"int8", "int4", "symmetric", *UNITS})
_ASYM = frozenset({"int8", "int4", "asymmetric", *UNITS})
WRONG = {
    "round_half_away_from_zero": QuantAdapter("wrong[round_half_away_from_zero]", _wrong_quantize(rounding=_half_away)),
    "truncate_toward_zero": QuantAdapter("wrong[truncate_toward_zero]", _wrong_quantize(rounding=np.trunc)),
    "symmetric_divides_by_2^(b-1)": QuantAdapter("wrong[symmetric_divides_by_2^(b-1)]",
                                                 _wrong_quantize(qmax_shift=1), _SYM),
    "row_step_from_columns": QuantAdapter("wrong[row_step_from_columns]", _wrong_quantize(unit={"row": "tensor"}),
                                          frozenset({"int8", "int4", "symmetric", "asymmetric", "per_row"})),
    "groups_strided_not_contiguous": QuantAdapter("wrong[groups_strided_not_contiguous]",
                                                  _wrong_quantize(unit={"group": "strided_group"}),
                                                  frozenset({"int8", "int4", "symmetric", "asymmetric", "per_group"})),
    "zero_point_sign_flipped": QuantAdapter("wrong[zero_point_sign_flipped]", _wrong_quantize(zero_sign=-1), _ASYM),
    "range_excludes_zero": QuantAdapter("wrong[range_excludes_zero]", _wrong_quantize(lo_with_zero=False), _ASYM),
    "float32_accumulation": IntMatmulAdapter("wrong[float32_accumulation]", _float32_accumulate),
    "int16_accumulation": IntMatmulAdapter("wrong[int16_accumulation]", _int16_accumulate),
}

PROPERTIES = [
    Property("int_quant_step_and_zero_point", "int_quant", check_int_quant_params, lambda caps: quant_case(caps),
             "step s = amax / (2^(b-1)-1) or (max - min) / (2^b - 1) per unit, 0 kept exact, z = rint(-min / s)",
             rejects=("symmetric_divides_by_2^(b-1)", "row_step_from_columns", "groups_strided_not_contiguous",
                      "zero_point_sign_flipped", "range_excludes_zero")),
    Property("int_quant_round_half_even", "int_quant", check_int_quant_rounding, lambda caps: quant_case(caps),
             "q = clip(rint(x / s) + z): round half to even on exact ties, in [qmin, qmax]",
             rejects=("round_half_away_from_zero", "truncate_toward_zero")),
    Property("int_matmul_exact", "int_matmul", check_int_matmul_exact, lambda caps: int_matmul_case(caps),
             "integer matmul equals the exact integer product (int32 accumulation), bit for bit",
             rejects=("float32_accumulation", "int16_accumulation")),
]
