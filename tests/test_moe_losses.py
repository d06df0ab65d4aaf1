"""Balance-loss variants and their uniform values, CV^2, z-loss, Shazeer 2017 losses, and
their gradients (hand-checked values, variants, padding, errors)."""

import numpy as np
import pytest

from refimpl import moe as M
from properties.moe_cases import uniform_batch
from properties.moe_grad_checks import _central_difference as _central  # d f / d z, central differences


@pytest.mark.parametrize(
    "f, scale, uniform",
    [
        ("top1", "E", lambda k, E: 1.0),  # Switch, GShard, DeepSpeed top1/top2, fairseq
        ("k_hot", "E", lambda k, E: k),  # Mixtral, flaxformer (docs/errata.md#e5: alpha * k)
        ("k_hot", "E/k", lambda k, E: 1.0),  # DeepSpeed topk, Megablocks, DeepSeek
        ("k_hot", "1", lambda k, E: k / E),  # the notes' other form (no E factor, docs/errata.md#e5)
        ("top1", "1/E", lambda k, E: 1 / E**2),  # fairscale mean_e(me * ce)
    ],
)
@pytest.mark.parametrize("k, E", [(1, 4), (2, 8), (3, 6)])
def test_uniform_values_of_the_variants(f, scale, uniform, k, E):
    r = M.route(uniform_batch(E, 1, 2, seed=k * E), k)
    v = M.balance_loss(r, alpha=0.5, f=f, scale=scale)
    assert v == pytest.approx(0.5 * uniform(k, E), rel=1e-13)
    assert M.BalanceLoss(f=f, scale=scale).uniform_value(k, E, alpha=0.5) == pytest.approx(v, rel=1e-13)


def test_balance_loss_padding_groups_and_layers():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((12, 4)) * 2
    mask = np.array([True] * 9 + [False] * 3)
    r = M.route(z, 2, padding_mask=mask)
    r_real = M.route(z[:9], 2)
    # padding tokens are left out of f and P: same as routing the real tokens alone
    assert M.balance_loss(r) == pytest.approx(M.balance_loss(r_real), rel=1e-14)
    # groups: mean of per-group losses
    r2 = M.route(z, 2)
    g = M.balance_loss(r2, groups=3)
    parts = [M.balance_loss(M.route(z[i * 4:(i + 1) * 4], 2)) for i in range(3)]
    assert g == pytest.approx(np.mean(parts), rel=1e-14)
    with pytest.raises(ValueError, match="groups"):
        M.balance_loss(r2, groups=5)
    assert M.balance_loss_layers([r2, r2], pool="sum") == pytest.approx(2 * M.balance_loss(r2))
    with pytest.raises(ValueError, match="pool"):
        M.balance_loss_layers([r2], pool="max")


def test_balance_loss_uses_pre_drop_fractions():
    z = np.zeros((8, 4))
    z[:, 0] = 5.0
    dropped = M.route(z, 1, capacity=1)
    dropless = M.route(z, 1)
    assert dropped.num_dropped == 7
    assert M.balance_loss(dropped) == M.balance_loss(dropless)


def test_product_balance_loss_seed_example_and_errors():
    f = np.array([100, 80, 50, 26]) / 256
    assert M.product_balance_loss(f, [0.35, 0.30, 0.22, 0.13], alpha=0.01) == pytest.approx(0.011465625, rel=1e-14)
    with pytest.raises(ValueError, match="same shape"):
        M.product_balance_loss([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="scale"):
        M.product_balance_loss([0.5, 0.5], [0.5, 0.5], scale="E^2")
    with pytest.raises(ValueError, match="alpha"):
        M.product_balance_loss([0.5, 0.5], [0.5, 0.5], alpha=float("nan"))


def test_cv_squared_values_and_identity():
    assert M.cv_squared([3.0, 3.0, 3.0]) == 0.0
    assert M.cv_squared([1.0, 3.0]) == pytest.approx(1.0 / (4.0 + 1e-10))  # var 1, mean 2
    assert M.cv_squared([7.0]) == 0.0
    f = np.array([0.5, 0.25, 0.25])
    assert 3 * (f @ f) == pytest.approx(1 + M.cv_squared(f, eps=0.0), rel=1e-15)
    with pytest.raises(ValueError):
        M.cv_squared([])
    r = M.route(np.array([[2.0, 0.0], [2.0, 0.0]]), 1)
    assert M.cv_squared_loss(r, alpha=0.1, of="loads") == pytest.approx(0.1 * 0.25 / (0.25 + 1e-10))
    with pytest.raises(ValueError, match="of"):
        M.cv_squared_loss(r, of="counts")


def test_z_loss():
    assert M.z_loss(np.zeros((3, 4))) == pytest.approx(np.log(4) ** 2, rel=1e-15)
    z = np.array([[0.0, 0.0], [100.0, 100.0]])
    assert M.z_loss(z, padding_mask=np.array([True, False])) == pytest.approx(np.log(2) ** 2)
    assert np.isfinite(M.z_loss(np.full((2, 3), 1e4)))


def test_noisy_top_k_gating_and_load_probabilities():
    clean = np.array([[2.0, 1.0, 0.0, -1.0]])
    std = np.ones_like(clean)
    noise = np.zeros_like(clean)
    g = M.noisy_top_k_gating(clean, std, noise, 2)
    np.testing.assert_allclose(g.gates, [[np.e / (np.e + 1), 1 / (np.e + 1), 0, 0]], rtol=1e-15)
    P = M.load_probabilities(clean, g.noisy_logits, std, 2)
    # experts 0, 1 in the top-2 compare with the 3rd largest (0.0); 2, 3 with the 2nd (1.0)
    from scipy.special import ndtr

    np.testing.assert_allclose(P, ndtr(np.array([[2.0, 1.0, -1.0, -2.0]])), rtol=1e-15)
    with pytest.raises(ValueError, match="noise_stddev"):
        M.noisy_top_k_gating(clean, -std, noise, 2)
    with pytest.raises(ValueError, match="k"):
        M.load_probabilities(clean, clean, std, 4)


@pytest.mark.parametrize("probs, score", [("softmax", "softmax"), ("normalized_scores", "sigmoid")])
@pytest.mark.parametrize("groups", [1, 2])
def test_balance_loss_gradient_variants_match_finite_differences(probs, score, groups):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 5)) * 0.7
    mask = np.array([True, False, True, True])
    r = M.route(z, 2, score=score, padding_mask=mask)
    g = M.balance_loss_grad(r, z, alpha=0.3, f="k_hot", scale="E/k", probs=probs, groups=groups)

    def loss(zz):  # f held at the routing's fractions: selection is fixed near z
        rr = M.route(zz, 2, score=score, padding_mask=mask)
        np.testing.assert_array_equal(rr.indices, r.indices)
        return M.balance_loss(rr, alpha=0.3, f="k_hot", scale="E/k", probs=probs, groups=groups)

    np.testing.assert_allclose(g, _central(loss, z), rtol=1e-6, atol=1e-9)
    assert np.all(g[~mask] == 0)


def test_cv_squared_gradient():
    x = np.array([1.0, 4.0, 2.5, 0.5])
    np.testing.assert_allclose(M.cv_squared_grad(x), _central(lambda v: M.cv_squared(v), x), rtol=1e-6)
