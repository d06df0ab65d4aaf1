"""The one binder: every conformance property against every implementation of its kind, and the
meta-tests (each property rejects every wrong implementation it names).

Implementations of a kind: the bundled adapters of every ``properties.registry`` module of that
kind, then the user's (``$REFIMPL_IMPLS``, as ``python -m properties``). Pairs are made by
``properties.pytest_plugin.conformance_params``, the binder of the installed plugin: a pair the
adapter's declaration does not cover is a SKIP with the reason (never run, never a pass), a pair
of the xfail files a strict xfail. Each test id starts with its kind, so one topic runs alone:

    pytest tests/test_conformance.py -k moe            # ids: [<kind>-<property>-<implementation>]
    pytest tests/test_conformance.py --refimpl-impl my_pkg:kernel --refimpl-kind attention

(``--refimpl-kind`` keeps those kinds here too; ``-k`` matches substrings, so ``-k attention`` also
runs ``linear_attention`` and ``swin_window_attention``.)

What differs between kinds, kept from the per-topic files this module replaced
(tests/test_{attention,flash,moe,rope,decode,mla,mixers,layer,softmax,vision,distributed}_properties.py,
the binder half of tests/test_int_formats.py, and tests/_binding.py):

* Pairs are made per kind, not per module: the ``attention`` properties run on properties.attention's
  adapters and on properties.flash's tiled ones of kind ``attention`` (``properties.flash.FLASH``:
  flash_attention at five tile shapes, split_kv_attention), as tests/test_flash_properties.py did.
* A module declaring two kinds (softmax/merge, the mixers, formats, int_formats, vision, distributed)
  binds each kind's properties to that kind's adapters only.
* Bundled adapters that declare less than their kind's properties need are listed in ``PARTIAL``
  (their other pairs are skips); every other bundled adapter runs every property of its kind (the
  check tests/test_flash_properties.py and tests/test_distributed_properties.py made for theirs).
* Meta-tests look each named wrong implementation up in the property's own module's ``WRONG``.
* HF's SwinLayer (``properties.vision.HF_SWIN``, a layer built per example) is not bundled: it runs
  in tests/test_vision.py. The mixers bound nothing by precision (all bundled forms are float64);
  the low-precision adapters run in tests/test_precision_*.py.

Elsewhere: every property names a wrong implementation and every wrong one is used
(tests/test_registry.py); bundled and wrong adapters follow their kind's protocol
(tests/test_protocol.py); the strategies reach their hard cases (tests/test_property_strategies.py).
"""

import pytest

from properties import registry
from properties.core import load_user_implementations, run_property, unsupported_reason
from properties.pytest_plugin import conformance_params

from ._meta import assert_rejects

# Bundled adapters declaring less than every property of their kind needs (those pairs skip).
PARTIAL = {
    "refimpl.split_kv_attention[3 splits,2x2]",   # attention: no backward
    "position_masked",                            # decode: no cache contents, no paged fork
    "refimpl.wkv[recurrent]",                     # wkv: no large_keys
    "refimpl.norms[hf_gemma]", "refimpl.norms[zhang_sennrich]",  # norm: no channel_norms
    "ml_dtypes.astype",                           # cast: no FP8 scaling
    "refimpl.block.pre_norm_stack_fused_residual",  # block: no parallel, no cross_attention
}


def _kinds(config) -> list:
    """Kind names to bind: every registered kind, or those of ``--refimpl-kind``."""
    chosen = config.getoption("refimpl_kind", None) or []
    return [k for k in registry.all_kinds() if not chosen or k in chosen]


def _with_kind(params, kind):
    return [pytest.param(*p.values, id=f"{kind}-{p.id}", marks=p.marks) for p in params]


def property_pairs(kinds) -> list:
    """(property, implementation) params for ``kinds``: bundled adapters, then the user's."""
    props, bundled, user = registry.all_properties(), registry.all_bundled(), load_user_implementations()
    out = []
    for kind in kinds:
        impls = [i for i in bundled + user if i.kind == kind]
        out += _with_kind(conformance_params([p for p in props if p.kind == kind], impls), kind)
    return out


def meta_pairs(kinds) -> list:
    """(property, wrong implementation) params: each wrong one a property names, from its module."""
    return [pytest.param(prop, m.WRONG[bug], id=f"{prop.kind}-{prop.name}-rejects-{bug}")
            for m in registry.modules() for prop in m.PROPERTIES if prop.kind in kinds for bug in prop.rejects]


def pytest_generate_tests(metafunc):
    if {"prop", "impl"} <= set(metafunc.fixturenames):
        metafunc.parametrize("prop, impl", property_pairs(_kinds(metafunc.config)))
    elif {"prop", "wrong"} <= set(metafunc.fixturenames):
        metafunc.parametrize("prop, wrong", meta_pairs(_kinds(metafunc.config)))


def test_property(prop, impl):
    run_property(prop, impl)


def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


def test_bundled_adapters_run_every_property_of_their_kind_but_the_partial_ones():
    props = registry.all_properties()
    partial = {i.name for i in registry.all_bundled()
               if any(unsupported_reason(i, p) for p in props if p.kind == i.kind)}
    assert partial == PARTIAL, f"update PARTIAL: newly partial {partial - PARTIAL}, now full {PARTIAL - partial}"
