"""Sizes and the work budget: ``MAX_COUNT``, ``FLOAT_MAX`` and ``check_budget`` (refuse work an argument
sizes beyond ``max_bytes()`` before it is done). A leaf."""

from __future__ import annotations

import math
import os

import numpy as np

MAX_COUNT = 2**62
"""Largest count (length, size, index) accepted where it sizes or indexes an array."""

FLOAT_MAX = float(np.finfo(np.float64).max)


STEP_BYTES = 4096
"""What one step of a Python loop an argument bounds counts for against the byte budget
(a step costs microseconds: at the default budget of a 24 GiB machine, about 3 million steps)."""


def _default_max_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: 4 GiB
        return 4 * 2**30


_DEFAULT_MAX_BYTES = _default_max_bytes()


def max_bytes() -> int:
    """The work budget in bytes: ``$REFIMPL_MAX_BYTES`` (an int) if set, else half the physical memory."""
    env = os.environ.get("REFIMPL_MAX_BYTES")
    if not env:
        return _DEFAULT_MAX_BYTES
    try:
        return max(int(env), 0)
    except ValueError:
        raise ValueError(f"REFIMPL_MAX_BYTES: expected an int (a number of bytes), got {env!r}") from None


def check_budget(names: str, *, shape=None, itemsize: int = 8, nbytes=None, steps=None, what: str = "") -> None:
    """Refuse work an argument sizes beyond ``max_bytes()`` before it is done.

    ``shape`` (ints, exact Python arithmetic) * ``itemsize``, ``nbytes``, and ``steps`` of a
    Python loop (``STEP_BYTES`` each) add up to the estimate; beyond the budget a ValueError:
    ``<names>: expected work within REFIMPL_MAX_BYTES = ..., got <what> of ... bytes``.
    """
    total = 0
    if shape is not None:
        total += math.prod(int(s) for s in shape) * int(itemsize)
    if nbytes is not None:
        total += int(nbytes)
    if steps is not None:
        total += int(steps) * STEP_BYTES
    budget = max_bytes()
    if total > budget:
        desc = what or (f"an array of shape {tuple(int(s) for s in shape)}" if shape is not None else "work")
        raise ValueError(f"{names}: expected work within the budget REFIMPL_MAX_BYTES = {budget} bytes, got {desc} "
                         f"needing {total} bytes (about {total / 2**30:.3g} GiB); pass smaller sizes or raise "
                         f"REFIMPL_MAX_BYTES")
