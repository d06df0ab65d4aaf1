"""The conformance suite's linear-attention kind (properties.mixers_linear) run against the
OpenCL chunked GLA kernel through an adapter of that kind (float32; gate_scalar, gate_channel,
final_state, chunked at 4-token chunks): every drawn length straddles chunk boundaries. The
lost-state mutant is shown to be rejected by the generic property too."""

from __future__ import annotations

import pytest

from gpu import mutants
from gpu.adapters import gla_adapter, opencl_gla
from properties import mixers_linear as ML
from properties.core import find_counterexample, run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_gla()
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in ML.PROPERTIES for a in ADAPTERS
         if p.kind == a.kind and supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


def test_properties_apply():
    assert {p.values[0].name for p in PAIRS} == {"la_matches_recurrent", "la_extreme_gates"}


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_property_on_opencl_kernel(prop, impl):
    rec = run_property(prop, impl)
    print(f"{prop.name} on {impl.name}: {rec.status}, {rec.examples} examples, worst {rec.worst}")


def test_gla_mutant_rejected_by_property():
    wrong = gla_adapter(mutants.backend("gla_state_lost", "opencl"), chunk_sizes=(4,), threads=16,
                        name="mutant-gla_state_lost")
    p = next(p for p in ML.PROPERTIES if p.name == "la_matches_recurrent")
    assert find_counterexample(p, wrong, max_examples=100) is not None
