"""Mixture of experts: routing, capacity, losses, dispatch/combine, forward, gradients, presets.

Modules (each readable on its own):

    router      route(): scores, top-k, capacity slots, dropping, gates -> Routing
    capacity    capacity(): slots per expert, every rounding rule named
"""

from .capacity import CapacityRule, capacity
from .router import Routing, RouteOptions, route, router_scores, top_k

__all__ = ["CapacityRule", "Routing", "RouteOptions", "capacity", "route", "router_scores", "top_k"]
