"""One strategy object per set of arguments, for strategies drawn inside composites.

Hypothesis validates a strategy and computes its label (a walk over its parts) the first time
it is drawn. A composite that builds its inner strategies at every draw (``draw(st.sampled_from(
...))``, ``draw(other_composite(...))``) pays that at every example: about a third of the time of
drawing an attention case. ``cached(key, make)`` builds once and reuses. The same arguments give
the same strategy, labels included, so the examples drawn do not change (tests/test_runner.py
checks a digest of the cases drawn).

Keys holding a declaration (``properties.core.Declared``, a frozenset whose equality ignores its
tiles, precision and declines) use ``caps_key``: its identity, with the object kept alive beside
the strategy so the identity is not reused.
"""

from __future__ import annotations

from hypothesis import strategies as st

_CACHE: dict = {}
_LIMIT = 4096  # entries; a new declaration per (property, implementation) run adds a few


def caps_key(caps) -> tuple:
    """A cache key for a declaration: its identity (``Declared`` compares equal across tiles)."""
    return ("caps", id(caps))


def cached(key: tuple, make, *pin):
    """``make()`` the first time ``key`` is seen, the same object afterwards; ``pin``: objects whose
    identity is part of ``key`` (kept alive with the entry)."""
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0]
    if len(_CACHE) >= _LIMIT:
        _CACHE.clear()
    s = make()
    _CACHE[key] = (s, pin)
    return s


def sampled(values):
    """``st.sampled_from(values)``, one object per sequence of values (keyed by each value's type and
    repr: 1 and 1.0, 0.0 and -0.0 are different values to draw). Values other than plain
    numbers, strings, None and tuples of them are not cached (their repr need not tell them apart)."""
    if not isinstance(values, (tuple, list)) or not all(_plain(v) for v in values):
        return st.sampled_from(values)
    key = ("sampled_from", type(values), tuple((type(v), repr(v)) for v in values))
    return cached(key, lambda: st.sampled_from(values))


def _plain(v) -> bool:
    if isinstance(v, tuple):
        return all(_plain(e) for e in v)
    return v is None or type(v) in (bool, int, float, str)


BOOLEANS = st.booleans()
SEEDS = st.integers(0, 2**32 - 1)
