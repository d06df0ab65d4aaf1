"""MoE forward checks (kind "moe", capabilities "forward" and "forward.fused"): the sparse
forward (and a fused kernel's) against the dense definition y = sum_e G[:, e] FFN_e(x), and the
GShard dispatch/combine tensors against the routing and the sparse forward; each bound is the
larger of the precision bound of y (``_forward_bound``) and the derived rounding of an
expert-and-combine kernel (``properties.moe_bounds._combine_rounding``). The PROPERTIES table that
runs them is ``properties.moe``.
"""

from __future__ import annotations

import numpy as np

import refimpl.moe as M

from . import moe_cases as C
from . import moe_naive as N
from .moe_bounds import _combine_rounding
from .moe_check_helpers import U64, _bound, _fail, _lowp


# ---------------------------------------------------------------------------
# forward


def _forward_bound(impl, case, float64_bound):
    """The precision bound of the MoE output y (float64: ``float64_bound``)."""
    z = case.x @ case.W.T
    ref = M.route(z, case.k, **case.options)
    return _bound(impl, float64_bound, lambda o: N.forward(o, case.x, o.matmul(case.x, case.W.T), ref, list(case.experts)),
                  M.moe_forward(case.x, case.W, list(case.experts), case.k, **case.options)[0],
                  case.k + case.x.shape[1])


def check_sparse_equals_dense(impl, case: C.GradCase):
    """The sparse forward (gather, run each expert on its tokens, scatter) equals the
    definition y = sum_e G[:, e] FFN_e(x) with G the gate matrix of the same routing
    (every expert on every token, masked). Bound, entrywise: the larger of the precision bound
    (float64: 8 (k + 4) u max |G FFN|; below: ``_forward_bound``, doubled: y and the adapter's
    gates) and the derived rounding of a kernel in the adapter's precision, ``_combine_rounding``
    (the experts' GEMMs and activations, weights stored in p, the k-term combine), which the
    naive baseline and a floor scaled by |y| miss when the gated expert terms cancel."""
    experts = list(case.experts)
    y, r = impl.moe_forward(case.x, case.W, experts, case.k, **case.options)
    G = np.zeros((case.x.shape[0], case.W.shape[0]))
    t, j = np.nonzero(r.kept)
    G[t, r.indices[t, j]] = r.gates[t, j]
    terms = [G[:, [e]] * np.asarray(ex(case.x)) for e, ex in enumerate(experts)]
    want = sum(terms)
    tol = 8 * (case.k + 4) * U64 * max(1.0, max(np.abs(tm).max() for tm in terms))
    tol = _forward_bound(impl, case, tol) * (2 if _lowp(impl) else 1)  # y and the adapter's gates: two bounds
    derived = _combine_rounding(impl, case, G)
    tol = tol if derived is None else np.maximum(tol, derived)
    excess = np.abs(y - want) - tol
    if (excess > 0).any():
        i = np.unravel_index(np.argmax(excess), excess.shape)
        _fail(impl, f"sparse forward differs from the dense definition by {np.abs(y - want)[i]:.3g} > bound "
                    f"{np.broadcast_to(tol, excess.shape)[i]:.3g} at (token, column) {tuple(map(int, i))}", case)


def check_dispatch_combine(impl, case: C.GradCase):
    """GShard tensors: dispatch[t, e, c] is True exactly at (indices, position) of the
    kept choices, combine holds their gates there, and the dense-tensor forward equals
    the sparse one."""
    experts = list(case.experts)
    y, r = impl.moe_forward(case.x, case.W, experts, case.k, layout="sparse", **case.options)
    dispatch, combine = impl.dispatch_combine(r)
    want = np.zeros(dispatch.shape, bool)
    t, j = np.nonzero(r.kept)
    want[t, r.indices[t, j], r.position[t, j]] = True
    if not np.array_equal(dispatch, want):
        _fail(impl, "dispatch tensor is not one-hot at (indices, position) of the kept choices", case)
    if not np.array_equal(combine[t, r.indices[t, j], r.position[t, j]], r.gates[t, j]) or combine[~want].any():
        _fail(impl, "combine tensor does not hold exactly the gates at the dispatch slots", case)
    yd, _ = impl.moe_forward(case.x, case.W, experts, case.k, layout="dense_tensors", **case.options)
    tol = 2 * _forward_bound(impl, case, 8 * (case.k + 4) * U64 * max(1.0, np.abs(y).max()) * 2)
    G = np.zeros((case.x.shape[0], case.W.shape[0]))
    G[t, r.indices[t, j]] = r.gates[t, j]
    derived = _combine_rounding(impl, case, G)  # each layout within it of the exact value: twice it apart
    tol = tol if derived is None else np.maximum(tol, 2 * derived)
    if (np.abs(yd - y) > tol).any():
        _fail(impl, f"dense-tensor forward differs from sparse by {np.abs(yd - y).max():.3g}", case)


def check_fused_forward(impl, case: C.GradCase):
    """A fused-MoE kernel's forward (capability "forward.fused": sparse layout only, experts as
    stacked weights) equals the definition y = sum_e G[:, e] FFN_e(x) with G the gates of its own
    routing; the bound of :func:`check_sparse_equals_dense`."""
    check_sparse_equals_dense(impl, case)
