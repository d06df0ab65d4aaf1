"""Reports a user can act on: reproduction snippets, the xfail file, JSON.

* ``snippet(prop, impl, case)``: copy-paste Python that rebuilds a failing case
  (its seed, shapes and keyword arguments where the case has a recipe, its
  literal arrays otherwise), calls the adapter and refimpl side by side and then
  the property's check, which raises the same AssertionError. Both runners
  append it to every failure.
* The xfail files (``properties/xfail.json``, or ``$REFIMPL_XFAIL``, plus the
  shipped peer adapters' ``properties/peers/xfail.json``): known,
  documented deviations as ``{"property", "implementation", "reason"}``
  entries (optionally ``"adapter": "module:object"`` naming where an adapter
  that is not bundled comes from). Such pairs are reported as xfail, apart from
  passes; an entry that passes is XPASS and fails the run (strict), and an
  entry naming an unknown property or implementation is an error (a peer
  entry whose adapter is not loaded in the run is skipped, see xfail_entries).
* ``write_json(path, records)``: one record per (property, implementation):
  status pass / fail / unsupported / xfail / xpass, examples run, the reason,
  the worst comparison against its bound (``worst``: error, bound, ratio), the
  sizes drawn (``sizes``), and for a failure the shrunk case and its snippet;
  with the environment (``environment()``: Python, refimpl's version and git
  commit, the libraries' versions) and the run's settings and seed.
* ``write_headroom(path, records)``: each property's worst error / bound per
  implementation as a self-contained SVG or HTML picture (PNG with matplotlib);
  ``python -m properties.report REPORT.json PICTURE`` draws one from a JSON report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from .snippets import MAX_LITERAL, _Source, case_source, snippet  # noqa: F401 (part of this module's API)

XFAIL_FILE = pathlib.Path(__file__).with_name("xfail.json")
PEERS_XFAIL_FILE = pathlib.Path(__file__).with_name("peers") / "xfail.json"  # the shipped adapters' deviations
class XfailError(ValueError):
    """The xfail file names an unknown property or implementation, or is malformed."""


# ----------------------------------------------------------------------------
# snippets


def _xfail_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("REFIMPL_XFAIL") or XFAIL_FILE)


def _read_entries(path: pathlib.Path) -> list:
    try:
        data = json.loads(path.read_text())
        entries = data["entries"]
    except (ValueError, KeyError, TypeError) as e:
        raise XfailError(f"{path}: expected JSON {{\"entries\": [...]}}, got {type(e).__name__}: {e}") from e
    if not isinstance(entries, list):
        raise XfailError(f"{path}: expected \"entries\" to be a list, got {type(entries).__name__}")
    return entries


def _loaded_specs() -> set:
    return {s.strip() for s in os.environ.get("REFIMPL_IMPLS", "").split(",") if s.strip()}


def xfail_entries(known_impls=None) -> dict:
    """(property, implementation) -> reason, from the xfail files, validated.

    Read: ``$REFIMPL_XFAIL`` (else ``properties/xfail.json``), then the shipped
    peers' file ``properties/peers/xfail.json`` (:data:`PEERS_XFAIL_FILE`).
    ``known_impls``: implementation names the runner knows (default: bundled,
    wrong and $REFIMPL_IMPLS adapters). Raises XfailError on an unknown
    property, a malformed entry, or an unknown implementation; except that a
    peer entry whose adapter ("properties.peers:<factory>") is not loaded in
    this run (not in $REFIMPL_IMPLS, e.g. its library is absent) is skipped
    without importing the library. Its factory must still exist.
    """
    from . import registry
    from .core import load_adapter, load_user_implementations

    props = {p.name for p in registry.all_properties()}
    if known_impls is None:
        known_impls = {i.name for i in registry.all_bundled() + list(registry.all_wrong().values())
                       + load_user_implementations()}
    known_impls = set(known_impls)
    paths = [_xfail_path()]
    if PEERS_XFAIL_FILE.resolve() != paths[0].resolve():
        paths.append(PEERS_XFAIL_FILE)
    loaded = _loaded_specs()
    out = {}
    for path in paths:
        if not path.exists():
            continue
        peers_file = path.resolve() == PEERS_XFAIL_FILE.resolve()
        for n, e in enumerate(_read_entries(path)):
            if not isinstance(e, dict) or not {"property", "implementation", "reason"} <= set(e) or not e["reason"]:
                raise XfailError(f"{path}: expected entry {n} with property, implementation and a non-empty reason, "
                                 f"got {e!r}")
            if e["property"] not in props:
                raise XfailError(f"{path}: expected entry {n} to name a property, got unknown property "
                                 f"{e['property']!r}")
            name = e["implementation"]
            if peers_file:
                _check_peer_entry(path, n, e)
                if name not in known_impls and e["adapter"] not in loaded:
                    continue  # that peer is not part of this run (or its library is absent)
            if name not in known_impls:
                found = {i.name for i in load_adapter(e["adapter"], f"{path} entry {n}")} if e.get("adapter") else set()
                if name not in found:
                    raise XfailError(f"{path}: expected entry {n} to name an implementation (give \"adapter\": "
                                     f"\"module:object\" for one that is not bundled), got unknown implementation "
                                     f"{name!r}")
            out[(e["property"], name)] = e["reason"]
    return out


def _check_peer_entry(path, n, e) -> None:
    from .peers import FACTORIES

    mod, _, factory = str(e.get("adapter", "")).partition(":")
    if mod != "properties.peers" or factory not in FACTORIES:
        raise XfailError(f"{path}: expected entry {n} with \"adapter\": \"properties.peers:<factory>\", a factory "
                         f"of {sorted(FACTORIES)}, got {e.get('adapter')!r}")


# ----------------------------------------------------------------------------
# JSON


def summary(records) -> dict:
    out: dict = {}
    for r in records:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


#: libraries whose version the report records when they are importable (peers only when loaded)
LIBRARIES = ("numpy", "scipy", "ml_dtypes", "hypothesis", "mpmath", "pytest")
PEER_LIBRARIES = ("torch", "jax", "jaxlib", "transformers", "deepspeed", "triton", "numba", "cupy", "pyopencl")


def _git_commit(root: pathlib.Path) -> str | None:
    import subprocess

    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("+modified" if dirty else "")) if out.returncode == 0 else None


def environment() -> dict:
    """Python, platform, refimpl's version (and git commit in a checkout), library versions."""
    import importlib.metadata as md
    import platform
    import sys

    import refimpl

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            mod = sys.modules.get(name)
            return getattr(mod, "__version__", None)

    root = pathlib.Path(refimpl.__file__).resolve().parents[1]
    libs = {n: version(n) for n in LIBRARIES}
    libs.update({n: version(n) for n in PEER_LIBRARIES if n in sys.modules})
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "refimpl": {"version": version("transformer-refimpl"), "path": str(root),
                    "commit": _git_commit(root)},
        "libraries": {n: v for n, v in libs.items() if v is not None},
    }


def write_json(path, records, **meta) -> None:
    """Write ``records`` (RunRecord or dicts) with a summary and ``environment()`` to ``path``."""
    rows = [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in records]
    doc = {**meta, "environment": environment(), "summary": summary(rows), "results": rows}
    pathlib.Path(path).write_text(json.dumps(doc, indent=1, default=str))


# ----------------------------------------------------------------------------
# headroom picture


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def headroom_rows(records) -> list:
    """(property, implementation, ratio, status) for each record that compared against a bound."""
    rows = []
    for r in records:
        r = r.as_dict() if hasattr(r, "as_dict") else dict(r)
        w = r.get("worst")
        if w and w.get("bound", 0) > 0 and r["status"] in ("pass", "fail", "xfail", "xpass"):
            rows.append((r["property"], r["implementation"], float(w["ratio"]), r["status"]))
    return sorted(rows, key=lambda t: (t[0], t[1]))


def headroom_svg(records, title: str = "worst error / bound, per property and implementation",
                 max_bars: int = 60) -> str:
    """A self-contained SVG of each (property, implementation)'s worst error / bound, log scale
    from 1e-6 to 10, the bound the red line at 1 (a mark beyond it failed; headroom = 1 - ratio).

    Up to ``max_bars`` pairs: one bar each, labelled "property | implementation". More: one row
    per property, one dot per implementation (its name in the dot's tooltip), and the row's
    worst implementation named at the right. Colours: pass blue, fail red, xfail grey, xpass orange.
    """
    import math

    rows = headroom_rows(records)
    bars = len(rows) <= max_bars
    props = sorted({r[0] for r in rows})
    n_rows = len(rows) if bars else len(props)
    step, left, plot, right, top = 15, 400, 420, 10 if bars else 260, 48
    width = left + plot + right
    height = top + n_rows * step + 40
    lo, hi = -6.0, 1.0
    colour = {"pass": "#3b6fb6", "fail": "#c0392b", "xfail": "#999999", "xpass": "#e67e22"}

    def x(ratio):
        v = math.log10(max(ratio, 10**lo)) if math.isfinite(ratio) else hi
        return left + (min(v, hi) - lo) / (hi - lo) * plot

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="16" font-size="13">{_escape(title)}</text>',
           f'<text x="8" y="32" fill="#555">{len(rows)} (property, implementation) pairs that compare against a '
           f'bound; log scale; the red line is the bound; entries below 1e-6 (or exact) sit at the left edge</text>']
    for e in range(int(lo), int(hi) + 1):
        xe = x(10.0**e)
        out.append(f'<line x1="{xe:.1f}" y1="{top - 4}" x2="{xe:.1f}" y2="{height - 30}" '
                   f'stroke="{"#c0392b" if e == 0 else "#ddd"}" stroke-width="{1.5 if e == 0 else 1}"/>')
        out.append(f'<text x="{xe:.1f}" y="{height - 16}" text-anchor="middle">1e{e}</text>')
    if bars:
        for n, (prop, impl, ratio, status) in enumerate(rows):
            y = top + n * step
            label = f"{prop} | {impl}"
            label = label if len(label) <= 72 else label[:69] + "..."
            out.append(f'<text x="{left - 6}" y="{y + 10}" text-anchor="end">{_escape(label)}</text>')
            out.append(f'<rect x="{left}" y="{y + 1}" width="{max(x(ratio) - left, 1):.1f}" height="{step - 4}" '
                       f'fill="{colour.get(status, "#3b6fb6")}"><title>{_escape(label)}: {ratio:.3g} of the bound '
                       f'({status})</title></rect>')
    else:
        for n, prop in enumerate(props):
            y = top + n * step + 7
            mine = [r for r in rows if r[0] == prop]
            out.append(f'<text x="{left - 6}" y="{y + 3}" text-anchor="end">{_escape(prop)}</text>')
            out.append(f'<line x1="{left}" y1="{y}" x2="{left + plot}" y2="{y}" stroke="#f0f0f0"/>')
            for _, impl, ratio, status in mine:
                out.append(f'<circle cx="{x(ratio):.1f}" cy="{y}" r="3.5" fill="{colour.get(status, "#3b6fb6")}" '
                           f'fill-opacity="0.6"><title>{_escape(impl)}: {ratio:.3g} of the bound ({status})</title></circle>')
            top_impl = max(mine, key=lambda r: r[2])
            name = top_impl[1] if len(top_impl[1]) <= 38 else top_impl[1][:35] + "..."
            worst = "exact" if top_impl[2] == 0 else f"{top_impl[2]:.2g}"
            out.append(f'<text x="{left + plot + 6}" y="{y + 3}" fill="#555">{_escape(name)} {worst}</text>')
    out.append("</svg>")
    return "\n".join(out)


def write_headroom(path, records) -> str:
    """Write the headroom picture to ``path``: .svg or .html (self-contained), .png (matplotlib)."""
    path = pathlib.Path(path)
    if path.suffix == ".png":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = headroom_rows(records)
        fig, ax = plt.subplots(figsize=(9, 0.18 * len(rows) + 1.2))
        ax.barh(range(len(rows)), [max(r[2], 1e-6) for r in rows],
                color=["#c0392b" if r[3] == "fail" else "#3b6fb6" for r in rows])
        ax.set_xscale("log")
        ax.axvline(1.0, color="#c0392b")
        ax.set_yticks(range(len(rows)), [f"{r[0]} | {r[1]}" for r in rows], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("worst error / bound (1 = the bound)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    elif path.suffix in (".html", ".htm"):
        path.write_text("<!doctype html><meta charset=\"utf-8\"><title>refimpl headroom</title>\n"
                        + headroom_svg(records) + "\n")
    else:
        path.write_text(headroom_svg(records) + "\n")
    return str(path)


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m properties.report",
                                 description="Draw the headroom picture of a JSON report (either runner's).")
    ap.add_argument("report", help="a JSON report (python -m properties --json, pytest --refimpl-json)")
    ap.add_argument("picture", help="output: .svg, .html (self-contained) or .png (needs matplotlib)")
    args = ap.parse_args(argv)
    rows = json.loads(pathlib.Path(args.report).read_text())["results"]
    print(write_headroom(args.picture, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
