"""Exact derivatives of the router, the MoE output and the auxiliary losses.

Top-k selection, capacity and dropping are piecewise constant in the logits:
away from the boundaries where two scores tie (the k-th and (k+1)-th expert of
a token, or two tokens competing for a slot under a probability-based drop
order) they do not move, so the derivative of the forward function is the
derivative with the selection held fixed. That is what this module computes.
It is *not* a straight-through estimator: the notes (docs/notes.md#moe-router) suggest letting the
gradient flow "through all softmax probabilities"; that is a different (biased)
rule, and the properties show it differs from the true derivative.

Score Jacobian, per token (J[t, a, b] = dp_ta / dz_tb):

    softmax:  J = diag(p) - p p^T              sigmoid:  J = diag(s (1 - s))

Gates (``normalize`` of refimpl.moe.router; S = the choices in the
denominator: all k for before_drop, the kept ones for after_drop):

    none:        g_j = r kept_j w_j                      dg_j/dz = r kept_j J[e_j, :]
    renormalised g_j = r kept_j w_j / (sum_{i in S} w_i + eps)
                 dg_j/dz = r kept_j / D * (J[e_j, :] - (w_j / D) sum_{i in S} J[e_i, :])

For softmax scores, renormalised and nothing dropped this is the softmax over
the selected logits: dg_j/dz_b = g_j (delta(e_j, b) - g_b) for b selected and
0 for b unselected (unselected logits get no gradient), and for k = 1 it is 0
(a renormalised top-1 gate is the constant 1: the task loss gives the router no
gradient). The MoE output y = sum_j g_j FFN_{e_j}(x) then has

    dy/dz_b = sum_j FFN_{e_j}(x) dg_j/dz_b = g_b (FFN_b(x) - y)    (b selected)

whose diagonal factor g_b (1 - g_b) is the notes' formula: it is only the
diagonal of the softmax Jacobian (docs/errata.md#e7). Raw gates (normalize="none") have
dg_j/dz_b = p_{e_j} (delta(e_j, b) - p_b) for every b: unselected logits do
get gradient, through the softmax denominator.

Balance loss with f held constant (f is a count of argmax decisions):

    dL/dz_tb = (alpha c / T) * sum_e f_e J[t, e, b]
             = (alpha c / T) p_tb (f_b - sum_e f_e p_te)        (softmax)

which for c = E is the usual form (docs/conventions.md#moe-defaults).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .. import _validate as V
from .._validate import as_float_array
from ..logistic import sigmoid
from .._validate import moe as VM
from .losses import (CV_EPS, _kth_excluding, _split_groups, routing_fractions, scale_factor, F_KINDS, P_KINDS,
                     NoisyTopK)
from .router import route
from .select import SCORES, _router_scores
from ..softmax import logsumexp, softmax


def score_jacobian(logits, score: str = "softmax") -> np.ndarray:
    """J (T, E, E), J[t, a, b] = d p_ta / d z_tb."""
    z = VM.router_logits(logits)
    p = _router_scores(z, V.choice(score, "score", SCORES))
    if score == "softmax":
        return np.einsum("ta,ab->tab", p, np.eye(z.shape[1])) - p[:, :, None] * p[:, None, :]
    return np.einsum("ta,ab->tab", p * sigmoid(-z), np.eye(z.shape[1]))  # 1 - p = sigmoid(-z), no cancellation


def gate_jacobian(logits, k, **route_options):
    """(routing, Jg) with Jg (T, k, E) = d gates[t, j] / d logits[t, :], selection held fixed.

    ``route_options`` are those of :func:`route`.
    """
    z = as_float_array(logits, "logits", ndim=2)
    routing = route(z, k, **route_options)
    return routing, gate_jacobian_of(routing, z)


def gate_jacobian_of(routing, logits) -> np.ndarray:
    """Jg (T, k, E) for a routing computed from ``logits``."""
    routing, z = _check_routing_logits(routing, logits)
    opts = routing.options
    J = score_jacobian(z, opts.score)  # (T, E, E)
    Jw = np.take_along_axis(J, routing.indices[:, :, None], axis=1)  # (T, k, E): d w_j / dz
    w = np.take_along_axis(routing.probs, routing.indices, axis=-1)  # raw gates (T, k)
    kept = routing.kept.astype(np.float64)
    if opts.normalize == "none":
        return opts.route_scale * kept[:, :, None] * Jw
    in_den = np.ones_like(kept) if opts.normalize == "before_drop" else kept
    D = (in_den * w).sum(axis=-1) + opts.normalize_eps  # (T,)
    safe = np.where(D > 0, D, 1.0)
    dD = np.einsum("tj,tje->te", in_den, Jw)  # d D / dz
    Jg = (Jw - (w / safe[:, None])[:, :, None] * dD[:, None, :]) / safe[:, None, None]
    return opts.route_scale * (kept * (D > 0)[:, None])[:, :, None] * Jg


def _check_routing_logits(routing, logits):
    """A Routing and the (T, E) logits it was computed from (shapes must agree)."""
    routing = V.routing(routing)
    z = as_float_array(logits, "logits", shape=routing.probs.shape, shape_doc="(T, E) as routing.probs")
    return routing, z


def gate_vjp(routing, logits, dgates) -> np.ndarray:
    """dL/dz (T, E) given dL/dgates (T, k)."""
    routing, z = _check_routing_logits(routing, logits)
    dg = as_float_array(dgates, "dgates", shape=routing.gates.shape, shape_doc="(T, k) as routing.gates")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.einsum("tj,tje->te", dg, gate_jacobian_of(routing, z))
    return V.finite_result(out, "a gradient", "dgates")


def _expert_outputs_per_choice(x, routing, experts) -> np.ndarray:
    """F (T, k, D): F[t, j] = FFN_{indices[t, j]}(x_t) for every choice (kept or not)."""
    T, k = routing.indices.shape
    F = np.zeros((T, k, x.shape[1]))
    for e, expert in enumerate(experts):
        t, j = np.nonzero(routing.indices == e)
        if t.size:
            F[t, j] = expert(x[t])
    return F


def output_logit_jacobian(x, routing, logits, experts) -> np.ndarray:
    """dy/dz (T, D, E) of y_t = sum_j g_tj FFN_{e_tj}(x_t), selection held fixed."""
    routing, z = _check_routing_logits(routing, logits)
    x = as_float_array(x, "x", shape=(routing.num_tokens, None), shape_doc="(T, D) with T from routing")
    experts = V.experts(experts, "experts", routing.num_experts, x.shape[1])
    F = _expert_outputs_per_choice(x, routing, experts)
    logits = z
    return np.einsum("tjd,tje->tde", F, gate_jacobian_of(routing, logits))


def moe_vjp(x, router_weight, experts, k, dy, **route_options):
    """VJP of y = moe_forward(x, router_weight, experts, k)[0]: returns (dx, dz, dW).

    dz (T, E) = dL/dlogits, dx (T, D) = through the experts and through z = x W^T,
    dW (E, D) = dL/drouter_weight.
    """
    from .forward import router_logits

    x = as_float_array(x, "x", ndim=2, shape_doc="(T, D)")
    W = as_float_array(router_weight, "router_weight", shape=(None, x.shape[1]), shape_doc="(E, D) with D from x")
    dy = as_float_array(dy, "dy", shape=x.shape, shape_doc="(T, D) as x")
    z = router_logits(x, W)
    experts = V.experts(experts, "experts", z.shape[1], x.shape[1])
    routing = route(z, k, **route_options)
    F = _expert_outputs_per_choice(x, routing, experts)
    with np.errstate(over="ignore", invalid="ignore"):  # a gradient beyond float64 is refused below, by name
        dgates = np.einsum("td,tjd->tj", dy, F)
        dz = gate_vjp(routing, z, dgates)
        dx = dz @ W
        for e, expert in enumerate(experts):
            t, j = np.nonzero((routing.indices == e) & routing.kept)
            if t.size:
                dx_e = expert.vjp(x[t], routing.gates[t, j][:, None] * dy[t])
                np.add.at(dx, t, dx_e)
        dW = dz.T @ x
    names = "x, router_weight, experts, dy"
    return (V.finite_result(dx, "gradients dx", names), V.finite_result(dz, "gradients dz", names),
            V.finite_result(dW, "gradients dW", names))


# ---------------------------------------------------------------------------
# gradients of the losses with respect to the logits


def balance_loss_grad(routing, logits, *, alpha=1.0, f="k_hot", scale="E", probs="softmax",
                      groups=1) -> np.ndarray:
    """dL/dz (T, E) of ``balance_loss`` with the fractions f held constant."""
    routing, z = _check_routing_logits(routing, logits)
    V.choice(f, "f", F_KINDS), V.choice(probs, "probs", P_KINDS)
    alpha, groups = V.real_number(alpha, "alpha"), VM.token_groups(groups, routing.num_tokens)
    T, E = z.shape
    J = score_jacobian(z, routing.options.score)
    if probs == "normalized_scores":  # q = p / sum p: dq_a/dp_b = (delta_ab - q_a) / sum p
        p = routing.probs
        s = p.sum(axis=-1, keepdims=True)
        s = np.where(s > 0, s, np.inf)  # an all-underflowed row counts 0 in the loss: gradient 0
        Jq = (np.eye(E)[None] - (p / s)[:, :, None]) / s[:, :, None]
        J = np.einsum("tac,tcb->tab", Jq, J)
    c = scale_factor(scale, E, routing.k)
    dP = np.zeros((T, E))  # dL/dp_te (or dL/dq_te)
    size = T // groups
    for g, r in enumerate(_split_groups(routing, groups)):
        n = max(int(r.token_mask.sum()), 1)
        rows = slice(g * size, (g + 1) * size)
        dP[rows] = (alpha * c / groups / n) * routing_fractions(r, f)[None, :] * r.token_mask[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        grad = np.einsum("ta,tab->tb", dP, J)
    return V.finite_result(grad, "the gradient", "alpha")


def z_loss_grad(logits, *, padding_mask=None) -> np.ndarray:
    """d/dz of mean_t lse(z_t)^2 = (2 / N) lse(z_t) softmax(z_t) on real tokens."""
    z, mask = VM.z_loss_inputs(logits, padding_mask)
    n = max(int(mask.sum()), 1)
    with np.errstate(over="ignore", invalid="ignore"):  # lse p first: 2 lse alone may overflow where p = 0
        g = (logsumexp(z, axis=-1) * mask)[:, None] * softmax(z, axis=-1) * (2.0 / n)
    return V.finite_result(g, "a gradient (2 / N) lse(z_t) softmax(z_t)", "logits")


def cv_squared_grad(x, *, eps: float = CV_EPS) -> np.ndarray:
    """d/dx of var(x) / (mean(x)^2 + eps) (population variance)."""
    x, eps = VM.cv_inputs(x, eps)
    n, m = x.shape[0], x.mean()
    v = np.mean((x - m) ** 2)
    den = m * m + eps
    r = m / den
    with np.errstate(over="ignore"):  # den^2 alone overflows at |x| ~ 1e150: divide by den twice, the
        # smaller factor first, so an inf means the exact term is beyond float64 (then a named refusal)
        second = v * r / den if abs(r) < 1 else (v / den) * r            # v m / den^2
        g = 2.0 * ((x - m) / den) / n - 2.0 * second / n                 # 2 (x - m) / (n den) - 2 v m / (n den^2)
    return V.finite_result(g, "the gradient", "x, eps")


def importance_loss_grad(noisy: "NoisyTopK", *, w_importance=1.0) -> np.ndarray:  # noqa: F821
    """d/dclean of w CV(sum_t G_t)^2, G = softmax(KeepTopK(H)), H = clean + noise * std."""
    G = V.instance(noisy, "noisy", NoisyTopK, "NoisyTopK (from noisy_top_k_gating)").gates
    dG = V.real_number(w_importance, "w_importance") * cv_squared_grad(G.sum(axis=0))[None, :]  # dL/dG_te, same for every t
    with np.errstate(over="ignore", invalid="ignore"):
        inner = (G * dG).sum(axis=-1, keepdims=True)
        grad = G * (dG - inner)  # softmax restricted to the top-k (G = 0 elsewhere)
    return V.finite_result(grad, "the gradient", "w_importance")


def load_loss_grad(clean_logits, noisy_logits, noise_stddev, k: int, *, w_load=1.0) -> np.ndarray:
    """d/dclean of w CV(Load)^2, Load_i = sum_t Phi((clean_ti - thr_ti) / std_ti), where the
    threshold thr_ti is the noisy logit H_tj = clean_tj + noise_tj std_tj of another expert j."""
    clean, H, std, k = VM.load_inputs(clean_logits, noisy_logits, noise_stddev, k)
    w_load = V.real_number(w_load, "w_load")
    thr, j = _kth_excluding(H, k)
    with np.errstate(over="ignore", invalid="ignore"):
        u = V.finite_result((clean - thr) / std, "(clean - threshold) / noise_stddev",
                            "clean_logits, noisy_logits, noise_stddev")
    load = ndtr(u).sum(axis=0)
    dload = w_load * cv_squared_grad(load)  # (E,)
    with np.errstate(over="ignore", invalid="ignore"):
        a = dload[None, :] * np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi) / std  # dL/du_ti / std_ti
        grad = a.copy()  # through clean_ti
        T = clean.shape[0]
        np.add.at(grad, (np.repeat(np.arange(T), clean.shape[1]), j.ravel()), -a.ravel())  # through thr_ti
    return V.finite_result(grad, "the gradient", "w_load, noise_stddev")
