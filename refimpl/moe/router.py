"""Token-choice routing: scores, top-k, capacity slots, dropping, gates.

The router takes **raw logits** z (T, E), one row per token, one column per
expert (z = x W_g^T, W_g of shape (E, D)). It never takes probabilities: a softmax applied to
probabilities (a "double softmax") flattens the distribution and is a real bug
this spec's properties catch.

For each token t (docs/notes.md#moe-router; names follow the notes):

    p_t   = softmax(z_t)                 score="softmax" (float64)
          = sigmoid(z_t)                 score="sigmoid" (DeepSeek-V3)
    s_t   = p_t + b                      selection score; the bias b
                                         (selection_bias, DeepSeek-V3) steers
                                         selection only, never the gates
    T_t   = top-k(s_t)                   indices[t, j], j = 0..k-1, by s
                                         descending, ties to the lower expert id
    w_tj  = p_t[indices[t, j]]           raw gate

Group-limited selection (DeepSeek-V2 ``group_limited_greedy``, DeepSeek-V3):
the E experts form ``n_groups`` consecutive groups of E / n_groups; a group's
score is the max (``group_score="max"``) or the sum of the two largest
(``"top2_sum"``) selection scores in it; only the ``topk_groups`` best groups
(ties to the lower group id) are eligible for the top-k.

Capacity and dropping. Every (token, choice) pair is an *assignment* of the
token to expert ``indices[t, j]``. ``counts[e]`` is the number of assignments to
e before dropping. With capacity C, each expert keeps at most C assignments;
``drop_order`` says which:

    k_major              all first choices in token order, then all second
                         choices, ... (GShard, Switch, DeepSpeed top-2, fairseq);
                         position = number of earlier assignments to the same
                         expert in that order; kept iff position < C.
    token_major          token 0's choices, then token 1's, ... (DeepSpeed
                         top-k "position", Megablocks); same position rule.
    priority             batch prioritized routing (BPR, Riquelme et al. 2021):
                         k_major over tokens sorted by max_e p_te descending
                         (ties: lower token index first); same position rule.
    per_expert_top_prob  each expert keeps the C assignments with the highest
                         p_te (ties: lower token index); positions then count
                         kept assignments in token order (DeepSpeed top-k
                         drop_policy="probs" as docs/conventions.md#moe-presets reads it; the
                         next order is what its code computes).
    per_expert_top_masked_logit
                         what DeepSpeed ``topkgating(drop_policy="probs")``
                         actually computes: each expert ranks the column
                         z[:, e] with unselected entries replaced by 0
                         (``topk_masked_gates`` holds *logits*, zero-filled)
                         and keeps an assignment iff fewer than C entries of
                         that column rank before it (ties: lower token index).
                         A selected token with a negative logit can lose its
                         slot to unselected zeros even when the expert is not
                         full. Positions as for per_expert_top_prob.
    random               each expert keeps the C assignments with the highest
                         uniform random key drawn from ``seed``; positions as
                         for per_expert_top_prob (DeepSpeed random token
                         selection; its own RNG cannot be reproduced).

``position`` is the slot in the expert's buffer (-1 where dropped); with
``capacity=None`` (dropless) nothing is dropped and positions still follow the
order. Tokens masked out by ``padding_mask`` make no assignments: they are not
counted, take no slot, have kept False, gate 0 and position -1 (their top-k
``indices`` are still reported).

Gates. ``normalize`` (docs/errata.md#e14: both forms exist, each is named):

    none         g_tj = w_tj * kept_tj                        (Switch, DeepSeek-V2)
    before_drop  g_tj = w_tj / sum_i w_ti * kept_tj           (GShard legacy, Tutel)
    after_drop   g_tj = w_tj kept_tj / sum_i w_ti kept_ti     (DeepSpeed top-2, fairseq)

The denominator is sum + ``normalize_eps`` (0 by default; lingvo adds 1e-9,
DeepSeek-V2 1e-20). Then g *= route_scale (DeepSeek-V2 16, DeepSeek-V3 2.5).
A denominator of 0 (every choice dropped, or sigmoid scores that underflowed)
gives gates 0, never NaN. Without dropping, before_drop and after_drop coincide
(Mixtral's renormalisation). With ``normalize_top1=False`` a k = 1 routing is
not renormalised (Tutel): ``Routing.options`` records the options applied.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .._parallel import map_blocks
from .. import _validate as V
from .._validate import moe as VM
from .capacity import CapacityRule
from .options import (DROP_ORDERS, GROUP_SCORES, NORMALIZE, SCORES, CapacitySpec, RouteOptions,  # noqa: F401 (API)
                      Routing)
from .presets import get as _get_preset
from .select import _router_scores, _top_k, router_scores, top_k  # noqa: F401 (API)
from .slots import POSITION_ORDERS, assign_slots, assignment_order, rank_within_expert  # noqa: F401 (part of the API)



# ---------------------------------------------------------------------------
# the steps of route(), each a small function


def group_limited_scores(sel: np.ndarray, n_groups: int, topk_groups: int, group_score: str) -> np.ndarray:
    """Selection scores with experts outside the ``topk_groups`` best groups set to -inf.

    Groups are consecutive blocks of E / n_groups experts. Group score: the max
    (DeepSeek-V2 ``group_limited_greedy``) or the sum of the two largest scores
    (DeepSeek-V3 ``Gate.forward`` with a bias) in the group.
    """
    sel, n_groups, topk_groups = VM.group_limited_inputs(sel, n_groups, topk_groups, group_score, GROUP_SCORES)
    return _group_limited_scores(sel, n_groups, topk_groups, group_score)


def _group_limited_scores(sel: np.ndarray, n_groups: int, topk_groups: int, group_score: str) -> np.ndarray:
    """``group_limited_scores`` on checked arguments (route calls this one: ``route_setup`` checked them)."""
    T, E = sel.shape
    grouped = sel.reshape(T, n_groups, E // n_groups)
    if group_score == "max":
        gscore = grouped.max(axis=-1)
    else:
        gscore = -np.sort(-grouped, axis=-1)[..., :2].sum(axis=-1)
    chosen = _top_k(gscore, topk_groups)  # (T, topk_groups)
    eligible = np.zeros((T, n_groups), dtype=bool)
    np.put_along_axis(eligible, chosen, True, axis=-1)
    return np.where(np.repeat(eligible, E // n_groups, axis=-1), sel, -np.inf)


def normalize_gates(raw: np.ndarray, kept: np.ndarray, normalize: str, eps: float = 0.0) -> np.ndarray:
    """Gates (T, k) from raw gates w = p[t, indices] and the kept mask (module docstring)."""
    V.choice(normalize, "normalize", NORMALIZE)
    if normalize == "none":
        return np.where(kept, raw, 0.0)
    if normalize == "before_drop":
        num, den = raw, raw.sum(axis=-1, keepdims=True)
    else:  # "after_drop"
        num = np.where(kept, raw, 0.0)
        den = num.sum(axis=-1, keepdims=True)
    den = den + eps
    safe = np.where(den > 0, den, 1.0)
    return np.where(kept & (den > 0), num / safe, 0.0)


def resolve_capacity(spec: CapacitySpec, tokens: int, experts: int, k: int) -> Optional[int]:
    if spec is None:
        return None
    if callable(spec):  # a rule may decide "dropless" (None: Megablocks, Tutel with factor 0)
        return VM.rule_capacity(spec(tokens, experts, k), spec)
    return int(spec)


# ---------------------------------------------------------------------------


_SELECT_CHUNK = 2**16  # router scores per chunk of tokens in route()
_SELECT_WORK_PER_SCORE = 32  # an exp, a division and a partition step, in multiply-add equivalents


_CONVENTIONS = frozenset(f.name for f in dataclasses.fields(RouteOptions))
_DEFAULT_OPTIONS = RouteOptions()  # frozen: shared, validated once


def resolve_options(preset=None, capacity_factor=None, **conventions) -> RouteOptions:
    """RouteOptions from a preset (name or Preset), overridden by explicit conventions.

    ``capacity_factor`` replaces the factor of the capacity rule in force (the
    spec's default rule ``CapacityRule()`` if the capacity is None or an int); a
    rule without a factor (fairseq's 2 * ceil(S / E)) refuses it.
    """
    VM.convention_keywords(conventions, _CONVENTIONS)
    base = _DEFAULT_OPTIONS
    if preset is not None:
        base = _get_preset(preset).options
    opts = dataclasses.replace(base, **conventions)
    if capacity_factor is not None:
        rule = opts.capacity
        if rule is None or not callable(rule):
            rule = CapacityRule()
        factor = V.capacity_factor(capacity_factor, rule)  # the one check: a real >= 0 the rule can take
        opts = dataclasses.replace(opts, capacity=rule.with_factor(factor))
    return opts


def effective_options(opts: RouteOptions, k: int) -> RouteOptions:
    """The options actually applied for this k: normalize becomes "none" when k = 1
    and ``normalize_top1`` is False. Routing.options records these."""
    V.instance(opts, "opts", RouteOptions, "refimpl.moe.RouteOptions")
    return _effective_options(opts, V.count(k, "k", minimum=1))


def _effective_options(opts: RouteOptions, k: int) -> RouteOptions:
    """``effective_options`` on checked arguments (route's)."""
    if k == 1 and not opts.normalize_top1 and opts.normalize != "none":
        return dataclasses.replace(opts, normalize="none")
    return opts


@dataclasses.dataclass(frozen=True)
class RouteSetup:
    """``route``'s arguments, validated once (``route_setup``), for ``route`` and the gpu facade.

    logits:         (T, E) float64
    k:              experts per token, 1 <= k <= E (a preset's own k enforced)
    options:        the RouteOptions in force (preset, then explicit conventions and
                    capacity_factor; before ``effective_options``)
    token_mask:     (T,) bool, a copy (True = real token)
    selection_bias: (E,) float64 or None
    """

    logits: np.ndarray
    k: int
    options: RouteOptions
    token_mask: np.ndarray
    selection_bias: Optional[np.ndarray]


def route_setup(logits, k, *, preset=None, padding_mask=None, selection_bias=None, capacity_factor=None,
                **conventions) -> RouteSetup:
    """Validate ``route``'s arguments: the one routing setup, shared by ``route`` and
    ``gpu.api.prepare_route`` (``route_expert_choice`` and the losses on logits check their logits
    and padding mask with the same validators, ``refimpl._validate.moe``). The preset is looked up once."""
    if preset is not None:
        preset = _get_preset(preset)
        VM.preset_k(k, preset)
    opts = resolve_options(preset, capacity_factor=capacity_factor, **conventions)
    z = VM.router_logits(logits)
    T, E = z.shape
    k = VM.experts_per_token(k, E)
    token_mask = VM.token_mask(padding_mask, T)
    b = VM.selection_bias(selection_bias, E)
    VM.route_groups(E, k, opts.n_groups, opts.topk_groups, opts.group_score)
    return RouteSetup(logits=z, k=k, options=opts, token_mask=token_mask, selection_bias=b)


def route(logits, k, *, preset=None, padding_mask=None, selection_bias=None,
          capacity_factor=None, seed=None, **conventions) -> Routing:
    """Route T tokens to k of E experts each. See the module docstring for the formulas.

    logits:         (T, E) raw router logits (not probabilities), finite
    k:              experts per token, 1 <= k <= E
    preset:         a name from ``refimpl.moe.presets`` (or a Preset): its conventions
    padding_mask:   (T,) bool, True for real tokens (default: all real)
    selection_bias: (E,) added to the scores for selection only (DeepSeek-V3)
    capacity_factor: replaces the factor of the capacity rule
    seed:           for drop_order="random"
    **conventions:  any field of :class:`RouteOptions` (score, normalize,
                    capacity, drop_order, route_scale, n_groups, topk_groups,
                    group_score, normalize_eps, normalize_top1); explicit values
                    override the preset's.
                    Defaults: softmax, normalize="none", capacity=None
                    (dropless), drop_order="k_major", route_scale=1.

    Returns a :class:`Routing`. Inputs are not modified.
    """
    setup = route_setup(logits, k, preset=preset, padding_mask=padding_mask, selection_bias=selection_bias,
                        capacity_factor=capacity_factor, **conventions)
    z, k, token_mask, b = setup.logits, setup.k, setup.token_mask, setup.selection_bias
    T, E = z.shape
    opts = _effective_options(setup.options, k)

    def select(ts: slice):  # scores and selection are per token: chunks of tokens, on threads
        p = _router_scores(z[ts], opts.score)
        sel = p if b is None else p + b
        if opts.n_groups is not None:
            sel = _group_limited_scores(sel, opts.n_groups, opts.topk_groups, opts.group_score)
        return p, _top_k(sel, k)

    rows = max(1, _SELECT_CHUNK // E)
    parts = map_blocks(select, [slice(a, a + rows) for a in range(0, T, rows)] or [slice(0, 0)],
                       work=_SELECT_WORK_PER_SCORE * T * E)
    probs = np.concatenate([p for p, _ in parts])
    indices = np.concatenate([i for _, i in parts])

    counts = np.bincount(indices[token_mask].ravel(), minlength=E).astype(np.int64)
    C = resolve_capacity(opts.capacity, T, E, k)
    kept, position = assign_slots(indices, token_mask, E, C, opts.drop_order, probs, seed, logits=z)

    raw = np.take_along_axis(probs, indices, axis=-1)
    gates = normalize_gates(raw, kept, opts.normalize, opts.normalize_eps) * opts.route_scale

    return Routing(probs=probs, indices=indices, gates=gates, kept=kept, position=position,
                   capacity=C, counts=counts, token_mask=token_mask, options=opts)
