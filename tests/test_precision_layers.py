"""The precision rule (properties/precision.py) for the layer kinds: correct float32 and
bfloat16 implementations pass every property of their kind, and wrong ones made in the same
precision fail. The low-precision wrong adapters bound to properties by ``rejects`` (each
module's WRONG) are run by tests/test_conformance.py.

Correct implementations: real libraries in float32 / bfloat16 (``properties.demo_layers``:
torch 2.13 CPU ``F.layer_norm``, ``F.rms_norm``, ``F.cross_entropy``, HF ``ForCausalLMLoss``,
HF ``LlamaRotaryEmbedding``, a torch FFN and stack, torch casts and matmuls), skipped without
torch / transformers; and, always, the float64 spec with its outputs stored in the precision
(each module's ``in_precision``: the most accurate kernel of that precision).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import settings

from properties import block, demo_layers as D, ffn, formats, losses, norms, rope
from properties.core import run_property, supports

PRECISIONS = ("float32", "bfloat16")
# a cross-check, not the suite's main run: 10 examples a pair under dev/ci, all under thorough
_N = settings.default.max_examples if settings.default.max_examples > 100 else min(10, settings.default.max_examples)


def _pairs(props, adapters):
    return [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in props for a in adapters if supports(a, p)]


SPEC_LOWP = [m.in_precision(m.REFIMPL, p) for m in (norms, losses, ffn, block) for p in PRECISIONS] + [
    rope.in_precision(rope.BUNDLED[0], p) for p in PRECISIONS]
SPEC_PROPS = norms.PROPERTIES + losses.PROPERTIES + ffn.PROPERTIES + block.PROPERTIES + rope.PROPERTIES


@pytest.mark.parametrize("prop, impl", _pairs(SPEC_PROPS, SPEC_LOWP))
def test_spec_rounded_to_precision_passes(prop, impl):
    run_property(prop, impl, max_examples=_N)


def _need(*names):
    for n in names:
        pytest.importorskip(n, reason=f"{n} not installed: the real-library low-precision adapters need it")


def _run_all(impl, props):
    ran = 0
    for prop in props:
        if supports(impl, prop):
            run_property(prop, impl, max_examples=_N)
            ran += 1
    assert ran, f"{impl.name} supports none of the properties"


def _rejected(impl, prop_name, props):
    prop = next(p for p in props if p.name == prop_name)
    with pytest.raises(AssertionError):
        run_property(prop, impl, max_examples=200)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("factory, props, libs", [
    (D.torch_norms, norms.PROPERTIES, ("torch",)),
    (D.torch_losses, losses.PROPERTIES, ("torch",)),
    (D.hf_causal_lm_loss, losses.PROPERTIES, ("torch", "transformers")),
    (D.hf_llama_rope, rope.PROPERTIES, ("torch", "transformers")),
    (D.torch_ffn, ffn.PROPERTIES, ("torch",)),
    (D.torch_block, block.PROPERTIES, ("torch",)),
], ids=["torch_norms", "torch_losses", "hf_causal_lm_loss", "hf_llama_rope", "torch_ffn", "torch_block"])
def test_real_library_in_precision_passes(factory, props, libs, precision):
    _need(*libs)
    _run_all(factory(precision), props)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("factory, prop, props, libs", [
    (D.torch_layer_norm_by_moments, "layer_norm_matches", norms.PROPERTIES, ("torch",)),
    (D.hf_causal_lm_loss_double_shift, "causal_lm_label_shift", losses.PROPERTIES, ("torch", "transformers")),
    (D.hf_llama_rope_llama3_band_divided, "rope_matches_reference", rope.PROPERTIES, ("torch", "transformers")),
], ids=["layer_norm_by_moments", "hf_loss_double_shift", "hf_rope_llama3_band_divided"])
def test_real_library_with_a_bug_in_precision_fails(factory, prop, props, libs, precision):
    _need(*libs)
    _rejected(factory(precision), prop, props)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_ffn_without_dropout_rescale_fails(precision):
    """The torch FFN forgetting the 1 / (1 - p) dropout scale is rejected in the precision."""
    _need("torch")
    good = D.torch_ffn(precision)
    bad = dataclasses.replace(good, name=f"torch.ffn_dropout_not_rescaled[{precision}]",
                              ffn=lambda x, params, activation, keep, p: good.ffn(x, params, activation, keep, 0.0))
    _rejected(bad, "ffn_matches", ffn.PROPERTIES)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_block_ignoring_norm_weight_fails(precision):
    """The torch stack ignoring its first norm's weight and bias is rejected in the precision."""
    _need("torch")
    good = D.torch_block(precision)

    def stack(x, blocks, arrangement, causal, memory, scale, final_norm):
        plain = [dataclasses.replace(b, norm1=dataclasses.replace(
            b.norm1, weight=np.ones_like(b.norm1.weight), bias=None if b.norm1.bias is None else 0 * b.norm1.bias))
            for b in blocks]
        return good.stack(x, plain, arrangement, causal, memory, scale, final_norm)

    _rejected(dataclasses.replace(good, name=f"torch.stack_norm_weight_ignored[{precision}]", stack=stack),
              "pre_norm_stack_equals_unrolled", block.PROPERTIES)


@pytest.mark.parametrize("precision", ("bfloat16", "float16"))
def test_torch_casts_and_matmul_from_low_precision_pass(precision):
    _need("torch")
    for impl in D.torch_cast(precision) + [D.torch_matmul(precision)]:
        _run_all(impl, formats.PROPERTIES)


def test_torch_cast_through_bfloat16_declared_float32_fails():
    """A cast that takes its input as bf16 (a double rounding of float32 values) but declares
    float32 inputs is rejected: the precision sets what the suite draws."""
    _need("torch")
    _rejected(D.torch_cast("bfloat16", declared="float32")[1], "cast_round_nearest_even", formats.PROPERTIES)
