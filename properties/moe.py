"""Mixture-of-experts properties (kind "moe"), the refimpl adapter, and the wrong
implementations each property must reject (``WRONG``, see ``properties.moe_wrong``).

Adapter protocol (``MoEAdapter``): callables with refimpl.moe's signatures

    route(logits, k, **options) -> Routing          capacity(tokens, experts, **rule) -> int
    balance_loss(routing, *, alpha, f, scale, probs, groups) -> float
    cv_squared(x) -> float                          z_loss(logits) / z_loss_grad(logits)
    gate_jacobian(logits, k, **options) -> (Routing, J (T, k, E))
    output_logit_jacobian(x, W, experts, k, **options) -> (Routing, dy/dz (T, D, E))
    moe_forward(x, W, experts, k, layout=..., **options) -> (y, Routing)
    dispatch_combine(routing) -> (dispatch (T, E, C) bool, combine (T, E, C))
    moe_vjp(x, W, experts, k, dy, **options) -> (dx, dz, dW)
    balance_loss_grad(routing, logits, **variant) -> (T, E)
    noisy_gating(clean, std, noise, k) -> NoisyTopK; importance_loss(gates);
    importance_loss_grad(noisy); load_loss(clean, H, std, k); load_loss_grad(clean, H, std, k)

Capabilities and their exact meanings: ``MOE_KIND`` (route, route.drop_orders,
route.padding, capacity, losses, losses.grad, cv_squared, z_loss, z_loss.grad,
noisy_gating, noisy_gating.grad, gradients, forward, forward.fused); each names the methods a
declaring adapter must supply, and nothing falls back to refimpl. A kernel that
only routes (the GPU kernels) declares {"route"} and is run on the routing
properties with the orders it implements.

Precision. An adapter declares ``precision`` ("float64" by default, "float32", "bfloat16",
"float16"; ``unit_roundoff``, the attribute it replaces, is deprecated). Its inputs are drawn
exactly representable in that precision, and every float output (probabilities, gates, losses,
gradients, forward outputs, combine tensors) is held to ``properties.precision``: the float64
bound written next to each check (a few ulps u = 2^-53 times the number of terms), or below
float64, FACTOR x the error of the same quantity computed naively in that precision
(``properties.moe_naive``) plus ``output_floor``; the forward checks (sparse == dense, the
GShard layout) also admit, entrywise, the derived rounding of an expert-and-combine kernel in p
(``_combine_rounding``), which scales with the gated terms where they cancel. Central differences (step h = 1e-6) of a
float64 adapter's own functions are within the truncation error h^2/6 |f'''| plus the rounding
error ~u |f| / h, both below 1e-8 for these O(1) problems; the checks allow 1e-6 (1 + |derivative|),
which every deliberately wrong derivative misses by orders of magnitude. Below float64 a
difference quotient of the adapter's own function would be rounding noise (u_p |f| / h), so the
gradient is compared with central differences of the spec's float64 function, allowing
1e-6 (1 + |derivative|) plus the gradient's precision bound.

Integers (indices, kept, position, counts, capacity) match exactly, with one near-tie rule.
Two competing spec scores s_a != s_b closer than ``resolution`` (2 x the bound on the
scores in the adapter's precision: each side may err by it) cannot be ordered by a correct
computation in that precision. Where the adapter's indices differ from the spec's, slot j of
token t is compared by score: |s[t, got_j] - s[t, ref_j]| must be within the resolution, and an
exact tie still goes to the lower expert id: experts of equal logits have equal exact scores,
which every precision computes equally, so an expert chosen at slot j needs every lower id of
exactly its logit and spec score chosen at an earlier slot. Spec scores equal only after
rounding (probabilities underflowed to 0 from different logits) are a near-tie: the exact
order is the logit order, which a kernel ranking by logit (SGLang's ``moe_fused_gate``) keeps,
and the float64 spec's lower-id order is as good an answer in float64; the integers are then compared exactly with the spec's slot rule applied to
the adapter's selection (``refimpl.moe.slots.assign_slots`` with the spec's scores). For the
score-keyed drop orders (priority: a token's top probability; per_expert_top_prob: p_te) two
token keys within the resolution may be served in either order: each expert must keep
min(C, count) assignments, never drop a key more than the resolution above one it keeps, and
(priority) serve choice j before choice j + 1 and keys in descending order up to the resolution.
A pick whose score is clearly worse fails, naming both scores and the resolution.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
from hypothesis import assume

import refimpl.moe as M
from refimpl.moe import presets as P

from refimpl.moe.router import normalize_gates
from refimpl.moe.slots import assign_slots

from . import moe_cases as C
from . import moe_naive as N
from . import moe_values, moe_wrong
from .core import Property
from .moe_protocol import KINDS, MOE_KIND, REFIMPL, MoEAdapter  # noqa: F401  (the protocol; re-exported)
from .moe_bounds import ACT_LIPSCHITZ, ACT_ULPS, _combine_rounding, _expert_rounding, _prec  # noqa: F401
from .precision import NaiveOps, output_floor, precision_bound, resolution, round_inputs

U64 = 2.0**-53
FD_STEP = 1e-6
FD_TOL = 1e-6


BUNDLED = [REFIMPL]


def _bound(impl, float64_bound, naive, spec, n: int, magnitude=None):
    """``properties.precision.precision_bound`` with the floor ``output_floor(p, |spec|, n)``;
    ``naive(o)`` computes the quantity with ``NaiveOps(p)`` (called only below float64)."""
    p = _prec(impl)
    if p == "float64":
        return float64_bound
    mag = float(np.max(np.abs(np.asarray(spec, dtype=float)), initial=0.0)) if magnitude is None else magnitude
    return precision_bound(p, float64_bound, lambda: naive(NaiveOps(p)), spec, output_floor(p, max(mag, 1e-300), n))


def _lowp(impl) -> bool:
    return _prec(impl) != "float64"


def _inputs(impl, x):
    """x rounded to the adapter's precision (inputs the suite builds itself)."""
    return round_inputs(_prec(impl), x)


def _fail(impl, msg, case):
    raise AssertionError(f"{impl.name}: {msg}\n  case: {case!r}")


def _softmax_rows(z):
    """A direct float64 softmax, independent of refimpl.softmax."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


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
    the spec's (``REFIMPL``) below (module docstring: a low-precision difference quotient is noise)."""
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
# routing: integer structure


def _score_bounds(impl, z, ref):
    """(bound on the probabilities, resolution): float64 8 (E + 4) u (1 + spread), else the
    precision rule on the naive scores (module docstring: the near-tie rule)."""
    spread = float(np.ptp(z)) if z.size else 0.0
    f64 = 8 * (z.shape[1] + 4) * U64 * (1.0 + spread)
    b = float(_bound(impl, f64, lambda o: N.scores(o, z, ref.options.score), ref.probs, z.shape[1], 1.0))
    return b, resolution(_prec(impl), b)


def _near_tie_reference(impl, got, ref, z, case, tau):
    """The spec's routing for the adapter's selection where it differs from the spec's only at
    near-ties (module docstring); AssertionError naming a clearly worse pick otherwise."""
    gi = np.asarray(got.indices)
    if gi.shape != ref.indices.shape or gi.dtype.kind not in "iu":
        _fail(impl, f"indices: expected int {ref.indices.shape}, got {gi.dtype} {gi.shape}", case)
    T, E = z.shape
    if ((gi < 0) | (gi >= E)).any() or any(len(set(row.tolist())) != row.size for row in gi):
        _fail(impl, f"indices {gi.tolist()}: out of range or an expert chosen twice", case)
    s_got = np.take_along_axis(ref.probs, gi, axis=-1)
    s_ref = np.take_along_axis(ref.probs, ref.indices, axis=-1)
    bad = np.abs(s_got - s_ref) > tau
    if bad.any():
        t, j = (int(v) for v in np.argwhere(bad)[0])
        _fail(impl, f"token {t}, choice {j}: picked expert {gi[t, j]} (spec score {float(s_got[t, j])!r}) where "
                    f"refimpl.moe.route picks {ref.indices[t, j]} (score {float(s_ref[t, j])!r}); they differ by "
                    f"{abs(s_got[t, j] - s_ref[t, j]):.3g} > {tau:.3g}, the resolution of {_prec(impl)} at these "
                    f"scores: not a near-tie. indices {gi[t].tolist()}, expected {ref.indices[t].tolist()}", case)
    for t in np.flatnonzero((gi != ref.indices).any(axis=1)):  # exact ties of the spec's scores: lower id first
        slot = {int(e): j for j, e in enumerate(gi[t])}
        for j, b in enumerate(gi[t]):
            lower = [a for a in range(b) if ref.probs[t, a] == ref.probs[t, b] and z[t, a] == z[t, b]
                     and slot.get(a, E) > j]
            if lower:
                _fail(impl, f"token {t}: expert {b} chosen before expert {lower[0]} although their logits and spec "
                            f"scores are exactly equal ({ref.probs[t, b]!r}): exact ties go to the lower expert id in "
                            f"every precision. indices {gi[t].tolist()}, expected {ref.indices[t].tolist()}", case)
    return _reference_for(ref, gi, z, case, ref.probs)


def _reference_for(ref, indices, z, case, keys):
    """The spec's routing with the selection ``indices``, slots assigned by refimpl's rule with
    ``keys`` as the scores of the score-keyed drop orders; gates from the spec's scores."""
    o = ref.options
    kept, position = assign_slots(indices, ref.token_mask, z.shape[1], ref.capacity, o.drop_order, keys,
                                  case.options.get("seed"), logits=z)
    gates = normalize_gates(np.take_along_axis(ref.probs, indices, axis=-1), kept, o.normalize,
                            o.normalize_eps) * o.route_scale
    return dataclasses.replace(ref, indices=indices.astype(np.int64), kept=kept, position=position, gates=gates,
                               counts=np.bincount(indices[ref.token_mask].ravel(), minlength=z.shape[1]).astype(np.int64))


def _keyed_slots_by_score(got, want, tau) -> str:
    """'' when ``got``'s kept and position follow ``want``'s score-keyed drop order with the
    token keys (the spec's: a token's top probability for priority, p_te for per_expert_top_prob)
    ordered up to the resolution ``tau``; otherwise what breaks it."""
    kept, pos = np.asarray(got.kept), np.asarray(got.position)
    if kept.shape != want.kept.shape or pos.shape != want.position.shape or ((pos >= 0) != kept).any():
        return "kept/position malformed"
    C = np.inf if want.capacity is None else want.capacity
    top = want.probs.max(axis=1)
    for e in range(want.probs.shape[1]):
        t, j = np.nonzero((want.indices == e) & want.token_mask[:, None])
        kk = kept[t, j]
        if kk.sum() != min(C, t.size):
            return f"expert {e} keeps {int(kk.sum())} assignments, expected min(C, {t.size})"
        if want.options.drop_order == "per_expert_top_prob":
            key = want.probs[t, e]
            if kk.any() and (~kk).any() and key[kk].min() < key[~kk].max() - tau:
                return f"expert {e} keeps an assignment of key {key[kk].min()!r} and drops one of {key[~kk].max()!r}"
            if not np.array_equal(pos[t[kk], j[kk]], np.arange(int(kk.sum()))):  # slots in token order
                return f"expert {e}: kept slots {pos[t[kk], j[kk]].tolist()} are not in token order"
            continue
        key = top[t]  # priority: choice j first, then tokens by their top probability
        order = np.argsort(np.where(kk, pos[t, j], np.iinfo(np.int64).max), kind="stable")
        if not np.array_equal(np.sort(pos[t[kk], j[kk]]), np.arange(int(kk.sum()))):
            return f"expert {e}: kept slots {sorted(pos[t[kk], j[kk]].tolist())} are not 0..{int(kk.sum()) - 1}"
        for a_i, a in enumerate(order):
            for b in order[a_i + 1:]:
                if not kk[a] and not kk[b]:
                    continue
                if j[a] > j[b] or (j[a] == j[b] and key[a] < key[b] - tau):
                    return (f"expert {e}: token {t[a]} (choice {j[a]}, key {key[a]!r}) is served before token "
                            f"{t[b]} (choice {j[b]}, key {key[b]!r})")
    return ""


def check_route_matches_reference(impl, case: C.RouteCase):
    """The routing equals refimpl.moe.route's: indices, kept, position and counts exactly,
    under the near-tie rule of the module docstring; probs and gates within the precision
    bound (float64: each is a ratio of exponentials of O(1 + spread) arguments,
    8 (E + k + 4) u (1 + spread)).

    Logits are drawn in the adapter's precision, with near-ties (two experts one ulp apart),
    exact ties (integer and all-equal logits) and extreme spreads.
    """
    z = case.logits
    got = impl.route(z, case.k, **case.kwargs())
    ref = M.route(z, case.k, **case.kwargs())
    pb, tau = _score_bounds(impl, z, ref)
    gp = np.asarray(got.probs, dtype=float)
    err = float(np.max(np.abs(gp - ref.probs), initial=0.0)) if gp.shape == ref.probs.shape else np.inf
    if not err <= pb:
        hint = "" if _lowp(impl) else "; a router computing in lower precision declares precision=\"float32\" (or bfloat16)"
        _fail(impl, f"probs differ from refimpl.moe.route's by {err:.3g} > {pb:.3g} (precision {_prec(impl)}{hint})", case)
    want = ref if np.array_equal(np.asarray(got.indices), ref.indices) else _near_tie_reference(impl, got, ref, z, case, tau)
    if ref.options.drop_order in ("priority", "per_expert_top_prob") and not (
            np.array_equal(np.asarray(got.kept), want.kept) and np.array_equal(np.asarray(got.position), want.position)):
        why = _keyed_slots_by_score(got, want, tau)  # token keys within the resolution: either order
        if why:
            _fail(impl, f"{why} (drop order {ref.options.drop_order}, resolution {tau:.3g} of {_prec(impl)})", case)
        o = ref.options
        want = dataclasses.replace(want, kept=np.asarray(got.kept), position=np.asarray(got.position),
                                   gates=normalize_gates(np.take_along_axis(ref.probs, want.indices, axis=-1),
                                                         np.asarray(got.kept), o.normalize, o.normalize_eps) * o.route_scale)
    for f in ("indices", "kept", "position", "counts"):
        a, b = np.asarray(getattr(got, f)), np.asarray(getattr(want, f))
        if a.shape != b.shape or not np.array_equal(a, b):
            bad = np.argwhere(a != b)[:1].tolist() if a.shape == b.shape else "shape"
            _fail(impl, f"{f} differs from refimpl.moe.route at {bad}: got {a.tolist()}, expected {b.tolist()}", case)
    if got.capacity != ref.capacity:
        _fail(impl, f"capacity {got.capacity} != refimpl's {ref.capacity}", case)
    spread = float(np.ptp(z)) if z.size else 0.0
    gmax = max(1.0, float(np.max(np.abs(want.gates), initial=0)))
    f64 = 8 * (z.shape[1] + case.k + 4) * U64 * (1.0 + spread) * gmax
    gb = _bound(impl, f64, lambda o: N.gates(o, N.scores(o, z, ref.options.score), want.indices, want.kept, ref.options),
                want.gates, z.shape[1] + case.k, gmax)
    err = float(np.max(np.abs(np.asarray(got.gates, dtype=float) - want.gates), initial=0.0))
    if not err <= gb:
        _fail(impl, f"gates differ from refimpl.moe.route's (for this selection) by {err:.3g} > {gb:.3g} "
                    f"(precision {_prec(impl)})", case)


def check_route_structure(impl, case: C.RouteCase):
    """Shapes and dtypes; indices distinct per token; position -1 iff not kept; kept
    positions distinct per expert and < capacity; counts = bincount of real tokens' indices."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    T, E = case.logits.shape
    k = case.k
    for f, shape, dt in (("indices", (T, k), np.int64), ("position", (T, k), np.int64),
                         ("kept", (T, k), np.bool_), ("counts", (E,), np.int64)):
        a = np.asarray(getattr(r, f))
        if a.shape != shape or a.dtype != dt:
            _fail(impl, f"{f}: expected {np.dtype(dt).name} {shape}, got {a.dtype} {a.shape}", case)
    if any(len(set(row)) != k for row in r.indices.tolist()):
        _fail(impl, "a token selected the same expert twice", case)
    if ((r.position >= 0) != r.kept).any():
        _fail(impl, "position must be -1 exactly where kept is False", case)
    mask = np.ones(T, bool) if case.padding_mask is None else case.padding_mask
    want = np.bincount(r.indices[mask].ravel(), minlength=E)
    if not np.array_equal(r.counts, want):
        _fail(impl, f"counts {r.counts.tolist()} != assignments per expert before dropping {want.tolist()}", case)
    if r.kept[~mask].any():
        _fail(impl, "a padding token was kept", case)
    for e in range(E):
        pos = r.position[(r.indices == e) & r.kept]
        if len(set(pos.tolist())) != pos.size:
            _fail(impl, f"expert {e}: two kept assignments share a slot: {sorted(pos.tolist())}", case)
        if r.capacity is not None and (pos >= r.capacity).any():
            _fail(impl, f"expert {e}: slot {pos.max()} >= capacity {r.capacity}", case)


def check_capacity_respected(impl, case: C.RouteCase):
    """No expert keeps more than C assignments."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    if r.capacity is None:
        return
    kept = np.bincount(r.indices[r.kept], minlength=case.logits.shape[1])
    if (kept > r.capacity).any():
        _fail(impl, f"kept per expert {kept.tolist()} exceeds capacity {r.capacity}", case)


def check_dropped_count(impl, case: C.RouteCase):
    """Position-based orders drop exactly sum_e max(0, count_e - C) assignments, where
    count_e is the number of assignments before dropping (docs/notes.md#capacity: 200 - 160 = 40)."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    if r.capacity is None:
        return
    mask = np.ones(case.logits.shape[0], bool) if case.padding_mask is None else case.padding_mask
    counts = np.asarray(r.counts)  # the implementation's own pre-drop counts
    want = int(np.maximum(counts - r.capacity, 0).sum())
    got = int(mask.sum() * case.k - r.kept.sum())
    if got != want:
        _fail(impl, f"dropped {got} assignments, expected sum max(0, count - C) = {want} "
                    f"(counts {counts.tolist()}, C = {r.capacity}, reported counts {r.counts.tolist()})", case)


def check_dropless_keeps_all(impl, case: C.RouteCase):
    """capacity=None (dropless) keeps every real token's every choice."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    mask = np.ones(case.logits.shape[0], bool) if case.padding_mask is None else case.padding_mask
    if not r.kept[mask].all():
        _fail(impl, f"dropless routing dropped {int((~r.kept[mask]).sum())} assignments", case)


def check_ties_to_lower_index(impl, case: C.RouteCase):
    """indices[t] = the k experts with the largest logits (equivalently probabilities),
    descending, equal values in increasing expert id."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    z = case.logits
    want = np.array([sorted(range(z.shape[1]), key=lambda e: (-z[t, e], e))[: case.k] for t in range(z.shape[0])])
    if not np.array_equal(r.indices, want):
        t = int(np.argmax((r.indices != want).any(axis=1)))
        _fail(impl, f"token {t}: indices {r.indices[t].tolist()}, expected {want[t].tolist()} "
                    f"(ties to the lower expert id) for logits {z[t].tolist()}", case)


def check_deterministic(impl, case: C.RouteCase):
    """Routing the same input twice gives bitwise identical results."""
    a = impl.route(case.logits.copy(), case.k, **case.kwargs())
    b = impl.route(case.logits.copy(), case.k, **case.kwargs())
    for f in ("indices", "position", "kept", "counts", "gates", "probs"):
        if not np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f))):
            _fail(impl, f"two calls on the same input disagree on {f}", case)


def check_permutation(impl, case: C.PermutationCase):
    """Permuting the tokens permutes indices, gates and kept (and leaves counts
    unchanged) when the drop order does not depend on token positions."""
    rc = case.route
    a = impl.route(rc.logits, rc.k, **rc.kwargs())
    b = impl.route(rc.logits[case.perm], rc.k, **rc.kwargs())
    for f in ("indices", "kept"):
        if not np.array_equal(np.asarray(getattr(a, f))[case.perm], np.asarray(getattr(b, f))):
            _fail(impl, f"{f} of the permuted tokens is not the permutation of {f}", case)
    if not np.array_equal(a.counts, b.counts):
        _fail(impl, "counts changed under a permutation of the tokens", case)
    ref = M.route(rc.logits, rc.k, **rc.kwargs())
    gb = _bound(impl, 8 * U64 * max(1.0, np.abs(a.gates).max()),
                lambda o: N.gates(o, N.scores(o, rc.logits, ref.options.score), ref.indices, ref.kept, ref.options),
                ref.gates, rc.logits.shape[1] + rc.k, max(1.0, float(np.abs(ref.gates).max(initial=0))))
    if not np.allclose(a.gates[case.perm], b.gates, rtol=0, atol=2 * gb):  # two runs, each within the bound
        _fail(impl, "gates of the permuted tokens are not the permuted gates", case)


# ---------------------------------------------------------------------------
# routing: gates


def _gate_sum_bound(impl, case, rows):
    """Bound on |sum of a token's renormalised gates - 1|: float64 4 (k + 2) u; else the precision
    rule on the naive gates' sums (the spec's routing, ``rows`` the tokens compared)."""
    def naive(o):
        ref = M.route(case.logits, case.k, **case.kwargs())
        return o.sum(N.gates(o, N.scores(o, case.logits, ref.options.score), ref.indices, ref.kept, ref.options))[rows]
    return _bound(impl, (case.k + 2) * U64 * 4, naive, np.ones(int(np.sum(rows))), case.k, 1.0)


def check_renormalised_sum_to_one(impl, case: C.RouteCase):
    """With before_drop or after_drop, a token none of whose choices was dropped has
    gates summing to 1 (times route_scale): sum of k terms, |error| <= (k + 2) u."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    full = r.kept.all(axis=1)
    s = r.gates[full].sum(axis=1)
    tol = _gate_sum_bound(impl, case, full)
    if s.size and np.abs(s - 1.0).max() > tol:
        _fail(impl, f"renormalised gates of undropped tokens sum to {s.tolist()}, not 1", case)


def check_topk_softmax_commute(impl, case: C.RouteCase):
    """softmax(top-k(z)) == renormalised top-k(softmax(z)): for an undropped token the
    renormalised gates are the softmax of its selected logits (docs/notes.md#moe-router:
    the two routes to the same gates). |error| <= (k + E + 8) u."""
    r = impl.route(case.logits, case.k, **case.kwargs())
    sel = np.take_along_axis(case.logits, np.asarray(r.indices), axis=-1)
    want = _softmax_rows(sel)
    full = r.kept.all(axis=1)
    f64 = (case.k + case.logits.shape[1] + 8) * U64 * 4 * max(1.0, float(np.ptp(sel)) if sel.size else 1.0)
    ref = M.route(case.logits, case.k, **case.kwargs())
    tol = _bound(impl, f64, lambda o: N.gates(o, N.scores(o, case.logits, ref.options.score), ref.indices,
                                                 ref.kept, ref.options),
                 ref.gates, case.k + case.logits.shape[1], 1.0)
    if full.any() and np.abs(r.gates[full] - want[full]).max() > tol:
        t = int(np.flatnonzero(full)[np.argmax(np.abs(r.gates[full] - want[full]).max(axis=1))])
        _fail(impl, f"token {t}: gates {r.gates[t].tolist()} != softmax of the selected logits "
                    f"{want[t].tolist()} (a softmax applied to probabilities, or no renormalisation?)", case)


def check_after_drop_renormalises_kept(impl, case: C.RouteCase):
    """normalize="after_drop": the kept gates of a token sum to 1 even when some of its
    choices were dropped (before_drop would leave them summing to less).

    Tokens whose kept choices all have probability 0 (underflow: logits ~1e3 or
    more below the token's max) are excluded: their denominator is 0 and the
    spec defines those gates as 0, never NaN.
    """
    r = impl.route(case.logits, case.k, **case.kwargs())
    kept_mass = np.where(r.kept, np.take_along_axis(np.asarray(r.probs), np.asarray(r.indices), axis=1), 0.0).sum(axis=1)
    some = r.kept.any(axis=1) & (kept_mass > 0)
    s = r.gates[some].sum(axis=1)
    tol = _gate_sum_bound(impl, case, some)
    if s.size and np.abs(s - 1.0).max() > tol:
        t = int(np.flatnonzero(some)[np.argmax(np.abs(s - 1.0))])
        _fail(impl, f"token {t}: kept gates {r.gates[t].tolist()} (kept {r.kept[t].tolist()}) sum to "
                    f"{r.gates[t].sum()!r}, not 1", case)


# ---------------------------------------------------------------------------
# capacity


def check_capacity_formula(impl, case: C.CapacityCase):
    """capacity = round(factor * (k if k_in_capacity else 1) * T / E), then >= min_capacity,
    then up to a multiple of multiple_of; exact rational arithmetic on the float factor
    (integer floor/ceil division here, independent of refimpl)."""
    got = impl.capacity(case.tokens, case.experts, k=case.k, factor=case.factor,
                        k_in_capacity=case.k_in_capacity, rounding=case.rounding,
                        min_capacity=case.min_capacity, multiple_of=case.multiple_of)
    f = Fraction(case.factor)
    num = f.numerator * (case.k if case.k_in_capacity else 1) * case.tokens
    den = f.denominator * case.experts
    if case.rounding == "floor":
        c = num // den
    elif case.rounding == "ceil":
        c = -((-num) // den)
    else:  # half to even
        q, rem = divmod(num, den)
        c = q + (1 if 2 * rem > den or (2 * rem == den and q % 2 == 1) else 0)
    c = max(c, case.min_capacity)
    c = -(-c // case.multiple_of) * case.multiple_of
    if got != c:
        _fail(impl, f"capacity {got}, expected {c}", case)


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


# ---------------------------------------------------------------------------


def _route_strategy(**kw):
    return lambda caps: C.route_case(caps, **kw)


def _position_orders(caps):
    return C.POSITION_ORDERS if "route.drop_orders" in caps else C.BASIC_DROP_ORDERS


PROPERTIES = [
    Property("moe_route_matches_reference", "moe", check_route_matches_reference,
             _route_strategy(logit_kinds=("normal", "integer", "one_expert", "equal", "near_tie", "extreme")),
             "routing equals refimpl.moe.route: integers exactly (near-ties by score), probs and gates within the precision bound",
             frozenset({"route"}), ("token_major_for_k_major", "ties_to_higher", "capacity_off_by_one")),
    Property("moe_route_structure", "moe", check_route_structure, _route_strategy(),
             "integer outputs well formed: distinct choices, -1 iff dropped, slots < C, counts", frozenset({"route"}),
             ("capacity_off_by_one", "counts_after_drop")),
    Property("moe_capacity_respected", "moe", check_capacity_respected, _route_strategy(capacity="finite"),
             "no expert keeps more than C assignments", frozenset({"route"}), ("capacity_off_by_one",)),
    Property("moe_dropped_count", "moe", check_dropped_count,
             lambda caps: C.route_case(caps, drop_orders=_position_orders(caps), capacity="finite"),
             "position orders drop sum max(0, count - C)", frozenset({"route"}),
             ("capacity_off_by_one", "counts_after_drop")),
    Property("moe_dropless_keeps_all", "moe", check_dropless_keeps_all, _route_strategy(capacity="none"),
             "capacity None drops nothing", frozenset({"route"}), ("dropless_drops",)),
    Property("moe_ties_to_lower_index", "moe", check_ties_to_lower_index,
             _route_strategy(logit_kinds=("integer", "equal")), "top-k ties go to the lower expert id",
             frozenset({"route"}), ("ties_to_higher",)),
    Property("moe_deterministic", "moe", check_deterministic, _route_strategy(logit_kinds=("integer", "equal")),
             "same input, same routing", frozenset({"route"}), ("random_ties",)),
    Property("moe_permutation", "moe", check_permutation, lambda caps: C.permutation_case(caps),
             "permuting tokens permutes the routing (position-independent orders)", frozenset({"route"}),
             ("bpr_uses_position",)),
    Property("moe_renormalised_sum_to_one", "moe", check_renormalised_sum_to_one,
             _route_strategy(normalize=("before_drop", "after_drop")),
             "renormalised gates of an undropped token sum to 1", frozenset({"route"}), ("no_renormalize",)),
    Property("moe_topk_softmax_commute", "moe", check_topk_softmax_commute,
             _route_strategy(normalize=("before_drop", "after_drop")),
             "softmax(top-k(z)) == renormalised top-k(softmax(z))", frozenset({"route"}),
             ("double_softmax", "no_renormalize")),
    Property("moe_after_drop_renormalises_kept", "moe", check_after_drop_renormalises_kept,
             _route_strategy(normalize=("after_drop",), capacity="finite"),
             "after_drop: kept gates sum to 1 even when a choice was dropped", frozenset({"route"}),
             ("renorm_before_drop",)),
    Property("moe_capacity_formula", "moe", check_capacity_formula, C.capacity_case(),
             "capacity = round(factor k T / E), min, multiple", frozenset({"capacity"}),
             ("capacity_without_k", "capacity_ceil")),
    Property("moe_balance_loss_formula", "moe", check_balance_loss_formula, _route_strategy(),
             "balance loss = alpha E sum f P", frozenset({"route", "losses"}), ("loss_without_E",)),
    Property("moe_preset_uniform_balance", "moe", check_preset_uniform_balance, C.preset_case(),
             "each preset's balance loss equals its stated uniform value", frozenset({"route", "losses"}),
             ("loss_without_E",)),
    Property("moe_cv_scale_invariant", "moe", check_cv_scale_invariant_zero_iff_uniform, C.loads_case,
             "CV^2 scale invariant, zero iff uniform", frozenset({"cv_squared"}), ("cv_over_mean",)),
    Property("moe_cv_identity", "moe", check_cv_identity, C.loads_case,
             "E sum f^2 = 1 + CV(f)^2", frozenset({"cv_squared"}), ("cv_sample_variance",)),
    Property("moe_gate_jacobian_fd", "moe", check_gate_jacobian_fd, lambda caps: C.honouring(caps, C.logit_grad_case),
             "gate Jacobian equals finite differences", frozenset({"route", "gradients"}),
             ("seed_diagonal_jacobian", "straight_through")),
    Property("moe_unselected_zero_gradient", "moe", check_unselected_zero_gradient,
             lambda caps: C.honouring(caps, C.logit_grad_case, normalize=("before_drop", "after_drop"), score=("softmax",)),
             "renormalised gates: unselected logits get no gradient", frozenset({"gradients"}),
             ("straight_through",)),
    Property("moe_k1_no_router_gradient", "moe", check_k1_renormalised_no_router_gradient,
             lambda caps: C.honouring(caps, C.grad_case, k=1, normalize=("before_drop", "after_drop"), capacity="none", min_E=2),
             "k = 1 renormalised: zero task gradient to the router", frozenset({"gradients"}),
             ("straight_through",)),
    Property("moe_router_gradient_formula", "moe", check_router_gradient_formula,
             lambda caps: C.honouring(caps, C.grad_case, normalize=("after_drop",), score=("softmax",), capacity="none"),
             "dy/dz_j = g_j (FFN_j(x) - y) (docs/errata.md#e7)", frozenset({"gradients", "forward"}),
             ("seed_diagonal_jacobian",)),
    Property("moe_vjp_fd", "moe", check_moe_vjp_fd, lambda caps: C.honouring(caps, C.grad_case),
             "MoE VJPs (x, logits, router weight) equal finite differences", frozenset({"route", "gradients", "forward"}),
             ("seed_diagonal_jacobian", "vjp_x_ignores_router")),
    Property("moe_balance_loss_gradient", "moe", check_balance_loss_gradient,
             lambda caps: C.honouring(caps, C.logit_grad_case, score=("softmax",), capacity="none"),
             "balance-loss gradient formula (docs/conventions.md#moe-defaults) and finite differences",
             frozenset({"route", "losses", "losses.grad"}), ("balance_grad_missing_term",)),
    Property("moe_z_loss_gradient_fd", "moe", check_z_loss_gradient_fd, C.noisy_case,
             "z-loss gradient equals finite differences of z_loss",
             frozenset({"z_loss", "z_loss.grad"}), ("zloss_grad_missing_2",)),
    Property("moe_noisy_loss_gradients_fd", "moe", check_noisy_loss_gradients_fd, C.noisy_case,
             "importance and load loss gradients equal finite differences",
             frozenset({"noisy_gating", "noisy_gating.grad"}), ("load_grad_no_threshold",)),
    Property("moe_sparse_equals_dense", "moe", check_sparse_equals_dense, lambda caps: C.honouring(caps, C.grad_case),
             "sparse forward == every expert on every token, masked", frozenset({"forward"}),
             ("forward_raw_probs",)),
    Property("moe_fused_forward", "moe", check_fused_forward, lambda caps: C.honouring(caps, C.grad_case),
             "fused-MoE forward (stacked expert weights) == every expert on every token, masked",
             frozenset({"forward.fused"}),
             ("forward_raw_probs", "fused_gate_up_swapped", "fused_weight_before_act", "fused_bias_unweighted",
              "fused_scale_missing")),
    Property("moe_dispatch_combine", "moe", check_dispatch_combine, lambda caps: C.honouring(caps, C.grad_case),
             "GShard dispatch/combine tensors agree with the routing and the sparse forward",
             frozenset({"forward"}), ("dispatch_off_by_one",)),
] + moe_values.PROPERTIES  # and the value checks of every supplied function
WRONG = {**moe_wrong.WRONG, **moe_values.WRONG}  # the wrong adapters (built from REFIMPL) and the values' own

__all__ = ["BUNDLED", "MoEAdapter", "PROPERTIES", "REFIMPL", "WRONG"]
