"""Linear-time mixer properties (linear attention, delta rule, WKV, selective scan) with meta-tests.

Each bundled adapter is one form of the spec (recurrent, parallel, chunked, stable, associative,
convolution) checked against the recurrent definition; the meta-tests assert each property
rejects the wrong implementations it names. ``-s`` prints the measured error / bound ratios.
"""

import pytest

from properties import mixers_common, mixers_linear, mixers_scan

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

MODULES = (mixers_linear, mixers_scan)
PROPS = [p for m in MODULES for p in m.PROPERTIES]
IMPLS = [p for m in MODULES for kind in {a.kind for a in m.BUNDLED}
         for p in impl_params([a for a in m.BUNDLED if a.kind == kind], kind)]
WRONG = {name: impl for m in MODULES for name, impl in m.WRONG.items()}


@pytest.mark.parametrize("prop, impl", property_impl_params(PROPS, IMPLS))
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(PROPS, WRONG))
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_kinds_declare_every_capability_the_bundled_adapters_use():
    for m in MODULES:
        kinds = {k.name: k for k in m.KINDS}
        for impl in list(m.BUNDLED) + list(m.WRONG.values()):
            kind = kinds[impl.kind]
            assert set(impl.capabilities) <= set(kind.capabilities), (impl.name, set(impl.capabilities) - set(kind.capabilities))
            for meth in kind.required + tuple(x for c in impl.capabilities for x in kind.capabilities[c].methods):
                assert callable(getattr(impl, meth, None)), f"{impl.name} lacks {meth}"
        assert {p.kind for p in m.PROPERTIES} <= set(kinds)


def test_bounds_have_margin_on_the_correct_forms():
    """Each bound is 4 gamma_n M (two implementations, factor 2 spare); measured on every bundled form
    the difference stays under a quarter of it, i.e. within the one-implementation bound gamma_n M.
    The ratios are printed with -s (the figures in the report)."""
    mixers_common.MEASURED.clear()
    for prop in PROPS:
        for p in IMPLS:
            impl = p.values[0]
            if impl.kind == prop.kind and prop.requires <= frozenset(impl.capabilities):
                run_property(prop, impl, max_examples=25, derandomize=True, database=None)
    assert set(mixers_common.MEASURED) == {p.name for p in PROPS}
    for name, ratio in sorted(mixers_common.MEASURED.items()):
        print(f"measured {name}: max error / bound = {ratio:.3g}")
        assert ratio < 0.25, (name, ratio)


def test_an_adapter_with_fixed_chunk_sizes_is_run_across_its_chunk_boundaries():
    """A kernel supporting only chunk sizes 16 and 32 is driven at those sizes with lengths L + m C;
    the same kernel dropping the carried state is rejected."""
    import dataclasses

    from refimpl.mixers import delta_rule as DR
    from refimpl.mixers import gated as GL

    seen = []

    def fwd(q, k, v, g, scale, chunk_size):
        assert chunk_size in (16, 32), chunk_size
        seen.append((chunk_size, q.shape[2]))
        return GL.gated_linear_attention(q, k, v, g, scale=scale, form="chunked", chunk_size=chunk_size)

    good = mixers_linear.LinearAttentionAdapter("fixed16_32", fwd, capabilities=frozenset({"chunked", "gate_scalar"}),
                                                chunk_sizes=(16, 32))
    prop = next(p for p in mixers_linear.PROPERTIES if p.name == "la_matches_recurrent")
    run_property(prop, good, max_examples=30)
    assert any(L > c for c, L in seen) and any(L % c for c, L in seen)
    bad = dataclasses.replace(mixers_linear.WRONG["chunk_state_dropped"], chunk_sizes=(16, 32))
    assert_rejects(prop, bad, max_examples=100)

    def dfwd(q, k, v, beta, g, scale, chunk_size):
        assert chunk_size == 16
        return DR.delta_rule(q, k, v, beta, g, scale=scale, form="chunked", chunk_size=chunk_size)

    dgood = mixers_linear.DeltaRuleAdapter("delta16", dfwd, frozenset({"chunked", "gated"}), chunk_sizes=(16,))
    for p in mixers_linear.PROPERTIES:
        if p.kind == "delta_rule":
            run_property(p, dgood, max_examples=20)


EXTREME = [("la_extreme_gates", "la_matches_recurrent", "factorised_decay"),
           ("delta_extreme_gates", "delta_matches_recurrent", "delta_gate_clamped"),
           ("wkv_extreme_exponents", "wkv_matches_definition", "wkv_bonus_clamped"),
           ("scan_extreme_decays", "scan_matches_sequential", "scan_log_decay")]


@pytest.mark.parametrize("extreme, ordinary, wrong", EXTREME)
def test_extreme_strategy_exposes_what_the_ordinary_one_cannot(extreme, ordinary, wrong):
    """Each exponential mixer kind's extreme strategy (gates and decays near their floor, WKV's
    exponents past e^709) rejects a wrong implementation that the ordinary strategy passes at
    suite sizes (300 examples here; the meta-tests show the extreme property rejecting it)."""
    from properties.core import find_counterexample

    props = {p.name: p for p in PROPS}
    assert wrong in props[extreme].rejects
    assert find_counterexample(props[ordinary], WRONG[wrong], max_examples=300) is None
