"""Capacity slots: which (token, choice) assignments an expert keeps, and in which slot.

The slot-assignment step of ``refimpl.moe.route`` (its module docstring
states the drop orders): position-based orders (``POSITION_ORDERS``: an
assignment is kept iff its rank among the assignments to its expert, in
the order that claims slots, is below the capacity C) and per-expert
selections (each expert keeps its C best assignments by a key: probability,
DeepSpeed's masked logit, or a seeded random key). Ranks are GShard's
``cumsum(mask) - 1``, computed by a stable sort instead of an (n, E) one-hot.
"""

from __future__ import annotations

import numpy as np

from .._validate import moe as VM

POSITION_ORDERS = ("k_major", "token_major", "priority")  # kept iff position < C


def rank_within_expert(experts_in_order, num_experts: int) -> np.ndarray:
    """For a sequence of expert ids, the number of earlier entries with the same id
    (GShard's ``cumsum(mask) - 1`` read at each entry)."""
    return _rank_within_expert(*VM.expert_ids(experts_in_order, num_experts))


def _rank_within_expert(experts_in_order: np.ndarray, num_experts: int) -> np.ndarray:
    """``rank_within_expert`` on checked int64 ids (the routing paths call this one)."""
    # the same count by a stable sort (no (n, E) one-hot): entries of one id keep
    # their order, so an entry's rank is its place in the sorted order minus the
    # start of its id's run
    n = experts_in_order.shape[0]
    keys = experts_in_order.astype(np.int16 if num_experts <= 2**15 else np.int64)  # radix sort for int16
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(experts_in_order, minlength=num_experts)
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[experts_in_order[order]]
    return rank


def assignment_order(indices: np.ndarray, token_mask: np.ndarray, drop_order: str,
                     probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token, choice) index arrays listing the non-padding assignments in the order
    that claims slots, for the position-based drop orders."""
    VM.position_order(drop_order, POSITION_ORDERS)
    T, k = indices.shape
    if drop_order == "k_major":
        tokens = np.arange(T)
    elif drop_order == "priority":
        tokens = np.argsort(-probs.max(axis=-1), kind="stable")  # BPR: most confident first
    elif drop_order == "token_major":
        t, j = np.divmod(np.arange(T * k), k)
        keep = token_mask[t]
        return t[keep], j[keep]
    tokens = tokens[token_mask[tokens]]
    t = np.tile(tokens, k)
    j = np.repeat(np.arange(k), tokens.shape[0])
    return t, j


def assign_slots(indices, token_mask, num_experts, capacity, drop_order, probs, seed=None, logits=None):
    """(kept, position), both (T, k), for the given drop order (see module docstring)."""
    VM.drop_seed(seed, drop_order)
    T, k = indices.shape
    kept = np.zeros((T, k), dtype=bool)
    position = np.full((T, k), -1, dtype=np.int64)
    C = np.inf if capacity is None else min(capacity, T * k)  # beyond T*k nothing drops (and int64 holds it)

    if drop_order in POSITION_ORDERS:
        t, j = assignment_order(indices, token_mask, drop_order, probs)
        rank = _rank_within_expert(indices[t, j], num_experts)
        keep = rank < C
        kept[t[keep], j[keep]] = True
        position[t[keep], j[keep]] = rank[keep]
        return kept, position

    # per-expert selection: each expert keeps its C best assignments by a key
    t, j = np.nonzero(token_mask[:, None] & np.ones((1, k), dtype=bool))  # token-major
    e = indices[t, j]
    if drop_order == "per_expert_top_masked_logit":
        return _deepspeed_masked_logit_slots(indices, token_mask, num_experts, C, logits)
    if drop_order == "per_expert_top_prob":
        key = probs[t, e]
    else:  # "random"
        key = np.random.default_rng(seed).random((T, k))[t, j]
    # best key first, ties to the lower token index (t is ascending: stable sort)
    by_key = np.argsort(-key, kind="stable")
    rank_by_key = np.empty_like(by_key)
    rank_by_key[by_key] = _rank_within_expert(e[by_key], num_experts)
    keep = rank_by_key < C
    kept[t[keep], j[keep]] = True
    # slots among the kept, in token order (DeepSpeed: cumsum over the kept mask)
    position[t[keep], j[keep]] = _rank_within_expert(e[keep], num_experts)
    return kept, position


def _deepspeed_masked_logit_slots(indices, token_mask, num_experts, C, logits):
    """drop_order="per_expert_top_masked_logit" (see module docstring)."""
    T, k = indices.shape
    selected = np.zeros((T, num_experts), dtype=bool)
    t_real = np.nonzero(token_mask)[0]
    selected[np.repeat(t_real, k), indices[t_real].ravel()] = True
    column_keys = np.where(selected, logits, 0.0)  # DeepSpeed's topk_masked_gates
    kept = np.zeros((T, k), dtype=bool)
    position = np.full((T, k), -1, dtype=np.int64)
    fill = np.zeros(num_experts, dtype=np.int64)
    for t in range(T):  # token order, for the positions of the kept
        for j in range(k):
            e = indices[t, j]
            if not selected[t, e]:
                continue
            col = column_keys[:, e]
            ahead = np.count_nonzero(col > col[t]) + np.count_nonzero(col[:t] == col[t])
            if ahead < C:
                kept[t, j] = True
                position[t, j] = fill[e]
                fill[e] += 1
    return kept, position
