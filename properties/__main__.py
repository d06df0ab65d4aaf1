"""The project's main job: ``python -m properties``.

1. Prints every worked example from the seed documents beside the figure the
   seed gives (and the exact figure where the seed estimates).
2. Runs every conformance property against every bundled implementation (and
   any named in $REFIMPL_IMPLS) and prints a per-property summary.
3. Runs the meta-tests: each property must reject the wrong implementations it names.

Exit status 0 when everything passes. Options: ``--impl NAME`` (only the
implementations of that name, repeatable; bundled, wrong or from
$REFIMPL_IMPLS), ``--kind KIND`` (only properties and implementations of that
kind, repeatable), ``--profile dev|ci|thorough`` (the Hypothesis profiles of
pytest, ``properties/profiles.py``; default: 20 derandomised examples),
``--examples N``, ``--json PATH`` (one record per property and implementation),
``--no-meta``, ``--no-kernels`` (leave out the gpu/ kernels, run through OpenCL
on the CPU when PoCL is present), ``--only SUBSTRING`` (property names).
With ``--impl`` or ``--kind`` the worked examples are not printed, and the
meta-tests run only with ``--meta``.
"""

from __future__ import annotations

import argparse
import sys
import time

from hypothesis import HealthCheck, settings

from . import profiles, registry
from .core import RECORDS, RunRecord, Unsupported, check_adapter, find_counterexample, load_user_implementations, run_property
from .examples import all_examples
from .core import ProtocolError
from .report import XfailError, write_json, xfail_entries


_REPORT_SETTINGS = dict(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _fmt(x):
    if isinstance(x, tuple):
        return "(" + ", ".join(_fmt(e) for e in x) + ")"
    if isinstance(x, float):
        return f"{x:.6g}"
    try:
        return f"{x:,}" if float(x) == int(x) and abs(x) >= 1000 else f"{x}"
    except (TypeError, ValueError, OverflowError):
        return str(x)


def _close(got, exp, tol):
    import math

    if isinstance(exp, tuple):
        return isinstance(got, tuple) and len(got) == len(exp) and all(_close(g, e, tol) for g, e in zip(got, exp))
    return got == exp if tol == 0 else math.isclose(got, exp, rel_tol=tol)


def worked_examples() -> int:
    print("=" * 100)
    print("Worked examples from the seeds (source | seed figure | spec computes | check)")
    print("=" * 100)
    failures = 0
    for ex in all_examples():
        got = ex.compute()
        ok = _close(got, ex.expected, ex.rel_tol)
        failures += not ok
        tag = "ok" if ok else "FAIL"
        if ex.erratum is not None:  # the check is against the right value, not the seed's
            tag += f", seed differs: ERRATA {ex.erratum}"
        print(f"[{tag}] {ex.name}  ({ex.source})")
        print(f"       seed:  {ex.seed_figure}")
        print(f"       spec:  {_fmt(got)}   (tolerance {ex.rel_tol:g})")
        if ex.beside is not None:
            print(f"       exact: {ex.beside()}")
        if ex.note:
            print(f"       note:  {ex.note}")
    return failures


def kernel_adapters() -> list:
    """Adapters for the gpu/ kernels whose runtime is present (OpenCL on the CPU via PoCL here)."""
    try:
        from gpu import adapters
        from gpu.backends import get_backend

        get_backend("opencl").runtime()
    except Exception as e:  # no extra installed, or no OpenCL driver
        print(f"(gpu kernels not included: {type(e).__name__}: {str(e).splitlines()[0][:160]})")
        return []
    return adapters.opencl_attention() + adapters.opencl_routing()


def conformance(examples, only, kernels, impl_names=(), kinds=(), use_profile=False) -> tuple:
    """Run the properties; returns (failures, records)."""
    impls = registry.all_bundled() + (kernel_adapters() if kernels else []) + load_user_implementations()
    if impl_names:
        pool = impls + list(registry.all_wrong().values())
        impls = [i for i in pool if i.name in impl_names]
        missing = sorted(set(impl_names) - {i.name for i in impls})
        if missing:
            raise SystemExit(f"--impl: no implementation named {missing}; known: "
                             f"{sorted({i.name for i in pool})}")
    for impl in impls:
        check_adapter(impl, impl.name)
    known = registry.all_kinds()
    bad_kinds = sorted(set(kinds) - set(known))
    if bad_kinds:
        raise SystemExit(f"--kind: unknown kinds {bad_kinds}; valid kinds: {sorted(known)}")
    xfails = xfail_entries({i.name for i in impls} | {i.name for i in registry.all_bundled()}
                           | {i.name for i in registry.all_wrong().values()})
    props = [p for p in registry.all_properties() if (not only or only in p.name) and (not kinds or p.kind in kinds)]
    settings_kw = {} if use_profile else dict(_REPORT_SETTINGS, max_examples=examples)
    if use_profile and examples is not None:
        settings_kw["max_examples"] = examples
    print()
    print("=" * 100)
    n = settings_kw.get("max_examples") or settings.default.max_examples
    print(f"Conformance properties ({n} Hypothesis examples each)")
    print("=" * 100)
    failures, records = 0, []
    for prop in props:
        if not any(i.kind == prop.kind for i in impls):
            continue
        line, unsupported = [], []
        for impl in (i for i in impls if i.kind == prop.kind):
            xfail = xfails.get((prop.name, impl.name))
            try:
                rec = run_property(prop, impl, **settings_kw)
                if xfail:
                    rec.status, rec.reason = "xpass", xfail
                    failures += 1
                    line.append(f"{impl.name}: XPASS (listed in the xfail file: {xfail})")
                else:
                    line.append(f"{impl.name}: pass ({rec.examples} examples, {rec.seconds:.1f}s)")
            except Unsupported as e:
                rec = RECORDS[(prop.name, impl.name)]
                unsupported.append(str(e))
            except Exception as e:  # report and continue
                rec = RECORDS.get((prop.name, impl.name)) or RunRecord(prop.name, prop.kind, impl.name, "fail")
                msg = str(e).split("\n\nReproduce with:")[0].splitlines()[0][:300]
                if xfail:
                    rec.status, rec.reason = "xfail", xfail
                    line.append(f"{impl.name}: xfail ({xfail}; fails: {msg})")
                else:
                    rec.status = "fail"
                    failures += 1
                    line.append(f"{impl.name}: FAIL: {msg}")
                    if rec.snippet:
                        line.append("Reproduce with:\n" + "\n".join("      " + s for s in rec.snippet.splitlines()))
            records.append(rec)
        if unsupported:
            line.append("unsupported (not run, not counted): " + "; ".join(unsupported))
        print(f"- {prop.name} [{prop.kind}]: {prop.doc}")
        for entry in line:
            print(f"    {entry}")
    return failures, records


def meta(only: str | None, kinds=()) -> int:
    wrong = registry.all_wrong()
    by_name = {}
    for (mod, name), impl in wrong.items():
        by_name.setdefault(name, []).append(impl)
    print()
    print("=" * 100)
    print("Meta-tests: each property must reject the wrong implementations it names")
    print("=" * 100)
    failures = 0
    for mod in registry.modules():
        for prop in mod.PROPERTIES:
            if (only and only not in prop.name) or (kinds and prop.kind not in kinds):
                continue
            results = []
            for bug in prop.rejects:
                case = find_counterexample(prop, mod.WRONG[bug], max_examples=300)
                results.append(f"{bug}: {'rejected' if case is not None else 'NOT REJECTED'}")
                failures += case is None
            print(f"- {prop.name}: " + "; ".join(results))
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m properties", description=__doc__.splitlines()[0])
    ap.add_argument("--impl", action="append", default=[], metavar="NAME",
                    help="only this implementation (repeatable; bundled, wrong or from $REFIMPL_IMPLS)")
    ap.add_argument("--kind", action="append", default=[], metavar="KIND",
                    help="only properties and implementations of this kind (repeatable)")
    ap.add_argument("--profile", choices=profiles.PROFILES, default=None,
                    help="Hypothesis profile, as REFIMPL_PROFILE under pytest (default: 20 derandomised examples)")
    ap.add_argument("--examples", type=int, default=None, help="Hypothesis examples per property")
    ap.add_argument("--json", default=None, metavar="PATH", help="write a JSON report to PATH")
    ap.add_argument("--meta", action="store_true", help="run the meta-tests even with --impl/--kind")
    ap.add_argument("--no-meta", action="store_true")
    ap.add_argument("--no-kernels", action="store_true", help="skip the gpu/ kernels (OpenCL on the CPU)")
    ap.add_argument("--only", default=None, help="run only properties whose name contains this")
    args = ap.parse_args(argv)
    if args.profile:
        profiles.load(args.profile)
    examples = args.examples if (args.examples is not None or args.profile) else 20
    filtered = bool(args.impl or args.kind)
    t0 = time.perf_counter()
    bad = 0 if filtered else worked_examples()
    try:
        failures, records = conformance(examples, args.only, kernels=not args.no_kernels and not filtered,
                                        impl_names=tuple(args.impl), kinds=tuple(args.kind),
                                        use_profile=bool(args.profile))
    except (ProtocolError, XfailError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad += failures
    if not args.no_meta and (args.meta or not filtered):
        bad += meta(args.only, tuple(args.kind))
    if args.json:
        write_json(args.json, records, runner="python -m properties", profile=args.profile or "report",
                   implementations=sorted({r.implementation for r in records}))
        print(f"JSON report: {args.json}")
    print()
    print(f"{'ALL PASSED' if not bad else f'{bad} FAILURE(S)'} in {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
