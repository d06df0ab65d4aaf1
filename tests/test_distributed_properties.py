"""Distributed properties (properties.distributed) against the simulated rank programs, and meta-tests:
each property rejects the wrong rank programs it names."""

import pytest

from properties import distributed as DP

from properties.core import find_counterexample

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

CP_IMPLS = impl_params([i for i in DP.BUNDLED if i.kind == "context_parallel"], "context_parallel")
EP_IMPLS = impl_params([i for i in DP.BUNDLED if i.kind == "expert_parallel"], "expert_parallel")


@pytest.mark.parametrize("prop, impl", property_impl_params(DP.PROPERTIES, CP_IMPLS + EP_IMPLS))
def test_distributed_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(DP.PROPERTIES, DP.WRONG))
def test_distributed_property_rejects_wrong_program(prop, wrong):
    assert_rejects(prop, wrong)


def test_every_bundled_adapter_runs_every_property_of_its_kind():
    for impl in DP.BUNDLED:
        props = [p for p in DP.PROPERTIES if p.kind == impl.kind]
        assert props and all(p.requires <= impl.capabilities for p in props), impl.name


def test_kinds_declare_the_adapters_methods():
    kinds = {k.name: k for k in DP.KINDS}
    for impl in DP.BUNDLED + list(DP.WRONG.values()):
        kind = kinds[impl.kind]
        assert set(impl.capabilities) <= set(kind.capabilities), impl.name
        for m in kind.required:
            assert callable(getattr(impl, m)), (impl.name, m)


def _prop(name):
    return next(p for p in DP.PROPERTIES if p.name == name)


@pytest.mark.parametrize("precision", ("float32", "bfloat16", "float16"))
def test_low_precision_ring_passes_and_its_bug_is_rejected(precision):
    """The precision rule separates a correct low-precision ring (blocks by a bf16/fp16/fp32
    flash kernel, float32 merge) from the same ring merging its last partial twice."""
    for name in ("cp_ring_forward_matches_attention", "cp_ring_extreme_scores"):
        run_property(_prop(name), DP.lowp_ring_adapter(precision), max_examples=20)
    assert_rejects(_prop("cp_ring_forward_matches_attention"), DP.lowp_ring_adapter(precision, "merge_twice"))


def test_only_the_extreme_strategy_exposes_the_unshifted_merge():
    """A ring merge without the max shift is right while every partial lse stays below ~709:
    the ordinary draws never see it, the extreme-scores draws do."""
    wrong = DP.WRONG["ring_merge_no_max_shift"]
    assert find_counterexample(_prop("cp_ring_forward_matches_attention"), wrong, max_examples=100) is None
    assert_rejects(_prop("cp_ring_extreme_scores"), wrong)
