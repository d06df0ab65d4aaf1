"""Benchmark of the attention kernel on a CUDA GPU: ``python -m gpu.bench``.

Prints, for a few sequence lengths, measured side by side in one run:
  * the FA2 kernel (gpu.attention_c through cupy.RawModule), inputs resident on
    the device, timed with CUDA events;
  * a naive attention in CuPy whose two matmuls go to cuBLAS
    (S = scale * Q K^T, P = softmax(S), O = P V; materialises S);
  * achieved TFLOP/s (4 * B * H * Lq * Lk * D for D = Dv, halved for causal)
    and GB/s of the kernel's slow-memory traffic by the tiled-attention formula
    (``gpu.attention_numba``: Lq*D + ceil(Lq/BR)*Lk*(D+Dv) read, Lq*Dv + Lq
    written, per batch and head, float32);
  * the device's peak: FP32 TFLOP/s = 2 * SMs * FP32 lanes per SM * clock, and
    DRAM GB/s = 2 * memory clock * bus width / 8.

Without a GPU it says so and exits 0 (there is nothing to measure: timings on
the simulator or on PoCL say nothing about a GPU). Not a test: no assertion on
timings.
"""

from __future__ import annotations

import math
import sys

# FP32 lanes per SM by compute capability (CUDA C Programming Guide, "Arithmetic
# Instructions" throughput table: 32-bit floating-point add/multiply/fma per SM per clock)
FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
                     (10, 0): 128, (12, 0): 128}


def gpu_or_reason():
    """(cupy, None) when a CUDA GPU is usable, else (None, reason)."""
    try:
        import cupy
    except ImportError as e:
        return None, f"cupy is not installed ({e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver
        return None, f"no usable CUDA driver/GPU ({e})"
    if n < 1:
        return None, "no CUDA GPU found"
    return cupy, None


def device_peak(cupy) -> dict:
    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device().id
    attr = lambda a: rt.deviceGetAttribute(a, dev)  # noqa: E731
    # cudaDeviceAttr: 16 MultiProcessorCount, 13 ClockRate (kHz), 36 MemoryClockRate (kHz),
    # 37 GlobalMemoryBusWidth (bits), 75/76 ComputeCapabilityMajor/Minor
    sms, clock_khz, mem_khz, bus_bits = attr(16), attr(13), attr(36), attr(37)
    cc = (attr(75), attr(76))
    lanes = FP32_LANES_PER_SM.get(cc, 128)
    props = rt.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "cc": cc, "tflops": 2 * sms * lanes * clock_khz * 1e3 / 1e12,
            "gbs": 2 * mem_khz * 1e3 * bus_bits / 8 / 1e9}


def io_elements(B, H, Lq, Lk, D, Dv, BR) -> int:
    """Slow-memory elements the kernel reads and writes (no block skipping)."""
    reads = Lq * D + math.ceil(Lq / BR) * Lk * (D + Dv)
    writes = Lq * Dv + Lq
    return B * H * (reads + writes)


def _time(cupy, fn, repeat=10) -> float:
    fn()  # warm-up (build, cuBLAS handles)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeat


def run(cupy, lengths=(1024, 2048, 4096, 8192), B=1, H=8, D=64, causal=False) -> None:
    import numpy as np

    from . import api, attention_c
    from .runtime_cupy import CupyRuntime

    peak = device_peak(cupy)
    print(f"device: {peak['name']} (cc {peak['cc'][0]}.{peak['cc'][1]}): peak FP32 {peak['tflops']:.1f} TFLOP/s, "
          f"DRAM {peak['gbs']:.0f} GB/s")
    rt = CupyRuntime()
    print(f"{'L':>6} {'kernel ms':>10} {'TFLOP/s':>8} {'%peak':>6} {'GB/s':>7} {'naive cuBLAS ms':>16} {'TFLOP/s':>8}")
    for L in lengths:
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((B, H, L, D)).astype(np.float32) for _ in range(3))
        _, _, _, p = api.prepare_attention(q, k, v, causal=causal)
        prog = rt.build(attention_c.SOURCE, attention_c.defines(p))
        dq, dk, dv = (cupy.asarray(a) for a in (q, k, v))
        dout = cupy.empty((B, H, L, D), dtype=cupy.float32)
        dlse = cupy.empty((B, H, L), dtype=cupy.float32)
        i32, f32 = np.int32, np.float32
        args = [dq, dk, dv, dout, dlse, i32(B), i32(H), i32(H), i32(L), i32(L), i32(D), i32(D),
                f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)]
        grid = ((L + p.block_q - 1) // p.block_q, B * H)
        t_kernel = _time(cupy, lambda: rt.launch(prog, "flash_forward", grid, p.threads, args))

        def naive():
            s = cupy.matmul(dq, dk.transpose(0, 1, 3, 2)) * f32(p.scale)
            if causal:
                s = cupy.where(cupy.tri(L, dtype=bool), s, f32(-np.inf))
            s = cupy.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            return cupy.matmul(s, dv)

        t_naive = _time(cupy, naive)
        flops = 4 * B * H * L * L * D * (0.5 if causal else 1.0)
        gbs = io_elements(B, H, L, L, D, D, p.block_q) * 4 / t_kernel / 1e9
        tf_k, tf_n = flops / t_kernel / 1e12, flops / t_naive / 1e12
        print(f"{L:>6} {t_kernel * 1e3:>10.3f} {tf_k:>8.2f} {100 * tf_k / peak['tflops']:>5.1f}% {gbs:>7.0f} "
              f"{t_naive * 1e3:>16.3f} {tf_n:>8.2f}")


def main(argv=None) -> int:
    cupy, reason = gpu_or_reason()
    if cupy is None:
        print(f"gpu.bench: no GPU, nothing measured: {reason}. "
              "The kernels are verified without one by the test suite (tests/gpu).")
        return 0
    run(cupy)
    from .mixers_bench import run_mixers  # the linear-time mixer kernels

    run_mixers(cupy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
