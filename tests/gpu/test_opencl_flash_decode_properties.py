"""The conformance suite's "flash" and "decode" kinds run against the OpenCL kernels
through adapters of those kinds (float32), the protocol a user's kernel meets:

* ``gpu.adapters.opencl_flash``: forward (FA2), backward from the saved (out, lse) and
  split-KV, at 3 x 3 tiles (lengths around multiples of 3) and key partitions it draws (empty chunks
  and chunks some rows cannot see included): properties.flash;
* ``gpu.adapters.opencl_paged_decode``: a decoding loop (token by token, chunked, prefill)
  over a paged cache whose attention is the paged-attention kernel: properties.decode.

Each split-KV and paged mutant is shown to be rejected by these generic properties too."""

from __future__ import annotations

import pytest

from gpu import mutants
from gpu.adapters import flash_adapter, opencl_flash, opencl_paged_decode, paged_decode_adapter
from properties import decode as DEC
from properties import flash as FL
from properties.core import find_counterexample, run_property, supports

from .support import opencl_backend_or_missing

ADAPTERS = opencl_flash() + opencl_paged_decode()
PAIRS = [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in FL.PROPERTIES + DEC.PROPERTIES for a in ADAPTERS
         if p.kind == a.kind and supports(a, p)]


@pytest.fixture(scope="module", autouse=True)
def _opencl():
    opencl_backend_or_missing()


def test_properties_apply():
    assert {p.values[0].name for p in PAIRS} == {
        "flash_matches_attention", "flash_backward_matches_reference", "flash_backward_finite_differences",
        "split_kv_matches_attention", "decode_equals_prefill"}


@pytest.mark.parametrize("prop, impl", PAIRS)
def test_property_on_opencl_kernel(prop, impl):
    rec = run_property(prop, impl)
    print(f"{prop.name} on {impl.name}: {rec.status}, {rec.examples} examples, worst {rec.worst}")


@pytest.mark.parametrize("name, prop", [("split_merge_no_rescale", FL.PROPERTIES), ("block_table_off_by_one", DEC.PROPERTIES)])
def test_some_property_rejects_mutant(name, prop):
    """Meta-test: a generic property of the kernel's kind catches the wrong kernel."""
    be = mutants.backend(name, "opencl")
    wrong = flash_adapter(be, name=f"mutant-{name}") if mutants.MUTATIONS[name].kernel == "split_kv" else \
        paged_decode_adapter(be, block_q=2, block_k=3, name=f"mutant-{name}")
    want = "split_kv_matches_attention" if wrong.kind == "flash" else "decode_equals_prefill"
    p = next(p for p in prop if p.name == want)
    assert find_counterexample(p, wrong, max_examples=200) is not None, f"{want} accepts mutant {name}"
    print(f"mutant {name}: rejected by {want}")
