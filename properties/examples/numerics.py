"""Worked examples on integer formats (seed 003 section 7, Table 4) and the roofline (seed 002
section 3; seed 004 Q1, Q7, Part B), computed by refimpl.int_formats and refimpl.roofline."""

from __future__ import annotations

import numpy as np

from refimpl import int_formats as I

from . import WorkedExample

# --- seed 003 Table 4: INT8 / INT4 ---------------------------------------------------------


def _int_ranges():
    return I.int_range(8)[1], I.int_range(4)[1]


def _int_ranges_beside():
    return (f"symmetric {I.int_range(8)} and {I.int_range(4)} (-128 and -8 unused); asymmetric "
            f"{I.int_range(8, symmetric=False)} and {I.int_range(4, symmetric=False)} with a zero point")


def _int_steps():
    """The step of a unit whose largest |x| is 1: amax / (2^(b-1) - 1)."""
    x = np.array([[1.0, -0.25, 0.5]])
    return float(I.quant_params(x, bits=8)[0][0, 0]), float(I.quant_params(x, bits=4)[0][0, 0])


def _int_steps_beside():
    x = np.array([[0.0, 0.3, 1.0]])
    s8, s4 = I.quant_params(x, bits=8, symmetric=False)[0][0, 0], I.quant_params(x, bits=4, symmetric=False)[0][0, 0]
    q, s, z = I.quantize(np.array([[0.3, -1.0, 0.5]]), bits=4)
    return (f"on the integer grid the step is 1 for INT8 and INT4 alike; asymmetric over [0, 1]: 1/{1 / s8:.0f} and "
            f"1/{1 / s4:.0f}; the seed's 1/16 = 2^-4 is a 4-bit fixed-point fraction's step. INT4 of [0.3, -1, 0.5]: "
            f"q = {q[0].tolist()}, x_hat = {np.round(I.dequantize(q, s, z)[0], 4).tolist()}, |error| <= s/2 = "
            f"{float(I.quantization_error_bound(s)[0, 0]):.4f}")


K_MM = 2048


def _int_matmul():
    """K = 2048 products 127 x 127 accumulated exactly (int32) and by a running float32 sum."""
    a, b = np.full((1, K_MM), 127), np.full((K_MM, 1), 127)
    f32 = np.float32(0)
    for _ in range(K_MM):
        f32 = np.float32(f32 + np.float32(127 * 127))
    return int(I.int_matmul(a, b)[0, 0]), int(f32)


def _int_matmul_beside():
    exact, f32 = _int_matmul()
    return (f"exact {exact:,} = 2048 x 16129 > 2^24 = {2**24:,}; float32 running sum {f32:,} (off by {f32 - exact:,}); "
            f"int32 is exact for any int8 inputs while K <= {I.int32_safe_depth(8, 8):,}")


EXAMPLES = [
    WorkedExample(
        "int_ranges", "003 section 7, Table 4", "INT8 / INT4: ±127 / ±7",
        _int_ranges, (127, 7), 0.0,
        "refimpl.int_formats.int_range: symmetric restricted ranges +-(2^(b-1) - 1) (docs/integer_formats.md)",
        beside=_int_ranges_beside,
    ),
    WorkedExample(
        "int_step", "003 section 7, Table 4", "ULP@1: 1 / 1/16",
        _int_steps, (1 / 127, 1 / 7), 0.0,
        "not in ERRATA.md: the step after scaling a unit with amax = 1 is 1/127 (INT8) and 1/7 (INT4); the "
        "seed's '1 / 1/16' mixes the integer grid's step (1) with a fixed-point fraction's (2^-4)",
        beside=_int_steps_beside,
    ),
    WorkedExample(
        "int_matmul_int32_exact", "003 section 7, Table 4 (INT8 inference)",
        "integer matmul, int32 accumulation: exact",
        _int_matmul, (33_032_192, 33_031_184), 0.0,
        "refimpl.int_formats.int_matmul on 2048 products 127 x 127; the second figure is a float32 running "
        "sum of the same products, which is not exact beyond 2^24",
        beside=_int_matmul_beside,
    ),
]
