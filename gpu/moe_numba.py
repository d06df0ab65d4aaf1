"""MoE expert computation as Numba CUDA kernels: permute by expert, grouped GEMM, gated combine.

Given a routing (``refimpl.moe.route`` / ``gpu.route``: indices, position, kept, gates of
(T, k)), the semantics of ``refimpl.moe.apply_experts``:

    bins:     expert e owns rows offsets[e] .. offsets[e+1] - 1 of the permuted buffer, in slot
              order; sparse layout (Megablocks, ``refimpl.moe.sort_by_expert``): offsets =
              exclusive prefix sum of the kept counts; dense GShard layout
              (``refimpl.moe.dispatch_dense``): every bin has C rows (the capacity), empty slots 0;
    permute:  row(t, j) = offsets[indices[t, j]] + position[t, j] for a kept choice, -1 otherwise;
              xp[row(t, j)] = x[t]                                    (the slot assignment of route)
    experts:  h = act(xp W1[e] + b1[e]),  out = h W2[e] + b2[e]        (FFN; act relu | gelu | silu)
              h = silu(xp Wg[e]) * (xp Wu[e]),  out = h Wd[e]          (SwiGLU)
              each a grouped GEMM over the bins: row r of bin e times expert e's matrix;
    combine:  y[t] = sum_j gates[t, j] out[row(t, j)]  over the kept choices (unpermute).

Kernels:
  1. ``moe_bin_counts``: one block per expert, NT threads stride over the T k choices and
     count the kept ones of expert e (tree reduction in shared memory);
  2. ``moe_bin_offsets``: one thread, offsets[e+1] = offsets[e] + (C if dense else count[e])
     (E is small: a sequential scan);
  3. ``moe_permute``: one block per choice (t, j), threads over the columns: copies x[t]
     into its row; thread 0 writes row_of[t, j] and the row's token;
  4. ``moe_grouped_gemm``: out[r, :N] = act(xp[r] W[e] (+ b[e])) (gated: silu(xp Wg) *
     (xp Wu)), tiles of BM rows x BN columns, block (BM * BN) threads, thread (r, c) =
     (tid / BN, tid % BN) owns one output; the K dimension in BK-wide slices staged through
     shared memory (X tile BM x BK, W tile BK x BN, a second W tile when gated). Grid x
     enumerates the (expert, row tile) pairs: a block walks the offsets to find its
     expert e and its first row (sum_e ceil(n_e / BM) <= ceil(rows / BM) + E tiles);
     blocks past the last tile return at once (the whole block, before any barrier).
     Rows of a tile never cross a bin, so one W tile serves the whole block (what
     ``torch._grouped_mm`` / Megablocks' grouped GEMM do with tensor cores);
  5. ``moe_combine``: one block per token, threads over the columns: y[t] written once.

float32 in, float32 accumulation. Shared memory of the GEMM: 4 (BM BK + 2 BK BN) bytes
(16 x 16 x 16: 3 KiB); of the counts: 4 NT bytes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
HALF = np.float32(0.5)
RSQRT2 = np.float32(0.7071067811865476)

#: activation codes of the grouped GEMM
ACT_CODES = {"none": 0, "relu": 1, "gelu": 2, "silu": 3, "swiglu": 4}


def make_moe_kernels(NT: int, BM: int, BN: int, BK: int):
    """{name: function} for NT threads (counts, permute, combine) and GEMM tiles BM x BN x BK."""
    GT = BM * BN

    def moe_bin_counts(indices, kept, counts):
        T = indices.shape[0]
        k = indices.shape[1]
        e = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array(NT, np.int32)
        n = 0
        for a in range(tid, T * k, NT):
            if kept[a // k, a % k] != 0 and indices[a // k, a % k] == e:
                n += 1
        red[tid] = n
        cuda.syncthreads()
        stride = NT // 2
        while stride > 0:
            if tid < stride:
                red[tid] += red[tid + stride]
            cuda.syncthreads()
            stride //= 2
        if tid == 0:
            counts[e] = red[0]

    def moe_bin_offsets(counts, offsets, dense_rows):
        if cuda.threadIdx.x == 0 and cuda.blockIdx.x == 0:
            E = counts.shape[0]
            offsets[0] = 0
            for e in range(E):
                if dense_rows >= 0:
                    offsets[e + 1] = offsets[e] + dense_rows
                else:
                    offsets[e + 1] = offsets[e] + counts[e]

    def moe_permute(x, indices, position, kept, offsets, xp, row_of, row_token):
        D = x.shape[1]
        k = indices.shape[1]
        a = cuda.blockIdx.x
        t = a // k
        j = a % k
        tid = cuda.threadIdx.x
        row = -1
        if kept[t, j] != 0:
            row = offsets[indices[t, j]] + position[t, j]
            for col in range(tid, D, NT):
                xp[row, col] = x[t, col]
        if tid == 0:
            row_of[t, j] = row
            if row >= 0:
                row_token[row] = t

    def moe_grouped_gemm(xp, w, w2, bias, offsets, out, act):
        K = xp.shape[1]
        N = w.shape[2]
        E = offsets.shape[0] - 1
        tid = cuda.threadIdx.x
        r = tid // BN
        c = tid % BN
        # this block's (expert, row tile): walk the bins
        tile = cuda.blockIdx.x
        e_blk = -1
        row0 = 0
        row_end = 0
        for e in range(E):
            n_tiles = (offsets[e + 1] - offsets[e] + BM - 1) // BM
            if e_blk < 0:
                if tile < n_tiles:
                    e_blk = e
                    row0 = offsets[e] + tile * BM
                    row_end = offsets[e + 1]
                else:
                    tile -= n_tiles
        if e_blk < 0:
            return  # past the last tile: the whole block leaves before any barrier
        col0 = cuda.blockIdx.y * BN
        Xs = cuda.shared.array((BM, BK), np.float32)
        Ws = cuda.shared.array((BK, BN), np.float32)
        Us = cuda.shared.array((BK, BN), np.float32)
        acc = ZERO
        acc2 = ZERO
        n_kt = (K + BK - 1) // BK
        for kt in range(n_kt):
            k0 = kt * BK
            cuda.syncthreads()
            for e2 in range(tid, BM * BK, GT):
                rr = e2 // BK
                kk = e2 % BK
                if row0 + rr < row_end and k0 + kk < K:
                    Xs[rr, kk] = xp[row0 + rr, k0 + kk]
                else:
                    Xs[rr, kk] = ZERO
            for e2 in range(tid, BK * BN, GT):
                kk = e2 // BN
                cc = e2 % BN
                if k0 + kk < K and col0 + cc < N:
                    Ws[kk, cc] = w[e_blk, k0 + kk, col0 + cc]
                    if act == 4:
                        Us[kk, cc] = w2[e_blk, k0 + kk, col0 + cc]
                else:
                    Ws[kk, cc] = ZERO
                    Us[kk, cc] = ZERO
            cuda.syncthreads()
            for kk in range(BK):
                acc += Xs[r, kk] * Ws[kk, c]
                if act == 4:
                    acc2 += Xs[r, kk] * Us[kk, c]
        row = row0 + r
        col = col0 + c
        if row < row_end and col < N:
            u = acc
            if act != 4:
                u = u + bias[e_blk, col]
            if act == 1:
                u = max(u, ZERO)
            elif act == 2:
                u = u * (HALF * math.erfc(-u * RSQRT2))  # u Phi(u), Phi by erfc (no cancellation at u << 0)
            elif act == 3:
                u = u / (ONE + math.exp(-u))
            elif act == 4:
                u = (u / (ONE + math.exp(-u))) * acc2  # silu(x Wg) * (x Wu)
            out[row, col] = u

    def moe_combine(rows, row_of, gates, y):
        D = y.shape[1]
        k = row_of.shape[1]
        t = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        for col in range(tid, D, NT):
            acc = ZERO
            for j in range(k):
                r = row_of[t, j]
                if r >= 0:
                    acc += gates[t, j] * rows[r, col]
            y[t, col] = acc

    return {"moe_bin_counts": moe_bin_counts, "moe_bin_offsets": moe_bin_offsets, "moe_permute": moe_permute,
            "moe_grouped_gemm": moe_grouped_gemm, "moe_combine": moe_combine}


_F2 = "float32[:, ::1]"
_I2 = "int32[:, ::1]"
SIGNATURES = {
    "moe_bin_counts": f"void({_I2}, {_I2}, int32[::1])",
    "moe_bin_offsets": "void(int32[::1], int32[::1], int32)",
    "moe_permute": f"void({_F2}, {_I2}, {_I2}, {_I2}, int32[::1], {_F2}, {_I2}, int32[::1])",
    "moe_grouped_gemm": f"void({_F2}, float32[:, :, ::1], float32[:, :, ::1], {_F2}, int32[::1], {_F2}, int32)",
    "moe_combine": f"void({_F2}, {_I2}, {_F2}, {_F2})",
}
DEFAULTS = {"NT": 128, "BM": 16, "BN": 16, "BK": 16}


def kernels() -> dict:
    """{name: (function, signature)} at the default sizes (for compile_ptx)."""
    fns = make_moe_kernels(DEFAULTS["NT"], DEFAULTS["BM"], DEFAULTS["BN"], DEFAULTS["BK"])
    return {n: (fns[n], SIGNATURES[n]) for n in fns}


_CACHE: dict = {}


def _kernels(p):
    key = (p.threads, p.bm, p.bn, p.bk)
    ks = _CACHE.get(key)
    if ks is None:
        ks = _CACHE[key] = {n: cuda.jit(f) for n, f in make_moe_kernels(*key).items()}
    return ks


def launch_permute(x, indices, position, kept, xp, row_of, row_token, offsets, counts, p) -> None:
    """Kernels 1-3 on host arrays: fills counts, offsets, xp, row_of, row_token."""
    ks = _kernels(p)
    T, k = indices.shape
    E = counts.shape[0]
    d = {n: cuda.to_device(a) for n, a in (("xp", xp), ("row_of", row_of), ("row_token", row_token),
                                            ("offsets", offsets), ("counts", counts))}
    di, dpos, dk = cuda.to_device(indices), cuda.to_device(position), cuda.to_device(kept)
    ks["moe_bin_counts"][(E, 1), p.threads](di, dk, d["counts"])
    ks["moe_bin_offsets"][(1, 1), 1](d["counts"], d["offsets"], np.int32(p.dense_rows))
    if T * k:
        ks["moe_permute"][(T * k, 1), p.threads](x, di, dpos, dk, d["offsets"], d["xp"], d["row_of"],
                                                 d["row_token"])
    for n, a in (("xp", xp), ("row_of", row_of), ("row_token", row_token), ("offsets", offsets), ("counts", counts)):
        d[n].copy_to_host(a)


def launch_gemm(xp, w, w2, bias, offsets, out, act, p) -> None:
    """Kernel 4 on host arrays: fills out (rows, N)."""
    ks = _kernels(p)
    rows = xp.shape[0]
    E, N = w.shape[0], w.shape[2]
    d_out = cuda.to_device(out)
    grid = ((rows + p.bm - 1) // p.bm + E, (N + p.bn - 1) // p.bn)
    ks["moe_grouped_gemm"][grid, p.bm * p.bn](xp, w, w2, bias, offsets, d_out, np.int32(act))
    d_out.copy_to_host(out)


def launch_combine(rows, row_of, gates, y, p) -> None:
    """Kernel 5 on host arrays: fills y (T, D)."""
    ks = _kernels(p)
    d_y = cuda.to_device(y)
    ks["moe_combine"][(y.shape[0], 1), p.threads](rows, row_of, gates, d_y)
    d_y.copy_to_host(y)
