"""What ``python -m properties`` runs, importable (worker processes re-import it by name).

``worked_examples()`` prints the notes' figures beside the spec's; ``conformance()`` runs every
(property, implementation) pair, in this process or in worker processes (``jobs``), prints the
per-property report, the table (with each implementation's time inside its adapter apart from the
suite's) and the meta-tests; ``select_implementations()`` resolves ``--impl`` / ``--kind`` and
``$REFIMPL_IMPLS``. The command line itself is ``properties/__main__.py``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import time

from hypothesis import HealthCheck, settings

from . import profiles, registry
from .core import (RECORDS, RunRecord, Unsupported, check_adapter, closest, find_counterexample,
                   load_user_implementations, run_property)
from .examples import all_examples
from .report import xfail_entries

#: examples per property by default: the dev profile's count (25), derandomised (no database)
#: so that a run's verdict is the same on every machine
DEFAULT_EXAMPLES = settings.get_profile("dev").max_examples

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
    print("Worked examples from the notes, docs/notes.md (source | notes' figure | spec computes | check)")
    print("=" * 100)
    failures = 0
    for ex in all_examples():
        got = ex.compute()
        ok = _close(got, ex.expected, ex.rel_tol)
        failures += not ok
        tag = "ok" if ok else "FAIL"
        if ex.erratum is not None:  # the check is against the right value, not the notes'
            tag += f", the notes differ: docs/errata.md#e{ex.erratum}"
        print(f"[{tag}] {ex.name}  ({ex.source})")
        print(f"       notes: {ex.seed_figure}")
        print(f"       spec:  {_fmt(got)}   (tolerance {ex.rel_tol:g})")
        if ex.beside is not None:
            print(f"       exact: {ex.beside()}")
        if ex.note:
            print(f"       note:  {ex.note}")
    return failures


class UsageError(Exception):
    """A bad option value or name: exit status 2, one line ``<option>: expected ..., got ...``."""


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """n/N pairs, examples of the running pair, elapsed and ETA.

    On a terminal, one status line rewritten in place while a pair runs (at most 10 times a
    second); otherwise a plain line every ``heartbeat`` seconds of a long pair. Each finished
    pair's line ends with ``[n/N, elapsed, ETA]``. The ETA is the mean time per finished pair
    times the pairs left.
    """

    def __init__(self, total: int, examples: int, stream=None, heartbeat: float = 20.0):
        self.total, self.examples, self.done = total, examples, 0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.heartbeat = heartbeat
        self.t0 = time.perf_counter()
        self._last = self._pair_t0 = self.t0
        self._width = 0

    def _eta(self) -> str:
        if not self.done:
            return "?"
        return _clock((time.perf_counter() - self.t0) / self.done * (self.total - self.done))

    def start(self) -> None:
        self._last = self._pair_t0 = time.perf_counter()

    def example(self, prop, impl, rec) -> None:
        now = time.perf_counter()
        if self.tty and now - self._last >= 0.1:
            self._last = now
            self._write(f"[{self.done + 1}/{self.total}] {prop.name} | {impl.name}: example {rec.examples}/"
                        f"{self.examples}  elapsed {_clock(now - self.t0)}  ETA {self._eta()}")
        elif not self.tty and now - self._last >= self.heartbeat:
            self._last = now
            print(f"    ... {impl.name}: example {rec.examples}/{self.examples}, "
                  f"{_clock(now - self._pair_t0)} on this pair [{self.done + 1}/{self.total}, "
                  f"elapsed {_clock(now - self.t0)}, ETA {self._eta()}]", file=self.stream, flush=True)

    def finished(self) -> str:
        """Count a finished pair; returns the ``[n/N, elapsed, ETA]`` suffix of its line."""
        self.done += 1
        self.clear()
        return f"[{self.done}/{self.total}, elapsed {_clock(time.perf_counter() - self.t0)}, ETA {self._eta()}]"

    def _write(self, text: str) -> None:
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            cols = 100
        text = text[: cols - 1]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def kernel_adapters() -> list:
    """Adapters for the gpu/ kernels whose runtime is present (OpenCL on the CPU via PoCL here)."""
    try:
        from gpu import adapters
        from gpu.backends import get_backend

        get_backend("opencl").runtime()
    except Exception as e:  # no extra installed, or no OpenCL driver
        print(f"(gpu kernels not included: {type(e).__name__}: {str(e).splitlines()[0][:160]})")
        return []
    return _gpu_kernel_list(adapters)


def _gpu_kernel_list(adapters) -> list:
    from gpu import mixers_adapters  # the linear-time mixer kernels

    return adapters.opencl_attention() + adapters.opencl_routing() + mixers_adapters.opencl_mixers()


def select_implementations(impl_names=(), kinds=(), kernels=True) -> list:
    """Bundled (+ gpu kernels) + $REFIMPL_IMPLS adapters, narrowed by --impl and --kind."""
    known = registry.all_kinds()
    bad_kinds = sorted(set(kinds) - set(known))
    if bad_kinds:
        near = sorted({n for k in bad_kinds for n in closest(k, known)})
        raise UsageError(f"--kind: expected one of {', '.join(sorted(known))}, got unknown kind(s) {bad_kinds}"
                         + (f"; did you mean {near}?" if near else ""))
    impls = registry.all_bundled() + (kernel_adapters() if kernels else []) + load_user_implementations()
    if impl_names:
        pool = impls + list(registry.all_wrong().values())
        impls = [i for i in pool if i.name in impl_names]
        missing = sorted(set(impl_names) - {i.name for i in impls})
        if missing:
            names = [i.name for i in pool]
            hints = "; ".join(f"{m!r}: did you mean {closest(m, names, 3)}?" if closest(m, names) else f"{m!r}"
                              for m in missing)
            raise UsageError(f"--impl: expected the name of an implementation (python -m properties --list shows "
                             f"them; adapters of your own: set REFIMPL_IMPLS), got {hints}")
    if kinds:
        impls = [i for i in impls if i.kind in kinds]
    for impl in impls:
        check_adapter(impl, impl.name)
    return impls


def _run_pair(prop, impl, xfail, settings_kw, seed, progress=None) -> tuple:
    """Run one (property, implementation) pair; returns (record, report lines, failed, unsupported reason)."""
    line, failed, unsupported = [], False, None
    try:
        rec = run_property(prop, impl, seed=seed, progress=progress, **settings_kw)
        if xfail:
            rec.status, rec.reason = "xpass", xfail
            failed = True
            line.append(f"{impl.name}: XPASS (listed in the xfail file: {xfail})")
        else:
            line.append(f"{impl.name}: pass ({rec.examples} examples, {rec.seconds:.1f}s{_adapter_share(rec)}"
                        f"{_headroom(rec)})")
    except Unsupported as e:
        rec = RECORDS[(prop.name, impl.name)]
        unsupported = str(e)
    except Exception as e:  # report and continue
        rec = RECORDS.get((prop.name, impl.name)) or RunRecord(prop.name, prop.kind, impl.name, "fail")
        msg = str(e).split("\n\nReproduce with:")[0].splitlines()[0][:300]
        if xfail:
            rec.status, rec.reason = "xfail", xfail
            line.append(f"{impl.name}: xfail ({xfail}; fails: {msg})")
        else:
            rec.status = "fail"
            failed = True
            line.append(f"{impl.name}: FAIL: {msg}")
            if rec.snippet:
                line.append("Reproduce with:\n" + "\n".join("      " + s for s in rec.snippet.splitlines()))
    return rec, line, failed, unsupported


def _report_pair(rec, line, why, progress, records, unsupported) -> None:
    """Print one finished pair's lines (the first ending with the progress suffix); keep its record
    and any unsupported reason for the property's summary line. Shared by the serial and pooled runs."""
    if why is not None:
        unsupported.append(why)
    records.append(rec)
    suffix = progress.finished()
    if line:
        line[0] += "  " + suffix
    for entry in line:
        print(f"    {entry}", flush=True)


def _adapter_share(rec) -> str:
    return f", adapter {rec.adapter_seconds:.1f}s" if rec.adapter_seconds >= 0.05 else ""


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


def _header(n, seed, settings_kw, count) -> None:
    print()
    print("=" * 100)
    print(f"Conformance properties ({n} Hypothesis examples each, "
          + (f"seed {seed}" if seed is not None else "derandomised" if settings_kw.get("derandomize")
             or settings.default.derandomize else "random seed") + f"): {count} (property, implementation) pairs")
    print("=" * 100)


# ----------------------------------------------------------------------------------------------
# worker processes (--jobs). A task names its work by indices into lists every worker rebuilds the
# same way (the registry's properties and modules, the selected implementations), so tasks pickle
# and a worker can be spawned fresh. Workers are forked (fast: they inherit the loaded registry)
# only while the parent has no runtime with threads of its own: torch's OpenMP pool, an OpenCL,
# CuPy or Numba CUDA runtime. A forked child has none of those threads but their state says it has,
# and its first use hangs (checked with torch 2.13.0: a parent matmul, then a matmul in a forked
# worker, never returns). Otherwise the workers are spawned.

_THREADED_RUNTIMES = ("torch", "pyopencl", "cupy", "numba.cuda", "jax", "tensorflow", "triton")
_WORKER: dict = {}


def _start_method() -> str | None:
    """"fork" when safe, else "spawn"; None when neither is (a spawned worker re-runs the program's
    main file, and this one has none on disk: python reading stdin)."""
    if not any(m in sys.modules for m in _THREADED_RUNTIMES):
        return "fork"
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return "spawn" if main_file is None or os.path.exists(main_file) else None


def _unprobed_kernel_adapters() -> list:
    """The gpu/ kernel adapters without starting their runtime (a worker probes it)."""
    try:
        from gpu import adapters
    except Exception:
        return []
    return _gpu_kernel_list(adapters)


def _worker_setup(spec: dict) -> None:
    """Rebuild (or, forked, find cached) what the tasks index: the profile, properties, implementations."""
    if spec["profile"]:
        profiles.load(spec["profile"])
    with contextlib.redirect_stdout(io.StringIO()):
        impls = select_implementations(spec["impl_names"], spec["kinds"], kernels=False)
        impls += _unprobed_kernel_adapters() if spec["kernels"] else []
    names = [i.name for i in impls]
    if names != spec["impls"]:
        raise RuntimeError(f"a worker selected other implementations than the runner: {names} != {spec['impls']}")
    _WORKER.update(impls=impls, props=registry.all_properties(), modules=registry.modules(), spec=spec)
    _share_cores(spec["jobs"])
    gc.freeze()  # what is loaded by now lives as long as the worker: the collector stops re-scanning it


def _share_cores(jobs: int) -> None:
    """A worker's BLAS threads (and with them refimpl's, ``refimpl._parallel``): the cores over the
    ``jobs`` workers. Otherwise each worker starts a BLAS thread per core, and on the suite's small
    products those threads spin waiting for work: measured with OpenBLAS 0.3.31 on 2 busy cores, the
    float32 attention bounds of a 64-tile case took 19x the CPU with 2 threads as with 1."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threadpool_limits(max(1, cores // max(1, jobs)), user_api="blas")


def _task(task: tuple):
    what, *args = task
    if what == "probe":
        try:
            from gpu.backends import get_backend

            get_backend("opencl").runtime()
            return None
        except Exception as e:  # no extra installed, or no OpenCL driver
            return f"(gpu kernels not included: {type(e).__name__}: {str(e).splitlines()[0][:160]})"
    if what == "examples":
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            bad = worked_examples()
        return buf.getvalue(), bad
    spec = _WORKER["spec"]
    if what == "pairs":  # one implementation's pairs, in report order
        return [_run_pair(_WORKER["props"][p], _WORKER["impls"][i], xfail, spec["settings_kw"], spec["seed"])
                for p, i, xfail in args[0]]
    if what == "meta":
        m, j, bug = args
        mod = _WORKER["modules"][m]
        return find_counterexample(mod.PROPERTIES[j], mod.WRONG[bug], max_examples=300) is not None
    raise AssertionError(what)


def _conformance_parallel(impls, gpu_kernels, n, jobs, with_examples, with_meta, run) -> tuple:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as Pending
    import multiprocessing

    props, xfails, settings_kw, seed = run["props"], run["xfails"], run["settings_kw"], run["seed"]
    all_props, mods = registry.all_properties(), registry.modules()
    for impl in gpu_kernels:
        check_adapter(impl, impl.name)
    everyone = impls + gpu_kernels
    kernel_names = {i.name for i in gpu_kernels}
    pairs = [(prop, impl) for prop in props for impl in everyone if impl.kind == prop.kind]
    metas = [(prop, bug, (m, j)) for m, mod in enumerate(mods) for j, prop in enumerate(mod.PROPERTIES)
             if (not run["only"] or run["only"] in prop.name) and (not run["kinds"] or prop.kind in run["kinds"])
             for bug in prop.rejects] if with_meta else []
    prop_index = {id(p): k for k, p in enumerate(all_props)}
    impl_index = {id(i): k for k, i in enumerate(everyone)}
    groups = _pair_groups(pairs, kernel_names, jobs)
    tasks = ([("probe",)] if gpu_kernels else []) + ([("examples",)] if with_examples else []) \
        + [("pairs", [(prop_index[id(pairs[k][0])], impl_index[id(pairs[k][1])],
                       xfails.get((pairs[k][0].name, pairs[k][1].name))) for k in group]) for group in groups] \
        + [("meta", m, j, bug) for _, bug, (m, j) in metas]
    first_pair = len(tasks) - len(groups) - len(metas)
    where = {k: (first_pair + g, n) for g, group in enumerate(groups) for n, k in enumerate(group)}
    spec = dict(profile=run["profile"], impl_names=run["impl_names"], kinds=run["kinds"], kernels=bool(gpu_kernels),
                impls=[i.name for i in everyone], settings_kw=settings_kw, seed=seed, jobs=jobs)
    ctx = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_setup, initargs=(spec,)) as pool:
        futures = [pool.submit(_task, t) for t in tasks]  # run in this order, jobs at a time

        def wait_for(index, progress=None):
            while True:
                try:
                    return futures[index].result(timeout=progress.heartbeat if progress else None)
                except Pending:
                    progress.beat(sum(len(group) for g, group in enumerate(groups) if futures[first_pair + g].done()))

        bad = 0
        skip_kernels = False
        if gpu_kernels:
            message = wait_for(0)
            if message:
                print(message)
                skip_kernels = True
        if with_examples:
            text, bad = wait_for(first_pair - 1)
            print(text, end="")
        shown = [k for k, (_, i) in enumerate(pairs) if not (skip_kernels and i.name in kernel_names)]
        _header(n, seed, settings_kw, len(shown))
        progress = _PoolProgress(len(shown), n)
        failures, records = 0, []
        for prop in props:
            mine = [k for k in shown if pairs[k][0] is prop]
            if not mine:
                continue
            print(f"- {prop.name} [{prop.kind}]: {prop.doc}", flush=True)
            unsupported = []
            for k in mine:
                task, n = where[k]
                rec, line, failed, why = wait_for(task, progress)[n]
                RECORDS[(rec.property, rec.implementation)] = rec
                failures += failed
                _report_pair(rec, line, why, progress, records, unsupported)
            if unsupported:
                print("    unsupported (not run, not counted): " + "; ".join(unsupported), flush=True)
        print()
        print(table(records))
        print(not_drawn_lines(records))
        meta_bad = 0
        if with_meta:
            _meta_header()
            base = first_pair + len(groups)
            for prop in dict.fromkeys(p for p, _, _ in metas):
                outcome = [f"{bug}: {'rejected' if wait_for(base + k) else 'NOT REJECTED'}"
                           for k, (p, bug, _) in enumerate(metas) if p is prop]
                meta_bad += sum(o.endswith("NOT REJECTED") for o in outcome)
                print(f"- {prop.name}: " + "; ".join(outcome), flush=True)
    return failures + bad, records, False, meta_bad


def _pair_groups(pairs, kernel_names=frozenset(), jobs: int = 2) -> list:
    """The pairs' indices grouped by implementation (one task each; the gpu/ kernels, which share one
    OpenCL context, in one), the groups with the most pairs first. An implementation's first pair in
    a process pays for what it loads once (torch, ml_dtypes, an OpenCL context and its kernels'
    builds: 0.3-1.8 s of CPU each, measured): one worker pays it, not every worker. Longest first
    keeps the workers' last tasks short (then the meta-tests, each well under a second), so they
    finish together. A group of more than 1 / (2 jobs) of the pairs is cut into pieces that size, so
    that a run of a few implementations (one user adapter) still spreads over the workers."""
    by_impl: dict = {}
    for k, (_, impl) in enumerate(pairs):
        by_impl.setdefault("gpu kernels" if impl.name in kernel_names else id(impl), []).append(k)
    most = max(1, -(-len(pairs) // (2 * jobs)))
    pieces = [group[i:i + most] for group in by_impl.values() for i in range(0, len(group), most)]
    return sorted(pieces, key=len, reverse=True)

class _PoolProgress:
    """The serial run's ``[n/N, elapsed, ETA]`` suffix for a pooled run, and a plain heartbeat
    line every ``heartbeat`` seconds while the next pair in report order is still running."""

    def __init__(self, total: int, examples: int, heartbeat: float = 20.0):
        self.total, self.examples, self.heartbeat = total, examples, heartbeat
        self.done = self.done_elsewhere = 0
        self.t0 = time.perf_counter()

    def _eta(self) -> str:
        finished = max(self.done, self.done_elsewhere)
        if not finished:
            return "?"
        return _clock((time.perf_counter() - self.t0) / finished * (self.total - finished))

    def beat(self, finished: int) -> None:
        self.done_elsewhere = finished
        print(f"    ... {self.done_elsewhere}/{self.total} pairs finished [elapsed "
              f"{_clock(time.perf_counter() - self.t0)}, ETA {self._eta()}]", flush=True)

    def finished(self) -> str:
        self.done += 1
        return f"[{self.done}/{self.total}, elapsed {_clock(time.perf_counter() - self.t0)}, ETA {self._eta()}]"


def _headroom(rec) -> str:
    w = rec.worst
    if not w or not w["bound"] > 0:
        return ""
    return ", exact" if w["error"] == 0 else f", worst {w['ratio']:.2g} of its bound"


STATUSES = ("pass", "fail", "xfail", "xpass", "unsupported")
TIMES = ("seconds", "adapter s")


def table(records) -> str:
    """pass / fail / xfail / xpass / unsupported per (kind, implementation), the seconds the pairs took
    and how many of them were spent inside the adapter (the rest is the suite's: strategies, the
    refimpl oracle, bounds), and the totals, wall and CPU (``time.process_time``: the process's
    threads, so an adapter's BLAS threads count)."""
    rows: dict = {}
    cpu = {"all": 0.0, "adapter": 0.0}
    for r in records:
        counts = rows.setdefault((r.kind, r.implementation), dict.fromkeys(STATUSES + TIMES, 0))
        counts[r.status] = counts.get(r.status, 0) + 1
        counts["seconds"] += r.seconds or 0.0
        counts["adapter s"] += r.adapter_seconds or 0.0
        cpu["all"] += r.cpu_seconds or 0.0
        cpu["adapter"] += r.adapter_cpu_seconds or 0.0
    if not rows:
        return "(no property ran)"
    w_kind = max(4, *(len(k) for k, _ in rows))
    w_impl = min(60, max(14, *(len(i) for _, i in rows)))
    cols = STATUSES + TIMES

    def cells(c):
        return "  ".join(f"{c[s]:>{max(4, len(s))}}" if s in STATUSES else f"{c[s]:>{len(s)}.1f}" for s in cols)

    head = f"{'kind':<{w_kind}}  {'implementation':<{w_impl}}  " + "  ".join(f"{s:>{max(4, len(s))}}" for s in cols)
    out = [head, "-" * len(head)]
    total = dict.fromkeys(cols, 0)
    for (kind, impl), c in sorted(rows.items()):
        out.append(f"{kind:<{w_kind}}  {impl[:w_impl]:<{w_impl}}  " + cells(c))
        for s in cols:
            total[s] += c[s]
    out.append("-" * len(head))
    out.append(f"{'all':<{w_kind}}  {f'{len(rows)} implementations':<{w_impl}}  " + cells(total))
    suite = total["seconds"] - total["adapter s"]
    out.append(f"time: {total['seconds']:.1f}s over the pairs, {total['adapter s']:.1f}s inside the adapters' "
               f"methods, {suite:.1f}s in the suite (drawing cases, the refimpl oracle, bounds); "
               f"CPU {cpu['all']:.1f}s: {cpu['adapter']:.1f}s in the adapters, {cpu['all'] - cpu['adapter']:.1f}s in the "
               f"suite (steadier than wall time on a loaded machine)")
    return "\n".join(out)


def not_drawn_lines(records) -> str:
    """Per implementation with passes, the cases of its kind it does not declare (never drawn,
    so not covered by its passes): ``properties.core.not_drawn``."""
    seen: dict = {}
    for r in records:
        if r.status in ("pass", "xpass") and r.not_drawn:
            seen.setdefault(r.implementation, r.not_drawn)
    if not seen:
        return ""
    out = ["", "Not drawn (undeclared or declined; its passes cover the declared cases only):"]
    for impl, items in sorted(seen.items()):
        out.append(f"  {impl}: " + ", ".join(i.replace(" (capability not declared)", "").replace(" (declined)", " [declined]")
                                            for i in items))
    return "\n".join(out)


def _meta_header() -> None:
    print()
    print("=" * 100)
    print("Meta-tests: each property must reject the wrong implementations it names")
    print("=" * 100)


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
