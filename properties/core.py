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

This module runs a property (``run_property``, ``find_counterexample``); what a run records
(``RunRecord``, ``SizeCoverage``) is in ``properties.core_records`` and the loading of a user's
adapters (``load_user_implementations``, ``check_adapter``, ``ProtocolError``...) in
``properties.core_loading``, both re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from hypothesis import Phase, find, given, settings
from hypothesis.errors import NoSuchExample
from hypothesis.strategies import SearchStrategy

from .core_loading import (  # noqa: F401  (re-exported: defined here before)
    ProtocolError, check_adapter, check_unique_names, closest, find_adapter, load_adapter, load_user_implementations)
from .core_records import RunRecord, SizeCoverage


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
    methods:   adapter methods the check calls; an adapter that supplies none for one of them
               (a partial declaration, ``properties.protocol.Capability.waives``) is unsupported.
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
    methods: tuple = ()


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


class Declared(frozenset):
    """An adapter's declaration as the strategies see it.

    A frozenset of capability names (``"causal" in caps``, ``caps - {...}``
    keep working and keep the extras) plus ``declines``, ``precision``,
    ``tiles``, ``head_dims``, ``max_len`` and ``convention`` (see properties.protocol).
    Strategies draw option values through :meth:`allowed`, so a declined value
    is handled the same way for every kind.
    """

    def __new__(cls, caps=(), *, declines=None, precision="float64", tiles=None, head_dims=None, max_len=None,
                convention=None):
        self = super().__new__(cls, caps)
        self.declines = {k: frozenset(v) for k, v in (declines or {}).items()}
        self.precision = precision
        self.tiles = tuple(tiles) if tiles else ()
        self.head_dims = tuple(head_dims) if head_dims else ()
        self.max_len = max_len
        self.convention = convention
        return self

    def _like(self, caps):
        return Declared(caps, declines=self.declines, precision=self.precision, tiles=self.tiles,
                        head_dims=self.head_dims, max_len=self.max_len, convention=self.convention)

    def __sub__(self, other):
        return self._like(frozenset(self) - frozenset(other))

    def __and__(self, other):
        return self._like(frozenset(self) & frozenset(other))

    def __or__(self, other):
        return self._like(frozenset(self) | frozenset(other))

    def __reduce__(self):
        return (_declared, (frozenset(self), self.declines, self.precision, self.tiles, self.head_dims, self.max_len,
                            self.convention))

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


def _declared(caps, declines, precision, tiles, head_dims, max_len, convention=None):
    return Declared(caps, declines=declines, precision=precision, tiles=tiles, head_dims=head_dims, max_len=max_len,
                    convention=convention)


def declared(impl) -> Declared:
    """The :class:`Declared` view of an adapter."""
    return Declared(
        frozenset(impl.capabilities), declines=getattr(impl, "declines", None) or {},
        precision=getattr(impl, "precision", "float64") or "float64", tiles=getattr(impl, "tiles", None),
        head_dims=getattr(impl, "head_dims", None), max_len=getattr(impl, "max_len", None),
        convention=getattr(impl, "convention", None),
    )


def unsupported_reason(impl, prop: Property) -> str | None:
    """Why ``impl`` cannot run ``prop`` (None when it can)."""
    if prop.kind != impl.kind:
        return f"{impl.name} is of kind {impl.kind!r}, property {prop.name} of kind {prop.kind!r}"
    lacking = sorted(prop.requires - frozenset(impl.capabilities))
    if lacking:
        return f"{impl.name} does not declare {lacking} (needed by {prop.name})"
    absent = [m for m in prop.methods if not callable(getattr(impl, m, None))]
    if absent:
        return f"{impl.name} supplies no {absent} (a partial declaration; needed by {prop.name})"
    try:
        strategy_for(prop, impl)
    except Unsupported as e:
        return f"{impl.name}: {e} (property {prop.name})"
    return None


def not_drawn(impl) -> list:
    """What of its kind the suite never draws for ``impl``, because the adapter does not declare
    it: each capability of the kind it lacks ("softcap (capability not declared)") and each
    option value it declines ("causal=non_causal (declined)"). A pass covers the declared cases
    only; these are listed beside it (``RunRecord.not_drawn``), never counted as passing."""
    from . import registry

    kind = registry.all_kinds().get(getattr(impl, "kind", None))
    if kind is None:
        return []
    caps = frozenset(impl.capabilities)
    out = [f"{c} (capability not declared)" for c in kind.capabilities if c not in caps]
    for opt, vals in sorted((getattr(impl, "declines", None) or {}).items()):
        out += [f"{opt}={v} (declined)" for v in sorted(vals, key=str)]
    return out


def supports(impl, prop: Property) -> bool:
    return unsupported_reason(impl, prop) is None


def strategy_for(prop: Property, impl) -> SearchStrategy:
    """The property's strategy, specialised to the implementation's declaration."""
    if isinstance(prop.strategy, SearchStrategy):
        return prop.strategy
    return prop.strategy(declared(impl))


#: (property name, implementation name) -> RunRecord of the latest run in this process.
RECORDS: dict = {}


class _TimedAdapter:
    """``impl`` as a property sees it, with the time spent inside its protocol methods (the kind's
    ``methods``) added to ``rec.adapter_seconds``; every other attribute is ``impl``'s own. The rest
    of a run's time is the suite's: drawing cases, the refimpl oracle, bounds and comparisons."""

    def __init__(self, impl, methods, rec):
        self._impl, self._methods, self._rec = impl, frozenset(methods), rec

    def __getattr__(self, name):
        import functools
        import time

        attr = getattr(self._impl, name)
        if name not in self._methods or not callable(attr):
            return attr

        @functools.wraps(attr)
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return attr(*args, **kwargs)
            finally:
                self._rec.adapter_seconds += time.perf_counter() - t0
                self._rec.adapter_cpu_seconds += time.process_time() - c0
        return timed

    def __repr__(self):
        return repr(self._impl)


def _protocol_methods(impl) -> tuple:
    from . import registry

    kind = registry.all_kinds().get(getattr(impl, "kind", None))
    return tuple(getattr(kind, "methods", None) or ())


def run_property(prop: Property, impl, max_examples: int | None = None, *, seed: int | None = None,
                 progress: Callable[[RunRecord], None] | None = None, **overrides) -> RunRecord:
    """Run ``prop`` against ``impl`` under the active Hypothesis profile.

    ``max_examples`` and ``overrides`` (Hypothesis settings) apply to this run only;
    ``seed`` (an int) runs Hypothesis from that seed (randomised, no example database),
    so a run is repeatable without derandomising it. ``progress(record)`` is called after
    every example (the runner's progress line).
    Raises :class:`Unsupported` for a pair the declaration does not cover, and
    the AssertionError of the (shrunk) failing case, its message ending with a
    copy-paste reproduction snippet (``properties.report.snippet``). Returns
    (and keeps in ``RECORDS``) a :class:`RunRecord`, with the worst comparison against
    its bound (``worst``) and the sizes drawn (``sizes``).
    """
    import time

    from hypothesis import seed as hypothesis_seed

    from .tolerance import recording

    reason = unsupported_reason(impl, prop)
    rec = RunRecord(prop.name, prop.kind, impl.name, seed=seed, not_drawn=not_drawn(impl))
    RECORDS[(prop.name, impl.name)] = rec
    if reason:
        rec.status, rec.reason = "unsupported", reason
        raise Unsupported(reason)
    failing = []
    coverage = SizeCoverage(getattr(impl, "tiles", None))
    # The properties see the adapter through _TimedAdapter. It is bound to the name ``impl`` because
    # derandomised Hypothesis seeds each run from the source text of ``_run`` (decorator included):
    # that text stays as it was, so every run draws the examples it drew before the timing was added.
    impl = _TimedAdapter(impl, _protocol_methods(impl), rec)

    @given(case=strategy_for(prop, impl))
    def _run(case):
        rec.examples += 1
        coverage.add(case)
        try:
            with recording() as log:
                try:
                    prop.check(impl, case)
                finally:
                    rec.note_comparisons(log)
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
        finally:
            if progress is not None:
                progress(rec)

    if max_examples is not None:
        overrides["max_examples"] = max_examples
    if seed is not None:
        overrides.update(derandomize=False, database=None)
        _run = hypothesis_seed(seed)(_run)
    overrides.setdefault("report_multiple_bugs", False)  # one shrunk case, one snippet
    _run = settings(**overrides)(_run)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with _plain_scalar_reprs():
            _run()
    except Exception as e:
        from .snippets import snippet

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
        rec.seconds, rec.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        rec.sizes = coverage.as_dict()
    return rec


def _plain_scalar_reprs():
    """NumPy 2 prints scalars as ``np.float64(0.0)``; the messages and snippets of a run print
    ``0.0`` (the ``legacy="1.25"`` print option, local to this context)."""
    import contextlib

    import numpy as np

    if int(np.__version__.split(".")[0]) < 2:
        return contextlib.nullcontext()
    return np.printoptions(legacy="1.25")


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


def select(props: Iterable[Property], kind: str) -> list[Property]:
    return [p for p in props if p.kind == kind]
