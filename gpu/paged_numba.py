"""Paged-KV decode attention as a Numba CUDA kernel: keys and values read through a block table.

The KV cache is a pool of fixed-size blocks (vLLM PagedAttention; ``refimpl.kv_cache.PagedCache``):
``k_pool (NB, Hkv, bs, D)``, ``v_pool (NB, Hkv, bs, Dv)``; sequence b holds its tokens
0 .. len_b - 1 with token j in physical block ``table[b, j // bs]`` at offset ``j % bs``.
The n queries of a step are sequence b's last n tokens (positions len_b - n + i), so with
bottom-right alignment ``o_b = len_b - n``:

    s_ij = scale <q_i, k_j>  (softcap c: c tanh(s_ij / c)),   visible iff  o_b + i - left <= j <= o_b + i
    out_i = sum_j softmax_j(s_ij) v_j,   lse_i = logsumexp_j s_ij

i.e. ``refimpl.attention(q, K_b, V_b, causal=True, window=(left, 0))`` over the gathered
``K_b = PagedCache.gather(b)``, which is what ``refimpl.kv_cache.decode_step`` computes.
Sources: Kwon et al., "Efficient Memory Management for LLM Serving with PagedAttention"
(2023); vLLM ``csrc/attention/attention_kernels.cuh`` (``paged_attention_kernel``:
``block_table[block_idx]``, ``physical_block_number * kv_block_stride``).

Tiling: that of ``gpu.attention_numba`` (grid ``(ceil(n / BR), B * Hq)``, ``BR * BC``
threads, Q tile once, K/V tiles of BC logical keys in shared memory, the online softmax
replicated on the BC threads of a row, one write of out and lse) with two changes:
each key tile is gathered through the block table (consecutive threads read consecutive
elements of one block row: coalesced within a block), and the key count and alignment
are per sequence (``len_b``, ``o_b``): tile bounds are uniform over a block, so every
thread reaches every barrier. The block index is clamped to the sequence's last block
(``min(j // bs, nblk_b - 1)``): for ``j < len_b`` the clamp never binds; it keeps every
read inside the table. Shared memory: that of the forward kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .tile_numba import in_band, online_softmax_tile, softcapped, tile_score

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


def make_paged_attention(BR: int, BC: int, DMAX: int, DVMAX: int):
    """The kernel for tiles (BR, BC) and head dims up to (DMAX, DVMAX)."""
    NT = BR * BC
    ACC = (DVMAX + BC - 1) // BC

    def paged_attention(q, k_pool, v_pool, block_table, seq_lens, out, lse, scale, softcap, left, group):
        Hq = q.shape[1]
        n = q.shape[2]
        D = q.shape[3]
        bs = k_pool.shape[2]
        Dv = v_pool.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        hk = h // group
        tid = cuda.threadIdx.x
        r = tid // BC
        c = tid % BC
        q_start = cuda.blockIdx.x * BR
        i = q_start + r
        Lk = seq_lens[b]  # this sequence's keys
        offset = Lk - n  # bottom-right: query i is token Lk - n + i
        nblk = (Lk + bs - 1) // bs

        Qs = cuda.shared.array((BR, DMAX), np.float32)
        Ks = cuda.shared.array((BC, DMAX), np.float32)
        Vs = cuda.shared.array((BC, DVMAX), np.float32)
        S = cuda.shared.array((BR, BC), np.float32)
        P = cuda.shared.array((BR, BC), np.float32)
        acc = cuda.local.array(ACC, np.float32)
        for a in range(ACC):
            acc[a] = ZERO

        q_last = min(q_start + BR, n) - 1
        kv_lo = max(0, q_start + offset - left)
        kv_hi = min(Lk, q_last + offset + 1)  # causal: nothing right of the diagonal
        tile_lo = kv_lo // BC
        tile_hi = (kv_hi + BC - 1) // BC
        if kv_hi <= kv_lo:
            tile_hi = tile_lo

        if tile_hi > tile_lo:
            for e in range(tid, BR * D, NT):
                rr = e // D
                if q_start + rr < n:
                    Qs[rr, e % D] = q[b, h, q_start + rr, e % D]
                else:
                    Qs[rr, e % D] = ZERO

        m = NEG_INF
        l = ZERO
        for t in range(tile_lo, tile_hi):
            kv_start = t * BC
            cuda.syncthreads()
            # gather the tile through the block table
            for e in range(tid, BC * D, NT):
                jj = e // D
                j = kv_start + jj
                if j < Lk:
                    blk = block_table[b, min(j // bs, nblk - 1)]
                    Ks[jj, e % D] = k_pool[blk, hk, j % bs, e % D]
                else:
                    Ks[jj, e % D] = ZERO
            for e in range(tid, BC * Dv, NT):
                jj = e // Dv
                j = kv_start + jj
                if j < Lk:
                    blk = block_table[b, min(j // bs, nblk - 1)]
                    Vs[jj, e % Dv] = v_pool[blk, hk, j % bs, e % Dv]
                else:
                    Vs[jj, e % Dv] = ZERO
            cuda.syncthreads()

            j = kv_start + c
            s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap)
            visible = i < n and j < Lk and in_band(i, j, offset, left, 0)
            if visible:
                S[r, c] = s
            else:
                S[r, c] = NEG_INF
            cuda.syncthreads()

            m, l = online_softmax_tile(S, P, Vs, acc, r, c, m, l, Dv)

        if i < n:
            for a in range(ACC):
                col = c + a * BC
                if col < Dv:
                    if l > ZERO:
                        out[b, h, i, col] = acc[a] / l
                    else:
                        out[b, h, i, col] = ZERO
            if c == 0:
                if l > ZERO:
                    lse[b, h, i] = m + math.log(l)
                else:
                    lse[b, h, i] = NEG_INF

    return paged_attention


_F4 = "float32[:, :, :, ::1]"
SIGNATURES = {
    "paged_attention": f"void({_F4}, {_F4}, {_F4}, int32[:, ::1], int32[::1], {_F4}, float32[:, :, ::1],"
                       " float32, float32, int32, int32)",
}


def kernels(BR: int, BC: int, DMAX: int, DVMAX: int) -> dict:
    return {"paged_attention": make_paged_attention(BR, BC, DMAX, DVMAX)}


_CACHE: dict = {}


def launch(q, k_pool, v_pool, block_table, seq_lens, out, lse, p) -> None:
    """Run the kernel on host arrays (``p``: :class:`gpu.api.AttentionLaunch`; its ``left`` is
    the window's left side, its offset and right are unused: per sequence / causal)."""
    key = (p.block_q, p.block_k, p.d_max, p.dv_max)
    kern = _CACHE.get(key)
    if kern is None:
        kern = _CACHE[key] = cuda.jit(make_paged_attention(*key))
    B, Hq, n, _ = q.shape
    kern[((n + p.block_q - 1) // p.block_q, B * Hq), p.threads](
        q, k_pool, v_pool, block_table, seq_lens, out, lse, np.float32(p.scale), np.float32(p.softcap),
        np.int32(p.left), np.int32(p.group))
