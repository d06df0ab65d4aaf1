"""Reproduction snippets: copy-paste Python that rebuilds a failing case (``snippet``; described in
``properties.report``, which re-exports it). A leaf of the runners: ``properties.core`` appends a
snippet to every failure without importing the report module.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pickle

import numpy as np

MAX_LITERAL = 4096  # arrays with more elements are pickled into the snippet


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
                raise ValueError(f"x: expected an array of at most {MAX_LITERAL} numbers for a literal, got shape {x.shape}, "
                                 f"dtype {x.dtype.name}")
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
        raise ValueError(f"x: expected a value with a Python literal, got a {type(x).__name__}")


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
