"""KV-cache / decoding conformance properties against every bundled (and user) implementation, and their meta-tests."""

import pytest

from properties import decode as P
from properties.core import supports

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params(P.BUNDLED, "decode")


@pytest.mark.parametrize("prop, impl", property_impl_params(P.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(P.PROPERTIES, P.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_decoder_passes_and_its_bug_is_rejected(precision):
    """The precision rule separates a correct low-precision decoder (RoPE'd q, k and each step's
    attention in the precision) from the same decoder rotating each chunk from position 0."""
    for prop in P.PROPERTIES:
        if supports(P.lowp_decoder(precision), prop):
            run_property(prop, P.lowp_decoder(precision), max_examples=25)
    assert_rejects(P.PROPERTIES[0], P.lowp_decoder(precision, "rope_positions_from_zero"))
