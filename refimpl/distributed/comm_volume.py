"""Communication volume per rank, as formulas of the problem's sizes.

Elements each rank *sends to other ranks* (self-deliveries are local copies),
split as in ``messages.Size``: ``floats`` (payload) and ``ints`` (metadata:
positions, owners, expert ids, slots). The tests compare each formula with the
messages the simulator and the MPI driver actually counted.

Notation: P ranks, layout sizes n_0 .. n_{P-1} (n_r = rows rank r holds), B
batch, Hq / Hkv heads, D / Dv head dims, S ring steps (``ring.ring_num_steps``),
o(r, s) = (r - s) mod P the owner of the block rank r holds at step s.

Ring forward (rank r sends the block it holds at steps 0 .. S-2):

    floats_r = sum_{s=0}^{S-2} B Hkv n_{o(r,s)} (D + Dv)          ints_r = sum_{s=0}^{S-2} (n_{o(r,s)} + 1)

  equal shards n = L / P and no window (S = P): (P - 1) B Hkv n (D + Dv), the
  volume of an all-gather of K and V, whatever the mask (causal steps that are
  skipped still forward their block).

Ring backward: the block travels with dK, dV (twice the floats), then the
finished dK, dV of o(r, S-1) go home once (if S > 1):

    floats_r = sum_{s=0}^{S-2} 2 B Hkv n_{o(r,s)} (D + Dv) + [S > 1] B Hkv n_{o(r,S-1)} (D + Dv)
    ints_r   = sum_{s=0}^{S-2} (n_{o(r,s)} + 1) + [S > 1]

Ulysses (two all-to-alls; heads split in P groups):

    floats_r = (P - 1) B n_r (Hq D + Hkv (D + Dv)) / P  +  B (Hq / P) (Dv + 1) (L - n_r)
    ints_r   = (P - 1) (n_r + 1) + (P - 1)

Ulysses backward (round 1 also carries dout, round 2 returns dq, dk, dv; no ints back):

    floats_r = (P - 1) B n_r (Hq (D + Dv) + Hkv (D + Dv)) / P  +  B (L - n_r) (Hq D + Hkv (D + Dv)) / P
    ints_r   = (P - 1) (n_r + 1)

Expert parallel, with m[r][p] the kept assignments of rank r's tokens to
experts on rank p:

    floats_r = D sum_{p != r} m[r][p]  +  D sum_{s != r} m[s][r]      (dispatch out, combine back)
    ints_r   = sum_{p != r} (2 m[r][p] + 2)  +  [global] (P - 1) (k E + 1)

and GShard's padded layout would send D sum_{e on p} C_r floats to each p
(``padded_dispatch_floats``), an upper bound of the ragged dispatch.
"""

from __future__ import annotations

import numpy as np

from .._validate import choice, count, index_array
from .._validate.distributed import (exact_dims, expert_owner, kept_counts, rank_routings, ring_volume_args,
                                     ulysses_volume_args)
from .messages import Size
from .sharding import MAX_RANKS

__all__ = ["expert_parallel", "kept_rows", "padded_dispatch_floats", "ring_backward", "ring_forward", "ulysses",
           "ulysses_backward"]


def ring_forward(sizes, num_steps: int, B: int, Hkv: int, D: int, Dv: int) -> list:
    """Ring forward volume per rank (list of P ``Size``); sizes n_r, num_steps S in 1..P."""
    sizes, num_steps, B, Hkv, D, Dv = ring_volume_args(sizes, num_steps, B, Hkv, D, Dv, MAX_RANKS)
    P = len(sizes)
    return [sum((Size(B * Hkv * sizes[(r - s) % P] * (D + Dv), sizes[(r - s) % P] + 1)
                 for s in range(num_steps - 1)), Size()) for r in range(P)]


def ring_backward(sizes, num_steps: int, B: int, Hkv: int, D: int, Dv: int) -> list:
    """Ring backward volume per rank (list of P ``Size``); arguments as ``ring_forward``."""
    sizes, num_steps, B, Hkv, D, Dv = ring_volume_args(sizes, num_steps, B, Hkv, D, Dv, MAX_RANKS)
    P = len(sizes)
    out = []
    for r in range(P):
        v = sum((Size(2 * B * Hkv * sizes[(r - s) % P] * (D + Dv), sizes[(r - s) % P] + 1)
                 for s in range(num_steps - 1)), Size())
        if num_steps > 1:
            v = v + Size(B * Hkv * sizes[(r - num_steps + 1) % P] * (D + Dv), 1)
        out.append(v)
    return out


def ulysses(sizes, B: int, Hq: int, Hkv: int, D: int, Dv: int) -> list:
    """Ulysses forward volume per rank (list of P ``Size``); P = len(sizes) divides Hq and Hkv."""
    sizes, B, Hq, Hkv, D, Dv = ulysses_volume_args(sizes, B, Hq, Hkv, D, Dv, MAX_RANKS)
    P, L = len(sizes), sum(sizes)
    return [Size((P - 1) * B * n * (Hq * D + Hkv * (D + Dv)) // P + B * (Hq // P) * (Dv + 1) * (L - n),
                 (P - 1) * (n + 1) + (P - 1)) for n in sizes]


def ulysses_backward(sizes, B: int, Hq: int, Hkv: int, D: int, Dv: int) -> list:
    """Ulysses backward volume per rank (list of P ``Size``); arguments as ``ulysses``."""
    sizes, B, Hq, Hkv, D, Dv = ulysses_volume_args(sizes, B, Hq, Hkv, D, Dv, MAX_RANKS)
    P, L = len(sizes), sum(sizes)
    return [Size((P - 1) * B * n * (Hq + Hkv) * (D + Dv) // P + B * (L - n) * (Hq * D + Hkv * (D + Dv)) // P,
                 (P - 1) * (n + 1)) for n in sizes]


def kept_rows(routings, owner) -> np.ndarray:
    """m (P, P): m[r][p] = kept assignments of rank r's tokens to experts on rank p.

    ``routings``: one ``refimpl.moe.Routing`` per rank, all over the same E experts; ``owner`` (E,)."""
    from ..moe.router import Routing

    P, E = rank_routings(routings, Routing)
    owner = expert_owner(owner, E, P)
    return np.array([np.bincount(owner[rt.indices[rt.kept]], minlength=P) for rt in routings], dtype=np.int64)


def expert_parallel(m, D: int, k: int, E: int, capacity_convention: str) -> list:
    """Expert-parallel volume per rank (list of P ``Size``); m (P, P) kept counts (``kept_rows``)."""
    m = kept_counts(m)
    D, k, E = exact_dims(D=D, k=k, E=E)
    choice(capacity_convention, "capacity_convention", ("local", "global"))
    P = m.shape[0]
    out = []
    for r in range(P):
        others = [p for p in range(P) if p != r]
        floats = D * (sum(int(m[r, p]) for p in others) + sum(int(m[s, r]) for s in others))
        ints = sum(2 * int(m[r, p]) + 2 for p in others)
        if capacity_convention == "global":
            ints += (P - 1) * (k * E + 1)
        out.append(Size(floats, ints))
    return out


def padded_dispatch_floats(capacity: int, owner, rank: int, D: int) -> int:
    """GShard's fixed dispatch buffer from one rank to the others: D sum_{p != rank} sum_{e on p} C."""
    capacity = count(capacity, "capacity", maximum=None)
    (D,) = exact_dims(D=D)
    owner = index_array(owner, "owner", ndim=1)
    rank = count(rank, "rank")
    return D * capacity * int(np.count_nonzero(owner != rank))  # exact Python ints
