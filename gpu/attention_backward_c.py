"""FlashAttention-2 backward in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same three kernels, tiling, barriers and variable names as
``gpu.attention_backward_numba``, whose docstring gives the formulas
(D = rowsum(dO * O), P = exp(S - lse) recomputed per tile, dS = P (dP - D),
the softcap factor sech^2(R / c), dV = P^T dO, dK = scale dR^T Q summed over the group,
dQ = scale dR K), the shared-memory budget and the I/O:

  flash_backward_dot   grid (ceil(Lq / NT), B * Hq), one thread per row;
  flash_backward_dkdv  grid (ceil(Lk / BC), B * Hkv), K/V outer, thread
                       (r, c) = (tid % BR, tid / BR); no atomics: one block owns
                       a key tile's dK, dV for all G query heads of its kv head;
  flash_backward_dq    grid (ceil(Lq / BR), B * Hq), Q outer, thread
                       (r, c) = (tid / BC, tid % BC).

Compile-time constants: BR, BC, DMAX, DVMAX (``-D`` flags, the forward's).
Arrays are float32, C-contiguous, (B, H, L, D) flattened; indices are 32-bit.
"""

from __future__ import annotations

from .dialect import with_prelude
from .tile_c import SCORE_FUNCTIONS

KERNEL_NAMES = ("flash_backward_dot", "flash_backward_dkdv", "flash_backward_dq")

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
#define AK ((DMAX + BR - 1) / BR)
#define AV ((DVMAX + BR - 1) / BR)
#define AQ ((DMAX + BC - 1) / BC)

""" + SCORE_FUNCTIONS + r"""
/* 1. delta = rowsum(dO * O), one thread per row */
KERNEL void flash_backward_dot(GLOBAL const float* out, GLOBAL const float* dout, GLOBAL float* delta,
                               int B, int Hq, int Lq, int Dv)
{
    const int bh = BLOCK_ID_Y();
    const int i = BLOCK_ID_X() * NT + THREAD_ID();
    if (i >= Lq) return;
    GLOBAL const float* o = out + (bh * Lq + i) * Dv;
    GLOBAL const float* g = dout + (bh * Lq + i) * Dv;
    float s = 0.0f;
    for (int d = 0; d < Dv; ++d) s += g[d] * o[d];
    delta[bh * Lq + i] = s;
}

/* the (P, dR) entry of query row i (tile row r of Qs), key row j (tile row c of Ks); rows dOrow, Vrow */
#define SCORE_GRADIENT(DOROW, VROW, LSE_I, DELTA_I)                                               \
    {                                                                                              \
        float s = tile_score(Qs, Ks, r, c, D, scale);                                              \
        const float tp = softcap_slope(s, softcap); /* d S / d R: 1, or sech^2(R / c) */           \
        s = softcapped(s, softcap);                                                                \
        const int visible = i < Lq && j < Lk && in_band(i, j, offset, left, right);                \
        p = 0.0f;                                                                                  \
        ds = 0.0f;                                                                                 \
        if (visible && (LSE_I) > NEG_INF) {                                                        \
            p = EXPF(s - (LSE_I));                                                                 \
            float dp = 0.0f;                                                                       \
            for (int d = 0; d < Dv; ++d) dp += (DOROW)[d] * (VROW)[d];                             \
            ds = p * (dp - (DELTA_I));                                                             \
            ds = ds * tp;                                                                          \
        }                                                                                          \
    }

/* 2. dK, dV: K/V outer, all G query heads of the kv head in one block */
KERNEL void flash_backward_dkdv(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                                GLOBAL const float* dout, GLOBAL const float* lse, GLOBAL const float* delta,
                                GLOBAL float* dk, GLOBAL float* dv,
                                int B, int Hq, int Hkv, int Lq, int Lk, int D, int Dv,
                                float scale, float softcap, int offset, int left, int right)
{
    SHARED float Qs[BR * DMAX];
    SHARED float dOs[BR * DVMAX];
    SHARED float Ks[BC * DMAX];
    SHARED float Vs[BC * DVMAX];
    SHARED float P[BR * BC];
    SHARED float dR[BR * BC];
    SHARED float Ls[BR];
    SHARED float Ds[BR];
    float dk_acc[AK];
    float dv_acc[AV];

    const int group = Hq / Hkv;
    const int bh = BLOCK_ID_Y();
    const int b = bh / Hkv;
    const int hk = bh % Hkv;
    const int tid = THREAD_ID();
    const int r = tid % BR;
    const int c = tid / BR;
    const int kv_start = BLOCK_ID_X() * BC;
    const int j = kv_start + c; /* this thread's key row */
    GLOBAL const float* kh = k + (b * Hkv + hk) * Lk * D;
    GLOBAL const float* vh = v + (b * Hkv + hk) * Lk * Dv;
    for (int a = 0; a < AK; ++a) dk_acc[a] = 0.0f;
    for (int a = 0; a < AV; ++a) dv_acc[a] = 0.0f;

    /* the K/V tile, once (rows past Lk are zeros, never written back) */
    for (int e = tid; e < BC * D; e += NT) {
        int jj = e / D;
        Ks[jj * DMAX + e % D] = (kv_start + jj < Lk) ? kh[(kv_start + jj) * D + e % D] : 0.0f;
    }
    for (int e = tid; e < BC * Dv; e += NT) {
        int jj = e / Dv;
        Vs[jj * DVMAX + e % Dv] = (kv_start + jj < Lk) ? vh[(kv_start + jj) * Dv + e % Dv] : 0.0f;
    }

    /* query tiles that intersect the band: j - o - right <= i <= j - o + left */
    const int kv_last = IMIN(kv_start + BC, Lk) - 1;
    const int q_lo = IMAX(0, kv_start - offset - right);
    const int q_hi = IMIN(Lq, kv_last - offset + left + 1); /* exclusive */
    const int tile_lo = q_lo / BR;
    int tile_hi = (q_hi + BR - 1) / BR;
    if (q_hi <= q_lo) tile_hi = tile_lo;

    for (int g = 0; g < group; ++g) {
        const int h = hk * group + g; /* the G query heads that read kv head hk */
        GLOBAL const float* qh = q + (b * Hq + h) * Lq * D;
        GLOBAL const float* doh = dout + (b * Hq + h) * Lq * Dv;
        for (int t = tile_lo; t < tile_hi; ++t) {
            const int q_start = t * BR;
            BARRIER(); /* readers of the previous Q/dO/P/dR tiles are done */
            for (int e = tid; e < BR * D; e += NT) {
                int rr = e / D;
                Qs[rr * DMAX + e % D] = (q_start + rr < Lq) ? qh[(q_start + rr) * D + e % D] : 0.0f;
            }
            for (int e = tid; e < BR * Dv; e += NT) {
                int rr = e / Dv;
                dOs[rr * DVMAX + e % Dv] = (q_start + rr < Lq) ? doh[(q_start + rr) * Dv + e % Dv] : 0.0f;
            }
            if (tid < BR) {
                const int inside = q_start + tid < Lq;
                Ls[tid] = inside ? lse[(b * Hq + h) * Lq + q_start + tid] : NEG_INF;
                Ds[tid] = inside ? delta[(b * Hq + h) * Lq + q_start + tid] : 0.0f;
            }
            BARRIER();

            /* one (P, dR) entry per thread, the scores recomputed */
            const int i = q_start + r;
            float p, ds;
            SCORE_GRADIENT(dOs + r * DVMAX, Vs + c * DVMAX, Ls[r], Ds[r])
            P[r * BC + c] = p;
            dR[r * BC + c] = ds;
            BARRIER();

            /* dV[c] += P[:, c]^T dO,  dK[c] += dR[:, c]^T Q   (columns r, r + BR, ...) */
            for (int a = 0; a < AV; ++a) {
                const int col = r + a * BR;
                if (col < Dv) {
                    float acc = 0.0f;
                    for (int rr = 0; rr < BR; ++rr) acc += P[rr * BC + c] * dOs[rr * DVMAX + col];
                    dv_acc[a] += acc;
                }
            }
            for (int a = 0; a < AK; ++a) {
                const int col = r + a * BR;
                if (col < D) {
                    float acc = 0.0f;
                    for (int rr = 0; rr < BR; ++rr) acc += dR[rr * BC + c] * Qs[rr * DMAX + col];
                    dk_acc[a] += acc;
                }
            }
        }
    }

    /* dK, dV written once (the whole group summed in this block) */
    if (j < Lk) {
        GLOBAL float* dkr = dk + ((b * Hkv + hk) * Lk + j) * D;
        GLOBAL float* dvr = dv + ((b * Hkv + hk) * Lk + j) * Dv;
        for (int a = 0; a < AK; ++a) {
            const int col = r + a * BR;
            if (col < D) dkr[col] = scale * dk_acc[a];
        }
        for (int a = 0; a < AV; ++a) {
            const int col = r + a * BR;
            if (col < Dv) dvr[col] = dv_acc[a];
        }
    }
}

/* 3. dQ: Q outer, like the forward */
KERNEL void flash_backward_dq(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                              GLOBAL const float* dout, GLOBAL const float* lse, GLOBAL const float* delta,
                              GLOBAL float* dq,
                              int B, int Hq, int Hkv, int Lq, int Lk, int D, int Dv,
                              float scale, float softcap, int offset, int left, int right)
{
    SHARED float Qs[BR * DMAX];
    SHARED float dOs[BR * DVMAX];
    SHARED float Ks[BC * DMAX];
    SHARED float Vs[BC * DVMAX];
    SHARED float dR[BR * BC];
    SHARED float Ls[BR];
    SHARED float Ds[BR];
    float dq_acc[AQ];

    const int bh = BLOCK_ID_Y();
    const int b = bh / Hq;
    const int h = bh % Hq;
    const int hk = h / (Hq / Hkv);
    const int tid = THREAD_ID();
    const int r = tid / BC;
    const int c = tid % BC;
    const int q_start = BLOCK_ID_X() * BR;
    const int i = q_start + r;
    GLOBAL const float* qh = q + (b * Hq + h) * Lq * D;
    GLOBAL const float* doh = dout + (b * Hq + h) * Lq * Dv;
    GLOBAL const float* kh = k + (b * Hkv + hk) * Lk * D;
    GLOBAL const float* vh = v + (b * Hkv + hk) * Lk * Dv;
    for (int a = 0; a < AQ; ++a) dq_acc[a] = 0.0f;

    for (int e = tid; e < BR * D; e += NT) {
        int rr = e / D;
        Qs[rr * DMAX + e % D] = (q_start + rr < Lq) ? qh[(q_start + rr) * D + e % D] : 0.0f;
    }
    for (int e = tid; e < BR * Dv; e += NT) {
        int rr = e / Dv;
        dOs[rr * DVMAX + e % Dv] = (q_start + rr < Lq) ? doh[(q_start + rr) * Dv + e % Dv] : 0.0f;
    }
    if (tid < BR) {
        const int inside = q_start + tid < Lq;
        Ls[tid] = inside ? lse[bh * Lq + q_start + tid] : NEG_INF;
        Ds[tid] = inside ? delta[bh * Lq + q_start + tid] : 0.0f;
    }

    /* key tiles that intersect the band [q_start + o - left, q_last + o + right] */
    const int q_last = IMIN(q_start + BR, Lq) - 1;
    const int kv_lo = IMAX(0, q_start + offset - left);
    const int kv_hi = IMIN(Lk, q_last + offset + right + 1);
    const int tile_lo = kv_lo / BC;
    int tile_hi = (kv_hi + BC - 1) / BC;
    if (kv_hi <= kv_lo) tile_hi = tile_lo;

    for (int t = tile_lo; t < tile_hi; ++t) {
        const int kv_start = t * BC;
        BARRIER(); /* readers of the previous K/V/dR tiles are done (and the Q tile is loaded) */
        for (int e = tid; e < BC * D; e += NT) {
            int jj = e / D;
            Ks[jj * DMAX + e % D] = (kv_start + jj < Lk) ? kh[(kv_start + jj) * D + e % D] : 0.0f;
        }
        for (int e = tid; e < BC * Dv; e += NT) {
            int jj = e / Dv;
            Vs[jj * DVMAX + e % Dv] = (kv_start + jj < Lk) ? vh[(kv_start + jj) * Dv + e % Dv] : 0.0f;
        }
        BARRIER();

        const int j = kv_start + c;
        float p, ds;
        SCORE_GRADIENT(dOs + r * DVMAX, Vs + c * DVMAX, Ls[r], Ds[r])
        dR[r * BC + c] = ds;
        BARRIER();

        /* dQ[r] += dR[r, :] K   (columns c, c + BC, ...) */
        for (int a = 0; a < AQ; ++a) {
            const int col = c + a * BC;
            if (col < D) {
                float acc = 0.0f;
                for (int cc = 0; cc < BC; ++cc) acc += dR[r * BC + cc] * Ks[cc * DMAX + col];
                dq_acc[a] += acc;
            }
        }
    }

    if (i < Lq) {
        GLOBAL float* dqr = dq + (bh * Lq + i) * D;
        for (int a = 0; a < AQ; ++a) {
            const int col = c + a * BC;
            if (col < D) dqr[col] = scale * dq_acc[a];
        }
    }
}
"""

SOURCE = with_prelude(BODY)


def defines(launch) -> dict:
    """Compile-time constants of one kernel variant (the forward's)."""
    return {"BR": launch.block_q, "BC": launch.block_k, "DMAX": launch.d_max, "DVMAX": launch.dv_max}


def run(rt, source: str, q, k, v, out, lse, dout, dq, dk, dv, p):
    """Build (cached) and launch the three backward kernels on runtime ``rt``; fills dq, dk, dv."""
    import numpy as np

    prog = rt.build(source, defines(p))
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    NT = p.threads
    i32, f32 = np.int32, np.float32
    d_q, d_k, d_v, d_out, d_lse, d_do = (rt.to_device(a) for a in (q, k, v, out, lse, dout))
    delta = rt.to_device(np.full((B, Hq, Lq), np.nan, dtype=np.float32))
    d_dq, d_dk, d_dv = (rt.to_device(a) for a in (dq, dk, dv))
    rt.launch(prog, "flash_backward_dot", ((Lq + NT - 1) // NT, B * Hq), NT,
              [d_out, d_do, delta, i32(B), i32(Hq), i32(Lq), i32(Dv)])
    sizes = [i32(B), i32(Hq), i32(Hkv), i32(Lq), i32(Lk), i32(D), i32(Dv),
             f32(p.scale), f32(p.softcap), i32(p.offset), i32(p.left), i32(p.right)]
    rt.launch(prog, "flash_backward_dkdv", ((Lk + p.block_k - 1) // p.block_k, B * Hkv), NT,
              [d_q, d_k, d_v, d_do, d_lse, delta, d_dk, d_dv] + sizes)
    rt.launch(prog, "flash_backward_dq", ((Lq + p.block_q - 1) // p.block_q, B * Hq), NT,
              [d_q, d_k, d_v, d_do, d_lse, delta, d_dq] + sizes)
    rt.to_host(d_dq, dq)
    rt.to_host(d_dk, dk)
    rt.to_host(d_dv, dv)
    return dq, dk, dv
