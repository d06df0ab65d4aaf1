"""RoPE applied in place in the neutral dialect (CUDA C for CuPy, OpenCL C for PoCL).

The same kernel, thread layout and names as ``gpu.rope_numba``, whose docstring gives the
formula (pairs (i, i + d/2) "half" or (2i, 2i + 1) "interleaved", the host-built float32
cos/sin table (Bp, L, d/2) with the attention factor folded in, columns >= d untouched).

Compile-time constant: NT (threads per block). Arguments: x (B, H, L, D) rotated in place,
cos, sin (Bp, L, n_pairs) float32; B, H, L, D, n_pairs, Bp, interleaved (0/1).
"""

from __future__ import annotations

from .dialect import with_prelude

KERNEL_NAMES = ("rope_inplace",)
DEFAULT_DEFINES = {"NT": 128}

BODY = r"""
#ifndef NT
#define NT 128
#endif

KERNEL void rope_inplace(GLOBAL float* x, GLOBAL const float* cos_t, GLOBAL const float* sin_t,
                         int B, int H, int L, int D, int n_pairs, int Bp, int interleaved)
{
    const int bh = BLOCK_ID_Y();
    const int b = bh / H;
    const int t = BLOCK_ID_X() * NT + THREAD_ID();
    if (t >= L * n_pairs) return;
    const int l = t / n_pairs;
    const int i = t % n_pairs;
    const int tb = Bp > 1 ? b : 0; /* positions per batch row */
    int ia, ib;
    if (interleaved) {
        ia = 2 * i;
        ib = 2 * i + 1;
    } else {
        ia = i;
        ib = i + n_pairs;
    }
    const float c = cos_t[(tb * L + l) * n_pairs + i];
    const float s = sin_t[(tb * L + l) * n_pairs + i];
    GLOBAL float* row = x + (bh * L + l) * D;
    const float xa = row[ia];
    const float xb = row[ib];
    row[ia] = xa * c - xb * s;
    row[ib] = xb * c + xa * s;
}
"""

SOURCE = with_prelude(BODY)


def run(rt, source: str, x, cos, sin, p):
    """Build (cached) and launch ``rope_inplace`` on runtime ``rt``; rotates x in place."""
    import numpy as np

    prog = rt.build(source, {"NT": p.threads})
    B, H, L, D = x.shape
    Bp, _, n_pairs = cos.shape
    i32 = np.int32
    d_x, d_c, d_s = (rt.to_device(a) for a in (x, cos, sin))
    rt.launch(prog, "rope_inplace", ((L * n_pairs + p.threads - 1) // p.threads, B * H), p.threads,
              [d_x, d_c, d_s, i32(B), i32(H), i32(L), i32(D), i32(n_pairs), i32(Bp), i32(p.interleaved)])
    rt.to_host(d_x, x)
    return x
