"""Loading the adapters a user names (moved from ``properties/core.py``, which re-exports every
name here): ``load_user_implementations()`` reads ``$REFIMPL_IMPLS`` ("pkg.mod:obj,..."),
``load_adapter()`` imports one ``module:object`` (an adapter, a list of them, or a zero-argument
callable returning either), ``check_adapter()`` validates an adapter against its kind's protocol
(``properties.protocol``), ``check_unique_names()`` rejects two adapters of one name and
``find_adapter()`` finds one by name for a reproduction snippet. Every problem is one
:class:`ProtocolError` naming the closest valid names (``closest``).
"""

from __future__ import annotations

import importlib
import os


class ProtocolError(ValueError):
    """An adapter does not follow its kind's protocol (raised at load time)."""


def load_user_implementations(env_var: str = "REFIMPL_IMPLS") -> list:
    """Adapters named in ``$REFIMPL_IMPLS`` ("pkg.mod:obj,pkg2.mod:obj2").

    Each named object is an adapter, or a zero-argument callable returning one
    or a list of them. This is how a user points the suite at their own kernels.
    Every adapter is checked against its kind's protocol (``properties.protocol``):
    any problem raises :class:`ProtocolError` listing them all, with the valid names;
    so does a name used twice (among these adapters or with a bundled one).
    """
    spec = os.environ.get(env_var, "").strip()
    out: list = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        out.extend(load_adapter(item, env_var))
    if out:
        from . import registry

        check_unique_names(registry.all_bundled() + out, env_var)
    return out


def closest(name: str, candidates, n: int = 3, cutoff: float = 0.6) -> list:
    """The ``n`` candidates nearest ``name`` (difflib), for "did you mean" messages."""
    import difflib

    return difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=cutoff)


def _did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    near = closest(name, candidates, cutoff=cutoff)
    return f"; did you mean {', '.join(map(repr, near))}?" if near else ""


def _import_named(module_name: str, origin: str, item: str):
    """``importlib.import_module`` with a one-line ProtocolError naming the closest modules."""
    import pkgutil

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise ProtocolError(f"{origin}: expected module:object with a module that imports, got {item!r} "
                                f"(importing {module_name!r} failed: {e}; a module it imports is missing: install it)"
                                ) from None
        parent, _, leaf = missing.rpartition(".")
        try:
            where = importlib.import_module(parent).__path__ if parent else None
            names = [m.name for m in pkgutil.iter_modules(where)]
        except Exception:  # the parent itself is broken: no suggestions
            names = []
        prefix = parent + "." if parent else ""
        raise ProtocolError(f"{origin}: expected module:object with a module that imports, got {item!r} "
                            f"(no module named {missing!r}"
                            + _did_you_mean(missing, [prefix + n for n in names], cutoff=0.75)
                            + "; is it installed, or on sys.path? Run from your repository's root)") from None


def check_unique_names(impls, origin: str = "adapters") -> None:
    """Raise :class:`ProtocolError` when two adapters share a name (reports, xfail entries and
    ``--impl`` select by name, so a duplicate would make one of them unreachable or mislabelled)."""
    seen: dict = {}
    dups = []
    for impl in impls:
        name = getattr(impl, "name", None)
        if name in seen and seen[name] is not impl:
            dups.append(name)
        seen.setdefault(name, impl)
    if dups:
        raise ProtocolError(f"{origin}: expected adapters with unique names, got {sorted(set(dups))} named twice "
                            "(give each adapter its own name, e.g. with the dtype or option in brackets)")


def load_adapter(item: str, origin: str = "adapter") -> list:
    """The validated adapter(s) named by ``"module:object"``.

    A missing module or object is a one-line :class:`ProtocolError` naming the closest names.
    """
    module_name, _, attr = item.partition(":")
    if not attr or not module_name:
        raise ProtocolError(f"{origin}: expected 'module:object' (e.g. my_package.adapters:my_attention), "
                            f"got {item!r}")
    module = _import_named(module_name, origin, item)
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ProtocolError(f"{origin}: expected module:object naming an object of its module, got {item!r} "
                            f"(module {module_name!r} has no object {attr!r}" + _did_you_mean(attr, public) + ")")
    obj = getattr(module, attr)
    if callable(obj) and not hasattr(obj, "kind"):
        obj = obj()
    impls = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    for impl in impls:
        check_adapter(impl, origin)
    return impls


def check_adapter(impl, origin: str = "adapter") -> None:
    """Raise :class:`ProtocolError` if ``impl`` does not follow its kind's protocol."""
    from . import registry
    from .protocol import validate

    problems = validate(impl, registry.all_kinds())
    if problems:
        raise ProtocolError(f"{origin}: expected an adapter that follows its kind's protocol, got "
                            + "\n  ".join(problems))


def find_adapter(name: str):
    """The adapter called ``name``: bundled, wrong, or named in $REFIMPL_IMPLS (used by snippets)."""
    from . import registry

    for impl in registry.all_bundled() + list(registry.all_wrong().values()) + load_user_implementations():
        if impl.name == name:
            return impl
    raise LookupError(f"no adapter named {name!r} (set REFIMPL_IMPLS to the module:object that defines it)")
