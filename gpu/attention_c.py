"""FlashAttention-2 forward in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same algorithm, tiling, barriers and variable names as the Numba kernel in
``gpu.attention_numba``, whose docstring gives the formula, the tiling, the
shared-memory budget, the occupancy reasoning and the I/O count; in short:

  * grid ``(ceil(Lq / BR), B * Hq)``, blocks of ``BR * BC`` threads; thread
    ``(r, c) = (tid / BC, tid % BC)``;
  * shared memory ``4 * (BR*DMAX + BC*DMAX + BC*DVMAX + 2*BR*BC)`` bytes (26,624 B
    at the default 16 x 16 tiles and head dims up to 128);
  * per (b, h): tile loads ``ceil(Lq/BR) * ceil(Lk/BC)``, elements read
    ``Lq*D + ceil(Lq/BR)*Lk*(D+Dv)``, written ``Lq*Dv + Lq`` (fewer reads where the
    causal/window band lets whole key tiles be skipped).

Compile-time constants: BR, BC, DMAX, DVMAX (``-D`` flags). Kernel arguments:
q, k, v, out, lse (float32, C-contiguous, (B, H, L, D) layout flattened), the
sizes B, Hq, Hkv, Lq, Lk, D, Dv, then scale, softcap (0 = off), offset, left,
right (the band ``i + offset - left <= j <= i + offset + right``).

Instrumentation: built with ``-DCOUNT_IO=1`` (``run(..., count_io=True)``) every
thread counts the global elements it reads and writes; tests/gpu/test_io_count.py
checks the totals against ``refimpl.io_accounting.forward_io`` (Q outer, K/V
read once per query head since blocks of different heads do not share tiles,
and only the tile pairs the causal/window band does not exclude).

Indices are 32-bit ``int``: the facade rejects arrays of 2^31 elements or more.
"""

from __future__ import annotations

from .dialect import with_prelude
from .tile_c import SCORE_FUNCTIONS, SOFTMAX_FUNCTIONS

KERNEL_NAMES = ("flash_forward",)

BODY = r"""
#ifndef BR
#define BR 16
#endif
#ifndef BC
#define BC 16
#endif
#ifndef DMAX
#define DMAX 128
#endif
#ifndef DVMAX
#define DVMAX 128
#endif
#define NT (BR * BC)
#define ACC ((DVMAX + BC - 1) / BC)
/* optional instrumentation (-DCOUNT_IO=1): every thread counts the global-memory
   elements it reads and writes, written to io[2 * global thread id + {0, 1}] */
#ifdef COUNT_IO
#define IO_ARG , GLOBAL int* io
#define IO_READ(n) (io_reads += (n))
#define IO_WRITE(n) (io_writes += (n))
#else
#define IO_ARG
#define IO_READ(n)
#define IO_WRITE(n)
#endif

""" + SCORE_FUNCTIONS + SOFTMAX_FUNCTIONS + r"""
KERNEL void flash_forward(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                          GLOBAL float* out, GLOBAL float* lse,
                          int B, int Hq, int Hkv, int Lq, int Lk, int D, int Dv,
                          float scale, float softcap, int offset, int left, int right IO_ARG)
{
    SHARED float Qs[BR * DMAX];
    SHARED float Ks[BC * DMAX];
    SHARED float Vs[BC * DVMAX];
    SHARED float S[BR * BC];
    SHARED float P[BR * BC];
    float acc[ACC];

    const int bh = BLOCK_ID_Y();
    const int b = bh / Hq;
    const int h = bh % Hq;
    const int hk = h / (Hq / Hkv);  /* GQA: query head h reads kv head h // (Hq // Hkv) */
    const int tid = THREAD_ID();
    const int r = tid / BC;
    const int c = tid % BC;
    const int q_start = BLOCK_ID_X() * BR;
    const int i = q_start + r;  /* this thread's query row */
    GLOBAL const float* qh = q + (b * Hq + h) * Lq * D;
    GLOBAL const float* kh = k + (b * Hkv + hk) * Lk * D;
    GLOBAL const float* vh = v + (b * Hkv + hk) * Lk * Dv;

#ifdef COUNT_IO
    int io_reads = 0, io_writes = 0;
#endif
    for (int a = 0; a < ACC; ++a) acc[a] = 0.0f;

    /* key tiles that intersect the band [q_start + o - left, q_last + o + right] */
    const int q_last = IMIN(q_start + BR, Lq) - 1;
    const int kv_lo = IMAX(0, q_start + offset - left);
    const int kv_hi = IMIN(Lk, q_last + offset + right + 1); /* exclusive */
    const int tile_lo = kv_lo / BC;
    int tile_hi = (kv_hi + BC - 1) / BC; /* ceil: the last, partial tile counts */
    if (kv_hi <= kv_lo) tile_hi = tile_lo; /* no visible key for the whole tile */

    /* the Q tile, once, if any key tile is visited (rows past Lq are zeros, never written back) */
    if (tile_hi > tile_lo) {
        for (int e = tid; e < BR * D; e += NT) {
            int rr = e / D;
            if (q_start + rr < Lq) {
                Qs[rr * DMAX + e % D] = qh[(q_start + rr) * D + e % D];
                IO_READ(1);
            } else {
                Qs[rr * DMAX + e % D] = 0.0f;
            }
        }
    }

    float m = NEG_INF;
    float l = 0.0f;
    for (int t = tile_lo; t < tile_hi; ++t) {
        const int kv_start = t * BC;
        BARRIER(); /* readers of the previous K/V/S/P tiles are done */
        for (int e = tid; e < BC * D; e += NT) {
            int jj = e / D;
            if (kv_start + jj < Lk) {
                Ks[jj * DMAX + e % D] = kh[(kv_start + jj) * D + e % D];
                IO_READ(1);
            } else {
                Ks[jj * DMAX + e % D] = 0.0f;
            }
        }
        for (int e = tid; e < BC * Dv; e += NT) {
            int jj = e / Dv;
            if (kv_start + jj < Lk) {
                Vs[jj * DVMAX + e % Dv] = vh[(kv_start + jj) * Dv + e % Dv];
                IO_READ(1);
            } else {
                Vs[jj * DVMAX + e % Dv] = 0.0f;
            }
        }
        BARRIER();

        /* one score per thread */
        const int j = kv_start + c;
        const float s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap);
        const int visible = i < Lq && j < Lk && in_band(i, j, offset, left, right);
        S[r * BC + c] = visible ? s : NEG_INF;
        BARRIER();

        /* online softmax, replicated on the BC threads of row r */
        m = online_softmax_tile(S, P, Vs, acc, r, c, m, &l, Dv);
    }

    /* deferred normalisation; out and lse written once */
    if (i < Lq) {
        GLOBAL float* oh = out + ((b * Hq + h) * Lq + i) * Dv;
        for (int a = 0; a < ACC; ++a) {
            const int col = c + a * BC;
            if (col < Dv) {
                oh[col] = (l > 0.0f) ? acc[a] / l : 0.0f;
                IO_WRITE(1);
            }
        }
        if (c == 0) {
            lse[(b * Hq + h) * Lq + i] = (l > 0.0f) ? m + LOGF(l) : NEG_INF;
            IO_WRITE(1);
        }
    }
#ifdef COUNT_IO
    const int gtid = (bh * ((Lq + BR - 1) / BR) + BLOCK_ID_X()) * NT + tid;
    io[2 * gtid] = io_reads;
    io[2 * gtid + 1] = io_writes;
#endif
}
"""

SOURCE = with_prelude(BODY)


def defines(launch) -> dict:
    """Compile-time constants of one kernel variant."""
    return {"BR": launch.block_q, "BC": launch.block_k, "DMAX": launch.d_max, "DVMAX": launch.dv_max}


def run(rt, source: str, q, k, v, out, lse, p, count_io: bool = False):
    """Build (cached) and launch ``flash_forward`` on runtime ``rt``; fills out, lse."""
    import numpy as np

    prog = rt.build(source, {**defines(p), **({"COUNT_IO": 1} if count_io else {})})
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    bufs = [rt.to_device(a) for a in (q, k, v, out, lse)]
    i32, f32 = np.int32, np.float32
    args = bufs + [i32(B), i32(Hq), i32(Hkv), i32(Lq), i32(Lk), i32(D), i32(Dv),
                   f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)]
    grid = ((Lq + p.block_q - 1) // p.block_q, B * Hq)
    if count_io:
        io = np.zeros((grid[0] * grid[1] * p.threads, 2), dtype=np.int32)
        io_buf = rt.to_device(io)
        args.append(io_buf)
    rt.launch(prog, "flash_forward", grid, p.threads, args)
    rt.to_host(bufs[3], out)
    rt.to_host(bufs[4], lse)
    if count_io:
        rt.to_host(io_buf, io)
        return out, lse, {"read": int(io[:, 0].sum()), "written": int(io[:, 1].sum())}
    return out, lse
