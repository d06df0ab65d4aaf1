"""refimpl.pooled_memory: the units partition the past, the count formula, equality with causal attention
without pooling and (with the size bias) on group-constant keys; wrong implementations as meta-tests."""

import types

import numpy as np
import pytest

import refimpl
from refimpl import pooled_memory as PM

CFG = dict(window=5, g1=2, g2=4, mid_range=8)


def check_partition(impl):
    for t in range(60):
        cover = np.zeros(t + 1, int)
        for a, b in impl.units(t, **CFG):
            cover[a:b] += 1
        assert (cover == 1).all(), t
        assert len(impl.units(t, **CFG)) == impl.unit_counts(60, **CFG)[t]


def check_no_pooling_is_causal_attention(impl):
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((3, 20, 4))
    want, _ = refimpl.attention(q[None, None], k[None, None], v[None, None], causal=True)
    got = impl.pooled_attention(q, k, v, window=3, g1=1, g2=1, mid_range=4)
    np.testing.assert_allclose(got, want[0, 0], rtol=1e-12, atol=1e-13)


def check_size_bias_on_constant_groups(impl):
    """Keys and values constant over every g1- and g2-group outside the window: with log|u| added, pooling
    loses nothing, so the result is causal attention exactly."""
    rng = np.random.default_rng(6)
    L = 40
    k, v = rng.standard_normal((L // 4, 3)).repeat(4, 0), rng.standard_normal((L // 4, 2)).repeat(4, 0)
    q = rng.standard_normal((L, 3))
    want, _ = refimpl.attention(q[None, None], k[None, None], v[None, None], causal=True)
    got = impl.pooled_attention(q, k, v, size_bias=True, **CFG)
    np.testing.assert_allclose(got, want[0, 0], rtol=1e-12, atol=1e-13)


CHECKS = [check_partition, check_no_pooling_is_causal_attention, check_size_bias_on_constant_groups]


def _units_overlapping(t, **cfg):
    u = PM.units(t, **cfg)
    return u + [u[-1]] if len(u) > 3 else u  # the query's own key counted twice


def _groups_relative_to_query(t, *, window, g1, g2, mid_range):
    """Groups cut backwards from the window start instead of on the absolute grid."""
    s = max(0, t - window + 1)
    out, e = [(j, j + 1) for j in range(s, t + 1)], s
    while e > 0:
        out.insert(0, (max(0, e - g1), e))
        e -= g1
    return out


def _no_size_bias(q, k, v, **kw):
    kw.pop("size_bias", None)
    return PM.pooled_attention(q, k, v, **kw)


def _self_excluded(q, k, v, *, window, g1, g2, mid_range, size_bias=False):
    """Query t reads the units of t - 1 (its own key left out), a common off-by-one."""
    out = PM.pooled_attention(q, k, v, window=window, g1=g1, g2=g2, mid_range=mid_range, size_bias=size_bias)
    out[1:] = PM.pooled_attention(q[1:], k[:-1], v[:-1], window=window, g1=g1, g2=g2, mid_range=mid_range,
                                  size_bias=size_bias) if len(q) > 1 else out[1:]
    return out


WRONG = {
    "units_overlap": (types.SimpleNamespace(units=_units_overlapping, unit_counts=PM.unit_counts), check_partition),
    "groups_not_on_absolute_grid": (types.SimpleNamespace(units=_groups_relative_to_query, unit_counts=PM.unit_counts),
                                    check_partition),
    "size_bias_ignored": (types.SimpleNamespace(pooled_attention=_no_size_bias), check_size_bias_on_constant_groups),
    "self_excluded": (types.SimpleNamespace(pooled_attention=_self_excluded), check_no_pooling_is_causal_attention),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(PM)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    impl, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(impl)


def test_count_at_100k():
    cfg = dict(window=256, g1=64, g2=1024, mid_range=4096)
    c = PM.unit_counts(100_001, **cfg)[-1]
    m, a = PM.boundaries(100_000, **cfg)
    assert c == (100_000 - a + 1) + (a - m) // 64 + m // 1024 == len(PM.units(100_000, **cfg))
    with pytest.raises(ValueError, match="g2"):
        PM.unit_counts(10, window=2, g1=3, g2=4, mid_range=8)


def test_pooled_attention_refuses_a_unit_list_beyond_the_budget_before_its_loop(monkeypatch):
    """The work budget bounds the longest list of units (one step each), checked once before the loop over
    queries (it was checked per query, after the earlier queries had run); the same lists pass below it."""
    from refimpl._validate import STEP_BYTES

    q = np.ones((40, 2))
    longest = int(PM.unit_counts(40, window=30, g1=1, g2=1, mid_range=0).max())  # 30 single keys: 30 units
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(longest * STEP_BYTES))
    assert PM.pooled_attention(q, q, q, window=30, g1=1, g2=1, mid_range=0).shape == (40, 2)
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(longest * STEP_BYTES - 1))
    with pytest.raises(ValueError, match=r"^k, window, g1, g2, mid_range: expected work within the budget"):
        PM.pooled_attention(q, q, q, window=30, g1=1, g2=1, mid_range=0)
    with pytest.raises(ValueError, match=r"^t, window, g1, g2, mid_range: expected work within the budget"):
        PM.units(39, window=30, g1=1, g2=1, mid_range=0)  # the same list, asked for alone
