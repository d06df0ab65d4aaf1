"""Multi-resolution causal memory: recent keys one by one, mid-range keys pooled in groups, distant
keys pooled in coarser groups (docs/pooled_memory.md).

For the query at position t (keys 0 .. t), window w, group sizes g1 (mid) and g2 (distant, a multiple
of g1) and a mid range R (a multiple of g2), on grids fixed at absolute positions (so a pooled group
is the same for every query that uses it, and can be cached):

    a = floor((t - w + 1) / g1) g1            local:   keys a .. t one by one (w to w + g1 - 1 of them,
                                                       fewer near the start)
    m = max(0, floor((a - R) / g2) g2)        mid:     the complete g1-groups in [m, a)
                                              distant: the complete g2-groups in [0, m)

(a, m clipped at 0). Every key 0 .. t lies in exactly one unit. A unit's key and value are the means
of its members' keys and values; the query attends over the units:

    y_t = sum_u softmax_u(q_t . k_u / sqrt(D) + beta_u) v_u,   beta_u = log |u| if size_bias else 0

With ``size_bias`` a group whose members all share one key and value weighs exactly as much as its
members would in full attention. ``unit_counts`` gives the per-query count (local + mid + distant);
with g1 = g2 = 1 the units are the single keys and the result is causal attention.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_budget, count, finite_result, flag, positive_int
from ._validate.latent import pooled_params, pooled_qkv
from .softmax import softmax


def boundaries(t: int, *, window: int, g1: int, g2: int, mid_range: int) -> tuple[int, int]:
    """(m, a): distant groups cover [0, m), mid groups [m, a), single keys [a, t]."""
    return _boundaries(count(t, "t"), *pooled_params(window, g1, g2, mid_range))


def _boundaries(t: int, w: int, g1: int, g2: int, R: int) -> tuple[int, int]:
    a = max(0, (t - w + 1) // g1 * g1)
    m = max(0, (a - R) // g2 * g2)
    return m, a


def units(t: int, *, window: int, g1: int, g2: int, mid_range: int) -> list:
    """The units of query t as (start, stop) key ranges, distant first, then mid, then single keys."""
    t, params = count(t, "t"), pooled_params(window, g1, g2, mid_range)
    m, a = _boundaries(t, *params)
    check_budget("t, window, g1, g2, mid_range", steps=m // params[2] + (a - m) // params[1] + t - a + 1)
    return _units(t, *params)


def _units(t: int, w: int, g1: int, g2: int, R: int) -> list:
    m, a = _boundaries(t, w, g1, g2, R)
    return ([(s, s + g2) for s in range(0, m, g2)] + [(s, s + g1) for s in range(m, a, g1)]
            + [(j, j + 1) for j in range(a, t + 1)])


def unit_counts(n: int, *, window: int, g1: int, g2: int, mid_range: int) -> np.ndarray:
    """Units per query t = 0 .. n-1: (t - a + 1) + (a - m) / g1 + m / g2, int64 (n,)."""
    n = positive_int(n, "n")
    w, g1, g2, R = pooled_params(window, g1, g2, mid_range)
    check_budget("n", shape=(4, n))
    return _unit_counts(n, w, g1, g2, R)


def _unit_counts(n: int, w: int, g1: int, g2: int, R: int) -> np.ndarray:
    t = np.arange(n, dtype=np.int64)
    a = np.maximum(0, (t - w + 1) // g1 * g1)
    m = np.maximum(0, (a - R) // g2 * g2)
    return (t - a + 1) + (a - m) // g1 + m // g2


def pooled_attention(q, k, v, *, window: int, g1: int, g2: int, mid_range: int, size_bias: bool = False) -> np.ndarray:
    """q, k, v (L, D) / (L, Dv), query t at key position t: (L, Dv) outputs over each query's units."""
    q, k, v = pooled_qkv(q, k, v)
    params = pooled_params(window, g1, g2, mid_range)
    bias = flag(size_bias, "size_bias")
    L = k.shape[0]
    check_budget("k", shape=(4, L), what=f"the unit counts of {L} queries")  # then the longest list of units, once:
    check_budget("k, window, g1, g2, mid_range", steps=int(_unit_counts(L, *params).max()))
    out = np.empty((L, v.shape[1]))
    scale = 1 / np.sqrt(k.shape[1])
    for t in range(L):
        u = _units(t, *params)
        ku = np.stack([k[a:b].mean(axis=0) for a, b in u])  # a unit's key and value: its members' means
        vu = np.stack([v[a:b].mean(axis=0) for a, b in u])
        with np.errstate(over="ignore", invalid="ignore"):
            s = ku @ q[t] * scale + (np.log([b - a for a, b in u]) if bias else 0.0)
        out[t] = softmax(finite_result(s, "a score", "q, k")) @ vu
    return finite_result(out, "the output", "q, k, v")


__all__ = ["boundaries", "units", "unit_counts", "pooled_attention"]
