"""Dispatch/combine layouts, the MoE forward, experts, expert choice, and the gradient
pitfalls of the notes (docs/errata.md#e7; their straight-through suggestion, docs/notes.md#moe-router)."""

import numpy as np
import pytest

from refimpl import moe as M
from properties.moe_grad_checks import _central_difference as _central  # d f / d z, central differences


def _problem(T=6, E=4, D=3, H=5, seed=0, kind="swiglu"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, D)), rng.standard_normal((E, D)) * 1.5, M.random_experts(E, D, H, kind=kind, act="gelu", seed=seed + 1)


@pytest.mark.parametrize("options", [dict(normalize="after_drop", capacity=2), dict(normalize="none"),
                                     dict(preset="deepspeed_top2", capacity_factor=0.5),
                                     dict(drop_order="per_expert_top_prob", capacity=1)])
def test_three_forwards_agree(options):
    x, W, experts = _problem()
    y, r = M.moe_forward(x, W, experts, 2, **options)
    yd, _ = M.moe_forward(x, W, experts, 2, layout="dense_tensors", **options)
    np.testing.assert_allclose(yd, y, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(M.dense_moe_forward(x, r, experts), y, rtol=1e-13, atol=1e-14)


def test_dispatch_tensors_and_sorted_layout():
    z = np.array([[3.0, 2, 0], [3, 2, 0], [3, 0, 2], [0, 3, 2]])
    r = M.route(z, 2, capacity=2, normalize="after_drop")
    d, c = M.dispatch_combine_tensors(r)
    assert d.shape == c.shape == (4, 3, 2) and d.dtype == bool
    assert d.sum() == r.kept.sum()
    np.testing.assert_allclose(c.sum(axis=(1, 2)), r.gates.sum(axis=1))
    sa = M.sort_by_expert(r)
    np.testing.assert_array_equal(sa.offsets, [0, 2, 4, 6])
    assert (np.diff(sa.expert) >= 0).all()
    # within a bin, rows are in buffer (slot) order
    for e in range(3):
        t, j = sa.token[sa.offsets[e]:sa.offsets[e + 1]], sa.choice[sa.offsets[e]:sa.offsets[e + 1]]
        np.testing.assert_array_equal(r.position[t, j], np.arange(t.size))
    # dropless: C is the largest buffer used
    r0 = M.route(z, 2)
    assert M.dispatch_combine_tensors(r0)[0].shape[2] == int(r0.counts.max())


def test_token_with_every_choice_dropped_gets_zero_output():
    x, W, experts = _problem(T=5, E=3)
    y, r = M.moe_forward(x, W, experts, 1, capacity=0)
    assert r.num_dropped == 5 and np.all(y == 0)


def test_experts_shapes_and_vjp():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 3))
    for ex in M.random_experts(2, 3, 5, kind="ffn", act="silu", bias=True, seed=2) + \
            M.random_experts(1, 3, 5, kind="swiglu", seed=3):
        assert ex(x).shape == (4, 3)
        fd = _central(lambda xx: np.sum(ex(xx) * dy), x)
        np.testing.assert_allclose(ex.vjp(x, dy), fd, rtol=1e-6, atol=1e-8)
    e = M.FFNExpert(W1=np.ones((3, 4)), W2=np.ones((4, 3)))
    assert e.num_params == 24
    with pytest.raises(ValueError, match="W2"):
        M.FFNExpert(W1=np.ones((3, 4)), W2=np.ones((3, 4)))
    with pytest.raises(ValueError, match="activation"):
        M.FFNExpert(W1=np.ones((3, 4)), W2=np.ones((4, 3)), act="tanh")
    with pytest.raises(ValueError, match="x"):
        e(np.ones((2, 5)))


def test_forward_errors():
    x, W, experts = _problem()
    with pytest.raises(ValueError, match="experts"):
        M.moe_forward(x, W, experts[:3], 2)
    with pytest.raises(ValueError, match="router_weight"):
        M.moe_forward(x, W[:, :2], experts, 2)
    with pytest.raises(ValueError, match="layout"):
        M.moe_forward(x, W, experts, 2, layout="csr")


def test_expert_choice_routing():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((10, 4))
    r = M.route_expert_choice(z, 3)
    assert r.token_index.shape == (4, 3) and r.token_counts.sum() == 12
    p = M.router_scores(z)
    for e in range(4):
        np.testing.assert_array_equal(r.token_index[e], np.argsort(-p[:, e], kind="stable")[:3])
    tie = M.route_expert_choice(np.zeros((5, 2)), 2)
    np.testing.assert_array_equal(tie.token_index, [[0, 1], [0, 1]])  # ties to the lower token
    x = rng.standard_normal((10, 3))
    experts = M.random_experts(4, 3, 5, seed=5)
    y = M.expert_choice_forward(x, r, experts)
    want = np.zeros_like(x)
    for e in range(4):
        for c, t in enumerate(r.token_index[e]):
            want[t] += r.gates[e, c] * experts[e](x[[t]])[0]
    np.testing.assert_allclose(y, want, rtol=1e-14)
    with pytest.raises(ValueError, match="capacity"):
        M.route_expert_choice(z, 11)


# --- gradients: the pitfalls ----------------------------------------------------------------


def test_errata_7_router_jacobian_is_not_the_diagonal_formula():
    """dy/dz_j = g_j (FFN_j(x) - y), not the notes' FFN_j(x) g_j (1 - g_j)."""
    x, W, experts = _problem(T=1, E=4, seed=7)
    z = M.router_logits(x, W)
    r = M.route(z, 2, normalize="after_drop")
    Jy = M.output_logit_jacobian(x, r, z, experts)[0]  # (D, E)
    y = M.dense_moe_forward(x, r, experts)[0]
    fd = _central(lambda zz: M.dense_moe_forward(x, M.route(zz, 2, normalize="after_drop"), experts)[0], z)[:, 0, :]
    np.testing.assert_allclose(Jy, fd, rtol=1e-6, atol=1e-9)
    for j, b in enumerate(r.indices[0]):
        g = r.gates[0, j]
        F = experts[b](x)[0]
        np.testing.assert_allclose(Jy[:, b], g * (F - y), rtol=1e-12, atol=1e-14)
        seed_formula = F * g * (1 - g)
        assert np.abs(seed_formula - fd[:, b]).max() > 1e-3  # the notes' form misses the other expert's term


def test_straight_through_is_not_the_gradient():
    """The notes (docs/notes.md#moe-router) suggest back-propagating through all softmax probabilities. For
    renormalised top-k gates that gives unselected experts a gradient the forward
    function does not have."""
    z = np.array([[1.0, 0.2, -0.5, -1.0]])
    r, J = M.gate_jacobian(z, 2, normalize="after_drop")
    st = M.score_jacobian(z)[0][r.indices[0]]  # rows dp_{e_j} / dz
    np.testing.assert_allclose(J[0][:, 2:], 0.0, atol=1e-17)
    assert np.abs(st[:, 2:]).min() > 1e-3
    # raw gates (normalize="none") do depend on unselected logits, through the softmax denominator
    _, Jraw = M.gate_jacobian(z, 2, normalize="none")
    np.testing.assert_allclose(Jraw[0], st, rtol=1e-15)


def test_top1_renormalised_router_gets_no_task_gradient():
    x, W, experts = _problem(seed=11)
    dy = np.random.default_rng(12).standard_normal(x.shape)
    dx, dz, dW = M.moe_vjp(x, W, experts, 1, dy, normalize="after_drop")
    assert np.all(dz == 0) and np.all(dW == 0)
    _, dz_raw, _ = M.moe_vjp(x, W, experts, 1, dy, normalize="none")
    assert np.abs(dz_raw).max() > 1e-3  # Switch's raw top-1 gate does train the router


@pytest.mark.parametrize("options", [dict(normalize="before_drop", capacity=1, score="sigmoid"),
                                     dict(normalize="after_drop", capacity=1, normalize_eps=1e-3),
                                     dict(preset="deepseek_v3", selection_bias=np.linspace(-0.1, 0.1, 16))])
def test_gate_jacobian_with_drops_eps_and_sigmoid(options):
    rng = np.random.default_rng(13)
    z = rng.standard_normal((4, 16))
    k = 8 if options.get("preset") == "deepseek_v3" else 3
    r, J = M.gate_jacobian(z, k, **options)
    fd = _central(lambda zz: M.route(zz, k, **options).gates, z)
    T = z.shape[0]
    np.testing.assert_allclose(J, fd[np.arange(T), :, np.arange(T), :], rtol=1e-6, atol=1e-8)


def test_shazeer_loss_gradients():
    rng = np.random.default_rng(14)
    clean = np.array([[1.0, 0.3, -0.4, -1.2], [0.1, 0.9, -0.8, 0.5]])
    std = 0.3 + rng.random(clean.shape)
    noise = np.zeros_like(clean)
    ng = M.noisy_top_k_gating(clean, std, noise, 2)
    fd = _central(lambda c: M.importance_loss(M.noisy_top_k_gating(c, std, noise, 2).gates), clean)
    np.testing.assert_allclose(M.importance_loss_grad(ng), fd, rtol=1e-6, atol=1e-9)
    fd = _central(lambda c: M.load_loss(c, c + noise * std, std, 2), clean)
    np.testing.assert_allclose(M.load_loss_grad(clean, clean, std, 2), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(M.z_loss_grad(clean), _central(M.z_loss, clean), rtol=1e-6, atol=1e-9)


def test_scatter_combine_sums_every_row_of_a_token_choice_by_choice():
    """Rows of distinct (token, choice) pairs go through one collision-free add per choice; rows
    repeating a pair (a hand-made SortedAssignments) are all accumulated, never overwritten."""
    from refimpl.moe.dispatch import SortedAssignments, scatter_combine

    rows = np.arange(12.0).reshape(4, 3)
    i64 = lambda *a: np.array(a, dtype=np.int64)  # noqa: E731
    sa = SortedAssignments(token=i64(0, 1, 0, 2), choice=i64(0, 0, 1, 1), expert=i64(0, 0, 1, 1),
                           gate=np.array([0.5, 1.0, 0.25, 2.0]), offsets=i64(0, 2, 4))
    want = np.zeros((3, 3))
    for t, g, r in zip(sa.token, sa.gate, rows):
        want[t] += g * r
    np.testing.assert_array_equal(scatter_combine(rows, sa, 3), want)
    dup = SortedAssignments(token=i64(0, 0), choice=i64(0, 0), expert=i64(0, 1), gate=np.array([1.0, 1.0]),
                            offsets=i64(0, 1, 2))
    np.testing.assert_array_equal(scatter_combine(rows[:2], dup, 1), (rows[0] + rows[1])[None])
