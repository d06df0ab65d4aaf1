"""The runner's serial pieces, shared by ``properties.runner`` and its worker pool
(``properties.runner_pool``): ``worked_examples()`` prints the notes' figures beside the spec's;
``select_implementations()`` resolves ``--impl`` / ``--kind`` and ``$REFIMPL_IMPLS`` (the bundled
adapters, the gpu/ kernels whose runtime is present, the user's); ``_run_pair`` runs one (property,
implementation) pair and ``_report_pair`` prints its lines; ``Progress`` is the ``[n/N, elapsed,
ETA]`` line; ``table()`` and ``not_drawn_lines()`` summarise the records. Moved here from
``properties/runner.py``, which re-exports them, so that the pool can use them without importing
the runner that starts it.
"""

from __future__ import annotations

import os
import sys
import time

from hypothesis import settings

from . import registry
from .core import RECORDS, RunRecord, Unsupported, check_adapter, closest, load_user_implementations, run_property
from .examples import all_examples



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


def _header(n, seed, settings_kw, count) -> None:
    print()
    print("=" * 100)
    print(f"Conformance properties ({n} Hypothesis examples each, "
          + (f"seed {seed}" if seed is not None else "derandomised" if settings_kw.get("derandomize")
             or settings.default.derandomize else "random seed") + f"): {count} (property, implementation) pairs")
    print("=" * 100)


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
