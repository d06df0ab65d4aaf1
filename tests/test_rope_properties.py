"""RoPE conformance properties against every bundled (and user) implementation, and their meta-tests."""

import pytest

from properties import rope as P

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params(P.BUNDLED, "rope")


@pytest.mark.parametrize("prop, impl", property_impl_params(P.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(P.PROPERTIES, P.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_every_llama3_and_yarn_draw_fills_every_band():
    """Stratified scalings: each rope_type is drawn, and every yarn / llama3 case has a frequency
    in each of its bands (so a mistake confined to one band is always reachable)."""
    from hypothesis import given, settings

    from properties.core import Declared

    seen = set()

    @settings(max_examples=300, database=None, derandomize=True, deadline=None)
    @given(case=P.rope_case(Declared(P.ALL_CAPS)))
    def draw(case):
        sc = case.kwargs.get("scaling")
        seen.add(sc and sc["rope_type"])
        if sc and sc["rope_type"] in ("yarn", "llama3"):
            d = case.kwargs.get("rotary_dim") or case.x.shape[-1]
            assert min(P.scaling_bands(d, case.kwargs["base"], sc)) > 0, case

    draw()
    assert seen == set(P.ROPE_TYPES), seen


def test_llama3_band_mistake_needs_the_smoothed_band():
    """Where no frequency falls in llama3's smoothed band (rotary dim 2, as the unstratified draws
    gave), dividing that band by the factor changes nothing: only the banded draws expose it."""
    import numpy as np

    sc = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    assert P.scaling_bands(2, 100.0, sc)[1] == 0
    x, pos = np.random.default_rng(0).standard_normal((1, 1, 4, 2)), np.arange(4) * 1000
    kw = dict(rotary_dim=2, base=100.0, scaling=sc)
    assert np.array_equal(P.WRONG["llama3_smooth_band_divided"].apply(x, pos, **kw), P.BUNDLED[1].apply(x, pos, **kw))
