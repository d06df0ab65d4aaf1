"""Mixture-of-experts properties (kind "moe"), the refimpl adapter, and the wrong
implementations each property must reject (``WRONG``, see ``properties.moe_wrong``).
This module holds the protocol's description below and the PROPERTIES table; the checks live in
``properties.moe_route_checks`` (routing, gates, capacity), ``moe_loss_checks`` (balance loss,
CV^2), ``moe_grad_checks`` (gradients against finite differences) and ``moe_forward_checks``
(sparse, fused and dense-tensor forward), their shared helpers in ``moe_check_helpers``.

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

from . import moe_cases as C
from . import moe_values, moe_wrong
from .core import Property
from .moe_protocol import KINDS, MOE_KIND, REFIMPL, MoEAdapter  # noqa: F401  (the protocol; re-exported)
from .moe_bounds import ACT_LIPSCHITZ, ACT_ULPS, _combine_rounding, _expert_rounding, _prec  # noqa: F401
from .moe_forward_checks import check_dispatch_combine, check_fused_forward, check_sparse_equals_dense
from .moe_grad_checks import (check_balance_loss_gradient, check_gate_jacobian_fd, check_k1_renormalised_no_router_gradient,
                              check_moe_vjp_fd, check_noisy_loss_gradients_fd, check_router_gradient_formula,
                              check_unselected_zero_gradient, check_z_loss_gradient_fd)
from .moe_loss_checks import (check_balance_loss_formula, check_cv_identity, check_cv_scale_invariant_zero_iff_uniform,
                              check_preset_uniform_balance)
from .moe_route_checks import (check_after_drop_renormalises_kept, check_capacity_formula, check_capacity_respected,
                               check_deterministic, check_dropless_keeps_all, check_dropped_count, check_permutation,
                               check_renormalised_sum_to_one, check_route_matches_reference, check_route_structure,
                               check_ties_to_lower_index, check_topk_softmax_commute)


BUNDLED = [REFIMPL]


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
