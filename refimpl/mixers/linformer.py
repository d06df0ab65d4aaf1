"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity", eq. 7).

docs/mixers.md#linformer. Keys and values are projected along the sequence, from n rows to
k_proj rows, by learned matrices E, F (k_proj x n), before ordinary softmax attention::

    K' = E K,  V' = F V                       (k_proj x d, k_proj x d_v)
    out = softmax(Q K'^T * scale) V'          (n x d_v; scale 1 / sqrt(d) by default)

Cost (multiply-accumulates per head, :func:`linformer_macs`): projections k_proj n (d + d_v),
scores n k_proj d, weighted sum n k_proj d_v, so O(n k_proj) against softmax attention's
O(n^2). The projection mixes every position into every projected row, so there is no causal
form: Linformer is an encoder (bidirectional) mechanism. With k_proj = n and E = F = I it is
exact attention.

Conventions: E, F shared by every batch row and head (the paper's "headwise sharing"; pass
``F=None`` for its key-value sharing, F = E). lucidrains ``linformer`` 0.2.3
``linformer/linformer.py`` ``LinformerSelfAttention`` stores ``proj_k`` = E^T (n x k_proj) and, for a
shorter input of n' < n tokens, uses its first n' rows (here: pass E[:, :n']).
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array, flag, positive_int
from .._validate import mixers as VX
from ..sdpa import attention


def linformer_attention(q, k, v, E, F=None, *, scale=None):
    """out = softmax(Q (E K)^T scale) (F V): q (B, H, n, d), k (B, H, n, d), v (B, H, n, d_v);
    E, F (k_proj, n) (F None: F = E). Returns out (B, H, n, d_v)."""
    k = as_float_array(k, "k", ndim=4)
    v = as_float_array(v, "v", ndim=4)
    VX.leading_bhl(v, "v", k, "k", "(B, H, n)")
    E = VX.projection(E, "E", k.shape[2])
    F = E if F is None else VX.projection(F, "F", k.shape[2])
    VX.same_projection(F, E)
    with np.errstate(over="ignore", invalid="ignore"):
        kp, vp = E @ k, F @ v  # (B, H, k_proj, d): every projected row mixes all n positions
    out, _ = attention(q, kp, vp, scale=scale)
    return out


def linformer_macs(n: int, k_proj: int, d: int, d_v: int, *, include_projections: bool = True) -> int:
    """Multiply-accumulates of one head: k_proj n (d + d_v) for E K and F V (optional), n k_proj d
    for the scores, n k_proj d_v for the weighted sum."""
    n, kp, d, d_v = (positive_int(x, s) for x, s in ((n, "n"), (k_proj, "k_proj"), (d, "d"), (d_v, "d_v")))
    proj = kp * n * (d + d_v) if flag(include_projections, "include_projections") else 0
    return proj + n * kp * d + n * kp * d_v


__all__ = ["linformer_attention", "linformer_macs"]
