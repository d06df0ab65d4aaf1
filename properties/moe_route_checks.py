"""MoE routing checks (kind "moe", capabilities "route" and "capacity"): the routing against
refimpl.moe.route (integers exactly, with the near-tie rule of ``properties.moe``'s docstring:
score bounds, the spec's routing for a selection that differs only at near-ties, the score-keyed
drop orders up to the resolution), the integer structure (shapes, distinct choices, slots,
capacity, dropped counts, dropless, ties to the lower id, determinism, token permutation), the
gates (renormalised sums, softmax and top-k commuting, after_drop) and the capacity formula in
exact rational arithmetic. The PROPERTIES table that runs them is ``properties.moe``.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

import refimpl.moe as M
from refimpl.moe.router import normalize_gates
from refimpl.moe.slots import assign_slots

from . import moe_cases as C
from . import moe_naive as N
from .moe_bounds import _prec
from .moe_check_helpers import U64, _bound, _fail, _lowp, _softmax_rows
from .precision import resolution


# ---------------------------------------------------------------------------
# routing: integer structure


def _score_bounds(impl, z, ref):
    """(bound on the probabilities, resolution): float64 8 (E + 4) u (1 + spread), else the
    precision rule on the naive scores (``properties.moe``'s docstring: the near-tie rule)."""
    spread = float(np.ptp(z)) if z.size else 0.0
    f64 = 8 * (z.shape[1] + 4) * U64 * (1.0 + spread)
    b = float(_bound(impl, f64, lambda o: N.scores(o, z, ref.options.score), ref.probs, z.shape[1], 1.0))
    return b, resolution(_prec(impl), b)


def _near_tie_reference(impl, got, ref, z, case, tau):
    """The spec's routing for the adapter's selection where it differs from the spec's only at
    near-ties (``properties.moe``'s docstring); AssertionError naming a clearly worse pick otherwise."""
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
    under the near-tie rule of ``properties.moe``'s docstring; probs and gates within the precision
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
