"""Attention conformance properties against every bundled (and user) implementation,
and the meta-tests: each property rejects the wrong implementations it names."""

import pytest

from properties import attention as A
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
