"""ALiBi: linear biases on attention scores (Press et al. 2022), in the flash-attn form.

    slope_h = 2^(-8 (h + 1) / H)                       (H a power of two; see alibi_slopes)
    bias[h, i, j] = -slope_h * |i + o - j|,   o = Lk - Lq (bottom_right) or 0 (top_left)

The bias is added to the scaled (and softcapped) scores before masking, as
``refimpl.attention``'s ``bias=`` argument.
"""

from __future__ import annotations

import numpy as np

from . import _validate as V
from . import masks as _masks
from ._validate.positions import slope_array

MAX_HEADS = 2**16
"""Largest head count ``alibi_slopes`` builds a list for."""


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi head slopes (Press et al. 2022, ``get_slopes`` in ofirpress/attention_with_linear_biases).

    For n a power of two: slope_h = 2^(-8 (h + 1) / n), h = 0..n-1. Otherwise the
    slopes of the closest smaller power of two m, followed by every other slope
    of 2m: ``get_slopes(m) + get_slopes(2m)[0::2][: n - m]``.
    """
    n = V.count(num_heads, "num_heads", minimum=1, maximum=MAX_HEADS)

    def power_of_two(m):
        return [2.0 ** (-8.0 * (h + 1) / m) for h in range(m)]

    m = 2 ** int(np.floor(np.log2(n)))
    slopes = power_of_two(m) if m == n else power_of_two(m) + power_of_two(2 * m)[0::2][: n - m]
    return np.array(slopes, dtype=np.float64)


def alibi_bias(slopes, Lq: int, Lk: int, *, align: str = "bottom_right") -> np.ndarray:
    """ALiBi in the flash-attn form: bias[h, i, j] = -slope_h * |i + o - j|, shape (1, H, Lq, Lk).

    ``o = Lk - Lq`` for bottom_right (flash-attn ``alibi_slopes`` docstring in
    ``flash_attn_interface.py``: "-alibi_slope * |i + seqlen_k - seqlen_q - j|"),
    0 for top_left. ``slopes`` may also be (B, H), giving (B, H, Lq, Lk).
    """
    s = slope_array(slopes)
    Lq, Lk = V.count(Lq, "Lq"), V.count(Lk, "Lk")
    o = _masks.offset(Lq, Lk, align)
    V.check_budget("slopes, Lq, Lk", shape=(s.size + 2, Lq, Lk), nbytes=8 * (Lq + Lk),
                   what=f"a bias of {s.size} heads x ({Lq}, {Lk})")
    dist = np.abs(np.arange(Lq)[:, None] + o - np.arange(Lk)[None, :]).astype(np.float64)
    s4 = s.reshape((1,) * (2 - s.ndim) + s.shape)[..., None, None]
    with np.errstate(over="ignore"):
        return V.finite_result(-s4 * dist, "a bias -slope * |i + o - j|", "slopes")
