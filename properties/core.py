"""The machinery every property module shares.

A *property* is a plain function ``check(impl, case)`` that raises
``AssertionError`` with an actionable message when ``impl`` violates it, paired
with a Hypothesis strategy that draws ``case``. A property is registered with
the names of the deliberately wrong implementations it exists to catch; the
meta-tests assert that it does catch each of them, so no property can silently
become vacuous.

An *implementation* is an adapter object with at least ``name`` (str),
``kind`` (str: which protocol it follows, e.g. ``"attention"``) and
``capabilities`` (frozenset of str). A property lists the capabilities it
requires; an implementation lacking one is reported as *unsupported*, never
as passing.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable, Iterable

from hypothesis import Phase, find, given, settings
from hypothesis.errors import NoSuchExample
from hypothesis.strategies import SearchStrategy


@dataclasses.dataclass(frozen=True)
class Property:
    """One conformance property.

    name:      identifier used in test ids and in the report.
    kind:      the implementation protocol it applies to ("attention", ...).
    check:     ``check(impl, case) -> None``; raises AssertionError on violation.
    strategy:  Hypothesis strategy drawing ``case``, or a function
               ``capabilities -> strategy`` so that each implementation is
               exercised on every feature it declares (and only those).
    requires:  capabilities the implementation must declare.
    rejects:   names of wrong implementations (see each module's ``WRONG``)
               that this property must reject; checked by the meta-tests.
    doc:       one line saying what is asserted.
    """

    name: str
    kind: str
    check: Callable[[Any, Any], None]
    strategy: SearchStrategy
    doc: str
    requires: frozenset = frozenset()
    rejects: tuple = ()


class Unsupported(Exception):
    """Raised by an adapter asked for a feature it does not declare."""


def supports(impl, prop: Property) -> bool:
    return prop.kind == impl.kind and prop.requires <= frozenset(impl.capabilities)


def strategy_for(prop: Property, impl) -> SearchStrategy:
    """The property's strategy, specialised to the implementation's capabilities."""
    if isinstance(prop.strategy, SearchStrategy):
        return prop.strategy
    return prop.strategy(frozenset(impl.capabilities))


def run_property(prop: Property, impl, max_examples: int | None = None, **overrides) -> None:
    """Run ``prop`` against ``impl`` under the active Hypothesis profile.

    ``max_examples`` and ``overrides`` (Hypothesis settings) apply to this run only.
    Raises the AssertionError of the (shrunk) failing case, if any.
    """
    if not supports(impl, prop):
        raise Unsupported(
            f"{impl.name} does not support property {prop.name} "
            f"(needs {sorted(prop.requires - frozenset(impl.capabilities))})"
        )

    @given(case=strategy_for(prop, impl))
    def _run(case):
        prop.check(impl, case)

    if max_examples is not None:
        overrides["max_examples"] = max_examples
    if overrides:
        _run = settings(**overrides)(_run)
    _run()


def find_counterexample(prop: Property, impl, max_examples: int = 300):
    """Search for a case on which ``impl`` violates ``prop``; None if none found.

    Used by the meta-tests: a wrong implementation must yield a counterexample.
    No shrinking (speed), no example database (determinism).
    """

    def violates(case) -> bool:
        try:
            prop.check(impl, case)
        except AssertionError:
            return True
        return False

    try:
        return find(
            strategy_for(prop, impl),
            violates,
            settings=settings(
                max_examples=max_examples,
                phases=[Phase.explicit, Phase.generate],
                database=None,
                derandomize=True,
                deadline=None,
            ),
        )
    except NoSuchExample:
        return None


def load_user_implementations(env_var: str = "REFIMPL_IMPLS") -> list:
    """Adapters named in ``$REFIMPL_IMPLS`` ("pkg.mod:obj,pkg2.mod:obj2").

    Each named object is an adapter, or a zero-argument callable returning one
    or a list of them. This is how a user points the suite at their own kernels.
    """
    spec = os.environ.get(env_var, "").strip()
    out: list = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module_name, _, attr = item.partition(":")
        if not attr:
            raise ValueError(f"{env_var}: {item!r} is not of the form 'module:object'")
        obj = getattr(importlib.import_module(module_name), attr)
        if callable(obj) and not hasattr(obj, "kind"):
            obj = obj()
        out.extend(obj if isinstance(obj, (list, tuple)) else [obj])
    for impl in out:
        for field in ("name", "kind", "capabilities"):
            if not hasattr(impl, field):
                raise TypeError(f"{env_var}: adapter {impl!r} has no attribute {field!r}")
    return out


def select(props: Iterable[Property], kind: str) -> list[Property]:
    return [p for p in props if p.kind == kind]
