"""Imports run one way: no import circle inside refimpl, gpu or properties, and no private name
crossing a package boundary.

The graph is read from the source with ``ast`` (nothing is imported): one edge per ``import`` /
``from ... import`` anywhere in a module, at the top or inside a function (a deferred import is still
a dependency), to a module of the same three packages. ``from . import x`` where x is a module is an
edge to x; ``from .m import name`` an edge to m. A circle is a strongly connected component of more
than one module (Tarjan). A private name is one starting with "_" (a module such as
``refimpl._validate`` or a name such as ``_Setup``); another package must use the public ones.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("refimpl", "gpu", "properties")


def _modules() -> dict:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _edges() -> list:
    """(importer, imported module, names, line) for every import between the three packages."""
    out = []
    for mod, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, [], node.lineno) for a in node.names if a.name in MODULES]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")[: len(mod.split(".")) - (node.level - (1 if is_pkg else 0))]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [a.name for a in node.names]
                out += [(mod, f"{target}.{n}", [], node.lineno) for n in names if f"{target}.{n}" in MODULES]
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if target in MODULES and rest:
                    out.append((mod, target, rest, node.lineno))
    return out


EDGES = _edges()


def _package(mod: str) -> str:
    return mod.split(".")[0]


def _cycles(pkg: str) -> list:
    graph: dict = {m: set() for m in MODULES if _package(m) == pkg}
    for a, b, _, _ in EDGES:
        if _package(a) == pkg == _package(b) and a != b:
            graph[a].add(b)
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Known circles and private names across packages, listed by name so that any other one fails and a
# fixed entry must be removed here (the list only shrinks). Empty: keep it so.
KNOWN_CIRCLES: set = set()
KNOWN_LEAKS: set = set()


def test_the_graph_is_read():
    """The reader sees the edges it must (so an empty result below means something)."""
    assert len(MODULES) > 100
    pairs = {(a, b) for a, b, _, _ in EDGES}
    assert ("refimpl.masks", "refimpl.mask_core") in pairs
    assert ("refimpl.flash", "refimpl._tiled") in pairs
    assert ("gpu.api_common", "refimpl.validation") in pairs
    assert ("gpu.api", "gpu.api_attention") in pairs


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_import_circle_within_a_package(pkg):
    circles = {tuple(c) for c in _cycles(pkg)}
    known = {c for c in KNOWN_CIRCLES if c[0].split(".")[0] == pkg}
    assert circles - known == set(), f"import circles in {pkg} (strongly connected modules)"
    assert known - circles == set(), "a known circle is gone: remove it from KNOWN_CIRCLES"


def test_the_cycle_finder_finds_a_circle():
    EDGES.append(("refimpl._validate", "refimpl.moe.router", [], 0))  # the circle issue 22 removed
    try:
        assert any("refimpl._validate" in c for c in _cycles("refimpl"))
    finally:
        EDGES.pop()


def test_no_private_name_crosses_a_package_boundary():
    leaks = set()
    for a, b, names, _ in EDGES:
        if _package(a) != _package(b):
            if any(part.startswith("_") for part in b.split(".")[1:]):
                leaks.add((a, b, ""))
            leaks |= {(a, b, n) for n in names if n.startswith("_")}
    assert leaks - KNOWN_LEAKS == set(), "private names imported across packages: make them public and documented"
    assert KNOWN_LEAKS - leaks == set(), "a known leak is fixed: remove it from KNOWN_LEAKS"


def test_validate_is_a_leaf():
    """The validation package imports only its own modules (and NumPy)."""
    inside = [m for m in MODULES if m == "refimpl._validate" or m.startswith("refimpl._validate.")]
    assert len(inside) > 1
    out = [(a, b) for a, b, _, _ in EDGES if a in inside and b not in inside]
    assert out == [], "refimpl._validate must stay a leaf"
