"""The meta-test assertion: a property must reject the wrong implementation it names."""

from __future__ import annotations

from properties.core import find_counterexample


def assert_rejects(prop, wrong_impl, max_examples=300):
    case = find_counterexample(prop, wrong_impl, max_examples=max_examples)
    assert case is not None, (
        f"property {prop.name} found no counterexample for the wrong implementation "
        f"{wrong_impl.name} in {max_examples} examples: the property cannot catch the bug it exists for"
    )
