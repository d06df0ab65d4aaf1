"""The checks of ``refimpl.moe``: the routing setup (logits, k, padding mask, selection bias, groups,
preset k, convention keywords) shared by ``route``, the gpu facade's ``prepare_route``,
``route_expert_choice`` and the losses; capacity and slot arguments; experts; the losses' inputs.

One validator per public function's argument group, returning the normalised arguments. Classes and
option tuples are passed in (this package is a leaf: it never imports ``refimpl.moe``).
"""

from __future__ import annotations

import numbers

import numpy as np

from .arrays import as_float_array, bool_array, index_array
from .budget import check_budget
from .scalars import _type, choice, count, fail, instance, plain, real_number
from .objects import routing as _routing


# ---------------------------------------------------------------------------
# the routing setup: route, gpu.api.prepare_route, route_expert_choice, the losses


def router_logits(logits) -> np.ndarray:
    """Raw router logits z (T, E), E >= 1, finite, as float64: every routing and loss on logits."""
    return as_float_array(logits, "logits", ndim=2, shape_doc="(T, E)", min_size={1: 1})


def experts_per_token(k, E: int) -> int:
    """k, 1 <= k <= E (top-k selection)."""
    k = count(k, "k", minimum=-(2**63), maximum=None)
    if not 1 <= k <= E:
        fail("k", f"1 <= k <= E={E}", str(k))
    return k


def token_mask(padding_mask, T: int, shape_doc: str = "(T,) with T from logits (True = real token)") -> np.ndarray:
    """(T,) bool, True = real token (None: all real); a copy, never the caller's array."""
    if padding_mask is None:
        return np.ones(T, dtype=bool)
    return bool_array(padding_mask, "padding_mask", shape=(T,), shape_doc=shape_doc).copy()


def preset_k(k, preset) -> None:
    """A preset with its own k (``preset.k`` not None) routes to exactly that k."""
    if preset.k is not None and k != preset.k:
        fail("k", f"k = {preset.k} (preset {preset.name!r} routes to exactly k={preset.k})", str(k))


def selection_bias(b, E: int):
    """(E,) float64 selection-only bias (DeepSeek-V3), or None."""
    if b is None:
        return None
    b = as_float_array(b, "selection_bias", ndim=1)
    if b.shape != (E,):
        fail("selection_bias", f"shape ({E},)", str(b.shape))
    return b


def convention_keywords(conventions: dict, known) -> None:
    """Keyword arguments of ``route`` beyond its own: fields of RouteOptions (``known``) only."""
    unknown = set(conventions) - set(known)
    if unknown:
        fail(", ".join(sorted(unknown)), f"keywords among the conventions {sorted(known)}",
             f"unknown keyword(s) {sorted(unknown)}", error=TypeError)


def group_options(n_groups, topk_groups) -> None:
    """RouteOptions' group-limited selection: both None, or positive ints with topk_groups <= n_groups."""
    if (n_groups is None) != (topk_groups is None):
        fail("n_groups, topk_groups", "both or neither", f"{plain(n_groups)!r} and {plain(topk_groups)!r}")
    if n_groups is None:
        return
    for name, v in (("n_groups", n_groups), ("topk_groups", topk_groups)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            fail(name, "a positive int", repr(v))
    if topk_groups > n_groups:
        fail("topk_groups", f"<= n_groups={n_groups}", str(topk_groups))


def route_groups(E: int, k: int, n_groups, topk_groups, group_score: str) -> None:
    """``route`` with group-limited selection (checked options): k fits in the eligible groups, and
    'top2_sum' has two experts per group."""
    if n_groups is None:
        return
    per_group = E // n_groups if E % n_groups == 0 else 0
    if k > topk_groups * per_group:
        fail("k", f"<= topk_groups * E / n_groups = {topk_groups * per_group}", str(k))
    _top2_groups(E, n_groups, group_score)


def _top2_groups(E: int, n_groups: int, group_score: str) -> None:
    if group_score == "top2_sum" and E // n_groups < 2:
        fail("group_score, n_groups", "at least 2 experts per group for 'top2_sum'", f"E / n_groups = {E // n_groups}")


def group_limited_inputs(sel, n_groups, topk_groups, group_score, group_scores):
    """``group_limited_scores``: sel (T, E) (-inf allowed), 1 <= topk_groups <= n_groups, n_groups | E."""
    sel = as_float_array(sel, "sel", ndim=2, allow_neg_inf=True, shape_doc="(T, E)")
    n_groups = count(n_groups, "n_groups", minimum=1)
    topk_groups = count(topk_groups, "topk_groups", minimum=1)
    if topk_groups > n_groups:  # a bound set by another argument: the message names both
        fail("topk_groups, n_groups", f"topk_groups <= n_groups = {n_groups}", str(topk_groups))
    choice(group_score, "group_score", group_scores)
    E = sel.shape[1]
    if E % n_groups:
        fail("n_groups", f"a divisor of the number of experts E = {E}", str(n_groups))
    _top2_groups(E, n_groups, group_score)
    return sel, n_groups, topk_groups


def rule_capacity(c, spec):
    """What a callable capacity rule returned: an int >= 0, or None (dropless)."""
    if c is None:
        return None
    if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
        fail("capacity", f"the capacity rule {spec!r} to return an int >= 0", repr(c))
    return int(c)


def expert_choice_capacity(capacity, T: int) -> int:
    """Expert choice's C: an int in [0, T] (each expert picks C distinct tokens)."""
    if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or not 0 <= capacity <= T:
        fail("capacity", f"an int in [0, T={T}]", repr(plain(capacity)))
    return int(capacity)


def library_capacity(c, rule: str, S: int, E: int, k: int, factor):
    """A library capacity expression's value: an int, None (dropless), or a float that must be finite."""
    if isinstance(c, float) and not np.isfinite(c):  # ints are exact (and may exceed float range)
        fail("capacity_factor", f"a capacity within float range in the {rule!r} expression (S={S}, E={E}, k={k})",
             f"{factor!r}, which leaves it")
    return None if c is None else int(c)


def python_bool(x, name: str) -> bool:
    """A Python bool (capacity's flags; a NumPy bool is refused here, as it always was)."""
    if not isinstance(x, bool):
        fail(name, "a bool", _type(x), error=TypeError)
    return x


# ---------------------------------------------------------------------------
# slots


def expert_ids(experts_in_order, num_experts) -> tuple:
    """``rank_within_expert``: (ids (n,) int64 in [0, num_experts), num_experts)."""
    num_experts = count(num_experts, "num_experts", minimum=1)
    ids = index_array(experts_in_order, "experts_in_order", ndim=1)
    if ids.size and int(ids.max()) >= num_experts:
        fail("experts_in_order", f"ids in [0, num_experts) = [0, {num_experts})", str(int(ids.max())))
    return ids, num_experts


def position_order(drop_order, orders) -> str:
    """A drop order that ranks assignments by position (one of ``orders``)."""
    if drop_order not in orders:
        fail("drop_order", "a position-based order", repr(drop_order))
    return drop_order


def drop_seed(seed, drop_order: str) -> None:
    """drop_order='random' draws its keys from an explicit seed."""
    if drop_order == "random" and seed is None:
        fail("seed", "an explicit seed with drop_order='random'", "None")


# ---------------------------------------------------------------------------
# dispatch and combine


def gather_inputs(x, sa, cls) -> np.ndarray:
    """``gather_by_expert``: x (T, D) with a row for every token ``sa`` routes."""
    instance(sa, "sa", cls, "SortedAssignments (from sort_by_expert)")
    x = as_float_array(x, "x", ndim=2, shape_doc="(T, D)")
    if sa.token.size and sa.token.max() >= x.shape[0]:
        fail("x", f"at least {sa.token.max() + 1} token rows (sa routes token {sa.token.max()})", f"shape {x.shape}")
    return x


def scatter_inputs(rows, sa, num_tokens, cls) -> tuple:
    """``scatter_combine``: rows (N, D), N = len(sa.token), and num_tokens > every token sa routes
    (the (num_tokens, D) output within the budget)."""
    instance(sa, "sa", cls, "SortedAssignments (from sort_by_expert)")
    N = sa.token.shape[0]
    rows = as_float_array(rows, "rows", shape=(N, None), shape_doc="(N, D) with N = len(sa.token)")
    num_tokens = count(num_tokens, "num_tokens")
    if N and sa.token.max() >= num_tokens:
        fail("num_tokens", f"> {sa.token.max()} (sa routes that token)", str(num_tokens))
    check_budget("num_tokens, rows", shape=(num_tokens, rows.shape[1]), what=f"an output of {num_tokens} tokens")
    return rows, num_tokens


# ---------------------------------------------------------------------------
# experts

EXPERT_ACTIVATIONS = ("relu", "gelu", "silu")


def expert_activation(name) -> str:
    if name not in EXPERT_ACTIVATIONS:
        fail("activation", "'relu', 'gelu' or 'silu'", repr(name))
    return name


def expert_rows(x, D: int) -> np.ndarray:
    """An expert's input: rows x (N, D) with D the expert's d_model."""
    x = as_float_array(x, "x", ndim=2)
    if x.shape[1] != D:
        fail("x", f"shape (N, {D})", str(x.shape))
    return x


def ffn_expert_weights(W1, W2, b1, b2, act) -> tuple:
    """FFNExpert: W1 (D, H), W2 (H, D), b1 (H,) or None, b2 (D,) or None, act an expert activation."""
    W1 = as_float_array(W1, "W1", ndim=2)
    W2 = as_float_array(W2, "W2", ndim=2)
    if W2.shape != (W1.shape[1], W1.shape[0]):
        fail("W2", f"shape {(W1.shape[1], W1.shape[0])} for W1 {W1.shape}", str(W2.shape))
    expert_activation(act)
    biases = []
    for name, b, n in (("b1", b1, W1.shape[1]), ("b2", b2, W1.shape[0])):
        if b is not None:
            b = as_float_array(b, name, ndim=1)
            if b.shape != (n,):
                fail(name, f"shape ({n},)", str(b.shape))
        biases.append(b)
    return W1, W2, biases[0], biases[1]


def swiglu_expert_weights(Wg, Wu, Wd) -> tuple:
    """SwiGLUExpert: Wg, Wu (D, H), Wd (H, D)."""
    Wg = as_float_array(Wg, "Wg", ndim=2)
    Wu = as_float_array(Wu, "Wu", ndim=2)
    Wd = as_float_array(Wd, "Wd", ndim=2)
    if Wu.shape != Wg.shape or Wd.shape != (Wg.shape[1], Wg.shape[0]):
        fail("Wg, Wu, Wd", "shapes (D, H), (D, H), (H, D)", f"{Wg.shape}, {Wu.shape}, {Wd.shape}")
    return Wg, Wu, Wd


# ---------------------------------------------------------------------------
# losses


def token_groups(groups, T: int) -> int:
    """``groups``: a count that divides the number of tokens T (equal consecutive groups)."""
    groups = count(groups, "groups", minimum=1)
    if T % groups:
        fail("groups", f"a divisor of the number of tokens T = {T}", str(groups))
    return groups


def layer_routings(routings) -> list:
    """``balance_loss_layers``: a non-empty sequence of Routings with one (E, k)."""
    if isinstance(routings, (str, bytes)) or not hasattr(routings, "__iter__"):
        fail("routings", "a sequence of Routing", _type(routings), error=TypeError)
    routings = [_routing(r, f"routings[{i}]") for i, r in enumerate(routings)]
    if not routings:
        fail("routings", "at least one Routing", "none")
    shape = (routings[0].num_experts, routings[0].k)
    for i, r in enumerate(routings):
        if (r.num_experts, r.k) != shape:
            fail(f"routings[{i}]", f"(E, k) = {shape} as routings[0]", str((r.num_experts, r.k)))
    return routings


def cv_inputs(x, eps, name: str = "x") -> tuple:
    """CV^2's x (n,), n >= 1, scaled into float64 range for the squares (CV^2 is scale invariant
    up to eps, which is scaled alike), and eps >= 0, not both zero."""
    x = as_float_array(x, name, ndim=1, shape_doc="(n,)", min_size={0: 1})
    eps = real_number(eps, "eps", minimum=0.0)
    a = float(np.abs(x).max())
    if a > 1e150 or 0 < a < 1e-150:  # x^2 or eps would leave float64 range or lose eps
        fail(name, "max |x| in [1e-150, 1e150] (or 0) so that x^2 and eps stay in float64 range", f"{a:g}")
    if a == 0 and eps == 0:
        fail("x, eps", "eps > 0 or a non-zero x (CV^2 of all-zero x is 0 / 0 with eps = 0)", "both zero")
    return x, eps


def importance(gates) -> np.ndarray:
    """Importance_e = sum_t G_te (E,) of gates (T, E), E >= 1; a column sum beyond float64 is refused
    by name (the gates themselves may all be finite)."""
    G = as_float_array(gates, "gates", ndim=2, shape_doc="(T, E)", min_size={1: 1})
    with np.errstate(over="ignore"):
        total = G.sum(axis=0)
    if not np.isfinite(total).all():
        fail("gates", "column sums (the importance) within float64 range", "a column sum beyond float64")
    return total


def z_loss_inputs(logits, padding_mask) -> tuple:
    """logits (T, E), E >= 1, and the (T,) bool padding mask (z_loss and z_loss_grad)."""
    z = router_logits(logits)
    return z, token_mask(padding_mask, z.shape[0], "(T,) with T from logits")


def noisy_logits(clean_logits, noise_stddev) -> tuple:
    """clean (T, E), E >= 1, and noise_stddev (T, E) > 0 (softplus output)."""
    clean = as_float_array(clean_logits, "clean_logits", ndim=2, shape_doc="(T, E)", min_size={1: 1})
    std = as_float_array(noise_stddev, "noise_stddev", shape=clean.shape, shape_doc="(T, E) as clean_logits")
    if (std <= 0).any():
        fail("noise_stddev", "positive entries (softplus output)", repr(float(np.min(std))))
    return clean, std


def noisy_gating_inputs(clean_logits, noise_stddev, noise, k) -> tuple:
    """``noisy_top_k_gating``: clean, noise_stddev, noise (T, E); 1 <= k <= E."""
    clean, std = noisy_logits(clean_logits, noise_stddev)
    eps = as_float_array(noise, "noise", shape=clean.shape, shape_doc="(T, E) as clean_logits")
    return clean, std, eps, experts_per_token(k, clean.shape[1])


def kth_k(k, E: int) -> int:
    """k of the load loss's kth_excluding: 1 <= k < E (another expert holds the k-th place)."""
    k = count(k, "k", minimum=1)
    _below_experts(k, E)
    return k


def _below_experts(k: int, E: int) -> None:
    if not 1 <= k < E:
        fail("k", f"1 <= k < E = {E} (the load loss)", str(k))


def load_inputs(clean_logits, noisy_logits_, noise_stddev, k) -> tuple:
    """load_probabilities, load_loss, load_loss_grad: clean, H, std (T, E), std > 0, 1 <= k < E."""
    clean, std = noisy_logits(clean_logits, noise_stddev)
    H = as_float_array(noisy_logits_, "noisy_logits", shape=clean.shape, shape_doc="(T, E) as clean_logits")
    E = clean.shape[1]
    k = count(k, "k", minimum=1, maximum=max(E - 1, 1), what=f"the load loss needs 1 <= k < E={E}")
    _below_experts(k, E)
    return clean, H, std, k
