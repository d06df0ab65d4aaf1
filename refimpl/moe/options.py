"""Routing's shared types: the convention names, ``RouteOptions`` and the ``Routing`` result.

The bottom layer of ``refimpl.moe``'s routing (``router`` and ``presets`` build on it and
re-export it; it imports neither). Importing it registers ``Routing`` with ``refimpl._validate``
so that ``_validate.routing`` (every function taking a routing checks it) stays a leaf.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import numpy as np

from .. import _validate as V
from .._validate import moe as VM
from .capacity import CapacityRule
from .select import SCORES

NORMALIZE = ("none", "before_drop", "after_drop")
DROP_ORDERS = ("k_major", "token_major", "priority", "per_expert_top_prob",
               "per_expert_top_masked_logit", "random")
GROUP_SCORES = ("max", "top2_sum")

CapacitySpec = Union[None, int, CapacityRule, Callable[[int, int, int], int]]


@dataclasses.dataclass(frozen=True)
class Routing:
    """The result of :func:`route`. Arrays are float64, int64 or bool.

    probs:    (T, E) router scores: softmax probabilities (or sigmoid scores)
    indices:  (T, k) int64 selected experts, by selection score descending
    gates:    (T, k) combine weights after normalisation, dropping, route_scale
    kept:     (T, k) bool, the assignment got a slot
    position: (T, k) int64 slot in the expert's buffer, -1 where not kept
    capacity: slots per expert, or None (dropless)
    counts:   (E,) int64 assignments per expert before dropping
    token_mask: (T,) bool, False for padding tokens
    options:  the RouteOptions used
    """

    probs: np.ndarray
    indices: np.ndarray
    gates: np.ndarray
    kept: np.ndarray
    position: np.ndarray
    capacity: Optional[int]
    counts: np.ndarray
    token_mask: np.ndarray
    options: "RouteOptions"

    @property
    def num_tokens(self) -> int:
        return self.probs.shape[0]

    @property
    def num_experts(self) -> int:
        return self.probs.shape[1]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @property
    def kept_counts(self) -> np.ndarray:
        """(E,) assignments per expert after dropping."""
        return np.bincount(self.indices[self.kept], minlength=self.num_experts).astype(np.int64)

    @property
    def num_dropped(self) -> int:
        return int(self.counts.sum() - self.kept.sum())


@dataclasses.dataclass(frozen=True)
class RouteOptions:
    """Every routing convention, named, with the spec's default.

    score:       "softmax" | "sigmoid"
    normalize:   "none" | "before_drop" | "after_drop"
    capacity:    None (dropless) | int | CapacityRule or callable(tokens, experts, k) -> int
    drop_order:  "k_major" | "token_major" | "priority" | "per_expert_top_prob" | "random"
    route_scale: multiplies the gates last
    normalize_eps: added to the renormalisation denominator
    normalize_top1: whether a renormalisation applies when k = 1 (Tutel's
                 extract_critical renormalises only for k > 1, so its top-1 gate
                 stays the raw probability; with True a top-1 gate is 1)
    n_groups, topk_groups, group_score: group-limited selection (None: off)
    """

    score: str = "softmax"
    normalize: str = "none"
    capacity: CapacitySpec = None
    drop_order: str = "k_major"
    route_scale: float = 1.0
    normalize_eps: float = 0.0
    normalize_top1: bool = True
    n_groups: Optional[int] = None
    topk_groups: Optional[int] = None
    group_score: str = "max"

    def __post_init__(self):
        for name, allowed in (("score", SCORES), ("normalize", NORMALIZE),
                              ("drop_order", DROP_ORDERS), ("group_score", GROUP_SCORES)):
            V.choice(getattr(self, name), name, allowed)
        c = self.capacity
        if c is not None and not callable(c):
            V.count(c, "capacity", maximum=None, what="or None, or a callable rule")
        V.real_number(self.route_scale, "route_scale", minimum=0.0, min_open=True)
        V.real_number(self.normalize_eps, "normalize_eps", minimum=0.0)
        V.flag(self.normalize_top1, "normalize_top1")
        VM.group_options(self.n_groups, self.topk_groups)


V.register_class("Routing", Routing, "refimpl.moe.Routing (the result of refimpl.moe.route)")
