"""``python -m properties.peers``: the main runner, pointed at every available peer.

    python -m properties.peers [--factories FACTORY,...] [python -m properties options]

A convenience only: it sets ``REFIMPL_IMPLS`` to ``properties.peers:<factory>``
for each available factory (all of them but the Triton ones, or those named by
``--factories``: the Triton kernels, interpreted on a CPU, run only when named), adds
``--impl NAME`` for each of their adapters, and calls ``python -m properties``
(``properties.__main__.main``) with the remaining options (``--profile ci``,
``--examples N``, ``--json PATH``, ``--kind``, ``--only``...). Same runner, same
xfail files (``properties/xfail.json`` + ``properties/peers/xfail.json``), same
report; then it prints one line per adapter: pass / xfail / unsupported / fail
counts, and the factories that are unavailable here with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import FACTORIES, TRITON, Unavailable


def available(only=()) -> tuple:
    """([(factory, adapter)] of the available peers, {factory: reason} of the others)."""
    import properties.peers as pkg

    got, missing = [], {}
    for name in FACTORIES:
        if (only and name not in only) or (not only and name in TRITON):
            continue
        try:
            out = getattr(pkg, name)()
        except Unavailable as e:
            missing[name] = str(e)
            continue
        got += [(name, i) for i in (out if isinstance(out, (list, tuple)) else [out])]
    return got, missing


def counts(records) -> dict:
    """implementation -> {status: count} from ``properties.core.RECORDS`` values."""
    out: dict = {}
    for r in records:
        c = out.setdefault(r.implementation, dict.fromkeys(("pass", "xfail", "unsupported", "fail", "xpass"), 0))
        c[r.status] = c.get(r.status, 0) + 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m properties.peers", description=__doc__.splitlines()[0], add_help=True)
    ap.add_argument("--factories", default="", help="comma-separated peer factories (default: every available one)")
    args, rest = ap.parse_known_args(argv)
    only = set(filter(None, args.factories.split(",")))
    unknown = sorted(only - set(FACTORIES))
    if unknown:
        ap.error(f"unknown factories {unknown}; known: {sorted(FACTORIES)}")
    found, missing = available(only)
    for name, reason in missing.items():
        print(f"{name}: {reason}")
    if not only:
        print(f"{', '.join(TRITON)}: Triton kernels (interpreted without a GPU: slow), run with --factories {','.join(TRITON)}")
    if not found:
        print("no peer adapter is available here (pip install -e '.[peers]')")
        return 0
    os.environ["REFIMPL_IMPLS"] = ",".join(sorted({f"properties.peers:{f}" for f, _ in found}))
    from .. import __main__ as runner
    from ..core import RECORDS

    rc = runner.main([a for _, i in found for a in ("--impl", i.name)] + rest)
    print(f"\n{'adapter':48s} {'pass':>4s} {'xfail':>5s} {'unsup':>5s} {'fail':>4s}  library / preset")
    table = counts(RECORDS.values())
    for factory, impl in found:
        c = table.get(impl.name, {})
        print(f"{impl.name:48s} {c.get('pass', 0):4d} {c.get('xfail', 0):5d} {c.get('unsupported', 0):5d} "
              f"{c.get('fail', 0) + c.get('xpass', 0):4d}  {getattr(impl, 'library', '')} / {getattr(impl, 'preset', '')}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
