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

The FA2 backward (gpu.attention_backward_c: delta, dK/dV, dQ kernels; forward not
timed) is timed the same way against torch's SDPA backward in float32 when torch
with CUDA is installed (``torch.nn.functional.scaled_dot_product_attention``, the
gradient of sum(dO * O)); its TFLOP/s counts the 5 matmuls of the FA2 paper
(2.5x the forward's 4 B H Lq Lk D), not the 7 this kernel performs (the scores and
dP are recomputed in the dQ pass).

Decoding (Lq = 1 over a long cache, GQA): the forward kernel (one block per (b, h)),
split-KV (gpu.split_kv_c, 16 chunks) and paged decode (gpu.paged_c, block size 16,
a shuffled block table) in GB/s of K/V read (B Hq Lk (D + Dv) * 4 bytes: every query
head reads its kv head's K/V once) against torch SDPA on the contiguous cache.

The block kernels (gpu.norm_c RMSNorm, gpu.rope_c in place) in GB/s of their slow-memory
traffic against torch.nn.functional.rms_norm and an eager torch RoPE; the MoE expert pipeline
(gpu.moe_c: permute, two grouped GEMMs, combine) in TFLOP/s (4 N D H per FFN, N kept rows)
against ``torch._grouped_mm`` when torch has it, else a loop of torch GEMMs over the bins.

The chunked GLA forward is timed by ``gpu.mixers_bench`` (its ``gla_forward`` against fla's
Triton ``chunk_gla``), which this benchmark runs last.

Without a GPU it says so and exits 0 (there is nothing to measure: timings on
the simulator or on PoCL say nothing about a GPU). Not a test: no assertion on
timings.
"""

from __future__ import annotations

import math
import sys

from .bench_device import FP32_LANES_PER_SM, device_peak, gpu_or_reason  # noqa: F401 (gpu.bench's names)
from .bench_device import cuda_time as _time
from .bench_device import torch_time as _time_torch

# FP32 lanes per SM by compute capability (CUDA C Programming Guide, "Arithmetic
# Instructions" throughput table: 32-bit floating-point add/multiply/fma per SM per clock)
def io_elements(B, H, Lq, Lk, D, Dv, BR) -> int:
    """Slow-memory elements the kernel reads and writes (no block skipping)."""
    reads = Lq * D + math.ceil(Lq / BR) * Lk * (D + Dv)
    writes = Lq * Dv + Lq
    return B * H * (reads + writes)


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


def _torch_cuda():
    """torch when it is installed with a usable CUDA device, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None



def run_backward(cupy, lengths=(1024, 2048, 4096), B=1, H=8, D=64, causal=False) -> None:
    """The three backward kernels (inputs, out, lse resident on the device) against
    torch's SDPA backward (float32) when available."""
    import numpy as np

    from . import api, attention_backward_c, attention_c
    from .runtime_cupy import CupyRuntime

    peak = device_peak(cupy)
    torch = _torch_cuda()
    rt = CupyRuntime()
    print(f"FA2 backward (dQ, dK, dV), B={B} H={H} D={D} causal={causal}, float32"
          + ("" if torch else "; torch with CUDA not installed: no SDPA comparison"))
    print(f"{'L':>6} {'kernel ms':>10} {'TFLOP/s':>8} {'%peak':>6} {'torch SDPA bwd ms':>18} {'TFLOP/s':>8}")
    for L in lengths:
        rng = np.random.default_rng(0)
        q, k, v, do = (rng.standard_normal((B, H, L, D)).astype(np.float32) for _ in range(4))
        _, _, _, p = api.prepare_attention(q, k, v, causal=causal)
        fwd = rt.build(attention_c.SOURCE, attention_c.defines(p))
        bwd = rt.build(attention_backward_c.SOURCE, attention_backward_c.defines(p))
        dq_, dk_, dv_, ddo = (cupy.asarray(a) for a in (q, k, v, do))
        out = cupy.empty((B, H, L, D), dtype=cupy.float32)
        lse = cupy.empty((B, H, L), dtype=cupy.float32)
        delta = cupy.empty((B, H, L), dtype=cupy.float32)
        gq, gk, gv = (cupy.empty((B, H, L, D), dtype=cupy.float32) for _ in range(3))
        i32, f32 = np.int32, np.float32
        sizes = [i32(B), i32(H), i32(H), i32(L), i32(L), i32(D), i32(D),
                 f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)]
        rt.launch(fwd, "flash_forward", ((L + p.block_q - 1) // p.block_q, B * H), p.threads,
                  [dq_, dk_, dv_, out, lse] + sizes)
        NT = p.threads

        def kernels():
            rt.launch(bwd, "flash_backward_dot", ((L + NT - 1) // NT, B * H), NT, [out, ddo, delta, i32(B), i32(H),
                                                                                    i32(L), i32(D)])
            rt.launch(bwd, "flash_backward_dkdv", ((L + p.block_k - 1) // p.block_k, B * H), NT,
                      [dq_, dk_, dv_, ddo, lse, delta, gk, gv] + sizes)
            rt.launch(bwd, "flash_backward_dq", ((L + p.block_q - 1) // p.block_q, B * H), NT,
                      [dq_, dk_, dv_, ddo, lse, delta, gq] + sizes)

        t_kernel = _time(cupy, kernels)
        flops = 2.5 * 4 * B * H * L * L * D * (0.5 if causal else 1.0)
        tf_k = flops / t_kernel / 1e12
        t_torch = tf_t = float("nan")
        if torch is not None:
            tq, tk, tv = (torch.tensor(a, device="cuda", requires_grad=True) for a in (q, k, v))
            tdo = torch.tensor(do, device="cuda")
            to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
            t_torch = _time_torch(torch, lambda: torch.autograd.grad(to, (tq, tk, tv), tdo, retain_graph=True))
            tf_t = flops / t_torch / 1e12
        print(f"{L:>6} {t_kernel * 1e3:>10.3f} {tf_k:>8.2f} {100 * tf_k / peak['tflops']:>5.1f}% "
              f"{t_torch * 1e3:>18.3f} {tf_t:>8.2f}")


def run_decode(cupy, lengths=(4096, 16384, 65536), B=4, Hq=32, Hkv=8, D=128, splits=16, block_size=16) -> None:
    """One query per sequence over Lk cached tokens: forward, split-KV and paged kernels, and torch SDPA."""
    import numpy as np

    from . import api, attention_c, paged_c, split_kv_c
    from .runtime_cupy import CupyRuntime

    peak = device_peak(cupy)
    torch = _torch_cuda()
    rt = CupyRuntime()
    print(f"decode: B={B} Hq={Hq} Hkv={Hkv} D={D}, one query, float32; GB/s of K/V reads (peak {peak['gbs']:.0f})"
          + ("" if torch else "; torch with CUDA not installed: no SDPA comparison"))
    print(f"{'Lk':>6} {'fwd ms':>8} {'GB/s':>6} {'split ms':>9} {'GB/s':>6} {'paged ms':>9} {'GB/s':>6} "
          f"{'torch ms':>9} {'GB/s':>6}")
    i32, f32 = np.int32, np.float32
    for Lk in lengths:
        rng = np.random.default_rng(0)
        q = rng.standard_normal((B, Hq, 1, D)).astype(np.float32)
        k, v = (rng.standard_normal((B, Hkv, Lk, D)).astype(np.float32) for _ in range(2))
        _, _, _, p = api.prepare_attention(q, k, v, causal=True, block_q=1, block_k=64)
        n_bytes = B * Hq * Lk * 2 * D * 4
        dq, dk, dv = (cupy.asarray(a) for a in (q, k, v))
        out = cupy.empty((B, Hq, 1, D), dtype=cupy.float32)
        lse = cupy.empty((B, Hq, 1), dtype=cupy.float32)
        sizes = [i32(B), i32(Hq), i32(Hkv), i32(1), i32(Lk), i32(D), i32(D)]
        band = [f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)]
        fwd = rt.build(attention_c.SOURCE, attention_c.defines(p))
        t_fwd = _time(cupy, lambda: rt.launch(fwd, "flash_forward", (1, B * Hq), p.threads,
                                              [dq, dk, dv, out, lse] + sizes + band))
        spl = rt.build(split_kv_c.SOURCE, split_kv_c.defines(p))
        edges = cupy.asarray(np.array([0, *(min(s * -(-Lk // splits), Lk) for s in range(1, splits)), Lk], np.int32))
        out_c = cupy.empty((splits, B, Hq, 1, D), dtype=cupy.float32)
        m_c, l_c = (cupy.empty((splits, B, Hq, 1), dtype=cupy.float32) for _ in range(2))

        def split():
            rt.launch(spl, "split_kv_partial", (splits, B * Hq), p.threads,
                      [dq, dk, dv, edges, out_c, m_c, l_c] + sizes + band)
            rt.launch(spl, "split_kv_merge", (1, B * Hq), p.threads,
                      [out_c, m_c, l_c, out, lse, i32(splits), i32(B), i32(Hq), i32(1), i32(D)])

        t_split = _time(cupy, split)
        nblk = -(-Lk // block_size)
        perm = rng.permutation(B * nblk).astype(np.int32)
        table = perm.reshape(B, nblk)
        pool_k = np.zeros((B * nblk, Hkv, block_size, D), np.float32)
        pool_v = np.zeros_like(pool_k)
        for b in range(B):
            for j in range(nblk):
                pool_k[table[b, j], :, :Lk - j * block_size] = k[b, :, j * block_size:(j + 1) * block_size]
                pool_v[table[b, j], :, :Lk - j * block_size] = v[b, :, j * block_size:(j + 1) * block_size]
        pg = rt.build(paged_c.SOURCE, paged_c.defines(p))
        pargs = [dq, cupy.asarray(pool_k), cupy.asarray(pool_v), cupy.asarray(table),
                 cupy.asarray(np.full(B, Lk, np.int32)), out, lse, i32(B), i32(Hq), i32(Hkv), i32(1), i32(D), i32(D),
                 i32(nblk), i32(block_size), f32(p.scale), f32(0.0), i32(p.left)]
        t_paged = _time(cupy, lambda: rt.launch(pg, "paged_attention", (1, B * Hq), p.threads, pargs))
        t_torch = float("nan")
        if torch is not None:
            tq, tk, tv = (torch.tensor(a, device="cuda") for a in (q, k, v))
            t_torch = _time_torch(torch, lambda: torch.nn.functional.scaled_dot_product_attention(
                tq, tk, tv, enable_gqa=True))
        gb = lambda t: n_bytes / t / 1e9  # noqa: E731
        print(f"{Lk:>6} {t_fwd * 1e3:>8.3f} {gb(t_fwd):>6.0f} {t_split * 1e3:>9.3f} {gb(t_split):>6.0f} "
              f"{t_paged * 1e3:>9.3f} {gb(t_paged):>6.0f} {t_torch * 1e3:>9.3f} {gb(t_torch):>6.0f}")


def run_block(cupy, rows=(4096, 16384), d=4096, B=4, H=32, L=2048, D=128) -> None:
    """RMSNorm rows of width d and RoPE of (B, H, L, D), in GB/s, against torch."""
    import numpy as np

    from . import api, norm_c, rope_c
    from .runtime_cupy import CupyRuntime

    peak = device_peak(cupy)
    torch = _torch_cuda()
    rt = CupyRuntime()
    i32, f32 = np.int32, np.float32
    print(f"block kernels, float32, GB/s of slow-memory traffic (peak {peak['gbs']:.0f})")
    norm = rt.build(norm_c.SOURCE, norm_c.DEFAULT_DEFINES)
    for n in rows:
        x = cupy.asarray(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32))
        w = cupy.ones(d, dtype=cupy.float32)
        y = cupy.empty_like(x)
        t = _time(cupy, lambda: rt.launch(norm, "rms_norm", (n, 1), 128, [x, w, y, i32(d), f32(1e-6), i32(0), f32(0)]))
        gb = (3 * n * d + d) * 4 / t / 1e9  # x read twice, y written, w read
        line = f"  rms_norm {n}x{d}: {t * 1e3:.3f} ms {gb:.0f} GB/s"
        if torch is not None and hasattr(torch.nn.functional, "rms_norm"):
            tx, tw = torch.as_tensor(x, device="cuda"), torch.ones(d, device="cuda")
            tt = _time_torch(torch, lambda: torch.nn.functional.rms_norm(tx, (d,), tw, 1e-6))
            line += f"; torch rms_norm {tt * 1e3:.3f} ms {(2 * n * d + d) * 4 / tt / 1e9:.0f} GB/s"
        print(line)
    rope = rt.build(rope_c.SOURCE, rope_c.DEFAULT_DEFINES)
    x = cupy.asarray(np.random.default_rng(0).standard_normal((B, H, L, D)).astype(np.float32))
    cos, sin = (cupy.asarray(a) for a in api.rope_tables(np.arange(L), B, L, D, 10000.0, None))
    half = D // 2
    t = _time(cupy, lambda: rt.launch(rope, "rope_inplace", ((L * half + 127) // 128, B * H), 128,
                                      [x, cos, sin, i32(B), i32(H), i32(L), i32(D), i32(half), i32(1), i32(0)]))
    gb = (2 * B * H * L * D + 2 * L * half) * 4 / t / 1e9
    line = f"  rope in place ({B}, {H}, {L}, {D}): {t * 1e3:.3f} ms {gb:.0f} GB/s"
    if torch is not None:
        tx = torch.as_tensor(x, device="cuda")
        tc, ts = torch.as_tensor(cos, device="cuda")[0], torch.as_tensor(sin, device="cuda")[0]

        def eager():
            a, b = tx[..., :half], tx[..., half:]
            return torch.cat([a * tc - b * ts, b * tc + a * ts], dim=-1)

        tt = _time_torch(torch, eager)
        line += f"; eager torch {tt * 1e3:.3f} ms"
    print(line)


def run_moe(cupy, T=8192, E=8, k=2, D=1024, Hd=2816) -> None:
    """The MoE expert pipeline (dropless, SwiGLU-free FFN with SiLU) against torch's grouped GEMMs."""
    import numpy as np

    from . import moe_c
    from .api import MoELaunch
    from .runtime_cupy import CupyRuntime
    from refimpl.moe import route

    peak = device_peak(cupy)
    torch = _torch_cuda()
    rt = CupyRuntime()
    i32 = np.int32
    p = MoELaunch(128, 16, 16, 16)
    prog = rt.build(moe_c.SOURCE, moe_c.defines(p))
    rng = np.random.default_rng(0)
    r = route(rng.standard_normal((T, E)), k)
    N = int(r.kept.sum())
    x = cupy.asarray(rng.standard_normal((T, D)).astype(np.float32))
    W1 = cupy.asarray((rng.standard_normal((E, D, Hd)) / np.sqrt(D)).astype(np.float32))
    W2 = cupy.asarray((rng.standard_normal((E, Hd, D)) / np.sqrt(Hd)).astype(np.float32))
    b1, b2 = cupy.zeros((E, Hd), dtype=cupy.float32), cupy.zeros((E, D), dtype=cupy.float32)
    dummy = cupy.zeros((1, 1, 1), dtype=cupy.float32)
    ind, pos, kept = (cupy.asarray(np.ascontiguousarray(a, dtype=np.int32))
                      for a in (r.indices, np.where(r.kept, r.position, -1), r.kept))
    gates = cupy.asarray(r.gates.astype(np.float32))
    xp, h, out = (cupy.empty((N, c), dtype=cupy.float32) for c in (D, Hd, D))
    row_of = cupy.empty((T, k), dtype=cupy.int32)
    row_token = cupy.empty(N, dtype=cupy.int32)
    offsets, counts = cupy.empty(E + 1, dtype=cupy.int32), cupy.empty(E, dtype=cupy.int32)
    y = cupy.empty((T, D), dtype=cupy.float32)

    def pipeline():
        rt.launch(prog, "moe_bin_counts", (E, 1), 128, [ind, kept, counts, i32(T), i32(k)])
        rt.launch(prog, "moe_bin_offsets", (1, 1), 1, [counts, offsets, i32(E), i32(-1)])
        rt.launch(prog, "moe_permute", (T * k, 1), 128, [x, ind, pos, kept, offsets, xp, row_of, row_token, i32(k), i32(D)])
        rt.launch(prog, "moe_grouped_gemm", ((N + 15) // 16 + E, (Hd + 15) // 16), 256,
                  [xp, W1, dummy, b1, offsets, h, i32(E), i32(D), i32(Hd), i32(3)])
        rt.launch(prog, "moe_grouped_gemm", ((N + 15) // 16 + E, (D + 15) // 16), 256,
                  [h, W2, dummy, b2, offsets, out, i32(E), i32(Hd), i32(D), i32(0)])
        rt.launch(prog, "moe_combine", (T, 1), 128, [out, row_of, gates, y, i32(k), i32(D)])

    t = _time(cupy, pipeline, repeat=3)
    flops = 4 * N * D * Hd
    line = (f"MoE experts T={T} E={E} k={k} D={D} H={Hd} (SiLU FFN, float32): {t * 1e3:.2f} ms "
            f"{flops / t / 1e12:.2f} TFLOP/s ({100 * flops / t / 1e12 / peak['tflops']:.1f}% of FP32 peak)")
    if torch is not None:
        txp = torch.as_tensor(xp, device="cuda")
        tW1, tW2 = torch.as_tensor(W1, device="cuda"), torch.as_tensor(W2, device="cuda")
        offs = torch.as_tensor(cupy.asnumpy(offsets)[1:].astype(np.int32), device="cuda")
        if hasattr(torch, "_grouped_mm"):
            def ref():
                hh = torch.nn.functional.silu(torch._grouped_mm(txp, tW1, offs=offs))
                return torch._grouped_mm(hh, tW2, offs=offs)
            what = "torch._grouped_mm"
        else:
            bounds = cupy.asnumpy(offsets).tolist()

            def ref():
                return [torch.nn.functional.silu(txp[a:b] @ tW1[e]) @ tW2[e]
                        for e, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
            what = "a loop of torch GEMMs"
        try:
            tt = _time_torch(torch, ref, repeat=3)
            line += f"; {what} {tt * 1e3:.2f} ms {flops / tt / 1e12:.2f} TFLOP/s"
        except RuntimeError as e:  # e.g. _grouped_mm without float32 support on this device
            line += f"; {what} failed: {str(e)[:100]}"
    print(line)


def main(argv=None) -> int:
    cupy, reason = gpu_or_reason()
    if cupy is None:
        print(f"gpu.bench: no GPU, nothing measured: {reason}. "
              "The kernels are verified without one by the test suite (tests/gpu).")
        return 0
    from .mixers_bench import run_mixers  # the linear-time mixer kernels

    failed = 0
    for part in (run, run_backward, run_decode, run_block, run_moe, run_mixers):
        try:
            part(cupy)
        except Exception as e:  # noqa: BLE001 - one part failing must not hide the others' figures
            failed += 1
            print(f"{part.__name__}: failed: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
