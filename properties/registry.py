"""Where the property modules are: each defines PROPERTIES, BUNDLED and WRONG."""

from __future__ import annotations

import importlib

MODULES = (
    "properties.softmax", "properties.attention", "properties.flash", "properties.moe",
    "properties.rope", "properties.decode", "properties.mla",
    "properties.mixers_linear", "properties.mixers_scan",
    "properties.norms", "properties.ffn", "properties.losses", "properties.formats", "properties.block",

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
