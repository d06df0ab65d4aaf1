"""The MoE adapter protocol (kind "moe"): ``MOE_KIND`` declares every method and
capability with its exact meaning; ``MoEAdapter`` holds only what the user supplies
(no method falls back to refimpl, no capability is declared by default);
``REFIMPL`` is the adapter of refimpl.moe itself (every method, every capability).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

import refimpl.moe as M

from . import moe_cases as C
from .protocol import Capability, Kind, Option
from .tolerance import UNIT_ROUNDOFF


MOE_KIND = Kind(
    name="moe",
    doc="Mixture-of-experts routing, capacity, losses, gradients and forward, compared with refimpl.moe "
        "(every supplied function is checked by value against the spec's, and the gradients also against "
        "finite differences). Routings are refimpl.moe.Routing objects (or any object with its fields). "
        "A lower-precision kernel declares precision (float32, bfloat16, float16; not unit_roundoff): every float "
        "output is then held to properties.precision, integers stay exact with the near-tie rule of properties.moe "
        "(competing scores closer than the precision resolves are compared by score).",
    methods={
        "route": "route(logits (T, E), k, **options of refimpl.moe.route) -> Routing. logits float64 (T, E), k int "
                 "<= E; the options the suite passes: normalize 'none' | 'before_drop' | 'after_drop', drop_order "
                 "(option drop_order), seed int (with drop_order 'random'), capacity None | int >= 0, score "
                 "'softmax' | 'sigmoid', padding_mask bool (T,) (with route.padding), and preset= for "
                 "moe_preset_uniform_balance. Routing: probs (T, E) float, indices (T, k) int64 by selection score "
                 "descending, gates (T, k) float, kept (T, k) bool, position (T, k) int64 slot (-1 if dropped), "
                 "capacity int | None, counts (E,) int64 before dropping, token_mask (T,) bool",
        "capacity": "capacity(tokens, experts, *, k, factor, k_in_capacity, rounding, min_capacity, multiple_of) -> int",
        "balance_loss": "balance_loss(routing, *, alpha, f, scale, probs, groups) -> float",
        "cv_squared": "cv_squared(x) -> float (population variance / (mean^2 + 1e-10))",
        "z_loss": "z_loss(logits) -> float: mean over tokens of logsumexp(z)^2",
        "z_loss_grad": "z_loss_grad(logits) -> (T, E)",
        "noisy_gating": "noisy_gating(clean, std, noise, k) -> NoisyTopK (gates, noisy_logits, indices)",
        "importance_loss": "importance_loss(gates) -> float",
        "load_loss": "load_loss(clean, noisy, std, k) -> float",
        "importance_loss_grad": "importance_loss_grad(noisy: NoisyTopK) -> (T, E) d/d clean",
        "load_loss_grad": "load_loss_grad(clean, noisy, std, k) -> (T, E) d/d clean",
        "gate_jacobian": "gate_jacobian(logits, k, **options) -> (Routing, J (T, k, E))",
        "output_logit_jacobian": "output_logit_jacobian(x, W, experts, k, **options) -> (Routing, dy/dz (T, D, E))",
        "moe_vjp": "moe_vjp(x, W, experts, k, dy, **options) -> (dx, dz, dW)",
        "balance_loss_grad": "balance_loss_grad(routing, logits, *, alpha, f, scale, probs) -> (T, E)",
        "moe_forward": "moe_forward(x, W, experts, k, *, layout='sparse'|'dense_tensors', **options) -> (y, Routing). "
                       "experts: refimpl.moe FFNExpert (act gelu | silu, with biases) or SwiGLUExpert objects, callable "
                       "on rows; a fused kernel reads their stacked weights with properties.moe_protocol."
                       "fused_expert_weights",
        "dispatch_combine": "dispatch_combine(routing) -> (dispatch (T, E, C) bool, combine (T, E, C))",
    },
    required=(),
    capabilities={
        "route": Capability("route() for score softmax|sigmoid, normalize none|before_drop|after_drop, capacity None "
                            "or an int, drop orders k_major and token_major (raw logits in, never probabilities)",
                            methods=("route",)),
        "route.drop_orders": Capability("route() also for the drop orders priority, per_expert_top_prob, "
                                        "per_expert_top_masked_logit and random (option drop_order)",
                                        methods=("route",)),
        "route.padding": Capability("route(padding_mask=bool (T,)): padding tokens neither counted nor kept",
                                    methods=("route",)),
        "capacity": Capability("capacity() with refimpl.moe.capacity's rule keywords, exact rational arithmetic",
                               methods=("capacity",)),
        "losses": Capability("balance_loss() for f k_hot|top1, scale E|E/k|1|1/E, probs softmax|normalized_scores, groups >= 1 dividing T",
                             methods=("balance_loss",)),
        "losses.grad": Capability("balance_loss_grad(): d balance_loss / d logits with f held constant",
                                  methods=("balance_loss_grad",)),
        "cv_squared": Capability("cv_squared(): squared coefficient of variation, population variance",
                                 methods=("cv_squared",)),
        "z_loss": Capability("z_loss(): router z-loss", methods=("z_loss",)),
        "z_loss.grad": Capability("z_loss_grad(): its gradient", methods=("z_loss_grad",)),
        "noisy_gating": Capability("noisy top-k gating (Shazeer et al. 2017) and its importance and load losses",
                                   methods=("noisy_gating", "importance_loss", "load_loss")),
        "noisy_gating.grad": Capability("gradients of the importance and load losses w.r.t. the clean logits",
                                        methods=("importance_loss_grad", "load_loss_grad")),
        "gradients": Capability("router gradients with the selection held fixed: gate Jacobian, output-logit "
                                "Jacobian, the MoE VJP", methods=("gate_jacobian", "output_logit_jacobian", "moe_vjp")),
        "forward": Capability("the MoE forward (sparse and GShard dense-tensor layouts) and dispatch/combine tensors",
                              methods=("moe_forward", "dispatch_combine")),
        "forward.fused": Capability("the MoE forward of a fused-MoE kernel: moe_forward in the sparse layout only (no "
                                    "dense-tensor layout, no dispatch/combine tensors), the experts' weights stacked "
                                    "as fused_expert_weights gives them", methods=("moe_forward",)),
    },
    options={
        "drop_order": Option("drop orders drawn (k_major and token_major with 'route', the rest with "
                             "'route.drop_orders')", C.ALL_DROP_ORDERS),
        "normalize": Option("gate normalisations drawn", C.NORMALIZE),
        "score": Option("router scores drawn", ("softmax", "sigmoid")),
        "capacity": Option("capacities drawn for route(): None (dropless), 0, or a finite int >= 1 "
                           "(decline 'zero' and 'finite' for a dropless-only router)", C.CAPACITY_KINDS),
    },
)

KINDS = (MOE_KIND,)


@dataclasses.dataclass(frozen=True)
class FusedExperts:
    """The experts' weights as a fused-MoE kernel takes them (vLLM / SGLang ``fused_experts``: one
    tensor per projection, experts stacked, rows = output features):

        gated (SwiGLU):  w1 (E, 2H, D) = [Wg^T; Wu^T] (gate rows first), w2 (E, D, H) = Wd^T,
                         h = x w1[e]^T, y_e = (silu(h[:H]) * h[H:]) w2[e]^T
        FFN:             w1 (E, H, D) = W1^T, b1 (E, H), w2 (E, D, H) = W2^T, b2 (E, D),
                         y_e = act(x w1[e]^T + b1[e]) w2[e]^T + b2[e]
    """

    w1: np.ndarray
    w2: np.ndarray
    b1: np.ndarray | None
    b2: np.ndarray | None
    activation: str  # "silu" | "gelu" (| "relu" for an FFNExpert list of that activation)
    gated: bool


def fused_expert_weights(experts) -> FusedExperts:
    """The stacked weights of ``experts`` (all refimpl.moe.SwiGLUExpert, or all FFNExpert of one
    activation, with biases on all or none). TypeError for any other list."""
    from refimpl.moe.experts import FFNExpert, SwiGLUExpert

    experts = list(experts)
    if experts and all(isinstance(e, SwiGLUExpert) for e in experts):
        return FusedExperts(np.stack([np.concatenate([e.Wg.T, e.Wu.T]) for e in experts]),
                            np.stack([e.Wd.T for e in experts]), None, None, "silu", True)
    if experts and all(isinstance(e, FFNExpert) for e in experts) and len({e.act for e in experts}) == 1:
        b1, b2 = ([e.b1 for e in experts], [e.b2 for e in experts])
        if any((b is None) != (b1[0] is None) for b in b1) or any((b is None) != (b2[0] is None) for b in b2):
            raise TypeError("experts: expected biases on every expert or on none (to stack them), got "
                            f"b1 on {sum(b is not None for b in b1)} and b2 on {sum(b is not None for b in b2)} "
                            f"of {len(experts)} experts")
        return FusedExperts(np.stack([e.W1.T for e in experts]), np.stack([e.W2.T for e in experts]),
                            None if b1[0] is None else np.stack(b1), None if b2[0] is None else np.stack(b2),
                            experts[0].act, False)
    raise TypeError("experts: expected a non-empty list of refimpl.moe SwiGLUExpert, or of FFNExpert with one "
                    f"activation, got {[type(e).__name__ for e in experts]}")


@dataclasses.dataclass(frozen=True)
class MoEAdapter:
    """An MoE adapter (``MOE_KIND``): only the methods supplied; nothing falls back to
    refimpl, and ``capabilities`` (none by default) must name each supplied group.
    ``precision`` ("float64", "float32", "bfloat16", "float16"): the arithmetic of every
    supplied function, held to ``properties.precision`` (``unit_roundoff``, the attribute
    it replaces, is still accepted with a DeprecationWarning and mapped to ``precision``)."""

    name: str
    route: Callable = None
    capacity: Callable = None
    balance_loss: Callable = None
    cv_squared: Callable = None
    z_loss: Callable = None
    z_loss_grad: Callable = None
    gate_jacobian: Callable = None
    output_logit_jacobian: Callable = None
    moe_forward: Callable = None
    dispatch_combine: Callable = None
    moe_vjp: Callable = None
    balance_loss_grad: Callable = None
    noisy_gating: Callable = None
    importance_loss: Callable = None
    importance_loss_grad: Callable = None
    load_loss: Callable = None
    load_loss_grad: Callable = None
    capabilities: frozenset = frozenset()
    kind: str = "moe"
    precision: str = "float64"
    declines: dict = dataclasses.field(default_factory=dict)
    unit_roundoff: float = None  # deprecated: use precision

    def __post_init__(self):
        if self.unit_roundoff is not None:
            object.__setattr__(self, "precision", precision_from_unit_roundoff(self.unit_roundoff, self.name))
            object.__setattr__(self, "unit_roundoff", None)


def precision_from_unit_roundoff(u, name="adapter") -> str:
    """The precision a deprecated ``unit_roundoff`` stood for (2**-53, 2**-24, 2**-8, 2**-11),
    with a DeprecationWarning; any other value is a ValueError."""
    import warnings

    by_u = {v: k for k, v in UNIT_ROUNDOFF.items()}
    if u not in by_u:
        raise ValueError(f"unit_roundoff: expected the unit roundoff of a precision (better: declare precision= one "
                         f"of {list(UNIT_ROUNDOFF)}), got {u!r} (adapter {name!r})")
    warnings.warn(f"{name}: MoEAdapter(unit_roundoff={u!r}) is deprecated; write precision={by_u[u]!r}",
                  DeprecationWarning, stacklevel=4)
    return by_u[u]


def _refimpl_output_logit_jacobian(x, W, experts, k, **options):
    z = M.router_logits(x, W)
    routing = M.route(z, k, **options)
    return routing, M.output_logit_jacobian(x, routing, z, experts)


REFIMPL = MoEAdapter(
    name="refimpl.moe", route=M.route, capacity=M.capacity, balance_loss=M.balance_loss, cv_squared=M.cv_squared,
    z_loss=M.z_loss, z_loss_grad=M.z_loss_grad, gate_jacobian=M.gate_jacobian,
    output_logit_jacobian=_refimpl_output_logit_jacobian, moe_forward=M.moe_forward,
    dispatch_combine=M.dispatch_combine_tensors, moe_vjp=M.moe_vjp, balance_loss_grad=M.balance_loss_grad,
    noisy_gating=M.noisy_top_k_gating, importance_loss=M.importance_loss, importance_loss_grad=M.importance_loss_grad,
    load_loss=M.load_loss, load_loss_grad=M.load_loss_grad, capabilities=frozenset(MOE_KIND.capabilities),
)
