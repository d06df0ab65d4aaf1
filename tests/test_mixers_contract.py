"""Mixer failures the contract fuzz found (tests/contract_recipes_mixers.py), pinned: each once
gave NaN or a silently wrong answer from finite inputs."""

from __future__ import annotations

import numpy as np
import pytest

from refimpl.mixers import delta_rule_attention, favor_features, gated_linear_attention, selective_scan, wkv


def test_wkv_stable_form_with_keys_below_the_kernels_min_value():
    """The CUDA kernel starts o at MIN_VALUE = -1e38; a first key u + k_0 < -1e38 then gave
    (1 * 0 + 0 * v) / (1 * 0 + 0) = NaN. Starting from o = -inf the first output is v_0 exactly."""
    k = np.array([-1e39, 1.0, 2.0]).reshape(1, 1, 3, 1)
    v = np.array([3.0, 1.0, -2.0]).reshape(1, 1, 3, 1)
    w, u = np.array([-0.5]), np.array([0.3])
    got = wkv(w, u, k, v, form="stable")
    np.testing.assert_allclose(got, wkv(w, u, k, v, form="parallel"), rtol=1e-14)
    assert got[0, 0, 0, 0] == 3.0
    with pytest.raises(ValueError, match="w, u, k"):  # exponents that would overflow: an error, not NaN
        wkv(np.array([-1e308]), u, k[..., :1, :] * 0 + 1.0, v[..., :1, :])


def _gla_by_definition(q, k, v, g, scale):
    S, out = np.zeros((k.shape[3], v.shape[3])), []
    for t in range(q.shape[2]):
        S = np.exp(g[0, 0, t])[:, None] * S + np.outer(k[0, 0, t], v[0, 0, t])
        out.append(scale * q[0, 0, t] @ S)
    return np.array(out)


@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
def test_a_huge_gate_does_not_absorb_the_later_gates(form):
    """g = -1e300 then -0.1: without the floor G_FLOOR the cumulative sum G stays -1e300 and
    exp(G_2 - G_1) = 1 instead of e^-0.1 (a silent wrong answer)."""
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(1, 1, 4, 2)), rng.normal(size=(1, 1, 4, 2)), rng.normal(size=(1, 1, 4, 3))
    g = np.array([-1e300, -0.1, -0.1, -0.2])[None, None, :, None] * np.ones((1, 1, 4, 2))
    o, _ = gated_linear_attention(q, k, v, g, scale=1.0, form=form, chunk_size=3)
    np.testing.assert_allclose(o[0, 0], _gla_by_definition(q, k, v, g, 1.0), rtol=1e-12, atol=1e-15)
    # the delta rule shares the floor
    beta = np.full((1, 1, 4), 0.5)
    o1 = delta_rule_attention(q, k, v, beta, g[..., 0], form="recurrent")[0]
    o2 = delta_rule_attention(q, k, v, beta, g[..., 0], form="chunked", chunk_size=4)[0]
    np.testing.assert_allclose(o2, o1, rtol=1e-12, atol=1e-15)


def test_zoh_discretisation_with_a_subnormal_A_is_its_limit():
    """(exp(delta A) - 1) / A -> delta as A -> 0; computed as expm1(dA) / A it lost every digit
    for a subnormal A (delta A rounds to a multiple of 5e-324)."""
    u, delta = np.ones((1, 1, 3, 1)), np.full((1, 1, 3, 1), 0.7)
    B = C = np.ones((1, 1, 3, 1))
    tiny = selective_scan(u, delta, np.full((1, 1, 1), -2 * 5e-324), B, C, discretization="zoh")[0]
    zero = selective_scan(u, delta, np.zeros((1, 1, 1)), B, C, discretization="zoh")[0]
    np.testing.assert_allclose(tiny, zero, rtol=1e-15)


def test_favor_features_of_huge_inputs_are_an_error_not_nan():
    W = np.eye(2)
    with pytest.raises(ValueError, match="x, W"):
        favor_features(np.full((1, 1, 2, 2), 1e160), W, is_query=True)  # |x|^2 / 2 overflows: inf - inf
    with pytest.raises(ValueError, match="stabilize"):
        favor_features(np.array([40.0, 0.0]).reshape(1, 1, 1, 2), W * 50, is_query=True, stabilize=False)  # e^1200
