"""MoE token-choice routing as Numba CUDA kernels (float32 scores, int32 indices).

The semantics of ``refimpl.moe.route`` for score softmax | sigmoid, normalize
none | before_drop | after_drop, a capacity C (or none), drop_order k_major |
token_major, route_scale and a padding mask. Three kernels:

1. ``route_topk``, one thread per token t (TOK_BLOCK threads per block):

       p_t = softmax(z_t) = exp(z_t - max z_t) / sum exp(z_t - max z_t)   or sigmoid(z_t)
       indices[t, s] = the s-th largest logit, ties to the lower expert id
       raw[t, s]     = p_t[indices[t, s]]

   Selection compares the logits, not the rounded probabilities: softmax and
   sigmoid are strictly increasing, so the order is the same, and float32 exp
   cannot merge two distinct logits into a tie. The s-th choice is found by a
   scan over the experts for the largest logit strictly after the previous
   choice in the total order (logit descending, id ascending): O(k E) per token,
   no per-thread array of size E.

2. ``route_positions``, one block per expert e (SCAN_BLOCK threads): the T*k
   assignments in claiming order (k_major: f = s*T + t, all first choices in
   token order, then all second choices, ...; token_major: f = t*k + s) are cut
   into SCAN_BLOCK contiguous chunks; each thread counts the assignments to e in
   its chunk, a Hillis-Steele prefix sum over the block (shared memory and
   barriers only, log2(SCAN_BLOCK) steps) gives the number of earlier ones, and
   a second pass writes ``rank[t, s]`` (GShard's ``cumsum(mask) - 1``). The last
   thread writes ``counts[e]``, the assignments to e before dropping. Padding
   tokens make no assignment. Deterministic: no atomics.

3. ``route_gates``, one thread per token: kept = real token and (C < 0 or
   rank < C), position = rank if kept else -1, and

       none         g = w * kept
       before_drop  g = w / sum_s w_s * kept                (0 if the sum is 0)
       after_drop   g = w * kept / sum_s w_s kept_s         (0 if the sum is 0)

   times route_scale.

Memory traffic: kernel 1 reads T*E logits and writes T*E probabilities and
2*T*k choices; kernel 2 reads the T*k choices once per expert block (E*T*k
reads, served from L2 for realistic T*k) and writes T*k ranks and E counts;
kernel 3 reads and writes O(T*k). Shared memory: SCAN_BLOCK * 4 bytes (512 B at
the default 128) in kernel 2 only; kernels 1 and 3 use registers only.
Occupancy: kernels 1 and 3 are latency-bound loops over E per thread with 64-thread
blocks; kernel 2 launches E blocks, one per expert (E >= 8 in practice keeps
at least 8 SMs busy; the per-expert work is the scan of T*k entries).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)

DEFAULT_TOK_BLOCK = 64
DEFAULT_SCAN_BLOCK = 128


def make_routing_kernels(TOK_BLOCK: int, SCAN_BLOCK: int) -> dict:
    """The three kernels' Python functions for the given block sizes (compile-time constants)."""

    def route_topk(logits, probs, indices, raw, k, score):
        T = logits.shape[0]
        E = logits.shape[1]
        t = cuda.blockIdx.x * TOK_BLOCK + cuda.threadIdx.x
        if t < T:
            if score == 0:  # softmax over the experts
                m = NEG_INF
                for e in range(E):
                    m = max(m, logits[t, e])
                total = ZERO
                for e in range(E):
                    total += math.exp(logits[t, e] - m)
                for e in range(E):
                    probs[t, e] = math.exp(logits[t, e] - m) / total
            else:  # sigmoid
                for e in range(E):
                    probs[t, e] = ONE / (ONE + math.exp(-logits[t, e]))
            # the s-th choice: the largest logit strictly after the previous choice in
            # the order (logit descending, expert id ascending): ties to the lower id
            prev = ZERO
            prev_id = -1
            for s in range(k):
                best = -1
                best_z = ZERO
                for e in range(E):
                    x = logits[t, e]
                    after_prev = prev_id < 0 or x < prev or (x == prev and e > prev_id)
                    if after_prev and (best < 0 or x > best_z):
                        best = e
                        best_z = x
                indices[t, s] = best
                raw[t, s] = probs[t, best]
                prev = best_z
                prev_id = best

    def route_positions(indices, token_mask, rank, counts, order):
        T = indices.shape[0]
        k = indices.shape[1]
        scan = cuda.shared.array(SCAN_BLOCK, np.int32)
        e = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        n = T * k
        chunk = (n + SCAN_BLOCK - 1) // SCAN_BLOCK
        f0 = min(n, tid * chunk)
        f1 = min(n, f0 + chunk)

        # assignments to expert e in my chunk of the claiming order
        mine = 0
        for f in range(f0, f1):
            if order == 0:  # k_major: all first choices in token order, then ...
                t = f % T
                s = f // T
            else:  # token_major: token by token
                t = f // k
                s = f % k
            if token_mask[t] != 0 and indices[t, s] == e:
                mine += 1
        scan[tid] = mine
        cuda.syncthreads()
        off = 1
        while off < SCAN_BLOCK:  # Hillis-Steele inclusive scan
            add = 0
            if tid >= off:
                add = scan[tid - off]
            cuda.syncthreads()
            scan[tid] += add
            cuda.syncthreads()
            off *= 2
        pos = scan[tid] - mine  # assignments to e before my chunk
        for f in range(f0, f1):
            if order == 0:
                t = f % T
                s = f // T
            else:
                t = f // k
                s = f % k
            if token_mask[t] != 0 and indices[t, s] == e:
                rank[t, s] = pos
                pos += 1
        if tid == SCAN_BLOCK - 1:
            counts[e] = scan[SCAN_BLOCK - 1]

    def route_gates(raw, rank, token_mask, gates, kept, position, capacity, normalize, route_scale):
        T = raw.shape[0]
        k = raw.shape[1]
        t = cuda.blockIdx.x * TOK_BLOCK + cuda.threadIdx.x
        if t < T:
            sum_all = ZERO
            sum_kept = ZERO
            for s in range(k):
                r = rank[t, s]
                kp = 0
                if token_mask[t] != 0 and (capacity < 0 or r < capacity):
                    kp = 1
                kept[t, s] = kp
                if kp == 1:
                    position[t, s] = r
                    sum_kept += raw[t, s]
                else:
                    position[t, s] = -1
                sum_all += raw[t, s]
            for s in range(k):
                w = raw[t, s]
                g = ZERO
                if kept[t, s] == 1:
                    if normalize == 0:  # none
                        g = w
                    elif normalize == 1:  # before_drop
                        if sum_all > ZERO:
                            g = w / sum_all
                    else:  # after_drop
                        if sum_kept > ZERO:
                            g = w / sum_kept
                gates[t, s] = g * route_scale

    return {"route_topk": route_topk, "route_positions": route_positions, "route_gates": route_gates}


SIGNATURES = {
    "route_topk": "void(float32[:, ::1], float32[:, ::1], int32[:, ::1], float32[:, ::1], int32, int32)",
    "route_positions": "void(int32[:, ::1], int32[::1], int32[:, ::1], int32[::1], int32)",
    "route_gates": "void(float32[:, ::1], int32[:, ::1], int32[::1], float32[:, ::1], int32[:, ::1],"
                   " int32[:, ::1], int32, int32, float32)",
}


def kernels() -> dict:
    """{name: (pyfunc, signature)} at the default block sizes (for compile_ptx)."""
    fns = make_routing_kernels(DEFAULT_TOK_BLOCK, DEFAULT_SCAN_BLOCK)
    return {name: (fns[name], SIGNATURES[name]) for name in fns}


_CACHE: dict = {}


def launch(logits, token_mask, outs, p) -> None:
    """Run the three kernels on host arrays; intermediate arrays stay on the device."""
    from .constants import INT_UNWRITTEN

    key = (p.token_block, p.scan_block)
    ks = _CACHE.get(key)
    if ks is None:
        ks = _CACHE[key] = {n: cuda.jit(f) for n, f in make_routing_kernels(*key).items()}
    T, E = logits.shape
    d = {name: cuda.to_device(a) for name, a in outs.items()}
    z = cuda.to_device(logits)
    mask = cuda.to_device(token_mask)
    raw = cuda.to_device(np.full((T, p.k), np.nan, dtype=np.float32))
    rank = cuda.to_device(np.full((T, p.k), INT_UNWRITTEN, dtype=np.int32))
    tok_grid = (T + p.token_block - 1) // p.token_block
    ks["route_topk"][tok_grid, p.token_block](z, d["probs"], d["indices"], raw, np.int32(p.k), np.int32(p.score))
    ks["route_positions"][E, p.scan_block](d["indices"], mask, rank, d["counts"], np.int32(p.order))
    ks["route_gates"][tok_grid, p.token_block](
        raw, rank, mask, d["gates"], d["kept"], d["position"], np.int32(p.capacity), np.int32(p.normalize),
        np.float32(p.route_scale))
    for name, a in outs.items():
        d[name].copy_to_host(a)
