"""Worked examples on integer formats (docs/notes.md#number-formats) and the roofline (docs/notes.md#roofline),
computed by refimpl.int_formats and refimpl.roofline."""

from __future__ import annotations

import numpy as np

from refimpl import int_formats as I
from refimpl import io_accounting as IO
from refimpl import roofline as R
from refimpl.model_configs import LLAMA_2_70B

from . import WorkedExample

# --- docs/notes.md#number-formats: INT8 / INT4 ---------------------------------------------------------


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
            f"1/{1 / s4:.0f}; the notes' 1/16 = 2^-4 is a 4-bit fixed-point fraction's step. INT4 of [0.3, -1, 0.5]: "
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


# --- docs/notes.md#roofline: the roofline -----------------------------------------


def _ridge():
    return R.H100_SEED.peak_flops / 1e12, R.H100_SEED.bandwidth / 1e12, R.H100_SEED.ridge


def _ridge_beside():
    sq, mv = R.gemm_cost(4096, 4096, 4096), R.gemm_cost(1, 4096, 4096)
    fl, st = (R.attention_cost(4096, 4096, 128, schedule=s) for s in R.SCHEDULES)
    return (f"bf16 GEMM 4096^3: I = {sq.intensity:.0f} FLOP/B ({R.bound(sq)}-bound); GEMV 1 x 4096 x 4096: "
            f"I = {mv.intensity:.3f} ({R.bound(mv)}); attention n = 4096, d = 128, one head: "
            f"{fl.flops:,} FLOPs, {st.bytes / 1e6:.0f} MB standard (S, P in HBM) vs {fl.bytes / 1e6:.0f} MB tiled "
            f"(B_r = B_c = 128): I = {st.intensity:.0f} vs {fl.intensity:.0f}")


def _decode():
    """Llama-2-70B, bf16, one decoded token at batch 1 over a 4096-token cache."""
    c = R.decode_step_cost(LLAMA_2_70B, 4096)
    return round(c.intensity, 2), R.bound(c)


def _decode_beside():
    rows = []
    for batch, ctx in ((1, 4096), (64, 0), (512, 0), (512, 4096)):
        c = R.decode_step_cost(LLAMA_2_70B, ctx, batch=batch)
        rows.append(f"batch {batch}, context {ctx}: I = {c.intensity:.1f} ({R.bound(c)}, "
                    f">= {R.time_bound(c) * 1e3:.1f} ms per step)")
    return "; ".join(rows) + f"; ridge {R.H100_SEED.ridge:.0f}: the weights amortise over the batch, the cache does not"


def _kv_read():
    """KV-cache bytes (GB) and read time (ms) per decoded token: Llama-2-70B, 4096 tokens, bf16, 3 TB/s."""
    kv_bytes = R.decode_step_cost(LLAMA_2_70B, 4096).bytes - R.decode_step_cost(LLAMA_2_70B, 0).bytes
    return round(kv_bytes / 1e9, 3), round(R.kv_cache_read_time(LLAMA_2_70B, 4096) * 1e3, 3)


def _kv_read_beside():
    w = R.decode_step_cost(LLAMA_2_70B, 0)
    return (f"2 x 80 layers x 8 K/V heads x 128 x 4096 tokens x 2 bytes = {2 * 80 * 8 * 128 * 4096 * 2:,} bytes; "
            f"the weights ({w.bytes / 1e9:.1f} GB) take {w.bytes / R.H100_SEED.bandwidth * 1e3:.1f} ms to read at "
            f"batch 1; with the notes' 64 K/V heads the cache read would be 8x longer")


# --- docs/notes.md#flash-tiling: the score matrix at n = 32K --------------------------------------------


def _score_matrix():
    n = 32 * 1024
    el = IO.score_matrix_elements(n, n)
    return el, el * 2


EXAMPLES = [
    WorkedExample(
        "h100_ridge_point", "docs/notes.md#roofline", "H100: 1000 TFLOPS compute, HBM 3 TB/s",
        _ridge, (1000.0, 3.0, 1000 / 3), 1e-15,
        "refimpl.roofline.H100_SEED; ridge I* = peak / bandwidth = 333 FLOP per byte: below it memory-bound "
        "(docs/roofline.md)", beside=_ridge_beside,
    ),
    WorkedExample(
        "decode_is_memory_bound", "docs/notes.md#roofline",
        "reading the cache back is memory-bandwidth-bound",
        _decode, (1.06, "memory"), 0.0,
        "refimpl.roofline.decode_step_cost: FLOPs 2 x active weights + 4 L H hd t; bytes = every weight + the KV "
        "cache; about 1 FLOP per byte at batch 1, far below 333", beside=_decode_beside,
    ),
    WorkedExample(
        "kv_cache_read_time", "docs/notes.md#roofline", "KV cache read per decoded token at 3 TB/s",
        _kv_read, (1.342, 0.447), 0.0,
        "Llama-2-70B (8 K/V heads) at 4096 tokens in bf16: 1.342 GB read per decoded token, 0.447 ms at 3 TB/s",
        beside=_kv_read_beside,
    ),
    WorkedExample(
        "score_matrix_32k_fp16", "docs/notes.md#flash-tiling", "n = 32K, fp16: n^2 = 1B elements = 2 GB",
        _score_matrix, (1_073_741_824, 2_147_483_648), 0.0,
        "refimpl.io_accounting.score_matrix_elements(32768, 32768) and 2 bytes each: 2^30 elements, 2^31 bytes "
        "(2 GiB, 2.15 GB), per head and per layer",
    ),
    WorkedExample(
        "int_ranges", "docs/notes.md#number-formats", "INT8 / INT4: ±127 / ±7",
        _int_ranges, (127, 7), 0.0,
        "refimpl.int_formats.int_range: symmetric restricted ranges +-(2^(b-1) - 1) (docs/integer_formats.md)",
        beside=_int_ranges_beside,
    ),
    WorkedExample(
        "int_step", "docs/notes.md#number-formats", "ULP@1: 1 / 1/16",
        _int_steps, (1 / 127, 1 / 7), 0.0,
        "docs/errata.md#x-int-step: the step after scaling a unit with amax = 1 is 1/127 (INT8) and 1/7 (INT4); the "
        "notes' '1 / 1/16' mixes the integer grid's step (1) with a fixed-point fraction's (2^-4)",
        beside=_int_steps_beside,
    ),
    WorkedExample(
        "int_matmul_int32_exact", "docs/notes.md#number-formats",
        "integer matmul, int32 accumulation: exact",
        _int_matmul, (33_032_192, 33_031_184), 0.0,
        "refimpl.int_formats.int_matmul on 2048 products 127 x 127; the second figure is a float32 running "
        "sum of the same products, which is not exact beyond 2^24",
        beside=_int_matmul_beside,
    ),
]
