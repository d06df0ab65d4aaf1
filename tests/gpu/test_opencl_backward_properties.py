"""refimpl's attention gradient properties (properties.attention: backward_matches_reference,
backward_finite_differences) run against the OpenCL backward kernels
(gpu.attention_backward_c) through a conformance adapter of kind "attention" that
declares "backward", at its own tiles (2 x 3) in float32: the protocol a user's kernel
meets. Each backward mutant is shown to be rejected by these generic properties too."""

from __future__ import annotations

import pytest

from gpu import mutants
from gpu.adapters import attention_backward_adapter, opencl_attention_backward
from properties import attention as A
from properties.core import find_counterexample, run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_attention_backward()
GRADIENT_PROPERTIES = [p for p in A.PROPERTIES if "backward" in p.requires]
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in GRADIENT_PROPERTIES for a in ADAPTERS if supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


def test_gradient_properties_apply():
    assert {p.values[0].name for p in PAIRS} == {"backward_matches_reference", "backward_finite_differences"}


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_gradient_property_on_opencl_kernel(prop, impl):
    rec = run_property(prop, impl)
    print(f"{prop.name} on {impl.name}: {rec.status}, {rec.examples} examples, worst {rec.worst}")


@pytest.mark.parametrize("name", sorted(n for n, m in mutants.MUTATIONS.items() if m.kernel == "attention_backward"))
def test_some_gradient_property_rejects_backward_mutant(name):
    """Meta-test: the generic gradient properties catch each wrong backward kernel."""
    wrong = attention_backward_adapter(mutants.backend(name, "opencl"), block_q=2, block_k=3, name=f"mutant-{name}")
    prop = next(p for p in GRADIENT_PROPERTIES if p.name == "backward_matches_reference")
    found = find_counterexample(prop, wrong, max_examples=100)
    assert found is not None, f"backward_matches_reference accepts mutant {name}"
    print(f"mutant {name}: rejected by {prop.name}")
