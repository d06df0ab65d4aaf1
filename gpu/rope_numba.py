"""RoPE applied in place as a Numba CUDA kernel (float32), both pair layouts.

The semantics of ``refimpl.apply_rope``: x (B, H, L, D) rotated at integer positions, the
first d = rotary_dim columns in pairs (x_a, x_b) at angle alpha_{l,i} = m_l theta_i:

    x_a <- x_a cos - x_b sin,   x_b <- x_b cos + x_a sin          (times the scaling's attention factor)
    pairs: (i, i + d/2) for layout "half" (GPT-NeoX / HF Llama),
           (2i, 2i + 1) for "interleaved" (GPT-J / Meta),      i < d/2;  columns >= d untouched.

The cos/sin table is built on the host in float64 from refimpl.rope (``rope_frequencies``
with the scaling, ``rope_angles``: an exact integer times theta) and rounded once to
float32, as vLLM's ``cos_sin_cache`` (``rotary_embedding`` kernel) holds it: cos, sin of
shape (Bp, L, d/2) with Bp = 1 (positions shared by the batch) or B.

One thread per pair: grid ``(ceil(L d/2 / NT), B * H)``, NT threads; thread t of block x
rotates pair i = t' % (d/2) of row l = t' / (d/2), t' = x NT + t. Each thread reads its two
elements and writes them back (in place: no other thread touches them, so no barrier).
I/O: 2 reads + 2 writes per rotated pair, one read each of cos and sin.

In place, so the facade cannot pre-fill the output with NaN: it rotates a copy of x (the
caller's x is never touched), and a pair the kernel skipped shows as an unrotated pair in the
comparison with refimpl.
"""

from __future__ import annotations

import numpy as np
from numba import cuda


def make_rope(NT: int):
    def rope_inplace(x, cos, sin, interleaved):
        H = x.shape[1]
        L = x.shape[2]
        n_pairs = cos.shape[2]
        bh = cuda.blockIdx.y
        b = bh // H
        h = bh % H
        t = cuda.blockIdx.x * NT + cuda.threadIdx.x
        if t < L * n_pairs:
            l = t // n_pairs
            i = t % n_pairs
            tb = 0
            if cos.shape[0] > 1:
                tb = b  # positions per batch row
            if interleaved != 0:
                ia = 2 * i
                ib = 2 * i + 1
            else:
                ia = i
                ib = i + n_pairs
            c = cos[tb, l, i]
            s = sin[tb, l, i]
            xa = x[b, h, l, ia]
            xb = x[b, h, l, ib]
            x[b, h, l, ia] = xa * c - xb * s
            x[b, h, l, ib] = xb * c + xa * s

    return rope_inplace


SIGNATURES = {"rope_inplace": "void(float32[:, :, :, ::1], float32[:, :, ::1], float32[:, :, ::1], int32)"}
DEFAULT_THREADS = 128


def kernels() -> dict:
    return {"rope_inplace": (make_rope(DEFAULT_THREADS), SIGNATURES["rope_inplace"])}


_CACHE: dict = {}


def launch(x, cos, sin, p) -> None:
    """Rotate host array x in place (``p``: :class:`gpu.api.RopeLaunch`)."""
    kern = _CACHE.get(p.threads)
    if kern is None:
        kern = _CACHE[p.threads] = cuda.jit(make_rope(p.threads))
    B, H, L, _ = x.shape
    n_pairs = cos.shape[2]
    d_x = cuda.to_device(x)
    kern[((L * n_pairs + p.threads - 1) // p.threads, B * H), p.threads](d_x, cos, sin, np.int32(p.interleaved))
    d_x.copy_to_host(x)
