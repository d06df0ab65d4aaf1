"""The MoE layer forward: y_t = sum_j g_tj FFN_{e_tj}(x_t)  (docs/notes.md#moe-router).

Router: z = x W_g^T with ``router_weight`` W_g of shape (E, D) (the notes'
W_g in R^{E x d}; torch ``nn.Linear(D, E).weight``). Routing: :func:`route`
with any preset or conventions. Dropped choices contribute nothing; a token
whose choices are all dropped gets y_t = 0 (the residual connection around the
layer, outside this function, carries it).

The definition (``moe_definition``, one line per step; docs/notes.md#moe-router):

    z     = x W_g^T                                    router logits (T, E)
    R     = route(z, k, **options)                     indices e_tj, gates g_tj, kept_tj (refimpl.moe.router)
    G_te  = sum_j [e_tj = e] kept_tj g_tj              gate matrix (T, E), 0 off the kept choices
    y_t   = sum_e G_te FFN_e(x_t)                      every expert on every token, masked by G

The fast forms, each tested equal to it (tests/test_definition_moe.py, bound derived there):

    layout="sparse"         gather each expert's kept tokens, run the expert on
                            them only, scatter-add the gated outputs (Megablocks);
                            a SwiGLUExpert's formula fused in place (experts._swiglu_rows_into);
                            refimpl's own experts on threads (refimpl._parallel: same bits)
    layout="dense_tensors"  GShard dispatch/combine einsums over (T, E, C)
    expert-parallel         refimpl.distributed.expert_parallel (docs/notes.md#expert-parallel)
    dense_moe_forward       the definition's last two lines for a given routing
"""

from __future__ import annotations

import numpy as np

from .. import _validate as V
from .._parallel import map_blocks, one_blas_thread
from .._validate import as_float_array
from .dispatch import _scatter_combine, _sort_by_expert, combine_dense, dispatch_combine_tensors, dispatch_dense
from .experts import FFNExpert, SwiGLUExpert, _swiglu_rows_into
from .router import route


def moe_definition(x, router_weight, experts, k, **route_options):
    """(y (T, D), routing): the MoE layer written out (the module docstring's four lines)."""
    z = router_logits(x, router_weight)                              # z = x W_g^T
    R = route(z, k, **route_options)                                 # e_tj, g_tj, kept_tj
    x, R, experts = _check_x_routing_experts(x, R, experts)
    G = np.zeros((R.num_tokens, R.num_experts))
    t, j = np.nonzero(R.kept)
    np.add.at(G, (t, R.indices[t, j]), R.gates[t, j])                # G_te = sum_j [e_tj = e] kept_tj g_tj
    y = sum(G[:, [e]] * experts[e](x) for e in range(R.num_experts))  # y_t = sum_e G_te FFN_e(x_t)
    return V.finite_result(y, "an output y", "x, experts"), R


def router_logits(x, router_weight) -> np.ndarray:
    """z (T, E) = x W_g^T."""
    return _logits(*_router_inputs(x, router_weight))


def _router_inputs(x, router_weight) -> tuple:
    x = as_float_array(x, "x", ndim=2, shape_doc="(T, D)")
    W = as_float_array(router_weight, "router_weight", shape=(None, x.shape[1]), shape_doc="(E, D) with D from x",
                       min_size={0: 1})
    return x, W


def _logits(x, W) -> np.ndarray:
    """z = x W^T for checked x, W, on one BLAS thread: its E columns are a small part of the layer's
    work (E / (3 k H) of a SwiGLU layer's), and a multi-threaded product would leave OpenBLAS's
    worker spinning for ~0.1 s beside the experts' threads (``refimpl._parallel``; T = 1024, D = 512,
    E = 8, k = 2: the layer's CPU time was 208 ms against 152 ms on one BLAS thread)."""
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread():
        z = x @ W.T
    return V.finite_result(z, "a logit x W_g^T", "x, router_weight")


def gate_matrix(routing) -> np.ndarray:
    """G (T, E): G[t, indices[t, j]] = gates[t, j] (0 for unselected and dropped)."""
    routing = V.routing(routing)
    G = np.zeros((routing.num_tokens, routing.num_experts))
    t, j = np.nonzero(routing.kept)
    G[t, routing.indices[t, j]] = routing.gates[t, j]
    return G


def _check_x_routing_experts(x, routing, experts):
    """x (T, D), a Routing of those T tokens, E experts: the shared checks of the forward forms."""
    routing = V.routing(routing)
    x = as_float_array(x, "x", shape=(routing.num_tokens, None), shape_doc="(T, D) with T from routing")
    return x, routing, V.experts(experts, "experts", routing.num_experts, x.shape[1])


_BLOCK_ROWS = 1024  # rows of one expert a thread takes at a time: blocks of equal cost, the threads finish together


def _expert_work(experts, offsets):
    """Multiply-adds of refimpl's own experts on their bins, for ``map_blocks``: 3 D H a row for a
    SwiGLUExpert, 2 D H for an FFNExpert; None when any expert is another callable (which need not
    be safe on threads: all then run in the calling thread, in order)."""
    per_row = []
    for ex in experts:
        if type(ex) is SwiGLUExpert:
            per_row.append(3 * ex.Wg.size)
        elif type(ex) is FFNExpert:
            per_row.append(2 * ex.W1.size)
        else:
            return None
    return float(np.dot(per_row, np.diff(offsets)))


def _error_of(fn):
    """fn returning the ValueError it raises (None if none) instead of raising it."""
    def call(item):
        try:
            fn(item)
        except ValueError as err:
            return err
        return None
    return call


def apply_experts(x, routing, experts, *, layout: str = "sparse") -> np.ndarray:
    """y (T, D) for a given routing."""
    x, routing, experts = _check_x_routing_experts(x, routing, experts)
    V.choice(layout, "layout", ("sparse", "dense_tensors"))
    return _apply_experts(x, routing, experts, layout)


def _apply_experts(x, routing, experts, layout):
    """``apply_experts`` of checked arguments (each checked once, by it or by ``moe_forward``)."""
    T = x.shape[0]
    if layout == "sparse":
        sa = _sort_by_expert(routing)
        rows = x[sa.token]  # gather_by_expert: row i is x[token[i]]
        bins = [(e, slice(sa.offsets[e], sa.offsets[e + 1])) for e in range(routing.num_experts)
                if sa.offsets[e + 1] > sa.offsets[e]]  # they cover every row
        work = _expert_work(experts, sa.offsets)
        out = rows if work is not None else np.empty_like(rows)  # refimpl's experts: outputs over their rows

        def run(item):  # one expert on its bin, into its rows of out only
            e, b = item
            if type(experts[e]) is SwiGLUExpert:  # the same formula, fused in place
                _swiglu_rows_into(experts[e], rows[b], out[b])
            else:
                out[b] = experts[e](rows[b])

        if work is None:  # a user's callable among them: every expert in this thread, in order
            for item in bins:
                run(item)
        else:  # on threads: bins cut into blocks of at most _BLOCK_ROWS rows, the largest first
            blocks = sorted(((e, slice(a, min(a + _BLOCK_ROWS, b.stop))) for e, b in bins
                             for a in range(b.start, b.stop, _BLOCK_ROWS)),
                            key=lambda item: item[1].start - item[1].stop)
            errors = map_blocks(_error_of(run), blocks, work=work)
            failed = [(e, err) for (e, _), err in zip(blocks, errors) if err is not None]
            if failed:  # the error of the loop in order: the lowest failing expert's own, on all its rows
                e, err = min(failed, key=lambda f: f[0])
                experts[e](x[sa.token[dict(bins)[e]]])
                raise err
        V.finite_result(out, "an expert output", "x, experts")
        return _scatter_combine(out, sa, T)
    if layout == "dense_tensors":
        dispatch, combine = dispatch_combine_tensors(routing)
        inputs = dispatch_dense(x, dispatch)  # (E, C, D)
        outputs = np.stack([experts[e](inputs[e]) if inputs.shape[1] else inputs[e]
                            for e in range(routing.num_experts)])
        V.finite_result(outputs, "an expert output", "x, experts")
        return combine_dense(outputs, combine)
    raise AssertionError(layout)  # checked by V.choice in apply_experts and moe_forward


def moe_forward(x, router_weight, experts, k, *, layout: str = "sparse", **route_options):
    """(y (T, D), routing): route x W_g^T, then apply the experts. ``route_options``
    are those of :func:`route` (preset, normalize, capacity, drop_order, ...)."""
    x, W = _router_inputs(x, router_weight)
    z = _logits(x, W)
    experts = V.experts(experts, "experts", z.shape[1], x.shape[1])
    V.choice(layout, "layout", ("sparse", "dense_tensors"))
    routing = route(z, k, **route_options)
    return _apply_experts(x, routing, experts, layout), routing


def dense_moe_forward(x, routing, experts) -> np.ndarray:
    """y = sum_e G[:, e] * FFN_e(x): every expert on every token, masked by the gates."""
    x, routing, experts = _check_x_routing_experts(x, routing, experts)
    G = gate_matrix(routing)
    return sum(G[:, [e]] * experts[e](x) for e in range(routing.num_experts))
