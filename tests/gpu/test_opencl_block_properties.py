"""The conformance suite's "norm" and "rope" kinds run against the OpenCL kernels through
adapters of those kinds (float32; properties.norms, properties.rope), at their own block
sizes (4 threads per row or per block of pairs: partial strides and multi-step reductions):

* ``gpu.adapters.opencl_norm``: gpu.rms_norm / gpu.layer_norm, once per RMSNorm convention
  (eps inside the sqrt with g = w; HF Gemma's g = 1 + w; eps outside the sqrt);
* ``gpu.adapters.opencl_rope``: gpu.apply_rope (both layouts, partial rotary, scalings).

Each norm and RoPE mutant is shown to be rejected by these generic properties too."""

from __future__ import annotations

import pytest

from gpu import mutants
from gpu.adapters import norm_adapter, opencl_norm, opencl_rope, rope_adapter
from properties import norms as PN
from properties import rope as PR
from properties.core import find_counterexample, run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_norm() + opencl_rope()
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in PN.PROPERTIES + PR.PROPERTIES for a in ADAPTERS
         if p.kind == a.kind and supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


def test_properties_apply():
    assert {p.values[0].name for p in PAIRS} == {
        "layer_norm_matches", "rms_norm_matches_convention", "rms_equals_layer_norm_on_zero_mean",
        "rope_matches_reference", "rope_norm_preserving", "rope_relative_position", "rope_exact_integer_positions",
        "rope_layout_conversion"}


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_property_on_opencl_kernel(prop, impl):
    rec = run_property(prop, impl)
    print(f"{prop.name} on {impl.name}: {rec.status}, {rec.examples} examples, worst {rec.worst}")


def test_norm_mutant_rejected_by_rms_property():
    wrong = norm_adapter(mutants.backend("norm_weight_offset_ignored", "opencl"), threads=4, convention="gemma",
                         name="mutant-norm_weight_offset_ignored")
    p = next(p for p in PN.PROPERTIES if p.name == "rms_norm_matches_convention")
    assert find_counterexample(p, wrong, max_examples=100) is not None


def test_rope_mutant_rejected_by_rope_property():
    wrong = rope_adapter(mutants.backend("rope_interleaved_as_half", "opencl"), threads=4,
                         name="mutant-rope_interleaved_as_half")
    p = next(p for p in PR.PROPERTIES if p.name == "rope_matches_reference")
    assert find_counterexample(p, wrong, max_examples=100) is not None
