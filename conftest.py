"""Repository-wide pytest configuration: Hypothesis profiles, markers, reports.

Profiles (select with the environment variable ``REFIMPL_PROFILE``; defined once
in ``properties/profiles.py``, shared with ``python -m properties --profile``):

``dev``       fast, randomised: the default on a developer machine.
``ci``        derandomised (same examples every run), no deadline, prints the
              reproduction blob of a failure. The default when ``CI`` is set.
``thorough``  thousands of examples per property; run it before a release or
              when a kernel changes: ``REFIMPL_PROFILE=thorough pytest``.

``pytest --json PATH`` (or ``REFIMPL_JSON=PATH``) writes one record per
(property, implementation) test: pass / fail / unsupported / xfail / xpass,
examples run, and for a failure the shrunk case and its reproduction snippet
(the format of ``python -m properties --json``; docs/conformance.md).
"""

import os

import pytest

from properties import profiles

PROFILE = profiles.load()


def pytest_addoption(parser):
    parser.addoption("--json", dest="refimpl_json", default=os.environ.get("REFIMPL_JSON"), metavar="PATH",
                     help="write a JSON report of every (property, implementation) test to PATH")


def pytest_configure(config):
    from properties.report import xfail_entries

    xfail_entries()  # an xfail file naming unknown properties/implementations is an error up front
    config._refimpl_records = []


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set REFIMPL_PROFILE to dev, ci or thorough)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    prop, impl = params.get("prop"), params.get("impl")
    if prop is None or impl is None or not hasattr(prop, "check"):
        return
    if rep.when == "setup" and not rep.skipped:
        return
    if rep.when == "teardown":
        return
    from properties.core import RECORDS, RunRecord

    rec = RECORDS.get((prop.name, impl.name)) or RunRecord(prop.name, prop.kind, impl.name)
    rec = RunRecord(**rec.as_dict())
    if hasattr(rep, "wasxfail"):
        rec.status = "xfail" if rep.skipped else "xpass"
        rec.reason = rep.wasxfail
    elif rep.skipped:
        rec.status = "unsupported"
        rec.reason = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    elif rep.failed:
        rec.status = "fail" if not (rep.longreprtext or "").count("XPASS") else "xpass"
        if not rec.reason:
            rec.reason = (rep.longreprtext or "")[-2000:]
    else:
        rec.status = "pass"
    item.config._refimpl_records.append(rec)


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("refimpl_json")
    if path:
        from properties.report import write_json

        write_json(path, session.config._refimpl_records, runner="pytest", profile=PROFILE)
