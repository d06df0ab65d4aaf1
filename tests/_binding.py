"""Helpers that bind property modules to pytest parametrisation."""

from __future__ import annotations

import pytest

from properties.core import find_counterexample, load_user_implementations, run_property
from properties.pytest_plugin import conformance_params


def impl_params(bundled, kind):
    """Bundled adapters plus the user's ($REFIMPL_IMPLS) of this kind, as pytest params."""
    impls = list(bundled) + [u for u in load_user_implementations() if u.kind == kind]
    return [pytest.param(i, id=i.name) for i in impls]


def property_impl_params(props, impls, strict=True):
    """Every (property, implementation) pair of the same kind (``impls``: pytest params).

    The one binder of the installed pytest plugin (``properties.pytest_plugin.conformance_params``):
    a pair the implementation's declaration does not cover is a SKIP with the reason (never run,
    never counted as a pass); a pair listed in the xfail files is a strict xfail: its passing is
    reported as XPASS and fails the run.
    """
    return conformance_params(props, [p.values[0] for p in impls], strict=strict)


def meta_params(props, wrong):
    return [
        pytest.param(prop, wrong[bug], id=f"{prop.name}-rejects-{bug}")
        for prop in props
        for bug in prop.rejects
    ]


def assert_rejects(prop, wrong_impl, max_examples=300):
    case = find_counterexample(prop, wrong_impl, max_examples=max_examples)
    assert case is not None, (
        f"property {prop.name} found no counterexample for the wrong implementation "
        f"{wrong_impl.name} in {max_examples} examples: the property cannot catch the bug it exists for"
    )


__all__ = ["impl_params", "property_impl_params", "meta_params", "assert_rejects", "run_property"]
