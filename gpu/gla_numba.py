"""Chunked gated linear attention (GLA) forward as a Numba CUDA kernel (float32).

The semantics of ``refimpl.mixers.gated.gated_linear_attention`` (the recurrence
S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale S_t^T q_t, log-gates g <= 0 per key
channel; a scalar gate is broadcast over the channels, no gate is g = 0), in its chunked form:
for a chunk [a, b) with in-chunk cumulative gates Gc_t = sum_{a<=s<=t} g_s,

    o_t = scale [ (q_t * exp(Gc_t))^T S_{a-1}                               (inter-chunk: the carried state)
                  + sum_{a<=j<=t} (sum_c q_tc k_jc exp(Gc_tc - Gc_jc)) v_j ] (intra-chunk: masked product)
    S_{b-1} = diag(exp(Gc_{b-1})) S_{a-1} + sum_{a<=j<b} (k_j * exp(Gc_{b-1} - Gc_j)) v_j^T

(every exponent <= 0). Gates are floored at ``G_FLOOR`` = -100 before the sum: exp(-100) is
below float32's normal range, so the floor changes no weight by more than that, and it keeps a
huge gate from absorbing the small ones after it in the float32 cumulative sum
(``refimpl.mixers.gated``: the same reasoning at float64's -800). Sources: Yang et al. 2024,
"Gated Linear Attention Transformers with Hardware-Efficient Training" (the chunkwise form);
fla ``fla/ops/gla/naive.py`` (layout and defaults differ: see refimpl.mixers.gated).

One thread block per (b, h) walks the chunks in order (grid ``(1, B * H)``, NT threads); the
state S (K x V) lives in shared memory for the whole sequence. Per chunk of CS tokens:
  1. stage q, k, v, g of the chunk (rows past L: zeros) and, one thread per key channel, the
     in-chunk cumulative gates Gc;  barrier;
  2. A[t, j] = sum_c q_tc k_jc exp(Gc_tc - Gc_jc) for j <= t (0 above the diagonal), one
     entry per thread;  barrier;
  3. o[t, :] (one element per thread) = scale (inter-chunk read of S + A v);  barrier (every
     read of S is done);
  4. S <- decayed S + the chunk's decayed writes, one state element per thread;  barrier.
The final state is written once at the end. Shared memory: 4 (3 CS KMAX + CS VMAX + CS^2 +
KMAX VMAX) bytes (16-token chunks, K = V = 64: 33,792 B).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

ZERO = np.float32(0.0)
G_FLOOR = np.float32(-100.0)


def make_gla(NT: int, CS: int, KMAX: int, VMAX: int):
    """The kernel for NT threads, chunks of CS tokens and K <= KMAX, V <= VMAX."""

    def gla_chunked(q, k, v, g, s0, o, s_out, scale):
        H = q.shape[1]
        L = q.shape[2]
        K = q.shape[3]
        V = v.shape[3]
        bh = cuda.blockIdx.y
        b = bh // H
        h = bh % H
        tid = cuda.threadIdx.x
        Qs = cuda.shared.array((CS, KMAX), np.float32)
        Ks = cuda.shared.array((CS, KMAX), np.float32)
        Gc = cuda.shared.array((CS, KMAX), np.float32)
        Vs = cuda.shared.array((CS, VMAX), np.float32)
        A = cuda.shared.array((CS, CS), np.float32)
        S = cuda.shared.array((KMAX, VMAX), np.float32)
        for e in range(tid, K * V, NT):
            S[e // V, e % V] = s0[b, h, e // V, e % V]
        n_chunks = (L + CS - 1) // CS
        for ch in range(n_chunks):
            a = ch * CS
            n = min(CS, L - a)  # tokens in this chunk
            cuda.syncthreads()  # the previous chunk's readers of Q/K/V/Gc/A are done (and S is loaded)
            for e in range(tid, CS * K, NT):
                t = e // K
                c = e % K
                if t < n:
                    Qs[t, c] = q[b, h, a + t, c]
                    Ks[t, c] = k[b, h, a + t, c]
                else:
                    Qs[t, c] = ZERO
                    Ks[t, c] = ZERO
            for e in range(tid, CS * V, NT):
                t = e // V
                if t < n:
                    Vs[t, e % V] = v[b, h, a + t, e % V]
                else:
                    Vs[t, e % V] = ZERO
            for c in range(tid, K, NT):  # in-chunk cumulative gates, one channel per thread
                acc = ZERO
                for t in range(CS):
                    if t < n:
                        acc += max(g[b, h, a + t, c], G_FLOOR)
                    Gc[t, c] = acc
            cuda.syncthreads()
            # intra-chunk masked scores A[t, j], j <= t
            for e in range(tid, CS * CS, NT):
                t = e // CS
                j = e % CS
                s = ZERO
                if j <= t and t < n:
                    for c in range(K):
                        s += Qs[t, c] * Ks[j, c] * math.exp(Gc[t, c] - Gc[j, c])
                A[t, j] = s
            cuda.syncthreads()
            # outputs: the inter-chunk read of the carried state plus the intra-chunk product
            for e in range(tid, CS * V, NT):
                t = e // V
                col = e % V
                if t < n:
                    acc = ZERO
                    for c in range(K):
                        acc += Qs[t, c] * math.exp(Gc[t, c]) * S[c, col]
                    for j in range(CS):
                        acc += A[t, j] * Vs[j, col]
                    o[b, h, a + t, col] = scale * acc
            cuda.syncthreads()  # every read of S for this chunk is done
            # carry: S <- diag(exp(Gc_last)) S + sum_j (k_j * exp(Gc_last - Gc_j)) v_j^T
            for e in range(tid, K * V, NT):
                c = e // V
                col = e % V
                g_last = Gc[n - 1, c]
                acc = math.exp(g_last) * S[c, col]
                for j in range(CS):
                    if j < n:
                        acc += Ks[j, c] * math.exp(g_last - Gc[j, c]) * Vs[j, col]
                S[c, col] = acc
        cuda.syncthreads()
        for e in range(tid, K * V, NT):
            s_out[b, h, e // V, e % V] = S[e // V, e % V]

    return gla_chunked


_F4 = "float32[:, :, :, ::1]"
SIGNATURES = {"gla_chunked": f"void({_F4}, {_F4}, {_F4}, {_F4}, {_F4}, {_F4}, {_F4}, float32)"}
DEFAULTS = {"NT": 256, "CS": 16, "KMAX": 64, "VMAX": 64}


def kernels() -> dict:
    return {"gla_chunked": (make_gla(*DEFAULTS.values()), SIGNATURES["gla_chunked"])}


_CACHE: dict = {}


def launch(q, k, v, g, s0, o, s_out, p) -> None:
    """Run the kernel on host arrays (``p``: :class:`gpu.api.GLALaunch`); fills o and s_out."""
    key = (p.threads, p.chunk, p.k_max, p.v_max)
    kern = _CACHE.get(key)
    if kern is None:
        kern = _CACHE[key] = cuda.jit(make_gla(*key))
    B, H = q.shape[:2]
    d_o, d_s = cuda.to_device(o), cuda.to_device(s_out)
    kern[(1, B * H), p.threads](q, k, v, g, s0, d_o, d_s, np.float32(p.scale))
    d_o.copy_to_host(o)
    d_s.copy_to_host(s_out)
