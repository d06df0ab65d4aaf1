"""MLA conformance properties against every bundled (and user) implementation, and their meta-tests."""

import pytest

from properties import mla as P

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params(P.BUNDLED, "mla")


@pytest.mark.parametrize("prop, impl", property_impl_params(P.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(P.PROPERTIES, P.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_mla_passes_and_its_bugs_are_rejected(precision):
    """The precision rule separates DeepSeek's einsums run in the precision (every product
    rounded) from the same with each wrong variant."""
    for prop in P.PROPERTIES:
        run_property(prop, P.lowp_mla_adapter(precision), max_examples=15)
        for bug in prop.rejects:
            assert_rejects(prop, P.lowp_mla_adapter(precision, bug))
