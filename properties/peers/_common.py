"""What every peer adapter module shares: import guards and extra adapter fields.

A peer module never fails to import: it imports its library inside the factory,
through :func:`require`, which raises :class:`Unavailable` with the reason
("unavailable: torch is not installed", "... no CUDA device") instead.
"""

from __future__ import annotations

import dataclasses
import importlib


class Unavailable(RuntimeError):
    """The library (or the device it needs) is not present; the message says which."""


def require(module: str, *, extra: str = "peers"):
    """``importlib.import_module(module)``, or :class:`Unavailable` naming the missing package."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a library failing its own import (no driver, ...)
        raise Unavailable(f"unavailable: cannot import {module} ({type(e).__name__}: {e}); "
                          f"pip install -e '.[{extra}]'") from None


def require_cuda(torch, what: str):
    if not torch.cuda.is_available():
        raise Unavailable(f"unavailable: {what} needs a CUDA GPU and torch.cuda.is_available() is False")


def version(module) -> str:
    return str(getattr(module, "__version__", "unknown"))


def make(cls, **fields):
    """``cls(**fields)`` for the fields ``cls`` has; the others (``declines``, ``preset``,
    ``library``, ``precision``, ...) are set as plain attributes, so the adapter
    classes need no change to carry them."""
    names = {f.name for f in dataclasses.fields(cls)}
    obj = cls(**{k: v for k, v in fields.items() if k in names})
    for k, v in fields.items():
        if k not in names:
            object.__setattr__(obj, k, v)
    return obj


def declined(adapter, option: str, value) -> bool:
    return value in (getattr(adapter, "declines", None) or {}).get(option, ())
