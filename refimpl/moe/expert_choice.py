"""Expert-choice routing (Zhou et al. 2022): each expert picks its C tokens.

    p = softmax(z) over experts (T, E)
    for each expert e: token_index[e, :] = the C tokens with the largest p[:, e],
    descending, ties to the lower token index; gates[e, c] = p[token_index[e, c], e]
    y_t = sum over (e, c) with token_index[e, c] = t of gates[e, c] FFN_e(x_t)

Every expert processes exactly C tokens (perfect load balance by construction);
a token may be picked by 0..E experts. C = capacity(T, E, k=1, factor=c) with c
the "capacity factor" (the paper's average experts per token); flaxformer
``ExpertsChooseMaskedRouter`` (routing.py) does the same with jax.lax.top_k
over the token axis.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from .. import _validate as V
from .._validate import moe as VM
from .select import _router_scores


@dataclasses.dataclass(frozen=True)
class ExpertChoiceRouting:
    """probs (T, E); token_index (E, C) int64; gates (E, C); token_counts (T,) experts per token."""

    probs: np.ndarray
    token_index: np.ndarray
    gates: np.ndarray
    token_counts: np.ndarray


def route_expert_choice(logits, capacity) -> ExpertChoiceRouting:
    """Each expert picks its ``capacity`` tokens (module docstring). logits (T, E) raw, finite;
    capacity an int in [0, T]. Routing setup as ``route``'s (``refimpl._validate.moe.router_logits``)."""
    z = VM.router_logits(logits)
    T = z.shape[0]
    capacity = VM.expert_choice_capacity(capacity, T)
    p = _router_scores(z, "softmax")
    token_index = np.argsort(-p.T, axis=-1, kind="stable")[:, :capacity].astype(np.int64)
    gates = np.take_along_axis(p.T, token_index, axis=-1)
    token_counts = np.bincount(token_index.ravel(), minlength=T).astype(np.int64)
    return ExpertChoiceRouting(probs=p, token_index=token_index, gates=gates, token_counts=token_counts)


def expert_choice_forward(x, routing: ExpertChoiceRouting, experts) -> np.ndarray:
    V.instance(routing, "routing", ExpertChoiceRouting, "ExpertChoiceRouting (from route_expert_choice)")
    T, E = routing.probs.shape
    x = V.as_float_array(x, "x", shape=(T, None), shape_doc="(T, D) with T from routing")
    experts = V.experts(experts, "experts", E, x.shape[1])
    y = np.zeros_like(x)
    for e, expert in enumerate(experts):
        idx = routing.token_index[e]
        if idx.size:
            np.add.at(y, idx, routing.gates[e][:, None] * expert(x[idx]))
    return V.finite_result(y, "an output", "x, experts")
