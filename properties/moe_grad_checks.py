"""MoE gradient checks (kind "moe", capabilities "gradients", "losses.grad", "z_loss.grad",
"noisy_gating.grad"): the gate Jacobian, the zero gradient of unselected logits, k = 1 without a
router gradient, the router gradient formula g_b (FFN_b(x) - y), the MoE VJPs, and the balance,
z, importance and load loss gradients, each against central finite differences (of the adapter's
own function in float64, of the spec's below: ``_fd_source``) and the precision bound. The
PROPERTIES table that runs them is ``properties.moe``.
"""

from __future__ import annotations

import numpy as np

import refimpl.moe as M

from . import moe_cases as C
from . import moe_naive as N
from .moe_check_helpers import U64, _bound, _fail, _inputs, _lowp, _softmax_rows
from .moe_protocol import REFIMPL

FD_STEP = 1e-6
FD_TOL = 1e-6


def _central_difference(f, z, h=FD_STEP):
    """d f / d z for scalar or array f, by central differences over every entry of z."""
    f0 = np.asarray(f(z))
    out = np.zeros(f0.shape + z.shape)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        out[(Ellipsis,) + idx] = (np.asarray(f(zp)) - np.asarray(f(zm))) / (2 * h)
    return out


def _fd_source(impl):
    """Whose function the central differences are taken of: the adapter's own in float64,
    the spec's (``REFIMPL``) below (``properties.moe``'s docstring: a low-precision difference
    quotient is noise)."""
    return REFIMPL if _lowp(impl) else impl


def _close_fd(impl, what, got, fd, case, extra=0.0):
    """|got - fd| <= FD_TOL (1 + |fd|) + ``extra`` (the gradient's precision bound below float64)."""
    got, fd = np.asarray(got, dtype=float), np.asarray(fd, dtype=float)
    if got.shape != fd.shape:
        _fail(impl, f"{what}: shape {got.shape}, finite differences give {fd.shape}", case)
    tol = FD_TOL * (1.0 + np.abs(fd)) + (extra if _lowp(impl) else 0.0)
    bad = np.abs(got - fd) > tol
    if bad.any():
        i = np.unravel_index(np.argmax(np.abs(got - fd) - tol), got.shape)
        _fail(impl, f"{what} differs from central finite differences at {i}: analytic {got[i]!r}, "
                    f"FD {fd[i]!r} (tolerance {tol[i]:.2g})", case)


# ---------------------------------------------------------------------------
# gradients


def check_gate_jacobian_fd(impl, case: C.LogitGradCase):
    """The gate Jacobian (T, k, E) equals central finite differences of route()'s gates."""
    r, J = impl.gate_jacobian(case.logits, case.k, **case.options)
    src = _fd_source(impl)
    fd = _central_difference(lambda z: src.route(z, case.k, **case.options).gates, case.logits)
    # fd[t, j, s, e] = d gates[t, j] / d z[s, e]; the Jacobian is block diagonal over tokens
    T = case.logits.shape[0]
    off = fd.copy()
    off[np.arange(T), :, np.arange(T), :] = 0.0
    if np.abs(off).max() > FD_TOL:
        _fail(impl, "a token's gates depend on another token's logits", case)
    ref, Jref = M.gate_jacobian(case.logits, case.k, **case.options)
    extra = _bound(impl, 0.0, lambda o: N.gate_jacobian(o, case.logits, ref), Jref, case.k + case.logits.shape[1],
                   max(1.0, float(np.abs(Jref).max())))
    _close_fd(impl, "d gates / d logits", J, fd[np.arange(T), :, np.arange(T), :], case, extra)


def check_unselected_zero_gradient(impl, case: C.LogitGradCase):
    """Renormalised softmax gates do not depend on unselected logits: their Jacobian
    columns are 0 (a straight-through rule would give them the softmax gradient). In
    float64 the chain rule's two cancelling terms leave at most (k + 4) u max |J|."""
    r, J = impl.gate_jacobian(case.logits, case.k, **case.options)
    T, E = case.logits.shape
    ref, Jref = M.gate_jacobian(case.logits, case.k, **case.options)
    tol = _bound(impl, 4 * (case.k + 4) * U64 * max(np.abs(J).max(), 1.0), lambda o: N.gate_jacobian(o, case.logits, ref),
                 Jref, case.k + E, max(1.0, float(np.abs(Jref).max())))
    for t in range(T):
        unsel = np.setdiff1d(np.arange(E), r.indices[t])
        if unsel.size and np.abs(J[t][:, unsel]).max() > tol:
            _fail(impl, f"token {t}: unselected experts {unsel.tolist()} get gate gradient "
                        f"{J[t][:, unsel].tolist()}", case)


def check_k1_renormalised_no_router_gradient(impl, case: C.GradCase):
    """k = 1 with renormalisation: the gate is the constant 1 (times route_scale), so the
    task loss gives the router logits zero gradient."""
    dx, dz, dW = impl.moe_vjp(case.x, case.W, list(case.experts), 1, case.dy, **case.options)
    # 0 in exact arithmetic: w / (w + 0) is exactly 1 in IEEE, so the two cancelling terms
    # are equal; allow 8 u times the size of the terms anyway
    F = max(float(np.abs(ex(case.x)).max()) for ex in case.experts)
    tol = 8 * U64 * (1 + F * float(np.abs(case.dy).max())) * max(1.0, float(np.abs(case.x).max()))
    ref = M.route(case.x @ case.W.T, 1, **case.options)
    tol = _bound(impl, tol, lambda o: N.moe_vjp(o, case.x, case.W, ref, list(case.experts), case.dy)[1], np.zeros_like(dz),
                 case.x.shape[1] + 8, (1 + F * float(np.abs(case.dy).max())) * max(1.0, float(np.abs(case.x).max())))
    if _lowp(impl):  # the precision bound is on dz; dW = dz^T x is |x| times larger
        tol = tol * max(1.0, float(np.abs(case.x).max()))
    if np.abs(dz).max() > tol or np.abs(dW).max() > tol:
        _fail(impl, f"router gradient {np.abs(dz).max()!r} with k = 1 and renormalised gates", case)


def check_router_gradient_formula(impl, case: C.GradCase):
    """Renormalised softmax top-k, nothing dropped: dy/dz_b = g_b (FFN_b(x) - y) for b
    selected, 0 otherwise (docs/errata.md#e7: g_b (1 - g_b) FFN_b(x) is only the diagonal).
    Bound: (k + 8) u (1 + max |FFN|) per entry, times 8."""
    r, Jy = impl.output_logit_jacobian(case.x, case.W, list(case.experts), case.k, **case.options)
    y, _ = impl.moe_forward(case.x, case.W, list(case.experts), case.k, **case.options)
    T, D = case.x.shape
    E = case.W.shape[0]
    want = np.zeros((T, D, E))
    F = np.stack([np.asarray(ex(case.x)) for ex in case.experts], axis=-1)  # (T, D, E)
    scale = case.options.get("route_scale", 1.0)
    for t in range(T):
        for j, b in enumerate(r.indices[t]):
            want[t, :, b] = r.gates[t, j] * (F[t, :, b] - y[t] / scale)
    tol = 8 * (case.k + 8) * U64 * (1 + np.abs(F).max()) * scale * 16
    ref = M.route(case.x @ case.W.T, case.k, **case.options)
    z = _inputs(impl, case.x @ case.W.T)
    Jref = M.output_logit_jacobian(case.x, ref, case.x @ case.W.T, list(case.experts))
    yb = _bound(impl, 0.0, lambda o: N.forward(o, case.x, z, ref, list(case.experts)),
                M.moe_forward(case.x, case.W, list(case.experts), case.k, **case.options)[0], case.k + case.x.shape[1])
    # below float64: Jy and the formula's y each within their precision bounds (g_b <= route_scale)
    tol = _bound(impl, tol, lambda o: N.output_logit_jacobian(o, case.x, z, ref, list(case.experts)), Jref,
                 case.k + D + E) + scale * yb
    if np.abs(Jy - want).max() > tol:
        i = np.unravel_index(np.argmax(np.abs(Jy - want)), Jy.shape)
        _fail(impl, f"dy/dz at (token, dim, expert) {i}: {Jy[i]!r}, expected g_b (FFN_b(x) - y) = {want[i]!r}", case)


def check_moe_vjp_fd(impl, case: C.GradCase):
    """VJP of the MoE output with respect to x (through the experts and the router),
    the router logits and the router weight, against central finite differences of
    L = <dy, y>."""
    experts = list(case.experts)
    dx, dz, dW = impl.moe_vjp(case.x, case.W, experts, case.k, case.dy, **case.options)
    src = _fd_source(impl)

    def loss_x(x):
        return float(np.sum(src.moe_forward(x, case.W, experts, case.k, **case.options)[0] * case.dy))

    def loss_W(W):
        return float(np.sum(src.moe_forward(case.x, W, experts, case.k, **case.options)[0] * case.dy))

    def loss_z(z):  # router logits -> <dy, y>, gates from src.route, experts applied here
        r = src.route(z, case.k, **case.options)
        G = np.zeros(z.shape)
        t, j = np.nonzero(r.kept)
        G[t, r.indices[t, j]] = r.gates[t, j]
        return float(np.sum(sum(G[:, [e]] * np.asarray(ex(case.x)) for e, ex in enumerate(experts)) * case.dy))

    ref = M.route(case.x @ case.W.T, case.k, **case.options)
    want = M.moe_vjp(case.x, case.W, experts, case.k, case.dy, **case.options)
    naive = [None]

    def extra(i):  # the precision bound of dx, dz, dW (naive VJP computed once)
        def value(o):
            naive[0] = naive[0] or N.moe_vjp(o, case.x, case.W, ref, experts, case.dy)
            return naive[0][i]
        return _bound(impl, 0.0, value, want[i], case.x.shape[1] + case.W.shape[0] + case.k + case.x.shape[0])

    _close_fd(impl, "dL/dz", dz, _central_difference(loss_z, case.x @ case.W.T), case, extra(1))
    _close_fd(impl, "dL/dx", dx, _central_difference(loss_x, case.x), case, extra(0))
    _close_fd(impl, "dL/dW_router", dW, _central_difference(loss_W, case.W), case, extra(2))


def check_balance_loss_gradient(impl, case: C.LogitGradCase):
    """dL/dz_tj = (alpha E / T) p_tj (f_j - sum_i f_i p_ti) for the k-hot product loss
    with f held constant (docs/conventions.md#moe-defaults), and equal to finite differences of the loss."""
    alpha = 0.01
    r = impl.route(case.logits, case.k, **case.options)
    T, E = case.logits.shape
    got = impl.balance_loss_grad(r, case.logits, alpha=alpha, f="k_hot", scale="E", probs="softmax")
    ref = M.route(case.logits, case.k, **case.options)
    kw = dict(alpha=alpha, f="k_hot", scale="E", probs="softmax")
    extra = _bound(impl, 0.0, lambda o: N.balance_loss_grad(o, ref, case.logits, **kw),
                   M.balance_loss_grad(ref, case.logits, **kw), T + E, alpha * E)
    if case.options.get("score", "softmax") == "softmax":
        p = _softmax_rows(case.logits)
        f = np.zeros(E)
        for t in range(T):
            f[r.indices[t]] += 1.0 / T
        want = (alpha * E / T) * p * (f[None, :] - (p @ f)[:, None])
        tol = 64 * (E + T) * U64 * alpha * E + extra
        if np.abs(got - want).max() > tol:
            _fail(impl, f"balance-loss gradient differs from (alpha E/T) p (f - sum f p) by "
                        f"{np.abs(got - want).max():.3g} > {tol:.3g}", case)
    src = _fd_source(impl)
    fd = _central_difference(
        lambda z: src.balance_loss(src.route(z, case.k, **case.options), alpha=alpha, f="k_hot",
                                   scale="E", probs="softmax", groups=1), case.logits)
    _close_fd(impl, "d balance / d z", got, fd, case, extra)


def check_z_loss_gradient_fd(impl, case: C.NoisyCase):
    """z-loss gradient against central differences of z_loss."""
    z = case.clean
    want = M.z_loss_grad(z)
    extra = _bound(impl, 0.0, lambda o: N.z_loss_grad(o, z), want, sum(z.shape))
    _close_fd(impl, "d z_loss / d z", impl.z_loss_grad(z), _central_difference(_fd_source(impl).z_loss, z), case, extra)


def check_noisy_loss_gradients_fd(impl, case: C.NoisyCase):
    """Importance and load loss gradients against central differences (noise passed in
    explicitly; noisy logits kept apart so top-k sets do not move)."""
    z = case.clean
    src = _fd_source(impl)
    noisy = impl.noisy_gating(z, case.std, case.noise, case.k)
    want = M.noisy_top_k_gating(z, case.std, case.noise, case.k)
    n = sum(z.shape)
    extra = _bound(impl, 0.0, lambda o: N.importance_loss_grad(o, N.noisy_gates(o, z, case.std, case.noise, want.indices)),
                   M.importance_loss_grad(want), n)
    _close_fd(impl, "d importance / d clean", impl.importance_loss_grad(noisy),
              _central_difference(lambda c: src.importance_loss(src.noisy_gating(c, case.std, case.noise, case.k).gates), z),
              case, extra)
    H = _inputs(impl, z + case.noise * case.std)
    extra = _bound(impl, 0.0, lambda o: N.load_loss_grad(o, z, H, case.std, case.k),
                   M.load_loss_grad(z, H, case.std, case.k), n)
    _close_fd(impl, "d load / d clean", impl.load_loss_grad(z, H, case.std, case.k),
              _central_difference(lambda c: src.load_loss(c, c + (H - z), case.std, case.k), z),  # H at c = z
              case, extra)
