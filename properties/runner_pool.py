"""The runner's worker processes (``python -m properties --jobs N``): ``_conformance_parallel``
runs the (property, implementation) pairs, the worked examples and the meta-tests as tasks in a
process pool and prints the report in the serial run's order, with the serial run's verdicts;
``_start_method`` picks fork or spawn, ``_worker_setup`` rebuilds what the tasks index in each
worker, ``_task`` runs one task, ``_pair_groups`` groups the pairs by implementation and
``_PoolProgress`` prints the progress suffix and heartbeat. Moved here from
``properties/runner.py`` (which starts the pool and re-exports these names); it uses the serial
pieces in ``properties.runner_pairs``, never the runner itself, so imports run one way.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import time

from . import profiles, registry
from .core import RECORDS, check_adapter, find_counterexample
from .runner_pairs import (_clock, _gpu_kernel_list, _header, _meta_header, _report_pair, _run_pair,
                           not_drawn_lines, select_implementations, table, worked_examples)


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
