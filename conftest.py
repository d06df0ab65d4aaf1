"""Repository-wide pytest configuration: Hypothesis profiles and the ``--json`` report.

Profiles (select with the environment variable ``REFIMPL_PROFILE``; defined once
in ``properties/profiles.py``, shared with ``python -m properties --profile`` and
``pytest --refimpl-profile``):

``dev``       fast, randomised: the default on a developer machine.
``ci``        derandomised (same examples every run), no deadline, prints the
              reproduction blob of a failure. The default when ``CI`` is set.
``thorough``  thousands of examples per property; run it before a release or
              when a kernel changes: ``REFIMPL_PROFILE=thorough pytest``.

``pytest --json PATH`` (or ``REFIMPL_JSON=PATH``) writes one record per
(property, implementation) test: pass / fail / unsupported / xfail / xpass,
examples run, worst error against its bound, sizes drawn, and for a failure the
shrunk case and its reproduction snippet (the format of ``python -m properties
--json``; docs/conformance.md). The recording, the JSON writer and the trimmed
failure reports live in the installed pytest plugin (``properties/pytest_plugin.py``),
which also serves ``pytest --refimpl-impl`` in other repositories; it is registered
here when the package's pytest11 entry point has not (a checkout used without installing).
"""

import os

from properties import profiles

PROFILE = profiles.load()


def pytest_addoption(parser, pluginmanager):
    if not pluginmanager.has_plugin("properties.pytest_plugin"):
        from properties import pytest_plugin

        pluginmanager.register(pytest_plugin, "properties.pytest_plugin")
    parser.addoption("--json", dest="refimpl_json", default=os.environ.get("REFIMPL_JSON"), metavar="PATH",
                     help="write a JSON report of every (property, implementation) test to PATH")


def pytest_configure(config):
    from properties.report import xfail_entries

    xfail_entries()  # an xfail file naming unknown properties/implementations is an error up front


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set REFIMPL_PROFILE to dev, ci or thorough)"
