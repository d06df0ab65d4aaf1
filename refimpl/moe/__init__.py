"""Mixture of experts: routing, capacity, losses, dispatch/combine, forward, gradients, presets.

Modules (each readable on its own):

    router         route(): scores, top-k, capacity slots, dropping, gates -> Routing
    capacity       capacity(): slots per expert, every rounding rule named
    presets        the conventions of Switch/Mesh TF, flaxformer, GShard, DeepSpeed,
                   fairseq, Mixtral, Qwen2-MoE, DeepSeek-V2/V3, Megablocks, Tutel
    losses         product balance loss (variants), CV^2, z-loss, Shazeer 2017 losses
    dispatch       GShard dense dispatch/combine tensors; sorted (Megablocks) layout
    experts        FFN and SwiGLU experts with explicit weights
    forward        moe_forward (sparse / dense tensors) and the dense definition
    grads          exact Jacobians and VJPs; loss gradients
    expert_choice  expert-choice routing (Zhou et al. 2022)
    reroute        dropped assignments moved to a backup expert (docs/notes.md#expert-parallel)

The router takes raw logits (T, E), never probabilities.
"""

from . import presets
from .capacity import CapacityRule, capacity
from .dispatch import (SortedAssignments, combine_dense, dispatch_combine_tensors, dispatch_dense,
                       gather_by_expert, scatter_combine, sort_by_expert)
from .expert_choice import ExpertChoiceRouting, expert_choice_forward, route_expert_choice
from .experts import FFNExpert, SwiGLUExpert, random_experts
from .forward import apply_experts, dense_moe_forward, gate_matrix, moe_definition, moe_forward, router_logits
from .grads import (balance_loss_grad, cv_squared_grad, gate_jacobian, gate_jacobian_of, gate_vjp,
                    importance_loss_grad, load_loss_grad, moe_vjp, output_logit_jacobian,
                    score_jacobian, z_loss_grad)
from .losses import (BalanceLoss, NoisyTopK, balance_loss, balance_loss_layers, cv_squared,
                     cv_squared_loss, importance_loss, load_loss, load_probabilities,
                     mean_probabilities, noisy_top_k_gating, product_balance_loss,
                     routing_fractions, z_loss)
from .presets import Preset
from .reroute import reroute_dropped
from .router import Routing, RouteOptions, route, router_scores, top_k

__all__ = [
    "BalanceLoss", "CapacityRule", "ExpertChoiceRouting", "FFNExpert", "NoisyTopK", "Preset",
    "RouteOptions", "Routing", "SortedAssignments", "SwiGLUExpert", "apply_experts", "balance_loss",
    "balance_loss_grad", "balance_loss_layers", "capacity", "combine_dense", "cv_squared",
    "cv_squared_grad", "cv_squared_loss", "dense_moe_forward", "dispatch_combine_tensors", "moe_definition",
    "dispatch_dense", "expert_choice_forward", "gate_jacobian", "gate_jacobian_of", "gate_matrix",
    "gate_vjp", "gather_by_expert", "importance_loss", "importance_loss_grad", "load_loss",
    "load_loss_grad", "load_probabilities", "mean_probabilities", "moe_forward", "moe_vjp",
    "noisy_top_k_gating", "output_logit_jacobian", "presets", "product_balance_loss",
    "random_experts", "reroute_dropped", "route", "route_expert_choice", "router_logits", "router_scores",
    "routing_fractions", "scatter_combine", "score_jacobian", "sort_by_expert", "top_k", "z_loss",
    "z_loss_grad",
]
