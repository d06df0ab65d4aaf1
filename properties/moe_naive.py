"""The naive MoE computations in one precision: the baselines of ``properties.precision``.

Each function computes one quantity the MoE properties compare, the way an eager framework
does it in precision p (``NaiveOps(p)``: every elementwise step rounded to p, every sum
accumulated in float32 and rounded to p), following refimpl.moe's formulas line by line
(router.py, losses.py, grads.py, forward.py) from the same rounded inputs. The integer
decisions (top-k, kept, slots) are taken from the spec's routing: a baseline of the floats,
not a second router. Expert outputs come from the same float64 expert callables the adapter
receives, rounded to p once (a low-precision kernel stores them in p).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from refimpl.moe.losses import scale_factor

from .precision import NaiveOps


def _quiet():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def scores(o: NaiveOps, z, score: str = "softmax"):
    """Router scores softmax(z) or sigmoid(z) in p (T, E)."""
    z = o.r(z)
    with _quiet():
        if score == "softmax":
            e = o.r(np.exp(o.r(z - z.max(axis=-1, keepdims=True))))
            return o.r(e / o.sum(e, keepdims=True))
        return o.r(1 / o.r(1 + o.r(np.exp(-z))))


def gates(o: NaiveOps, probs_p, indices, kept, opts):
    """Gates (T, k) in p from p scores and the spec's selection (refimpl.moe.router.normalize_gates)."""
    w = np.take_along_axis(probs_p, np.asarray(indices), axis=-1)
    kept = np.asarray(kept, bool)
    with _quiet():
        if opts.normalize == "none":
            g = np.where(kept, w, 0)
        else:
            num = w if opts.normalize == "before_drop" else np.where(kept, w, 0)
            den = o.r(o.sum(num, keepdims=True) + opts.normalize_eps)
            g = np.where(kept & (den > 0), o.r(num / np.where(den > 0, den, 1)), 0)
        return o.r(g * opts.route_scale)


def route_floats(o: NaiveOps, z, routing):
    """(probs, gates) of ``routing`` (the spec's) recomputed in p from the logits z."""
    p = scores(o, z, routing.options.score)
    return p, gates(o, p, routing.indices, routing.kept, routing.options)


def cv_squared(o: NaiveOps, x, eps: float = 1e-10):
    x = o.r(x)
    m = o.mean(x, axis=0)
    with _quiet():
        d = o.r(x - m)
        return o.r(o.mean(o.r(d * d), axis=0) / o.r(o.r(m * m) + eps))


def balance_loss(o: NaiveOps, routing, *, alpha, f, scale, probs, groups):
    """alpha c sum_e f_e P_e per group, mean over groups (refimpl.moe.losses.balance_loss), P in p."""
    T, E = routing.probs.shape
    c = scale_factor(scale, E, routing.k)
    p = o.r(routing.probs)
    with _quiet():
        if probs == "normalized_scores":
            s = o.sum(p, keepdims=True)
            p = np.where(s > 0, o.r(p / np.where(s > 0, s, 1)), 0)
        size = T // groups
        vals = []
        for g in range(groups):
            rows = slice(g * size, (g + 1) * size)
            real = routing.token_mask[rows]
            n = max(int(real.sum()), 1)
            cols = routing.indices[rows] if f == "k_hot" else routing.indices[rows, :1]
            fr = o.r(np.bincount(cols[real].ravel(), minlength=E) / n)
            P = o.r(o.sum(p[rows][real], axis=0) / o.compute(n))
            vals.append(o.r(o.r(alpha * c) * o.sum(o.r(fr * P))))
        return o.mean(np.array(vals, dtype=o.compute), axis=0)


def z_loss(o: NaiveOps, z):
    z = o.r(z)
    with _quiet():
        m = z.max(axis=-1, keepdims=True)
        lse = o.r(m[:, 0] + o.r(np.log(o.sum(o.r(np.exp(o.r(z - m)))))))
        return o.mean(o.r(lse * lse), axis=0)


def z_loss_grad(o: NaiveOps, z):
    zr = o.r(z)
    with _quiet():
        m = zr.max(axis=-1, keepdims=True)
        lse = o.r(m + o.r(np.log(o.sum(o.r(np.exp(o.r(zr - m))), keepdims=True))))
        return o.r(o.r(o.r(2.0 / zr.shape[0]) * lse) * scores(o, z))


def noisy_gates(o: NaiveOps, clean, std, noise, indices):
    """softmax over the spec's top-k of H = clean + noise std, in p (T, E)."""
    H = o.r(o.r(clean) + o.r(o.r(noise) * o.r(std)))
    keep = np.full(H.shape, -np.inf, dtype=o.compute)
    np.put_along_axis(keep, indices, np.take_along_axis(H, indices, axis=-1), axis=-1)
    return scores(o, keep)


def importance_loss(o: NaiveOps, G):
    return cv_squared(o, o.sum(o.r(G), axis=0))


def _load_u(o: NaiveOps, clean, H, std, k):
    from refimpl.moe.losses import kth_excluding

    thr, j = kth_excluding(np.asarray(H, np.float64), k)
    with _quiet():
        return o.r(o.r(o.r(clean) - o.r(thr)) / o.r(std)), j


def load_loss(o: NaiveOps, clean, H, std, k):
    u, _ = _load_u(o, clean, H, std, k)
    return cv_squared(o, o.sum(o.r(ndtr(u)), axis=0))


def _cv_grad(o: NaiveOps, x, eps: float = 1e-10):
    x = o.r(x)
    n = x.shape[0]
    m = o.mean(x, axis=0)
    with _quiet():
        d = o.r(x - m)
        v = o.mean(o.r(d * d), axis=0)
        den = o.r(o.r(m * m) + eps)
        return o.r(o.r(o.r(2 * d) / o.r(n * den)) - o.r(o.r(2 * v * m) / o.r(n * o.r(den * den))))


def importance_loss_grad(o: NaiveOps, G):
    G = o.r(G)
    dG = _cv_grad(o, o.sum(G, axis=0))[None, :]
    with _quiet():
        inner = o.sum(o.r(G * dG), keepdims=True)
        return o.r(G * o.r(dG - inner))


def load_loss_grad(o: NaiveOps, clean, H, std, k):
    u, j = _load_u(o, clean, H, std, k)
    dload = _cv_grad(o, o.sum(o.r(ndtr(u)), axis=0))
    with _quiet():
        a = o.r(o.r(dload[None, :] * o.r(o.r(np.exp(o.r(-0.5 * o.r(u * u)))) / o.compute(np.sqrt(2 * np.pi)))) / o.r(std))
    grad = a.copy()
    T = grad.shape[0]
    np.add.at(grad, (np.repeat(np.arange(T), grad.shape[1]), j.ravel()), -a.ravel())
    return o.r(grad)


def score_jacobian(o: NaiveOps, p, score):
    E = p.shape[1]
    with _quiet():
        if score == "softmax":
            return o.r(p[:, :, None] * np.eye(E, dtype=o.compute) - o.r(p[:, :, None] * p[:, None, :]))
        return o.r(o.r(p * o.r(1 - p))[:, :, None] * np.eye(E, dtype=o.compute))


def gate_jacobian(o: NaiveOps, z, routing):
    """Jg (T, k, E) in p (refimpl.moe.grads.gate_jacobian_of) for the spec's routing."""
    opts = routing.options
    p = scores(o, z, opts.score)
    J = score_jacobian(o, p, opts.score)
    Jw = np.take_along_axis(J, routing.indices[:, :, None], axis=1)
    w = np.take_along_axis(p, routing.indices, axis=-1)
    kept = routing.kept.astype(o.compute)
    with _quiet():
        if opts.normalize == "none":
            return o.r(opts.route_scale * kept[:, :, None] * Jw)
        in_den = np.ones_like(kept) if opts.normalize == "before_drop" else kept
        D = o.r(o.sum(o.r(in_den * w)) + opts.normalize_eps)
        safe = np.where(D > 0, D, 1)
        dD = o.sum(o.r(in_den[:, :, None] * Jw), axis=1)
        Jg = o.r(o.r(Jw - o.r(o.r(w / safe[:, None])[:, :, None] * dD[:, None, :])) / safe[:, None, None])
        return o.r(opts.route_scale * (kept * (D > 0)[:, None])[:, :, None] * Jg)


def expert_outputs(o: NaiveOps, x, routing, experts):
    """F (T, k, D): each chosen expert's output on its token, rounded to p."""
    T, k = routing.indices.shape
    F = np.zeros((T, k, x.shape[1]))
    for e, ex in enumerate(experts):
        t, j = np.nonzero(routing.indices == e)
        if t.size:
            F[t, j] = ex(np.asarray(o.r(x[t]), np.float64))
    return o.r(F)


def forward(o: NaiveOps, x, z, routing, experts):
    """y (T, D) = sum_j g_j FFN_{e_j}(x) in p, gates in p from z."""
    g = route_floats(o, z, routing)[1]
    F = expert_outputs(o, x, routing, experts)
    return o.sum(o.r(g[:, :, None] * F), axis=1)


def output_logit_jacobian(o: NaiveOps, x, z, routing, experts):
    F = expert_outputs(o, x, routing, experts)
    J = gate_jacobian(o, z, routing)
    return o.sum(o.r(F[:, :, :, None] * J[:, :, None, :]), axis=1)


def moe_vjp(o: NaiveOps, x, W, routing, experts, dy):
    """(dx, dz, dW) in p (refimpl.moe.grads.moe_vjp) for the spec's routing of z = x W^T."""
    x, W, dy = o.r(x), o.r(W), o.r(dy)
    z = o.matmul(x, W.T)
    F = expert_outputs(o, x, routing, experts)
    dgates = o.sum(o.r(dy[:, None, :] * F))
    dz = o.sum(o.r(dgates[:, :, None] * gate_jacobian(o, z, routing)), axis=1)
    dx = o.matmul(dz, W)
    g = route_floats(o, z, routing)[1]
    for e, ex in enumerate(experts):
        t, j = np.nonzero((routing.indices == e) & routing.kept)
        if t.size:
            dxe = o.r(ex.vjp(np.asarray(x[t], np.float64), np.asarray(o.r(g[t, j][:, None] * dy[t]), np.float64)))
            np.add.at(dx, t, dxe)
    return o.r(dx), dz, o.matmul(dz.T, x)


def balance_loss_grad(o: NaiveOps, routing, z, *, alpha, f, scale, probs):
    """dL/dz (T, E) of the balance loss, f held constant, one group, in p."""
    T, E = routing.probs.shape
    p = scores(o, z, routing.options.score)
    J = score_jacobian(o, p, routing.options.score)
    with _quiet():
        if probs == "normalized_scores":
            s = o.sum(p, keepdims=True)
            s = np.where(s > 0, s, np.inf)
            Jq = o.r((np.eye(E, dtype=o.compute)[None] - o.r(p / s)[:, :, None]) / s[:, :, None])
            J = o.sum(o.r(Jq[:, :, :, None] * J[:, None, :, :]), axis=2)
        c = scale_factor(scale, E, routing.k)
        n = max(int(routing.token_mask.sum()), 1)
        cols = routing.indices if f == "k_hot" else routing.indices[:, :1]
        fr = np.bincount(cols[routing.token_mask].ravel(), minlength=E) / n
        dP = o.r(o.r(alpha * c / n) * o.r(fr)[None, :] * routing.token_mask[:, None])
        return o.sum(o.r(dP[:, :, None] * J), axis=1)
