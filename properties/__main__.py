"""The project's main job: python -m properties

1. Prints every worked example from the notes (docs/notes.md) beside the figure the
   notes give (and the exact figure where the notes estimate).
2. Runs every conformance property against every bundled implementation (and
   any named in $REFIMPL_IMPLS), with progress, a per-property summary and a
   final table per kind and implementation.
3. Runs the meta-tests: each property must reject the wrong implementations it names.

Exit status 0 when everything passes, 1 when something fails, 2 for a usage error
(a bad option value, an unknown --impl or --kind, an adapter that does not load).
With --impl or --kind the worked examples are not printed, and the meta-tests
run only with --meta.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time

from hypothesis import HealthCheck, settings

from . import profiles, registry
from .core import (RECORDS, ProtocolError, RunRecord, Unsupported, check_adapter, closest, find_counterexample,
                   load_user_implementations, run_property)
from .examples import all_examples
from .report import XfailError, write_headroom, write_json, xfail_entries

#: examples per property by default: the dev profile's count (25), derandomised (no database)
#: so that a run's verdict is the same on every machine
DEFAULT_EXAMPLES = settings.get_profile("dev").max_examples

_REPORT_SETTINGS = dict(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

EPILOG = f"""\
examples:
  python -m properties                                   everything (worked examples, properties, meta-tests)
  python -m properties --list                            kinds and implementations
  python -m properties --kind attention --profile ci     one kind, the CI profile (100 derandomised examples)
  REFIMPL_IMPLS=my_pkg.adapters:my_attention python -m properties --impl my_kernel --json report.json
  REFIMPL_IMPLS=properties.demo:wrong_attention python -m properties --impl demo.wrong_attention -x

REFIMPL_IMPLS: a comma-separated list of module:object, e.g.
  REFIMPL_IMPLS=my_pkg.adapters:my_attention,my_pkg.adapters:make_all
  Each object is an adapter, a list of adapters, or a zero-argument callable returning
  either; every adapter is validated against its kind's protocol when loaded.
  The same adapters under pytest, from any repository:
  pytest --refimpl-impl my_pkg.adapters:my_attention [--refimpl-kind attention]

Default: {DEFAULT_EXAMPLES} Hypothesis examples a property (the dev profile's count), derandomised.
Protocol of every kind, reports, xfail file: docs/conformance.md.
"""


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
    """A bad option value or name: exit status 2, one line."""


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
    return adapters.opencl_attention() + adapters.opencl_routing()


def select_implementations(impl_names=(), kinds=(), kernels=True) -> list:
    """Bundled (+ gpu kernels) + $REFIMPL_IMPLS adapters, narrowed by --impl and --kind."""
    known = registry.all_kinds()
    bad_kinds = sorted(set(kinds) - set(known))
    if bad_kinds:
        near = sorted({n for k in bad_kinds for n in closest(k, known)})
        raise UsageError(f"--kind: unknown kind(s) {bad_kinds}" + (f"; did you mean {near}?" if near else "")
                         + f" Valid kinds: {', '.join(sorted(known))}")
    impls = registry.all_bundled() + (kernel_adapters() if kernels else []) + load_user_implementations()
    if impl_names:
        pool = impls + list(registry.all_wrong().values())
        impls = [i for i in pool if i.name in impl_names]
        missing = sorted(set(impl_names) - {i.name for i in impls})
        if missing:
            names = [i.name for i in pool]
            hints = "; ".join(f"{m!r}: did you mean {closest(m, names, 3)}?" if closest(m, names) else f"{m!r}"
                              for m in missing)
            raise UsageError(f"--impl: no implementation named {hints} "
                             f"(python -m properties --list shows them; adapters of your own: set REFIMPL_IMPLS)")
    if kinds:
        impls = [i for i in impls if i.kind in kinds]
    for impl in impls:
        check_adapter(impl, impl.name)
    return impls


def conformance(examples, only, kernels, impl_names=(), kinds=(), use_profile=False, seed=None,
                maxfail=None) -> tuple:
    """Run the properties; returns (failures, records, stopped)."""
    impls = select_implementations(impl_names, kinds, kernels)
    xfails = xfail_entries({i.name for i in impls} | {i.name for i in registry.all_bundled()}
                           | {i.name for i in registry.all_wrong().values()})
    props = [p for p in registry.all_properties() if (not only or only in p.name) and (not kinds or p.kind in kinds)]
    settings_kw = {} if use_profile else dict(_REPORT_SETTINGS, max_examples=examples)
    if use_profile and examples is not None:
        settings_kw["max_examples"] = examples
    n = settings_kw.get("max_examples") or settings.default.max_examples
    pairs = [(prop, impl) for prop in props for impl in impls if impl.kind == prop.kind]
    print()
    print("=" * 100)
    print(f"Conformance properties ({n} Hypothesis examples each, "
          + (f"seed {seed}" if seed is not None else "derandomised" if settings_kw.get("derandomize")
             or settings.default.derandomize else "random seed") + f"): {len(pairs)} (property, implementation) pairs")
    print("=" * 100)
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
            xfail = xfails.get((prop.name, impl.name))
            line = []
            progress.start()
            try:
                rec = run_property(prop, impl, seed=seed, progress=lambda r, p=prop, i=impl: progress.example(p, i, r),
                                   **settings_kw)
                if xfail:
                    rec.status, rec.reason = "xpass", xfail
                    failures += 1
                    line.append(f"{impl.name}: XPASS (listed in the xfail file: {xfail})")
                else:
                    line.append(f"{impl.name}: pass ({rec.examples} examples, {rec.seconds:.1f}s{_headroom(rec)})")
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
            suffix = progress.finished()
            if line:
                line[0] += "  " + suffix
            for entry in line:
                print(f"    {entry}", flush=True)
        if unsupported:
            print("    unsupported (not run, not counted): " + "; ".join(unsupported), flush=True)
    if stopped:
        print(f"\nstopped after {failures} failure(s) (--maxfail {maxfail})")
    return failures, records, stopped


def _headroom(rec) -> str:
    w = rec.worst
    if not w or not w["bound"] > 0:
        return ""
    return ", exact" if w["error"] == 0 else f", worst {w['ratio']:.2g} of its bound"


STATUSES = ("pass", "fail", "xfail", "xpass", "unsupported")


def table(records) -> str:
    """pass / fail / xfail / xpass / unsupported per (kind, implementation), and the totals."""
    rows: dict = {}
    for r in records:
        counts = rows.setdefault((r.kind, r.implementation), dict.fromkeys(STATUSES, 0))
        counts[r.status] = counts.get(r.status, 0) + 1
    if not rows:
        return "(no property ran)"
    w_kind = max(4, *(len(k) for k, _ in rows))
    w_impl = min(60, max(14, *(len(i) for _, i in rows)))
    head = f"{'kind':<{w_kind}}  {'implementation':<{w_impl}}  " + "  ".join(f"{s:>{max(4, len(s))}}" for s in STATUSES)
    out = [head, "-" * len(head)]
    total = dict.fromkeys(STATUSES, 0)
    for (kind, impl), c in sorted(rows.items()):
        out.append(f"{kind:<{w_kind}}  {impl[:w_impl]:<{w_impl}}  "
                   + "  ".join(f"{c[s]:>{max(4, len(s))}}" for s in STATUSES))
        for s in STATUSES:
            total[s] += c[s]
    out.append("-" * len(head))
    out.append(f"{'all':<{w_kind}}  {f'{len(rows)} implementations':<{w_impl}}  "
               + "  ".join(f"{total[s]:>{max(4, len(s))}}" for s in STATUSES))
    return "\n".join(out)


def meta(only: str | None, kinds=()) -> int:
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
            print(f"- {prop.name}: " + "; ".join(results), flush=True)
    return failures


def list_all(kernels: bool) -> None:
    """Kinds (with their properties' count), bundled, user and wrong implementations, one group a kind."""
    kinds = registry.all_kinds()
    props = registry.all_properties()
    impls = registry.all_bundled() + (kernel_adapters() if kernels else [])
    user = load_user_implementations()
    wrong = registry.all_wrong()
    wrap = dict(width=100, initial_indent="      ", subsequent_indent="      ")
    print(f"{len(kinds)} kinds, {len(props)} properties; implementations: {len(impls)} bundled, "
          f"{len(user)} from REFIMPL_IMPLS,\n{len(wrong)} wrong ones (the meta-tests)\n")
    for name, kind in sorted(kinds.items()):
        n_props = sum(p.kind == name for p in props)
        doc = " ".join((getattr(kind, "doc", "") or "").split()).split(". ")[0]
        print(f"{name}  ({n_props} properties)")
        if doc:
            print("    " + textwrap.shorten(doc, 96, placeholder=" ..."))
        mine = [i.name for i in impls if i.kind == name]
        if mine:
            print("    bundled:")
            print(textwrap.fill(", ".join(mine), **wrap))
        theirs = [i.name for i in user if i.kind == name]
        if theirs:
            print("    REFIMPL_IMPLS:")
            print(textwrap.fill(", ".join(theirs), **wrap))
        bad = sorted({i.name for i in wrong.values() if i.kind == name})
        if bad:
            print(f"    wrong ({len(bad)}, for the meta-tests; --impl accepts them):")
            print(textwrap.fill(", ".join(bad), **wrap))
    print("\nRun one: python -m properties --impl NAME [--kind KIND]; your own: REFIMPL_IMPLS=module:object")


def _int_at_least(minimum: int, name: str, what: str):
    """An argparse type: an int >= ``minimum``; anything else is a usage error (exit 2)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {value}")
        return value
    parse.__name__ = name
    return parse


def _positive(name):
    return _int_at_least(1, name, "a whole number")


_seed = _int_at_least(0, "seed", "an integer")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m properties", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Worked examples, every conformance property against every bundled implementation\n"
                    "(and yours, named in REFIMPL_IMPLS), and the meta-tests.\n"
                    "Exit status 0 when all pass, 1 on a failure, 2 on a usage error.")
    sel = ap.add_argument_group("what to run")
    sel.add_argument("--impl", action="append", default=[], metavar="NAME",
                     help="only this implementation (repeatable): bundled, wrong or from REFIMPL_IMPLS (see --list)")
    sel.add_argument("--kind", action="append", default=[], metavar="KIND",
                     help="only properties and implementations of this kind (repeatable; see --list)")
    sel.add_argument("--only", default=None, metavar="SUBSTRING", help="only properties whose name contains SUBSTRING")
    sel.add_argument("--meta", action="store_true", help="run the meta-tests even with --impl/--kind")
    sel.add_argument("--no-meta", action="store_true",
                     help="skip the meta-tests (each property rejecting the wrong implementations it names)")
    sel.add_argument("--no-kernels", action="store_true",
                     help="leave out the gpu/ kernels (run through OpenCL on the CPU when PoCL is present)")
    sel.add_argument("--list", action="store_true", help="list kinds and implementations (bundled, yours, wrong) and exit")
    how = ap.add_argument_group("how")
    how.add_argument("--profile", choices=profiles.PROFILES, default=None,
                     help="Hypothesis profile, as REFIMPL_PROFILE under pytest: dev (25 random examples), "
                          f"ci (100 derandomised), thorough (2000); default {DEFAULT_EXAMPLES} derandomised examples")
    how.add_argument("--examples", type=_positive("examples"), default=None, metavar="N",
                     help="Hypothesis examples per property (overrides the profile's count)")
    how.add_argument("--seed", type=_seed, default=None, metavar="N",
                     help="draw the examples randomly from seed N (repeatable runs that differ from the default)")
    how.add_argument("-x", "--exitfirst", action="store_const", const=1, dest="maxfail",
                     help="stop at the first failing property")
    how.add_argument("--maxfail", type=_positive("maxfail"), default=None, metavar="N",
                     help="stop after N failing (property, implementation) pairs")
    out = ap.add_argument_group("reports")
    out.add_argument("--json", default=None, metavar="PATH",
                     help="write the JSON report (records, versions, seeds, headroom, sizes drawn) to PATH")
    out.add_argument("--headroom", default=None, metavar="PATH",
                     help="draw each property's worst error / bound per implementation: .svg, .html or .png")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        try:
            list_all(kernels=not args.no_kernels)
        except (ProtocolError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.profile:
        profiles.load(args.profile)
    examples = args.examples if (args.examples is not None or args.profile) else DEFAULT_EXAMPLES
    filtered = bool(args.impl or args.kind)
    t0 = time.perf_counter()
    try:
        select_implementations(tuple(args.impl), tuple(args.kind), kernels=False)  # usage errors before any work
        bad = 0 if filtered else worked_examples()
        failures, records, stopped = conformance(
            examples, args.only, kernels=not args.no_kernels and not filtered, impl_names=tuple(args.impl),
            kinds=tuple(args.kind), use_profile=bool(args.profile), seed=args.seed, maxfail=args.maxfail)
    except (ProtocolError, XfailError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad += failures
    print()
    print(table(records))
    if not args.no_meta and (args.meta or not filtered) and not stopped:
        bad += meta(args.only, tuple(args.kind))
    if args.json:
        write_json(args.json, records, runner="python -m properties", profile=args.profile or "report",
                   settings={"max_examples": examples if examples is not None else settings.default.max_examples,
                             "derandomize": args.seed is None and (not args.profile or settings.default.derandomize)},
                   hypothesis_seed=args.seed, implementations=sorted({r.implementation for r in records}))
        print(f"JSON report: {args.json}")
    if args.headroom:
        print(f"headroom picture: {write_headroom(args.headroom, records)}")
    print()
    print(f"{'ALL PASSED' if not bad else f'{bad} FAILURE(S)'} in {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
