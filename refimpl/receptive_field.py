"""Receptive field of stacked attention layers (docs/notes.md#receptive-field).

Layer l mixes position i with the positions its mask lets it see, so after L
layers position i depends on position j iff there is a path j = p_0 -> p_1 ->
... -> p_L = i with every step visible. With A the visibility matrix
(A[i, j] = True iff query i may attend to key j; self-attention, Lq = Lk = n):

    R_1 = A,    R_L = R_(L-1) . A        (boolean matrix product)

For a causal sliding window of w keys before self (window (w, 0), the notes'
M_w: max(0, i - w) <= j <= i) the closed form is the interval

    R_L[i] = [max(0, i - L w), i]

(each hop moves back at most w, and i -> i - w -> ... reaches every point in
between because each window contains self). The notes' example, w = 4, i = 10:
[6..10], [2..10], [0..10].

Layers with different masks (windowed layers interleaved with full ones,
docs/hybrid.md#interleaved-windowed-and-full-layers): pass a sequence of masks, one per layer, first layer
first; then R = A_L . ... . A_2 . A_1 (a path reads layer 1's mask on its first hop).
A single full (causal) layer anywhere in the stack makes R[i] = [0, i].
"""

from __future__ import annotations

import numpy as np

from . import masks as _masks
from . import _validate as _V
from ._validate import positive_int
from ._validate import vision as _R


def receptive_field(mask, n: int, layers: int | None = None) -> np.ndarray:
    """bool (n, n): R[i, j] True iff position j can influence position i after ``layers`` layers.

    R = A^layers in the boolean semiring, by repeated squaring: O(log layers) products,
    so any layer count (up to 2**62) costs at most 62 squarings. ``mask`` may instead be a
    sequence of masks, one per layer (``layers`` then None or their number): R = A_L ... A_1.
    """
    n = positive_int(n, "n")
    if not isinstance(mask, _masks.Mask) and isinstance(mask, (list, tuple)):
        return _per_layer(mask, n, layers)
    _V.instance(mask, "mask", _masks.Mask, "refimpl.masks.Mask or a list of them (one per layer)")
    layers = _R.layer_count(layers, None)
    A = mask.materialize(n, n).astype(np.int64)
    R = None
    while True:  # binary powering; entries kept 0/1 so products never overflow
        if layers & 1:
            R = A if R is None else np.minimum(R @ A, 1)
        layers >>= 1
        if not layers:
            return R.astype(bool)
        A = np.minimum(A @ A, 1)


def _per_layer(masks, n: int, layers) -> np.ndarray:
    masks = _R.mask_list(masks, _masks.Mask)
    _R.layer_count(layers, len(masks))
    _V.check_budget("n, mask", nbytes=24 * n * n, steps=len(masks) * (n // 64 + 1),
                    what=f"{len(masks)} boolean ({n}, {n}) products")
    R = masks[0].materialize(n, n).astype(np.int64)
    for m in masks[1:]:  # entries kept 0/1: the next layer's hop after everything before it
        R = np.minimum(m.materialize(n, n).astype(np.int64) @ R, 1)
    return R.astype(bool)


def window_receptive_interval(i: int, w: int, layers: int) -> tuple[int, int]:
    """Closed form for a causal window of w keys before self: (max(0, i - layers * w), i), inclusive."""
    i = positive_int(i, "i", allow_zero=True)
    w = positive_int(w, "w", allow_zero=True)
    layers = positive_int(layers, "layers")
    return max(0, i - layers * w), i


def receptive_interval(mask, i: int, layers: int | None = None, n: int | None = None) -> tuple[int, int]:
    """(first, last) position that can influence position i, from the boolean product; checks it is an interval.
    ``mask`` and ``layers`` as :func:`receptive_field` (one mask and a count, or one mask per layer).

    ``n`` (sequence length, default i + 1) must exceed i. A mask under which position i
    sees nothing, or sees a set with holes, is a ValueError naming ``mask``.
    """
    i, n = _R.position(i, n)
    row = _R.interval_row(np.flatnonzero(receptive_field(mask, n, layers)[i]), i, layers or len(mask))
    return int(row[0]), int(row[-1])


__all__ = ["receptive_field", "receptive_interval", "window_receptive_interval"]
