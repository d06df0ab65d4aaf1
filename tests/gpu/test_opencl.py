"""Route (d): the neutral-dialect C sources executed as OpenCL C (PoCL on the CPU).

The same problems as the simulator and the GPU runs (tests/gpu/cases.py), the
mutants that every execution check must reject, and refimpl's attention
conformance properties (properties.attention) run against the OpenCL kernel.
"""

from __future__ import annotations

import pytest

from gpu import mutants

from . import cases as C
from .support import opencl_backend_or_missing


@pytest.fixture(scope="module")
def opencl():
    return opencl_backend_or_missing()


@pytest.mark.parametrize("case", C.ATTENTION_CASES, ids=lambda c: c.name)
def test_attention_matches_refimpl(opencl, case):
    figures = C.check_attention(opencl, case)
    assert figures["err_out"] <= figures["bound_out"]


@pytest.mark.parametrize("case", C.ROUTING_CASES, ids=lambda c: c.name)
def test_routing_matches_refimpl(opencl, case):
    C.check_routing(opencl, case)


@pytest.mark.parametrize("name", sorted(mutants.MUTATIONS))
def test_mutant_is_rejected(opencl, name):
    """Meta-test: the deliberately wrong kernel fails at least one execution check."""
    m = mutants.MUTATIONS[name]
    be = mutants.backend(name, "opencl")
    case, message = C.find_rejecting_case(be, m.kernel)
    assert case is not None, f"mutant {name} ({m.doc}) passed every {m.kernel} case: the checks are too weak"
    print(f"mutant {name}: rejected by case {case}: {message}")
