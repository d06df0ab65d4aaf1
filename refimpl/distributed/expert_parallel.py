"""Expert-parallel MoE: experts placed on ranks, all-to-all dispatch and combine, as rank programs.

GShard (Lepikhin et al. 2020, section 3.2: the all-to-all around the expert
computation), DeepSpeed-MoE (deepspeed/moe/sharded_moe.py ``MOELayer.forward``:
``_AllToAll`` before and after the experts), docs/notes.md#expert-parallel (the
all-to-all: dispatch tokens -> owning expert rank, combine outputs -> original
order). Expert e lives on rank ``owner[e]``; rank r holds T_r tokens x_r, the
(replicated) router weight W and only its own experts.

On rank r:

    z_r = x_r W^T;  routing_r = route(z_r, k, ...)       refimpl.moe.route, the capacity convention below
    sorted kept assignments (refimpl.moe.sort_by_expert): row i = (token t_i, choice j_i, expert e_i, slot c_i)
    all-to-all dispatch:  to rank p the rows x_r[t_i] with owner[e_i] = p, tagged (e_i, c_i)
    on rank p: for each local expert e, its rows from every source in buffer order; y = FFN_e(rows)
    all-to-all combine:   the outputs go back to their source, in the order they came
    on rank r:            y_r[t_i] += g[t_i, j_i] * out_i                (refimpl.moe.scatter_combine)

Capacity convention (named; both exist):

    "local"   (GShard groups = ranks; DeepSpeed ``top2gating`` on each rank's
              batch; Megatron's capacity per local batch): each rank routes its
              own T_r tokens with refimpl.moe.route, C = rule(T_r, E, k) slots
              per expert *per source rank*; expert e's buffer holds P x C rows,
              row (source s, slot c). Equals refimpl.moe applied to each rank's
              tokens as one group.
    "global"  one capacity C = rule(T, E, k), T = sum_r T_r, for the expert's
              whole buffer, slots claimed in the drop order over the gathered
              batch (rank 0's tokens first). Needs one extra all-to-all of the
              (k, E) count tables before dropping: with n_s[j, e] the number of
              rank s's choice-j assignments to e,
                  k_major:      slot = sum_{j' < j} sum_s n_s[j', e] + sum_{s < r} n_s[j, e] + (rank among r's choice-j assignments to e)
                  token_major:  slot = sum_{s < r} sum_j n_s[j, e] + (rank among r's assignments to e, token-major)
              kept iff slot < C. Equals refimpl.moe on the gathered batch.
              Orders that rank by score across the batch (priority, per-expert
              top-C) would need the scores exchanged and are refused.

Rerouting (``reroute=True``, docs/notes.md#expert-parallel; ``refimpl.moe.reroute_dropped``):
under the local convention each rank moves its dropped assignments to backup
experts with free slots before dispatch, exactly as the single-process rule
does on its tokens. Under the global convention a backup's free slots depend on
every other rank's reroutes in claim order, which the count tables do not carry:
refused.

Token conservation: every kept assignment is sent to exactly one expert rank,
computed once and returned once; dropped ones are never sent (their gate is 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import as_float_array, check_budget, choice, count, flag
from .._validate import experts as check_experts
from .._validate.distributed import (expert_owner, global_drop_order, local_reroute, placement, preset_k,
                                     rank_token_lists)
from ..moe.dispatch import gather_by_expert, scatter_combine, sort_by_expert
from ..moe.forward import router_logits
from ..moe.presets import get as get_preset
from ..moe.reroute import reroute_dropped
from ..moe.slots import _rank_within_expert
from ..moe.router import (RouteOptions, effective_options, normalize_gates, rank_within_expert, resolve_capacity,
                          resolve_options, route)
from .messages import Exchange
from .ring import check_hooks
from .simulate import MAX_RANKS
from .simulate import resolve as resolve_driver

__all__ = ["CONVENTIONS", "GLOBAL_ORDERS", "contiguous_placement", "expert_parallel_moe"]

CONVENTIONS = ("local", "global")
GLOBAL_ORDERS = ("k_major", "token_major")


@dataclasses.dataclass(frozen=True)
class EPShard:
    """Rank ``rank``: its tokens x (T_r, D), the router weight (E, D), its experts {e: expert}, owner (E,)."""

    rank: int
    x: np.ndarray
    router_weight: np.ndarray
    experts: dict
    owner: np.ndarray


@dataclasses.dataclass(frozen=True)
class CountTable:
    """Global-capacity round: rank ``source``'s assignments per (choice j, expert e), shape (k, E)."""

    source: int
    counts: np.ndarray


@dataclasses.dataclass(frozen=True)
class DispatchBlock:
    """Dispatch message: rows for the destination's experts, each tagged (expert, slot); the
    source's capacity C (-1: dropless) bounds the slots."""

    source: int
    capacity: int
    expert: np.ndarray
    slot: np.ndarray
    x: np.ndarray


@dataclasses.dataclass(frozen=True)
class CombineBlock:
    """Combine message: expert outputs, one row per dispatched row, in the order received."""

    y: np.ndarray


@dataclasses.dataclass(frozen=True)
class EPResult:
    """What rank r keeps: its output rows, its routing, and rows computed per local expert."""

    y: np.ndarray
    routing: object
    rows_per_expert: dict


def contiguous_placement(E: int, P: int) -> np.ndarray:
    """owner[e] = e // (E / P): E / P consecutive experts per rank (P must divide E)."""
    E, P = placement(E, P, MAX_RANKS)
    check_budget("E", shape=(E,), itemsize=16, what=f"an owner for each of {E} experts")
    return np.arange(E, dtype=np.int64) // (E // P)


def _route_options(capacity_convention, route_options, k) -> RouteOptions:
    choice(capacity_convention, "capacity_convention", CONVENTIONS)
    if route_options.get("preset") is not None:
        preset_k(k, get_preset(route_options["preset"]))
    opts = resolve_options(route_options.get("preset"), capacity_factor=route_options.get("capacity_factor"),
                           **{n: v for n, v in route_options.items() if n not in ("preset", "capacity_factor")})
    global_drop_order(opts.drop_order, capacity_convention, GLOBAL_ORDERS)
    return opts


def _fields(opts: RouteOptions, **override) -> dict:
    return {**{f.name: getattr(opts, f.name) for f in dataclasses.fields(RouteOptions)}, **override}


# ---------------------------------------------------------------------------
# the pure steps


def choice_counts(routing) -> np.ndarray:
    """(k, E): n[j, e] = number of this rank's choice-j assignments to expert e."""
    k, E = routing.k, routing.num_experts
    return np.stack([np.bincount(routing.indices[:, j], minlength=E) for j in range(k)]).astype(np.int64)


def global_slots(routing, tables: list, rank: int, drop_order: str) -> np.ndarray:
    """(T_r, k) slot of each assignment in its expert's global buffer (formulas in the module docstring)."""
    n = np.stack(tables)  # (P, k, E)
    T, k = routing.indices.shape
    e = routing.indices
    if drop_order == "k_major":
        before_choice = np.concatenate([np.zeros((1, n.shape[2]), np.int64), np.cumsum(n.sum(0), axis=0)[:-1]])
        before_rank = n[:rank].sum(0)  # (k, E)
        local = np.stack([_rank_within_expert(e[:, j], n.shape[2]) for j in range(k)], axis=1) if T else e
        j = np.broadcast_to(np.arange(k), (T, k))
        return before_choice[j, e] + before_rank[j, e] + local
    before_rank = n[:rank].sum((0, 1))  # (E,)
    local = _rank_within_expert(e.reshape(-1), n.shape[2]).reshape(T, k) if T else e
    return before_rank[e] + local


def apply_global_capacity(routing, opts: RouteOptions, tables: list, rank: int):
    """routing_r with dropping and gates under the global capacity C = rule(T, E, k)."""
    T_total = int(sum(t[0].sum() for t in tables))
    C = resolve_capacity(opts.capacity, T_total, routing.num_experts, routing.k)
    slot = global_slots(routing, tables, rank, opts.drop_order)
    kept = np.ones(slot.shape, bool) if C is None else slot < C
    raw = np.take_along_axis(routing.probs, routing.indices, axis=-1)
    gates = normalize_gates(raw, kept, opts.normalize, opts.normalize_eps) * opts.route_scale
    return dataclasses.replace(routing, kept=kept, position=np.where(kept, slot, -1), gates=gates, capacity=C,
                               options=opts)


def dispatch_blocks(shard: EPShard, routing, num_ranks: int):
    """(sends {p: DispatchBlock}, plan): plan = (SortedAssignments, {p: row indices into it})."""
    sa = sort_by_expert(routing)
    rows = gather_by_expert(shard.x, sa)
    slots = routing.position[sa.token, sa.choice]
    dest = shard.owner[sa.expert]
    where = {p: np.nonzero(dest == p)[0] for p in range(num_ranks)}
    C = -1 if routing.capacity is None else routing.capacity
    sends = {p: DispatchBlock(shard.rank, C, sa.expert[i], slots[i], rows[i]) for p, i in where.items()}
    return sends, (sa, where)


def compute_experts(shard: EPShard, received: dict, capacity_convention: str):
    """Run each local expert on its buffer; returns ({source: CombineBlock}, rows per expert)."""
    sources = sorted(received)
    D = shard.x.shape[1]
    outs = {s: np.zeros((len(received[s].expert), D)) for s in sources}
    rows_per_expert = {}
    for e, expert in sorted(shard.experts.items()):
        # buffer order: (source, slot) for per-source slots, slot for global ones
        entries = [(s, i, received[s].slot[i]) for s in sources for i in np.nonzero(received[s].expert == e)[0]]
        keys = [(s, c) if capacity_convention == "local" else (c,) for s, _, c in entries]
        over = [(s, c) for s, _, c in entries if received[s].capacity >= 0 and c >= received[s].capacity]
        if len(set(keys)) != len(keys) or over:
            raise RuntimeError(f"rank {shard.rank}: expert {e} received clashing or out-of-capacity slots {keys}")
        entries = [entries[i] for i in sorted(range(len(keys)), key=keys.__getitem__)]
        rows_per_expert[e] = len(entries)
        if entries:
            y = expert(np.stack([received[s].x[i] for s, i, _ in entries]))
            for (s, i, _), row in zip(entries, y):
                outs[s][i] = row
    return {s: CombineBlock(outs[s]) for s in sources}, rows_per_expert


def combine(plan, received: dict, num_tokens: int, D: int) -> np.ndarray:
    """y_r: the returned rows put back in sorted-assignment order, gated and summed per token."""
    sa, where = plan
    rows = np.zeros((len(sa.token), D))
    for p, idx in where.items():
        rows[idx] = received[p].y
    return scatter_combine(rows, sa, num_tokens)


# ---------------------------------------------------------------------------
# the rank program


def program(shard: EPShard, k: int, num_ranks: int, capacity_convention: str = "local", combine_step=combine,
            reroute: bool = False, reroute_step=reroute_dropped, **route_options):
    """Rank program of the expert-parallel MoE layer; returns an EPResult."""
    P, r = num_ranks, shard.rank
    everyone = tuple(range(P))
    opts = _route_options(capacity_convention, route_options, k)
    local_reroute(flag(reroute, "reroute"), capacity_convention)
    z = router_logits(shard.x, shard.router_weight)
    if capacity_convention == "local":
        routing = route(z, k, **_fields(opts))
        if reroute:
            routing = reroute_step(routing)
    else:
        routing = route(z, k, **_fields(opts, capacity=None))  # selection and probabilities only
        tables = yield Exchange({p: CountTable(r, choice_counts(routing)) for p in everyone}, everyone)
        routing = apply_global_capacity(routing, effective_options(opts, k), [tables[s].counts for s in everyone], r)
    sends, plan = dispatch_blocks(shard, routing, P)
    received = yield Exchange(sends, everyone)
    back, rows_per_expert = compute_experts(shard, received, capacity_convention)
    returned = yield Exchange(back, everyone)
    return EPResult(combine_step(plan, returned, shard.x.shape[0], shard.x.shape[1]), routing, rows_per_expert)


def expert_parallel_moe(xs, router_weight, experts, k, owner, *, capacity_convention="local", log=None,
                        rank_program=program, driver=None, reroute=False, **route_options):
    """Run the layer over len(xs) ranks (simulated by default). xs: list of (T_r, D); experts: all E (each rank gets
    its own); owner (E,) rank of each expert. Returns the list of EPResult, one per rank.
    ``driver``: ``simulate.drive`` (default) or ``mpi.driver()``."""

    rank_token_lists(xs, MAX_RANKS)
    W = as_float_array(router_weight, "router_weight", ndim=2, shape_doc="(E, D)", min_size={0: 1})
    P, (E, D) = len(xs), W.shape
    xs = [as_float_array(x, f"xs[{r}]", shape=(None, D), shape_doc="(T_r, D) with D of router_weight")
          for r, x in enumerate(xs)]
    owner = expert_owner(owner, E, P, E_doc="E = router_weight rows", P_doc=" (P = len(xs))")
    experts = check_experts(experts, "experts", E, D)
    count(k, "k", minimum=1, maximum=E)
    flag(reroute, "reroute")
    _route_options(capacity_convention, route_options, k)  # every rank checks it again; fail before running
    check_hooks(log, P, "xs", rank_program=rank_program, driver=driver)
    shards = [EPShard(r, x, W, {e: experts[e] for e in range(E) if owner[e] == r}, owner) for r, x in enumerate(xs)]
    if reroute:  # passed only when asked, so rank programs without rerouting keep their signature
        route_options = {**route_options, "reroute": reroute}
    return resolve_driver(driver)(lambda r: rank_program(shards[r], k, P, capacity_convention, **route_options), P, log)
