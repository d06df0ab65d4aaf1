"""Rerouting dropped assignments to a backup expert (docs/notes.md#expert-parallel).

The notes name two fates for the assignments over an expert's capacity:
dropping (Switch) and rerouting, which sends the excess to a backup expert.
This module pins rerouting as a second pass after :func:`route`'s dropping:

    fill[e] = kept assignments of e after dropping              (<= C)
    for each dropped assignment (t, j), in the order that claimed slots
    (the drop order's sequence for k_major / token_major / priority, token-major otherwise):
        backups = experts not among t's k choices, by score p_t descending (ties: lower id)
        e' = the first backup with fill[e'] < C;  if none: (t, j) stays dropped
        indices[t, j] = e',  kept[t, j] = True,  position[t, j] = fill[e'],  fill[e'] += 1

Gates are then recomputed with the routing's own rule from the final choices
(``normalize_gates`` on the raw scores p_t[indices[t, j]], times route_scale):
the rerouted choice weighs with its backup expert's score, as if the router
had chosen it. ``Routing.counts`` keeps the first-pass demand. A dropless
routing (capacity None) has nothing to reroute. Each dropped assignment gets
one backup at most; a backup never receives more than C assignments.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import routing as _check_routing
from .router import POSITION_ORDERS, assignment_order, normalize_gates


def reroute_dropped(routing):
    """The routing with each dropped assignment moved to its best backup expert with a free slot."""
    routing = _check_routing(routing)
    C = routing.capacity
    if C is None:
        return routing
    T, k = routing.indices.shape
    order = routing.options.drop_order
    if order in POSITION_ORDERS:
        t_seq, j_seq = assignment_order(routing.indices, routing.token_mask, order, routing.probs)
    else:
        t_seq, j_seq = np.nonzero(routing.token_mask[:, None] & np.ones((1, k), dtype=bool))
    indices, kept, position = routing.indices.copy(), routing.kept.copy(), routing.position.copy()
    fill = routing.kept_counts.copy()
    rank = np.argsort(-routing.probs, axis=-1, kind="stable")  # experts by score, ties to the lower id
    for t, j in zip(t_seq, j_seq):
        if kept[t, j]:
            continue
        for e in rank[t]:
            if e not in indices[t] and fill[e] < C:
                indices[t, j], kept[t, j], position[t, j] = e, True, fill[e]
                fill[e] += 1
                break
    opts = routing.options
    raw = np.take_along_axis(routing.probs, indices, axis=-1)
    gates = normalize_gates(raw, kept, opts.normalize, opts.normalize_eps) * opts.route_scale
    return dataclasses.replace(routing, indices=indices, kept=kept, position=position, gates=gates)
