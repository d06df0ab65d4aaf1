"""refimpl.gated: the gated blend of two branches, the dual-chunk branches, per-head logit scales; each check
rejects a wrong implementation (meta-tests)."""

import types

import numpy as np
import pytest
from scipy.special import expit

import refimpl
from refimpl import gated as G
from refimpl import masks as M

RNG = np.random.default_rng(23)
L, D = 9, 4
X, OL, OS = RNG.standard_normal((3, L, D))
W, B = RNG.standard_normal((D, D)), RNG.standard_normal(D)


def check_gate(impl):
    y = impl.gated_fusion(X, OL, OS, W, B)
    lam = expit(X @ W + B)
    np.testing.assert_allclose(y, X + lam * OL + (1 - lam) * OS, rtol=1e-13, atol=1e-13)
    d = y - X
    assert ((d >= np.minimum(OL, OS) - 1e-12) & (d <= np.maximum(OL, OS) + 1e-12)).all()  # between the branches
    y_local = impl.gated_fusion(X, OL, OS, np.zeros((D, D)), np.full(D, 40.0))  # gate open to the local branch
    np.testing.assert_allclose(y_local, X + OL, rtol=1e-12, atol=1e-12)


def check_branches(impl):
    q, k, v = (RNG.standard_normal((1, 2, 12, 3)) for _ in range(3))
    ol, os_ = impl.dual_chunk_branches(q, k, v, window=4, stride=3)
    want_l, _ = refimpl.attention(q, k, v, causal=True, window=(3, 0))
    i, j = np.arange(12)[:, None], np.arange(12)[None, :]
    want_s, _ = refimpl.attention(q, k, v, mask=((j <= i) & (j % 3 == 0))[None, None])
    np.testing.assert_allclose(ol, want_l, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(os_, want_s, rtol=1e-12, atol=1e-13)


def check_head_scale(impl):
    q, k, v = (RNG.standard_normal((2, 3, 5, 4)) for _ in range(3))
    s = np.array([0.5, 1.0, 3.0])
    want, _ = refimpl.attention(q * s[None, :, None, None], k, v, causal=True)
    np.testing.assert_allclose(impl.head_scaled_attention(q, k, v, s, causal=True), want, rtol=1e-12, atol=1e-13)


CHECKS = [check_gate, check_branches, check_head_scale]

WRONG = {
    "gate_on_the_stride_branch": (types.SimpleNamespace(
        gated_fusion=lambda x, ol, os_, W, b: G.gated_fusion(x, os_, ol, W, b)), check_gate),
    "residual_dropped": (types.SimpleNamespace(
        gated_fusion=lambda x, ol, os_, W, b: G.gated_fusion(x, ol, os_, W, b) - x), check_gate),
    "stride_relative_to_query": (types.SimpleNamespace(dual_chunk_branches=lambda q, k, v, *, window, stride: (
        G.dual_chunk_branches(q, k, v, window=window, stride=stride)[0],
        refimpl.attention(q, k, v, mask=M.Strided(stride).materialize(q.shape[2], k.shape[2])[None, None])[0])),
        check_branches),
    "scale_multiplies_output": (types.SimpleNamespace(head_scaled_attention=lambda q, k, v, s, causal=False:
                                                      refimpl.attention(q, k, v, causal=causal)[0] * s[None, :, None, None]),
                                check_head_scale),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(G)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    impl, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(impl)
