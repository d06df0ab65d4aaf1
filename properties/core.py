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
as passing. The protocol of each kind (methods, capabilities, options an
adapter may decline) is declared in ``properties.protocol`` form by the
property modules' ``KINDS``; see docs/conformance.md.
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
    """A (property, implementation) pair the implementation's declaration does not cover.

    Raised by the suite (a missing capability, every value of a needed option
    declined); both runners report the pair as *unsupported* (a pytest skip
    with the reason), never as passed. An adapter that raises it (or any
    exception) for a drawn case its declaration covers violates the protocol:
    that is a failure in both runners, see :class:`ProtocolViolation`.
    """


class ProtocolViolation(AssertionError):
    """The adapter refused a case its declared capabilities and declines cover."""


class ProtocolError(ValueError):
    """An adapter does not follow its kind's protocol (raised at load time)."""


class Declared(frozenset):
    """An adapter's declaration as the strategies see it.

    A frozenset of capability names (``"causal" in caps``, ``caps - {...}``
    keep working and keep the extras) plus ``declines``, ``precision``,
    ``tiles``, ``head_dims`` and ``max_len`` (see properties.protocol).
    Strategies draw option values through :meth:`allowed`, so a declined value
    is handled the same way for every kind.
    """

    def __new__(cls, caps=(), *, declines=None, precision="float64", tiles=None, head_dims=None, max_len=None):
        self = super().__new__(cls, caps)
        self.declines = {k: frozenset(v) for k, v in (declines or {}).items()}
        self.precision = precision
        self.tiles = tuple(tiles) if tiles else ()
        self.head_dims = tuple(head_dims) if head_dims else ()
        self.max_len = max_len
        return self

    def _like(self, caps):
        return Declared(caps, declines=self.declines, precision=self.precision, tiles=self.tiles,
                        head_dims=self.head_dims, max_len=self.max_len)

    def __sub__(self, other):
        return self._like(frozenset(self) - frozenset(other))

    def __and__(self, other):
        return self._like(frozenset(self) & frozenset(other))

    def __or__(self, other):
        return self._like(frozenset(self) | frozenset(other))

    def __reduce__(self):
        return (_declared, (frozenset(self), self.declines, self.precision, self.tiles, self.head_dims, self.max_len))

    def allowed(self, option: str, values) -> tuple:
        """``values`` without the ones this adapter declines for ``option``."""
        no = self.declines.get(option, frozenset())
        return tuple(v for v in values if v not in no)

    def require(self, option: str, values) -> tuple:
        """Like :meth:`allowed`, but a property that cannot run without one of
        ``values`` is unsupported when all are declined."""
        vals = self.allowed(option, values)
        if not vals:
            raise Unsupported(f"declines every value of {option!r} this property needs ({list(values)})")
        return vals


def _declared(caps, declines, precision, tiles, head_dims, max_len):
    return Declared(caps, declines=declines, precision=precision, tiles=tiles, head_dims=head_dims, max_len=max_len)


def declared(impl) -> Declared:
    """The :class:`Declared` view of an adapter."""
    return Declared(
        frozenset(impl.capabilities), declines=getattr(impl, "declines", None) or {},
        precision=getattr(impl, "precision", "float64") or "float64", tiles=getattr(impl, "tiles", None),
        head_dims=getattr(impl, "head_dims", None), max_len=getattr(impl, "max_len", None),
    )


def unsupported_reason(impl, prop: Property) -> str | None:
    """Why ``impl`` cannot run ``prop`` (None when it can)."""
    if prop.kind != impl.kind:
        return f"{impl.name} is of kind {impl.kind!r}, property {prop.name} of kind {prop.kind!r}"
    lacking = sorted(prop.requires - frozenset(impl.capabilities))
    if lacking:
        return f"{impl.name} does not declare {lacking} (needed by {prop.name})"
    try:
        strategy_for(prop, impl)
    except Unsupported as e:
        return f"{impl.name}: {e} (property {prop.name})"
    return None


def supports(impl, prop: Property) -> bool:
    return unsupported_reason(impl, prop) is None


def strategy_for(prop: Property, impl) -> SearchStrategy:
    """The property's strategy, specialised to the implementation's declaration."""
    if isinstance(prop.strategy, SearchStrategy):
        return prop.strategy
    return prop.strategy(declared(impl))


@dataclasses.dataclass
class RunRecord:
    """What one run of a property against an implementation did (for the reports)."""

    property: str
    kind: str
    implementation: str
    status: str = "pass"  # pass | fail | unsupported | xfail | xpass
    examples: int = 0
    reason: str = ""
    case: str | None = None
    snippet: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: (property name, implementation name) -> RunRecord of the latest run in this process.
RECORDS: dict = {}


def run_property(prop: Property, impl, max_examples: int | None = None, **overrides) -> RunRecord:
    """Run ``prop`` against ``impl`` under the active Hypothesis profile.

    ``max_examples`` and ``overrides`` (Hypothesis settings) apply to this run only.
    Raises :class:`Unsupported` for a pair the declaration does not cover, and
    the AssertionError of the (shrunk) failing case, its message ending with a
    copy-paste reproduction snippet (``properties.report.snippet``). Returns
    (and keeps in ``RECORDS``) a :class:`RunRecord`.
    """
    import time

    reason = unsupported_reason(impl, prop)
    rec = RunRecord(prop.name, prop.kind, impl.name)
    RECORDS[(prop.name, impl.name)] = rec
    if reason:
        rec.status, rec.reason = "unsupported", reason
        raise Unsupported(reason)
    failing = []

    @given(case=strategy_for(prop, impl))
    def _run(case):
        rec.examples += 1
        try:
            prop.check(impl, case)
        except AssertionError:
            failing[:] = [case]
            raise
        except Unsupported as e:
            failing[:] = [case]
            raise ProtocolViolation(
                f"{impl.name} raised Unsupported ({e}) on a case its declaration covers: decline the value "
                f"(adapter.declines) or drop the capability; {case!r}") from e
        except Exception:
            failing[:] = [case]
            raise

    if max_examples is not None:
        overrides["max_examples"] = max_examples
    overrides.setdefault("report_multiple_bugs", False)  # one shrunk case, one snippet
    _run = settings(**overrides)(_run)
    t0 = time.perf_counter()
    try:
        _run()
    except Exception as e:
        from .report import snippet

        rec.status = "fail"
        rec.reason = f"{type(e).__name__}: {e}"
        if failing:
            rec.case = repr(failing[0])
            try:
                rec.snippet = snippet(prop, impl, failing[0])
            except Exception as se:  # the report must never hide the failure
                rec.snippet = f"# (no snippet: {type(se).__name__}: {se})"
            if isinstance(e, AssertionError):
                raise type(e)(f"{e}\n\nReproduce with:\n{rec.snippet}") from e
        raise
    finally:
        rec.seconds = time.perf_counter() - t0
    return rec


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
    Every adapter is checked against its kind's protocol (``properties.protocol``):
    any problem raises :class:`ProtocolError` listing them all, with the valid names;
    so does a name used twice (among these adapters or with a bundled one).
    """
    spec = os.environ.get(env_var, "").strip()
    out: list = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        out.extend(load_adapter(item, env_var))
    if out:
        from . import registry

        check_unique_names(registry.all_bundled() + out, env_var)
    return out


def check_unique_names(impls, origin: str = "adapters") -> None:
    """Raise :class:`ProtocolError` when two adapters share a name (reports, xfail entries and
    ``--impl`` select by name, so a duplicate would make one of them unreachable or mislabelled)."""
    seen: dict = {}
    dups = []
    for impl in impls:
        name = getattr(impl, "name", None)
        if name in seen and seen[name] is not impl:
            dups.append(name)
        seen.setdefault(name, impl)
    if dups:
        raise ProtocolError(f"{origin}: adapter names must be unique; {sorted(set(dups))} named twice: "
                            "give each adapter its own name (e.g. with the dtype or option in brackets)")


def load_adapter(item: str, origin: str = "adapter") -> list:
    """The validated adapter(s) named by ``"module:object"``."""
    module_name, _, attr = item.partition(":")
    if not attr:
        raise ValueError(f"{origin}: {item!r} is not of the form 'module:object'")
    obj = getattr(importlib.import_module(module_name), attr)
    if callable(obj) and not hasattr(obj, "kind"):
        obj = obj()
    impls = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    for impl in impls:
        check_adapter(impl, origin)
    return impls


def check_adapter(impl, origin: str = "adapter") -> None:
    """Raise :class:`ProtocolError` if ``impl`` does not follow its kind's protocol."""
    from . import registry
    from .protocol import validate

    problems = validate(impl, registry.all_kinds())
    if problems:
        raise ProtocolError(f"{origin}: " + "\n  ".join(problems))


def find_adapter(name: str):
    """The adapter called ``name``: bundled, wrong, or named in $REFIMPL_IMPLS (used by snippets)."""
    from . import registry

    for impl in registry.all_bundled() + list(registry.all_wrong().values()) + load_user_implementations():
        if impl.name == name:
            return impl
    raise LookupError(f"no adapter named {name!r} (set REFIMPL_IMPLS to the module:object that defines it)")


def select(props: Iterable[Property], kind: str) -> list[Property]:
    return [p for p in props if p.kind == kind]
