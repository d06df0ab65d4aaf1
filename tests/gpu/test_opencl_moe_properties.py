"""refimpl's MoE routing properties (properties.moe) run against the OpenCL
routing kernels: the kernels declare only the "route" capability, so the
routing properties run (with the drop orders the kernels implement) and the
loss/gradient/forward properties are not applicable."""

from __future__ import annotations

import pytest

from gpu.adapters import opencl_routing
from properties import moe as P
from properties.core import run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_routing()
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in P.PROPERTIES for a in ADAPTERS if supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


def test_routing_properties_apply():
    assert len(PAIRS) >= 5, [p.id for p in PAIRS]


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_moe_property_on_opencl_kernel(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("name", sorted(n for n, m in __import__("gpu.mutants").mutants.MUTATIONS.items()
                                        if m.kernel == "routing"))
def test_some_moe_property_rejects_routing_mutant(name):
    """Meta-test: the generic routing properties, too, catch each wrong routing kernel."""
    from gpu import mutants
    from gpu.adapters import routing_adapter
    from properties.core import find_counterexample

    wrong = routing_adapter(mutants.backend(name, "opencl"), token_block=8, scan_block=4, name=f"mutant-{name}")
    caught = []
    for p in (p.values[0] for p in PAIRS):
        try:
            if find_counterexample(p, wrong, max_examples=100) is not None:
                caught.append(p.name)
                break
        except RuntimeError as e:  # an element never written: caught by the facade
            caught.append(f"{p.name} (facade: {str(e)[:80]})")
            break
    assert caught, f"no routing property rejects mutant {name}"
    print(f"mutant {name}: rejected by {caught[0]}")
