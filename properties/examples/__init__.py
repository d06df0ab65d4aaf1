"""Worked examples from the source notes (docs/notes.md), computed by refimpl.

Each example names its source (a section of docs/notes.md), writes the notes' printed
figure out, and computes the same quantity with refimpl. ``tests/test_worked_examples.py``
asserts each one; ``python -m properties`` prints them side by side.

Topic modules (``attention``, ``moe``, ...) each define ``EXAMPLES``: a list of
``WorkedExample``. ``all_examples()`` gathers them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

TOPICS = ("attention", "flash", "moe", "positions", "mixers", "block", "hybrid", "numerics", "figures", "vision")


@dataclasses.dataclass(frozen=True)
class WorkedExample:
    """A number from the notes, reproduced.

    name:     short identifier (test id).
    source:   the section of docs/notes.md that states it, e.g. "docs/notes.md#sliding-window".
    seed_figure: the figure exactly as the notes print it (a string, e.g. "0.219 ≈ 22%").
    compute:  zero-argument function returning the spec's value (number or tuple).
    expected: the notes' figure as a number (or tuple) to compare against.
    rel_tol:  relative tolerance of the comparison, justified by the digits
              the notes print (e.g. 5e-3 for a figure printed to 3 digits).
    note:     what the comparison means, where the notes are loose or wrong
              (cite the entry, e.g. docs/errata.md#e7).
    beside:   optional zero-argument function returning a line of exact figures
              computed by the spec, printed beside the notes' (e.g. an exact count
              beside the notes' estimate).
    erratum:  the docs/errata.md entry (N of #eN) when the notes' figure is wrong: ``expected``
              is then the right value, and the main job says the notes differ.
    """

    name: str
    source: str
    seed_figure: str
    compute: Callable[[], object]
    expected: object
    rel_tol: float
    note: str = ""
    beside: Callable[[], str] | None = None
    erratum: int | None = None


def all_examples() -> list[WorkedExample]:
    out: list[WorkedExample] = []
    for topic in TOPICS:
        try:
            mod = importlib.import_module(f"{__name__}.{topic}")
        except ModuleNotFoundError as e:  # a topic not written yet
            if e.name != f"{__name__}.{topic}":
                raise
            continue
        out.extend(mod.EXAMPLES)
    return out
