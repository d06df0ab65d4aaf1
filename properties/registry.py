"""Where the property modules are: each defines KINDS, PROPERTIES, BUNDLED and WRONG.

To add a topic, append its module to ``MODULES``: its ``KINDS`` (properties.protocol)
are then what adapters of those kinds are validated against, what
``python -m properties --kind`` accepts and what docs/conformance.md lists.
"""

from __future__ import annotations

import importlib

MODULES = (
    "properties.softmax", "properties.attention", "properties.flash", "properties.moe",
    "properties.rope", "properties.decode", "properties.mla",
    "properties.mixers_linear", "properties.mixers_scan",
    "properties.norms", "properties.ffn", "properties.losses", "properties.formats", "properties.block",
    "properties.int_formats", "properties.vision",

    "properties.distributed",
)


def modules():
    out = []
    for name in MODULES:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError as e:  # a topic not written yet
            if e.name != name:
                raise
    return out


def all_properties():
    return [p for m in modules() for p in m.PROPERTIES]


def all_bundled():
    seen, out = set(), []
    for m in modules():
        for impl in m.BUNDLED:
            if id(impl) not in seen:
                seen.add(id(impl))
                out.append(impl)
    return out


def all_wrong():
    out = {}
    for m in modules():
        for name, impl in m.WRONG.items():
            out[(m.__name__, name)] = impl
    return out


def all_kinds() -> dict:
    """Kind name -> properties.protocol.Kind, over every module's KINDS."""
    out = {}
    for m in modules():
        for kind in getattr(m, "KINDS", ()):
            if kind.name in out and out[kind.name] is not kind:
                raise ValueError(f"KINDS: expected each kind declared once, got {kind.name!r} again in {m.__name__}")
            out[kind.name] = kind
    return out
