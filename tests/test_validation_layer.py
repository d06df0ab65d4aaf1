"""One validation layer (issue 22): every argument error of refimpl is raised inside ``refimpl._validate``.

Read from the source with ``ast``: a ``raise`` of ValueError, TypeError or a class derived from them
(``test_wording.error_classes``) anywhere in refimpl outside the ``refimpl/_validate/`` package is a
check in the wrong layer. A module computes; its checks are calls to the validators (the generic ones,
or its family's module in the package, with ``fail`` for the one raise of a family-specific test).

``PENDING`` lists the modules not yet moved, with their count of raise sites: it only shrinks (a new
raise site fails, and so does a count that fell without the entry being updated).
"""

from __future__ import annotations

import ast
from pathlib import Path

from .test_wording import error_classes

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "refimpl" / "_validate"

PENDING: dict = {  # module: raise sites still outside the layer
    "refimpl/kv_cache.py": 13,
    "refimpl/split_kv.py": 5,
}


def _raised_name(node: ast.Raise):
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Attribute):
        return exc.attr
    if isinstance(exc, ast.Name):
        return exc.id
    return None


def raise_sites() -> dict:
    """{module path relative to the root: number of argument-error raises} outside the layer."""
    errors = error_classes()
    found = {}
    for path in sorted((ROOT / "refimpl").rglob("*.py")):
        if LAYER in path.parents:
            continue
        n = sum(1 for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Raise) and _raised_name(node) in errors)
        if n:
            found[str(path.relative_to(ROOT))] = n
    return found


def test_the_reader_sees_raise_sites():
    """The layer itself raises (so an empty result outside it means something)."""
    errors = error_classes()
    inside = sum(1 for path in LAYER.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Raise) and _raised_name(node) in errors)
    assert inside > 50


def test_argument_errors_are_raised_only_by_the_validation_layer():
    assert raise_sites() == PENDING, ("argument checks outside refimpl/_validate/: move them into the layer "
                                      "(PENDING only shrinks)")
