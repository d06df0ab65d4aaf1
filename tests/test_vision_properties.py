"""The patch_embed and contrastive_loss properties: bundled implementations (refimpl, torch conv2d and
HF's CLIP loss in float32) pass; each wrong implementation is rejected (meta-tests)."""

import pytest

from properties import vision as P

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = [p for kind in P.KINDS for p in impl_params([a for a in P.BUNDLED if a.kind == kind.name], kind.name)]


@pytest.mark.parametrize("prop, impl", property_impl_params(P.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(P.PROPERTIES, P.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)
