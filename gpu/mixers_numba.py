"""Linear-time mixer kernels in Numba CUDA (float32, float32 accumulation, block barriers only).

Selective scan (Mamba; the definition is ``refimpl.mixers.ssm.selective_scan`` form "sequential",
ZOH for A and Euler for B), per channel (b, h, p) with a diagonal state x of N entries::

    x_t[n] = exp(delta_t A[n]) x_{t-1}[n] + (delta_t u_t) B_t[n]
    y_t    = sum_n C_t[n] x_t[n] + D u_t,     out_t = y_t * silu(z_t)

  * one thread per channel, sequential over L, the state in registers (a per-thread array of
    NMAX floats indexed by constants once its loops are unrolled: NVRTC unrolls both variants,
    N <= 16 and N <= 64; NVVM unrolls N <= 16 and leaves the N <= 64 variant's array in local
    memory, tests/gpu/test_mixer_kernels.py); grid ``(ceil(P / BLOCK), B * H)``, ``BLOCK``
    threads; head h reads the B/C group ``h // (H / G)``. No shared memory, no barriers.
  * I/O per channel (elements): reads 3 L (u, delta, z) + 2 L N (the B and C rows of its group,
    re-read by every channel: a tuned kernel stages them through shared memory once per block)
    + 2 N (A, the initial state); writes L + N.

Chunked gated linear attention forward (the definition is ``refimpl.mixers.gated`` form
"recurrent"; the chunked form of its module doc), per (b, h) and a tile of BV value columns::

    G_i    = sum_{a <= s <= a+i} max(g_s, -800)        (cumulative log-gate inside the chunk [a, a+BT))
    Att_ij = scale sum_c q_ic k_jc exp(G_ic - G_jc),  j <= i        (intra-chunk masked product)
    o_i    = scale (q_i * exp(G_i))^T S + sum_{j <= i} Att_ij v_j    (S: the state carried in)
    S     <- diag(exp(G_last)) S + sum_j (k_j * exp(G_last - G_j)) v_j^T   (inter-chunk carry)

  * grid ``(ceil(V / BV), B * H)``, ``NT`` threads; the state tile S (K x BV) stays in shared
    memory for the whole sequence, the chunk's Q, K, G (BT x K), V (BT x BV) and Att (BT x BT)
    are staged there; every exponent is <= 0 (no overflow for g <= 0).
  * shared memory ``4 * (3 BT KMAX + BT BV + BT BT + KMAX BV)`` bytes (BT = BV = 16, KMAX = 64:
    18,432 B); ``gpu.mixers_api.gla_shared_bytes``.
  * I/O per (b, h) (elements): reads ceil(V / BV) L (2 K + GK) (q, k and the gates, once per
    value tile) + L V (v) + K V (the initial state); writes L V + K V.
  * a gate of one value per token (RetNet / Mamba-2 style) is passed as (B, H, L, 1) and read at
    channel 0 (``GK = 1``); no gate is a zero gate.

Chunked (gated) delta rule, WY/UT form (the definition is ``refimpl.mixers.delta_rule`` form
"recurrent"; the chunked form of its module doc), per (b, h) and a tile of BV value columns, with
a per-token gate gam_i = sum_{a <= s <= a+i} max(g_s, -800) and rate beta_i::

    KK_ij = (k_i . k_j) exp(gam_i - gam_j) (j < i),   QK_ij = (q_i . k_j) exp(gam_i - gam_j) (j <= i)
    (I + strict_tril(diag(beta) KK)) U = diag(beta) (V - diag(exp(gam)) K S)     (the UT system)
    o_i = scale (exp(gam_i) q_i^T S + sum_{j <= i} QK_ij u_j)
    S  <- exp(gam_last) S + sum_j k_j exp(gam_last - gam_j) u_j^T

  * the same grid and state tile as GLA; the unit lower-triangular system is solved by forward
    substitution, one thread per value column (its columns are independent), which is the
    triangular solve fla's chunked kernels do by forming T = (I + ...)^-1 explicitly;
  * shared memory ``4 * (2 BT KMAX + BT BV + 2 BT BT + KMAX BV + 2 BT)`` bytes
    (``gpu.mixers_api.delta_shared_bytes``; 15,488 B at BT = BV = 16, KMAX = 64);
  * I/O per (b, h) (elements): reads ceil(V / BV) L (2 K + 2) (q, k, beta, g) + L V + K V;
    writes L V + K V.

All three are reference-quality kernels (scalar FMAs, no tensor cores, no warp shuffles): what the
Numba CUDA simulator executes, compiled to PTX for cc 8.0 / 9.0 in tests/gpu/test_mixer_kernels.py.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
G_FLOOR = np.float32(-800.0)


def make_selective_scan(BLOCK: int, NMAX: int):
    """The scan kernel for ``BLOCK`` threads per block and states up to ``NMAX`` entries.

    Arguments: u, delta, z (B, H, L, P); A (H, P, N); Bm, Cm (B, G, L, N); Dskip (H, P);
    x0, last (B, H, P, N); out (B, H, L, P); has_d, has_z, has_x0 int32 flags (an absent
    array is passed as a 1-element placeholder of its rank and never read).
    """

    def selective_scan(u, delta, A, Bm, Cm, Dskip, z, x0, out, last, has_d, has_z, has_x0):
        H = u.shape[1]
        L = u.shape[2]
        P = u.shape[3]
        N = A.shape[2]
        G = Bm.shape[1]
        bh = cuda.blockIdx.y
        b = bh // H
        h = bh % H
        grp = h // (H // G)  # head h reads group h // (H / G)
        p = cuda.blockIdx.x * BLOCK + cuda.threadIdx.x
        if p < P:  # no barrier in this kernel: idle threads may leave
            x = cuda.local.array(NMAX, np.float32)
            # loops over the state run to the constant NMAX (unrolled by NVVM), so x is indexed by
            # constants and lives in registers; n < N guards the entries past N
            for n in range(NMAX):
                if has_x0 and n < N:
                    x[n] = x0[b, h, p, n]
                else:
                    x[n] = ZERO
            dskip = ZERO
            if has_d:
                dskip = Dskip[h, p]
            for t in range(L):
                dt = delta[b, h, t, p]
                ut = u[b, h, t, p]
                dtu = dt * ut
                y = ZERO
                for n in range(NMAX):
                    if n < N:
                        x[n] = math.exp(dt * A[h, p, n]) * x[n] + dtu * Bm[b, grp, t, n]
                        y += Cm[b, grp, t, n] * x[n]
                y += dskip * ut
                if has_z:
                    zt = z[b, h, t, p]
                    y = y * (zt / (ONE + math.exp(-zt)))
                out[b, h, t, p] = y
            for n in range(NMAX):
                if n < N:
                    last[b, h, p, n] = x[n]

    return selective_scan


def scan_signature():
    a4 = "float32[:, :, :, ::1]"
    return (f"void({a4}, {a4}, float32[:, :, ::1], {a4}, {a4}, float32[:, ::1], {a4}, {a4}, {a4}, {a4},"
            " int32, int32, int32)")


def make_gla_forward(BT: int, BV: int, KMAX: int, NT: int):
    """The chunked GLA forward for chunks of ``BT`` tokens, ``BV`` value columns per block,
    key dims up to ``KMAX`` and ``NT`` threads per block.

    Arguments: q, k (B, H, L, K); v, o (B, H, L, V); g (B, H, L, GK), GK = K or 1; s0, sT
    (B, H, K, V); scale float32.
    """

    def gla_forward(q, k, v, g, s0, o, sT, scale):
        H = q.shape[1]
        L = q.shape[2]
        K = q.shape[3]
        V = v.shape[3]
        GK = g.shape[3]
        bh = cuda.blockIdx.y
        b = bh // H
        h = bh % H
        v0 = cuda.blockIdx.x * BV
        tid = cuda.threadIdx.x

        Qs = cuda.shared.array((BT, KMAX), np.float32)
        Ks = cuda.shared.array((BT, KMAX), np.float32)
        Gc = cuda.shared.array((BT, KMAX), np.float32)
        Vs = cuda.shared.array((BT, BV), np.float32)
        Att = cuda.shared.array((BT, BT), np.float32)
        S = cuda.shared.array((KMAX, BV), np.float32)

        for e in range(tid, K * BV, NT):  # the state carried in
            c = e // BV
            j = e % BV
            if v0 + j < V:
                S[c, j] = s0[b, h, c, v0 + j]
            else:
                S[c, j] = ZERO

        n_chunks = (L + BT - 1) // BT
        for ch in range(n_chunks):
            a = ch * BT
            n = min(BT, L - a)  # tokens in this chunk (the last may be partial)
            cuda.syncthreads()  # readers of the previous chunk's tiles are done
            for e in range(tid, BT * K, NT):
                i = e // K
                c = e % K
                if i < n:
                    Qs[i, c] = q[b, h, a + i, c]
                    Ks[i, c] = k[b, h, a + i, c]
                    gc = c if GK > 1 else 0
                    Gc[i, c] = max(g[b, h, a + i, gc], G_FLOOR)
                else:
                    Qs[i, c] = ZERO
                    Ks[i, c] = ZERO
                    Gc[i, c] = ZERO
            for e in range(tid, BT * BV, NT):
                i = e // BV
                j = e % BV
                if i < n and v0 + j < V:
                    Vs[i, j] = v[b, h, a + i, v0 + j]
                else:
                    Vs[i, j] = ZERO
            cuda.syncthreads()

            # cumulative log-gate inside the chunk, one thread per key channel
            for c in range(tid, K, NT):
                acc = ZERO
                for i in range(n):
                    acc += Gc[i, c]
                    Gc[i, c] = acc
            cuda.syncthreads()

            # intra-chunk masked product
            for e in range(tid, BT * BT, NT):
                i = e // BT
                j = e % BT
                s = ZERO
                if j <= i and i < n:
                    for c in range(K):
                        s += Qs[i, c] * Ks[j, c] * math.exp(Gc[i, c] - Gc[j, c])
                Att[i, j] = s * scale
            cuda.syncthreads()

            # outputs: the carried state's read plus the intra-chunk part
            for e in range(tid, BT * BV, NT):
                i = e // BV
                j = e % BV
                if i < n and v0 + j < V:
                    inter = ZERO
                    for c in range(K):
                        inter += Qs[i, c] * math.exp(Gc[i, c]) * S[c, j]
                    acc = inter * scale
                    for jj in range(i + 1):
                        acc += Att[i, jj] * Vs[jj, j]
                    o[b, h, a + i, v0 + j] = acc
            cuda.syncthreads()

            # inter-chunk carry: each thread owns its (c, j) entries of S
            for e in range(tid, K * BV, NT):
                c = e // BV
                j = e % BV
                g_last = Gc[n - 1, c]
                acc = math.exp(g_last) * S[c, j]
                for jj in range(n):
                    acc += Ks[jj, c] * math.exp(g_last - Gc[jj, c]) * Vs[jj, j]
                S[c, j] = acc

        cuda.syncthreads()
        for e in range(tid, K * BV, NT):
            c = e // BV
            j = e % BV
            if v0 + j < V:
                sT[b, h, c, v0 + j] = S[c, j]

    return gla_forward


def gla_signature():
    a4 = "float32[:, :, :, ::1]"
    return f"void({a4}, {a4}, {a4}, {a4}, {a4}, {a4}, {a4}, float32)"


def make_delta_forward(BT: int, BV: int, KMAX: int, NT: int):
    """The chunked (gated) delta rule for chunks of ``BT`` tokens, ``BV`` value columns per block,
    key dims up to ``KMAX``, ``NT`` threads (the UT form of ``refimpl.mixers.delta_rule``).

    Arguments: q, k (B, H, L, K); v, o (B, H, L, V); beta, g (B, H, L); s0, sT (B, H, K, V);
    scale float32. Value columns of the state evolve independently (the erase term
    beta k (k^T S) acts column by column), so a block owns BV columns of S for the whole sequence.
    """

    def delta_forward(q, k, v, beta, g, s0, o, sT, scale):
        H = q.shape[1]
        L = q.shape[2]
        K = q.shape[3]
        V = v.shape[3]
        bh = cuda.blockIdx.y
        b = bh // H
        h = bh % H
        v0 = cuda.blockIdx.x * BV
        tid = cuda.threadIdx.x

        Qs = cuda.shared.array((BT, KMAX), np.float32)
        Ks = cuda.shared.array((BT, KMAX), np.float32)
        U = cuda.shared.array((BT, BV), np.float32)  # v, then the right-hand side, then u
        KK = cuda.shared.array((BT, BT), np.float32)
        QK = cuda.shared.array((BT, BT), np.float32)
        S = cuda.shared.array((KMAX, BV), np.float32)
        gam = cuda.shared.array(BT, np.float32)
        bet = cuda.shared.array(BT, np.float32)

        for e in range(tid, K * BV, NT):  # the state carried in
            c = e // BV
            j = e % BV
            if v0 + j < V:
                S[c, j] = s0[b, h, c, v0 + j]
            else:
                S[c, j] = ZERO

        n_chunks = (L + BT - 1) // BT
        for ch in range(n_chunks):
            a = ch * BT
            n = min(BT, L - a)
            cuda.syncthreads()  # readers of the previous chunk's tiles are done
            for e in range(tid, BT * K, NT):
                i = e // K
                c = e % K
                if i < n:
                    Qs[i, c] = q[b, h, a + i, c]
                    Ks[i, c] = k[b, h, a + i, c]
                else:
                    Qs[i, c] = ZERO
                    Ks[i, c] = ZERO
            for e in range(tid, BT * BV, NT):
                i = e // BV
                j = e % BV
                if i < n and v0 + j < V:
                    U[i, j] = v[b, h, a + i, v0 + j]
                else:
                    U[i, j] = ZERO
            if tid == 0:  # cumulative log-gate inside the chunk
                acc = ZERO
                for i in range(BT):
                    if i < n:
                        acc += max(g[b, h, a + i], G_FLOOR)
                        bet[i] = beta[b, h, a + i]
                    else:
                        bet[i] = ZERO
                    gam[i] = acc
            cuda.syncthreads()

            # KK_ij = (k_i . k_j) exp(gam_i - gam_j), j < i;  QK_ij = (q_i . k_j) exp(gam_i - gam_j), j <= i
            for e in range(tid, BT * BT, NT):
                i = e // BT
                j = e % BT
                kk = ZERO
                qk = ZERO
                if j <= i and i < n:
                    for c in range(K):
                        kk += Ks[i, c] * Ks[j, c]
                        qk += Qs[i, c] * Ks[j, c]
                    d = math.exp(gam[i] - gam[j])
                    kk = kk * d
                    qk = qk * d
                if j < i:
                    KK[i, j] = kk
                else:
                    KK[i, j] = ZERO
                QK[i, j] = qk
            # right-hand side beta_i (v_i - exp(gam_i) k_i^T S), in place of v
            for e in range(tid, BT * BV, NT):
                i = e // BV
                j = e % BV
                ks = ZERO
                for c in range(K):
                    ks += Ks[i, c] * S[c, j]
                U[i, j] = bet[i] * (U[i, j] - math.exp(gam[i]) * ks)
            cuda.syncthreads()

            # the UT system (I + strict_tril(diag(beta) KK)) U = rhs, forward substitution, one
            # thread per value column (columns are independent)
            for j in range(tid, BV, NT):
                for i in range(1, n):
                    acc = ZERO
                    for jj in range(i):
                        acc += KK[i, jj] * U[jj, j]
                    U[i, j] = U[i, j] - bet[i] * acc
            cuda.syncthreads()

            # outputs: scale (exp(gam_i) q_i^T S + sum_{j <= i} QK_ij u_j)
            for e in range(tid, BT * BV, NT):
                i = e // BV
                j = e % BV
                if i < n and v0 + j < V:
                    inter = ZERO
                    for c in range(K):
                        inter += Qs[i, c] * S[c, j]
                    acc = math.exp(gam[i]) * inter
                    for jj in range(i + 1):
                        acc += QK[i, jj] * U[jj, j]
                    o[b, h, a + i, v0 + j] = acc * scale
            cuda.syncthreads()

            # inter-chunk carry: S <- exp(gam_last) S + sum_j k_j exp(gam_last - gam_j) u_j^T
            for e in range(tid, K * BV, NT):
                c = e // BV
                j = e % BV
                g_last = gam[n - 1]
                acc = math.exp(g_last) * S[c, j]
                for jj in range(n):
                    acc += Ks[jj, c] * math.exp(g_last - gam[jj]) * U[jj, j]
                S[c, j] = acc

        cuda.syncthreads()
        for e in range(tid, K * BV, NT):
            c = e // BV
            j = e % BV
            if v0 + j < V:
                sT[b, h, c, v0 + j] = S[c, j]

    return delta_forward


def delta_signature():
    a4 = "float32[:, :, :, ::1]"
    a3 = "float32[:, :, ::1]"
    return f"void({a4}, {a4}, {a4}, {a3}, {a3}, {a4}, {a4}, {a4}, float32)"


_CACHE: dict = {}


def _kernel(key, make):
    kern = _CACHE.get(key)
    if kern is None:
        kern = _CACHE[key] = cuda.jit(make(*key[1:]))
    return kern


def launch_scan(u, delta, A, Bm, Cm, Dskip, z, x0, out, last, p) -> None:
    """Run the scan on host arrays; ``p`` is a :class:`gpu.mixers_api.ScanLaunch`."""
    kern = _kernel(("scan", p.block, p.n_max), make_selective_scan)
    b, H, _, P = u.shape
    grid = ((P + p.block - 1) // p.block, b * H)
    kern[grid, p.block](u, delta, A, Bm, Cm, Dskip, z, x0, out, last,
                        np.int32(p.has_d), np.int32(p.has_z), np.int32(p.has_x0))


def launch_gla(q, k, v, g, s0, o, sT, p) -> None:
    """Run the chunked GLA forward on host arrays; ``p`` is a :class:`gpu.mixers_api.GLALaunch`."""
    kern = _kernel(("gla", p.chunk, p.block_v, p.k_max, p.threads), make_gla_forward)
    B, H, _, _ = q.shape
    grid = ((v.shape[3] + p.block_v - 1) // p.block_v, B * H)
    kern[grid, p.threads](q, k, v, g, s0, o, sT, np.float32(p.scale))


def launch_delta(q, k, v, beta, g, s0, o, sT, p) -> None:
    """Run the chunked delta rule on host arrays; ``p`` is a :class:`gpu.mixers_api.GLALaunch`."""
    kern = _kernel(("delta", p.chunk, p.block_v, p.k_max, p.threads), make_delta_forward)
    B, H, _, _ = q.shape
    grid = ((v.shape[3] + p.block_v - 1) // p.block_v, B * H)
    kern[grid, p.threads](q, k, v, beta, g, s0, o, sT, np.float32(p.scale))
