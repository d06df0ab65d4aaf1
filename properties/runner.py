"""What ``python -m properties`` runs, importable (worker processes re-import it by name).

``conformance()`` runs every (property, implementation) pair, in this process or in worker
processes (``jobs``, ``properties.runner_pool``), prints the per-property report, the table (with
each implementation's time inside its adapter apart from the suite's) and the meta-tests
(``meta()``); the serial pieces it uses (``worked_examples()``, which prints the notes' figures
beside the spec's, ``select_implementations()``, which resolves ``--impl`` / ``--kind`` and
``$REFIMPL_IMPLS``, one pair's run and report, the table) live in ``properties.runner_pairs`` and
are re-exported here. The command line itself is ``properties/__main__.py``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from . import profiles, registry
from .core import find_counterexample
from .report import xfail_entries
from .runner_pairs import (  # noqa: F401  (re-exported: defined here before)
    STATUSES, TIMES, Progress, UsageError, _header, _meta_header, _report_pair, _run_pair, kernel_adapters,
    not_drawn_lines, select_implementations, table, worked_examples)
from .runner_pool import (  # noqa: F401  (re-exported: defined here before)
    _conformance_parallel, _pair_groups, _start_method, _unprobed_kernel_adapters)

#: examples per property by default: the dev profile's count (25), derandomised (no database)
#: so that a run's verdict is the same on every machine
DEFAULT_EXAMPLES = settings.get_profile("dev").max_examples

_REPORT_SETTINGS = dict(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def conformance(examples, only, kernels, impl_names=(), kinds=(), use_profile=False, seed=None,
                maxfail=None, jobs=1, with_examples=False, with_meta=False) -> tuple:
    """Run the properties; returns (failures, records, stopped, meta failures).

    ``with_examples`` prints the worked examples first and ``with_meta`` runs the meta-tests after
    the table. ``jobs`` > 1 runs the pairs (and the worked examples and meta-tests) in that many
    worker processes; the report is printed in the same order as a serial run, with the same verdicts
    (the examples are derandomised or seeded, so a pair draws the same cases in any process).
    """
    if jobs > 1 and maxfail is None and _start_method() is None:
        print("(--jobs: worker processes cannot start from this program, which has no main file on disk; "
              "running in this process)", flush=True)
    if maxfail is not None or _start_method() is None:
        jobs = 1  # --maxfail stops in report order: one process
    impls = select_implementations(impl_names, kinds, kernels=kernels and jobs == 1)
    gpu_kernels = _unprobed_kernel_adapters() if kernels and jobs > 1 else []
    xfails = xfail_entries({i.name for i in impls + gpu_kernels} | {i.name for i in registry.all_bundled()}
                           | {i.name for i in registry.all_wrong().values()})
    props = [p for p in registry.all_properties() if (not only or only in p.name) and (not kinds or p.kind in kinds)]
    settings_kw = {} if use_profile else dict(_REPORT_SETTINGS, max_examples=examples)
    if use_profile and examples is not None:
        settings_kw["max_examples"] = examples
    n = settings_kw.get("max_examples") or settings.default.max_examples
    if jobs > 1:
        from concurrent.futures.process import BrokenProcessPool

        run = dict(props=props, xfails=xfails, settings_kw=settings_kw, seed=seed, only=only, kinds=tuple(kinds),
                   impl_names=tuple(impl_names), profile=profiles.active())
        try:
            return _conformance_parallel(impls, gpu_kernels, n, jobs, with_examples, with_meta, run)
        except BrokenProcessPool as e:  # a worker died (killed, out of memory)
            print(f"(worker processes failed: {e}; running everything again in this process: --jobs 1)", flush=True)
            impls = select_implementations(impl_names, kinds, kernels=kernels)
    bad = worked_examples() if with_examples else 0
    pairs = [(prop, impl) for prop in props for impl in impls if impl.kind == prop.kind]
    _header(n, seed, settings_kw, len(pairs))
    progress = Progress(len(pairs), n)
    failures, records, stopped = 0, [], False
    for prop in props:
        mine = [impl for p, impl in pairs if p is prop]
        if maxfail is not None and failures >= maxfail:
            stopped = True
        if not mine or stopped:
            continue
        print(f"- {prop.name} [{prop.kind}]: {prop.doc}", flush=True)
        unsupported = []
        for impl in mine:
            if maxfail is not None and failures >= maxfail:
                stopped = True
                break
            progress.start()
            rec, line, failed, why = _run_pair(
                prop, impl, xfails.get((prop.name, impl.name)), settings_kw, seed,
                progress=lambda r, p=prop, i=impl: progress.example(p, i, r))
            failures += failed
            _report_pair(rec, line, why, progress, records, unsupported)
        if unsupported:
            print("    unsupported (not run, not counted): " + "; ".join(unsupported), flush=True)
    if stopped:
        print(f"\nstopped after {failures} failure(s) (--maxfail {maxfail})")
    print()
    print(table(records))
    print(not_drawn_lines(records))
    meta_bad = meta(only, tuple(kinds)) if with_meta and not stopped else 0
    return failures + bad, records, stopped, meta_bad


def meta(only: str | None, kinds=()) -> int:
    _meta_header()
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
            print(f"- {prop.name}: " + "; ".join(results), flush=True)
    return failures
