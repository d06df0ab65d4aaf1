"""refimpl's attention conformance properties (properties.attention) run against
the OpenCL kernel, with Hypothesis drawing the problems (shapes, alignment,
windows, GQA, softcap, scale, extreme scores): the generic suite a user would
point at their own kernel, here pointed at ours. Properties needing features
the kernel does not declare (mask arrays, bias, dropout, backward) are not run.
"""

from __future__ import annotations

import pytest

from gpu.adapters import opencl_attention
from properties import attention as A
from properties.core import run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_attention()
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}")
         for p in A.PROPERTIES for a in ADAPTERS if supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_property_on_opencl_kernel(prop, impl):
    run_property(prop, impl)


def test_unsupported_properties_are_named():
    """The kernel's missing features are reported, not counted as passes."""
    skipped = {p.name for p in A.PROPERTIES if not supports(ADAPTERS[0], p)}
    ran = {p.name for p in A.PROPERTIES if supports(ADAPTERS[0], p)}
    assert "matches_reference" in ran and "causal_ignores_future" in ran and "window_ignores_outside" in ran
    assert skipped <= {"key_permutation_invariance", "fully_masked_rows", "backward_finite_differences",
                       "backward_matches_reference", "dropout_keep_mask"} | {
        p.name for p in A.PROPERTIES if p.requires - ADAPTERS[0].capabilities}
