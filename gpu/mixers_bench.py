"""Benchmark of the mixer kernels on a CUDA GPU: ``python -m gpu.mixers_bench`` (also run by
``python -m gpu.bench``). Not a test: nothing is asserted on timings.

Measured side by side in one run, inputs resident on the device, CUDA events:
  * ``selective_scan`` (gpu.mixers_c through cupy.RawModule), Mamba-1 sized: d_inner = H P =
    2048 channels, N = 16, L in {1024, 4096}; achieved GB/s of its slow-memory traffic,
    4 bytes * (reads u, delta, z: 3 b H L P; B, C: 2 b H L N per channel as the kernel re-reads
    them; writes b H L P), against the DRAM peak; beside ``mamba_ssm``'s CUDA
    ``selective_scan_fn`` when installed;
  * ``gla_forward`` (chunk 16, value tiles of 16), H = 8 heads of K = V = 64, channel gates;
    FLOPs 2 B H L (BT (K + V) / 2 + 2 K V) (intra-chunk scores and outputs, the state read and
    the carry) as achieved TFLOP/s against the FP32 peak; beside flash-linear-attention's Triton
    ``fla.ops.gla.chunk_gla`` when installed with a CUDA torch;
  * ``delta_forward`` (chunk 16), the same sizes, unit keys, scalar gates; beside fla's
    ``fla.ops.gated_delta_rule.chunk_gated_delta_rule``.
Without a GPU it says so and exits 0.
"""

from __future__ import annotations

from .bench_device import torch_time

import sys


def _torch_cuda():
    try:
        import torch
    except ImportError as e:
        return None, f"torch not installed ({e})"
    if not torch.cuda.is_available():
        return None, "torch has no CUDA device (a CPU build?)"
    return torch, None



def run(cupy, peak: dict) -> None:
    import numpy as np

    from . import mixers_api as MA
    from . import mixers_c
    from .bench_device import cuda_time as _time
    from .runtime_cupy import CupyRuntime

    rt = CupyRuntime()
    torch, why = _torch_cuda()
    i32, f32 = np.int32, np.float32
    rng = np.random.default_rng(0)

    print("selective_scan (b=1, H=32, P=64 -> 2048 channels, N=16, G=1, D and z)")
    print(f"{'L':>6} {'kernel ms':>10} {'GB/s':>7} {'%peak':>6} {'mamba_ssm ms':>13}")
    for L in (1024, 4096):
        b, H, P, N, G = 1, 32, 64, 16, 1
        u = rng.standard_normal((b, H, L, P)).astype(f32)
        dl = (0.1 * np.abs(rng.standard_normal((b, H, L, P)))).astype(f32)
        A = -np.exp(rng.standard_normal((H, P, N))).astype(f32)
        Bm, Cm = rng.standard_normal((2, b, G, L, N)).astype(f32)
        D, z = rng.standard_normal((H, P)).astype(f32), rng.standard_normal((b, H, L, P)).astype(f32)
        arrays, p = MA.prepare_scan(u, dl, A, Bm, Cm, D, z)
        prog = rt.build(mixers_c.SOURCE, mixers_c.scan_defines(p))
        dev = [cupy.asarray(a) for a in arrays]
        out, last = cupy.empty(u.shape, cupy.float32), cupy.empty((b, H, P, N), cupy.float32)
        args = dev + [out, last, i32(b), i32(H), i32(L), i32(P), i32(N), i32(G), i32(1), i32(1), i32(0)]
        t = _time(cupy, lambda: rt.launch(prog, "selective_scan", ((P + p.block - 1) // p.block, b * H), p.block, args))
        gbs = 4 * (4 * b * H * L * P + 2 * b * H * P * L * N) / t / 1e9
        ref = "not installed"
        if torch is not None:
            try:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

                tu = torch.as_tensor(u.transpose(0, 1, 3, 2).reshape(b, H * P, L), device="cuda")  # (b, D, L)
                td = torch.as_tensor(dl.transpose(0, 1, 3, 2).reshape(b, H * P, L), device="cuda")
                tz = torch.as_tensor(z.transpose(0, 1, 3, 2).reshape(b, H * P, L), device="cuda")
                tA = torch.as_tensor(A.reshape(H * P, N), device="cuda")
                tB = torch.as_tensor(Bm.transpose(0, 1, 3, 2), device="cuda")  # (b, G, N, L)
                tC = torch.as_tensor(Cm.transpose(0, 1, 3, 2), device="cuda")
                tD = torch.as_tensor(D.reshape(H * P), device="cuda")
                ref = f"{1e3 * torch_time(torch, lambda: selective_scan_fn(tu, td, tA, tB, tC, tD, tz)):.3f}"
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                ref = f"unavailable ({type(e).__name__})"
        else:
            ref = why
        print(f"{L:>6} {t * 1e3:>10.3f} {gbs:>7.0f} {100 * gbs / peak['gbs']:>5.1f}% {ref:>13}")

    print("gla_forward (B=1, H=8, K=V=64, channel gates, chunk 16)")
    print(f"{'L':>6} {'kernel ms':>10} {'TFLOP/s':>8} {'%peak':>6} {'fla chunk_gla ms':>17}")
    for L in (1024, 4096):
        B, H, K, V = 1, 8, 64, 64
        q, k = (rng.standard_normal((B, H, L, K)).astype(f32) for _ in range(2))
        v = rng.standard_normal((B, H, L, V)).astype(f32)
        g = (-0.05 * rng.random((B, H, L, K))).astype(f32)
        arrays, p = MA.prepare_gla(q, k, v, g)
        prog = rt.build(mixers_c.SOURCE, mixers_c.gla_defines(p))
        dev = [cupy.asarray(a) for a in arrays]
        o, sT = cupy.empty(v.shape, cupy.float32), cupy.empty((B, H, K, V), cupy.float32)
        args = dev + [o, sT, i32(B), i32(H), i32(L), i32(K), i32(V), i32(K), f32(p.scale)]
        grid = ((V + p.block_v - 1) // p.block_v, B * H)
        t = _time(cupy, lambda: rt.launch(prog, "gla_forward", grid, p.threads, args))
        tf = 2 * B * H * L * (p.chunk * (K + V) / 2 + 2 * K * V) / t / 1e12
        ref = why or ""
        if torch is not None:
            try:
                from fla.ops.gla import chunk_gla

                tq, tk, tv, tg = (torch.as_tensor(x.transpose(0, 2, 1, 3).copy(), device="cuda") for x in (q, k, v, g))
                ref = f"{1e3 * torch_time(torch, lambda: chunk_gla(tq, tk, tv, tg, output_final_state=True)):.3f}"
            except Exception as e:  # noqa: BLE001
                ref = f"unavailable ({type(e).__name__})"
        print(f"{L:>6} {t * 1e3:>10.3f} {tf:>8.3f} {100 * tf / peak['tflops']:>5.1f}% {ref:>17}")

    print("delta_forward (B=1, H=8, K=V=64, unit keys, gated, chunk 16)")
    print(f"{'L':>6} {'kernel ms':>10} {'TFLOP/s':>8} {'%peak':>6} {'fla chunk_gated_delta_rule ms':>30}")
    for L in (1024, 4096):
        B, H, K, V = 1, 8, 64, 64
        q, k = (rng.standard_normal((B, H, L, K)).astype(f32) for _ in range(2))
        q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
        v = rng.standard_normal((B, H, L, V)).astype(f32)
        beta = rng.random((B, H, L)).astype(f32)
        g = (-0.05 * rng.random((B, H, L))).astype(f32)
        arrays, p = MA.prepare_delta(q, k, v, beta, g)
        prog = rt.build(mixers_c.SOURCE, mixers_c.gla_defines(p))
        dev = [cupy.asarray(a) for a in arrays]
        o, sT = cupy.empty(v.shape, cupy.float32), cupy.empty((B, H, K, V), cupy.float32)
        args = dev + [o, sT, i32(B), i32(H), i32(L), i32(K), i32(V), f32(p.scale)]
        grid = ((V + p.block_v - 1) // p.block_v, B * H)
        t = _time(cupy, lambda: rt.launch(prog, "delta_forward", grid, p.threads, args))
        # KK, QK: BT K each per pair (half the pairs); rhs K V; solve BT V / 2; outputs and carry as GLA
        tf = 2 * B * H * L * (p.chunk * K + K * V + p.chunk * V + 2 * K * V) / t / 1e12
        ref = why or ""
        if torch is not None:
            try:
                from fla.ops.gated_delta_rule import chunk_gated_delta_rule

                tq, tk, tv = (torch.as_tensor(x.transpose(0, 2, 1, 3).copy(), device="cuda") for x in (q, k, v))
                tb, tg = (torch.as_tensor(x.transpose(0, 2, 1).copy(), device="cuda") for x in (beta, g))
                ref = f"{1e3 * torch_time(torch, lambda: chunk_gated_delta_rule(tq, tk, tv, tg, tb, output_final_state=True)):.3f}"
            except Exception as e:  # noqa: BLE001
                ref = f"unavailable ({type(e).__name__})"
        print(f"{L:>6} {t * 1e3:>10.3f} {tf:>8.3f} {100 * tf / peak['tflops']:>5.1f}% {ref:>30}")


def run_mixers(cupy) -> None:
    """Every mixer benchmark, the device's peak read here (one part of ``python -m gpu.bench``)."""
    from .bench_device import device_peak

    run(cupy, device_peak(cupy))


def main(argv=None) -> int:
    from .bench_device import device_peak, gpu_or_reason

    cupy, reason = gpu_or_reason()
    if cupy is None:
        print(f"gpu.mixers_bench: no GPU, nothing measured: {reason}.")
        return 0
    run(cupy, device_peak(cupy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
