"""Linear-time mixer kernels in the neutral dialect (CUDA C for CuPy/NVRTC, OpenCL C for PoCL).

The same algorithms, launch shapes, barriers and variable names as ``gpu.mixers_numba``, whose
docstring gives the formulas, the tiling, the shared-memory budget and the I/O count:

  * ``selective_scan``: one thread per channel (b, h, p), sequential over L, the state x
    (NMAX floats) in registers; grid ``(ceil(P / BLOCK), B * H)``, BLOCK threads, no barrier.
  * ``gla_forward``: chunked gated linear attention, grid ``(ceil(V / BV), B * H)``, NT threads;
    the state tile S (K x BV) in shared memory across chunks, the chunk's Q, K, cumulative gates
    (BT x KMAX), V (BT x BV) and the masked intra-chunk product Att (BT x BT) staged there.
  * ``delta_forward``: the chunked (gated) delta rule in UT form, the same grid and state tile;
    the unit lower-triangular system solved by forward substitution, one thread per value column.

Compile-time constants (``-D``): BLOCK, NMAX (scan); BT, BV, KMAX, NT (GLA, delta rule). Arrays are float32,
C-contiguous, flattened; sizes are passed as ints (32-bit indices: the facade rejects arrays of
2^31 elements or more). An absent D / z / initial state is a flag 0 and a 1-element placeholder.
"""

from __future__ import annotations

import numpy as np

from .dialect import with_prelude

KERNEL_NAMES = ("selective_scan", "gla_forward", "delta_forward")

BODY = r"""
#ifndef BLOCK
#define BLOCK 64
#endif
#ifndef NMAX
#define NMAX 16
#endif
#ifndef BT
#define BT 16
#endif
#ifndef BV
#define BV 16
#endif
#ifndef KMAX
#define KMAX 64
#endif
#ifndef NT
#define NT 128
#endif
#define G_FLOOR (-800.0f)

KERNEL void selective_scan(GLOBAL const float* u, GLOBAL const float* delta, GLOBAL const float* A,
                           GLOBAL const float* Bm, GLOBAL const float* Cm, GLOBAL const float* Dskip,
                           GLOBAL const float* z, GLOBAL const float* x0,
                           GLOBAL float* out, GLOBAL float* last,
                           int Bn, int H, int L, int P, int N, int G, int has_d, int has_z, int has_x0)
{
    const int bh = BLOCK_ID_Y();
    const int b = bh / H;
    const int h = bh % H;
    const int grp = h / (H / G);  /* head h reads group h // (H / G) */
    const int p = BLOCK_ID_X() * BLOCK + THREAD_ID();
    if (p >= P) return;  /* no barrier in this kernel: idle threads may leave */
    float x[NMAX];
    /* loops over the state run to the constant NMAX (unrolled), so x is indexed by constants
       and lives in registers; n < N guards the entries past N */
#pragma unroll
    for (int n = 0; n < NMAX; ++n) x[n] = (has_x0 && n < N) ? x0[((b * H + h) * P + p) * N + n] : 0.0f;
    const float dskip = has_d ? Dskip[h * P + p] : 0.0f;
    GLOBAL const float* An = A + (h * P + p) * N;
    for (int t = 0; t < L; ++t) {
        const int row = ((b * H + h) * L + t) * P + p;
        const float dt = delta[row];
        const float ut = u[row];
        const float dtu = dt * ut;
        GLOBAL const float* Bt = Bm + ((b * G + grp) * L + t) * N;
        GLOBAL const float* Ct = Cm + ((b * G + grp) * L + t) * N;
        float y = 0.0f;
#pragma unroll
        for (int n = 0; n < NMAX; ++n) {
            if (n < N) {
                x[n] = EXPF(dt * An[n]) * x[n] + dtu * Bt[n];
                y += Ct[n] * x[n];
            }
        }
        y += dskip * ut;
        if (has_z) {
            const float zt = z[row];
            y = y * (zt / (1.0f + EXPF(-zt)));
        }
        out[row] = y;
    }
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
        if (n < N) last[((b * H + h) * P + p) * N + n] = x[n];
}

KERNEL void gla_forward(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                        GLOBAL const float* g, GLOBAL const float* s0, GLOBAL float* o, GLOBAL float* sT,
                        int Bn, int H, int L, int K, int V, int GK, float scale)
{
    SHARED float Qs[BT * KMAX];
    SHARED float Ks[BT * KMAX];
    SHARED float Gc[BT * KMAX];
    SHARED float Vs[BT * BV];
    SHARED float Att[BT * BT];
    SHARED float S[KMAX * BV];

    const int bh = BLOCK_ID_Y();
    const int v0 = BLOCK_ID_X() * BV;
    const int tid = THREAD_ID();
    GLOBAL const float* qh = q + bh * L * K;
    GLOBAL const float* kh = k + bh * L * K;
    GLOBAL const float* vh = v + bh * L * V;
    GLOBAL const float* gh = g + bh * L * GK;
    GLOBAL float* oh = o + bh * L * V;

    for (int e = tid; e < K * BV; e += NT) {  /* the state carried in */
        const int c = e / BV, j = e % BV;
        S[c * BV + j] = (v0 + j < V) ? s0[(bh * K + c) * V + v0 + j] : 0.0f;
    }

    const int n_chunks = (L + BT - 1) / BT;
    for (int ch = 0; ch < n_chunks; ++ch) {
        const int a = ch * BT;
        const int n = IMIN(BT, L - a);  /* tokens in this chunk (the last may be partial) */
        BARRIER(); /* readers of the previous chunk's tiles are done */
        for (int e = tid; e < BT * K; e += NT) {
            const int i = e / K, c = e % K;
            if (i < n) {
                Qs[i * KMAX + c] = qh[(a + i) * K + c];
                Ks[i * KMAX + c] = kh[(a + i) * K + c];
                Gc[i * KMAX + c] = FMAXF(gh[(a + i) * GK + (GK > 1 ? c : 0)], G_FLOOR);
            } else {
                Qs[i * KMAX + c] = 0.0f;
                Ks[i * KMAX + c] = 0.0f;
                Gc[i * KMAX + c] = 0.0f;
            }
        }
        for (int e = tid; e < BT * BV; e += NT) {
            const int i = e / BV, j = e % BV;
            Vs[i * BV + j] = (i < n && v0 + j < V) ? vh[(a + i) * V + v0 + j] : 0.0f;
        }
        BARRIER();

        /* cumulative log-gate inside the chunk, one thread per key channel */
        for (int c = tid; c < K; c += NT) {
            float acc = 0.0f;
            for (int i = 0; i < n; ++i) {
                acc += Gc[i * KMAX + c];
                Gc[i * KMAX + c] = acc;
            }
        }
        BARRIER();

        /* intra-chunk masked product */
        for (int e = tid; e < BT * BT; e += NT) {
            const int i = e / BT, j = e % BT;
            float s = 0.0f;
            if (j <= i && i < n) {
                for (int c = 0; c < K; ++c)
                    s += Qs[i * KMAX + c] * Ks[j * KMAX + c] * EXPF(Gc[i * KMAX + c] - Gc[j * KMAX + c]);
            }
            Att[i * BT + j] = s * scale;
        }
        BARRIER();

        /* outputs: the carried state's read plus the intra-chunk part */
        for (int e = tid; e < BT * BV; e += NT) {
            const int i = e / BV, j = e % BV;
            if (i < n && v0 + j < V) {
                float inter = 0.0f;
                for (int c = 0; c < K; ++c) inter += Qs[i * KMAX + c] * EXPF(Gc[i * KMAX + c]) * S[c * BV + j];
                float acc = inter * scale;
                for (int jj = 0; jj <= i; ++jj) acc += Att[i * BT + jj] * Vs[jj * BV + j];
                oh[(a + i) * V + v0 + j] = acc;
            }
        }
        BARRIER();

        /* inter-chunk carry: each thread owns its (c, j) entries of S */
        for (int e = tid; e < K * BV; e += NT) {
            const int c = e / BV, j = e % BV;
            const float g_last = Gc[(n - 1) * KMAX + c];
            float acc = EXPF(g_last) * S[c * BV + j];
            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - Gc[jj * KMAX + c]) * Vs[jj * BV + j];
            S[c * BV + j] = acc;
        }
    }

    BARRIER();
    for (int e = tid; e < K * BV; e += NT) {
        const int c = e / BV, j = e % BV;
        if (v0 + j < V) sT[(bh * K + c) * V + v0 + j] = S[c * BV + j];
    }
}

KERNEL void delta_forward(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v,
                          GLOBAL const float* beta, GLOBAL const float* g, GLOBAL const float* s0,
                          GLOBAL float* o, GLOBAL float* sT, int Bn, int H, int L, int K, int V, float scale)
{
    SHARED float Qs[BT * KMAX];
    SHARED float Ks[BT * KMAX];
    SHARED float U[BT * BV];  /* v, then the right-hand side, then u */
    SHARED float KK[BT * BT];
    SHARED float QK[BT * BT];
    SHARED float S[KMAX * BV];
    SHARED float gam[BT];
    SHARED float bet[BT];

    const int bh = BLOCK_ID_Y();
    const int v0 = BLOCK_ID_X() * BV;
    const int tid = THREAD_ID();
    GLOBAL const float* qh = q + bh * L * K;
    GLOBAL const float* kh = k + bh * L * K;
    GLOBAL const float* vh = v + bh * L * V;
    GLOBAL float* oh = o + bh * L * V;

    for (int e = tid; e < K * BV; e += NT) {  /* the state carried in */
        const int c = e / BV, j = e % BV;
        S[c * BV + j] = (v0 + j < V) ? s0[(bh * K + c) * V + v0 + j] : 0.0f;
    }

    const int n_chunks = (L + BT - 1) / BT;
    for (int ch = 0; ch < n_chunks; ++ch) {
        const int a = ch * BT;
        const int n = IMIN(BT, L - a);
        BARRIER(); /* readers of the previous chunk's tiles are done */
        for (int e = tid; e < BT * K; e += NT) {
            const int i = e / K, c = e % K;
            Qs[i * KMAX + c] = (i < n) ? qh[(a + i) * K + c] : 0.0f;
            Ks[i * KMAX + c] = (i < n) ? kh[(a + i) * K + c] : 0.0f;
        }
        for (int e = tid; e < BT * BV; e += NT) {
            const int i = e / BV, j = e % BV;
            U[i * BV + j] = (i < n && v0 + j < V) ? vh[(a + i) * V + v0 + j] : 0.0f;
        }
        if (tid == 0) {  /* cumulative log-gate inside the chunk */
            float acc = 0.0f;
            for (int i = 0; i < BT; ++i) {
                if (i < n) {
                    acc += FMAXF(g[bh * L + a + i], G_FLOOR);
                    bet[i] = beta[bh * L + a + i];
                } else {
                    bet[i] = 0.0f;
                }
                gam[i] = acc;
            }
        }
        BARRIER();

        /* KK_ij = (k_i . k_j) exp(gam_i - gam_j), j < i;  QK_ij = (q_i . k_j) exp(gam_i - gam_j), j <= i */
        for (int e = tid; e < BT * BT; e += NT) {
            const int i = e / BT, j = e % BT;
            float kk = 0.0f, qk = 0.0f;
            if (j <= i && i < n) {
                for (int c = 0; c < K; ++c) {
                    kk += Ks[i * KMAX + c] * Ks[j * KMAX + c];
                    qk += Qs[i * KMAX + c] * Ks[j * KMAX + c];
                }
                const float d = EXPF(gam[i] - gam[j]);
                kk = kk * d;
                qk = qk * d;
            }
            KK[i * BT + j] = (j < i) ? kk : 0.0f;
            QK[i * BT + j] = qk;
        }
        /* right-hand side beta_i (v_i - exp(gam_i) k_i^T S), in place of v */
        for (int e = tid; e < BT * BV; e += NT) {
            const int i = e / BV, j = e % BV;
            float ks = 0.0f;
            for (int c = 0; c < K; ++c) ks += Ks[i * KMAX + c] * S[c * BV + j];
            U[i * BV + j] = bet[i] * (U[i * BV + j] - EXPF(gam[i]) * ks);
        }
        BARRIER();

        /* the UT system (I + strict_tril(diag(beta) KK)) U = rhs: forward substitution, one
           thread per value column (columns are independent) */
        for (int j = tid; j < BV; j += NT) {
            for (int i = 1; i < n; ++i) {
                float acc = 0.0f;
                for (int jj = 0; jj < i; ++jj) acc += KK[i * BT + jj] * U[jj * BV + j];
                U[i * BV + j] = U[i * BV + j] - bet[i] * acc;
            }
        }
        BARRIER();

        /* outputs: scale (exp(gam_i) q_i^T S + sum_{j <= i} QK_ij u_j) */
        for (int e = tid; e < BT * BV; e += NT) {
            const int i = e / BV, j = e % BV;
            if (i < n && v0 + j < V) {
                float inter = 0.0f;
                for (int c = 0; c < K; ++c) inter += Qs[i * KMAX + c] * S[c * BV + j];
                float acc = EXPF(gam[i]) * inter;
                for (int jj = 0; jj <= i; ++jj) acc += QK[i * BT + jj] * U[jj * BV + j];
                oh[(a + i) * V + v0 + j] = acc * scale;
            }
        }
        BARRIER();

        /* inter-chunk carry: S <- exp(gam_last) S + sum_j k_j exp(gam_last - gam_j) u_j^T */
        for (int e = tid; e < K * BV; e += NT) {
            const int c = e / BV, j = e % BV;
            const float g_last = gam[n - 1];
            float acc = EXPF(g_last) * S[c * BV + j];
            for (int jj = 0; jj < n; ++jj) acc += Ks[jj * KMAX + c] * EXPF(g_last - gam[jj]) * U[jj * BV + j];
            S[c * BV + j] = acc;
        }
    }

    BARRIER();
    for (int e = tid; e < K * BV; e += NT) {
        const int c = e / BV, j = e % BV;
        if (v0 + j < V) sT[(bh * K + c) * V + v0 + j] = S[c * BV + j];
    }
}
"""

SOURCE = with_prelude(BODY)


def scan_defines(p) -> dict:
    return {"BLOCK": p.block, "NMAX": p.n_max}


def gla_defines(p) -> dict:
    return {"BT": p.chunk, "BV": p.block_v, "KMAX": p.k_max, "NT": p.threads}


def run_scan(rt, source: str, u, delta, A, Bm, Cm, Dskip, z, x0, out, last, p):
    """Build (cached) and launch ``selective_scan`` on runtime ``rt``; fills out, last."""
    prog = rt.build(source, scan_defines(p))
    b, H, L, P = u.shape
    N, G = A.shape[2], Bm.shape[1]
    bufs = [rt.to_device(a) for a in (u, delta, A, Bm, Cm, Dskip, z, x0, out, last)]
    i32 = np.int32
    args = bufs + [i32(b), i32(H), i32(L), i32(P), i32(N), i32(G), i32(p.has_d), i32(p.has_z), i32(p.has_x0)]
    rt.launch(prog, "selective_scan", ((P + p.block - 1) // p.block, b * H), p.block, args)
    rt.to_host(bufs[8], out)
    rt.to_host(bufs[9], last)
    return out, last


def run_gla(rt, source: str, q, k, v, g, s0, o, sT, p):
    """Build (cached) and launch ``gla_forward`` on runtime ``rt``; fills o, sT."""
    prog = rt.build(source, gla_defines(p))
    B, H, L, K = q.shape
    V, GK = v.shape[3], g.shape[3]
    bufs = [rt.to_device(a) for a in (q, k, v, g, s0, o, sT)]
    i32 = np.int32
    args = bufs + [i32(B), i32(H), i32(L), i32(K), i32(V), i32(GK), np.float32(p.scale)]
    rt.launch(prog, "gla_forward", ((V + p.block_v - 1) // p.block_v, B * H), p.threads, args)
    rt.to_host(bufs[5], o)
    rt.to_host(bufs[6], sT)
    return o, sT


def run_delta(rt, source: str, q, k, v, beta, g, s0, o, sT, p):
    """Build (cached) and launch ``delta_forward`` on runtime ``rt``; fills o, sT."""
    prog = rt.build(source, gla_defines(p))
    B, H, L, K = q.shape
    V = v.shape[3]
    bufs = [rt.to_device(a) for a in (q, k, v, beta, g, s0, o, sT)]
    i32 = np.int32
    args = bufs + [i32(B), i32(H), i32(L), i32(K), i32(V), np.float32(p.scale)]
    rt.launch(prog, "delta_forward", ((V + p.block_v - 1) // p.block_v, B * H), p.threads, args)
    rt.to_host(bufs[6], o)
    rt.to_host(bufs[7], sT)
    return o, sT
