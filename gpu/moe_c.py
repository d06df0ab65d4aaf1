"""MoE expert computation in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same five kernels, layouts and names as ``gpu.moe_numba``, whose docstring gives the
formulas (bins by expert, sparse or dense GShard; row(t, j) = offsets[e] + position;
grouped GEMM with the activation fused into its write; y[t] = sum_j g_tj out[row(t, j)]):

  moe_bin_counts    grid (E, 1), NT threads: kept choices per expert (tree reduction);
  moe_bin_offsets   one thread: exclusive prefix sum (or C per bin, dense);
  moe_permute       grid (T k, 1), NT threads: x[t] copied to its row, row_of, row_token;
  moe_grouped_gemm  grid (ceil(rows / BM) + E, ceil(N / BN)), BM BN threads: (expert, row
                    tile) found by walking the offsets, K in BK slices through shared memory;
  moe_combine       grid (T, 1), NT threads: y written once.

Compile-time constants: NT, BM, BN, BK. Integer arrays are ``int``.
"""

from __future__ import annotations

from .dialect import with_prelude

KERNEL_NAMES = ("moe_bin_counts", "moe_bin_offsets", "moe_permute", "moe_grouped_gemm", "moe_combine")
DEFAULT_DEFINES = {"NT": 128, "BM": 16, "BN": 16, "BK": 16}

BODY = r"""
#ifndef NT
#define NT 128
#endif
#ifndef BM
#define BM 16
#endif
#ifndef BN
#define BN 16
#endif
#ifndef BK
#define BK 16
#endif
#define GT (BM * BN)

/* 1. kept choices of expert e = block x */
KERNEL void moe_bin_counts(GLOBAL const int* indices, GLOBAL const int* kept, GLOBAL int* counts, int T, int k)
{
    SHARED int red[NT];
    const int e = BLOCK_ID_X();
    const int tid = THREAD_ID();
    int n = 0;
    for (int a = tid; a < T * k; a += NT)
        if (kept[a] != 0 && indices[a] == e) n += 1;
    red[tid] = n;
    BARRIER();
    for (int stride = NT / 2; stride > 0; stride /= 2) {
        if (tid < stride) red[tid] += red[tid + stride];
        BARRIER();
    }
    if (tid == 0) counts[e] = red[0];
}

/* 2. bin offsets: exclusive prefix sum of the counts, or dense_rows per bin (GShard) */
KERNEL void moe_bin_offsets(GLOBAL const int* counts, GLOBAL int* offsets, int E, int dense_rows)
{
    if (THREAD_ID() != 0 || BLOCK_ID_X() != 0) return;
    offsets[0] = 0;
    for (int e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + (dense_rows >= 0 ? dense_rows : counts[e]);
}

/* 3. the slot assignment: choice a = (t, j) to row offsets[e] + position */
KERNEL void moe_permute(GLOBAL const float* x, GLOBAL const int* indices, GLOBAL const int* position,
                        GLOBAL const int* kept, GLOBAL const int* offsets, GLOBAL float* xp, GLOBAL int* row_of,
                        GLOBAL int* row_token, int k, int D)
{
    const int a = BLOCK_ID_X();
    const int t = a / k;
    const int tid = THREAD_ID();
    int row = -1;
    if (kept[a] != 0) {
        row = offsets[indices[a]] + position[a];
        for (int col = tid; col < D; col += NT) xp[row * D + col] = x[t * D + col];
    }
    if (tid == 0) {
        row_of[a] = row;
        if (row >= 0) row_token[row] = t;
    }
}

/* 4. grouped GEMM over the bins, activation fused: out[r] = act(xp[r] W[e] + b[e]) */
KERNEL void moe_grouped_gemm(GLOBAL const float* xp, GLOBAL const float* w, GLOBAL const float* w2,
                             GLOBAL const float* bias, GLOBAL const int* offsets, GLOBAL float* out,
                             int E, int K, int N, int act)
{
    SHARED float Xs[BM * BK];
    SHARED float Ws[BK * BN];
    SHARED float Us[BK * BN];
    const int tid = THREAD_ID();
    const int r = tid / BN;
    const int c = tid % BN;
    /* this block's (expert, row tile): walk the bins */
    int tile = BLOCK_ID_X();
    int e_blk = -1, row0 = 0, row_end = 0;
    for (int e = 0; e < E; ++e) {
        const int n_tiles = (offsets[e + 1] - offsets[e] + BM - 1) / BM;
        if (e_blk < 0) {
            if (tile < n_tiles) {
                e_blk = e;
                row0 = offsets[e] + tile * BM;
                row_end = offsets[e + 1];
            } else {
                tile -= n_tiles;
            }
        }
    }
    if (e_blk < 0) return; /* past the last tile: the whole block leaves before any barrier */
    const int col0 = BLOCK_ID_Y() * BN;
    GLOBAL const float* we = w + e_blk * K * N;
    GLOBAL const float* ue = w2 + e_blk * K * N;
    float acc = 0.0f, acc2 = 0.0f;
    const int n_kt = (K + BK - 1) / BK;
    for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * BK;
        BARRIER();
        for (int e2 = tid; e2 < BM * BK; e2 += GT) {
            const int rr = e2 / BK, kk = e2 % BK;
            Xs[e2] = (row0 + rr < row_end && k0 + kk < K) ? xp[(row0 + rr) * K + k0 + kk] : 0.0f;
        }
        for (int e2 = tid; e2 < BK * BN; e2 += GT) {
            const int kk = e2 / BN, cc = e2 % BN;
            const int inside = k0 + kk < K && col0 + cc < N;
            Ws[e2] = inside ? we[(k0 + kk) * N + col0 + cc] : 0.0f;
            Us[e2] = (inside && act == 4) ? ue[(k0 + kk) * N + col0 + cc] : 0.0f;
        }
        BARRIER();
        for (int kk = 0; kk < BK; ++kk) {
            acc += Xs[r * BK + kk] * Ws[kk * BN + c];
            if (act == 4) acc2 += Xs[r * BK + kk] * Us[kk * BN + c];
        }
    }
    const int row = row0 + r, col = col0 + c;
    if (row < row_end && col < N) {
        float u = acc;
        if (act != 4) u = u + bias[e_blk * N + col];
        if (act == 1) u = FMAXF(u, 0.0f);
        else if (act == 2) u = u * (0.5f * ERFCF(-u * 0.70710678118654752f)); /* u Phi(u) */
        else if (act == 3) u = u / (1.0f + EXPF(-u));
        else if (act == 4) u = (u / (1.0f + EXPF(-u))) * acc2; /* silu(x Wg) * (x Wu) */
        out[row * N + col] = u;
    }
}

/* 5. gated combine (unpermute): y[t] = sum_j gates[t, j] rows[row_of[t, j]] */
KERNEL void moe_combine(GLOBAL const float* rows, GLOBAL const int* row_of, GLOBAL const float* gates,
                        GLOBAL float* y, int k, int D)
{
    const int t = BLOCK_ID_X();
    for (int col = THREAD_ID(); col < D; col += NT) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j) {
            const int r = row_of[t * k + j];
            if (r >= 0) acc += gates[t * k + j] * rows[r * D + col];
        }
        y[t * D + col] = acc;
    }
}
"""

SOURCE = with_prelude(BODY)


def defines(p) -> dict:
    return {"NT": p.threads, "BM": p.bm, "BN": p.bn, "BK": p.bk}


def run_permute(rt, source, x, indices, position, kept, xp, row_of, row_token, offsets, counts, p):
    import numpy as np

    prog = rt.build(source, defines(p))
    T, k = indices.shape
    E = counts.shape[0]
    i32 = np.int32
    bufs = {n: rt.to_device(a) for n, a in (("x", x), ("indices", indices), ("position", position), ("kept", kept),
                                             ("xp", xp), ("row_of", row_of), ("row_token", row_token),
                                             ("offsets", offsets), ("counts", counts))}
    rt.launch(prog, "moe_bin_counts", (E, 1), p.threads, [bufs["indices"], bufs["kept"], bufs["counts"], i32(T), i32(k)])
    rt.launch(prog, "moe_bin_offsets", (1, 1), 1, [bufs["counts"], bufs["offsets"], i32(E), i32(p.dense_rows)])
    if T * k:
        rt.launch(prog, "moe_permute", (T * k, 1), p.threads,
                  [bufs[n] for n in ("x", "indices", "position", "kept", "offsets", "xp", "row_of", "row_token")]
                  + [i32(k), i32(x.shape[1])])
    for n, a in (("xp", xp), ("row_of", row_of), ("row_token", row_token), ("offsets", offsets), ("counts", counts)):
        rt.to_host(bufs[n], a)


def run_gemm(rt, source, xp, w, w2, bias, offsets, out, act, p):
    import numpy as np

    prog = rt.build(source, defines(p))
    rows, K = xp.shape
    E, N = w.shape[0], w.shape[2]
    i32 = np.int32
    bufs = [rt.to_device(a) for a in (xp, w, w2, bias, offsets, out)]
    grid = ((rows + p.bm - 1) // p.bm + E, (N + p.bn - 1) // p.bn)
    rt.launch(prog, "moe_grouped_gemm", grid, p.bm * p.bn, bufs + [i32(E), i32(K), i32(N), i32(act)])
    rt.to_host(bufs[5], out)


def run_combine(rt, source, rows, row_of, gates, y, p):
    import numpy as np

    prog = rt.build(source, defines(p))
    bufs = [rt.to_device(a) for a in (rows, row_of, gates, y)]
    rt.launch(prog, "moe_combine", (y.shape[0], 1), p.threads, bufs + [np.int32(row_of.shape[1]), np.int32(y.shape[1])])
    rt.to_host(bufs[3], y)
