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


def test_a_correct_fused_forward_passes_what_rejects_the_wrong_ones():
    """The wrong fused kernels (properties.moe_wrong._fused) differ from a correct fused forward over
    properties.moe_protocol.fused_expert_weights by their one bug: that forward passes."""
    from properties import moe_wrong

    prop = next(p for p in MP.PROPERTIES if p.name == "moe_fused_forward")
    run_property(prop, moe_wrong._fused(None))
