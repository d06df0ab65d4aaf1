"""Adapters declaring a library's convention, and the attention options real kernels need.

* An xformers-convention adapter (a torch port of xformers' ``ref_attention``: NaN for a
  fully masked row) passes every attention property under ``convention="xformers"``, and an
  HF-eager-style one (mean of the values) under ``"hf_mistral"``; without the declaration
  they fail, and declaring a convention they do not follow fails too.
* ``convention`` is validated at load time; duplicate adapter names are a load error.
* key_padding_mask, alibi_slopes, sinks and varlen keywords checked against real libraries
  on the CPU (torch SDPA, HF gpt-oss eager attention) and their wrong implementations rejected.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

import refimpl
from properties import attention as A
from properties import attention_cases as C
from properties.attention_impls import naive_adapter, naive_attention
from properties.core import ProtocolError, check_adapter, check_unique_names, declared, find_counterexample, run_property
from refimpl import masks as M
from refimpl.conventions import PRESETS
from refimpl.sinks import apply_sinks, attention_with_sinks

torch = pytest.importorskip("torch")

from properties.convention_adapters import hf_eager, xformers_reference  # noqa: E402

PROPS = {p.name: p for p in A.PROPERTIES}


def _runnable(impl):
    return [p for p in A.PROPERTIES if p.requires <= frozenset(impl.capabilities)]


@pytest.mark.parametrize("factory", [xformers_reference, hf_eager])
def test_convention_adapter_passes_every_property(factory):
    impl = factory()
    props = _runnable(impl)
    assert len(props) >= 10
    for prop in props:
        run_property(prop, impl, max_examples=12, database=None, derandomize=True, deadline=None)


@pytest.mark.parametrize("factory", [xformers_reference, hf_eager])
def test_without_its_convention_the_adapter_fails(factory):
    """The declaration is what makes it pass: the spec's zero rows reject it."""
    impl = dataclasses.replace(factory(), convention=None)
    for name in ("fully_masked_rows", "matches_reference"):
        assert find_counterexample(PROPS[name], impl, max_examples=200) is not None, name


def test_declaring_a_convention_the_adapter_does_not_follow_fails():
    """The spec's naive attention (rows 0) declared as xformers (rows NaN) or hf_mistral (mean)."""
    for conv in ("xformers", "hf_mistral", "flash_attn2"):
        impl = dataclasses.replace(naive_adapter(), convention=conv, name=f"naive_as_{conv}",
                                   capabilities=naive_adapter().capabilities - {"backward", "dropout"})
        assert find_counterexample(PROPS["fully_masked_rows"], impl, max_examples=200) is not None, conv


def test_convention_still_checks_everything_else():
    """A wrong kernel under a convention is still wrong: NaN rows plus a causal off-by-one."""
    bad = naive_adapter("top_left_for_bottom_right")

    def forward(q, k, v, **kw):
        out, lse = bad.forward(q, k, v, **kw)
        return np.where(np.isneginf(lse)[..., None], np.nan, out), None

    impl = dataclasses.replace(xformers_reference(), name="wrong_xformers", forward=forward, precision="float64")
    assert find_counterexample(PROPS["matches_reference"], impl, max_examples=300) is not None


def test_convention_validated_at_load_time():
    impl = dataclasses.replace(naive_adapter(), convention="xformer")
    with pytest.raises(ProtocolError, match="valid conventions: .*'xformers'"):
        check_adapter(impl)
    check_adapter(dataclasses.replace(naive_adapter(), convention="xformers"))
    from properties.rope import BUNDLED as ROPES

    with pytest.raises(ProtocolError, match="has no conventions"):
        check_adapter(_with(ROPES[0], convention="xformers"))


def _with(obj, **fields):
    try:
        return dataclasses.replace(obj, **fields)
    except TypeError:
        import copy

        o = copy.copy(obj)
        for k, v in fields.items():
            object.__setattr__(o, k, v)
        return o


def test_duplicate_adapter_names_are_a_load_error(monkeypatch):
    a = naive_adapter()
    with pytest.raises(ProtocolError, match="named twice"):
        check_unique_names([a, dataclasses.replace(a, forward=refimpl.attention)])
    check_unique_names([a, a])  # the same object listed twice is one adapter
    import properties.core as core
    import sys
    import types

    mod = types.ModuleType("dup_adapters_for_test")
    mod.pair = [dataclasses.replace(a, name="user.same"), dataclasses.replace(a, name="user.same")]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setenv("REFIMPL_IMPLS", "dup_adapters_for_test:pair")
    with pytest.raises(ProtocolError, match="user.same"):
        core.load_user_implementations()
    mod.bundled_name = dataclasses.replace(a, forward=refimpl.attention)  # named like a bundled adapter
    monkeypatch.setenv("REFIMPL_IMPLS", "dup_adapters_for_test:bundled_name")
    with pytest.raises(ProtocolError, match="named twice"):
        core.load_user_implementations()


def test_preset_apply_equals_preset_attention():
    """AttentionConvention.apply on the spec's result is the preset's own attention."""
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((1, 2, 5, 3)), rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((1, 1, 3, 2))
    for name in ("xformers_bottom_right", "flash_attn3", "jax"):
        p = PRESETS[name]
        win = (0, 0) if name != "flash_attn3" else (0, -1)
        expect = p.attention(q, k, v, causal=True, window=win)
        spec_win, _ = p.window(win, 5, 3)
        out, lse = refimpl.attention(q, k, v, causal=True, window=spec_win, align=p.align)
        got = p.apply(q, v, out, lse)
        np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(expect[0]))
        np.testing.assert_allclose(np.nan_to_num(got[0]), np.nan_to_num(expect[0]), rtol=0, atol=0)
        if expect[1] is not None:
            np.testing.assert_array_equal(got[1], expect[1])


# ----------------------------------------------------------------------------
# declarations: window only with causal, Lk >= Lq only


@settings(max_examples=80, deadline=None, database=None)
@given(case=C.attention_case(declared(dataclasses.replace(
    naive_adapter(), declines={"window_causal": {"without_causal"}, "lengths": {"lq_gt_lk"}}))))
def test_declined_window_without_causal_and_lq_gt_lk_never_drawn(case):
    if case.kwargs.get("window") is not None:
        assert case.kwargs.get("causal") is True
    assert case.q.shape[2] <= case.k.shape[2]
    if case.kwargs.get("cu_seqlens_q") is not None:
        assert np.all(np.diff(case.kwargs["cu_seqlens_q"]) <= np.diff(case.kwargs["cu_seqlens_k"]))


def test_windowed_property_honours_window_causal_decline():
    impl = dataclasses.replace(naive_adapter(), declines={"window_causal": {"without_causal"}})
    seen = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(case=PROPS["window_ignores_outside"].strategy(declared(impl)))
    def draw(case):
        seen.append(case.kwargs.get("causal"))

    draw()
    assert seen and all(seen)


# ----------------------------------------------------------------------------
# the new keywords against real libraries (CPU)


def test_key_padding_mask_matches_torch_sdpa():
    """torch 2.13 scaled_dot_product_attention with attn_mask = key_padding_mask[:, None, None, :]
    (the (B, 1, 1, Lk) form HF builds from attention_mask) equals the spec's key_padding_mask."""
    rng = np.random.default_rng(0)
    B, H, Lq, Lk, D = 3, 2, 4, 6, 5
    q, k, v = (rng.standard_normal(s) for s in ((B, H, Lq, D), (B, H, Lk, D), (B, H, Lk, D)))
    kpm = rng.random((B, Lk)) < 0.7
    kpm[:, 0] = True
    case = C.AttnCase(q, k, v, {"key_padding_mask": kpm}, 0)
    ref, _ = C.reference(naive_adapter(), case)
    t = [torch.as_tensor(a) for a in (q, k, v)]
    got = torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=torch.as_tensor(kpm)[:, None, None, :])
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-13, rtol=0)
    # and a padding applied to queries instead is a different answer
    bad, _ = naive_attention(q, k, v, key_padding_mask=kpm, bug="padding_on_queries")
    assert not np.allclose(bad, ref)


def test_sinks_match_hf_gpt_oss_eager_attention():
    """transformers 5.25 models/gpt_oss/modeling_gpt_oss.py eager_attention_forward (float64 on the
    CPU) equals refimpl.sinks.attention_with_sinks, GQA and a causal mask included."""
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    rng = np.random.default_rng(1)
    B, Hq, Hkv, L, D = 2, 4, 2, 5, 8
    q, k, v = rng.standard_normal((B, Hq, L, D)), rng.standard_normal((B, Hkv, L, D)), rng.standard_normal((B, Hkv, L, D))
    sinks = rng.standard_normal(Hq) * 2

    class Module(torch.nn.Module):
        num_key_value_groups = Hq // Hkv
        training = False

    mod = Module()
    mod.sinks = torch.nn.Parameter(torch.as_tensor(sinks))
    causal = torch.triu(torch.full((L, L), float("-inf"), dtype=torch.float64), diagonal=1)[None, None]
    out, _ = eager_attention_forward(mod, *(torch.as_tensor(a) for a in (q, k, v)), causal, scaling=D ** -0.5)
    ref, lse = attention_with_sinks(q, k, v, sinks, causal=True)
    np.testing.assert_allclose(out.detach().numpy().transpose(0, 2, 1, 3), ref, atol=1e-13, rtol=0)
    # the naive (gpt-oss sdpa form: softmax over [scores, sink], sink column dropped) agrees too
    nv, nlse = naive_attention(q, k, v, causal=True, sinks=sinks)
    np.testing.assert_allclose(nv, ref, atol=1e-13, rtol=0)
    np.testing.assert_allclose(nlse, lse, atol=1e-13, rtol=0)


def test_sinks_fully_masked_row_and_weights():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 3, 4))
    mask = np.ones((3, 3), bool)
    mask[1] = False
    s = np.array([0.5, -1.0])
    out, lse = attention_with_sinks(q, k, v, s, mask=mask)
    assert np.all(out[:, :, 1] == 0) and np.array_equal(lse[:, :, 1], np.broadcast_to(s[None, :], (1, 2)))
    # weights sum to sigmoid(lse0 - s) < 1: with v = 1 the output is that sum
    out1, _ = attention_with_sinks(q, k, np.ones_like(v), s)
    _, lse0 = refimpl.attention(q, k, v)
    np.testing.assert_allclose(out1[..., 0], 1 / (1 + np.exp(s[None, :, None] - lse0)), atol=1e-15)
    with pytest.raises(ValueError, match="sinks"):
        apply_sinks(out, lse, np.zeros(3))


def test_varlen_matches_separate_sequences_and_xformers_block_semantics():
    """Packed attention equals each sequence run alone (flash_attn_varlen_func; xformers
    BlockDiagonalCausalFromBottomRightMask per block bottom-right, BlockDiagonalCausalMask top-left)."""
    rng = np.random.default_rng(4)
    lens_q, lens_k = (2, 3, 1), (4, 3, 2)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)])
    cu_k = np.concatenate([[0], np.cumsum(lens_k)])
    H, D = 2, 3
    q, k, v = (rng.standard_normal((1, H, n, D)) for n in (cu_q[-1], cu_k[-1], cu_k[-1]))
    for align in ("bottom_right", "top_left"):
        case = C.AttnCase(q, k, v, {"cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "causal": True, "align": align}, 0)
        packed, _ = C.reference(naive_adapter(), case)
        for s in range(3):
            qs, ks = slice(cu_q[s], cu_q[s + 1]), slice(cu_k[s], cu_k[s + 1])
            alone, _ = refimpl.attention(q[:, :, qs], k[:, :, ks], v[:, :, ks], causal=True, align=align)
            np.testing.assert_allclose(packed[:, :, qs], alone, atol=1e-15)
        wrong, _ = naive_attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, align=align,
                                   bug="varlen_packed_causal")
        assert not np.allclose(wrong, packed)
    # xformers BlockDiagonalCausalMask == Document & top-left Causal when every block is square
    sq = np.array([0, 2, 5])
    vl = M.Varlen(sq, sq, causal=True, align="top_left").materialize(5, 5)
    doc = (M.Document(np.repeat([0, 1], [2, 3])) & M.Causal(align="top_left")).materialize(5, 5)
    np.testing.assert_array_equal(vl, doc)


def test_alibi_slopes_match_the_bias_form_and_reject_top_left_distances():
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((2, 4, 3, 4)), rng.standard_normal((2, 4, 6, 4)), rng.standard_normal((2, 4, 6, 4))
    slopes = refimpl.alibi_slopes(4) if hasattr(refimpl, "alibi_slopes") else __import__("refimpl.alibi").alibi.alibi_slopes(4)
    case = C.AttnCase(q, k, v, {"alibi_slopes": slopes, "causal": True}, 0)
    ref, _ = C.reference(naive_adapter(), case)
    from refimpl.alibi import alibi_bias

    direct, _ = refimpl.attention(q, k, v, causal=True, bias=alibi_bias(slopes, 3, 6))
    np.testing.assert_allclose(ref, direct, atol=1e-15)
    got, _ = naive_attention(q, k, v, alibi_slopes=slopes, causal=True)
    np.testing.assert_allclose(got, ref, atol=1e-13)
    bad, _ = naive_attention(q, k, v, alibi_slopes=slopes, bug="alibi_top_left")
    good, _ = naive_attention(q, k, v, alibi_slopes=slopes)
    assert not np.allclose(bad, good)


# ----------------------------------------------------------------------------
# decode declines


def test_decode_declines_are_never_drawn():
    from properties import decode as DEC

    impl = dataclasses.replace(DEC.BUNDLED[1], declines={"rope_layout": {"interleaved"}, "head_dims": {"dv_ne_d"},
                                                         "window_cache": {"paged"}, "softcap": {30.0}})
    check_adapter(impl)
    seen = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(case=DEC.decode_case(declared(impl)))
    def draw(case):
        seen.append(case)
        assert case.rope is None or case.rope["layout"] == "half"
        assert case.v.shape[-1] == case.q.shape[-1]
        assert not (case.cache == "paged" and case.window is not None)
        assert case.softcap in (None, 5.0)

    draw()
    assert any(c.softcap == 5.0 for c in seen) and any(c.rope for c in seen)


# ----------------------------------------------------------------------------
# rope: a maximum position


def test_rope_max_len_bounds_every_position_the_suite_passes():
    """A cos/sin table of max_len rows: an adapter that fails on any position >= max_len passes
    every rope property, because none is drawn or shifted that far."""
    from properties import rope as RP

    limit = 50

    def apply(x, positions, **kw):
        assert np.max(positions) < limit and np.min(positions) >= 0, positions
        return refimpl.apply_rope(x, positions, **kw)

    impl = RP.RopeAdapter("table_rope", apply, RP.ALL_CAPS, max_len=limit)
    check_adapter(impl)
    for prop in RP.PROPERTIES:
        run_property(prop, impl, max_examples=15, database=None, derandomize=True, deadline=None)


# ----------------------------------------------------------------------------
# losses: declining the all-ignored batch


def _torch_ce(z, t, ii):
    return float(torch.nn.functional.cross_entropy(torch.as_tensor(z), torch.as_tensor(t), ignore_index=int(ii)))


def test_torch_cross_entropy_passes_once_it_declines_the_all_ignored_batch():
    """torch 2.13 F.cross_entropy(reduction='mean') is 0/0 = NaN when every target is ignored;
    the spec says 0. Declining 'all' leaves every other case checked."""
    from properties import losses as LS

    prop = next(p for p in LS.PROPERTIES if p.name == "cross_entropy_matches")
    plain = LS.LossAdapter("torch.cross_entropy", _torch_ce, capabilities=frozenset())
    assert np.isnan(_torch_ce(np.zeros((2, 3)), np.array([-100, -100]), -100))
    assert find_counterexample(prop, plain, max_examples=200) is not None
    declining = dataclasses.replace(plain, declines={"ignored_targets": {"all"}})
    check_adapter(declining)
    run_property(prop, declining, max_examples=60, database=None, derandomize=True, deadline=None)
    # still judged: a torch CE that averages over ignored rows too is rejected with the decline
    wrong = dataclasses.replace(declining, name="torch.ce_sum_over_N",
                                cross_entropy=lambda z, t, ii: float(torch.nn.functional.cross_entropy(
                                    torch.as_tensor(z), torch.as_tensor(t), ignore_index=int(ii), reduction="sum")) / len(t))
    assert find_counterexample(prop, wrong, max_examples=200) is not None


# ----------------------------------------------------------------------------
# per-value options: saturation per FP8 format, chunking per gate type


def test_saturation_declared_per_format_needs_one_adapter():
    """transformer-engine style: e4m3fn saturates, e5m2 keeps inf; one adapter declares it."""
    from refimpl import formats as F
    from properties import formats as FM

    def cast(x, fmt):
        return F.round_to(x, fmt, overflow="saturate" if fmt == "float8_e4m3fn" else "format")

    impl = FM.CastAdapter("per_format_saturation", cast,
                          frozenset({"float8_e4m3fn", "float8_e5m2", "bfloat16", "saturate_float8_e4m3fn"}))
    check_adapter(impl)
    prop = next(p for p in FM.PROPERTIES if p.name == "cast_overflow_convention")
    run_property(prop, impl, max_examples=60, database=None, derandomize=True, deadline=None)


def test_chunked_per_gate_type_declines_the_others():
    """A kernel chunking scalar gates only (channel gates through its recurrent path) is one adapter."""
    from properties import mixers_linear as ML

    base = next(a for a in ML.BUNDLED if "chunked" in a.capabilities and a.kind == "linear_attention")
    seen = []

    def forward(q, k, v, g, scale, chunk_size):
        seen.append((None if g is None else g.ndim, chunk_size))
        assert not (g is not None and g.ndim == 4 and chunk_size is not None), "chunk_size with a channel gate"
        return base.forward(q, k, v, g, scale, chunk_size)

    impl = _with(dataclasses.replace(base, name="chunked_scalar_only", forward=forward),
                 declines={"chunked_gate": {"channel"}})
    check_adapter(impl)
    for prop in ML.PROPERTIES:
        if prop.kind == "linear_attention" and prop.requires <= impl.capabilities:
            run_property(prop, impl, max_examples=15, database=None, derandomize=True, deadline=None)
    assert any(c is not None for _, c in seen) and any(nd == 4 for nd, _ in seen)


# ----------------------------------------------------------------------------
# norm conventions (refimpl.norms.RMSNORM_PRESETS)


def test_norm_convention_selects_the_preset_and_is_still_checked():
    """A Gemma-style RMSNorm ((1 + w) scaling) passes under convention='hf_gemma' without the
    gemma_offset capability; under 'hf_llama' it fails (the convention is compared, not ignored)."""
    from properties import norms as NP
    from refimpl import norms as N

    base = next(a for a in NP.BUNDLED if "gemma_offset" in a.capabilities)
    plain = _with(dataclasses.replace(base, name="gemma_by_convention",
                                      capabilities=base.capabilities - {"gemma_offset"}), convention="hf_gemma")
    check_adapter(plain)
    rms = [p for p in NP.PROPERTIES if p.name.startswith("rms")]
    assert rms
    for prop in rms:
        if prop.requires <= plain.capabilities:
            run_property(prop, plain, max_examples=20, database=None, derandomize=True, deadline=None)
    wrong = _with(plain, convention="hf_llama", name="gemma_declared_llama")
    assert any(find_counterexample(p, wrong, max_examples=100) is not None for p in rms)
    assert set(NP.KINDS[0].conventions) == set(N.RMSNORM_PRESETS)


def test_varlen_and_sinks_reject_bad_input_by_name():
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        M.Varlen([1, 2], [0, 2])
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        M.Varlen([0, 3, 2], [0, 1, 2])
    with pytest.raises(TypeError, match="cu_seqlens_k"):
        M.Varlen([0, 2], [0.0, 2.0])
    with pytest.raises(ValueError, match="sequences"):
        M.Varlen([0, 2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"^Lq, Lk: expected the packed lengths \(cu_seqlens_q\[-1\], cu_seqlens_k"):
        M.Varlen([0, 2], [0, 2]).materialize(3, 2)
    with pytest.raises(ValueError, match="sinks"):
        attention_with_sinks(np.zeros((1, 2, 1, 1)), np.zeros((1, 2, 1, 1)), np.zeros((1, 2, 1, 1)), [np.nan, 0.0])
    q = np.ones((1, 1, 2, 1))
    before = q.copy()
    attention_with_sinks(q, q, q, np.array([0.5]))
    assert np.array_equal(q, before)
