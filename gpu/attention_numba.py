"""FlashAttention-2 forward as a Numba CUDA kernel (float32, block barriers only).

Computes, for every batch b, query head h and query row i (``refimpl.attention``):

    s_ij  = scale * <q_i, k_j>;  s_ij = softcap * tanh(s_ij / softcap) if softcap
    s_ij  = -inf unless  i + o - left <= j <= i + o + right   (o = alignment offset)
    lse_i = log sum_j exp(s_ij),   out_i = sum_j exp(s_ij - lse_i) v_j

with the key/value head ``h // group`` (GQA/MQA, ``group = Hq // Hkv``). Causal
is the window ``(left, right = 0)``, an unbounded side is a bound ``Lq + Lk``
(wider than any sequence); ``gpu.api`` turns ``causal/align/window`` into
``(o, left, right)``. A row that sees no key gets ``out = 0`` and ``lse = -inf``.

Tiling (FlashAttention-2, Dao 2023, Algorithm 1, "Q outer"):
  * one thread block per (query tile of BR rows, b * Hq + h): grid
    ``(ceil(Lq / BR), B * Hq)``, block ``BR * BC`` threads; thread ``(r, c)``
    owns query row ``r`` of the tile and key column ``c`` of each K/V tile;
  * the Q tile (BR x D) is loaded once into shared memory; the loop over key
    tiles of BC rows stages K (BC x D) and V (BC x Dv) through shared memory,
    all threads loading cooperatively (consecutive threads read consecutive
    elements: coalesced);
  * thread (r, c) computes one score ``S[r, c]``; after a barrier every thread of
    row r reads the row of S to get the tile maximum, writes
    ``P[r, c] = exp(S[r, c] - m_new)``; after a second barrier it updates the
    running state, in registers, replicated identically on the BC threads of
    the row (same operations in the same order, so the copies agree bit for bit):

        m_new = max(m, max_c S[r, c]),   alpha = exp(m - m_new)
        l     = alpha * l + sum_c P[r, c]
        acc   = alpha * acc + P[r, :] @ V_tile         (columns c, c + BC, ...)

    and FA2's deferred normalisation happens once at the end: ``out = acc / l``,
    ``lse = m + log(l)``; out and lse are written once.
  * Block skipping: only the key tiles that intersect
    ``[q_start + o - left, q_last + o + right]`` are visited (tiles fully outside
    the causal/window band are never loaded). The loop bounds are uniform over
    the block, so every thread reaches every barrier.
  * The score, the band test and the online-softmax update are device functions shared with the
    split-KV, paged and backward kernels (``gpu.tile_numba``; C: ``gpu.tile_c``).
  * No warp intrinsics (shuffles, votes): reductions read shared memory after a
    block barrier. This is what the Numba CUDA simulator can execute; a tuned
    kernel would reduce with warp shuffles and use tensor cores (mma) instead.

Shared-memory budget (float32): ``4 * (BR*DMAX + BC*DMAX + BC*DVMAX + 2*BR*BC)``
bytes. Default BR = BC = 16, DMAX = DVMAX = 128: 26,624 B, under the 48 KiB a
block may declare statically. Registers: ``ceil(DVMAX / BC)`` = 8 accumulators
per thread plus scalars.

Occupancy (A100, sm_80: 64 Ki registers, 164 KiB shared memory and 2048 threads
per SM; H100, sm_90: 64 Ki registers, 228 KiB, 2048 threads), for the default
256-thread block at D <= 128:
  * threads allow 8 resident blocks; shared memory (26 KiB + 1 KiB reserved per
    block) allows 6 (A100) or 8 (H100);
  * registers decide: NVRTC/ptxas report 72 registers per thread for the C twin
    of this kernel (gpu.attention_c; sm_80 and sm_90, no spills; see
    tests/gpu/test_compile.py), i.e. 18,432 per block, so 3 blocks = 768
    threads = 37.5% occupancy on both. Capping registers at 64
    (``__launch_bounds__(256, 4)``) would allow 4 blocks (50%) at the risk of
    spilling the 8 accumulators. Numba's PTX does not fix the register count
    (ptxas does); expect the same order.
Smaller D selects a smaller DMAX variant (16, 32, 64: 56-65 registers, 5-14 KiB).
The kernel is latency-bound by design (scalar FMAs, no tensor cores): it is the
reference-quality twin of refimpl.flash_attention, not a tuned kernel.

I/O (elements of slow/global memory; the tiled-attention formula of
``refimpl.flash_attention``, Q outer): each block reads its Q tile once and every
visited K/V tile once, so without skipping

    tile loads     = ceil(Lq / BR) * ceil(Lk / BC)          (per batch and head)
    elements read  = Lq * D + ceil(Lq / BR) * Lk * (D + Dv)
    elements written = Lq * Dv + Lq                           (out and lse)

per (b, h); causal/window skipping lowers the reads to the visited tiles only.
The (Lq, Lk) score matrix never exists: S and P are BR x BC tiles in shared
memory.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .tile_numba import in_band, online_softmax_tile, softcapped, tile_score

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


def make_flash_forward(BR: int, BC: int, DMAX: int, DVMAX: int):
    """The kernel's Python function for tile sizes (BR, BC) and head dims up to
    (DMAX, DVMAX); these are compile-time constants (shared-array shapes).

    Arguments of the returned function: q (B, Hq, Lq, D), k (B, Hkv, Lk, D),
    v (B, Hkv, Lk, Dv), out (B, Hq, Lq, Dv), lse (B, Hq, Lq) float32 C-contiguous;
    scale, softcap (0 = off) float32; offset, left, right, group int32.
    """
    NT = BR * BC
    ACC = (DVMAX + BC - 1) // BC

    def flash_forward(q, k, v, out, lse, scale, softcap, offset, left, right, group):
        Hq = q.shape[1]
        Lq = q.shape[2]
        D = q.shape[3]
        Lk = k.shape[2]
        Dv = v.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        hk = h // group  # GQA: query head h reads key/value head h // (Hq // Hkv)
        tid = cuda.threadIdx.x
        r = tid // BC
        c = tid % BC
        q_start = cuda.blockIdx.x * BR
        i = q_start + r  # this thread's query row

        Qs = cuda.shared.array((BR, DMAX), np.float32)
        Ks = cuda.shared.array((BC, DMAX), np.float32)
        Vs = cuda.shared.array((BC, DVMAX), np.float32)
        S = cuda.shared.array((BR, BC), np.float32)
        P = cuda.shared.array((BR, BC), np.float32)
        acc = cuda.local.array(ACC, np.float32)
        for a in range(ACC):
            acc[a] = ZERO

        # key tiles that intersect the band [q_start + o - left, q_last + o + right]
        q_last = min(q_start + BR, Lq) - 1
        kv_lo = max(0, q_start + offset - left)
        kv_hi = min(Lk, q_last + offset + right + 1)  # exclusive
        tile_lo = kv_lo // BC
        tile_hi = (kv_hi + BC - 1) // BC  # ceil: the last, partial tile counts
        if kv_hi <= kv_lo:
            tile_hi = tile_lo  # no visible key for the whole tile: skip all

        # the Q tile, once, if any key tile is visited (rows past Lq are zeros, never written back)
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
            kv_start = t * BC
            cuda.syncthreads()  # readers of the previous K/V/S/P tiles are done
            for e in range(tid, BC * D, NT):
                jj = e // D
                if kv_start + jj < Lk:
                    Ks[jj, e % D] = k[b, hk, kv_start + jj, e % D]
                else:
                    Ks[jj, e % D] = ZERO
            for e in range(tid, BC * Dv, NT):
                jj = e // Dv
                if kv_start + jj < Lk:
                    Vs[jj, e % Dv] = v[b, hk, kv_start + jj, e % Dv]
                else:
                    Vs[jj, e % Dv] = ZERO
            cuda.syncthreads()

            # one score per thread
            j = kv_start + c
            s = softcapped(tile_score(Qs, Ks, r, c, D, scale), softcap)
            visible = i < Lq and j < Lk and in_band(i, j, offset, left, right)
            if visible:
                S[r, c] = s
            else:
                S[r, c] = NEG_INF
            cuda.syncthreads()

            # online softmax, replicated on the BC threads of row r
            m, l = online_softmax_tile(S, P, Vs, acc, r, c, m, l, Dv)

        # deferred normalisation; out and lse written once
        if i < Lq:
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

    return flash_forward


def signature():
    """Numba type signature of the kernel (for ``numba.cuda.compile_ptx``)."""
    return (
        "void(float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1],"
        " float32[:, :, :, ::1], float32[:, :, ::1], float32, float32, int32, int32, int32, int32)"
    )


_CACHE: dict = {}


def launch(q, k, v, out, lse, p) -> None:
    """Run the kernel on host arrays (device copies are made by Numba).

    ``p`` is a :class:`gpu.api.AttentionLaunch` (tile sizes and scalars).
    """
    key = (p.block_q, p.block_k, p.d_max, p.dv_max)
    kern = _CACHE.get(key)
    if kern is None:
        kern = _CACHE[key] = cuda.jit(make_flash_forward(*key))
    B, Hq, Lq, _ = q.shape
    grid = ((Lq + p.block_q - 1) // p.block_q, B * Hq)
    kern[grid, p.block_q * p.block_k](
        q, k, v, out, lse, np.float32(p.scale), np.float32(p.softcap),
        np.int32(p.offset), np.int32(p.left), np.int32(p.right), np.int32(p.group),
    )
