"""Paged-KV decode attention in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same kernel, tiling and names as ``gpu.paged_numba``, whose docstring gives the
formula (bottom-right causal attention of a step's n queries over sequence b's len_b
cached tokens, token j in block ``table[b, j / bs]`` at offset ``j % bs``, an optional
window's left side) and the sources (vLLM ``paged_attention_kernel``):

  paged_attention  grid (ceil(n / BR), B * Hq), BR * BC threads; K/V tiles gathered
                   through the block table into shared memory; out and lse written once.

Compile-time constants: BR, BC, DMAX, DVMAX. Arguments: q (B, Hq, n, D), k_pool
(NB, Hkv, bs, D), v_pool (NB, Hkv, bs, Dv), block_table (B, MB) int, seq_lens (B,) int,
out, lse; the sizes; scale, softcap (0 = off), left, block_size.
"""

from __future__ import annotations

from .dialect import with_prelude
from .tile_c import SCORE_FUNCTIONS, SOFTMAX_FUNCTIONS

KERNEL_NAMES = ("paged_attention",)

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

""" + SCORE_FUNCTIONS + SOFTMAX_FUNCTIONS + r"""
KERNEL void paged_attention(GLOBAL const float* q, GLOBAL const float* k_pool, GLOBAL const float* v_pool,
                            GLOBAL const int* block_table, GLOBAL const int* seq_lens,
                            GLOBAL float* out, GLOBAL float* lse,
                            int B, int Hq, int Hkv, int n, int D, int Dv, int MB, int bs,
                            float scale, float softcap, int left)
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
    const int hk = h / (Hq / Hkv);
    const int tid = THREAD_ID();
    const int r = tid / BC;
    const int c = tid % BC;
    const int q_start = BLOCK_ID_X() * BR;
    const int i = q_start + r;
    const int Lk = seq_lens[b];   /* this sequence's keys */
    const int offset = Lk - n;    /* bottom-right: query i is token Lk - n + i */
    const int nblk = (Lk + bs - 1) / bs;
    GLOBAL const int* table = block_table + b * MB;
    GLOBAL const float* qh = q + (b * Hq + h) * n * D;
    for (int a = 0; a < ACC; ++a) acc[a] = 0.0f;

    const int q_last = IMIN(q_start + BR, n) - 1;
    const int kv_lo = IMAX(0, q_start + offset - left);
    const int kv_hi = IMIN(Lk, q_last + offset + 1); /* causal: nothing right of the diagonal */
    const int tile_lo = kv_lo / BC;
    int tile_hi = (kv_hi + BC - 1) / BC;
    if (kv_hi <= kv_lo) tile_hi = tile_lo;

    if (tile_hi > tile_lo) {
        for (int e = tid; e < BR * D; e += NT) {
            int rr = e / D;
            Qs[rr * DMAX + e % D] = (q_start + rr < n) ? qh[(q_start + rr) * D + e % D] : 0.0f;
        }
    }

    float m = NEG_INF;
    float l = 0.0f;
    for (int t = tile_lo; t < tile_hi; ++t) {
        const int kv_start = t * BC;
        BARRIER();
        /* gather the tile through the block table */
        for (int e = tid; e < BC * D; e += NT) {
            const int jj = e / D;
            const int j = kv_start + jj;
            if (j < Lk) {
                const int blk = table[IMIN(j / bs, nblk - 1)];
                Ks[jj * DMAX + e % D] = k_pool[((blk * Hkv + hk) * bs + j % bs) * D + e % D];
            } else {
                Ks[jj * DMAX + e % D] = 0.0f;
            }
        }
        for (int e = tid; e < BC * Dv; e += NT) {
            const int jj = e / Dv;
            const int j = kv_start + jj;
            if (j < Lk) {
                const int blk = table[IMIN(j / bs, nblk - 1)];
                Vs[jj * DVMAX + e % Dv] = v_pool[((blk * Hkv + hk) * bs + j % bs) * Dv + e % Dv];
            } else {
                Vs[jj * DVMAX + e % Dv] = 0.0f;
            }
        }
        BARRIER();

        const int j = kv_start + c;
        const float s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap);
        const int visible = i < n && j < Lk && in_band(i, j, offset, left, 0);
        S[r * BC + c] = visible ? s : NEG_INF;
        BARRIER();

        m = online_softmax_tile(S, P, Vs, acc, r, c, m, &l, Dv);
    }

    if (i < n) {
        GLOBAL float* oh = out + ((b * Hq + h) * n + i) * Dv;
        for (int a = 0; a < ACC; ++a) {
            const int col = c + a * BC;
            if (col < Dv) oh[col] = (l > 0.0f) ? acc[a] / l : 0.0f;
        }
        if (c == 0) lse[(b * Hq + h) * n + i] = (l > 0.0f) ? m + LOGF(l) : NEG_INF;
    }
}
"""

SOURCE = with_prelude(BODY)


def defines(launch) -> dict:
    return {"BR": launch.block_q, "BC": launch.block_k, "DMAX": launch.d_max, "DVMAX": launch.dv_max}


def run(rt, source: str, q, k_pool, v_pool, block_table, seq_lens, out, lse, p):
    """Build (cached) and launch ``paged_attention`` on runtime ``rt``; fills out, lse."""
    import numpy as np

    prog = rt.build(source, defines(p))
    B, Hq, n, D = q.shape
    Hkv, bs, Dv = k_pool.shape[1], k_pool.shape[2], v_pool.shape[3]
    i32, f32 = np.int32, np.float32
    bufs = [rt.to_device(a) for a in (q, k_pool, v_pool, block_table, seq_lens, out, lse)]
    rt.launch(prog, "paged_attention", ((n + p.block_q - 1) // p.block_q, B * Hq), p.threads,
              bufs + [i32(B), i32(Hq), i32(Hkv), i32(n), i32(D), i32(Dv), i32(block_table.shape[1]), i32(bs),
                      f32(p.scale), f32(p.softcap), i32(p.left)])
    rt.to_host(bufs[5], out)
    rt.to_host(bufs[6], lse)
    return out, lse
