"""Distributed properties (properties.distributed) against the simulated rank programs, and meta-tests:
each property rejects the wrong rank programs it names."""

import pytest

from properties import distributed as DP

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
