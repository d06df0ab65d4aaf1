"""MoE token-choice routing in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same three kernels as ``gpu.routing_numba`` (whose docstring gives the
formulas and the reasoning), with the same names and steps:

  route_topk       one thread per token: scores (softmax or sigmoid), top-k on
                   the logits with ties to the lower id, raw gates w = p[t, idx];
  route_positions  one block per expert: block-wide prefix sum (barriers only)
                   of the expert's assignments in k_major / token_major order,
                   giving each assignment its rank and the expert its count;
  route_gates      one thread per token: kept = rank < C, position, and the gates
                   under normalize none | before_drop | after_drop, times
                   route_scale.

Compile-time constants: TOK_BLOCK (threads per block of the per-token kernels)
and SCAN_BLOCK (threads of the per-expert scan). Integer outputs are ``int``
(kept is 0/1); the host turns them into int64 / bool.
"""

from __future__ import annotations

from .dialect import with_prelude

KERNEL_NAMES = ("route_topk", "route_positions", "route_gates")
DEFAULT_DEFINES = {"TOK_BLOCK": 64, "SCAN_BLOCK": 128}

BODY = r"""
#ifndef TOK_BLOCK
#define TOK_BLOCK 64
#endif
#ifndef SCAN_BLOCK
#define SCAN_BLOCK 128
#endif

/* 1. scores and top-k, one thread per token (no barrier in this kernel) */
KERNEL void route_topk(GLOBAL const float* logits, GLOBAL float* probs, GLOBAL int* indices,
                       GLOBAL float* raw, int T, int E, int k, int score)
{
    const int t = BLOCK_ID_X() * TOK_BLOCK + THREAD_ID();
    if (t >= T) return;
    GLOBAL const float* z = logits + t * E;
    GLOBAL float* p = probs + t * E;
    if (score == 0) { /* softmax over the experts */
        float m = NEG_INF;
        for (int e = 0; e < E; ++e) m = FMAXF(m, z[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; ++e) sum += EXPF(z[e] - m);
        for (int e = 0; e < E; ++e) p[e] = EXPF(z[e] - m) / sum;
    } else {            /* sigmoid */
        for (int e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + EXPF(-z[e]));
    }
    /* the s-th choice is the largest logit strictly after the (s-1)-th choice in
       the order (logit descending, expert id ascending): ties go to the lower id */
    float prev = 0.0f;
    int prev_id = -1;
    for (int s = 0; s < k; ++s) {
        int best = -1;
        float best_z = 0.0f;
        for (int e = 0; e < E; ++e) {
            const float x = z[e];
            const int after_prev = prev_id < 0 || x < prev || (x == prev && e > prev_id);
            if (after_prev && (best < 0 || x > best_z)) {
                best = e;
                best_z = x;
            }
        }
        indices[t * k + s] = best;
        raw[t * k + s] = p[best];
        prev = best_z;
        prev_id = best;
    }
}

/* 2. ranks and counts, one block per expert: a block-wide prefix sum */
KERNEL void route_positions(GLOBAL const int* indices, GLOBAL const int* token_mask,
                            GLOBAL int* rank, GLOBAL int* counts, int T, int k, int order)
{
    SHARED int scan[SCAN_BLOCK];
    const int e = BLOCK_ID_X();
    const int tid = THREAD_ID();
    const int n = T * k;
    const int chunk = (n + SCAN_BLOCK - 1) / SCAN_BLOCK;
    const int f0 = IMIN(n, tid * chunk);
    const int f1 = IMIN(n, f0 + chunk);

    /* assignments to expert e in my chunk of the claiming order */
    int mine = 0;
    for (int f = f0; f < f1; ++f) {
        const int t = order == 0 ? f % T : f / k; /* k_major: all first choices, then ... */
        const int s = order == 0 ? f / T : f % k; /* token_major: token by token */
        if (token_mask[t] && indices[t * k + s] == e) ++mine;
    }
    scan[tid] = mine;
    BARRIER();
    for (int off = 1; off < SCAN_BLOCK; off *= 2) { /* Hillis-Steele inclusive scan */
        const int add = tid >= off ? scan[tid - off] : 0;
        BARRIER();
        scan[tid] += add;
        BARRIER();
    }
    int pos = scan[tid] - mine; /* assignments to e before my chunk */
    for (int f = f0; f < f1; ++f) {
        const int t = order == 0 ? f % T : f / k;
        const int s = order == 0 ? f / T : f % k;
        if (token_mask[t] && indices[t * k + s] == e) rank[t * k + s] = pos++;
    }
    if (tid == SCAN_BLOCK - 1) counts[e] = scan[SCAN_BLOCK - 1];
}

/* 3. dropping and gates, one thread per token (no barrier in this kernel) */
KERNEL void route_gates(GLOBAL const float* raw, GLOBAL const int* rank, GLOBAL const int* token_mask,
                        GLOBAL float* gates, GLOBAL int* kept, GLOBAL int* position,
                        int T, int k, int capacity, int normalize, float route_scale)
{
    const int t = BLOCK_ID_X() * TOK_BLOCK + THREAD_ID();
    if (t >= T) return;
    float sum_all = 0.0f, sum_kept = 0.0f;
    for (int s = 0; s < k; ++s) {
        const int r = rank[t * k + s];
        const int kp = token_mask[t] && (capacity < 0 || r < capacity);
        kept[t * k + s] = kp;
        position[t * k + s] = kp ? r : -1;
        sum_all += raw[t * k + s];
        if (kp) sum_kept += raw[t * k + s];
    }
    for (int s = 0; s < k; ++s) {
        const float w = raw[t * k + s];
        float g = 0.0f;
        if (kept[t * k + s]) {
            if (normalize == 0) g = w;                                    /* none */
            else if (normalize == 1) g = sum_all > 0.0f ? w / sum_all : 0.0f; /* before_drop */
            else g = sum_kept > 0.0f ? w / sum_kept : 0.0f;               /* after_drop */
        }
        gates[t * k + s] = g * route_scale;
    }
}
"""

SOURCE = with_prelude(BODY)


def defines(p) -> dict:
    return {"TOK_BLOCK": p.token_block, "SCAN_BLOCK": p.scan_block}


def run(rt, source: str, logits, token_mask, outs, p):
    """Build (cached) and launch the three routing kernels on runtime ``rt``."""
    import numpy as np

    from .constants import INT_UNWRITTEN

    prog = rt.build(source, defines(p))
    T, E = logits.shape
    i32, f32 = np.int32, np.float32
    z = rt.to_device(logits)
    mask = rt.to_device(token_mask)
    probs = rt.to_device(outs["probs"])
    indices = rt.to_device(outs["indices"])
    raw = rt.to_device(np.full((T, p.k), np.nan, dtype=np.float32))
    rank = rt.to_device(np.full((T, p.k), INT_UNWRITTEN, dtype=np.int32))
    counts = rt.to_device(outs["counts"])
    gates = rt.to_device(outs["gates"])
    kept = rt.to_device(outs["kept"])
    position = rt.to_device(outs["position"])
    tok_grid = ((T + p.token_block - 1) // p.token_block, 1)
    rt.launch(prog, "route_topk", tok_grid, p.token_block, [z, probs, indices, raw, i32(T), i32(E), i32(p.k), i32(p.score)])
    rt.launch(prog, "route_positions", (E, 1), p.scan_block, [indices, mask, rank, counts, i32(T), i32(p.k), i32(p.order)])
    rt.launch(prog, "route_gates", tok_grid, p.token_block,
              [raw, rank, mask, gates, kept, position, i32(T), i32(p.k), i32(p.capacity), i32(p.normalize),
               f32(p.route_scale)])
    for name, buf in (("probs", probs), ("indices", indices), ("counts", counts), ("gates", gates),
                      ("kept", kept), ("position", position)):
        rt.to_host(buf, outs[name])
    return outs
