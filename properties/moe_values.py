"""Every supplied MoE function checked by value against refimpl.moe (kind "moe").

A consistency check (a gradient against finite differences of the adapter's own
loss) cannot see a loss that is wrong by a smooth factor: the wrong loss and
its equally wrong gradient agree with each other. Each property here feeds the
adapter and the spec the same inputs (the spec's own routing where a routing is
an input) and compares the values.

Bound for float64 values: each compared quantity is a sum or product of at most
n = E + T + D + k + 8 roundings of O(max|value|) terms (softmax, sums over tokens
and experts, one matmul over D), so two correct float64 implementations differ
by at most ``64 n u max(1, |value|)`` (u = 2^-53; the factor 64 covers the
reassociation of sums and the exp/log/tanh roundings); every wrong function in
``WRONG`` misses by a factor 2 or an O(1) term. Below float64 the bound is the precision rule of
``properties.precision``: FACTOR x the error of the same quantity computed naively in the
adapter's precision (``properties.moe_naive``) plus ``output_floor(p, max|value|, n)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

import refimpl.moe as M

from . import moe_cases as C
from . import moe_naive as N
from .core import Property
from .precision import NaiveOps, output_floor, precision_bound, precision_of, round_inputs
from .strategy_cache import sampled

U64 = 2.0**-53


def _tol(n: int, want) -> float:
    return 64 * (n + 8) * U64 * max(1.0, float(np.max(np.abs(np.asarray(want, dtype=float)), initial=0.0)))


def _compare(impl, what, got, want, n, case, naive):
    """|got - want| <= the precision bound: ``_tol`` in float64, else ``precision_bound`` with
    ``naive(NaiveOps(p))`` the quantity computed naively in the adapter's precision p."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        raise AssertionError(f"{impl.name}: {what} has shape {got.shape}, refimpl.moe gives {want.shape}; {case!r}")
    err = float(np.max(np.abs(got - want), initial=0.0))
    p = precision_of(impl)
    mag = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    tol = float(np.max(precision_bound(p, _tol(n, want), lambda: naive(NaiveOps(p)), want, output_floor(p, mag, n))))
    if not err <= tol:
        raise AssertionError(f"{impl.name}: {what} differs from refimpl.moe's by {err:.3g} > {tol:.3g} (precision {p}) "
                             f"(got {got.ravel()[:4].tolist()}, expected {want.ravel()[:4].tolist()}); {case!r}")


@dataclasses.dataclass(frozen=True)
class LossVariantCase:
    route: C.RouteCase
    f: str
    scale: str
    probs: str
    groups: int

    def __repr__(self):
        return f"LossVariantCase(f={self.f!r}, scale={self.scale!r}, probs={self.probs!r}, groups={self.groups}, {self.route!r})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def loss_variant_case(draw, caps):
    rc = draw(C.route_case(caps, padding=False))
    T = rc.logits.shape[0]
    groups = draw(sampled([g for g in (1, 2, 3) if T % g == 0]))
    return LossVariantCase(rc, draw(sampled(M.losses.F_KINDS)), draw(sampled(M.losses.SCALES)),
                           draw(sampled(M.losses.P_KINDS)), groups)


def check_balance_loss_matches_reference(impl, case: LossVariantCase):
    """balance_loss(routing, f, scale, probs, groups) equals refimpl.moe.balance_loss on the spec's routing."""
    rc = case.route
    r = M.route(rc.logits, rc.k, **rc.kwargs())
    kw = dict(alpha=0.01, f=case.f, scale=case.scale, probs=case.probs, groups=case.groups)
    T, E = rc.logits.shape
    _compare(impl, f"balance_loss({kw})", impl.balance_loss(r, **kw), M.balance_loss(r, **kw), T + E, case,
             lambda o: N.balance_loss(o, r, **kw))


def check_cv_squared_matches_reference(impl, case: C.VectorCase):
    """cv_squared(x) equals refimpl.moe.cv_squared(x)."""
    _compare(impl, "cv_squared", impl.cv_squared(case.x), M.cv_squared(case.x), case.x.size, case,
             lambda o: N.cv_squared(o, case.x))


def check_z_loss_matches_reference(impl, case: C.NoisyCase):
    """z_loss (and z_loss_grad when declared) equal refimpl.moe's."""
    z = case.clean
    n = sum(z.shape)
    _compare(impl, "z_loss", impl.z_loss(z), M.z_loss(z), n, case, lambda o: N.z_loss(o, z))
    if "z_loss.grad" in impl.capabilities:
        _compare(impl, "z_loss_grad", impl.z_loss_grad(z), M.z_loss_grad(z), n, case, lambda o: N.z_loss_grad(o, z))


def check_noisy_gating_matches_reference(impl, case: C.NoisyCase):
    """Noisy top-k gates, importance and load losses (and their gradients when declared)
    equal refimpl.moe's for the same clean logits, noise scale and noise."""
    z, std, noise, k = case.clean, case.std, case.noise, case.k
    n = sum(z.shape)
    got, want = impl.noisy_gating(z, std, noise, k), M.noisy_top_k_gating(z, std, noise, k)
    p = precision_of(impl)
    _compare(impl, "noisy gates", got.gates, want.gates, n, case, lambda o: N.noisy_gates(o, z, std, noise, want.indices))
    G = round_inputs(p, want.gates)  # the suite's inputs are in the adapter's precision
    _compare(impl, "importance_loss", impl.importance_loss(G), M.importance_loss(G), n, case,
             lambda o: N.importance_loss(o, G))
    H = round_inputs(p, z + noise * std)
    _compare(impl, "load_loss", impl.load_loss(z, H, std, k), M.load_loss(z, H, std, k), n, case,
             lambda o: N.load_loss(o, z, H, std, k))
    if "noisy_gating.grad" in impl.capabilities:
        _compare(impl, "importance_loss_grad", impl.importance_loss_grad(want), M.importance_loss_grad(want), n, case,
                 lambda o: N.importance_loss_grad(o, N.noisy_gates(o, z, std, noise, want.indices)))
        _compare(impl, "load_loss_grad", impl.load_loss_grad(z, H, std, k), M.load_loss_grad(z, H, std, k), n, case,
                 lambda o: N.load_loss_grad(o, z, H, std, k))


def check_gradients_match_reference(impl, case: C.GradCase):
    """gate_jacobian, output_logit_jacobian and moe_vjp equal refimpl.moe's."""
    experts = list(case.experts)
    T, D = case.x.shape
    E = case.W.shape[0]
    n = T + D + E + case.k
    zr = round_inputs(precision_of(impl), case.x @ case.W.T)  # gate_jacobian's input, in the adapter's precision
    _, J = impl.gate_jacobian(zr, case.k, **case.options)
    rr, Jr = M.gate_jacobian(zr, case.k, **case.options)
    _compare(impl, "gate_jacobian", J, Jr, n, case, lambda o: N.gate_jacobian(o, zr, rr))
    z = case.x @ case.W.T
    _, Jy = impl.output_logit_jacobian(case.x, case.W, experts, case.k, **case.options)
    r = M.route(z, case.k, **case.options)
    _compare(impl, "output_logit_jacobian", Jy, M.output_logit_jacobian(case.x, r, z, experts), n, case,
             lambda o: N.output_logit_jacobian(o, case.x, o.matmul(case.x, case.W.T), r, experts))
    got = impl.moe_vjp(case.x, case.W, experts, case.k, case.dy, **case.options)
    want = M.moe_vjp(case.x, case.W, experts, case.k, case.dy, **case.options)
    naive = {}
    for i, (name, g, w) in enumerate(zip(("dx", "dz", "dW"), got, want)):
        _compare(impl, f"moe_vjp {name}", g, w, n, case,
                 lambda o, i=i: naive.setdefault("v", N.moe_vjp(o, case.x, case.W, r, experts, case.dy))[i])


def check_forward_matches_reference(impl, case: C.GradCase):
    """moe_forward (both layouts) equals refimpl.moe.moe_forward; dispatch/combine equal
    refimpl.moe.dispatch_combine_tensors of the spec's routing (dispatch exactly)."""
    experts = list(case.experts)
    T, D = case.x.shape
    n = T + D + case.W.shape[0] + case.k
    want, r = M.moe_forward(case.x, case.W, experts, case.k, **case.options)
    for layout in ("sparse", "dense_tensors"):
        y, _ = impl.moe_forward(case.x, case.W, experts, case.k, layout=layout, **case.options)
        _compare(impl, f"moe_forward(layout={layout!r})", y, want, n, case,
                 lambda o: N.forward(o, case.x, o.matmul(case.x, case.W.T), r, experts))
    d, c = impl.dispatch_combine(r)
    dw, cw = M.dispatch_combine_tensors(r)
    if np.shape(d) != dw.shape or not np.array_equal(np.asarray(d, bool), dw):
        raise AssertionError(f"{impl.name}: dispatch tensor differs from refimpl.moe.dispatch_combine_tensors; {case!r}")
    def naive_combine(o):  # the combine tensor holds the routing's gates, stored in p
        out = np.zeros(cw.shape)
        t, j = np.nonzero(r.kept)
        out[t, r.indices[t, j], r.position[t, j]] = o.r(r.gates[t, j])
        return out

    _compare(impl, "combine tensor", c, cw, n, case, naive_combine)


# ---------------------------------------------------------------------------
# wrong implementations: each loss and its gradient wrong by the same factor (consistent)


def _balance_ignores_groups(routing, **kw):
    return M.balance_loss(routing, **{**kw, "groups": 1})


def _wrong_values():
    from .moe_protocol import REFIMPL

    def w(name, **fns):
        return dataclasses.replace(REFIMPL, name=f"wrong:{name}", **fns)

    return {
        "balance_ignores_groups": w("balance_ignores_groups", balance_loss=_balance_ignores_groups),
        "zloss_halved_consistent": w("zloss_halved_consistent", z_loss=lambda z, **kw: 0.5 * M.z_loss(z, **kw),
                                     z_loss_grad=lambda z, **kw: 0.5 * M.z_loss_grad(z, **kw)),
        "load_loss_doubled_consistent": w(
            "load_loss_doubled_consistent",
            load_loss=lambda *a, **kw: 2.0 * M.load_loss(*a, **kw),
            load_loss_grad=lambda *a, **kw: 2.0 * M.load_loss_grad(*a, **kw)),
    }


WRONG = _wrong_values()

PROPERTIES = [
    Property("moe_balance_loss_matches_reference", "moe", check_balance_loss_matches_reference, loss_variant_case,
             "balance_loss equals refimpl.moe.balance_loss for every f, scale, probs and groups",
             frozenset({"losses"}), ("loss_without_E", "balance_ignores_groups")),
    Property("moe_cv_squared_matches_reference", "moe", check_cv_squared_matches_reference, C.loads_case,
             "cv_squared equals refimpl.moe.cv_squared", frozenset({"cv_squared"}),
             ("cv_over_mean", "cv_sample_variance")),
    Property("moe_z_loss_matches_reference", "moe", check_z_loss_matches_reference, C.noisy_case,
             "z_loss (and its gradient) equal refimpl.moe's", frozenset({"z_loss"}),
             ("zloss_halved_consistent",)),
    Property("moe_noisy_gating_matches_reference", "moe", check_noisy_gating_matches_reference, C.noisy_case,
             "noisy top-k gates, importance and load losses (and gradients) equal refimpl.moe's",
             frozenset({"noisy_gating"}), ("load_loss_doubled_consistent",)),
    Property("moe_gradients_match_reference", "moe", check_gradients_match_reference,
             lambda caps: C.honouring(caps, C.grad_case),
             "gate Jacobian, output-logit Jacobian and MoE VJP equal refimpl.moe's", frozenset({"gradients"}),
             ("seed_diagonal_jacobian", "straight_through", "vjp_x_ignores_router")),
    Property("moe_forward_matches_reference", "moe", check_forward_matches_reference,
             lambda caps: C.honouring(caps, C.grad_case),
             "MoE forward (both layouts) and dispatch/combine equal refimpl.moe's", frozenset({"forward"}),
             ("forward_raw_probs", "dispatch_off_by_one")),
]
