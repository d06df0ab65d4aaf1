"""The one generic binder: every property of the adapters' kinds against the adapters named by
``pytest --refimpl-impl`` (``properties.pytest_plugin``). Collected only through the plugin."""

from __future__ import annotations

from properties import registry
from properties.core import run_property
from properties.pytest_plugin import adapters, conformance_params


def pytest_generate_tests(metafunc):
    if {"prop", "impl"} <= set(metafunc.fixturenames):
        impls = adapters(metafunc.config)
        kinds = {i.kind for i in impls}
        props = [p for p in registry.all_properties() if p.kind in kinds]
        metafunc.parametrize("prop, impl", conformance_params(props, impls))


def test_property(prop, impl):
    run_property(prop, impl)
