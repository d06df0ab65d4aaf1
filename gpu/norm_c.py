"""RMSNorm (fused with its weight) and LayerNorm in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same two kernels, reduction and names as ``gpu.norm_numba``, whose docstring gives the
formulas (eps inside or outside the sqrt, the weight offset of HF Gemma; two-pass LayerNorm),
the one-block-per-row layout with a shared-memory tree reduction of NT threads, and the I/O.

Compile-time constant: NT (threads per row, a power of two). Arguments: x (rows, d), w (d,),
[b (d,)], y (rows, d) float32; d; eps; (rms_norm) outside (0/1), offset.
"""

from __future__ import annotations

from .dialect import with_prelude

KERNEL_NAMES = ("rms_norm", "layer_norm")
DEFAULT_DEFINES = {"NT": 128}

BODY = r"""
#ifndef NT
#define NT 128
#endif

/* red[0] = sum over the block of red[tid] (NT a power of two); every thread reaches every barrier */
#define BLOCK_SUM(red, tid)                                   \
    BARRIER();                                                \
    for (int stride = NT / 2; stride > 0; stride /= 2) {      \
        if ((tid) < stride) red[tid] += red[(tid) + stride];  \
        BARRIER();                                            \
    }

KERNEL void rms_norm(GLOBAL const float* x, GLOBAL const float* w, GLOBAL float* y, int d, float eps, int outside,
                     float offset)
{
    SHARED float red[NT];
    const int row = BLOCK_ID_X();
    const int tid = THREAD_ID();
    GLOBAL const float* xr = x + row * d;
    float acc = 0.0f;
    for (int e = tid; e < d; e += NT) acc += xr[e] * xr[e];
    red[tid] = acc;
    BLOCK_SUM(red, tid)
    const float ms = red[0] / (float)d;
    const float r = outside ? 1.0f / (SQRTF(ms) + eps) : 1.0f / SQRTF(ms + eps);
    for (int e = tid; e < d; e += NT) y[row * d + e] = (xr[e] * r) * (offset + w[e]);
}

KERNEL void layer_norm(GLOBAL const float* x, GLOBAL const float* w, GLOBAL const float* b, GLOBAL float* y, int d,
                       float eps)
{
    SHARED float red[NT];
    const int row = BLOCK_ID_X();
    const int tid = THREAD_ID();
    GLOBAL const float* xr = x + row * d;
    float acc = 0.0f;
    for (int e = tid; e < d; e += NT) acc += xr[e];
    red[tid] = acc;
    BLOCK_SUM(red, tid)
    const float mean = red[0] / (float)d;
    BARRIER(); /* every thread has read red[0] before the second pass reuses red */
    acc = 0.0f;
    for (int e = tid; e < d; e += NT) {
        const float t = xr[e] - mean;
        acc += t * t;
    }
    red[tid] = acc;
    BLOCK_SUM(red, tid)
    const float r = 1.0f / SQRTF(red[0] / (float)d + eps);
    for (int e = tid; e < d; e += NT) y[row * d + e] = ((xr[e] - mean) * r) * w[e] + b[e];
}
"""

SOURCE = with_prelude(BODY)


def run(rt, source: str, kind, x, w, b, y, p):
    """Build (cached) and launch ``kind`` on runtime ``rt``; fills y."""
    import numpy as np

    prog = rt.build(source, {"NT": p.threads})
    rows, d = x.shape
    i32, f32 = np.int32, np.float32
    d_x, d_w, d_b, d_y = (rt.to_device(a) for a in (x, w, b, y))
    if kind == "rms_norm":
        args = [d_x, d_w, d_y, i32(d), f32(p.eps), i32(p.outside), f32(p.offset)]
    else:
        args = [d_x, d_w, d_b, d_y, i32(d), f32(p.eps)]
    rt.launch(prog, kind, (rows, 1), p.threads, args)
    rt.to_host(d_y, y)
    return y
