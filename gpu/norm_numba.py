"""RMSNorm (fused with its weight) and LayerNorm over the last axis as Numba CUDA kernels (float32).

The semantics of ``refimpl.norms.rms_norm`` and ``refimpl.norms.layer_norm`` for rows x of
width d:

    rms_norm:   ms = (1/d) sum_e x_e^2,   r = 1 / sqrt(ms + eps)       (eps inside, HF Llama / T5, torch)
                                          r = 1 / (sqrt(ms) + eps)     (eps outside, Zhang & Sennrich)
                y_e = (x_e r) (offset + w_e)                           (offset 1: HF GemmaRMSNorm)
    layer_norm: mu = (1/d) sum_e x_e,  var = (1/d) sum_e (x_e - mu)^2  (two passes, biased),
                y_e = ((x_e - mu) / sqrt(var + eps)) w_e + b_e

One thread block per row (grid ``(rows, 1)``), NT threads (a power of two, a compile-time
constant): each thread accumulates the elements e = tid, tid + NT, ... of its row in
registers, then a block-wide tree reduction in shared memory (log2 NT steps, a barrier
after each) gives the row sum; every thread then writes its own elements of y once. The
weight multiply is fused into the write (no second kernel, no normalised row in global
memory). LayerNorm reuses the reduction buffer for its second pass after a barrier.

Accumulation is float32 (the reduction tree's order: error <= (log2 NT + d / NT) u per sum,
below the sequential sum's d u). Shared memory: 4 NT bytes. I/O: 2 reads of x (LayerNorm:
3), one read of w (and b), one write of y per element.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

ZERO = np.float32(0.0)
ONE = np.float32(1.0)


def make_norm_kernels(NT: int):
    """{name: function} of the two kernels for NT threads per row (a power of two)."""

    def rms_norm(x, w, y, d_f, eps, outside, offset):
        d = x.shape[1]
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array(NT, np.float32)
        acc = ZERO
        for e in range(tid, d, NT):
            acc += x[row, e] * x[row, e]
        red[tid] = acc
        cuda.syncthreads()
        stride = NT // 2
        while stride > 0:  # tree reduction: red[0] = sum_e x_e^2
            if tid < stride:
                red[tid] += red[tid + stride]
            cuda.syncthreads()
            stride //= 2
        ms = red[0] / d_f
        if outside != 0:
            r = ONE / (math.sqrt(ms) + eps)
        else:
            r = ONE / math.sqrt(ms + eps)
        for e in range(tid, d, NT):
            y[row, e] = (x[row, e] * r) * (offset + w[e])

    def layer_norm(x, w, b, y, d_f, eps):
        d = x.shape[1]
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array(NT, np.float32)
        acc = ZERO
        for e in range(tid, d, NT):
            acc += x[row, e]
        red[tid] = acc
        cuda.syncthreads()
        stride = NT // 2
        while stride > 0:
            if tid < stride:
                red[tid] += red[tid + stride]
            cuda.syncthreads()
            stride //= 2
        mean = red[0] / d_f
        cuda.syncthreads()  # every thread has read red[0] before the second pass reuses red
        acc = ZERO
        for e in range(tid, d, NT):
            t = x[row, e] - mean
            acc += t * t
        red[tid] = acc
        cuda.syncthreads()
        stride = NT // 2
        while stride > 0:
            if tid < stride:
                red[tid] += red[tid + stride]
            cuda.syncthreads()
            stride //= 2
        r = ONE / math.sqrt(red[0] / d_f + eps)
        for e in range(tid, d, NT):
            y[row, e] = ((x[row, e] - mean) * r) * w[e] + b[e]

    return {"rms_norm": rms_norm, "layer_norm": layer_norm}


SIGNATURES = {
    "rms_norm": "void(float32[:, ::1], float32[::1], float32[:, ::1], float32, float32, int32, float32)",
    "layer_norm": "void(float32[:, ::1], float32[::1], float32[::1], float32[:, ::1], float32, float32)",
}
DEFAULT_THREADS = 128


def kernels() -> dict:
    """{name: (function, signature)} at the default block (for compile_ptx)."""
    fns = make_norm_kernels(DEFAULT_THREADS)
    return {n: (fns[n], SIGNATURES[n]) for n in fns}


_CACHE: dict = {}


def launch(kind, x, w, b, y, p) -> None:
    """Run ``kind`` ("rms_norm" | "layer_norm") on host arrays; ``p``: :class:`gpu.api.NormLaunch`."""
    ks = _CACHE.get(p.threads)
    if ks is None:
        ks = _CACHE[p.threads] = {n: cuda.jit(f) for n, f in make_norm_kernels(p.threads).items()}
    rows, d = x.shape
    d_y = cuda.to_device(y)
    if kind == "rms_norm":
        ks["rms_norm"][(rows, 1), p.threads](x, w, d_y, np.float32(d), np.float32(p.eps), np.int32(p.outside),
                                             np.float32(p.offset))
    else:
        ks["layer_norm"][(rows, 1), p.threads](x, w, b, d_y, np.float32(d), np.float32(p.eps))
    d_y.copy_to_host(y)
