"""The per-tile device code the tiled attention kernels share (Numba CUDA device functions).

The FA2 forward (``gpu.attention_numba``), the split-KV partial pass (``gpu.split_kv_numba``), the
paged decode (``gpu.paged_numba``) and the two backward kernels that recompute scores
(``gpu.attention_backward_numba``) all score one (query row r, key row c) pair of a Q tile and a
K tile per thread, with the formulas of ``refimpl.attention``:

    R_rc = scale * <Qs[r], Ks[c]>                       (``tile_score``, float32 accumulation in d order)
    S_rc = softcap * tanh(R_rc / softcap) if softcap    (``softcapped``; 0 = off)
    dS/dR = sech^2(R_rc / softcap) = 1 / cosh^2         (``softcap_slope``: the backward's chain factor)
    visible iff  i + offset - left <= j <= i + offset + right   (``in_band``: causal/window with alignment)

and the three forward kernels share one online-softmax update of a row's running state
(``online_softmax_tile``, FA2 Algorithm 1; its docstring). The kernels keep what differs (the
tile loads, the key bound Lk or a chunk's end, the writes) and call these; the C twins share the
same functions as text (``gpu.tile_c``). Every function does the operations of the inlined code
it replaced, in the same order, so the results are those of the kernels before the factoring.

The functions are ``cuda.jit(device=True, inline="always")``: Numba inlines their IR into the
kernel before typing, so ``numba.cuda.compile_ptx`` needs no GPU (a plain device function is
compiled for the current device's compute capability, which asks the driver) and the PTX holds
no calls; under the CUDA simulator they are ordinary Python calls.

The mutants of ``gpu.mutants`` that edit this code (a window bound, the missing rescale) apply to
this module's text and run through a kernel module that imports the edited copy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)


@cuda.jit(device=True, inline="always")
def tile_score(Qs, Ks, r, c, D, scale):
    """scale * <Qs[r, :D], Ks[c, :D]>, summed in float32 over d = 0, 1, ..., D - 1."""
    s = ZERO
    for d in range(D):
        s += Qs[r, d] * Ks[c, d]
    return s * scale


@cuda.jit(device=True, inline="always")
def softcapped(s, softcap):
    """softcap * tanh(s / softcap), or s when softcap is 0 (off)."""
    if softcap > ZERO:
        return softcap * math.tanh(s / softcap)
    return s


@cuda.jit(device=True, inline="always")
def softcap_slope(s, softcap):
    """d softcapped(s) / d s = sech^2(s / softcap) = 1 / cosh^2 (1 when softcap is 0)."""
    if softcap > ZERO:
        ch = math.cosh(s / softcap)
        return ONE / (ch * ch)
    return ONE


@cuda.jit(device=True, inline="always")
def in_band(i, j, offset, left, right):
    """Key j inside query i's band [i + offset - left, i + offset + right] (refimpl.masks)."""
    return j >= i + offset - left and j <= i + offset + right


@cuda.jit(device=True, inline="always")
def online_softmax_tile(S, P, Vs, acc, r, c, m, l, Dv):
    """One key tile's update of query row r's running state (m, l, acc), replicated identically on
    the BC threads (r, c) of the row; S holds the tile's scores (-inf where hidden). Returns the new
    (m, l); acc (columns c, c + BC, ...) is updated in place:

        m_new = max(m, max_c S[r, c]),   alpha = exp(m - m_new),   P[r, c] = exp(S[r, c] - m_new)
        l     = alpha * l + sum_c P[r, c]
        acc   = alpha * acc + P[r, :] @ Vs

    With nothing visible so far (m_new = -inf) the state stays (-inf, 0, 0). A block barrier
    separates the writes of P from the reads of the row (every thread of the block must call it);
    the caller's barrier before the next tile's loads ends the reads of S, P and Vs."""
    BC = S.shape[1]
    m_tile = NEG_INF
    for cc in range(BC):
        m_tile = max(m_tile, S[r, cc])
    m_new = max(m, m_tile)
    if m_new == NEG_INF:  # nothing visible so far: keep (m, l, acc) = (-inf, 0, 0)
        alpha = ONE
        P[r, c] = ZERO
    else:
        alpha = math.exp(m - m_new)
        P[r, c] = math.exp(S[r, c] - m_new)
    cuda.syncthreads()

    row_sum = ZERO
    for cc in range(BC):
        row_sum += P[r, cc]
    for a in range(acc.shape[0]):
        col = c + a * BC
        if col < Dv:
            pv = ZERO
            for cc in range(BC):
                pv += P[r, cc] * Vs[cc, col]
            acc[a] = alpha * acc[a] + pv
    return m_new, alpha * l + row_sum
