"""Run the shipped peer adapters through every property of their kind.

    python -m properties.peers [--profile ci] [--only NAME,...] [--json PATH]

For each available adapter and each property of its kind: ``pass``, ``fail``
(with the message), ``unsupported`` (a capability missing, or every case the
property draws uses an option value the adapter declines), ``xfail`` (a known
deviation of the library from the spec, listed in ``xfail.json`` with the
library's file and function; the property must actually fail, else ``xpass``,
reported as an error). Cases using a declined option value (``adapter.declines``:
capacity "none" / "zero" / "finite", normalize and drop_order values) are not
drawn: the strategies are filtered here until the suite's own strategies honour
``declines``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .. import registry
from ..core import Unsupported, strategy_for, supports
from . import FACTORIES, Unavailable

XFAIL_PATH = os.path.join(os.path.dirname(__file__), "xfail.json")
PROFILES = {"dev": dict(max_examples=25), "ci": dict(max_examples=100, derandomize=True),
            "thorough": dict(max_examples=2000)}


def xfails() -> dict:
    """(property, implementation) -> reason, from xfail.json."""
    with open(XFAIL_PATH) as fh:
        return {(e["property"], e["impl"]): e["reason"] for e in json.load(fh)}


def peers(only=None):
    """[(factory name, adapter)] of the available peers, and {factory name: reason} of the others."""
    import properties.peers as pkg

    got, missing = [], {}
    for name in FACTORIES:
        if only and name not in only:
            continue
        try:
            out = getattr(pkg, name)()
        except Unavailable as e:
            missing[name] = str(e)
            continue
        for impl in out if isinstance(out, (list, tuple)) else [out]:
            got.append((name, impl))
    return got, missing


def _route_options(case):
    route = getattr(case, "route", case)
    return route.kwargs() if hasattr(route, "kwargs") and callable(route.kwargs) else None


def accepts(impl, case) -> bool:
    """False when ``case`` uses an option value ``impl`` declines."""
    declines = getattr(impl, "declines", None) or {}
    opts = _route_options(case)
    if not declines or opts is None:
        return True
    from ._moe import option_values

    return not any(v in declines.get(k, ()) for k, v in option_values(opts).items())


def run_pair(prop, impl, profile="ci", xfail=None, max_examples=None):
    """(status, detail, examples) for one property against one adapter."""
    cfg = dict(PROFILES[profile], **({} if max_examples is None else {"max_examples": max_examples}))
    if not supports(impl, prop):
        return "unsupported", f"needs {sorted(prop.requires - frozenset(impl.capabilities))}", 0
    count = [0]

    @settings(deadline=None, database=None, **cfg,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=strategy_for(prop, impl).filter(lambda c: accepts(impl, c)))
    def _run(case):
        count[0] += 1
        prop.check(impl, case)

    try:
        _run()
    except Unsatisfiable:
        return "unsupported", "every case it draws uses a declined option value", 0
    except Unsupported as e:
        return ("xfail", xfail, count[0]) if xfail else ("fail", f"Unsupported raised: {e}", count[0])
    except Exception as e:  # AssertionError, or the library raising
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return ("xfail", xfail, count[0]) if xfail else ("fail", msg, count[0])
    if xfail:
        return "xpass", f"listed as xfail ({xfail}) but passed", count[0]
    return "pass", "", count[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m properties.peers", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=os.environ.get("REFIMPL_PROFILE", "ci"), choices=sorted(PROFILES))
    ap.add_argument("--only", default="", help="comma-separated factory names (default: all)")
    ap.add_argument("--json", help="write the per-pair results here")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    found, missing = peers(only)
    xf = xfails()
    props = registry.all_properties()
    rows, summary, bad = [], {}, 0
    for factory, impl in found:
        counts = {"pass": 0, "fail": 0, "xfail": 0, "xpass": 0, "unsupported": 0}
        t0 = time.perf_counter()
        for prop in (p for p in props if p.kind == impl.kind):
            status, detail, n = run_pair(prop, impl, args.profile, xf.get((prop.name, impl.name)))
            counts[status] += 1
            rows.append(dict(factory=factory, impl=impl.name, property=prop.name, status=status, detail=detail,
                             examples=n))
            if status in ("fail", "xpass"):
                bad += 1
                print(f"  {status.upper()} {prop.name} / {impl.name}: {detail}", file=sys.stderr)
        summary[impl.name] = dict(counts, seconds=round(time.perf_counter() - t0, 1),
                                  library=getattr(impl, "library", ""), preset=getattr(impl, "preset", ""))
    print(f"{'adapter':48s} {'pass':>4s} {'xfail':>5s} {'unsup':>5s} {'fail':>4s}  library / preset")
    for name, c in summary.items():
        print(f"{name:48s} {c['pass']:4d} {c['xfail']:5d} {c['unsupported']:5d} {c['fail'] + c['xpass']:4d}  "
              f"{c['library']} / {c['preset']}  ({c['seconds']} s)")
    for name, reason in missing.items():
        print(f"{name:48s} {reason}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(profile=args.profile, summary=summary, unavailable=missing, results=rows), fh, indent=1)
    return 1 if bad else 0
