"""Sizes at a kernel's own scale and low precision.

* lengths are drawn around multiples of declared tiles (1, t-1, t, t+1, 2t+1, 3t-1, ...);
* the correct 64 x 64 tiled adapters (float64 and bfloat16, properties.tiled) pass the
  attention properties at those sizes, and each cross-tile mistake is rejected;
* the bfloat16 bound separates a correct bf16 kernel from wrong ones on a fixed
  multi-tile case, and the correct one sits inside it with margin.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

import refimpl
from properties import attention as A
from properties import attention_cases as C
from properties import sizes, tiled
from properties.core import declared, find_counterexample, run_property
from properties.attention_lowp import kernel_bounds
from properties.tolerance import round_to

from ._meta import assert_rejects

#: properties that exercise the cross-tile machinery (the rest run in the main suite)
TILE_PROPERTIES = ("matches_reference", "causal_ignores_future", "window_ignores_outside", "fully_masked_rows",
                   "convex_combination")


def test_tile_lengths_around_multiples():
    assert sizes.tile_lengths((64,)) == (1, 63, 64, 65, 127, 128, 129, 191, 192, 193)
    assert sizes.tile_lengths((64, 128), max_len=200) == (1, 63, 64, 65, 127, 128, 129, 191, 192, 193)
    assert max(sizes.tile_lengths((16,), max_len=40)) == 33


@settings(max_examples=30, deadline=None)
@given(case=C.attention_case(declared(tiled.CORRECT[0])))
def test_declared_tiles_and_head_dims_are_drawn(case):
    B, Hq, Lq, D = case.q.shape
    assert Lq in sizes.tile_lengths((64,)) and case.k.shape[2] in sizes.tile_lengths((64,))
    assert D in (8, 64)


@pytest.mark.parametrize("impl", tiled.CORRECT, ids=lambda i: i.name)
@pytest.mark.parametrize("name", TILE_PROPERTIES)
def test_correct_tiled_kernel_passes_at_tile_scale(impl, name):
    prop = next(p for p in A.PROPERTIES if p.name == name)
    run_property(prop, impl, max_examples=15)


@pytest.mark.parametrize("bug", sorted(tiled.WRONG))
def test_cross_tile_mistake_rejected(bug):
    assert_rejects(A.PROPERTIES[0], tiled.WRONG[bug])


def _multi_tile_case(seed=0, **kwargs):
    """Lq = 129, Lk = 193 (three key tiles, the last one key long), D = 64, bf16 inputs."""
    return C.build(shape=(1, 2, 1, 129, 193, 64, 64), seed=seed, magnitude=1.0, precision="bfloat16",
                   kwargs=kwargs)


def test_bf16_bound_separates_correct_from_wrong():
    case = _multi_tile_case()
    good = tiled.tiled_adapter("bfloat16")
    A.check_matches_reference(good, _multi_tile_case(seed=2, causal=True))
    A.check_matches_reference(good, case)
    out, lse = good.forward(case.q, case.k, case.v, **case.kwargs)
    ref_out, ref_lse = refimpl.attention(case.q, case.k, case.v, **case.kwargs)
    atol_out, atol_lse = kernel_bounds(case.q, case.k, case.v, ref_out, ref_lse, C.visible(case), 64 ** -0.5,
                                       "bfloat16")
    assert np.max(np.abs(out - ref_out)) < 0.2 * atol_out  # measured 0.03-0.06 of the bound
    for bug in tiled.BF16_BUGS:
        with pytest.raises(AssertionError):
            A.check_matches_reference(tiled.tiled_adapter("bfloat16", bug), case)


def test_float64_kernel_is_not_held_to_the_bf16_bound():
    """The same cross-tile bug in float64 arithmetic fails the float64 bound on the same case."""
    case = _multi_tile_case()
    with pytest.raises(AssertionError):
        A.check_matches_reference(tiled.tiled_adapter("float64", "lse_last_tile"), case)


def test_inputs_are_representable_in_the_declared_precision():
    case = _multi_tile_case()
    for x in (case.q, case.k, case.v):
        assert np.array_equal(round_to(x, "bfloat16"), x)


def test_bf16_flash_adapter_at_declared_tiles():
    """A flash-kind adapter declaring bfloat16 and tiles=(64,) gets block sizes from its tiles
    and lengths around them, and is held to the bf16 bound."""
    from properties import flash as F

    def forward(q, k, v, *, block_q, block_k, variant, **kw):
        assert block_q == block_k == 64
        return tiled.tiled_attention(q, k, v, tile=64, precision="bfloat16", **kw)

    impl = F.FlashAdapter("user.flash_bf16", forward, frozenset(tiled.TILED_CAPS | {"fa2"}),
                          precision="bfloat16", tiles=(64,), head_dims=(8,))
    run_property(F.PROPERTIES[0], impl, max_examples=10)
    bad = dataclasses.replace(impl, name="user.flash_bf16_bad", forward=lambda q, k, v, **kw: tiled.tiled_attention(
        q, k, v, tile=64, precision="bfloat16", bug="no_rescale",
        **{x: y for x, y in kw.items() if x not in ("block_q", "block_k", "variant")}))
    assert find_counterexample(F.PROPERTIES[0], bad, max_examples=50) is not None


@pytest.mark.parametrize("name", ("matches_reference", "extreme_scores"))
def test_float16_tiled_kernel_passes_and_its_bug_is_rejected(name):
    """float16: scores beyond 65504 overflow the eager baseline; the bound then rests on its
    floor (properties.tolerance) and still rejects a cross-tile mistake."""
    prop = next(p for p in A.PROPERTIES if p.name == name)
    run_property(prop, tiled.tiled_adapter("float16"), max_examples=10)
    assert find_counterexample(prop, tiled.tiled_adapter("float16", "no_rescale"), max_examples=100) is not None
