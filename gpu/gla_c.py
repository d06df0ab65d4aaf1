"""Chunked gated linear attention (GLA) forward in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same kernel, chunk loop and names as ``gpu.gla_numba``, whose docstring gives the chunked
form (inter-chunk read of the carried state, intra-chunk masked product with in-chunk cumulative
gates, the decayed carry), the gate floor and the shared-memory budget:

  gla_chunked  grid (1, B * H), NT threads; the state S (K x V) in shared memory for the whole
               sequence; per chunk of CS tokens: stage, scores A, outputs, carry (a barrier
               between each).

Compile-time constants: NT, CS, KMAX, VMAX. Arguments: q, k, g (B, H, L, K), v (B, H, L, V),
s0 (B, H, K, V), o (B, H, L, V), s_out (B, H, K, V) float32; B, H, L, K, V; scale.
"""

from __future__ import annotations

from .dialect import with_prelude

KERNEL_NAMES = ("gla_chunked",)
DEFAULT_DEFINES = {"NT": 256, "CS": 16, "KMAX": 64, "VMAX": 64}

BODY = r"""
#ifndef NT
#define NT 256
#endif
#ifndef CS
#define CS 16
#endif
#ifndef KMAX
#define KMAX 64
#endif
#ifndef VMAX
#define VMAX 64
#endif
#define G_FLOOR (-100.0f)

KERNEL void gla_chunked(GLOBAL const float* q, GLOBAL const float* k, GLOBAL const float* v, GLOBAL const float* g,
                        GLOBAL const float* s0, GLOBAL float* o, GLOBAL float* s_out,
                        int B, int H, int L, int K, int V, float scale)
{
    SHARED float Qs[CS * KMAX];
    SHARED float Ks[CS * KMAX];
    SHARED float Gc[CS * KMAX];
    SHARED float Vs[CS * VMAX];
    SHARED float A[CS * CS];
    SHARED float S[KMAX * VMAX];
    const int bh = BLOCK_ID_Y();
    const int tid = THREAD_ID();
    GLOBAL const float* qh = q + bh * L * K;
    GLOBAL const float* kh = k + bh * L * K;
    GLOBAL const float* gh = g + bh * L * K;
    GLOBAL const float* vh = v + bh * L * V;
    for (int e = tid; e < K * V; e += NT) S[(e / V) * VMAX + e % V] = s0[bh * K * V + e];
    const int n_chunks = (L + CS - 1) / CS;
    for (int ch = 0; ch < n_chunks; ++ch) {
        const int a = ch * CS;
        const int n = IMIN(CS, L - a); /* tokens in this chunk */
        BARRIER(); /* the previous chunk's readers of Q/K/V/Gc/A are done (and S is loaded) */
        for (int e = tid; e < CS * K; e += NT) {
            const int t = e / K, c = e % K;
            Qs[t * KMAX + c] = t < n ? qh[(a + t) * K + c] : 0.0f;
            Ks[t * KMAX + c] = t < n ? kh[(a + t) * K + c] : 0.0f;
        }
        for (int e = tid; e < CS * V; e += NT) {
            const int t = e / V;
            Vs[t * VMAX + e % V] = t < n ? vh[(a + t) * V + e % V] : 0.0f;
        }
        for (int c = tid; c < K; c += NT) { /* in-chunk cumulative gates, one channel per thread */
            float acc = 0.0f;
            for (int t = 0; t < CS; ++t) {
                if (t < n) acc += FMAXF(gh[(a + t) * K + c], G_FLOOR);
                Gc[t * KMAX + c] = acc;
            }
        }
        BARRIER();
        /* intra-chunk masked scores A[t, j], j <= t */
        for (int e = tid; e < CS * CS; e += NT) {
            const int t = e / CS, j = e % CS;
            float s = 0.0f;
            if (j <= t && t < n)
                for (int c = 0; c < K; ++c)
                    s += Qs[t * KMAX + c] * Ks[j * KMAX + c] * EXPF(Gc[t * KMAX + c] - Gc[j * KMAX + c]);
            A[t * CS + j] = s;
        }
        BARRIER();
        /* outputs: the inter-chunk read of the carried state plus the intra-chunk product */
        for (int e = tid; e < CS * V; e += NT) {
            const int t = e / V, col = e % V;
            if (t < n) {
                float acc = 0.0f;
                for (int c = 0; c < K; ++c) acc += Qs[t * KMAX + c] * EXPF(Gc[t * KMAX + c]) * S[c * VMAX + col];
                for (int j = 0; j < CS; ++j) acc += A[t * CS + j] * Vs[j * VMAX + col];
                o[(bh * L + a + t) * V + col] = scale * acc;
            }
        }
        BARRIER(); /* every read of S for this chunk is done */
        /* carry: S <- diag(exp(Gc_last)) S + sum_j (k_j * exp(Gc_last - Gc_j)) v_j^T */
        for (int e = tid; e < K * V; e += NT) {
            const int c = e / V, col = e % V;
            const float g_last = Gc[(n - 1) * KMAX + c];
            float acc = EXPF(g_last) * S[c * VMAX + col];
            for (int j = 0; j < CS; ++j)
                if (j < n) acc += Ks[j * KMAX + c] * EXPF(g_last - Gc[j * KMAX + c]) * Vs[j * VMAX + col];
            S[c * VMAX + col] = acc;
        }
    }
    BARRIER();
    for (int e = tid; e < K * V; e += NT) s_out[bh * K * V + e] = S[(e / V) * VMAX + e % V];
}
"""

SOURCE = with_prelude(BODY)


def defines(p) -> dict:
    return {"NT": p.threads, "CS": p.chunk, "KMAX": p.k_max, "VMAX": p.v_max}


def run(rt, source, q, k, v, g, s0, o, s_out, p):
    import numpy as np

    prog = rt.build(source, defines(p))
    B, H, L, K = q.shape
    V = v.shape[3]
    i32 = np.int32
    bufs = [rt.to_device(a) for a in (q, k, v, g, s0, o, s_out)]
    rt.launch(prog, "gla_chunked", (1, B * H), p.threads,
              bufs + [i32(B), i32(H), i32(L), i32(K), i32(V), np.float32(p.scale)])
    rt.to_host(bufs[5], o)
    rt.to_host(bufs[6], s_out)
    return o, s_out
