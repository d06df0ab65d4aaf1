"""Sizes at the kernel's own scale: lengths around multiples of its tiles.

A tiled kernel goes wrong where tiles meet: the online-softmax combination
across key tiles, a partial last tile, tiles skipped by causal/window/masks
one tile too early or too late. An adapter declaring ``tiles=(t1, t2, ...)``
therefore gets lengths drawn from

    {1} U {m t + d : t in tiles, m in 1..3, d in -1, 0, 1}   (capped at max_len)

i.e. 1 (decode), t - 1 (one partial tile), t, t + 1 (a tile and one key),
2t - 1, 2t, 2t + 1, 3t - 1, 3t, 3t + 1 (several tiles, full or partial).
Lq and Lk are drawn independently (Lq = 1 decode and Lq != Lk at tile
sizes), head dims from the declared ``head_dims``. Adapters declaring no tiles
keep the small default sizes, so the bundled default run stays fast; the big
sizes are drawn only for adapters that declare big tiles.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .strategy_cache import cached

#: lengths drawn for adapters that declare no tiles (small: every edge, fast)
DEFAULT_MAX_LEN = 9
DEFAULT_MAX_DIM = 8


def tile_lengths(tiles, max_len: int | None = None) -> tuple:
    """Lengths at and around 1, 2 and 3 multiples of every tile, sorted."""
    out = {1}
    for t in tiles:
        out |= {m * t + d for m in (1, 2, 3) for d in (-1, 0, 1)}
    cap = max_len if max_len is not None else max(3 * t + 1 for t in tiles)
    return tuple(sorted(n for n in out if 1 <= n <= cap))


def lengths(caps, max_len: int = DEFAULT_MAX_LEN):
    """Strategy for one sequence length for an adapter declaring ``caps`` (a Declared)."""
    tiles = getattr(caps, "tiles", ())
    cap = getattr(caps, "max_len", None)
    if tiles:
        return cached(("lengths", tuple(tiles), cap), lambda: st.sampled_from(tile_lengths(tiles, cap)))
    return st.integers(1, min(max_len, cap) if cap else max_len)


def head_dims(caps, max_dim: int = DEFAULT_MAX_DIM):
    """Strategy for a head dimension: the declared ``head_dims`` or 1..max_dim."""
    dims = tuple(getattr(caps, "head_dims", ()) or ())
    return cached(("head_dims", dims), lambda: st.sampled_from(dims)) if dims else st.integers(1, max_dim)


def window_sides(caps, max_len: int = DEFAULT_MAX_LEN):
    """Strategy for one window side (None = unbounded unless declined, else 0..)."""
    tiles = getattr(caps, "tiles", ())
    finite = (st.sampled_from((0,) + tile_lengths(tiles, getattr(caps, "max_len", None))) if tiles
              else st.one_of(st.integers(0, 2), st.integers(0, max_len + 2)))
    allowed = caps.allowed("window_side", ("unbounded", "finite")) if hasattr(caps, "allowed") else ("unbounded", "finite")
    parts = ([st.none()] if "unbounded" in allowed else []) + ([finite] if "finite" in allowed else [])
    return st.one_of(*parts) if parts else st.nothing()
