"""Attention conformance properties against every bundled (and user) implementation,
and the meta-tests: each property rejects the wrong implementations it names."""

import pytest

from properties import attention as A
from properties import tiled
from properties.attention import BUNDLED, WRONG

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params(BUNDLED, "attention")


@pytest.mark.parametrize("prop, impl", property_impl_params(A.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(A.PROPERTIES, WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_every_property_has_a_meta_test():
    assert all(p.rejects for p in A.PROPERTIES)
    assert all(b in WRONG for p in A.PROPERTIES for b in p.rejects)


BACKWARD = [p for p in A.PROPERTIES if p.name in ("backward_matches_reference", "backward_finite_differences")]


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
@pytest.mark.parametrize("prop", BACKWARD, ids=lambda p: p.name)
def test_low_precision_backward_passes_and_its_bugs_are_rejected(precision, prop):
    """The precision rule separates a correct float32 / bf16 FA2 backward (properties.tiled:
    P and dS rounded to the precision before their GEMMs, float32 accumulation) from the same
    backward with the rowsum(dO * O) term dropped, tanh' forgotten or taken as 1 - t, or dk from
    one head."""
    run_property(prop, tiled.lowp_backward_adapter(precision), max_examples=10)
    for bug in tiled.BACKWARD_BUGS:
        assert_rejects(prop, tiled.lowp_backward_adapter(precision, bug))


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
@pytest.mark.parametrize("prop", BACKWARD, ids=lambda p: p.name)
def test_torch_autograd_backward_passes(precision, prop):
    """A correct kernel computing the softcap derivative the library way (torch autograd:
    1 - y * y from the saved float32 / bf16 tanh y) passes the backward bound."""
    torch_eager = pytest.importorskip("properties.torch_eager", reason="torch not installed")
    pytest.importorskip("torch", reason="torch not installed")
    run_property(prop, torch_eager.adapter(precision), max_examples=25)


def test_saturated_softcap_derivative_is_within_the_bound():
    """Where tanh saturates, 1 - t^2 from a float32 t keeps no correct digit: torch's float32
    autograd erred 112x past the bound before the bound had the term for it (dq 1.23e-11 vs
    1.10e-13 here; properties.attention_lowp, "Softcap derivative")."""
    pytest.importorskip("torch", reason="torch not installed")
    import numpy as np

    from properties import torch_eager
    from properties.attention_cases import AttnCase

    def col(*x):
        return np.asarray(x, np.float32).astype(np.float64).reshape(1, 1, -1, 1)

    case = AttnCase(q=col(1.0), k=col(4.03848123550415, 4.293227195739746, 2.9832210540771484, 4.055756092071533),
                    v=col(0.8539033532142639, -0.3136857748031616, 0.635085940361023, 1.2538721561431885),
                    kwargs={"softcap": 0.5}, seed=0)  # raw / c = 6..8.6: t' = 1e-7..3e-5
    impl = torch_eager.adapter("float32")
    A.check_backward_matches_reference(impl, case)
    A.check_backward_finite_differences(impl, case)


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_forward_passes_every_property(precision):
    """The correct low-precision tiled forward passes the forward properties at ordinary sizes
    (the tile-scale runs and the cross-tile bugs are tests/test_tile_scale.py)."""
    impl = tiled.lowp_backward_adapter(precision)
    for prop in A.PROPERTIES:
        if prop.name in ("matches_reference", "convex_combination", "key_permutation_invariance",
                         "gqa_equals_repeated_mha", "causal_ignores_future", "extreme_scores"):
            run_property(prop, impl, max_examples=15)
