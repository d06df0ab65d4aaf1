"""A sequence cut into chunks of c tokens, all chunks side by side: (B, H, L, ...) <-> (B, H, n, c, ...).

The chunked forms of the mixers compute each chunk's products for every chunk at once, as one
batched matrix product over the n = ceil(L / c) chunks. A last partial chunk is padded (zeros
unless told: keys and values of zero write nothing); ``unchunk`` drops the padded rows again.
"""

from __future__ import annotations

import numpy as np

from .._parallel import num_threads

BLOCK = 256
"""Tokens per batch of chunks (rounded to a multiple of the chunk size): a chunked form runs its batched
products over this many tokens at a time, the state carried from batch to batch (measured faster than
every chunk at once at L = 1024-2048, d 64: the operands stay in cache)."""


def chunks(x: np.ndarray, c: int, fill: float = 0.0) -> np.ndarray:
    """x (B, H, L, ...) as (B, H, n, c, ...), n = ceil(L / c); a view of x when c divides L, else a
    copy with the last chunk padded by ``fill``."""
    L = x.shape[2]
    n = -(-L // c)
    if n * c != L:
        pad = [(0, 0)] * x.ndim
        pad[2] = (0, n * c - L)
        x = np.pad(x, pad, constant_values=fill)
    return x.reshape(x.shape[:2] + (n, c) + x.shape[3:])


def unchunk(x: np.ndarray, L: int) -> np.ndarray:
    """(B, H, n, c, ...) as (B, H, L, ...): the chunks end to end, the padded rows dropped."""
    return x.reshape(x.shape[:2] + (x.shape[2] * x.shape[3],) + x.shape[4:])[:, :, :L]


def head_groups(H: int) -> list:
    """Slices of the H heads, one per thread of ``refimpl._parallel`` (a single slice on one thread):
    heads never share a state, so each group runs the whole chunked form on its own, the results bit
    for bit those of one call over every head."""
    n = max(1, min(num_threads(), H))
    return [slice(i * H // n, (i + 1) * H // n) for i in range(n)]
