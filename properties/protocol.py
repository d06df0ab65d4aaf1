"""How a kind of implementation is declared: its methods and its capabilities.

Every property module declares the kinds it checks in a module-level ``KINDS``
tuple of :class:`Kind`. A kind is the protocol an adapter follows: the methods
every adapter of the kind must supply, and the capabilities it may declare,
each with its exact meaning and the methods a declaring adapter must supply.
The loader validates user adapters against this declaration (unknown
capability names and missing methods are errors listing the valid names), and
``docs/conformance.md`` is generated from / checked against it, so the
protocol is written down in exactly one place.

An adapter is any object with ``name`` (str), ``kind`` (str, a ``Kind.name``),
``capabilities`` (a set of capability names of that kind) and the kind's
methods as attributes (callables; ``None`` means not supplied). Optional
attributes every kind understands (see :data:`ADAPTER_FIELDS`):

    declines   {option: {value, ...}}: single values of a kind's options
               (``Kind.options``) the strategies must never draw for it;
    precision  "float64" (default), "float32", "bfloat16" or "float16": the
               arithmetic it is held to (``properties.tolerance``);
    tiles      tile sizes it uses (ints): lengths are drawn at and around
               their multiples (``properties.sizes``);
    head_dims  the head dimensions it supports (ints);
    max_len    the longest sequence it accepts (int);
    convention the name of a library preset of its kind (``Kind.conventions``): every
               property compares against refimpl under that preset.

:func:`validate` checks an adapter against its kind and returns the list of
problems (empty when it conforms); ``properties.core.load_user_implementations``
raises them as one ``ProtocolError``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Capability:
    """One capability of a kind.

    meaning:  what declaring it promises (one sentence, precise).
    methods:  adapter methods that must be supplied when it is declared.
    waives:   required methods of the kind an adapter declaring it need not supply (a partial
              declaration: a kernel computing one piece of what the kind describes); the
              properties calling a method it leaves out are unsupported for it
              (``Property.methods``), never passed.
    """

    meaning: str
    methods: tuple = ()
    waives: tuple = ()


@dataclasses.dataclass(frozen=True)
class Option:
    """An option whose single values an adapter may decline (``declines``).

    meaning:  what the option is.
    values:   every value the strategies draw for it.
    """

    meaning: str
    values: tuple


#: The precisions an adapter may declare (see properties.tolerance).
PRECISIONS = ("float64", "float32", "bfloat16", "float16")

#: Optional adapter attributes every kind understands, and what they hold.
ADAPTER_FIELDS = {
    "declines": "{option name: set of values} never drawn for this adapter (values of Kind.options)",
    "precision": "one of " + ", ".join(PRECISIONS) + " (default float64)",
    "tiles": "tuple of tile sizes (positive ints); lengths are drawn around their multiples",
    "head_dims": "tuple of supported head dimensions (positive ints)",
    "max_len": "longest supported sequence length (positive int); for rope, also the largest position + 1",
    "convention": "name of a library preset of the adapter's kind (the kind's conventions table; default: the "
                  "spec's own). Every property then compares with refimpl under that preset (e.g. the NaN or "
                  "mean-of-values output of a fully masked attention row); keywords stay in the spec's form",
}


@dataclasses.dataclass(frozen=True)
class Kind:
    """One adapter protocol.

    name:          the string adapters put in ``kind``.
    doc:           what an implementation of this kind computes, and against which refimpl function.
    methods:       method name -> its signature and return value, in words.
    required:      methods every adapter of the kind must supply.
    capabilities:  capability name -> :class:`Capability`.
    options:       option name -> :class:`Option` (values an adapter may decline).
    one_of:        groups of capabilities of which an adapter must declare at least one each.
    conventions:   preset name -> what it changes and its source: the values ``convention`` may take
                   (none: the kind compares only against the spec's own conventions).
    attributes:    optional adapter attributes only this kind reads -> their meaning
                   (besides :data:`ADAPTER_FIELDS`).
    notes:         when a check of this kind is inactive or partial (e.g. lse compared only when returned).
    """

    name: str
    doc: str
    methods: Mapping[str, str]
    required: tuple
    capabilities: Mapping[str, Capability]
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
    one_of: tuple = ()
    conventions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: tuple = ()

    def __post_init__(self):
        unknown = set(self.required) - set(self.methods)
        for cap in self.capabilities.values():
            unknown |= set(cap.methods) - set(self.methods)
            unknown |= set(cap.waives) - set(self.required)
        if unknown:
            raise ValueError(f"methods: expected kind {self.name!r}'s required and waived methods in its methods table "
                             f"(a waived one also required), got {sorted(unknown)}")
        for group in self.one_of:
            if set(group) - set(self.capabilities):
                raise ValueError(f"one_of: expected groups of kind {self.name!r}'s capabilities, got {group}")


def _positive_ints(x) -> bool:
    try:
        return len(x) > 0 and all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in x)
    except TypeError:
        return False


def validate(adapter, kinds: Mapping[str, Kind]) -> list:
    """Problems with ``adapter`` against its kind in ``kinds`` (name -> Kind); [] if none.

    Checked: ``name``, ``kind`` and ``capabilities`` exist; the kind is known;
    every capability is one of the kind's (the valid names are listed); every
    required method, and every method of a declared capability, is supplied
    (callable, not None); each ``one_of`` group is met; ``declines`` names known
    options and values; ``precision``, ``tiles``, ``head_dims``, ``max_len`` are
    well formed; ``convention`` names one of the kind's presets.
    """
    if not isinstance(kinds, Mapping):
        raise TypeError(f"kinds: expected a mapping of kind name -> Kind (e.g. properties.registry.KINDS), "
                        f"got {type(kinds).__name__}")
    label = repr(getattr(adapter, "name", adapter))
    missing = [f for f in ("name", "kind", "capabilities") if not hasattr(adapter, f)]
    if missing:
        return [f"adapter {label} has no attribute(s) {missing}"]
    kind = kinds.get(adapter.kind)
    if kind is None:
        return [f"adapter {label}: unknown kind {adapter.kind!r}; valid kinds: {sorted(kinds)}"]
    problems = []
    caps = set(adapter.capabilities)
    unknown = sorted(caps - set(kind.capabilities))
    if unknown:
        problems.append(f"adapter {label} (kind {kind.name!r}): unknown capabilities {unknown}; "
                        f"valid capabilities: {sorted(kind.capabilities)}")

    def supplied(m):
        return callable(getattr(adapter, m, None))

    waived = {m for c in caps & set(kind.capabilities) for m in kind.capabilities[c].waives}
    for m in kind.required:
        if m not in waived and not supplied(m):
            problems.append(f"adapter {label} (kind {kind.name!r}): required method {m!r} not supplied")
    for c in sorted(caps & set(kind.capabilities)):
        for m in kind.capabilities[c].methods:
            if not supplied(m):
                problems.append(f"adapter {label}: capability {c!r} declared but its method {m!r} is not supplied")
    for group in kind.one_of:
        if not caps & set(group):
            problems.append(f"adapter {label} (kind {kind.name!r}): declares none of {list(group)}; at least one is needed")
    declines = getattr(adapter, "declines", None) or {}
    if not isinstance(declines, Mapping):
        problems.append(f"adapter {label}: declines must be a mapping option -> set of values")
        declines = {}
    for opt, vals in declines.items():
        if opt not in kind.options:
            problems.append(f"adapter {label}: declines unknown option {opt!r}; options of kind "
                            f"{kind.name!r}: {sorted(kind.options)}")
            continue
        bad = [v for v in vals if v not in kind.options[opt].values]
        if bad:
            problems.append(f"adapter {label}: declines values {bad} of option {opt!r}, which has values "
                            f"{list(kind.options[opt].values)}")
    prec = getattr(adapter, "precision", "float64")
    if prec not in PRECISIONS:
        problems.append(f"adapter {label}: precision {prec!r}; valid precisions: {list(PRECISIONS)}")
    for f in ("tiles", "head_dims"):
        val = getattr(adapter, f, None)
        if val is not None and not _positive_ints(val):
            problems.append(f"adapter {label}: {f} must be a non-empty tuple of positive ints, got {val!r}")
    conv = getattr(adapter, "convention", None)
    if conv is not None and conv not in kind.conventions:
        valid = sorted(kind.conventions)
        problems.append(f"adapter {label}: convention {conv!r} is not a preset of kind {kind.name!r}; "
                        + (f"valid conventions: {valid}" if valid else "this kind has no conventions (leave it unset)"))
    ml = getattr(adapter, "max_len", None)
    if ml is not None and not _positive_ints((ml,)):
        problems.append(f"adapter {label}: max_len must be a positive int, got {ml!r}")
    return problems


__all__ = ["ADAPTER_FIELDS", "Capability", "Kind", "Option", "PRECISIONS", "validate"]
