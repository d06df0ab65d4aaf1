"""The one shape of every preset registry: a read-only mapping name -> preset, each preset with
the source it reproduces.

    registry[name]            the preset (an unknown name raises ``UnknownPreset``, a KeyError
                              and a ValueError: ``<argument>: expected one of [...], got 'x'``)
    registry.lookup(p)        ``p`` itself when it already is a preset of the registry's type,
                              else ``registry[p]``
    registry.source(name)     its ``Source``: the docs section stating it, library, file,
                              function and the version it was checked against

The registries: ``refimpl.conventions.PRESETS`` (attention), ``refimpl.moe.presets.ALL`` (MoE
routing), ``refimpl.norms.RMSNORM_PRESETS``, ``refimpl.mixers.presets.PRESETS`` (linear-time
mixers) and ``refimpl.model_configs.PUBLISHED`` (published model configurations). A leaf
module: it imports nothing from refimpl but the validation layer (itself a leaf).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ._validate.accounting import preset_name, registry_entry


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a preset comes from. ``section``: the ``docs/<file>.md#<anchor>`` stating it;
    ``library``, ``file``, ``function``; ``version``: what it was checked against and how
    (read, reference, run), as that section's table says."""

    section: str
    library: str
    file: str
    function: str
    version: str


class UnknownPreset(KeyError, ValueError):
    """An unknown preset name: a KeyError for mapping use, a ValueError for argument checks."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping):
    """name -> preset in the given order, with ``source(name)``; ``argument`` names the argument
    in the unknown-name error, ``kind`` (a class) lets ``lookup`` accept a preset itself."""

    def __init__(self, argument: str, entries, *, kind: type | None = None):
        """``entries``: (name, preset, Source) triples."""
        self.argument, self.kind = argument, kind
        self._presets, self._sources = {}, {}
        for name, preset, source in entries:
            registry_entry(name, source, self._presets, Source)
            self._presets[name], self._sources[name] = preset, source

    def _expected(self) -> str:
        k = self.kind.__name__ if self.kind is not None else ""
        article = "an" if k[:1] in "AEIOU" else "a"
        return f"{article} {k} or one of {sorted(self._presets)}" if k else f"one of {sorted(self._presets)}"

    def __getitem__(self, name):
        return self._presets[preset_name(name, self._presets, self.argument, self._expected, UnknownPreset)]

    def __iter__(self):
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)

    def __contains__(self, name) -> bool:
        try:
            return name in self._presets
        except TypeError:
            return False

    def __repr__(self) -> str:
        return f"Registry({self.argument!r}, {list(self._presets)})"

    def lookup(self, preset):
        """``preset`` itself if it is an instance of ``kind``, else the preset it names."""
        if self.kind is not None and isinstance(preset, self.kind):
            return preset
        return self[preset]

    def source(self, name) -> Source:
        """The ``Source`` of preset ``name``."""
        self[name]  # the unknown-name error
        return self._sources[name]


__all__ = ["Registry", "Source", "UnknownPreset"]
