"""Conformance properties of KV caches and decoding loops (kind "decode").

An adapter runs a whole sequence through its cache and decoding loop:

    decode(q, k, v, *, cache, chunks, window, rope, block_size) -> out (B, Hq, L, Dv)

with q, k, v before RoPE, ``cache`` in refimpl.kv_cache.CACHE_KINDS, ``chunks``
the step lengths (all 1: token by token; one chunk: prefill; else chunked
prefill / several queries per step), ``window`` None or (left, 0), ``rope``
None or apply_rope keywords. It must equal full causal attention over the
sequence with RoPE at positions 0..L-1 (``refimpl.kv_cache.prefill_reference``).

The bundled ``position_masked`` decoder is independent of refimpl's caches: it
keeps (position, k, v) entries in a list, evicts by position, and masks by
comparing absolute positions (no alignment convention involved).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl import kv_cache as KV

from .attention_lowp import kernel_bounds
from .core import Property
from .precision import precision_of
from .protocol import Capability, Kind, Option
from .tolerance import attention_forward_bounds, compare_close, round_to
from .strategy_cache import sampled

KINDS = (
    Kind(
        "decode",
        "a KV cache plus decoding loop; the concatenated step outputs are compared with full causal attention "
        "(refimpl.kv_cache.prefill_reference)",
        {
            "decode": "decode(q, k, v, *, cache, chunks, window, rope, block_size[, softcap]) -> out (B, Hq, L, Dv). "
                      "q (B, Hq, L, D), k (B, Hkv, L, D), v (B, Hkv, L, Dv) float64 before RoPE; cache str "
                      "'contiguous' | 'paged' | 'ring'; chunks list of positive ints summing to L (the tokens fed "
                      "per step); window None or (left, 0) with left an int (always set for 'ring': left + 1 "
                      "slots); rope None or a dict of refimpl.apply_rope keywords {'layout': 'half' | "
                      "'interleaved', 'base': float, 'rotary_dim': None | int} applied at absolute positions "
                      "0..L-1; block_size int (tokens per page, used by 'paged'); softcap float, passed only "
                      "with the softcap capability",
            "contents": "contents(k, v, *, cache, chunks, window, block_size) -> (K, V, positions) held, in position order",
            "fork": "fork(k, v, *, prefix, block_size) -> (K_a, V_a, K_b, V_b, blocks_in_use): sequence b forks "
                    "sequence a after `prefix` tokens, then each appends its own continuation (B = 2 rows of k, v)",
        },
        ("decode",),
        {
            "paged": Capability("supports cache='paged' (block tables of block_size tokens)"),
            "ring": Capability("supports cache='ring' (a sliding-window ring of left + 1 slots)"),
            "rope": Capability("applies RoPE (rope keywords) at absolute positions"),
            "gqa": Capability("supports Hq a multiple of Hkv"),
            "contents": Capability("exposes what the cache holds", ("contents",)),
            "fork": Capability("paged sequences share blocks after a fork (copy-on-write)", ("fork",)),
            "softcap": Capability("softcap=c: scores c * tanh(s / c) after scaling (Gemma 2), as in "
                                  "refimpl.attention (option softcap)"),
        },
        options={
            "rope_layout": Option("RoPE pair layout drawn for rope (decline 'interleaved' for a half-split kernel)",
                                  ("half", "interleaved")),
            "head_dims": Option("value head dim against query/key head dim: decline 'dv_ne_d' for Dv == D only",
                                ("dv_eq_d", "dv_ne_d")),
            "window_cache": Option("caches drawn with a window (a ring always has one): decline 'paged' for a "
                                   "paged cache without windows", ("contiguous", "paged")),
            "softcap": Option("softcap values drawn (with the softcap capability)", (5.0, 30.0)),
        },
    ),
)


@dataclasses.dataclass(frozen=True)
class DecodeAdapter:
    name: str
    decode: Callable
    capabilities: frozenset
    contents: Callable | None = None
    fork: Callable | None = None
    kind: str = "decode"
    precision: str = "float64"
    declines: dict = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------
# refimpl's caches, the independent decoder, and the wrong ones


def _run_ref(q, k, v, *, cache, chunks, window, rope, block_size, bug=None):
    B, Hkv, _, D = k.shape
    c = _make(cache, Hkv, D, v.shape[-1], B, window, block_size, bug)
    if bug is not None:
        return _buggy_loop(q, k, v, c, chunks, window, rope, bug)
    return KV.decode(q, k, v, c, chunks=chunks, window=window, rope=rope)


class _StaleRing(KV.RingCache):
    """Reads its slots in slot order: after wrap-around the keys are no longer in position order."""

    def contents(self):
        held = np.arange(max(0, self.length - self.capacity), self.length)
        slots = np.sort(held % self.capacity)
        return self.k[:, :, slots], self.v[:, :, slots], self.slot_position[slots]


class _EarlyRing(KV.RingCache):
    """W - 1 slots for W keys, written before attending: the oldest key the window allows is gone."""

    def update(self, k, v):
        super().update(k, v)
        return self.contents()[:2]


class _FloorPaged(KV.PagedCache):
    """Gathers only the full blocks (len // block_size of them): the partial last block is lost."""

    def gather(self, seq):
        K, V = super().gather(seq)
        n = self.lengths[seq] // self.block_size * self.block_size
        return K[:, :n], V[:, :n]


class _OffByOnePaged(KV.PagedCache):
    """Reads token p from block table[(p + 1) // block_size]: the last slot of each block comes from the next one."""

    def gather(self, seq):
        p = np.arange(self.lengths[seq])
        table = np.asarray(self.tables[seq], dtype=np.int64)
        blocks = table[np.minimum((p + 1) // self.block_size, table.size - 1)]
        off = p % self.block_size
        return self.k_pool[blocks, :, off].transpose(1, 0, 2), self.v_pool[blocks, :, off].transpose(1, 0, 2)


class _NoCowPaged(KV.PagedCache):
    """Writes into a shared block without copying it: the other sequence sees the write."""

    def _block_for_write(self, table, j):
        if j == len(table):
            table.append(self._allocate())
        return table[j]


def _make(kind, Hkv, D, Dv, B, window, block_size, bug=None):
    if kind == "ring" and bug in ("stale_ring", "ring_evicts_early"):
        left = window[0]
        cls, cap = (_StaleRing, left + 1) if bug == "stale_ring" else (_EarlyRing, max(left, 1))
        return cls(Hkv, D, Dv, batch=B, capacity=cap)
    if kind == "paged":
        cls = {"paged_floor_blocks": _FloorPaged, "paged_no_copy_on_write": _NoCowPaged,
               "paged_table_off_by_one": _OffByOnePaged}.get(bug, KV.PagedCache)
        return cls(Hkv, D, Dv, batch=B, block_size=block_size, num_blocks=64)
    return KV.make_cache(kind, Hkv, D, Dv, batch=B, window=window, block_size=block_size)


def _buggy_loop(q, k, v, cache, chunks, window, rope, bug):
    outs, s = [], 0
    win = None if window is None else (window[0], 0)
    for n in chunks:
        sl = slice(s, s + n)
        qs, ks = q[:, :, sl], k[:, :, sl]
        pos = np.arange(s, s + n) if bug != "rope_positions_from_zero" else np.arange(n)
        if rope is not None:
            qs = refimpl.apply_rope(qs, pos, **rope)
            if bug != "rope_after_cache":
                ks = refimpl.apply_rope(ks, pos, **rope)
        K, V = cache.update(ks, v[:, :, sl])
        if rope is not None and bug == "rope_after_cache":  # rotates the gathered keys at their index
            K = refimpl.apply_rope(K, np.arange(K.shape[2]), **rope)
        align = "top_left" if bug == "top_left_decode" else "bottom_right"
        outs.append(refimpl.attention(qs, K, V, causal=True, window=win, align=align)[0])
        s += n
    return np.concatenate(outs, axis=2)


def _contents_ref(k, v, *, cache, chunks, window, block_size, bug=None):
    B, Hkv, _, D = k.shape
    c = _make(cache, Hkv, D, v.shape[-1], B, window, block_size, bug)
    s = 0
    for n in chunks:
        c.update(k[:, :, s : s + n], v[:, :, s : s + n])
        s += n
    return c.contents()


def _fork_ref(k, v, *, prefix, block_size, bug=None):
    """Sequence a = row 0, b = row 1 of k, v; b shares a's first `prefix` tokens."""
    c = _make("paged", k.shape[1], k.shape[3], v.shape[3], 1, None, block_size, bug)
    c.append(0, k[0, :, :prefix], v[0, :, :prefix])
    b = c.fork(0)
    c.append(0, k[0, :, prefix:], v[0, :, prefix:])
    c.append(b, k[1, :, prefix:], v[1, :, prefix:])
    (Ka, Va), (Kb, Vb) = c.gather(0), c.gather(b)
    return Ka, Va, Kb, Vb, c.blocks_in_use


def _position_masked(q, k, v, *, cache, chunks, window, rope, block_size, softcap=None, precision="float64", bug=None):
    """Independent decoder: a list of (position, k, v), eviction and masking by absolute position.
    ``precision``: RoPE'd q, k rounded to it and each step's attention by ``properties.tiled``'s
    kernel in it (scores, m, l in float32, P and the output rounded); ``bug="rope_positions_from_zero"``
    rotates each chunk from position 0; ``bug="softcap_ignored"`` drops the softcap."""
    left = None if window is None else window[0]
    entries, outs, s = [], [], 0
    for n in chunks:
        pos = np.arange(s, s + n)
        qs, ks = q[:, :, s : s + n], k[:, :, s : s + n]
        if rope is not None:
            rp = np.arange(n) if bug == "rope_positions_from_zero" else pos
            qs, ks = (round_to(refimpl.apply_rope(x, rp, **rope), precision) for x in (qs, ks))
        entries += [(int(p), ks[:, :, i], v[:, :, s + i]) for i, p in enumerate(pos)]
        kp = np.array([e[0] for e in entries])
        vis = kp[None, :] <= pos[:, None]
        if left is not None:
            vis &= kp[None, :] >= pos[:, None] - left
        K = np.stack([e[1] for e in entries], axis=2)
        V = np.stack([e[2] for e in entries], axis=2)
        cap = None if bug == "softcap_ignored" else softcap
        if precision == "float64":
            outs.append(refimpl.attention(qs, K, V, mask=vis, softcap=cap)[0])
        else:
            from .tiled import tiled_attention

            outs.append(tiled_attention(qs, K, V, mask=vis, softcap=cap, precision=precision)[0])
        if cache == "ring":  # keep only what a later query's window can still see
            entries = [e for e in entries if e[0] >= s + n - left]
        s += n
    return np.concatenate(outs, axis=2)


ALL_CAPS = frozenset({"paged", "ring", "rope", "gqa", "contents", "fork"})
BUNDLED = [
    DecodeAdapter("refimpl.kv_cache", _run_ref, ALL_CAPS, contents=_contents_ref, fork=_fork_ref),
    DecodeAdapter("position_masked", _position_masked, frozenset({"paged", "ring", "rope", "gqa", "softcap"})),
]
_BUGS = ("top_left_decode", "rope_positions_from_zero", "rope_after_cache", "stale_ring", "ring_evicts_early",
         "paged_floor_blocks", "paged_table_off_by_one", "paged_no_copy_on_write", "softcap_ignored")


def _wrong(bug):
    def dec(*a, **kw):
        return _run_ref(*a, bug=bug, **kw)

    def con(*a, **kw):
        return _contents_ref(*a, bug=bug, **kw)

    def frk(*a, **kw):
        return _fork_ref(*a, bug=bug, **kw)

    if bug == "softcap_ignored":
        return DecodeAdapter(f"wrong:{bug}", lambda *a, **kw: _position_masked(*a, bug=bug, **kw),
                             frozenset({"paged", "ring", "rope", "gqa", "softcap"}))
    return DecodeAdapter(f"wrong:{bug}", dec, ALL_CAPS, contents=con, fork=frk)


WRONG = {b: _wrong(b) for b in _BUGS}


def lowp_decoder(precision: str, bug=None) -> DecodeAdapter:
    """``_position_masked`` in ``precision`` (a correct low-precision decoder; with ``bug`` a wrong one)."""
    def dec(q, k, v, **kw):
        return _position_masked(q, k, v, precision=precision, bug=bug, **kw)

    name = f"position_masked[{precision}]" + (f"[bug={bug}]" if bug else "")
    return DecodeAdapter(name, dec, frozenset({"paged", "ring", "rope", "gqa"}), precision=precision)


# ----------------------------------------------------------------------------
# cases


@dataclasses.dataclass(frozen=True)
class DecodeCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    cache: str
    chunks: tuple
    window: tuple | None
    rope: dict | None
    block_size: int
    seed: int

    softcap: float | None = None

    def kwargs(self):
        kw = dict(cache=self.cache, chunks=list(self.chunks), window=self.window, rope=self.rope,
                  block_size=self.block_size)
        if self.softcap is not None:
            kw["softcap"] = self.softcap
        return kw

    def __repr__(self):
        return (f"DecodeCase(q{self.q.shape}, k{self.k.shape}, v{self.v.shape}, cache={self.cache!r}, "
                f"chunks={list(self.chunks)}, window={self.window}, rope={self.rope}, block_size={self.block_size}, "
                f"seed={self.seed}" + (f", softcap={self.softcap})" if self.softcap is not None else ")"))


@st.composite
def decode_case(draw, caps, *, kinds=None, ring_only=False):
    """A sequence fed in chunks through one cache kind; q, k, v representable in the adapter's precision."""
    precision = getattr(caps, "precision", "float64")
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kinds = kinds or ("contiguous",) + tuple(c for c in ("paged", "ring") if c in caps)
    cache = "ring" if ring_only else draw(sampled(kinds))
    allowed = getattr(caps, "allowed", lambda option, values: tuple(values))
    B, Hkv = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    G = draw(st.integers(1, 3)) if "gqa" in caps else 1
    D, Dv, L = 2 * draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 12))
    if "dv_ne_d" not in allowed("head_dims", ("dv_ne_d",)):
        Dv = D
    chunks, left_over = [], L
    while left_over:
        c = draw(sampled((1, 1, 2, 3, 5, 12)))
        chunks.append(min(c, left_over))
        left_over -= chunks[-1]
    windowed = cache == "ring" or (cache in allowed("window_cache", ("contiguous", "paged")) and draw(st.booleans()))
    window = (draw(st.integers(0, 5)), 0) if windowed else None
    rope = None
    layouts = allowed("rope_layout", ("half", "interleaved"))
    if "rope" in caps and layouts and draw(st.booleans()):
        rope = {"layout": draw(sampled(layouts)), "base": draw(sampled((10.0, 10000.0))),
                "rotary_dim": draw(sampled((None, 2)))}
    softcap = None
    caps_vals = allowed("softcap", (5.0, 30.0))
    if "softcap" in caps and caps_vals and draw(st.booleans()):
        softcap = draw(sampled(caps_vals))
    q, k, v = (round_to(rng.standard_normal(shape), precision)
               for shape in ((B, Hkv * G, L, D), (B, Hkv, L, D), (B, Hkv, L, Dv)))
    return DecodeCase(q, k, v, cache, tuple(chunks), window, rope, draw(st.integers(1, 4)), seed, softcap)


def _prefill(case):
    """refimpl.kv_cache.prefill_reference; with softcap, the same causal attention with it."""
    if case.softcap is None:
        return KV.prefill_reference(case.q, case.k, case.v, window=case.window, rope=case.rope)
    q, k = case.q, case.k
    if case.rope is not None:
        pos = np.arange(q.shape[2])
        q, k = refimpl.apply_rope(q, pos, **case.rope), refimpl.apply_rope(k, pos, **case.rope)
    window = None if case.window is None else (case.window[0], 0)
    return refimpl.attention(q, k, case.v, causal=True, window=window, softcap=case.softcap)[0]


def _bound(case, precision="float64"):
    """float64: both sides compute the same rotated q, k (RoPE is elementwise); attention rows
    of different lengths differ by at most the float64 attention bound each: twice it. Lower
    precisions: the attention rule (``properties.attention_lowp.kernel_bounds``) on the
    rotated q, k under the causal (and window) mask."""
    L = case.q.shape[2]
    pos = np.arange(L)
    q, k = case.q, case.k
    if case.rope is not None:
        q, k = refimpl.apply_rope(q, pos, **case.rope), refimpl.apply_rope(k, pos, **case.rope)
    if precision == "float64":
        return 2 * attention_forward_bounds(q, k, case.v)[0]
    i, j = pos[:, None], pos[None, :]
    vis = (j <= i) & (True if case.window is None else j >= i - case.window[0])
    ref_out, ref_lse = refimpl.attention(q, k, case.v, mask=vis, softcap=case.softcap)
    return kernel_bounds(q, k, case.v, ref_out, ref_lse, vis, q.shape[-1] ** -0.5, precision, case.softcap)[0]


# ----------------------------------------------------------------------------
# checks


def check_decode_equals_prefill(impl, case):
    """Decoding in case.chunks through the cache equals full causal attention over the sequence."""
    out = np.asarray(impl.decode(case.q, case.k, case.v, **case.kwargs()), dtype=np.float64)
    ref = _prefill(case)
    compare_close("out (decode vs prefill)", out, ref, _bound(case, precision_of(impl)), f"{impl.name}; {case!r}")


def check_eviction_invisible(impl, case):
    """A ring of left + 1 slots gives what a contiguous cache gives under the same window."""
    ring = np.asarray(impl.decode(case.q, case.k, case.v, **case.kwargs()), dtype=np.float64)
    full = np.asarray(impl.decode(case.q, case.k, case.v, **{**case.kwargs(), "cache": "contiguous"}), dtype=np.float64)
    precision = precision_of(impl)  # two runs of the adapter: each within the bound (twice it below float64)
    bound = _bound(case) if precision == "float64" else 2 * _bound(case, precision)
    compare_close("out (ring vs contiguous)", ring, full, bound, f"{impl.name}; {case!r}")


def check_cache_contents(impl, case):
    """The cache holds exactly: every position (contiguous, paged gather) or the last left + 1 (ring), in order."""
    K, V, pos = impl.contents(case.k, case.v, **{k: v for k, v in case.kwargs().items() if k != "rope"})
    L = case.k.shape[2]
    first = 0 if case.cache != "ring" else max(0, L - case.window[0] - 1)
    want = np.arange(first, L)
    if not np.array_equal(np.asarray(pos), want):
        raise AssertionError(f"{impl.name}: cache holds positions {np.asarray(pos).tolist()}, expected {want.tolist()}; {case!r}")
    if not (np.array_equal(K, case.k[:, :, first:]) and np.array_equal(V, case.v[:, :, first:])):
        raise AssertionError(f"{impl.name}: cached keys/values are not those of positions {want.tolist()}; {case!r}")


def check_fork_shares_blocks(impl, case):
    """Two sequences forked after a prefix gather their own tokens exactly; the prefix's full blocks are shared."""
    L, bs = case.k.shape[2], case.block_size
    prefix = int(np.random.default_rng(case.seed).integers(0, L + 1))
    k = np.stack([case.k[0], case.k[-1] + 1.0])  # two different rows (B may be 1)
    v = np.stack([case.v[0], case.v[-1] - 1.0])
    Ka, Va, Kb, Vb, used = impl.fork(k, v, prefix=prefix, block_size=bs)
    kb = np.concatenate([k[0, :, :prefix], k[1, :, prefix:]], axis=1)
    vb = np.concatenate([v[0, :, :prefix], v[1, :, prefix:]], axis=1)
    ctx = f"{impl.name}: prefix={prefix}; {case!r}"
    if not (np.array_equal(Ka, k[0]) and np.array_equal(Va, v[0])):
        raise AssertionError(f"{ctx}: sequence a no longer gathers its own tokens (a shared block was overwritten?)")
    if not (np.array_equal(Kb, kb) and np.array_equal(Vb, vb)):
        raise AssertionError(f"{ctx}: the forked sequence does not gather prefix + its continuation")
    shared = prefix // bs if prefix < L else -(-L // bs)  # full prefix blocks; all blocks if nothing diverges
    expect = 2 * -(-L // bs) - shared
    if used != expect:
        raise AssertionError(f"{ctx}: {used} blocks in use, expected {expect} ({shared} shared)")


PROPERTIES = [
    Property("decode_equals_prefill", "decode", check_decode_equals_prefill, decode_case,
             "token-by-token / chunked decoding through the cache equals full causal attention (RoPE, GQA, windows)",
             rejects=("top_left_decode", "rope_positions_from_zero", "rope_after_cache", "stale_ring",
                      "ring_evicts_early", "paged_floor_blocks", "paged_table_off_by_one", "softcap_ignored")),
    Property("eviction_invisible", "decode", check_eviction_invisible,
             lambda caps: decode_case(caps, ring_only=True),
             "a ring buffer of left + 1 slots never changes a result the window allows",
             requires=frozenset({"ring"}), rejects=("ring_evicts_early", "stale_ring", "rope_after_cache")),
    Property("cache_contents", "decode", check_cache_contents, decode_case,
             "the cache holds every position (paged gather == contiguous) or the last left + 1 (ring), in order",
             requires=frozenset({"contents"}), rejects=("stale_ring", "paged_floor_blocks", "paged_table_off_by_one")),
    Property("paged_fork_shares_blocks", "decode", check_fork_shares_blocks,
             lambda caps: decode_case(caps, kinds=("paged",)),
             "forked paged sequences share full prefix blocks and copy on write",
             requires=frozenset({"fork"}), rejects=("paged_no_copy_on_write",)),
]
