"""Deliberately wrong rank programs for the distributed properties (each names the bug it carries).

Each is a small recomposition of the public pure steps of ``refimpl.distributed``
with one mistake, the kind that lives in real distributed kernels. They run on
the simulator and on real MPI ranks alike (tests/mpi_ranks.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from refimpl.distributed import expert_parallel as EP
from refimpl.distributed import ring as R
from refimpl.distributed import ulysses as U
from refimpl.distributed.messages import Exchange
from refimpl.moe.router import normalize_gates
from refimpl.sdpa import attention
from refimpl.softmax import merge_attention_states


def ring_forward_local_causal(problem, shard, num_ranks, num_steps):
    """Masks each block with causal/window on the shard's *local* indices (wrong causal offset)."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held, state = R.own_block(shard), R.empty_state(shard)
    kw = problem.gmask.attention_kwargs()
    for s in range(num_steps):
        o, l = attention(shard.q, held.k, held.v, causal=kw["causal"], window=kw["window"], **problem.keywords())
        out, lse = merge_attention_states([state.out, o], [state.lse, l])
        state = R.ForwardState(out, lse, state.computed + (held.owner,))
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    return state


def ring_forward_own_shard(problem, shard, num_ranks, num_steps):
    """Sends its own K/V shard at every step instead of forwarding the one it received."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held, state = R.own_block(shard), R.empty_state(shard)
    for s in range(num_steps):
        state = R.forward_step(problem, shard, state, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: R.own_block(shard)}, (prev,)))[prev]
    return state


def ring_forward_merge_twice(problem, shard, num_ranks, num_steps):
    """Merges the partial of the last step twice."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held, state = R.own_block(shard), R.empty_state(shard)
    for s in range(num_steps):
        state = R.forward_step(problem, shard, state, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    return R.forward_step(problem, shard, state, held)


def ring_forward_all_steps(problem, shard, num_ranks, num_steps):
    """Right answer, wasted bandwidth: always P steps, ignoring that a window never reaches far shards."""
    return (yield from R.forward_program(problem, shard, num_ranks, num_ranks))


def ring_backward_local_lse(problem, shard, out, lse, dout, num_ranks, num_steps):
    """Recomputes P in each block from the block's own lse and out instead of the global ones."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held = R.KVGradBlock(shard.rank, shard.positions, shard.k, shard.v, np.zeros(shard.k.shape), np.zeros(shard.v.shape))
    dq = np.zeros(shard.q.shape)
    for s in range(num_steps):
        M = R.block_visibility(problem, shard.positions, held.positions)
        o, l = attention(shard.q, held.k, held.v, mask=M, **problem.keywords())
        dq, held = R.backward_step(problem, shard, o, l, dout, dq, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    if num_steps == 1:
        return dq, held.dk, held.dv
    home, source = (shard.rank - num_steps + 1) % num_ranks, (shard.rank + num_steps - 1) % num_ranks
    own = (yield Exchange({home: R.GradHome(held.owner, held.dk, held.dv)}, (source,)))[source]
    return dq, own.dk, own.dv


def ring_backward_keep_held(problem, shard, out, lse, dout, num_ranks, num_steps):
    """Never sends the finished dK, dV home: returns the accumulator of the shard it holds last."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held = R.KVGradBlock(shard.rank, shard.positions, shard.k, shard.v, np.zeros(shard.k.shape), np.zeros(shard.v.shape))
    dq = np.zeros(shard.q.shape)
    for s in range(num_steps):
        dq, held = R.backward_step(problem, shard, out, lse, dout, dq, held)
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    if held.dk.shape != shard.k.shape:  # shapes differ: nothing sensible to return but zeros
        return dq, np.zeros(shard.k.shape), np.zeros(shard.v.shape)
    return dq, held.dk, held.dv


def _assemble_in_rank_order(received, names=("q", "k", "v")):
    blocks = [received[s] for s in sorted(received)]
    return tuple(np.concatenate([getattr(b, n) for b in blocks], axis=2) for n in names)


def ulysses_rank_order(problem, shard, num_ranks):
    """Concatenates the received rows in source-rank order, not at their global positions."""
    return (yield from U.program(problem, shard, num_ranks, assemble=_assemble_in_rank_order))


def ulysses_backward_rank_order(problem, shard, dout, num_ranks):
    """The backward with the same mistake."""
    return (yield from U.backward_program(problem, shard, dout, num_ranks, assemble=_assemble_in_rank_order))


def _combine_from_wrong_rank(plan, received, num_tokens, D):
    """Reads rank p's rows from rank p+1's message whenever the sizes allow it."""
    sa, where = plan
    P = len(where)
    rows = np.zeros((len(sa.token), D))
    for p, idx in where.items():
        other = received[(p + 1) % P].y
        rows[idx] = other if other.shape[0] == len(idx) else received[p].y
    return EP.scatter_combine(rows, sa, num_tokens)


def ep_combine_wrong_rank(shard, k, num_ranks, capacity_convention="local", **route_options):
    """A token combined from the wrong rank's returned rows."""
    return (yield from EP.program(shard, k, num_ranks, capacity_convention, combine_step=_combine_from_wrong_rank,
                                  **route_options))


def ep_global_as_local(shard, k, num_ranks, capacity_convention="local", **route_options):
    """Told the global capacity convention, applies the local one (capacity from this rank's tokens)."""
    return (yield from EP.program(shard, k, num_ranks, "local", **route_options))


def ep_dispatch_to_all(shard, k, num_ranks, capacity_convention="local", **route_options):
    """The all-gather pattern the notes warn about (docs/notes.md#expert-parallel): every kept
    row goes to every rank, which keeps only those for its own experts. Right answer, P times the dispatch volume."""
    gen = EP.program(shard, k, num_ranks, capacity_convention, **route_options)
    msg = next(gen)
    try:
        while True:
            sends = msg.sends
            if sends and isinstance(next(iter(sends.values())), EP.DispatchBlock):
                everything = _concat_blocks([sends[p] for p in sorted(sends)])
                received = yield Exchange({p: everything for p in sends}, msg.recv_from)
                received = {s: _only_for(received[s], shard.owner, shard.rank) for s in received}
            else:
                received = yield msg
            msg = gen.send(received)
    except StopIteration as stop:
        return stop.value


def _concat_blocks(blocks):
    b0 = blocks[0]
    return EP.DispatchBlock(b0.source, b0.capacity, np.concatenate([b.expert for b in blocks]),
                            np.concatenate([b.slot for b in blocks]), np.concatenate([b.x for b in blocks]))


def _only_for(block, owner, rank):
    keep = owner[block.expert] == rank
    return dataclasses.replace(block, expert=block.expert[keep], slot=block.slot[keep], x=block.x[keep])


def ep_token_sent_twice(shard, k, num_ranks, capacity_convention="local", **route_options):
    """Sends its first dispatched row twice (an extra slot); drops the duplicate's output on combine.
    The output is right; the expert computed a token twice (token conservation)."""
    gen = EP.program(shard, k, num_ranks, capacity_convention, **route_options)
    msg = next(gen)
    extra = {}
    try:
        while True:
            sends = dict(msg.sends)
            if sends and isinstance(next(iter(sends.values())), EP.DispatchBlock):
                for p, b in sends.items():
                    if len(b.slot):
                        extra[p] = True
                        sends[p] = dataclasses.replace(b, expert=np.append(b.expert, b.expert[0]),
                                                       slot=np.append(b.slot, -1 - shard.rank),
                                                       x=np.vstack([b.x, b.x[:1]]), capacity=-1)
                received = yield Exchange(sends, msg.recv_from)
            else:
                received = yield msg
                if received and isinstance(next(iter(received.values())), EP.CombineBlock):
                    received = {p: EP.CombineBlock(c.y[:-1]) if extra.get(p) else c for p, c in received.items()}
            msg = gen.send(received)
    except StopIteration as stop:
        return stop.value


def _reroute_ignoring_own_choices(routing):
    """Backup = the best-scored expert with a free slot, even one the token already chose."""
    C = routing.capacity
    if C is None:
        return routing
    indices, kept, position = routing.indices.copy(), routing.kept.copy(), routing.position.copy()
    fill = routing.kept_counts.copy()
    for t, j in zip(*np.nonzero(~kept & routing.token_mask[:, None])):
        for e in np.argsort(-routing.probs[t], kind="stable"):
            if e != indices[t, j] and fill[e] < C:
                indices[t, j], kept[t, j], position[t, j] = e, True, fill[e]
                fill[e] += 1
                break
    opts = routing.options
    gates = normalize_gates(np.take_along_axis(routing.probs, indices, axis=-1), kept, opts.normalize,
                            opts.normalize_eps) * opts.route_scale
    return dataclasses.replace(routing, indices=indices, kept=kept, position=position, gates=gates)


def ep_reroute_to_own_choice(shard, k, num_ranks, capacity_convention="local", **route_options):
    """Reroutes a dropped assignment to an expert the token already chose (its output counted twice)."""
    return (yield from EP.program(shard, k, num_ranks, capacity_convention, reroute_step=_reroute_ignoring_own_choices,
                                  **route_options))


def _merge_without_max_shift(outs, lses):
    """The two-part merge with weights exp(lse_c) / sum exp(lse): right for |lse| < 709, and
    inf / inf = NaN once a partial lse passes log(float64 max) ~ 709.78."""
    L = np.stack(lses)
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp(L)
        tot = w.sum(axis=0)
        out = np.einsum("p...,p...d->...d", np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0), np.stack(outs))
        return out, np.where(tot > 0, np.log(np.where(tot > 0, tot, 1.0)), -np.inf)


def ring_forward_merge_no_max(problem, shard, num_ranks, num_steps):
    """Merges each arriving partial without shifting by the larger lse (only scores beyond ~709 expose it)."""
    nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
    held, state = R.own_block(shard), R.empty_state(shard)
    for s in range(num_steps):
        M = R.block_visibility(problem, shard.positions, held.positions)
        if M.any():
            o, l = attention(shard.q, held.k, held.v, mask=M, **problem.keywords())
            out, lse = _merge_without_max_shift([state.out, o], [state.lse, l])
            state = R.ForwardState(out, lse, state.computed + (held.owner,), state.skipped)
        else:
            state = dataclasses.replace(state, skipped=state.skipped + (held.owner,))
        if s < num_steps - 1:
            held = (yield Exchange({nxt: held}, (prev,)))[prev]
    return state
