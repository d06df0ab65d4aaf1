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
