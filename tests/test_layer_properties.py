"""Norm, FFN, loss, number-format and block properties against the bundled implementations,
with meta-tests: each property rejects the wrong implementations it names."""

import pytest

from properties import block, ffn, formats, losses, norms

from ._binding import assert_rejects, impl_params, meta_params, property_impl_params, run_property

MODULES = (norms, ffn, losses, formats, block)


def _impls(mod):
    return [p for kind in mod.KINDS for p in impl_params([a for a in mod.BUNDLED if a.kind == kind.name], kind.name)]


PARAMS = [p for m in MODULES for p in property_impl_params(m.PROPERTIES, _impls(m))]
META = [p for m in MODULES for p in meta_params(m.PROPERTIES, m.WRONG)]


@pytest.mark.parametrize("prop, impl", PARAMS)
def test_property(prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("prop, wrong", META)
def test_property_rejects_wrong_implementation(prop, wrong):
    assert_rejects(prop, wrong)


@pytest.mark.parametrize("mod", MODULES, ids=[m.__name__ for m in MODULES])
def test_kinds_declare_every_adapter_method(mod):
    """Each bundled and wrong adapter supplies its kind's required methods and only declared capabilities."""
    kinds = {k.name: k for k in mod.KINDS}
    for impl in list(mod.BUNDLED) + list(mod.WRONG.values()):
        kind = kinds[impl.kind]
        assert set(impl.capabilities) <= set(kind.capabilities), (impl.name, set(impl.capabilities) - set(kind.capabilities))
        waived = {m for c in impl.capabilities for m in kind.capabilities[c].waives}  # a partial declaration
        needed = (set(kind.required) - waived) | {m for c in impl.capabilities for m in kind.capabilities[c].methods}
        missing = [m for m in needed if getattr(impl, m, None) is None]
        assert not missing, (impl.name, missing)


def test_variance_by_moments_needs_the_shifted_rows():
    """A LayerNorm variance taken as E[x^2] - E[x]^2 stays inside the float64 bound on rows
    shifted by 5x their spread (the old draws) and leaves it at 1e4 and 1e8 (norms.SHIFTS)."""
    import numpy as np

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
