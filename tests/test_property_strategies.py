"""What the conformance draws and bounds reach: each hard-case strategy (scaling bands, shifted
rows, extreme gates, decays, exponents and scores, fixed chunk sizes) exposes a wrong implementation
that the ordinary draws pass, the mixers' bounds keep their margin on every correct form, and a
correct twin of the wrong fused MoE kernels passes what rejects them. ``-s`` prints the measured
mixer error / bound ratios.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from properties import distributed as DP
from properties import mixers_common, mixers_linear, mixers_scan, norms
from properties import moe as MP
from properties import rope as R
from properties.core import Declared, find_counterexample, run_property

from ._meta import assert_rejects

MIXER_MODULES = (mixers_linear, mixers_scan)
MIXER_PROPS = [p for m in MIXER_MODULES for p in m.PROPERTIES]
MIXER_WRONG = {name: impl for m in MIXER_MODULES for name, impl in m.WRONG.items()}


# --- RoPE scalings ----------------------------------------------------------------------------


def test_every_llama3_and_yarn_draw_fills_every_band():
    """Stratified scalings: each rope_type is drawn, and every yarn / llama3 case has a frequency
    in each of its bands (so a mistake confined to one band is always reachable)."""
    seen = set()

    @settings(max_examples=300, database=None, derandomize=True, deadline=None)
    @given(case=R.rope_case(Declared(R.ALL_CAPS)))
    def draw(case):
        sc = case.kwargs.get("scaling")
        seen.add(sc and sc["rope_type"])
        if sc and sc["rope_type"] in ("yarn", "llama3"):
            d = case.kwargs.get("rotary_dim") or case.x.shape[-1]
            assert min(R.scaling_bands(d, case.kwargs["base"], sc)) > 0, case

    draw()
    assert seen == set(R.ROPE_TYPES), seen


def test_llama3_band_mistake_needs_the_smoothed_band():
    """Where no frequency falls in llama3's smoothed band (rotary dim 2, as the unstratified draws
    gave), dividing that band by the factor changes nothing: only the banded draws expose it."""
    sc = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    assert R.scaling_bands(2, 100.0, sc)[1] == 0
    x, pos = np.random.default_rng(0).standard_normal((1, 1, 4, 2)), np.arange(4) * 1000
    kw = dict(rotary_dim=2, base=100.0, scaling=sc)
    assert np.array_equal(R.WRONG["llama3_smooth_band_divided"].apply(x, pos, **kw), R.BUNDLED[1].apply(x, pos, **kw))


# --- norms ------------------------------------------------------------------------------------


def test_variance_by_moments_needs_the_shifted_rows():
    """A LayerNorm variance taken as E[x^2] - E[x]^2 stays inside the float64 bound on rows
    shifted by 5x their spread (the old draws) and leaves it at 1e4 and 1e8 (norms.SHIFTS)."""
    wrong = norms.WRONG["layer_norm_variance_by_moments"]
    rng = np.random.default_rng(1)
    for shift, caught in ((5.0, False), (1e4, True), (1e8, True)):
        x = rng.standard_normal((3, 33)) + shift
        case = norms.NormCase(x, None, None, np.ones_like(x), 1e-5, 0)
        norms.check_layer_norm(norms.REFIMPL, case)  # the spec itself is inside its bound there
        try:
            norms.check_layer_norm(wrong, case)
            rejected = False
        except AssertionError:
            rejected = True
        assert rejected == caught, shift


# --- MoE ---------------------------------------------------------------------------------------


def test_a_correct_fused_forward_passes_what_rejects_the_wrong_ones():
    """The wrong fused kernels (properties.moe_wrong._fused) differ from a correct fused forward over
    properties.moe_protocol.fused_expert_weights by their one bug: that forward passes."""
    from properties import moe_wrong

    prop = next(p for p in MP.PROPERTIES if p.name == "moe_fused_forward")
    run_property(prop, moe_wrong._fused(None))


# --- the context-parallel ring ----------------------------------------------------------------


def test_only_the_extreme_strategy_exposes_the_unshifted_merge():
    """A ring merge without the max shift is right while every partial lse stays below ~709:
    the ordinary draws never see it, the extreme-scores draws do."""
    props = {p.name: p for p in DP.PROPERTIES}
    wrong = DP.WRONG["ring_merge_no_max_shift"]
    assert find_counterexample(props["cp_ring_forward_matches_attention"], wrong, max_examples=100) is None
    assert_rejects(props["cp_ring_extreme_scores"], wrong)


# --- the linear-time mixers -------------------------------------------------------------------


def test_mixer_bounds_have_margin_on_the_correct_forms():
    """Each bound is 4 gamma_n M (two implementations, factor 2 spare); measured on every bundled form
    the difference stays under a quarter of it, i.e. within the one-implementation bound gamma_n M.
    The ratios are printed with -s (the figures in the report)."""
    mixers_common.MEASURED.clear()
    for prop in MIXER_PROPS:
        for impl in (i for m in MIXER_MODULES for i in m.BUNDLED):
            if impl.kind == prop.kind and prop.requires <= frozenset(impl.capabilities):
                run_property(prop, impl, max_examples=25, derandomize=True, database=None)
    assert set(mixers_common.MEASURED) == {p.name for p in MIXER_PROPS}
    for name, ratio in sorted(mixers_common.MEASURED.items()):
        print(f"measured {name}: max error / bound = {ratio:.3g}")
        assert ratio < 0.25, (name, ratio)


def test_an_adapter_with_fixed_chunk_sizes_is_run_across_its_chunk_boundaries():
    """A kernel supporting only chunk sizes 16 and 32 is driven at those sizes with lengths L + m C;
    the same kernel dropping the carried state is rejected."""
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
    props = {p.name: p for p in MIXER_PROPS}
    assert wrong in props[extreme].rejects
    assert find_counterexample(props[ordinary], MIXER_WRONG[wrong], max_examples=300) is None


def test_strategy_cache_reuses_one_object_per_arguments_and_keeps_distinct_values_apart():
    """properties.strategy_cache: the same arguments give the same strategy object (built once);
    values equal under == but different to draw (1 and 1.0, 0.0 and -0.0) get their own; a
    declaration's tiles are part of the shapes it draws (Declared compares equal across tiles)."""
    from properties import attention_cases as C
    from properties.strategy_cache import sampled

    assert sampled(("a", 1)) is sampled(("a", 1))
    assert sampled((1,)) is not sampled((1.0,)) and sampled((0.0,)) is not sampled((-0.0,))

    @settings(max_examples=5, database=None)
    @given(a=sampled((-0.0,)), b=sampled((0.0,)), c=sampled((1.0,)))
    def draws(a, b, c):
        assert np.signbit(a) and not np.signbit(b) and type(c) is float

    draws()
    small, big = Declared({"gqa"}, tiles=(2,)), Declared({"gqa"}, tiles=(64,))
    assert small == big and C.shapes(small) is C.shapes(small) and C.shapes(small) is not C.shapes(big)
