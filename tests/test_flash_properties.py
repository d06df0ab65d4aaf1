"""Tiled attention against the conformance suite.

* every attention property (properties.attention.PROPERTIES) against refimpl.flash_attention
  at several tile sizes (fa1 and fa2) and refimpl.split_kv_attention, as attention adapters;
* the flash properties (properties.flash.PROPERTIES: any tile sizes, fa1 == fa2, backward,
  block skipping, split-KV) against refimpl.flash_attention and the compact second implementation;
* meta-tests: each flash property rejects the wrong tiled implementations it names.
"""

import pytest

from properties import attention as A
from properties import flash as F

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

ATTENTION_IMPLS = impl_params(F.FLASH, "attention")
FLASH_IMPLS = impl_params([i for i in F.BUNDLED if i.kind == "flash"], "flash")


@pytest.mark.parametrize("prop, impl", property_impl_params(A.PROPERTIES, ATTENTION_IMPLS))
def test_attention_property_on_tiled(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, impl", property_impl_params(F.PROPERTIES, FLASH_IMPLS))
def test_flash_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", meta_params(F.PROPERTIES, F.WRONG))
def test_flash_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_every_flash_property_has_a_meta_test():
    assert all(p.rejects for p in F.PROPERTIES)
    assert all(b in F.WRONG for p in F.PROPERTIES for b in p.rejects)
    assert set(F.WRONG) == {b for p in F.PROPERTIES for b in p.rejects}, "a wrong implementation no property names"


def test_every_bundled_flash_adapter_runs_every_property():
    """No property silently unsupported by the bundled tiled implementations (a user's
    adapter may lack capabilities: its pairs are skips with a reason)."""
    for impl in (i for i in F.BUNDLED if i.kind == "flash"):
        assert all(prop.requires <= impl.capabilities for prop in F.PROPERTIES), impl.name


def _lowp_flash(precision, bug=None):
    """properties.tiled's forward and FA2 backward in ``precision`` as a flash adapter (one tile
    for the backward: its rounding, not its tiling, is what the precision rule judges)."""
    from properties import tiled

    def forward(q, k, v, *, block_q, block_k, variant, **kw):
        return tiled.tiled_attention(q, k, v, precision=precision, **kw)

    def backward(q, k, v, out, lse, dout, *, block_q, block_k, **kw):
        return tiled.lowp_attention_backward(q, k, v, dout, precision=precision, bug=bug, **kw)

    caps = frozenset(tiled.TILED_CAPS | {"fa2", "backward"})
    return F.FlashAdapter(f"lowp_flash[{precision}]" + (f"[bug={bug}]" if bug else ""), forward, caps,
                          backward=backward, precision=precision)


@pytest.mark.parametrize("precision", ("float32", "bfloat16"))
def test_low_precision_flash_backward(precision):
    """Flash-kind backward properties honour the adapter's precision: a correct one passes, one
    without the rowsum(dO * O) term is rejected."""
    for prop in F.PROPERTIES:
        if prop.name in ("flash_backward_matches_reference", "flash_backward_finite_differences"):
            run_property(prop, _lowp_flash(precision), max_examples=8)
            assert_rejects(prop, _lowp_flash(precision, "no_D"))
