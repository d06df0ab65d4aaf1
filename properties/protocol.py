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
methods as attributes (callables; ``None`` means not supplied).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Capability:
    """One capability of a kind.

    meaning:  what declaring it promises (one sentence, precise).
    methods:  adapter methods that must be supplied when it is declared.
    """

    meaning: str
    methods: tuple = ()


@dataclasses.dataclass(frozen=True)
class Kind:
    """One adapter protocol.

    name:          the string adapters put in ``kind``.
    doc:           what an implementation of this kind computes, and against which refimpl function.
    methods:       method name -> its signature and return value, in words.
    required:      methods every adapter of the kind must supply.
    capabilities:  capability name -> :class:`Capability`.
    """

    name: str
    doc: str
    methods: Mapping[str, str]
    required: tuple
    capabilities: Mapping[str, Capability]

    def __post_init__(self):
        unknown = set(self.required) - set(self.methods)
        for cap in self.capabilities.values():
            unknown |= set(cap.methods) - set(self.methods)
        if unknown:
            raise ValueError(f"kind {self.name!r}: methods {sorted(unknown)} are not in its methods table")


__all__ = ["Capability", "Kind"]
