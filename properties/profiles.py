"""The Hypothesis profiles, one definition for both runners (pytest's conftest.py
and ``python -m properties --profile``).

``dev``       fast, randomised: the default on a developer machine (25 examples).
``ci``        derandomised (same examples every run), no deadline, prints the
              reproduction blob of a failure (100 examples). Default when ``CI`` is set.
``thorough``  2000 examples per property; before a release or when a kernel changes.

Selected by ``REFIMPL_PROFILE`` (pytest) or ``--profile`` (python -m properties).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = ("dev", "ci", "thorough")
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("dev", max_examples=25, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=2000, print_blob=True, **_COMMON)


def default_profile() -> str:
    """$REFIMPL_PROFILE, else "ci" when $CI is set, else "dev"."""
    name = os.environ.get("REFIMPL_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    if name not in PROFILES:
        raise ValueError(f"REFIMPL_PROFILE: expected one of {', '.join(map(repr, PROFILES))}, got {name!r}")
    return name


_loaded: str | None = None


def load(name: str | None = None) -> str:
    """Load profile ``name`` (default: :func:`default_profile`) and return its name."""
    global _loaded
    name = name or default_profile()
    if name not in PROFILES:
        raise ValueError(f"name: expected a profile, one of {', '.join(map(repr, PROFILES))}, got {name!r}")
    settings.load_profile(name)
    _loaded = name
    return name


def active() -> str | None:
    """The profile :func:`load` loaded last in this process (None: none was; Hypothesis's defaults)."""
    return _loaded
