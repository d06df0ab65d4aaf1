"""The project's main job: ``python -m properties``.

1. Prints every worked example from the seed documents beside the figure the
   seed gives (and the exact figure where the seed estimates).
2. Runs every conformance property against every bundled implementation (and
   any named in $REFIMPL_IMPLS) and prints a per-property summary.
3. Runs the meta-tests: each property must reject the wrong implementations it names.

Exit status 0 when everything passes. Options: ``--examples N`` (Hypothesis
examples per property, default 20), ``--no-meta``, ``--no-kernels`` (leave
out the gpu/ kernels, run through OpenCL on the CPU when PoCL is present),
``--only SUBSTRING``.
"""

from __future__ import annotations

import argparse
import sys
import time

from hypothesis import HealthCheck

from . import registry
from .core import Unsupported, find_counterexample, load_user_implementations, run_property, supports
from .examples import all_examples


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
        print(f"[{'ok' if ok else 'FAIL'}] {ex.name}  ({ex.source})")
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


def conformance(examples: int, only: str | None, kernels: bool) -> int:
    impls = registry.all_bundled() + (kernel_adapters() if kernels else []) + load_user_implementations()
    props = [p for p in registry.all_properties() if not only or only in p.name]
    print()
    print("=" * 100)
    print(f"Conformance properties ({examples} Hypothesis examples each)")
    print("=" * 100)
    failures = 0
    for prop in props:
        line, unsupported = [], []
        for impl in (i for i in impls if i.kind == prop.kind):
            if not supports(impl, prop):
                unsupported.append(impl.name)
                continue
            t0 = time.perf_counter()
            try:
                run_property(prop, impl, **_REPORT_SETTINGS, max_examples=examples)
                line.append(f"{impl.name}: pass ({time.perf_counter() - t0:.1f}s)")
            except Unsupported:
                unsupported.append(impl.name)
            except Exception as e:  # report and continue
                failures += 1
                msg = str(e).splitlines()[0][:300]
                line.append(f"{impl.name}: FAIL: {msg}")
        if unsupported:
            line.append("unsupported (not run, not counted): " + ", ".join(unsupported))
        print(f"- {prop.name} [{prop.kind}]: {prop.doc}")
        for entry in line:
            print(f"    {entry}")
    return failures


def meta(only: str | None) -> int:
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
            if only and only not in prop.name:
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
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--no-meta", action="store_true")
    ap.add_argument("--no-kernels", action="store_true", help="skip the gpu/ kernels (OpenCL on the CPU)")
    ap.add_argument("--only", default=None, help="run only properties whose name contains this")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    bad = worked_examples()
    bad += conformance(args.examples, args.only, kernels=not args.no_kernels)
    if not args.no_meta:
        bad += meta(args.only)
    print()
    print(f"{'ALL PASSED' if not bad else f'{bad} FAILURE(S)'} in {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
