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
  and for a failure the shrunk case and its snippet.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import pickle

import numpy as np

XFAIL_FILE = pathlib.Path(__file__).with_name("xfail.json")
PEERS_XFAIL_FILE = pathlib.Path(__file__).with_name("peers") / "xfail.json"  # the shipped adapters' deviations
MAX_LITERAL = 4096  # arrays with more elements are pickled into the snippet


class XfailError(ValueError):
    """The xfail file names an unknown property or implementation, or is malformed."""


# ----------------------------------------------------------------------------
# snippets


class _Source:
    def __init__(self):
        self.imports = {"import numpy as np"}

    def __call__(self, x) -> str:
        if hasattr(x, "python") and callable(x.python):
            src = x.python()
            if src is not None:
                self.imports.add(f"import {src.split('(')[0].rsplit('.', 1)[0]}")
                return src
        if isinstance(x, np.ndarray):
            if x.size > MAX_LITERAL or x.dtype == object:
                raise ValueError("array too large for a literal")
            return f"np.array({self(x.tolist())}, dtype=np.{x.dtype.name}).reshape({x.shape})"
        if isinstance(x, (bool, type(None), str, int, np.integer, np.bool_)):
            return repr(x.item() if isinstance(x, np.generic) else x)
        if isinstance(x, (float, np.floating)):
            x = float(x)
            return repr(x) if np.isfinite(x) else f"float({repr(x)!r})"
        if isinstance(x, (list, tuple)):
            body = ", ".join(self(e) for e in x)
            return f"[{body}]" if isinstance(x, list) else f"({body}{',' if len(x) == 1 else ''})"
        if isinstance(x, dict):
            return "{" + ", ".join(f"{self(k)}: {self(v)}" for k, v in x.items()) + "}"
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            cls = type(x)
            self.imports.add(f"import {cls.__module__}")
            args = ", ".join(f"{f.name}={self(getattr(x, f.name))}" for f in dataclasses.fields(x) if f.init)
            return f"{cls.__module__}.{cls.__qualname__}({args})"
        raise ValueError(f"no literal for {type(x).__name__}")


def case_source(case) -> tuple[list, str]:
    """(import lines, an expression rebuilding ``case``)."""
    src = _Source()
    try:
        expr = src(case)
        return sorted(src.imports), expr
    except Exception:
        blob = base64.b64encode(pickle.dumps(case)).decode()
        return ["import base64", "import pickle"], f'pickle.loads(base64.b64decode("{blob}"))'


def snippet(prop, impl, case) -> str:
    """Python source reproducing ``prop`` failing for ``impl`` on ``case``."""
    imports, expr = case_source(case)
    check = prop.check
    lines = [
        f"# property {prop.name!r} (kind {prop.kind!r}) failed for {impl.name!r}",
        *(["import os", f"os.environ.setdefault('REFIMPL_IMPLS', {os.environ['REFIMPL_IMPLS']!r})"]
          if os.environ.get("REFIMPL_IMPLS") else []),
        *imports,
        "import refimpl",
        "from properties.core import find_adapter",
        f"from {check.__module__} import {check.__name__}",
        "",
        f"impl = find_adapter({impl.name!r})",
        f"case = {expr}",
    ]
    side = getattr(case, "side_by_side", None)
    if callable(side):
        lines += ["# the adapter and refimpl side by side", *side()]
    lines += [f"{check.__name__}(impl, case)  # raises the AssertionError"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# xfail file


def _xfail_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("REFIMPL_XFAIL") or XFAIL_FILE)


def _read_entries(path: pathlib.Path) -> list:
    try:
        data = json.loads(path.read_text())
        entries = data["entries"]
    except (ValueError, KeyError, TypeError) as e:
        raise XfailError(f"{path}: expected {{\"entries\": [...]}}: {e}") from e
    if not isinstance(entries, list):
        raise XfailError(f"{path}: \"entries\" must be a list")
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
                raise XfailError(f"{path}: entry {n} needs property, implementation and a non-empty reason: {e!r}")
            if e["property"] not in props:
                raise XfailError(f"{path}: entry {n} names unknown property {e['property']!r}")
            name = e["implementation"]
            if peers_file:
                _check_peer_entry(path, n, e)
                if name not in known_impls and e["adapter"] not in loaded:
                    continue  # that peer is not part of this run (or its library is absent)
            if name not in known_impls:
                found = {i.name for i in load_adapter(e["adapter"], f"{path} entry {n}")} if e.get("adapter") else set()
                if name not in found:
                    raise XfailError(f"{path}: entry {n} names unknown implementation {name!r} "
                                     f"(give \"adapter\": \"module:object\" for one that is not bundled)")
            out[(e["property"], name)] = e["reason"]
    return out


def _check_peer_entry(path, n, e) -> None:
    from .peers import FACTORIES

    mod, _, factory = str(e.get("adapter", "")).partition(":")
    if mod != "properties.peers" or factory not in FACTORIES:
        raise XfailError(f"{path}: entry {n} needs \"adapter\": \"properties.peers:<factory>\" with a factory of "
                         f"{sorted(FACTORIES)}, got {e.get('adapter')!r}")


# ----------------------------------------------------------------------------
# JSON


def summary(records) -> dict:
    out: dict = {}
    for r in records:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def write_json(path, records, **meta) -> None:
    """Write ``records`` (RunRecord or dicts) with a summary to ``path``."""
    rows = [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in records]
    doc = {**meta, "summary": summary(rows), "results": rows}
    pathlib.Path(path).write_text(json.dumps(doc, indent=1, default=str))
