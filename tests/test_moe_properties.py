"""MoE properties bound to the bundled refimpl adapter (and $REFIMPL_IMPLS of kind "moe"),
plus the meta-tests: every property rejects each wrong implementation it names."""

import pytest

from properties import moe as MP

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params(MP.BUNDLED, "moe")


@pytest.mark.parametrize("prop, impl", property_impl_params(MP.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(MP.PROPERTIES, MP.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_every_property_has_a_meta_test_and_every_wrong_is_used():
    assert all(p.rejects for p in MP.PROPERTIES)
    used = {w for p in MP.PROPERTIES for w in p.rejects}
    assert used == set(MP.WRONG), f"unused wrong implementations: {set(MP.WRONG) - used}"
