"""Repository-wide pytest configuration: Hypothesis profiles and markers.

Profiles (select with the environment variable ``REFIMPL_PROFILE``):

``dev``       fast, randomised: the default on a developer machine.
``ci``        derandomised (same examples every run), no deadline, prints the
              reproduction blob of a failure. The default when ``CI`` is set.
``thorough``  thousands of examples per property; run it before a release or
              when a kernel changes: ``REFIMPL_PROFILE=thorough pytest``.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("dev", max_examples=25, **_COMMON)
settings.register_profile(
    "ci", max_examples=100, derandomize=True, print_blob=True, **_COMMON
)
settings.register_profile(
    "thorough", max_examples=2000, print_blob=True, **_COMMON
)

PROFILE = os.environ.get("REFIMPL_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if PROFILE not in ("dev", "ci", "thorough"):
    raise ValueError(
        f"REFIMPL_PROFILE={PROFILE!r}: expected one of 'dev', 'ci', 'thorough'"
    )
settings.load_profile(PROFILE)


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set REFIMPL_PROFILE to dev, ci or thorough)"
