"""Split-KV attention (flash-decoding) as Numba CUDA kernels: partials per key chunk, then a merge.

The semantics of ``refimpl.split_kv_attention``: the keys are cut into chunks
``[e_c, e_{c+1})`` (``edges``: 0 = e_0 <= e_1 <= ... <= e_S = Lk), each chunk
runs the FA2 loop of ``gpu.attention_numba`` over its own keys under the *full*
problem's band ``i + o - left <= j <= i + o + right`` (a chunk is a column range
of the (Lq, Lk) problem, never a shorter problem re-aligned to itself) and keeps
its online-softmax state; the merge combines the states exactly:

    chunk c:  m_c = max_{j in c} s_ij,  l_c = sum_{j in c} exp(s_ij - m_c),
              out_c = sum_{j in c} exp(s_ij - m_c) v_j / l_c          (0, m_c = -inf, l_c = 0 if none visible)
    merge:    m = max_c m_c,  w_c = exp(m_c - m) l_c,  l = sum_c w_c,
              out = sum_c (w_c / l) out_c,   lse = m + log l          (0, -inf if l = 0)

The state form (m_c, l_c) rather than lse_c = m_c + log l_c keeps the merge
exact at large scores: m_c - m is a difference of two computed scores, whereas
exp(lse_c - lse) would turn lse's float32 rounding (u |lse|) into a relative
error of the weights (``refimpl.split_kv``). Sources: Dao et al.,
"Flash-Decoding for long-context inference" (2023); flash-attn
``flash_fwd_kernel.h`` (``compute_attn_1rowblock_splitkv``, ``combine_attn_seqk_parallel``).

Kernels:
  1. ``split_kv_partial``: grid ``(ceil(Lq / BR) * S, B * Hq)``, block ``BR * BC``
     threads; block x = ``chunk * ceil(Lq / BR) + query tile``. The forward's
     tiling (thread (r, c) = (tid // BC, tid % BC), Q tile once, K/V tiles of BC
     keys through shared memory, one score per thread, the running state
     replicated on the BC threads of a row) with key tiles starting at the chunk's
     first key ``e_c`` and keys ``j >= e_{c+1}`` hidden; only the tiles of the
     chunk that meet the band are visited. Writes out_c (S, B, Hq, Lq, Dv),
     m_c and l_c (S, B, Hq, Lq), each element once.
  2. ``split_kv_merge``: one thread per (b, h, i) row, grid ``(ceil(Lq / NT), B * Hq)``:
     the merge above over the S chunks; writes out and lse once.

With Lq = 1 (decoding) the S chunks give S blocks per (b, h) where the
forward has one: the parallelism flash-decoding is for. Shared memory: that of
the forward kernel (``gpu.api.shared_memory_bytes``) for the partial kernel,
none for the merge.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .tile_numba import in_band, online_softmax_tile, softcapped, tile_score

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


def make_split_partial(BR: int, BC: int, DMAX: int, DVMAX: int):
    """Kernel 1 for tiles (BR, BC) and head dims up to (DMAX, DVMAX)."""
    NT = BR * BC
    ACC = (DVMAX + BC - 1) // BC

    def split_kv_partial(q, k, v, edges, out_c, m_c, l_c, scale, softcap, offset, left, right, group):
        Hq = q.shape[1]
        Lq = q.shape[2]
        D = q.shape[3]
        Dv = v.shape[3]
        n_qt = (Lq + BR - 1) // BR
        chunk = cuda.blockIdx.x // n_qt
        k0 = edges[chunk]
        k1 = edges[chunk + 1]  # this block's keys: [k0, k1)
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        hk = h // group
        tid = cuda.threadIdx.x
        r = tid // BC
        c = tid % BC
        q_start = (cuda.blockIdx.x % n_qt) * BR
        i = q_start + r

        Qs = cuda.shared.array((BR, DMAX), np.float32)
        Ks = cuda.shared.array((BC, DMAX), np.float32)
        Vs = cuda.shared.array((BC, DVMAX), np.float32)
        S = cuda.shared.array((BR, BC), np.float32)
        P = cuda.shared.array((BR, BC), np.float32)
        acc = cuda.local.array(ACC, np.float32)
        for a in range(ACC):
            acc[a] = ZERO

        # the chunk's key tiles (starting at k0) that meet the band
        q_last = min(q_start + BR, Lq) - 1
        kv_lo = max(k0, q_start + offset - left)
        kv_hi = min(k1, q_last + offset + right + 1)  # exclusive
        tile_lo = 0
        tile_hi = 0
        if kv_hi > kv_lo:
            tile_lo = (kv_lo - k0) // BC
            tile_hi = (kv_hi - k0 + BC - 1) // BC

        if tile_hi > tile_lo:
            for e in range(tid, BR * D, NT):
                rr = e // D
                if q_start + rr < Lq:
                    Qs[rr, e % D] = q[b, h, q_start + rr, e % D]
                else:
                    Qs[rr, e % D] = ZERO

        m = NEG_INF
        l = ZERO
        for t in range(tile_lo, tile_hi):
            kv_start = k0 + t * BC
            cuda.syncthreads()
            for e in range(tid, BC * D, NT):
                jj = e // D
                if kv_start + jj < k1:
                    Ks[jj, e % D] = k[b, hk, kv_start + jj, e % D]
                else:
                    Ks[jj, e % D] = ZERO
            for e in range(tid, BC * Dv, NT):
                jj = e // Dv
                if kv_start + jj < k1:
                    Vs[jj, e % Dv] = v[b, hk, kv_start + jj, e % Dv]
                else:
                    Vs[jj, e % Dv] = ZERO
            cuda.syncthreads()

            j = kv_start + c
            s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap)
            visible = i < Lq and j < k1 and in_band(i, j, offset, left, right)
            if visible:
                S[r, c] = s
            else:
                S[r, c] = NEG_INF
            cuda.syncthreads()

            m, l = online_softmax_tile(S, P, Vs, acc, r, c, m, l, Dv)

        # the chunk's state: normalised out_c, m_c, l_c, each written once
        if i < Lq:
            for a in range(ACC):
                col = c + a * BC
                if col < Dv:
                    if l > ZERO:
                        out_c[chunk, b, h, i, col] = acc[a] / l
                    else:
                        out_c[chunk, b, h, i, col] = ZERO
            if c == 0:
                m_c[chunk, b, h, i] = m
                l_c[chunk, b, h, i] = l

    return split_kv_partial


def make_split_merge(NT: int):
    """Kernel 2: the merge, one thread per (b, h, i) row."""

    def split_kv_merge(out_c, m_c, l_c, out, lse):
        n_chunks = out_c.shape[0]
        Hq = out.shape[1]
        Lq = out.shape[2]
        Dv = out.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        i = cuda.blockIdx.x * NT + cuda.threadIdx.x
        if i < Lq:
            m = NEG_INF
            for s in range(n_chunks):
                m = max(m, m_c[s, b, h, i])
            l = ZERO
            if m > NEG_INF:
                for s in range(n_chunks):
                    if l_c[s, b, h, i] > ZERO:
                        l += math.exp(m_c[s, b, h, i] - m) * l_c[s, b, h, i]
            for col in range(Dv):
                o = ZERO
                if l > ZERO:
                    for s in range(n_chunks):
                        if l_c[s, b, h, i] > ZERO:
                            w = math.exp(m_c[s, b, h, i] - m) * l_c[s, b, h, i]
                            o += (w / l) * out_c[s, b, h, i, col]
                out[b, h, i, col] = o
            if l > ZERO:
                lse[b, h, i] = m + math.log(l)
            else:
                lse[b, h, i] = NEG_INF

    return split_kv_merge


_F4 = "float32[:, :, :, ::1]"
_F3 = "float32[:, :, ::1]"
SIGNATURES = {
    "split_kv_partial": f"void({_F4}, {_F4}, {_F4}, int32[::1], float32[:, :, :, :, ::1], {_F4}, {_F4},"
                        " float32, float32, int32, int32, int32, int32)",
    "split_kv_merge": f"void(float32[:, :, :, :, ::1], {_F4}, {_F4}, {_F4}, {_F3})",
}


def kernels(BR: int, BC: int, DMAX: int, DVMAX: int) -> dict:
    """{name: python function} of the two kernels for one variant."""
    return {"split_kv_partial": make_split_partial(BR, BC, DMAX, DVMAX), "split_kv_merge": make_split_merge(BR * BC)}


_CACHE: dict = {}


def launch(q, k, v, edges, out, lse, p) -> None:
    """Run both kernels on host arrays (``p``: :class:`gpu.api.AttentionLaunch`, ``edges``
    int32 (S + 1,)); fills out, lse. The partial states stay on the device."""
    key = (p.block_q, p.block_k, p.d_max, p.dv_max)
    ks = _CACHE.get(key)
    if ks is None:
        ks = _CACHE[key] = {n: cuda.jit(f) for n, f in kernels(*key).items()}
    B, Hq, Lq, _ = q.shape
    Dv = v.shape[3]
    n_chunks = edges.shape[0] - 1
    NT = p.threads
    out_c = cuda.to_device(np.full((n_chunks, B, Hq, Lq, Dv), np.nan, dtype=np.float32))
    m_c = cuda.to_device(np.full((n_chunks, B, Hq, Lq), np.nan, dtype=np.float32))
    l_c = cuda.to_device(np.full((n_chunks, B, Hq, Lq), np.nan, dtype=np.float32))
    d_out, d_lse = cuda.to_device(out), cuda.to_device(lse)
    n_qt = (Lq + p.block_q - 1) // p.block_q
    ks["split_kv_partial"][(n_qt * n_chunks, B * Hq), NT](
        q, k, v, edges, out_c, m_c, l_c, np.float32(p.scale), np.float32(p.softcap),
        np.int32(p.offset), np.int32(p.left), np.int32(p.right), np.int32(p.group))
    ks["split_kv_merge"][((Lq + NT - 1) // NT, B * Hq), NT](out_c, m_c, l_c, d_out, d_lse)
    d_out.copy_to_host(out)
    d_lse.copy_to_host(lse)
