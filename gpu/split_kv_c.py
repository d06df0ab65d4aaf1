"""Split-KV attention (flash-decoding) in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same two kernels, tiling and names as ``gpu.split_kv_numba``, whose
docstring gives the formulas (per-chunk state (m_c, l_c, out_c) under the full
problem's band; merge m = max m_c, w_c = exp(m_c - m) l_c, out = sum (w_c / l)
out_c, lse = m + log l) and the sources:

  split_kv_partial  grid (ceil(Lq / BR) * S, B * Hq), BR * BC threads; block x =
                    chunk * ceil(Lq / BR) + query tile; key tiles start at the
                    chunk's first key edges[chunk]; keys >= edges[chunk + 1] hidden;
  split_kv_merge    grid (ceil(Lq / NT), B * Hq), one thread per row.

Compile-time constants: BR, BC, DMAX, DVMAX (those of the forward). Partial
arrays: out_c (S, B, Hq, Lq, Dv), m_c and l_c (S, B, Hq, Lq), float32.
"""

from __future__ import annotations

from .dialect import with_prelude
from .tile_c import SCORE_FUNCTIONS, SOFTMAX_FUNCTIONS

KERNEL_NAMES = ("split_kv_partial", "split_kv_merge")

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

/* 1. each chunk's FA2 state under the full problem's band */
""" + SCORE_FUNCTIONS + SOFTMAX_FUNCTIONS + r"""
KERNEL void split_kv_partial(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                             GLOBAL const int* edges, GLOBAL float* out_c, GLOBAL float* m_c, GLOBAL float* l_c,
                             int B, int Hq, int Hkv, int Lq, int Lk, int D, int Dv,
                             float scale, float softcap, int offset, int left, int right)
{
    SHARED float Qs[BR * DMAX];
    SHARED float Ks[BC * DMAX];
    SHARED float Vs[BC * DVMAX];
    SHARED float S[BR * BC];
    SHARED float P[BR * BC];
    float acc[ACC];

    const int n_qt = (Lq + BR - 1) / BR;
    const int chunk = BLOCK_ID_X() / n_qt;
    const int k0 = edges[chunk];
    const int k1 = edges[chunk + 1]; /* this block's keys: [k0, k1) */
    const int bh = BLOCK_ID_Y();
    const int b = bh / Hq;
    const int h = bh % Hq;
    const int hk = h / (Hq / Hkv);
    const int tid = THREAD_ID();
    const int r = tid / BC;
    const int c = tid % BC;
    const int q_start = (BLOCK_ID_X() % n_qt) * BR;
    const int i = q_start + r;
    GLOBAL const float* qh = q + (b * Hq + h) * Lq * D;
    GLOBAL const float* kh = k + (b * Hkv + hk) * Lk * D;
    GLOBAL const float* vh = v + (b * Hkv + hk) * Lk * Dv;
    for (int a = 0; a < ACC; ++a) acc[a] = 0.0f;

    /* the chunk's key tiles (starting at k0) that meet the band */
    const int q_last = IMIN(q_start + BR, Lq) - 1;
    const int kv_lo = IMAX(k0, q_start + offset - left);
    const int kv_hi = IMIN(k1, q_last + offset + right + 1); /* exclusive */
    int tile_lo = 0, tile_hi = 0;
    if (kv_hi > kv_lo) {
        tile_lo = (kv_lo - k0) / BC;
        tile_hi = (kv_hi - k0 + BC - 1) / BC;
    }

    if (tile_hi > tile_lo) {
        for (int e = tid; e < BR * D; e += NT) {
            int rr = e / D;
            Qs[rr * DMAX + e % D] = (q_start + rr < Lq) ? qh[(q_start + rr) * D + e % D] : 0.0f;
        }
    }

    float m = NEG_INF;
    float l = 0.0f;
    for (int t = tile_lo; t < tile_hi; ++t) {
        const int kv_start = k0 + t * BC;
        BARRIER();
        for (int e = tid; e < BC * D; e += NT) {
            int jj = e / D;
            Ks[jj * DMAX + e % D] = (kv_start + jj < k1) ? kh[(kv_start + jj) * D + e % D] : 0.0f;
        }
        for (int e = tid; e < BC * Dv; e += NT) {
            int jj = e / Dv;
            Vs[jj * DVMAX + e % Dv] = (kv_start + jj < k1) ? vh[(kv_start + jj) * Dv + e % Dv] : 0.0f;
        }
        BARRIER();

        const int j = kv_start + c;
        const float s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap);
        const int visible = i < Lq && j < k1 && in_band(i, j, offset, left, right);
        S[r * BC + c] = visible ? s : NEG_INF;
        BARRIER();

        m = online_softmax_tile(S, P, Vs, acc, r, c, m, &l, Dv);
    }

    /* the chunk's state: normalised out_c, m_c, l_c, each written once */
    if (i < Lq) {
        const int row = ((chunk * B + b) * Hq + h) * Lq + i;
        for (int a = 0; a < ACC; ++a) {
            const int col = c + a * BC;
            if (col < Dv) out_c[row * Dv + col] = (l > 0.0f) ? acc[a] / l : 0.0f;
        }
        if (c == 0) {
            m_c[row] = m;
            l_c[row] = l;
        }
    }
}

/* 2. the merge, one thread per (b, h, i) row */
KERNEL void split_kv_merge(GLOBAL const float* out_c, GLOBAL const float* m_c, GLOBAL const float* l_c,
                           GLOBAL float* out, GLOBAL float* lse, int n_chunks, int B, int Hq, int Lq, int Dv)
{
    const int bh = BLOCK_ID_Y();
    const int i = BLOCK_ID_X() * NT + THREAD_ID();
    if (i >= Lq) return;
    const int rows = B * Hq * Lq; /* stride between chunks */
    const int row = bh * Lq + i;
    float m = NEG_INF;
    for (int s = 0; s < n_chunks; ++s) m = FMAXF(m, m_c[s * rows + row]);
    float l = 0.0f;
    if (m > NEG_INF) {
        for (int s = 0; s < n_chunks; ++s)
            if (l_c[s * rows + row] > 0.0f) l += EXPF(m_c[s * rows + row] - m) * l_c[s * rows + row];
    }
    for (int col = 0; col < Dv; ++col) {
        float o = 0.0f;
        if (l > 0.0f) {
            for (int s = 0; s < n_chunks; ++s) {
                if (l_c[s * rows + row] > 0.0f) {
                    const float w = EXPF(m_c[s * rows + row] - m) * l_c[s * rows + row];
                    o += (w / l) * out_c[(s * rows + row) * Dv + col];
                }
            }
        }
        out[row * Dv + col] = o;
    }
    lse[row] = (l > 0.0f) ? m + LOGF(l) : NEG_INF;
}
"""

SOURCE = with_prelude(BODY)


def defines(launch) -> dict:
    """Compile-time constants of one kernel variant (the forward's)."""
    return {"BR": launch.block_q, "BC": launch.block_k, "DMAX": launch.d_max, "DVMAX": launch.dv_max}


def run(rt, source: str, q, k, v, edges, out, lse, p):
    """Build (cached) and launch both kernels on runtime ``rt``; fills out, lse."""
    import numpy as np

    prog = rt.build(source, defines(p))
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    n_chunks = edges.shape[0] - 1
    NT = p.threads
    i32, f32 = np.int32, np.float32
    d_q, d_k, d_v, d_e, d_out, d_lse = (rt.to_device(a) for a in (q, k, v, edges, out, lse))
    out_c = rt.to_device(np.full((n_chunks, B, Hq, Lq, Dv), np.nan, dtype=np.float32))
    m_c = rt.to_device(np.full((n_chunks, B, Hq, Lq), np.nan, dtype=np.float32))
    l_c = rt.to_device(np.full((n_chunks, B, Hq, Lq), np.nan, dtype=np.float32))
    n_qt = (Lq + p.block_q - 1) // p.block_q
    rt.launch(prog, "split_kv_partial", (n_qt * n_chunks, B * Hq), NT,
              [d_q, d_k, d_v, d_e, out_c, m_c, l_c, i32(B), i32(Hq), i32(Hkv), i32(Lq), i32(Lk), i32(D), i32(Dv),
               f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)])
    rt.launch(prog, "split_kv_merge", ((Lq + NT - 1) // NT, B * Hq), NT,
              [out_c, m_c, l_c, d_out, d_lse, i32(n_chunks), i32(B), i32(Hq), i32(Lq), i32(Dv)])
    rt.to_host(d_out, out)
    rt.to_host(d_lse, lse)
    return out, lse
