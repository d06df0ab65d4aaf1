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


LOWP_BUGS = (("sharpened", "softmax_matches"), ("online_no_rescale", "online_equals_two_pass"),
             ("average", "merge_partition"))


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_softmax_and_merge_pass_and_their_bugs_are_rejected(precision):
    """The precision rule separates a correct fused float32-inside softmax / merge (results in
    the precision) from the same with one mistake."""
    def adapter(kind, bug=None):
        return S.lowp_merge_adapter(precision, bug) if kind == "merge" else S.lowp_softmax_adapter(precision, bug)

    for prop in S.PROPERTIES:
        run_property(prop, adapter(prop.kind), max_examples=30)
    for bug, name in LOWP_BUGS:
        prop = next(p for p in S.PROPERTIES if p.name == name)
        assert_rejects(prop, adapter(prop.kind, bug))
