"""Declarations of kernels that compute part of what a kind describes: a causal-only attention
kernel (``declines={"causal": {"non_causal"}}``), a kernel of the gated product alone
(``gated_only``, which waives ``act`` and ``ffn``), an SSD kernel of one decay per head
(``declines={"decay": {"per_channel"}}``). The suite draws only what is declared, reports the
rest as unsupported or not drawn (never passed), and a wrong kernel under such a declaration is
still rejected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis.errors import NoSuchExample

from properties import attention as A
from properties import ffn as F
from properties import mixers_scan as MS
from properties.attention_impls import naive_adapter
from properties.core import declared, find_counterexample, not_drawn, run_property, unsupported_reason
from properties.protocol import validate
from properties.registry import all_kinds
from refimpl import ffn as Fn

_QUICK = settings(max_examples=60, database=None, derandomize=True, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow], phases=[Phase.generate])


def _causal_only(**kw):
    caps = frozenset({"causal", "window", "gqa", "lq_ne_lk", "scale", "mask_array"})
    return dataclasses.replace(naive_adapter(), name="naive.causal_only", capabilities=caps,
                               declines={"causal": {"non_causal"}, **kw})


def test_causal_only_adapter_is_drawn_causal_cases_only():
    impl = _causal_only()
    for prop in A.PROPERTIES:
        if unsupported_reason(impl, prop) is None:
            with pytest.raises(NoSuchExample):
                find(prop.strategy(declared(impl)), lambda c: not c.kwargs.get("causal"), settings=_QUICK)
    perm = next(p for p in A.PROPERTIES if p.name == "key_permutation_invariance")
    assert "non_causal" in unsupported_reason(impl, perm)  # its permuted call is non-causal
    assert "causal=non_causal (declined)" in not_drawn(impl)
    assert "softcap (capability not declared)" in not_drawn(impl)


def test_causal_only_passes_are_recorded_with_what_was_not_drawn():
    rec = run_property(A.PROPERTIES[0], _causal_only(), max_examples=5, database=None, deadline=None)
    assert rec.status == "pass" and "causal=non_causal (declined)" in rec.not_drawn


def test_declining_non_causal_without_the_causal_capability_runs_nothing():
    impl = dataclasses.replace(naive_adapter(), name="naive.nothing", capabilities=frozenset({"gqa"}),
                               declines={"causal": {"non_causal"}})
    assert all(unsupported_reason(impl, p) for p in A.PROPERTIES)


def test_wrong_kernel_under_a_causal_only_declaration_is_still_rejected():
    wrong = dataclasses.replace(A.WRONG["top_left_for_bottom_right"], declines={"causal": {"non_causal"}})
    prop = next(p for p in A.PROPERTIES if p.name == "causal_ignores_future")
    assert find_counterexample(prop, wrong) is not None


def test_gated_only_waives_act_and_ffn_and_their_properties_are_unsupported():
    kinds = all_kinds()
    impl = F.FFNAdapter("k.gated", None, None, capabilities=frozenset({"gated_only"}), gated=F.REFIMPL.gated)
    assert validate(impl, kinds) == []
    full = F.FFNAdapter("k.no_decl", None, None, capabilities=frozenset(), gated=F.REFIMPL.gated)
    assert any("required method 'act'" in p for p in validate(full, kinds))
    by_name = {p.name: p for p in F.PROPERTIES}
    for name in ("activation_matches_definition", "ffn_matches"):
        assert "partial declaration" in unsupported_reason(impl, by_name[name])
    assert unsupported_reason(impl, by_name["gated_matches"]) is None
    run_property(by_name["gated_matches"], impl, max_examples=10, database=None, deadline=None)


def test_declined_activations_are_never_drawn():
    impl = F.FFNAdapter("k.swiglu", None, None, capabilities=frozenset({"gated_only"}), gated=F.REFIMPL.gated,
                        declines={"activation": {a for a in Fn.ACTIVATIONS if a != "silu"}})

    @_QUICK
    @given(F.gated_case(declared(impl)))
    def check(case):
        assert case.activation == "silu"

    check()


def test_ssd_declaration_draws_one_decay_per_head():
    impl = next(a for a in MS.BUNDLED if a.name == "refimpl.ssd[chunked]")
    for prop in MS.PROPERTIES:
        if prop.kind != "ssm_scan":
            continue

        @_QUICK
        @given(prop.strategy(declared(impl)))
        def check(c):
            assert np.all(c.A == c.A[:, :1, :1]) and np.all(c.delta == c.delta[..., :1])

        check()
