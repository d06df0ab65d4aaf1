"""FlashAttention-2 backward as Numba CUDA kernels (float32, block barriers only, no atomics).

Gradients of ``sum(dO * O)`` for the forward of ``gpu.attention_numba``, the
semantics of ``refimpl.attention_backward`` (band ``i + o - left <= j <= i + o +
right``, GQA, softcap, scale). With ``lse`` from the forward and the scores
recomputed per tile (the (Lq, Lk) matrices never exist):

    D_i   = sum_d dO_id * O_id                     (rowsum(dO * O), kernel 1)
    R_ij  = scale * <q_i, k_j>;   S_ij = c tanh(R_ij / c) if softcap c else R_ij
    P_ij  = exp(S_ij - lse_i)     on the band, 0 elsewhere
    dP_ij = <dO_i, v_j>,          dS_ij = P_ij (dP_ij - D_i)
    dR_ij = dS_ij sech^2(R_ij / c) if softcap else dS_ij    (= dS (1 - tanh^2); sech^2 = 1 / cosh^2 keeps
                                                           its relative accuracy where tanh saturates and
                                                           1 - t^2 of a rounded t would err by ~u absolutely)
    dV_j  = sum_i P_ij dO_i,      dK_j = scale sum_i dR_ij q_i   (kernel 2; i over the G query heads of
                                                                 kv head h // G too)
    dQ_i  = scale sum_j dR_ij k_j                                 (kernel 3)

Three kernels, as in FlashAttention-2 (Dao 2023, Algorithm 2) but without its
atomic dQ update: the neutral dialect has no atomics, so dQ gets its own
"Q outer" pass that recomputes P and dS (deterministic; one more recomputation
of the scores):

  1. ``flash_backward_dot``: grid ``(ceil(Lq / NT), B * Hq)``, one thread per row
     (NT = BR * BC threads per block): ``delta = rowsum(dO * O)``;
  2. ``flash_backward_dkdv`` ("K/V outer"): grid ``(ceil(Lk / BC), B * Hkv)``,
     block ``BR * BC`` threads, thread ``(r, c) = (tid % BR, tid // BR)`` owns
     key row ``c`` of the tile and columns ``r, r + BR, ...`` of its dK, dV rows
     (registers). K and V tiles are loaded once; for each of the G query heads
     of the kv head and each query tile that intersects the band
     ``[kv_start - o - right, kv_last - o + left]`` it stages Q, dO, lse and
     delta, computes one (P, dR) entry per thread into shared memory, and after
     a barrier accumulates ``dV += P^T dO``, ``dK += dR^T Q``. dK and dV are
     written once (summed over the group: no atomics needed, one block owns them);
  3. ``flash_backward_dq`` ("Q outer", like the forward): grid
     ``(ceil(Lq / BR), B * Hq)``, thread ``(r, c) = (tid // BC, tid % BC)`` owns
     query row ``r`` and columns ``c, c + BC, ...`` of its dQ row; it visits the
     key tiles of the band, recomputes dR into shared memory and accumulates
     ``dQ += dR K``; dQ written once.

Loop bounds are uniform over a block, so every thread reaches every barrier.
A key no query sees (or a row that sees no key) gets a zero gradient.

Shared memory (float32 elements x 4 bytes):
    dkdv: BR*DMAX + BR*DVMAX + BC*DMAX + BC*DVMAX + 2*BR*BC + 2*BR
    dq:   BR*DMAX + BR*DVMAX + BC*DMAX + BC*DVMAX +   BR*BC + 2*BR
At the default 16 x 16 tiles and head dims up to 128: 34,944 B and 33,920 B.
Registers: ceil(DMAX / BR) + ceil(DVMAX / BR) accumulators (dkdv), ceil(DMAX / BC) (dq).

I/O per (b, query head), without skipping: kernel 1 reads 2 Lq Dv, writes Lq;
kernel 2 reads each K/V tile once per kv head and Lq (D + Dv + 2) per key tile
per query head, writes Lk (D + Dv) per kv head; kernel 3 reads Lq (D + Dv + 2)
and ceil(Lq / BR) Lk (D + Dv), writes Lq D.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .tile_numba import in_band, softcap_slope, softcapped, tile_score

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


@cuda.jit(device=True, inline="always")
def score_gradient(Qs, Ks, dOs, Vs, r, c, i, j, Lq, Lk, D, Dv, scale, softcap, offset, left, right, lse_i, delta_i):
    """The (P, dR) entry of query row i (tile row r) and key row j (tile row c), the scores
    recomputed (the C twin's SCORE_GRADIENT): R = scale <q_i, k_j>, S = softcapped(R),
    P = exp(S - lse_i), dP = <dO_i, v_j>, dR = P (dP - delta_i) sech^2(R / softcap); (0, 0) where
    (i, j) is hidden or the row sees no key (lse_i = -inf)."""
    s = tile_score(Qs, Ks, r, c, D, scale)
    tp = softcap_slope(s, softcap)  # d S / d R: 1, or sech^2(R / c) with softcap c
    s = softcapped(s, softcap)
    visible = i < Lq and j < Lk and in_band(i, j, offset, left, right)
    p = ZERO
    ds = ZERO
    if visible and lse_i > NEG_INF:
        p = math.exp(s - lse_i)
        dp = ZERO
        for d in range(Dv):
            dp += dOs[r, d] * Vs[c, d]
        ds = p * (dp - delta_i)
        ds = ds * tp
    return p, ds


def make_backward_dot(NT: int):
    """Kernel 1: ``delta[b, h, i] = sum_d dout[b, h, i, d] * out[b, h, i, d]``, one thread per row."""

    def flash_backward_dot(out, dout, delta):
        Hq = out.shape[1]
        Lq = out.shape[2]
        Dv = out.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        i = cuda.blockIdx.x * NT + cuda.threadIdx.x
        if i < Lq:
            s = ZERO
            for d in range(Dv):
                s += dout[b, h, i, d] * out[b, h, i, d]
            delta[b, h, i] = s

    return flash_backward_dot


def make_backward_dkdv(BR: int, BC: int, DMAX: int, DVMAX: int):
    """Kernel 2 (K/V outer) for tiles (BR, BC) and head dims up to (DMAX, DVMAX)."""
    NT = BR * BC
    AK = (DMAX + BR - 1) // BR
    AV = (DVMAX + BR - 1) // BR

    def flash_backward_dkdv(q, k, v, dout, lse, delta, dk, dv, scale, softcap, offset, left, right, group):
        Lq = q.shape[2]
        D = q.shape[3]
        Hkv = k.shape[1]
        Lk = k.shape[2]
        Dv = v.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hkv
        hk = bh % Hkv
        tid = cuda.threadIdx.x
        r = tid % BR
        c = tid // BR
        kv_start = cuda.blockIdx.x * BC
        j = kv_start + c  # this thread's key row

        Qs = cuda.shared.array((BR, DMAX), np.float32)
        dOs = cuda.shared.array((BR, DVMAX), np.float32)
        Ks = cuda.shared.array((BC, DMAX), np.float32)
        Vs = cuda.shared.array((BC, DVMAX), np.float32)
        P = cuda.shared.array((BR, BC), np.float32)
        dR = cuda.shared.array((BR, BC), np.float32)
        Ls = cuda.shared.array(BR, np.float32)
        Ds = cuda.shared.array(BR, np.float32)
        dk_acc = cuda.local.array(AK, np.float32)
        dv_acc = cuda.local.array(AV, np.float32)
        for a in range(AK):
            dk_acc[a] = ZERO
        for a in range(AV):
            dv_acc[a] = ZERO

        # the K/V tile, once (rows past Lk are zeros, never written back)
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

        # query tiles that intersect the band: j - o - right <= i <= j - o + left
        kv_last = min(kv_start + BC, Lk) - 1
        q_lo = max(0, kv_start - offset - right)
        q_hi = min(Lq, kv_last - offset + left + 1)  # exclusive
        tile_lo = q_lo // BR
        tile_hi = (q_hi + BR - 1) // BR
        if q_hi <= q_lo:
            tile_hi = tile_lo

        for g in range(group):
            h = hk * group + g  # the G query heads that read kv head hk
            for t in range(tile_lo, tile_hi):
                q_start = t * BR
                cuda.syncthreads()  # readers of the previous Q/dO/P/dR tiles are done
                for e in range(tid, BR * D, NT):
                    rr = e // D
                    if q_start + rr < Lq:
                        Qs[rr, e % D] = q[b, h, q_start + rr, e % D]
                    else:
                        Qs[rr, e % D] = ZERO
                for e in range(tid, BR * Dv, NT):
                    rr = e // Dv
                    if q_start + rr < Lq:
                        dOs[rr, e % Dv] = dout[b, h, q_start + rr, e % Dv]
                    else:
                        dOs[rr, e % Dv] = ZERO
                if tid < BR:
                    if q_start + tid < Lq:
                        Ls[tid] = lse[b, h, q_start + tid]
                        Ds[tid] = delta[b, h, q_start + tid]
                    else:
                        Ls[tid] = NEG_INF
                        Ds[tid] = ZERO
                cuda.syncthreads()

                # one (P, dR) entry per thread, the scores recomputed
                i = q_start + r
                p, ds = score_gradient(Qs, Ks, dOs, Vs, r, c, i, j, Lq, Lk, D, Dv, scale, softcap, offset, left, right,
                                       Ls[r], Ds[r])
                P[r, c] = p
                dR[r, c] = ds
                cuda.syncthreads()

                # dV[c] += P[:, c]^T dO,  dK[c] += dR[:, c]^T Q   (columns r, r + BR, ...)
                for a in range(AV):
                    col = r + a * BR
                    if col < Dv:
                        acc = ZERO
                        for rr in range(BR):
                            acc += P[rr, c] * dOs[rr, col]
                        dv_acc[a] += acc
                for a in range(AK):
                    col = r + a * BR
                    if col < D:
                        acc = ZERO
                        for rr in range(BR):
                            acc += dR[rr, c] * Qs[rr, col]
                        dk_acc[a] += acc

        # dK, dV written once (the whole group summed in this block)
        if j < Lk:
            for a in range(AK):
                col = r + a * BR
                if col < D:
                    dk[b, hk, j, col] = scale * dk_acc[a]
            for a in range(AV):
                col = r + a * BR
                if col < Dv:
                    dv[b, hk, j, col] = dv_acc[a]

    return flash_backward_dkdv


def make_backward_dq(BR: int, BC: int, DMAX: int, DVMAX: int):
    """Kernel 3 (Q outer) for tiles (BR, BC) and head dims up to (DMAX, DVMAX)."""
    NT = BR * BC
    AQ = (DMAX + BC - 1) // BC

    def flash_backward_dq(q, k, v, dout, lse, delta, dq, scale, softcap, offset, left, right, group):
        Hq = q.shape[1]
        Lq = q.shape[2]
        D = q.shape[3]
        Lk = k.shape[2]
        Dv = v.shape[3]
        bh = cuda.blockIdx.y
        b = bh // Hq
        h = bh % Hq
        hk = h // group
        tid = cuda.threadIdx.x
        r = tid // BC
        c = tid % BC
        q_start = cuda.blockIdx.x * BR
        i = q_start + r

        Qs = cuda.shared.array((BR, DMAX), np.float32)
        dOs = cuda.shared.array((BR, DVMAX), np.float32)
        Ks = cuda.shared.array((BC, DMAX), np.float32)
        Vs = cuda.shared.array((BC, DVMAX), np.float32)
        dR = cuda.shared.array((BR, BC), np.float32)
        Ls = cuda.shared.array(BR, np.float32)
        Ds = cuda.shared.array(BR, np.float32)
        dq_acc = cuda.local.array(AQ, np.float32)
        for a in range(AQ):
            dq_acc[a] = ZERO

        for e in range(tid, BR * D, NT):
            rr = e // D
            if q_start + rr < Lq:
                Qs[rr, e % D] = q[b, h, q_start + rr, e % D]
            else:
                Qs[rr, e % D] = ZERO
        for e in range(tid, BR * Dv, NT):
            rr = e // Dv
            if q_start + rr < Lq:
                dOs[rr, e % Dv] = dout[b, h, q_start + rr, e % Dv]
            else:
                dOs[rr, e % Dv] = ZERO
        if tid < BR:
            if q_start + tid < Lq:
                Ls[tid] = lse[b, h, q_start + tid]
                Ds[tid] = delta[b, h, q_start + tid]
            else:
                Ls[tid] = NEG_INF
                Ds[tid] = ZERO

        # key tiles that intersect the band [q_start + o - left, q_last + o + right]
        q_last = min(q_start + BR, Lq) - 1
        kv_lo = max(0, q_start + offset - left)
        kv_hi = min(Lk, q_last + offset + right + 1)
        tile_lo = kv_lo // BC
        tile_hi = (kv_hi + BC - 1) // BC
        if kv_hi <= kv_lo:
            tile_hi = tile_lo

        for t in range(tile_lo, tile_hi):
            kv_start = t * BC
            cuda.syncthreads()  # readers of the previous K/V/dR tiles are done (and the Q tile is loaded)
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

            j = kv_start + c
            _, ds = score_gradient(Qs, Ks, dOs, Vs, r, c, i, j, Lq, Lk, D, Dv, scale, softcap, offset, left, right,
                                   Ls[r], Ds[r])
            dR[r, c] = ds
            cuda.syncthreads()

            # dQ[r] += dR[r, :] K   (columns c, c + BC, ...)
            for a in range(AQ):
                col = c + a * BC
                if col < D:
                    acc = ZERO
                    for cc in range(BC):
                        acc += dR[r, cc] * Ks[cc, col]
                    dq_acc[a] += acc

        if i < Lq:
            for a in range(AQ):
                col = c + a * BC
                if col < D:
                    dq[b, h, i, col] = scale * dq_acc[a]

    return flash_backward_dq


_F4 = "float32[:, :, :, ::1]"
_F3 = "float32[:, :, ::1]"
SIGNATURES = {
    "flash_backward_dot": f"void({_F4}, {_F4}, {_F3})",
    "flash_backward_dkdv": f"void({_F4}, {_F4}, {_F4}, {_F4}, {_F3}, {_F3}, {_F4}, {_F4},"
                           " float32, float32, int32, int32, int32, int32)",
    "flash_backward_dq": f"void({_F4}, {_F4}, {_F4}, {_F4}, {_F3}, {_F3}, {_F4},"
                         " float32, float32, int32, int32, int32, int32)",
}


def kernels(BR: int, BC: int, DMAX: int, DVMAX: int) -> dict:
    """{name: python function} of the three kernels for one variant."""
    return {"flash_backward_dot": make_backward_dot(BR * BC),
            "flash_backward_dkdv": make_backward_dkdv(BR, BC, DMAX, DVMAX),
            "flash_backward_dq": make_backward_dq(BR, BC, DMAX, DVMAX)}


_CACHE: dict = {}


def launch(q, k, v, out, lse, dout, dq, dk, dv, p) -> None:
    """Run the three kernels on host arrays (``p``: a :class:`gpu.api.AttentionLaunch`);
    fills dq, dk, dv. ``delta`` stays on the device."""
    key = (p.block_q, p.block_k, p.d_max, p.dv_max)
    ks = _CACHE.get(key)
    if ks is None:
        ks = _CACHE[key] = {n: cuda.jit(f) for n, f in kernels(*key).items()}
    B, Hq, Lq, _ = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    NT = p.block_q * p.block_k
    d_q, d_k, d_v, d_do, d_lse = (cuda.to_device(a) for a in (q, k, v, dout, lse))
    delta = cuda.to_device(np.full((B, Hq, Lq), np.nan, dtype=np.float32))
    d_dq, d_dk, d_dv = (cuda.to_device(a) for a in (dq, dk, dv))
    ks["flash_backward_dot"][((Lq + NT - 1) // NT, B * Hq), NT](cuda.to_device(out), d_do, delta)
    sc = (np.float32(p.scale), np.float32(p.softcap), np.int32(p.offset), np.int32(p.left), np.int32(p.right),
          np.int32(p.group))
    ks["flash_backward_dkdv"][((Lk + p.block_k - 1) // p.block_k, B * Hkv), NT](
        d_q, d_k, d_v, d_do, d_lse, delta, d_dk, d_dv, *sc)
    ks["flash_backward_dq"][((Lq + p.block_q - 1) // p.block_q, B * Hq), NT](
        d_q, d_k, d_v, d_do, d_lse, delta, d_dq, *sc)
    d_dq.copy_to_host(dq)
    d_dk.copy_to_host(dk)
    d_dv.copy_to_host(dv)
