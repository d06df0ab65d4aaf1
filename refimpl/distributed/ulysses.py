"""All-to-all (DeepSpeed-Ulysses) context parallelism: swap sequence sharding for head sharding.

Jacobs et al. 2023, "DeepSpeed Ulysses" (deepspeed/sequence/layer.py,
``DistributedAttention`` with ``_SeqAllToAll``). Rank r holds all heads of its
sequence rows pos_r. Heads are cut into P contiguous groups (needs P | Hq and
P | Hkv; query head h reads K/V head h // G, so query group p reads exactly K/V
group p under GQA):

    round 1 (all-to-all): rank r sends to rank p  (pos_r, Q_r[:, heads_q(p)], K_r[:, heads_kv(p)], V_r[:, heads_kv(p)])
    on rank p:            place the received rows at their GLOBAL positions -> the whole sequence, heads group p
                          (out_p, lse_p) = attention(Q_p, K_p, V_p, **the gathered problem's keywords)
    round 2 (all-to-all): rank p sends to rank r  (out_p[:, :, pos_r], lse_p[:, :, pos_r])
    on rank r:            concatenate the head groups -> out_r, lse_r for all heads

Backward: the same two all-to-alls around ``refimpl.attention_backward``;
round 1 also carries dout's head group, round 2 returns (dq, dk, dv) rows.

Each rank runs ``refimpl.attention`` on a full sequence, so causal masks,
windows and alignment are the gathered problem's as written. The pitfall:
concatenating the received rows in source-rank order instead of placing them
at their global positions is right for contiguous layouts and wrong for
zig-zag ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import same_shape
from .._validate.distributed import head_groups as check_head_groups
from ..sdpa import attention, attention_backward, check_real_4d
from .messages import Exchange
from .ring import AttentionProblem, RankShard, check_hooks, prepare, shards_of
from .simulate import resolve as resolve_driver
from .sharding import gather
from .sharding import shard as shard_rows

__all__ = ["ulysses_attention", "ulysses_attention_backward"]


@dataclasses.dataclass(frozen=True)
class HeadBlock:
    """Round 1 message: the source's rows (global positions) of one head group."""

    source: int
    positions: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray


@dataclasses.dataclass(frozen=True)
class HeadGradBlock:
    """Backward round 1: a HeadBlock plus the head group of dout."""

    source: int
    positions: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    dout: np.ndarray


@dataclasses.dataclass(frozen=True)
class GradBlock:
    """Backward round 2: one head group's (dq, dk, dv) rows for the destination's positions."""

    dq: np.ndarray
    dk: np.ndarray
    dv: np.ndarray


@dataclasses.dataclass(frozen=True)
class OutBlock:
    """Round 2 message: one head group's output rows for the destination's positions."""

    heads: int
    out: np.ndarray
    lse: np.ndarray


def head_groups(H: int, P: int, name: str = "heads") -> list:
    """P contiguous slices of H heads (P must divide H)."""
    n = check_head_groups(H, P, name)
    return [slice(p * n, (p + 1) * n) for p in range(P)]


def scatter_heads(shard: RankShard, P: int) -> dict:
    """Round 1 sends of rank r: head group p of its rows to rank p."""
    gq, gkv = head_groups(shard.q.shape[1], P), head_groups(shard.k.shape[1], P)
    return {p: HeadBlock(shard.rank, shard.positions, shard.q[:, gq[p]], shard.k[:, gkv[p]], shard.v[:, gkv[p]])
            for p in range(P)}


def assemble_sequence(received: dict, names=("q", "k", "v")) -> tuple:
    """The whole sequence of each named array for one head group: rows placed at their global positions."""
    blocks = [received[s] for s in sorted(received)]
    positions = tuple(b.positions for b in blocks)
    return tuple(gather([getattr(b, n) for b in blocks], positions) for n in names)


def head_attention(problem: AttentionProblem, q, k, v) -> tuple:
    """The gathered problem on one head group: refimpl.attention itself."""
    return attention(q, k, v, **problem.reference_keywords())


def program(problem: AttentionProblem, shard: RankShard, num_ranks: int, assemble=assemble_sequence):
    """Rank program of Ulysses attention; returns (out_r, lse_r) for rank r's rows, all heads."""
    P, r = num_ranks, shard.rank
    everyone = tuple(range(P))
    received = yield Exchange(scatter_heads(shard, P), everyone)
    q, k, v = assemble(received)
    out, lse = head_attention(problem, q, k, v)
    back = {s: OutBlock(r, out[:, :, received[s].positions], lse[:, :, received[s].positions]) for s in everyone}
    parts = yield Exchange(back, everyone)
    return (np.concatenate([parts[p].out for p in everyone], axis=1),
            np.concatenate([parts[p].lse for p in everyone], axis=1))


def backward_program(problem: AttentionProblem, shard: RankShard, dout, num_ranks: int, assemble=assemble_sequence):
    """Rank program of the Ulysses backward; returns (dq_r, dk_r, dv_r) for rank r's rows, all heads."""
    P = num_ranks
    everyone = tuple(range(P))
    gq = head_groups(shard.q.shape[1], P)
    sends = {p: HeadGradBlock(b.source, b.positions, b.q, b.k, b.v, dout[:, gq[p]])
             for p, b in scatter_heads(shard, P).items()}
    received = yield Exchange(sends, everyone)
    q, k, v, do = assemble(received, ("q", "k", "v", "dout"))
    dq, dk, dv = attention_backward(q, k, v, do, **problem.reference_keywords())
    back = {s: GradBlock(*(g[:, :, received[s].positions] for g in (dq, dk, dv))) for s in everyone}
    parts = yield Exchange(back, everyone)
    return tuple(np.concatenate([getattr(parts[p], n) for p in everyone], axis=1) for n in ("dq", "dk", "dv"))


def ulysses_attention(q, k, v, positions, *, causal=False, window=None, mask=None, scale=None, softcap=None,
                      log=None, rank_program=program, driver=None):
    """Attention of the gathered sequence by two all-to-alls over ``len(positions)`` ranks (simulated by default).

    Shapes as ``ring.ring_attention``; P must divide Hq and Hkv. Returns (out, lse) in global order.
    """
    q, k, v, positions, problem = prepare(q, k, v, positions, causal, window, mask, scale, softcap)
    P = len(positions)
    head_groups(q.shape[1], P, "q"), head_groups(k.shape[1], P, "k")  # validate before running
    check_hooks(log, P, rank_program=rank_program, driver=driver)
    shards = shards_of(q, k, v, positions)
    res = resolve_driver(driver)(lambda r: rank_program(problem, shards[r], P), P, log)
    return gather([o for o, _ in res], positions), gather([l for _, l in res], positions)


def ulysses_attention_backward(q, k, v, dout, positions, *, causal=False, window=None, mask=None, scale=None,
                               softcap=None, log=None, rank_program=backward_program, driver=None):
    """(dq, dk, dv) of sum(dout * out) by the Ulysses backward, in global order."""
    q, k, v, positions, problem = prepare(q, k, v, positions, causal, window, mask, scale, softcap)
    dout = check_real_4d(dout, "dout").astype(np.float64, copy=False)
    same_shape(dout, q.shape[:3] + (v.shape[3],), "dout")
    P = len(positions)
    head_groups(q.shape[1], P, "q"), head_groups(k.shape[1], P, "k")
    check_hooks(log, P, rank_program=rank_program, driver=driver)
    shards, douts = shards_of(q, k, v, positions), shard_rows(dout, positions)
    res = resolve_driver(driver)(lambda r: rank_program(problem, shards[r], douts[r], P), P, log)
    return tuple(gather([g[i] for g in res], positions) for i in range(3))
