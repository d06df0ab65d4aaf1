"""Unit tests of refimpl.moe.route and refimpl.moe.capacity: hand-checked cases,
an independent loop formulation of every drop order, dtypes, padding, errors."""

import numpy as np
import pytest

from refimpl import softmax
from refimpl.moe import CapacityRule, capacity, route

# ---------------------------------------------------------------------------
# an independent, deliberately naive formulation: Python loops over assignments


def loop_route(z, k, C, drop_order, normalize):
    """Plain-loop restatement of the routing rules (no cumsum tricks)."""
    z = np.asarray(z, dtype=float)
    T, E = z.shape
    # the same float64 probabilities as the spec: rows that are permutations of each
    # other can differ in the last bit (summation order), which decides BPR ties
    p = softmax(z, axis=-1)
    idx = np.array([sorted(range(E), key=lambda e: (-p[t, e], e))[:k] for t in range(T)])
    C = float("inf") if C is None else C
    kept = np.zeros((T, k), bool)
    pos = -np.ones((T, k), int)
    fill = [0] * E
    if drop_order in ("k_major", "token_major", "priority"):
        if drop_order == "k_major":
            order = [(t, j) for j in range(k) for t in range(T)]
        elif drop_order == "token_major":
            order = [(t, j) for t in range(T) for j in range(k)]
        else:
            toks = sorted(range(T), key=lambda t: (-p[t].max(), t))
            order = [(t, j) for j in range(k) for t in toks]
        for t, j in order:
            e = idx[t, j]
            if fill[e] < C:
                kept[t, j] = True
                pos[t, j] = fill[e]
            fill[e] += 1
    else:  # per_expert_top_prob
        for e in range(E):
            cands = sorted([(t, j) for t in range(T) for j in range(k) if idx[t, j] == e],
                           key=lambda tj: (-p[tj[0], e], tj[0]))
            for t, j in cands[: int(min(C, len(cands)))]:
                kept[t, j] = True
        for t in range(T):
            for j in range(k):
                if kept[t, j]:
                    pos[t, j] = fill[idx[t, j]]
                    fill[idx[t, j]] += 1
    w = np.array([[p[t, idx[t, j]] for j in range(k)] for t in range(T)])
    g = np.zeros((T, k))
    for t in range(T):
        if normalize == "none":
            g[t] = w[t] * kept[t]
        elif normalize == "before_drop":
            g[t] = w[t] / w[t].sum() * kept[t]
        else:
            s = (w[t] * kept[t]).sum()
            g[t] = w[t] * kept[t] / s if s > 0 else 0.0
    return idx, kept, pos, g


@pytest.mark.parametrize("drop_order", ["k_major", "token_major", "priority", "per_expert_top_prob"])
@pytest.mark.parametrize("normalize", ["none", "before_drop", "after_drop"])
def test_route_matches_loop_formulation(drop_order, normalize):
    rng = np.random.default_rng(1234)
    for case in range(30):
        T, E = rng.integers(1, 12), rng.integers(1, 7)
        k = int(rng.integers(1, E + 1))
        # integer-valued logits make ties between experts and between tokens common
        z = rng.integers(-2, 3, size=(T, E)).astype(float) if case % 2 else rng.normal(size=(T, E))
        C = None if case % 5 == 0 else int(rng.integers(0, T + 1))
        r = route(z, k, capacity=C, drop_order=drop_order, normalize=normalize)
        idx, kept, pos, g = loop_route(z, k, C, drop_order, normalize)
        np.testing.assert_array_equal(r.indices, idx)
        np.testing.assert_array_equal(r.kept, kept)
        np.testing.assert_array_equal(r.position, pos)
        # gates: a few roundings of softmax and one division, both sides float64
        np.testing.assert_allclose(r.gates, g, rtol=1e-14, atol=1e-15)


def test_hand_checked_k_major_positions():
    # first choices fill expert 0 (3 tokens) before any second choice claims a slot
    z = np.array([[3.0, 2, 0], [3, 2, 0], [3, 0, 2], [0, 3, 2]])
    r = route(z, 2, capacity=2, drop_order="k_major", normalize="after_drop")
    np.testing.assert_array_equal(r.indices, [[0, 1], [0, 1], [0, 2], [1, 2]])
    np.testing.assert_array_equal(r.counts, [3, 3, 2])
    # expert 0: t0 slot 0, t1 slot 1, t2 dropped. expert 1: t3 (first choice) slot 0,
    # then second choices t0 slot 1, t1 dropped. expert 2: t2 slot 0, t3 slot 1.
    np.testing.assert_array_equal(r.position, [[0, 1], [1, -1], [-1, 0], [0, 1]])
    np.testing.assert_array_equal(r.kept, r.position >= 0)
    assert r.num_dropped == 2
    # token 1 and 2 keep one expert: after_drop renormalisation gives it gate 1
    np.testing.assert_allclose(r.gates[1], [1.0, 0.0])
    np.testing.assert_allclose(r.gates[2], [0.0, 1.0])
    # token_major: t0 takes e0,e1; t1 takes e0,e1; t2: e0 full -> dropped, e2 slot 0; t3: e1 full, e2 slot 1
    r2 = route(z, 2, capacity=2, drop_order="token_major")
    np.testing.assert_array_equal(r2.position, [[0, 0], [1, 1], [-1, 0], [-1, 1]])


def test_seed_001_21_1_renormalisation():
    # docs/notes.md#moe-router: p = [0.31, 0.02, 0.28, 0.05, 0.19, 0.08, 0.04, 0.03], top-2 = the notes'
    # experts "1 and 3" (1-based) = ids 0 and 2; renormalised 0.31/0.59 ~ 0.53, 0.28/0.59 ~ 0.47
    p = np.array([0.31, 0.02, 0.28, 0.05, 0.19, 0.08, 0.04, 0.03])
    r = route(np.log(p)[None], 2, normalize="after_drop")
    np.testing.assert_array_equal(r.indices, [[0, 2]])
    np.testing.assert_allclose(r.gates, [[0.31 / 0.59, 0.28 / 0.59]], rtol=1e-12)
    assert np.round(r.gates, 2).tolist() == [[0.53, 0.47]]
    raw = route(np.log(p)[None], 2, normalize="none")
    np.testing.assert_allclose(raw.gates, [[0.31, 0.28]], rtol=1e-12)


def test_dtypes_and_shapes():
    r = route(np.zeros((5, 4)), 2, capacity=1)
    assert r.indices.dtype == np.int64 and r.position.dtype == np.int64 and r.counts.dtype == np.int64
    assert r.kept.dtype == np.bool_ and r.gates.dtype == np.float64 and r.probs.dtype == np.float64
    assert r.indices.shape == r.gates.shape == r.kept.shape == r.position.shape == (5, 2)
    assert r.counts.shape == (4,) and r.capacity == 1
    # all ties: every token picks experts 0 and 1 (lower ids)
    np.testing.assert_array_equal(r.indices, np.tile([0, 1], (5, 1)))


def test_ties_to_lower_expert_id_and_extreme_logits():
    z = np.array([[5.0, 7.0, 7.0, 7.0], [1e4, -1e4, 1e4, 0.0]])
    r = route(z, 2)
    np.testing.assert_array_equal(r.indices, [[1, 2], [0, 2]])
    assert np.isfinite(r.probs).all() and np.isfinite(r.gates).all()
    np.testing.assert_allclose(r.gates[1], [0.5, 0.5])


def test_padding_tokens_take_no_slot_and_are_not_counted():
    z = np.array([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    mask = np.array([False, True, True])
    r = route(z, 1, capacity=1, padding_mask=mask)
    np.testing.assert_array_equal(r.counts, [2, 0])
    np.testing.assert_array_equal(r.kept[:, 0], [False, True, False])
    np.testing.assert_array_equal(r.position[:, 0], [-1, 0, -1])
    assert r.gates[0, 0] == 0.0
    np.testing.assert_array_equal(r.indices[0], [0])  # still reported


def test_inputs_not_mutated_and_deterministic():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 5))
    mask = rng.random(9) < 0.8
    z0, m0 = z.copy(), mask.copy()
    a = route(z, 2, capacity=2, padding_mask=mask, drop_order="priority", normalize="after_drop")
    b = route(z, 2, capacity=2, padding_mask=mask, drop_order="priority", normalize="after_drop")
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(mask, m0)
    for f in ("indices", "gates", "kept", "position", "counts", "probs"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_random_drop_order_needs_seed_and_is_reproducible():
    z = np.zeros((12, 3))
    with pytest.raises(ValueError, match="seed"):
        route(z, 1, capacity=2, drop_order="random")
    a = route(z, 1, capacity=2, drop_order="random", seed=7)
    b = route(z, 1, capacity=2, drop_order="random", seed=7)
    np.testing.assert_array_equal(a.kept, b.kept)
    assert a.kept.sum() == 2  # all 12 tokens pick expert 0, two survive
    np.testing.assert_array_equal(np.sort(a.position[a.kept]), [0, 1])


def test_group_limited_selection():
    # 4 experts in 2 groups; group {0,1} max 0.9 beats group {2,3} max 0.6 ... but with
    # top2_sum the second group (0.6+0.55) beats the first (0.9+0.0)
    s = np.array([[0.9, 0.0, 0.6, 0.55]])
    z = np.log(s / (1 - s + 1e-300) + 1e-300)  # sigmoid^-1, so sigmoid scores are s
    z = np.where(np.isfinite(z), z, -50.0)
    r_max = route(z, 2, score="sigmoid", n_groups=2, topk_groups=1, group_score="max")
    r_sum = route(z, 2, score="sigmoid", n_groups=2, topk_groups=1, group_score="top2_sum")
    np.testing.assert_array_equal(r_max.indices, [[0, 1]])
    np.testing.assert_array_equal(r_sum.indices, [[2, 3]])


def test_selection_bias_changes_selection_not_gates():
    z = np.array([[1.0, 0.5, 0.0]])
    r = route(z, 1, score="sigmoid", selection_bias=np.array([0.0, 0.0, 1.0]))
    assert r.indices[0, 0] == 2
    np.testing.assert_allclose(r.gates[0, 0], 1 / (1 + np.exp(-0.0)))


def test_capacity_seed_000_problem_3_and_rules():
    assert capacity(1024, 16, k=2, factor=1.25) == 160  # 1024*2/16 = 128 expected, *1.25
    assert capacity(1024, 16, k=2, factor=1.25, k_in_capacity=False) == 80  # the notes' other reading (docs/errata.md#e4)
    assert capacity(10, 4, factor=1.0) == 2
    assert capacity(10, 4, factor=1.0, rounding="ceil") == 3
    assert capacity(10, 4, factor=1.0, rounding="round") == 2  # 2.5 -> 2 (half to even)
    assert capacity(14, 4, factor=1.0, rounding="round") == 4  # 3.5 -> 4
    assert capacity(10, 4, factor=0.1, min_capacity=4) == 4
    assert capacity(10, 4, factor=2.0, multiple_of=4) == 8
    assert capacity(10, 4, factor=2.0, max_capacity=3) == 3
    assert capacity(0, 4) == 0
    # exact arithmetic: 0.1 * 30 / 3 is 1.0000000000000002 in one float order, floor 1
    assert capacity(30, 3, factor=0.1) == 1
    assert CapacityRule(factor=1.25)(1024, 16, 2) == 160
    assert CapacityRule(factor=4.0, cap_at_tokens=True)(8, 2, 1) == 8


def test_capacity_factor_keyword_replaces_the_factor():
    z = np.zeros((8, 4))
    r = route(z, 1, capacity_factor=1.0)  # spec default rule: floor(1 * 1 * 8 / 4) = 2
    assert r.capacity == 2
    r = route(z, 2, capacity=CapacityRule(factor=1.0, rounding="ceil"), capacity_factor=1.5)
    assert r.capacity == 6  # ceil(1.5 * 2 * 8 / 4)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(k=0), ValueError, "k: expected 1 <= k"),
        (dict(k=5), ValueError, "k: expected 1 <= k"),
        (dict(k=1.5), TypeError, "k: expected an int"),
        (dict(k=1, normalize="after"), ValueError, "normalize"),
        (dict(k=1, drop_order="fifo"), ValueError, "drop_order"),
        (dict(k=1, capacity=-1), ValueError, "capacity"),
        (dict(k=1, capacity=2.5), TypeError, "capacity"),
        (dict(k=1, capacity_factor=-1.0), ValueError, "factor"),
        (dict(k=1, capacity_factor=float("inf")), ValueError, "factor"),
        (dict(k=1, capacity_factor=float("nan")), ValueError, "factor"),
        (dict(k=1, padding_mask=np.ones(3)), TypeError, "padding_mask"),
        (dict(k=1, selection_bias=np.zeros(3)), ValueError, "selection_bias"),
        (dict(k=1, renormalize="none"), TypeError, "unknown keyword"),
        (dict(k=1, n_groups=3, topk_groups=1), ValueError, "n_groups"),
        (dict(k=3, n_groups=2, topk_groups=1), ValueError, "k: expected <= topk_groups"),
        (dict(k=1, n_groups=2), ValueError, "n_groups, topk_groups: expected both or neither"),
        (dict(k=1, route_scale=0.0), ValueError, "route_scale"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    k = kwargs.pop("k")
    with pytest.raises(exc, match=match):
        route(np.zeros((6, 4)), k, **kwargs)


@pytest.mark.parametrize(
    "logits, match",
    [
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, np.inf]]), r"\+inf"),
        (np.array([[0.0, -np.inf]]), "-inf"),
        (np.zeros(4), "dimensions"),
        (np.zeros((2, 2, 2)), "dimensions"),
    ],
)
def test_bad_logits(logits, match):
    with pytest.raises(ValueError, match=match):
        route(logits, 1)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(tokens=-1, experts=2), ValueError),
        (dict(tokens=4, experts=0), ValueError),
        (dict(tokens=4.0, experts=2), TypeError),
        (dict(tokens=4, experts=2, rounding="nearest"), ValueError),
        (dict(tokens=4, experts=2, multiple_of=0), ValueError),
        (dict(tokens=4, experts=2, factor="1"), TypeError),
    ],
)
def test_capacity_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        capacity(**kwargs)


# ---------------------------------------------------------------------------
# router_scores dtype (issue 9) and the partition-based top-k / sort-based ranks


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_router_scores_are_float64_on_both_paths(score, dtype):
    from scipy.special import expit

    from refimpl.moe import router_scores

    z = (np.random.default_rng(0).standard_normal((4, 6)) * 3).astype(dtype)
    p = router_scores(z, score)
    assert p.dtype == np.float64
    z64 = z.astype(np.float64)
    np.testing.assert_array_equal(p, softmax(z64, axis=-1) if score == "softmax" else expit(z64))


def test_top_k_is_a_stable_sort_of_minus_scores_with_ties_and_minus_inf():
    """top_k (k argmax passes for k <= 8 without -inf, a partition otherwise) equals the first
    k columns of a stable argsort of -scores."""
    from refimpl.moe import top_k
    from refimpl.moe.router import rank_within_expert

    rng = np.random.default_rng(11)
    for _ in range(200):
        T, E = int(rng.integers(0, 20)), int(rng.integers(1, 14))
        k = int(rng.integers(1, E + 1))
        s = rng.integers(-2, 3, (T, E)).astype(np.float64)  # many ties
        s[rng.random((T, E)) < 0.2] = -np.inf
        np.testing.assert_array_equal(top_k(s, k), np.argsort(-s, axis=-1, kind="stable")[:, :k])
        finite = np.where(np.isneginf(s), -5.0, s)  # no -inf: k <= 8 takes the argmax passes
        np.testing.assert_array_equal(top_k(finite, k), np.argsort(-finite, axis=-1, kind="stable")[:, :k])
        e = rng.integers(0, E, 40)
        one_hot = e[:, None] == np.arange(E)[None, :]
        np.testing.assert_array_equal(rank_within_expert(e, E), (np.cumsum(one_hot, axis=0) - 1)[np.arange(40), e])


@pytest.mark.parametrize("T", [0, 3])
def test_the_routing_setup_checks_group_limited_selection_once(T):
    """route_setup, the one routing setup of route and gpu.api.prepare_route, refuses k beyond the
    eligible groups and 'top2_sum' with one expert per group before any score is computed (the
    top2_sum check ran inside the selection, once per chunk of tokens, and prepare_route missed both)."""
    from gpu.api_routing import prepare_route
    from refimpl.moe.router import route_setup

    z = np.zeros((T, 4))
    for setup in (route_setup, prepare_route):
        with pytest.raises(ValueError, match=r"^group_score, n_groups: expected at least 2 experts per group"):
            setup(z, 1, n_groups=4, topk_groups=1, group_score="top2_sum")
        with pytest.raises(ValueError, match=r"^k: expected <= topk_groups \* E / n_groups = 2, got 3"):
            setup(z, 3, n_groups=2, topk_groups=1)
