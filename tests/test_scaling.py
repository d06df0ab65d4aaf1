"""refimpl.scaling: Var(l) = E sigma^2 after RMSNorm (seeded Monte Carlo), the re-centring identity, and
what a constant bias cannot absorb; each check rejects a wrong implementation (meta-tests)."""

import types

import numpy as np
import pytest

from refimpl import scaling as S
from refimpl.norms import rms_norm

E, SIGMA, DRAWS = 256, 0.02, 4000


def check_variance(impl):
    """Monte Carlo over head rows w ~ N(0, sigma^2 I): the sample variance of w . x within 5 standard errors
    (relative SE of a variance from n normal draws: sqrt(2 / (n - 1)) = 0.022)."""
    rng = np.random.default_rng(7)
    x = rms_norm(rng.standard_normal((3, E)) * [[0.1], [1.0], [30.0]], eps=0.0)  # RMS 1 whatever the input scale
    w = rng.standard_normal((DRAWS, E)) * SIGMA
    mc = np.var(w @ x.T, axis=0)
    want = impl.logit_variance(x, SIGMA)
    assert np.allclose(want, E * SIGMA**2, rtol=1e-12)
    assert (np.abs(mc / want - 1) < 5 * np.sqrt(2 / (DRAWS - 1))).all()


def check_recentring(impl):
    rng = np.random.default_rng(8)
    y, W, b = rng.standard_normal((5, 6)) + 3.0, rng.standard_normal((6, 4)), rng.standard_normal(4)
    u, bias = impl.recentred_affine(y, W, b)
    np.testing.assert_allclose(u, y @ W + b, rtol=1e-12, atol=1e-12)
    assert not np.allclose(bias, bias[0])  # the absorbing bias differs from token to token


def check_constant_bias(impl):
    rng = np.random.default_rng(9)
    y, W = rng.standard_normal((50, 6)) + rng.standard_normal((50, 1)), rng.standard_normal((6, 4))
    mu = y.mean(axis=1, keepdims=True)
    target, centred = y @ W, (y - mu) @ W
    best = (target - centred).mean(axis=0)  # the least-squares constant bias
    resid = np.mean(np.sum((centred + best - target) ** 2, axis=1))
    assert impl.constant_bias_residual(y, W) == pytest.approx(resid, rel=1e-10) and resid > 0.1
    assert impl.constant_bias_residual(y, W - W.sum(axis=0) / 6) == pytest.approx(0, abs=1e-20)  # W 1 = 0


CHECKS = [check_variance, check_recentring, check_constant_bias]

WRONG = {
    "variance_grows_with_E_squared": (types.SimpleNamespace(
        logit_variance=lambda x, s: S.logit_variance(x, s) * np.shape(x)[-1]), check_variance),
    "bias_shift_forgotten": (types.SimpleNamespace(
        recentred_affine=lambda y, W, b: ((y - y.mean(1, keepdims=True)) @ W + b, np.broadcast_to(b, (len(y), len(b))))),
        check_recentring),
    "claims_bias_absorbs_all": (types.SimpleNamespace(constant_bias_residual=lambda y, W: 0.0), check_constant_bias),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(S)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    impl, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(impl)
