"""KV caches, decoding and split-KV (``refimpl.kv_cache``, ``refimpl.split_kv``): their argument checks and
the one check of a cache's state (a paged pool out of blocks). The classes checked are passed in: this
package is a leaf."""

from __future__ import annotations

import numbers

import numpy as np

from .arrays import as_float_array
from .attention import check_window
from .budget import check_budget
from .scalars import _type, choice, fail, instance, plain, positive_float, positive_int

DECODE_ALIGNMENTS = ("bottom_right", "top_left")
"""``decode_step``'s ``align``: bottom-right makes decoding exact; top-left only shows why it is wrong."""


# --- windows ----------------------------------------------------------------------------------------------


def causal_window(window):
    """``window``: None or (left, 0), decoding being causal; returns left (None: unbounded)."""
    window = check_window(window)
    if window is None:
        return None
    if window[1] != 0:
        fail("window", "(left, 0) (decoding is causal)", f"{window}")
    return window[0]


def ring_window(window) -> int:
    """``make_cache("ring", window=...)``: a finite (left, 0); returns left (the ring holds left + 1 slots)."""
    left = causal_window(window)
    if left is None:
        fail("window", "a finite window (left, 0) for a ring cache", "None")
    if left >= 2**62:  # the ring's left + 1 slots are counted as an int <= 2**62
        fail("window", "(left, 0) with left < 2**62 for a ring cache (it holds left + 1 slots)", f"left = {left}")
    return left


# --- caches -----------------------------------------------------------------------------------------------


def cache_kv(k, v, B: int, Hkv: int, D: int, Dv: int):
    """k (B, Hkv, n, D), v (B, Hkv, n, Dv) for a cache of those dims, as float64 arrays."""
    k, v = as_float_array(k, "k", ndim=4), as_float_array(v, "v", ndim=4)
    cache_kv_shapes(k, v, B, Hkv, D, Dv)
    return k, v


def cache_kv_shapes(k, v, B: int, Hkv: int, D: int, Dv: int) -> None:
    """``cache_kv``'s shape test of 4-D arrays k, v."""
    if k.shape[:2] != (B, Hkv) or k.shape[3] != D or v.shape != k.shape[:3] + (Dv,):
        fail("k, v", f"shapes (batch, num_kv_heads, n, head_dim) = ({B}, {Hkv}, n, {D}) and "
                     f"(batch, num_kv_heads, n, v_head_dim) = ({B}, {Hkv}, n, {Dv}) (the cache's)",
             f"{k.shape} and {v.shape}")


def sequence_kv(k, v, Hkv: int, D: int, Dv: int):
    """One sequence's k (Hkv, n, D), v (Hkv, n, Dv) (``PagedCache.append``), as float64 arrays."""
    k, v = as_float_array(k, "k", ndim=3), as_float_array(v, "v", ndim=3)
    k, v = cache_kv(k[None], v[None], 1, Hkv, D, Dv)
    return k[0], v[0]


def zero_pool(shape: tuple, names: str) -> np.ndarray:
    """A zero float64 pool; beyond the work budget (``max_bytes``) or NumPy's addressable size it is a
    ValueError naming the sizing arguments ``names``."""
    check_budget(names, shape=shape, what=f"a float64 pool of shape {shape}")
    try:
        return np.zeros(shape)
    except ValueError:  # beyond NumPy's addressable size: named below, outside the handler (no chained error)
        pass
    fail(names, "a pool within the addressable array size", f"shape {shape}")


def free_blocks(need: int, free: int, total: int, tokens: int, error: type) -> None:
    """A paged write of ``tokens`` more tokens per sequence needs ``need`` of the pool's ``total`` blocks
    free, ``free`` are; else ``error`` (``PoolExhausted``, a ValueError naming ``num_blocks``)."""
    if need > free:
        fail("num_blocks", f"{need} free blocks for {tokens} more tokens per sequence",
             f"{free} of {total} free; build the cache with more blocks", error=error)


def a_free_block(free: int, total: int, error: type) -> None:
    """One block to hand out: ``free`` of ``total`` are free; else ``error`` (``PoolExhausted``)."""
    if free == 0:
        fail("num_blocks", "a free block", f"all {total} blocks in use", error=error)


# --- decoding ---------------------------------------------------------------------------------------------


def step_inputs(q, k, v, cache, cache_class: type, ring_class: type, window, align: str, scale):
    """``decode_step``'s arguments (and ``decode``'s, for the whole sequence), in this order: ``cache`` a
    ``cache_class`` (KVCache); q (B, Hq, n, D), k, v of the cache's dims (``cache_kv``), Hq a multiple of Hkv;
    window None or (left, 0), within the slots of a ``ring_class`` cache; ``align`` one of DECODE_ALIGNMENTS;
    ``scale`` None or finite positive. Returns (q, k, v, left, scale)."""
    instance(cache, "cache", cache_class, "refimpl.kv_cache.KVCache (make_cache)")
    q = as_float_array(q, "q", ndim=4)
    k, v = as_float_array(k, "k", ndim=4), as_float_array(v, "v", ndim=4)
    return step_arguments(q, k, v, cache, cache_class, ring_class, window, align, scale)


def step_arguments(q, k, v, cache, cache_class: type, ring_class: type, window, align: str, scale):
    """``step_inputs`` of q, k, v already checked as 4-D float64 arrays (``decode`` checks the whole
    sequence once, ``sequence_inputs``): everything else, in the same order."""
    instance(cache, "cache", cache_class, "refimpl.kv_cache.KVCache (make_cache)")
    cache_kv_shapes(k, v, cache.B, cache.Hkv, cache.D, cache.Dv)
    B, Hq, n, D = q.shape
    if (B, D, n) != (cache.B, cache.D, k.shape[2]) or Hq % cache.Hkv:
        fail("q", f"shape ({cache.B}, a multiple of {cache.Hkv}, n = {k.shape[2]}, {cache.D}) to match k and the "
                  f"cache", f"{q.shape}")
    left = causal_window(window)
    if isinstance(cache, ring_class) and (left is None or cache.capacity < left + 1):
        fail("window", f"a window within the ring's {cache.capacity} slots (a wider one would evict keys the "
                       f"window allows)", f"{window}")
    choice(align, "align", DECODE_ALIGNMENTS)
    return q, k, v, left, None if scale is None else positive_float(scale, "scale")


def sequence_inputs(q, k, v, chunks):
    """``decode``'s q, k, v (4-D, one sequence length) and ``chunks`` (positive lengths summing to it);
    returns (q, k, v, chunks as a list of ints)."""
    q = as_float_array(q, "q", ndim=4)
    k, v = as_float_array(k, "k", ndim=4), as_float_array(v, "v", ndim=4)
    if q.shape[2] != k.shape[2] or k.shape[2] != v.shape[2]:
        fail("q, k, v", "one sequence length", f"{q.shape[2]}, {k.shape[2]}, {v.shape[2]}")
    if isinstance(chunks, (str, bytes)) or not hasattr(chunks, "__iter__"):
        fail("chunks", "a sequence of chunk lengths", _type(chunks), error=TypeError)
    chunks = [positive_int(c, f"chunks[{i}]") for i, c in enumerate(chunks)]
    if sum(chunks) != q.shape[2]:
        fail("chunks", f"lengths summing to the sequence length {q.shape[2]}", f"{chunks}")
    return q, k, v, chunks


def self_attention_inputs(q, k, *, one_head_dim: bool = False):
    """q (B, Hq, L, D), k (B, Hkv, L, D) of one whole sequence (``decode_definition``,
    ``prefill_reference``; the latter states the head dim too), as float64 arrays."""
    q, k = as_float_array(q, "q", ndim=4), as_float_array(k, "k", ndim=4)
    if one_head_dim and (q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]):
        fail("q, k", "one sequence length (self-attention) and one head dim", f"shapes {q.shape} and {k.shape}")
    if q.shape[2] != k.shape[2]:
        fail("q, k", "one sequence length (self-attention)", f"shapes {q.shape} and {k.shape}")
    return q, k


# --- split-KV ---------------------------------------------------------------------------------------------


def split_rule(boundaries, num_splits, Lk: int):
    """``split_chunks``: exactly one of ``boundaries`` (non-decreasing ints in [0, Lk]) and ``num_splits``;
    returns the boundaries as a tuple of ints, or None where ``num_splits`` rules (checked by its user,
    ``even_boundaries``)."""
    if (boundaries is None) == (num_splits is None):
        fail("boundaries, num_splits", "exactly one of them (explicit key cuts, or flash-attn's even split)",
             "both" if boundaries is not None else "neither")
    if boundaries is None:
        return None
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        fail("boundaries", "a sequence of ints", _type(boundaries), error=TypeError)
    out = []
    for b in boundaries:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (numbers.Integral, np.integer)):
            fail("boundaries", "ints", repr(plain(b)), error=TypeError)
        out.append(int(b))
    if any(b < 0 or b > Lk for b in out) or out != sorted(out):
        fail("boundaries", f"non-decreasing ints in [0, Lk={Lk}]", f"{list(boundaries)}")
    return tuple(out)


def attention_keywords(kw: dict, defaults: dict) -> dict:
    """Keywords of ``refimpl.attention`` (those of ``defaults``, in its order) for a split-KV call; returns
    them completed with the defaults. Their values are checked by attention's own setup."""
    unknown = set(kw) - set(defaults)
    if unknown:
        fail(", ".join(sorted(unknown)), f"keywords of refimpl.attention {list(defaults)}",
             f"unexpected keyword arguments {sorted(unknown)}", error=TypeError)
    return {**defaults, **kw}
