"""Deliberately wrong MoE implementations, one bug each, built from the refimpl adapter.

Each is a bug seen in real code or in the notes (docs/errata.md); the meta-tests assert that the
properties naming it in ``rejects`` find a counterexample.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import refimpl.moe as M
from refimpl.moe import grads as G

from .moe_protocol import REFIMPL, fused_expert_weights


def _with(name, **fns):
    return dataclasses.replace(REFIMPL, name=name, **fns)


# --- routing -----------------------------------------------------------------


def _route_capacity_off_by_one(z, k, **o):
    """Keeps an assignment when position <= C (one slot too many), reports C."""
    c = o.get("capacity")
    if isinstance(c, (int, np.integer)):
        return dataclasses.replace(M.route(z, k, **{**o, "capacity": int(c) + 1}), capacity=int(c))
    return M.route(z, k, **o)


def _route_counts_after_drop(z, k, **o):
    """Reports per-expert counts after dropping instead of before."""
    r = M.route(z, k, **o)
    return dataclasses.replace(r, counts=r.kept_counts)


def _route_dropless_drops(z, k, **o):
    """Treats capacity=None as the default capacity rule instead of 'no limit'."""
    if o.get("capacity", None) is None:
        o = {**o, "capacity": max(1, (np.shape(z)[0] * k) // np.shape(z)[1])}
    return M.route(z, k, **o)


def _route_ties_to_higher(z, k, **o):
    """Breaks ties toward the higher expert id (routes the mirrored logits)."""
    z = np.asarray(z, dtype=float)
    E = z.shape[1]
    r = M.route(z[:, ::-1], k, **o)
    return dataclasses.replace(r, probs=r.probs[:, ::-1], indices=E - 1 - r.indices, counts=r.counts[::-1])


def _route_token_major_for_k_major(z, k, **o):
    """Fills expert buffers token by token (all choices of token 0, then token 1, ...)
    although k_major (all first choices, then all second choices) was asked."""
    if o.get("drop_order", "k_major") == "k_major":
        o = {**o, "drop_order": "token_major"}
    return M.route(z, k, **o)


def _route_random_ties(z, k, **o):
    """Breaks ties with fresh (unseeded) noise: not deterministic."""
    z = np.asarray(z, dtype=float)
    return M.route(z + np.random.default_rng().uniform(0, 1e-9, z.shape), k, **o)


def _route_bpr_uses_position(z, k, **o):
    """'priority' (BPR) implemented as token order."""
    if o.get("drop_order") == "priority":
        o = {**o, "drop_order": "k_major"}
    return M.route(z, k, **o)


def _route_no_renormalize(z, k, **o):
    return M.route(z, k, **{**o, "normalize": "none"})


def _route_double_softmax(z, k, **o):
    """Passes probabilities where raw logits are expected: softmax(softmax(z))."""
    return M.route(M.router_scores(np.asarray(z, dtype=float), "softmax"), k, **o)


def _route_renorm_before_drop(z, k, **o):
    if o.get("normalize") == "after_drop":
        o = {**o, "normalize": "before_drop"}
    return M.route(z, k, **o)


# --- capacity and losses ---------------------------------------------------------


def _capacity_without_k(tokens, experts, **kw):
    return M.capacity(tokens, experts, **{**kw, "k": 1})


def _capacity_ceil(tokens, experts, **kw):
    if kw.get("rounding", "floor") == "floor":
        kw = {**kw, "rounding": "ceil"}
    return M.capacity(tokens, experts, **kw)


def _balance_without_E(routing, **kw):
    return M.balance_loss(routing, **kw) / routing.num_experts


def _cv_over_mean(x, eps=1e-10):
    x = np.asarray(x, dtype=float)
    return float(np.var(x) / (x.mean() + eps))


def _cv_sample_variance(x, eps=1e-10):
    x = np.asarray(x, dtype=float)
    return 0.0 if x.size < 2 else float(np.var(x, ddof=1) / (x.mean() ** 2 + eps))


# --- gradients ---------------------------------------------------------------------


def _diag_jacobian(routing, z):
    """The notes' dg_j/dz_j = g_j (1 - g_j), nothing off the diagonal (docs/errata.md#e7)."""
    T, k = routing.indices.shape
    J = np.zeros((T, k, routing.num_experts))
    g = routing.gates / routing.options.route_scale
    t, j = np.nonzero(routing.kept)
    J[t, j, routing.indices[t, j]] = routing.options.route_scale * g[t, j] * (1 - g[t, j])
    return J


def _straight_through_jacobian(routing, z):
    """The notes' straight-through backward (docs/notes.md#moe-router): dg_j/dz = dp_{e_j}/dz,
    whatever the renormalisation."""
    Jp = G.score_jacobian(z, routing.options.score)
    Jw = np.take_along_axis(Jp, routing.indices[:, :, None], axis=1)
    return routing.options.route_scale * routing.kept[:, :, None] * Jw


def _grad_adapter(name, jac, *, vjp_router_path=True):
    def gate_jacobian(z, k, **o):
        r = M.route(z, k, **o)
        return r, jac(r, np.asarray(z, dtype=float))

    def output_logit_jacobian(x, W, experts, k, **o):
        z = M.router_logits(x, W)
        r = M.route(z, k, **o)
        F = G._expert_outputs_per_choice(np.asarray(x, dtype=float), r, experts)
        return r, np.einsum("tjd,tje->tde", F, jac(r, z))

    def moe_vjp(x, W, experts, k, dy, **o):
        x, W, dy = (np.asarray(a, dtype=float) for a in (x, W, dy))
        z = M.router_logits(x, W)
        r = M.route(z, k, **o)
        F = G._expert_outputs_per_choice(x, r, experts)
        dz = np.einsum("tj,tje->te", np.einsum("td,tjd->tj", dy, F), jac(r, z))
        dx = dz @ W if vjp_router_path else np.zeros_like(x)
        for e, ex in enumerate(experts):
            t, j = np.nonzero((r.indices == e) & r.kept)
            if t.size:
                np.add.at(dx, t, ex.vjp(x[t], r.gates[t, j][:, None] * dy[t]))
        return dx, dz, dz.T @ x

    return _with(name, gate_jacobian=gate_jacobian, output_logit_jacobian=output_logit_jacobian, moe_vjp=moe_vjp)


def _balance_grad_missing_term(routing, logits, *, alpha=1.0, f="k_hot", scale="E", probs="softmax", groups=1):
    """(alpha c / T) p_tb f_b: forgets the - sum_e f_e p_te of the softmax Jacobian."""
    fr = M.routing_fractions(routing, f)
    c = M.losses.scale_factor(scale, routing.num_experts, routing.k)
    return (alpha * c / routing.num_tokens) * routing.probs * fr[None, :]


def _zloss_grad_missing_2(z, padding_mask=None):
    return 0.5 * M.z_loss_grad(z, padding_mask=padding_mask)


def _load_grad_no_threshold(clean, H, std, k, w_load=1.0):
    """Differentiates P(x, i) through clean_i only, not through the threshold H_j."""
    from scipy.special import ndtr

    thr, _ = M.losses._kth_excluding(np.asarray(H, dtype=float), k)
    u = (clean - thr) / std
    dload = w_load * M.cv_squared_grad(ndtr(u).sum(axis=0))
    return dload[None, :] * np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi) / std


# --- forward -------------------------------------------------------------------------


def _forward_raw_probs(x, W, experts, k, layout="sparse", **o):
    """Combines with the raw router probabilities instead of the (renormalised) gates."""
    z = M.router_logits(x, W)
    r = M.route(z, k, **o)
    raw = np.where(r.kept, np.take_along_axis(r.probs, r.indices, axis=-1), 0.0)
    return M.apply_experts(x, dataclasses.replace(r, gates=raw), experts, layout=layout), r


def _dispatch_off_by_one(routing):
    """Writes each assignment one slot further (mod C), dispatch and combine alike."""
    d, c = M.dispatch_combine_tensors(routing)
    C = d.shape[2]
    return (np.roll(d, 1, axis=2), np.roll(c, 1, axis=2)) if C else (d, c)


def _fused(bug):
    """A fused-MoE forward over the stacked weights (properties.moe_protocol.fused_expert_weights),
    pair by pair, with one bug (``bug=None``: none, the correct forward the meta-tests start from)."""

    def forward(x, W, experts, k, layout="sparse", **o):
        x = np.asarray(x, dtype=float)
        r = M.route(M.router_logits(x, W), k, **o)
        f = fused_expert_weights(experts)
        act = lambda u: M.experts.activation(f.activation, u)  # noqa: E731
        y = np.zeros_like(x)
        for t, j in zip(*np.nonzero(r.kept)):
            e, g = r.indices[t, j], r.gates[t, j] / (o.get("route_scale", 1.0) if bug == "scale_missing" else 1.0)
            h = f.w1[e] @ x[t] + (0.0 if f.b1 is None else f.b1[e])
            if bug == "weight_before_act":
                h, g = g * h, 1.0
            if f.gated:
                H = h.shape[0] // 2
                gate, up = (h[H:], h[:H]) if bug == "gate_up_swapped" else (h[:H], h[H:])
                a = act(gate) * up
            else:
                a = act(h)
            b2 = 0.0 if f.b2 is None else f.b2[e]
            y[t] += g * (f.w2[e] @ a) + b2 if bug == "bias_unweighted" else g * (f.w2[e] @ a + b2)
        return y, r

    forward.__doc__ = {
        None: "the fused forward, correct",
        "gate_up_swapped": "reads w1's halves as [up; gate]: silu of the up projection times the gate",
        "weight_before_act": "multiplies the first GEMM's output by the routed weight (before the activation)",
        "bias_unweighted": "adds the down projection's bias after the routed-weight multiply",
        "scale_missing": "leaves out routed_scaling_factor (route_scale) on the output"}[bug]
    return dataclasses.replace(REFIMPL, name="fused" if bug is None else f"wrong:fused_{bug}", moe_forward=forward,
                               capabilities=frozenset({"route", "forward.fused"}))


WRONG = {
    "capacity_off_by_one": _with("wrong:capacity_off_by_one", route=_route_capacity_off_by_one),
    "counts_after_drop": _with("wrong:counts_after_drop", route=_route_counts_after_drop),
    "dropless_drops": _with("wrong:dropless_drops", route=_route_dropless_drops),
    "ties_to_higher": _with("wrong:ties_to_higher", route=_route_ties_to_higher),
    "random_ties": _with("wrong:random_ties", route=_route_random_ties),
    "token_major_for_k_major": _with("wrong:token_major_for_k_major", route=_route_token_major_for_k_major),
    "bpr_uses_position": _with("wrong:bpr_uses_position", route=_route_bpr_uses_position),
    "no_renormalize": _with("wrong:no_renormalize", route=_route_no_renormalize),
    "double_softmax": _with("wrong:double_softmax", route=_route_double_softmax),
    "renorm_before_drop": _with("wrong:renorm_before_drop", route=_route_renorm_before_drop),
    "capacity_without_k": _with("wrong:capacity_without_k", capacity=_capacity_without_k),
    "capacity_ceil": _with("wrong:capacity_ceil", capacity=_capacity_ceil),
    "loss_without_E": _with("wrong:loss_without_E", balance_loss=_balance_without_E),
    "cv_over_mean": _with("wrong:cv_over_mean", cv_squared=_cv_over_mean),
    "cv_sample_variance": _with("wrong:cv_sample_variance", cv_squared=_cv_sample_variance),
    "seed_diagonal_jacobian": _grad_adapter("wrong:seed_diagonal_jacobian", _diag_jacobian),
    "straight_through": _grad_adapter("wrong:straight_through", _straight_through_jacobian),
    "vjp_x_ignores_router": _grad_adapter("wrong:vjp_x_ignores_router", G.gate_jacobian_of,
                                          vjp_router_path=False),
    "balance_grad_missing_term": _with("wrong:balance_grad_missing_term",
                                       balance_loss_grad=_balance_grad_missing_term),
    "zloss_grad_missing_2": _with("wrong:zloss_grad_missing_2", z_loss_grad=_zloss_grad_missing_2),
    "load_grad_no_threshold": _with("wrong:load_grad_no_threshold", load_loss_grad=_load_grad_no_threshold),
    "forward_raw_probs": _with("wrong:forward_raw_probs", moe_forward=_forward_raw_probs),
    "dispatch_off_by_one": _with("wrong:dispatch_off_by_one", dispatch_combine=_dispatch_off_by_one),
    **{f"fused_{bug}": _fused(bug) for bug in ("gate_up_swapped", "weight_before_act", "bias_unweighted",
                                                "scale_missing")},
}
