"""Ring attention: context-parallel exact attention, forward and backward, as rank programs.

Setting (Liu, Zaharia, Abbeel 2023, "Ring Attention with Blockwise
Transformers"; Megatron-LM context parallelism; zhuzilin/ring-flash-attention
``ring_flash_attn.py``). One sequence of L positions is sharded over P ranks by
a layout (``refimpl.distributed.sharding``); rank r holds the rows Q_r, K_r,
V_r at global positions pos_r. Rank r owns the output rows of its queries.

Forward, on rank r (the K/V shard travels; queries and output stay):

    held = (pos_r, K_r, V_r);   out_r = 0, lse_r = -inf          (the empty partial)
    for s = 0 .. S-1:                                  held is rank (r - s) mod P's shard
        M = visible(pos_r, held.pos)                   the gathered problem's mask at GLOBAL positions
        if M has a visible entry:                      otherwise the step is skipped (no compute)
            (o, l) = attention(Q_r, held.K, held.V, mask=M)            refimpl.attention
            (out_r, lse_r) = merge_attention_states([out_r, o], [lse_r, l])   the online-softmax merge
        if s < S-1: send held to rank r+1, receive the next held from rank r-1

The result is split-KV attention (``refimpl.split_kv``) whose key chunks are
the shards, merged as they arrive; every formula is one of refimpl's. S, the
number of ring steps, is the smallest count such that no rank sees any key of
the shard s >= S hops upstream: P in general, fewer under a sliding window
(``ring_num_steps``). It is a function of the layout alone, so every rank
computes it without communicating.

Backward (ring-flash-attention ``ring_flash_attn_backward``; FlashAttention-2
Algorithm 2 per block). Rank r has the merged out_r, lse_r of the forward and
dout_r. The K/V shard travels together with its gradient accumulators dK, dV:

    held = (pos_r, K_r, V_r, dK = 0, dV = 0);  dQ_r = 0
    for s = 0 .. S-1:
        if visible(pos_r, held.pos) has an entry:
            (dq, dk, dv) = flash_attention_backward(Q_r, held.K, held.V, out_r, lse_r, dout_r, mask=M)
            dQ_r += dq;  held.dK += dk;  held.dV += dv          P = exp(S - lse_r) with the GLOBAL lse
        if s < S-1: pass held to rank r+1
    if S > 1: send (held.dK, held.dV) home to its owner (r - S + 1) mod P; receive own from (r + S - 1) mod P

The block backward uses the global lse and D = rowsum(dout_r * out_r), so its
sum over blocks is the gathered problem's gradient exactly.

Pitfalls this module exists to show (``properties.distributed`` rejects each):
masking a block with ``causal=True`` on the shard (local alignment, the wrong
causal offset), forwarding one's own shard instead of the received one (a
shard sent twice, another never), merging a partial twice.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import finite_result, instance, positive_float, same_shape
from .._validate.distributed import callable_arg, one_sequence
from ..flash import flash_attention_backward
from ..sdpa import attention, check_qkv_shapes, check_real_4d
from ..softmax import merge_attention_states
from .messages import Exchange
from .simulate import _check_log
from .simulate import resolve as resolve_driver
from .sharding import GlobalMask, check_layout, gather, shard

__all__ = ["ring_attention", "ring_attention_backward", "ring_num_steps"]


@dataclasses.dataclass(frozen=True)
class AttentionProblem:
    """What every rank agrees on: the gathered problem's mask, scale and softcap.

    ``scale=None`` means 1/sqrt(D) (refimpl.attention's default).
    """

    gmask: GlobalMask
    scale: float | None = None
    softcap: float | None = None

    def __post_init__(self):
        instance(self.gmask, "gmask", GlobalMask)
        if self.scale is not None:
            object.__setattr__(self, "scale", positive_float(self.scale, "scale"))
        if self.softcap is not None:
            object.__setattr__(self, "softcap", positive_float(self.softcap, "softcap"))

    def keywords(self) -> dict:
        return dict(scale=self.scale, softcap=self.softcap)

    def reference_keywords(self) -> dict:
        """The keywords of ``refimpl.attention`` on the gathered sequence."""
        return {**self.gmask.attention_kwargs(), **self.keywords()}


@dataclasses.dataclass(frozen=True)
class RankShard:
    """Rank ``rank``'s rows: global positions (n,), q (B, Hq, n, D), k (B, Hkv, n, D), v (B, Hkv, n, Dv)."""

    rank: int
    positions: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray


@dataclasses.dataclass(frozen=True)
class KVBlock:
    """The message of the forward ring: a K/V shard, with the global positions of its rows."""

    owner: int
    positions: np.ndarray
    k: np.ndarray
    v: np.ndarray


@dataclasses.dataclass(frozen=True)
class KVGradBlock:
    """The message of the backward ring: a K/V shard and its gradient accumulators."""

    owner: int
    positions: np.ndarray
    k: np.ndarray
    v: np.ndarray
    dk: np.ndarray
    dv: np.ndarray


@dataclasses.dataclass(frozen=True)
class GradHome:
    """The last backward message: a shard's finished dK, dV going back to its owner."""

    owner: int
    dk: np.ndarray
    dv: np.ndarray


@dataclasses.dataclass(frozen=True)
class ForwardState:
    """What rank r keeps during the forward: the running merged partial and the steps it took."""

    out: np.ndarray
    lse: np.ndarray
    computed: tuple = ()
    skipped: tuple = ()


# ---------------------------------------------------------------------------
# the pure steps


def ring_num_steps(gmask: GlobalMask, positions) -> int:
    """S: 1 + the largest hop distance (r - owner) mod P at which some rank sees a key of the shard.

    ``gmask`` a ``sharding.GlobalMask`` of length L; ``positions`` a layout of 0..L-1."""
    instance(gmask, "gmask", GlobalMask, "refimpl.distributed.sharding.GlobalMask")
    positions = check_layout(positions, gmask.L)
    P = len(positions)
    S = 1
    for r in range(P):
        for d in range(1, P):
            if gmask.visible(positions[r], positions[(r - d) % P]).any():
                S = max(S, d + 1)
    return S


def block_visibility(problem: AttentionProblem, qpos, kpos) -> np.ndarray:
    """The gathered mask at the block's global positions (qpos x kpos)."""
    return problem.gmask.visible(qpos, kpos)


def forward_step(problem: AttentionProblem, shard: RankShard, state: ForwardState, held: KVBlock) -> ForwardState:
    """One ring step on rank ``shard.rank``: attend to the held K/V block and merge (or skip it)."""
    M = block_visibility(problem, shard.positions, held.positions)
    if not M.any():
        return dataclasses.replace(state, skipped=state.skipped + (held.owner,))
    o, l = attention(shard.q, held.k, held.v, mask=M, **problem.keywords())
    out, lse = merge_attention_states([state.out, o], [state.lse, l])
    return ForwardState(out, lse, state.computed + (held.owner,), state.skipped)


def empty_state(shard: RankShard) -> ForwardState:
    """(out 0, lse -inf): the identity of the merge."""
    B, Hq, n, _ = shard.q.shape
    return ForwardState(np.zeros((B, Hq, n, shard.v.shape[3])), np.full((B, Hq, n), -np.inf))


def own_block(shard: RankShard) -> KVBlock:
    return KVBlock(shard.rank, shard.positions, shard.k, shard.v)


def ring_neighbours(rank: int, P: int) -> tuple[int, int]:
    """(next, prev): K/V blocks go to rank + 1 and come from rank - 1."""
    return (rank + 1) % P, (rank - 1) % P


def backward_step(problem, shard: RankShard, out, lse, dout, dq, held: KVGradBlock):
    """One backward ring step: block gradients from the global (out, lse); returns (dq, held)."""
    M = block_visibility(problem, shard.positions, held.positions)
    if not M.any():
        return dq, held
    nq, nk = M.shape
    bq, bk, bv = flash_attention_backward(shard.q, held.k, held.v, out, lse, dout, block_q=max(nq, 1),
                                          block_k=max(nk, 1), mask=M, **problem.keywords())
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: refused by ring_attention_backward
        return dq + bq, dataclasses.replace(held, dk=held.dk + bk, dv=held.dv + bv)


# ---------------------------------------------------------------------------
# the rank programs (generators; see refimpl.distributed.messages)


def forward_program(problem: AttentionProblem, shard: RankShard, num_ranks: int, num_steps: int):
    """Rank program of the ring forward; returns the final ForwardState (out_r, lse_r, steps)."""
    nxt, prev = ring_neighbours(shard.rank, num_ranks)
    held, state = own_block(shard), empty_state(shard)
    for s in range(num_steps):
        state = forward_step(problem, shard, state, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    return state


def backward_program(problem, shard: RankShard, out, lse, dout, num_ranks: int, num_steps: int):
    """Rank program of the ring backward; returns (dq_r, dk_r, dv_r) for rank r's rows."""
    P, r = num_ranks, shard.rank
    nxt, prev = ring_neighbours(r, P)
    held = KVGradBlock(r, shard.positions, shard.k, shard.v, np.zeros(shard.k.shape), np.zeros(shard.v.shape))
    dq = np.zeros(shard.q.shape)
    for s in range(num_steps):
        dq, held = backward_step(problem, shard, out, lse, dout, dq, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    if num_steps == 1:
        return dq, held.dk, held.dv
    home, source = (r - num_steps + 1) % P, (r + num_steps - 1) % P
    own = (yield Exchange({home: GradHome(held.owner, held.dk, held.dv)}, (source,)))[source]
    if own.owner != r:
        raise RuntimeError(f"rank {r} received the gradients of rank {own.owner}'s shard")
    return dq, own.dk, own.dv


# ---------------------------------------------------------------------------
# whole-sequence entry points (shard, run every rank, gather)


def check_hooks(log, P: int, ranks_from: str = "positions", **hooks) -> None:
    """``log`` a simulate.Log of P = len(ranks_from) ranks or None; each hook (rank program, driver)
    callable or None."""
    if log is not None:
        _check_log(log, P, ranks_from)
    for name, f in hooks.items():
        callable_arg(f, name, "a callable or None", allow_none=True)


def prepare(q, k, v, positions, causal, window, mask, scale, softcap):
    """Validated float64 (q, k, v), the layout and the AttentionProblem of a context-parallel call."""
    q, k, v = (check_real_4d(x, n).astype(np.float64, copy=False) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    _, _, _, Lq, Lk, _, _ = check_qkv_shapes(q, k, v)
    one_sequence(Lq, Lk)
    positions = check_layout(positions, Lq)
    problem = AttentionProblem(GlobalMask(Lq, causal, window, mask), scale, softcap)
    return q, k, v, positions, problem


def shards_of(q, k, v, positions) -> list:
    return [RankShard(r, pos, qs, ks, vs) for r, (pos, qs, ks, vs)
            in enumerate(zip(positions, shard(q, positions), shard(k, positions), shard(v, positions)))]


def ring_attention(q, k, v, positions, *, causal=False, window=None, mask=None, scale=None, softcap=None,
                   log=None, program=forward_program, driver=None):
    """Attention of the gathered sequence by ring attention over ``len(positions)`` ranks (simulated by default).

    q (B, Hq, L, D), k (B, Hkv, L, D), v (B, Hkv, L, Dv); ``positions`` a layout
    (``sharding.contiguous`` / ``sharding.zigzag``). Returns (out, lse, states)
    with out and lse gathered back to global order and each rank's ForwardState.
    ``log`` (a ``simulate.Log``) receives the counted messages. ``driver``:
    ``simulate.drive`` (default) or ``mpi.driver()`` (real ranks).
    """
    q, k, v, positions, problem = prepare(q, k, v, positions, causal, window, mask, scale, softcap)
    P, S = len(positions), ring_num_steps(problem.gmask, positions)
    check_hooks(log, P, program=program, driver=driver)
    return _forward(q, k, v, positions, problem, S, log, program, driver)


def _forward(q, k, v, positions, problem: AttentionProblem, num_steps: int, log, program, driver):
    """``ring_attention`` of checked arguments: (out, lse, states)."""
    P, shards = len(positions), shards_of(q, k, v, positions)
    states = resolve_driver(driver)(lambda r: program(problem, shards[r], P, num_steps), P, log)
    return gather([s.out for s in states], positions), gather([s.lse for s in states], positions), states


def ring_attention_backward(q, k, v, dout, positions, *, causal=False, window=None, mask=None, scale=None,
                            softcap=None, log=None, program=backward_program, driver=None):
    """(dq, dk, dv) of sum(dout * out) by the ring backward (forward by ring_attention first, uncounted)."""
    dout = check_real_4d(dout, "dout").astype(np.float64, copy=False)
    q, k, v, positions, problem = prepare(q, k, v, positions, causal, window, mask, scale, softcap)
    same_shape(dout, q.shape[:3] + (v.shape[3],), "dout")  # out's shape
    P, S = len(positions), ring_num_steps(problem.gmask, positions)
    check_hooks(log, P, program=program, driver=driver)
    out, lse, _ = _forward(q, k, v, positions, problem, S, None, forward_program, driver)
    outs, lses, douts = shard(out, positions), shard(lse, positions), shard(dout, positions)
    shards = shards_of(q, k, v, positions)
    grads = resolve_driver(driver)(lambda r: program(problem, shards[r], outs[r], lses[r], douts[r], P, S), P, log)
    parts = [[finite_result(g[i], "a gradient summed over the ring steps", "q, k, v, dout") for g in grads]
             for i in range(3)]
    return tuple(gather(p, positions) for p in parts)
