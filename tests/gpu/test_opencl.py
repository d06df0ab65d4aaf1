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


@pytest.mark.parametrize("case", C.cases_for("attention"), ids=lambda c: c.name)
def test_attention_matches_refimpl(opencl, case):
    figures = C.check_attention(opencl, case)
    assert figures["err_out"] <= figures["bound_out"]


@pytest.mark.parametrize("case", C.cases_for("routing"), ids=lambda c: c.name)
def test_routing_matches_refimpl(opencl, case):
    C.check_routing(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("attention_backward"), ids=lambda c: c.name)
def test_attention_backward_matches_refimpl(opencl, case):
    C.check_attention_backward(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("split_kv"), ids=lambda c: c.name)
def test_split_kv_matches_refimpl(opencl, case):
    C.check_split_kv(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("paged"), ids=lambda c: c.name)
def test_paged_matches_refimpl(opencl, case):
    C.check_paged(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("norm"), ids=lambda c: c.name)
def test_norm_matches_refimpl(opencl, case):
    C.check_norm(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("rope"), ids=lambda c: c.name)
def test_rope_matches_refimpl(opencl, case):
    C.check_rope(opencl, case)


@pytest.mark.parametrize("case", C.cases_for("moe"), ids=lambda c: c.name)
def test_moe_matches_refimpl(opencl, case):
    C.check_moe(opencl, case)


@pytest.mark.parametrize("name", sorted(mutants.MUTATIONS))
def test_mutant_is_rejected(opencl, name):
    """Meta-test: the deliberately wrong kernel fails at least one execution check."""
    m = mutants.MUTATIONS[name]
    be = mutants.backend(name, "opencl")
    case, message = C.find_rejecting_case(be, m.kernel, name)
    assert case is not None, f"mutant {name} ({m.doc}) passed every {m.kernel} case: the checks are too weak"
    print(f"mutant {name}: rejected by case {case}: {message}")


def test_rejected_first_by_names_mutants_and_default_cases():
    """C.REJECTED_FIRST_BY only orders the search; a stale name would silently order nothing."""
    names = {case.name for kernel in C.KERNELS for case in C.cases_for(kernel, include_thorough=False)}
    assert set(C.REJECTED_FIRST_BY) <= set(mutants.MUTATIONS)
    assert set(C.REJECTED_FIRST_BY.values()) <= names
    assert set(C.SIMULATOR_THOROUGH_ONLY) <= names


# ---------------------------------------------------------------------------
# routing on random problems (Hypothesis draws shapes and conventions)

from hypothesis import given, strategies as st  # noqa: E402


@st.composite
def routing_cases(draw):
    E = draw(st.integers(1, 9))
    k = draw(st.integers(1, E))
    T = draw(st.integers(1, 40))
    opts = {"normalize": draw(st.sampled_from(["none", "before_drop", "after_drop"])),
            "score": draw(st.sampled_from(["softmax", "sigmoid"])),
            "drop_order": draw(st.sampled_from(["k_major", "token_major"]))}
    cap = draw(st.one_of(st.none(), st.integers(0, T * k + 1)))
    if cap is not None:
        opts["capacity"] = cap
    if draw(st.booleans()):
        opts["padding_mask"] = "random"
    return C.RoutingCase("drawn", T, E, k, opts, (draw(st.sampled_from([1, 8, 64])), draw(st.sampled_from([1, 3, 16]))),
                         draw(st.sampled_from(["grid", "ties", "one_expert"])), seed=draw(st.integers(0, 2**31)))


@given(case=routing_cases())
def test_routing_random_problems(case):
    C.check_routing(opencl_backend_or_missing(), case)
