"""Softmax, logsumexp, online softmax and split-KV merge properties, with meta-tests."""

import pytest

from properties import softmax as S

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

IMPLS = impl_params([a for a in S.BUNDLED if a.kind == "softmax"], "softmax") + impl_params(
    [a for a in S.BUNDLED if a.kind == "merge"], "merge"
)


@pytest.mark.parametrize("prop, impl", property_impl_params(S.PROPERTIES, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(S.PROPERTIES, S.WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)
