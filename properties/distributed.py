"""Distributed properties: context-parallel attention (kind "context_parallel") and
expert-parallel MoE (kind "expert_parallel"), the refimpl adapters, and the wrong
rank programs each property must reject (``WRONG``, see ``properties.distributed_wrong``).

Every property compares a distributed run over P ranks, for any P and shard
sizes Hypothesis draws, with the single-process spec on the gathered problem:

    ring forward / Ulysses   == refimpl.attention on the whole sequence
    ring / Ulysses backward  == refimpl.attention_backward on the whole sequence
    expert parallel          == refimpl.moe.moe_forward on each rank's tokens ("local" capacity)
                                or on the gathered tokens ("global" capacity), same routing;
                                with reroute=True, == refimpl.moe.reroute_dropped's routing applied
    token conservation       rows computed per expert == the reference routing's kept counts
    communication volume     counted messages == refimpl.distributed.comm_volume's formulas

Tolerances. Ring attention is split-KV attention whose key chunks are the P
shards, each computed in one block and merged as it arrives: P - 1 two-part
merges, each costing at most (2 + 4) u of relative weight error, i.e. within
the single-merge term (C + 4) u of ``flash_forward_bounds`` with C = 6P, and
one tile per chunk (block_k = L). Ulysses runs refimpl.attention itself on a
head subset: the plain float64 bound. The backward uses the bound of
``properties.attention.check_backward_matches_reference`` (sums of Lq G + Lk
terms in any order). Expert parallel: an FFN expert's output row is computed
with error at most (gamma_D + gamma_H) A(x), A(x) = (|x| |W1|) |W2| (relu is
1-Lipschitz; Higham eq. 3.5 per matmul), so two float64 evaluations of
y_t = sum_j g_tj FFN_j(x_t) differ by at most 4 u (D + H + k + E + 11) max_t
sum_j g_tj A_j(x_t) (the E term covers the gates' softmax). Integers (kept,
slots, counts, volumes) match exactly. Measured worst error over 1,500 drawn
cases each: ring out 0.001 and lse 0.02 of the bound, ring backward 0.0015,
expert parallel 0.023 (tests/test_distributed.py asserts under 0.5).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Callable

import numpy as np

import refimpl
import refimpl.moe as M
from refimpl.distributed import comm_volume as CV
from refimpl.distributed import expert_parallel as EP
from refimpl.distributed import ring as R
from refimpl.distributed import sharding as SH
from refimpl.distributed import simulate
from refimpl.distributed import ulysses as U
from refimpl.distributed.messages import Exchange

from . import distributed_wrong as W
from .distributed_cases import CPCase, EPCase, cp_case, ep_case
from .attention import check_backward_matches_reference
from .attention_cases import AttnCase, visible
from .attention_lowp import kernel_bounds
from .core import Property
from .precision import precision_of
from .protocol import Capability, Kind
from .tolerance import U64, attention_forward_bounds, compare_close, compare_lse, flash_forward_bounds

KINDS = (
    Kind("context_parallel",
         "attention of one sequence sharded over P ranks (layout: one global-position array per rank); "
         "equals refimpl.attention / attention_backward on the gathered sequence",
         {"ring_forward": "(q, k, v, positions, *, log=None, causal, window=None, scale=None, softcap=None, mask=None) "
                          "-> (out, lse), global order. q (B, Hq, L, D), k (B, Hkv, L, D), v (B, Hkv, L, Dv) float64 "
                          "in global order; positions a list of P int64 arrays (rank r's global positions, "
                          "contiguous or zigzag); causal bool; window (left, right) of int or None; mask None or a "
                          "refimpl.masks.Document predicate over global positions (packed documents, about a "
                          "quarter of cases); log a refimpl.distributed.simulate.Log or None; out (B, Hq, L, Dv), "
                          "lse (B, Hq, L)",
          "ring_backward": "(q, k, v, dout, positions, *, log, **same) -> (dq, dk, dv), global order",
          "ulysses": "(q, k, v, positions, *, log, **same) -> (out, lse), global order",
          "ulysses_backward": "(q, k, v, dout, positions, *, log, **same) -> (dq, dk, dv), global order"},
         ("ring_forward",),
         {"ring": Capability("ring attention forward over any layout, causal/window by global positions, GQA",
                             ("ring_forward",)),
          "ring_backward": Capability("ring attention backward from the merged (out, lse)", ("ring_backward",)),
          "ulysses": Capability("all-to-all attention and its backward; P divides Hq and Hkv",
                                ("ulysses", "ulysses_backward")),
          "comm_log": Capability("fills the simulate.Log passed as log= with every message sent")}),
    Kind("expert_parallel",
         "MoE layer with experts on ranks; equals refimpl.moe.moe_forward with the same routing",
         {"moe": "(xs, W, experts, k, owner, *, capacity_convention, log, **route_options) -> "
                 "[per rank: object with y (T_r, D), routing, rows_per_expert {e: rows}]. xs a list of P float64 "
                 "arrays (T_r, D) (rank r's tokens); W (E, D) router weight (replicated); experts a list of E "
                 "refimpl.moe.Expert (W1 (D, H), W2 (H, D)); k int; owner int64 (E,) (expert e on rank owner[e]); "
                 "capacity_convention 'local' | 'global'; log simulate.Log or None; route_options: normalize, "
                 "drop_order, score, capacity or capacity_factor, and reroute=True (local only) arrive among them. "
                 "Result r: y (T_r, D) rank r's output rows; routing with fields indices (T_r, k) int, kept "
                 "(T_r, k) bool, position (T_r, k) int (slot, -1 if dropped), gates (T_r, k) float, as "
                 "refimpl.moe.route returns for rank r's tokens (local) or for its rows of the batch gathered in "
                 "rank order 0..P-1 (global: the results are concatenated in that order and compared with one "
                 "route of the whole batch); rows_per_expert {e: rows computed} counted on the rank owning e, "
                 "over every source rank (token_conservation sums them)"},
         ("moe",),
         {"local": Capability("capacity_convention='local': C per source rank from its T_r tokens", ("moe",)),
          "global": Capability("capacity_convention='global': one C from all T tokens (k_major, token_major)",
                               ("moe",)),
          "comm_log": Capability("fills the simulate.Log passed as log= with every message sent")}),
)


@dataclasses.dataclass(frozen=True)
class ContextParallelAdapter:
    name: str
    ring_forward: Callable = None
    ring_backward: Callable = None
    ulysses: Callable = None
    ulysses_backward: Callable = None
    capabilities: frozenset = frozenset({"ring", "ring_backward", "ulysses", "comm_log"})
    kind: str = "context_parallel"
    precision: str = "float64"


@dataclasses.dataclass(frozen=True)
class ExpertParallelAdapter:
    name: str
    moe: Callable = EP.expert_parallel_moe
    capabilities: frozenset = frozenset({"local", "global", "comm_log"})
    kind: str = "expert_parallel"


def _ring_fwd(program, driver):
    def run(q, k, v, positions, **kw):
        out, lse, _ = R.ring_attention(q, k, v, positions, program=program, driver=driver, **kw)
        return out, lse
    return run


def _cp(name, forward=R.forward_program, backward=R.backward_program, ulysses=U.program,
        ulysses_backward=U.backward_program, driver=None):
    """A context-parallel adapter running the given rank programs (simulated, or ``driver=mpi.driver()``)."""
    return ContextParallelAdapter(
        name, _ring_fwd(forward, driver), functools.partial(R.ring_attention_backward, program=backward, driver=driver),
        functools.partial(U.ulysses_attention, rank_program=ulysses, driver=driver),
        functools.partial(U.ulysses_attention_backward, rank_program=ulysses_backward, driver=driver))


def _ep(name, program=EP.program, driver=None):
    return ExpertParallelAdapter(name, functools.partial(EP.expert_parallel_moe, rank_program=program, driver=driver))


#: the wrong rank programs: name -> (description, kind, {role: program}); WRONG holds them as adapters
WRONG_PROGRAMS = {
    "ring_local_causal_offset": ("ring masks blocks by local indices", "cp", {"forward": W.ring_forward_local_causal}),
    "ring_forwards_own_shard": ("ring sends its own shard every step", "cp", {"forward": W.ring_forward_own_shard}),
    "ring_merges_partial_twice": ("ring merges the last partial twice", "cp", {"forward": W.ring_forward_merge_twice}),
    "ring_ignores_window_reach": ("ring always runs P steps (wasteful)", "cp", {"forward": W.ring_forward_all_steps}),
    "ring_merge_no_max_shift": ("ring merges partials without the max shift", "cp",
                                {"forward": W.ring_forward_merge_no_max}),
    "ring_backward_block_lse": ("backward uses each block's own lse", "cp", {"backward": W.ring_backward_local_lse}),
    "ring_backward_grads_not_sent_home": ("dK, dV never sent home", "cp", {"backward": W.ring_backward_keep_held}),
    "ulysses_rank_order": ("Ulysses concatenates rows in rank order", "cp",
                           {"ulysses": W.ulysses_rank_order, "ulysses_backward": W.ulysses_backward_rank_order}),
    "ep_combine_from_wrong_rank": ("combine reads the neighbour rank's rows", "ep", {"program": W.ep_combine_wrong_rank}),
    "ep_global_capacity_as_local": ("global capacity computed per rank", "ep", {"program": W.ep_global_as_local}),
    "ep_token_sent_twice": ("a token dispatched twice", "ep", {"program": W.ep_token_sent_twice}),
    "ep_dispatch_to_all": ("all-gather dispatch (wasteful)", "ep", {"program": W.ep_dispatch_to_all}),
    "ep_reroute_to_own_choice": ("reroutes to an expert the token already chose", "ep",
                                 {"program": W.ep_reroute_to_own_choice}),
}


def adapter(name: str | None = None, driver=None):
    """The refimpl adapters (name None: a (context_parallel, expert_parallel) pair) or the wrong one
    ``name`` (a key of WRONG_PROGRAMS), running on ``driver`` (None: simulated; ``mpi.driver()``: real ranks)."""
    where = "simulated" if driver is None else "mpi"
    if name is None:
        return (_cp(f"refimpl.distributed[{where}]", driver=driver),
                _ep(f"refimpl.distributed.expert_parallel[{where}]", driver=driver))
    doc, kind, programs = WRONG_PROGRAMS[name]
    return (_cp if kind == "cp" else _ep)(f"wrong[{where}]: {doc}", driver=driver, **programs)


def lowp_ring_program(precision: str, bug=None):
    """A ring forward rank program in ``precision``: each block by ``properties.tiled``'s kernel
    in that precision (scores, m, l in float32, P rounded to it), partials merged and held in
    float32, the output rounded to the precision at the end. ``bug="merge_twice"`` merges the
    last partial twice."""
    from refimpl.softmax import merge_attention_states

    from .tiled import tiled_attention
    from .tolerance import round_to

    def f32(x):
        return round_to(x, "float32")

    def program(problem, shard, num_ranks, num_steps):
        nxt, prev = R.ring_neighbours(shard.rank, num_ranks)
        held, state = R.own_block(shard), R.empty_state(shard)
        for s in range(num_steps):
            M = R.block_visibility(problem, shard.positions, held.positions)
            if M.any():
                o, l = tiled_attention(shard.q, held.k, held.v, precision=precision, mask=M, **problem.keywords())
                for _ in range(2 if bug == "merge_twice" and s == num_steps - 1 else 1):
                    out, lse = merge_attention_states([state.out, o], [state.lse, l])
                    state = R.ForwardState(f32(out), f32(lse), state.computed + (held.owner,), state.skipped)
            if s < num_steps - 1:
                held = (yield Exchange({nxt: held}, (prev,)))[prev]
        return dataclasses.replace(state, out=round_to(state.out, precision))

    return program


def lowp_ring_adapter(precision: str, bug=None) -> ContextParallelAdapter:
    """``lowp_ring_program`` as a context-parallel adapter declaring ``precision`` (ring forward only)."""
    name = f"properties.distributed.lowp_ring[{precision}]" + (f"[bug={bug}]" if bug else "")
    return ContextParallelAdapter(name, _ring_fwd(lowp_ring_program(precision, bug), None),
                                  capabilities=frozenset({"ring"}), precision=precision)


REFIMPL_CP, REFIMPL_EP = adapter()
BUNDLED = [REFIMPL_CP, REFIMPL_EP]
WRONG = {name: adapter(name) for name in WRONG_PROGRAMS}


def _fail(impl, msg, case):
    raise AssertionError(f"{impl.name}: {msg}\n  case: {case!r}")


# ---------------------------------------------------------------------------
# context-parallel cases


def _as_attention_case(case: CPCase) -> AttnCase:
    return AttnCase(case.q, case.k, case.v, case.kwargs, case.seed)


def _forward_bounds(impl, case: CPCase, ref_out, ref_lse, chunks: int):
    """float64: the split-KV bound with C chunks (``chunks`` 0: the plain attention bound);
    lower precisions: the attention rule of ``properties.attention_lowp``."""
    precision = precision_of(impl)
    kw = case.kwargs
    if precision != "float64":
        scale = kw.get("scale") or 1.0 / np.sqrt(case.q.shape[-1])
        return kernel_bounds(case.q, case.k, case.v, ref_out, ref_lse, visible(_as_attention_case(case)), scale,
                             precision, kw.get("softcap"))
    if chunks == 0:
        return attention_forward_bounds(case.q, case.k, case.v, scale=kw.get("scale"), lse=ref_lse)
    return flash_forward_bounds(case.q, case.k, case.v, block_k=max(1, case.q.shape[2]), chunks=chunks,
                                scale=kw.get("scale"), softcap=kw.get("softcap"), lse=ref_lse)


def check_ring_forward(impl, case: CPCase):
    """Ring attention over P ranks equals refimpl.attention on the gathered sequence (split-KV bound, C = 6P)."""
    out, lse = impl.ring_forward(case.q, case.k, case.v, case.positions, **case.kwargs)
    ref_out, ref_lse = refimpl.attention(case.q, case.k, case.v, **case.kwargs)
    atol_out, atol_lse = _forward_bounds(impl, case, ref_out, ref_lse, 6 * case.num_ranks)
    ctx = f"{impl.name}; {case!r}"
    compare_close("out", out, ref_out, atol_out, ctx)
    compare_lse("lse", lse, ref_lse, atol_lse, ctx)


def _check_backward(impl, case: CPCase, method: str):
    run = getattr(impl, method)
    as_attention = types.SimpleNamespace(name=impl.name, precision=precision_of(impl),
                                         backward=lambda q, k, v, dout, **kw: run(q, k, v, dout, case.positions, **kw))
    check_backward_matches_reference(as_attention, _as_attention_case(case))


def check_ring_backward(impl, case: CPCase):
    """The ring backward equals refimpl.attention_backward on the gathered sequence."""
    _check_backward(impl, case, "ring_backward")


def check_ulysses_backward(impl, case: CPCase):
    """The Ulysses backward equals refimpl.attention_backward on the gathered sequence."""
    _check_backward(impl, case, "ulysses_backward")


def check_ulysses(impl, case: CPCase):
    """Ulysses (two all-to-alls, heads split over ranks) equals refimpl.attention (float64 bound)."""
    out, lse = impl.ulysses(case.q, case.k, case.v, case.positions, **case.kwargs)
    ref_out, ref_lse = refimpl.attention(case.q, case.k, case.v, **case.kwargs)
    atol_out, atol_lse = _forward_bounds(impl, case, ref_out, ref_lse, 0)
    ctx = f"{impl.name}; {case!r}"
    compare_close("out", out, ref_out, atol_out, ctx)
    compare_lse("lse", lse, ref_lse, atol_lse, ctx)


def check_ring_extreme_scores(impl, case: CPCase):
    """With scores (and so the partial lse every rank merges) beyond 709, where exp overflows,
    the ring still equals refimpl.attention: the merge must shift by the larger lse. A run
    stopped by NaN partials (the simulator's gather rejects them) is a failure of the property."""
    try:
        check_ring_forward(impl, case)
    except ValueError as e:
        raise AssertionError(f"{impl.name}: the ring produced invalid partial results ({e}); {case!r}") from e


def check_cp_comm_volume(impl, case: CPCase):
    """Elements each rank sends (counted) equal comm_volume's ring forward, ring backward and Ulysses formulas."""
    positions, P = case.positions, case.num_ranks
    sizes = [len(p) for p in positions]
    B, Hq, L, D = case.q.shape
    Hkv, Dv = case.k.shape[1], case.v.shape[3]
    gm = SH.GlobalMask(L, case.kwargs["causal"], case.kwargs.get("window"), case.kwargs.get("mask"))
    S = R.ring_num_steps(gm, positions)
    runs = [("ring forward", lambda log: impl.ring_forward(case.q, case.k, case.v, positions, log=log, **case.kwargs),
             CV.ring_forward(sizes, S, B, Hkv, D, Dv))]
    if "ring_backward" in impl.capabilities:
        dout = np.ones((B, Hq, L, Dv))
        runs.append(("ring backward", lambda log: impl.ring_backward(case.q, case.k, case.v, dout, positions, log=log,
                                                                     **case.kwargs),
                     CV.ring_backward(sizes, S, B, Hkv, D, Dv)))
    if "ulysses" in impl.capabilities and Hkv % P == 0:
        dout = np.ones((B, Hq, L, Dv))
        runs.append(("ulysses", lambda log: impl.ulysses(case.q, case.k, case.v, positions, log=log, **case.kwargs),
                     CV.ulysses(sizes, B, Hq, Hkv, D, Dv)))
        runs.append(("ulysses backward", lambda log: impl.ulysses_backward(case.q, case.k, case.v, dout, positions,
                                                                           log=log, **case.kwargs),
                     CV.ulysses_backward(sizes, B, Hq, Hkv, D, Dv)))
    for what, run, formula in runs:
        log = simulate.Log(P)
        run(log)
        counted = [log.volume(r) for r in range(P)]
        if counted != formula:
            _fail(impl, f"{what}: counted volume per rank {counted} != formula {formula} (S={S} steps)", case)


# ---------------------------------------------------------------------------
# expert-parallel cases


def _reference(case: EPCase):
    """[(y, routing)] per group: each rank's tokens (local) or all tokens (global); with
    ``reroute``, refimpl.moe.reroute_dropped applied to the group's routing."""
    groups = case.xs if case.convention == "local" else (np.concatenate(case.xs),)
    opts = {n: v for n, v in case.options.items() if n != "reroute"}
    out = []
    for x in groups:
        routing = M.route(M.router_logits(x, case.W), case.k, **opts)
        if case.options.get("reroute"):
            routing = M.reroute_dropped(routing)
        out.append((M.apply_experts(x, routing, list(case.experts)), routing))
    return out


def _run_ep(impl, case: EPCase, log=None):
    return impl.moe(list(case.xs), case.W, list(case.experts), case.k, case.owner,
                    capacity_convention=case.convention, log=log, **case.options)


def _ffn_magnitude(case: EPCase, x, routing) -> float:
    """max_t sum_j |g_tj| A_{e_tj}(x_t), A(x) = (|x| |W1|) |W2| (see the module docstring)."""
    total = np.zeros(x.shape)
    for t, j in zip(*np.nonzero(routing.kept)):
        ex = case.experts[routing.indices[t, j]]
        total[t] += abs(routing.gates[t, j]) * ((np.abs(x[t]) @ np.abs(ex.W1)) @ np.abs(ex.W2))
    return float(total.max(initial=0.0))


def check_ep_matches_moe(impl, case: EPCase):
    """Expert parallel equals single-process refimpl.moe with the same routing: kept, slots exactly; y in bound."""
    res = _run_ep(impl, case)
    ref = _reference(case)
    if case.convention == "local":
        pairs = [(r.y, r.routing, y, rt, x) for r, (y, rt), x in zip(res, ref, case.xs)]
    else:
        cat = np.concatenate(case.xs)
        y = np.concatenate([r.y for r in res]) if res else np.zeros((0, cat.shape[1]))
        routing = _concat_routings([r.routing for r in res])
        pairs = [(y, routing, ref[0][0], ref[0][1], cat)]
    D, H, E = case.W.shape[1], case.experts[0].W1.shape[1], case.W.shape[0]
    for got_y, got_r, ref_y, ref_r, x in pairs:
        for name in ("indices", "kept", "position"):
            if not np.array_equal(getattr(got_r, name), getattr(ref_r, name)):
                _fail(impl, f"routing.{name} differs from refimpl.moe.route's:\n{getattr(got_r, name)}\n"
                            f"vs\n{getattr(ref_r, name)}", case)
        tol = 4 * U64 * (D + H + case.k + E + 11) * max(_ffn_magnitude(case, x, ref_r), 1e-300)
        compare_close("y", got_y, ref_y, tol, f"{impl.name}; {case!r}")


def _concat_routings(routings):
    return type("Cat", (), {n: np.concatenate([getattr(r, n) for r in routings]) for n in
                            ("indices", "kept", "position", "gates")})


def check_ep_token_conservation(impl, case: EPCase):
    """Each expert computes exactly the assignments the reference routing keeps: none lost, none twice."""
    res = _run_ep(impl, case)
    E = case.W.shape[0]
    want = sum(rt.kept_counts for _, rt in _reference(case))
    got = np.zeros(E, dtype=np.int64)
    for r in res:
        for e, n in r.rows_per_expert.items():
            got[e] += n
    if not np.array_equal(got, want):
        _fail(impl, f"rows computed per expert {got.tolist()} != kept assignments {want.tolist()}", case)


def check_ep_comm_volume(impl, case: EPCase):
    """Elements each rank sends (counted) equal comm_volume.expert_parallel of the kept rows per (source, dest)."""
    P = len(case.xs)
    log = simulate.Log(P)
    res = _run_ep(impl, case, log)
    m = CV.kept_rows([r.routing for r in res], case.owner)
    formula = CV.expert_parallel(m, case.W.shape[1], case.k, case.W.shape[0], case.convention)
    counted = [log.volume(r) for r in range(P)]
    if counted != formula:
        _fail(impl, f"counted volume per rank {counted} != formula {formula} (kept rows m = {m.tolist()})", case)


def _cp_strategy(**kw):
    """cp_case for an adapter's declaration: inputs representable in its precision."""
    return lambda caps: cp_case(precision=getattr(caps, "precision", "float64"), **kw)


def _ep_strategy(caps, **kw):
    return ep_case(conventions=tuple(c for c in ("local", "global") if c in caps), **kw)


PROPERTIES = [
    Property("cp_ring_forward_matches_attention", "context_parallel", check_ring_forward, _cp_strategy(),
             "ring attention over any layout == refimpl.attention on the gathered sequence", frozenset({"ring"}),
             ("ring_local_causal_offset", "ring_forwards_own_shard", "ring_merges_partial_twice")),
    Property("cp_ring_extreme_scores", "context_parallel", check_ring_extreme_scores, _cp_strategy(extreme=True),
             "ring attention with scores and partial lse beyond 709 == refimpl.attention (the merge shifts by the max)",
             frozenset({"ring"}), ("ring_merge_no_max_shift",)),
    Property("cp_ring_backward_matches_attention", "context_parallel", check_ring_backward, _cp_strategy(),
             "ring backward == refimpl.attention_backward on the gathered sequence",
             frozenset({"ring", "ring_backward"}),
             ("ring_backward_block_lse", "ring_backward_grads_not_sent_home")),
    Property("cp_ulysses_matches_attention", "context_parallel", check_ulysses, _cp_strategy(ulysses=True),
             "Ulysses all-to-all attention == refimpl.attention", frozenset({"ulysses"}), ("ulysses_rank_order",)),
    Property("cp_ulysses_backward_matches_attention", "context_parallel", check_ulysses_backward,
             _cp_strategy(ulysses=True), "Ulysses backward == refimpl.attention_backward", frozenset({"ulysses"}),
             ("ulysses_rank_order",)),
    Property("cp_comm_volume", "context_parallel", check_cp_comm_volume, _cp_strategy(ulysses=True),
             "counted elements sent per rank == comm_volume formulas (ring and Ulysses, fwd and bwd)",
             frozenset({"ring", "comm_log"}), ("ring_ignores_window_reach",)),
    Property("ep_matches_moe", "expert_parallel", check_ep_matches_moe, _ep_strategy,
             "expert-parallel MoE == refimpl.moe with the same routing (local or global capacity)",
             frozenset({"local"}), ("ep_combine_from_wrong_rank", "ep_global_capacity_as_local",
                                    "ep_reroute_to_own_choice")),
    Property("ep_token_conservation", "expert_parallel", check_ep_token_conservation, _ep_strategy,
             "rows computed per expert == the reference's kept assignments", frozenset({"local"}),
             ("ep_token_sent_twice",)),
    Property("ep_comm_volume", "expert_parallel", check_ep_comm_volume, _ep_strategy,
             "counted elements sent per rank == comm_volume.expert_parallel", frozenset({"local", "comm_log"}),
             ("ep_dispatch_to_all",)),
]
