"""Worked examples from the seed documents, computed by refimpl.

Each example names its source (seed file and section), writes the seed's printed
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
    """A number from a seed, reproduced.

    name:     short identifier (test id).
    source:   seed file stem and section, e.g. "000 Problem 1".
    seed_figure: the figure exactly as the seed prints it (a string, e.g. "0.219 ≈ 22%").
    compute:  zero-argument function returning the spec's value (number or tuple).
    expected: the seed's figure as a number (or tuple) to compare against.
    rel_tol:  relative tolerance of the comparison, justified by the digits
              the seed prints (e.g. 5e-3 for a figure printed to 3 digits).
    note:     what the comparison means, where the seed is loose or wrong
              (cite ERRATA.md by number).
    beside:   optional zero-argument function returning a line of exact figures
              computed by the spec, printed beside the seed's (e.g. an exact count
              beside the seed's estimate).
    erratum:  the ERRATA.md row when the seed's figure is wrong: ``expected`` is
              then the right value, and the main job says the seed differs.
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
