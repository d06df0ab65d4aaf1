"""MoE load-balancing loss checks (kind "moe", capabilities "losses" and "cv_squared"): the
balance loss alpha E sum_e f_e P_e computed independently of refimpl, each preset's stated value
under uniform routing, and the squared coefficient of variation (scale invariant, zero iff the
loads are uniform, E sum f^2 = 1 + CV^2). The PROPERTIES table that runs them is ``properties.moe``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import assume

import refimpl.moe as M
from refimpl.moe import presets as P

from . import moe_cases as C
from . import moe_naive as N
from .moe_check_helpers import U64, _bound, _fail, _inputs, _lowp, _softmax_rows


# ---------------------------------------------------------------------------
# losses


def check_balance_loss_formula(impl, case: C.RouteCase):
    """balance_loss = alpha * E * sum_e f_e P_e, f_e the fraction of real tokens with e in
    their top-k (pre-drop), P_e their mean probability (docs/conventions.md#moe-defaults). Relative error
    <= (E + T + 8) u."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    T, E = case.logits.shape
    mask = np.ones(T, bool) if case.padding_mask is None else case.padding_mask
    n = max(int(mask.sum()), 1)
    f = np.zeros(E)
    for t in np.flatnonzero(mask):
        f[r.indices[t]] += 1.0 / n
    Pm = _softmax_rows(case.logits)[mask].sum(axis=0) / n
    want = 0.01 * E * float(f @ Pm)
    got = impl.balance_loss(r, alpha=0.01, f="k_hot", scale="E", probs="softmax", groups=1)
    ref = M.route(case.logits, case.k, **case.kwargs())
    tol = _bound(impl, (E + T + 8) * U64 * 8 * max(abs(want), 1e-300),
                 lambda o: N.balance_loss(o, dataclasses.replace(ref, indices=np.asarray(r.indices),
                                                                 probs=N.scores(o, case.logits)),
                                          alpha=0.01, f="k_hot", scale="E", probs="softmax", groups=1),
                 want, T + E)
    if abs(got - want) > tol:
        _fail(impl, f"balance loss {got!r}, expected alpha E sum f P = {want!r}", case)


def check_preset_uniform_balance(impl, case: C.PresetCase):
    """Each preset's balance loss, computed on a batch routed uniformly (every expert
    the top-1 of the same number of tokens, mean probability 1/E), equals the value the
    preset states (written by hand in refimpl.moe.presets): relative error <= 64 E u."""
    p = P.ALL[case.preset]
    z = _inputs(impl, C.uniform_batch(case.E, p.options.n_groups or 1, case.repeats, case.seed))
    r = impl.route(z, case.k, preset=p, capacity=None)
    counts = np.bincount(r.indices[:, 0], minlength=case.E)
    assume(counts.min() == counts.max())  # distinct base values: always true unless a tie was drawn
    groups = case.repeats  # each block of E rows is uniform on its own (per-sequence variants)
    got = impl.balance_loss(r, alpha=1.0, f=p.balance.f, scale=p.balance.scale, probs=p.balance.probs,
                            groups=groups)
    want = p.uniform_balance_loss(case.k, case.E)
    ref = M.route(z, case.k, preset=p, capacity=None)
    tol = _bound(impl, 64 * case.E * U64 * max(1.0, abs(want)),
                 lambda o: N.balance_loss(o, dataclasses.replace(ref, probs=N.scores(o, z, ref.options.score)), alpha=1.0,
                                          f=p.balance.f, scale=p.balance.scale, probs=p.balance.probs, groups=groups),
                 want, z.shape[0] + case.E)
    if abs(got - want) > tol:
        _fail(impl, f"preset {p.name}: balance loss {got!r} under uniform routing, the preset states "
                    f"{want!r} ({p.balance}, k={case.k}, E={case.E})", case)


def check_cv_scale_invariant_zero_iff_uniform(impl, case: C.VectorCase):
    """CV^2(c x) = CV^2(x) up to the eps term and rounding (|diff| <= CV^2 eps |1/c^2 - 1| /
    mean^2 + 64 u CV^2 + (4 E u)^2: the scaled entries' mean is rounded, so equal scaled
    loads can show a spread of E u mean), and CV^2(x) = 0 exactly iff the (integer) loads
    are all equal."""
    x, cx = case.x, _inputs(impl, case.scale * case.x)
    a, b = impl.cv_squared(x), impl.cv_squared(cx)
    m = x.mean()
    tol = a * 1e-10 * abs(1 / case.scale**2 - 1) / (m * m) + 64 * U64 * a + (4 * x.size * U64) ** 2
    # below float64: each side within the precision bound of its spec value (cx is x rounded after scaling)
    tol = tol + 2 * _bound(impl, 0.0, lambda o: N.cv_squared(o, cx), M.cv_squared(cx), x.size) \
        + abs(M.cv_squared(cx) - M.cv_squared(x)) * _lowp(impl)
    if abs(a - b) > tol:
        _fail(impl, f"CV^2 not scale invariant: {a!r} vs {b!r} after scaling by {case.scale}", case)
    uniform = bool((x == x[0]).all())
    if uniform != (a == 0.0):
        _fail(impl, f"CV^2 = {a!r} for {'uniform' if uniform else 'non-uniform'} loads", case)


def check_cv_identity(impl, case: C.VectorCase):
    """With f = x / sum x (sum f = 1): E sum f^2 = 1 + CV(f)^2 (population variance).
    |diff| <= CV^2 eps E^2 (the eps term) + 16 E u."""
    f = _inputs(impl, case.x / case.x.sum())
    E = f.size
    cv = impl.cv_squared(f)
    lhs = E * float(f @ f) / float(f.sum()) ** 2  # = 1 + CV^2 for any f (f rounded to the precision sums to 1 + O(E u))
    tol = _bound(impl, cv * 1e-10 * E * E + 16 * E * U64, lambda o: N.cv_squared(o, f), M.cv_squared(f), E)
    if abs(lhs - (1 + cv)) > tol + (cv * 1e-10 * E * E + 16 * E * U64) * _lowp(impl):
        _fail(impl, f"E sum f^2 = {lhs!r} but 1 + CV^2 = {1 + cv!r} (sample instead of population variance?)", case)

