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
import re
import sys
import textwrap
import time

from hypothesis import settings

from . import profiles, registry
from .core import ProtocolError, load_user_implementations
from .report import XfailError, write_headroom, write_json
from .runner import (  # noqa: F401  (re-exported: the runner's pieces were defined here before)
    DEFAULT_EXAMPLES, STATUSES, TIMES, Progress, UsageError, _start_method, conformance, kernel_adapters, meta,
    not_drawn_lines, select_implementations, table, worked_examples)

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


#: argparse's own messages, in the one wording ``<option>: expected ..., got ...`` (README "Contract")
_ARGPARSE_WORDING = [
    (r"argument (?P<name>[^:]+): invalid choice: (?P<got>.*?) \(choose from (?P<what>.*)\)",
     "{name}: expected one of {what}, got {got}"),
    (r"argument (?P<name>[^:]+): expected one argument", "{name}: expected one value, got none"),
    (r"argument (?P<name>[^:]+): (?P<rest>expected .*, got .*)", "{name}: {rest}"),
    (r"argument (?P<name>[^:]+): ignored explicit argument (?P<got>.*)", "{name}: expected no value, got {got}"),
    (r"unrecognized arguments: (?P<got>.*)",
     "arguments: expected the options that python -m properties --help lists, got {got}"),
    (r"ambiguous option: (?P<name>\S+) could match (?P<what>.*)",
     "{name}: expected one option, got an abbreviation of {what}"),
    (r"argument (?P<name>[^:]+): (?P<rest>.*)", "{name}: expected a valid value (see --help), got: {rest}"),
]


def usage_wording(message: str) -> str:
    """An argparse error message in the one wording (unchanged if it already has it)."""
    for pattern, template in _ARGPARSE_WORDING:
        m = re.fullmatch(pattern, message)
        if m:
            return template.format(**m.groupdict())
    return message if re.match(r"^[^:]+: expected .*got", message) else \
        f"arguments: expected a command line that python -m properties --help describes, got: {message}"


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in the one wording; exit status 2 as argparse's."""

    def error(self, message):
        super().error(usage_wording(message))


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


def _default_jobs() -> int:
    """$REFIMPL_JOBS, else the CPU count (the CPUs this process may use) up to 4."""
    env = os.environ.get("REFIMPL_JOBS")
    if env:
        try:
            return _positive("REFIMPL_JOBS")(env)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"REFIMPL_JOBS: {e}") from None
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
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
    how.add_argument("-j", "--jobs", type=_positive("jobs"), default=None, metavar="N",
                     help="worker processes for the pairs, worked examples and meta-tests (default: "
                          "$REFIMPL_JOBS, else the CPU count up to 4); the report is the same for any N")
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
            print(f"python -m properties: error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.profile:
        profiles.load(args.profile)
    examples = args.examples if (args.examples is not None or args.profile) else DEFAULT_EXAMPLES
    filtered = bool(args.impl or args.kind)
    t0 = time.perf_counter()
    try:
        select_implementations(tuple(args.impl), tuple(args.kind), kernels=False)  # usage errors before any work
        jobs = args.jobs or _default_jobs()
        failures, records, stopped, meta_bad = conformance(
            examples, args.only, kernels=not args.no_kernels and not filtered, impl_names=tuple(args.impl),
            kinds=tuple(args.kind), use_profile=bool(args.profile), seed=args.seed, maxfail=args.maxfail,
            jobs=jobs, with_examples=not filtered,
            with_meta=not args.no_meta and (args.meta or not filtered))
    except (ProtocolError, XfailError, UsageError) as e:
        print(f"python -m properties: error: {e}", file=sys.stderr)
        return 2
    bad = failures + meta_bad
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
