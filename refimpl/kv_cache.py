"""KV caches and decoding: contiguous, paged (block tables), ring buffer (sliding window).

Decoding feeds a sequence to attention in chunks (one token per step, or a
chunk of prefill, or several queries per step). Each step (``decode_step``):

    start   = cache.length                          absolute position of the chunk's first token
    pos     = start .. start + n - 1
    q, k    = RoPE(q, pos), RoPE(k, pos)             before caching: cached keys are rotated once,
                                                     at their own absolute position (HF, vLLM, Meta)
    K, V    = cache.update(k, v)                     keys the chunk attends to, in position order,
                                                     the chunk's own keys last (HF ``Cache.update``)
    out     = attention(q, K, V, causal=True, window=(left, 0), align="bottom_right")

Bottom-right alignment puts query i of the chunk at key position i + Lk - n,
i.e. at its absolute position, so every step reproduces the rows of full causal
attention over the whole sequence (``decode`` checks nothing more). Top-left
alignment (torch ``is_causal``) would let query i see only keys 0..i of what
the cache returns: wrong whenever the cache is not empty.

Caches (B sequences, Hkv heads; k (B, Hkv, n, D), v (B, Hkv, n, Dv)):

* ``ContiguousCache``: one growing array per sequence (HF ``DynamicCache``).
* ``PagedCache``: a pool of fixed-size physical blocks; each sequence has a
  block table, logical block j -> physical block; token p lives in block
  ``table[p // block_size]`` at offset ``p % block_size`` (vLLM
  csrc/attention/attention_kernels.cuh ``paged_attention_kernel``: ``block_table[block_idx]``;
  csrc/cache_kernels.cu ``reshape_and_cache``: slot = block * block_size + offset).
  ``fork`` shares every block of a sequence (reference counts, as vLLM's block
  manager for parallel sampling / prefix sharing); a write into a shared block
  first copies it (copy-on-write).
* ``RingCache``: a sliding-window cache of ``capacity`` = left + 1 slots (the
  W keys including self of HF Mistral ``sliding_window = W``, window
  (W - 1, 0)); position p lives in slot p % capacity and overwrites position
  p - capacity (mistral-inference ``RotatingBufferCache``). ``update`` returns the
  stored keys in position order followed by the new chunk, then stores the
  chunk's last ``capacity`` tokens, so a chunk longer than the window still
  sees every key its window allows.

A step computes only what is new. Its arguments are checked (the new tokens: what a cache holds was
checked when it was written). A ``ContiguousCache`` returns its keys without a copy (it keeps K
transposed, (B, Hkv, D, positions), so q K^T is one GEMM over a contiguous block) and carries
``key_max`` = max |k| over every key written, all that the score-range test of ``refimpl.attention``
needs of it. A step smaller than one thread's work (``refimpl._parallel.MIN_PARALLEL_WORK``,
e.g. one token) then runs the formula above in one pass (``_attend``: scores, softmax, weighted sum);
a larger one (a prefill chunk), a top-left one, and one whose scores need attention's rescaled
path (magnitudes near the float64 limits) are ``refimpl.flash_attention`` in tiles of ``PREFILL_BLOCK``
(``refimpl.attention``'s result within its bound; it skips the causal tiles above the diagonal, which
the dense form computes and masks: a prefill of 512 tokens, GQA 8/2, D 64, took 0.77x the CPU time
with 2 threads, 0.89-0.93x with one).
"""

from __future__ import annotations

import math

import numpy as np

from ._exp import exp
from ._parallel import MIN_PARALLEL_WORK
from ._validate import check_budget, choice, count, max_bytes, positive_int
from ._validate.caches import (a_free_block, cache_kv, causal_window, free_blocks, ring_window, self_attention_inputs,
                               sequence_inputs, sequence_kv, step_arguments, step_inputs, zero_pool)
from .definition import attention_definition
from .flash import flash_attention
from .rope import apply_rope, check_rope_kwargs, rope_definition
from .sdpa import attention

CACHE_KINDS = ("contiguous", "paged", "ring")
PREFILL_BLOCK = 256  # flash tile of a step above one thread's work (benchmarks/families.py: the fastest causal tile at L = 1024-2048)


def decode_definition(q, k, v, *, window=None, rope=None, scale=None):
    """out (B, Hq, L, Dv), float64: what feeding q, k, v (the whole sequence) through any cache in any
    chunks must give (docs/notes.md#kv-cache): causal attention over the prefix, RoPE at positions 0 .. L-1.

        q_i, k_j = R(i) q_i, R(j) k_j                      refimpl.rope.rope_definition, ``rope`` keywords
        out_i    = attention_definition(q_i; k_0..k_i)     causal; window (left, 0): keys i - left .. i

    ``decode``, ``decode_step`` over ``ContiguousCache``, ``PagedCache``, ``RingCache`` and
    ``prefill_reference`` are tested equal to it (tests/test_definition_decode.py)."""
    q, k = self_attention_inputs(q, k)
    left, m = causal_window(window), np.arange(q.shape[2])               # positions m = 0 .. L-1
    if rope is not None:
        rope = check_rope_kwargs(rope, q.shape[3])
        q, k = rope_definition(q, m, **rope), rope_definition(k, m, **rope)  # rotated at their own positions
    return attention_definition(q, k, v, causal=True, window=None if left is None else (left, 0), scale=scale)[0]


class PoolExhausted(ValueError, MemoryError):
    """A ``PagedCache`` write needs more free blocks than its pool has (``num_blocks``).

    Catch ``ValueError`` (the contract's error for a value the arguments make impossible); it is
    also a ``MemoryError``, what earlier versions raised. Nothing is written when it is raised."""


class KVCache:
    """Common shape bookkeeping: ``batch`` sequences, ``num_kv_heads``, ``head_dim``, ``v_head_dim``."""

    def __init__(self, num_kv_heads: int, head_dim: int, v_head_dim: int | None = None, *, batch: int = 1):
        self.B = positive_int(batch, "batch")
        self.Hkv = positive_int(num_kv_heads, "num_kv_heads")
        self.D = positive_int(head_dim, "head_dim")
        self.Dv = self.D if v_head_dim is None else positive_int(v_head_dim, "v_head_dim")
        check_budget("batch, num_kv_heads, head_dim, v_head_dim", shape=(self.B, self.Hkv, self.D + self.Dv),
                     what="one token's keys and values")
        self.length = 0  # tokens appended so far = absolute position of the next token

    def update(self, k, v):  # pragma: no cover - abstract
        """Store k, v at positions length .. length + n - 1; return (K, V) the new queries attend to."""
        raise NotImplementedError

    def contents(self):  # pragma: no cover - abstract
        """(K, V, positions): what the cache holds, in position order."""
        raise NotImplementedError

    @property
    def stored_values(self) -> int:
        """Cached scalars: batch * Hkv * (D + Dv) * tokens held (refimpl.cache.kv_cache_values per token)."""
        return self.B * self.Hkv * (self.D + self.Dv) * self.contents()[2].size


class ContiguousCache(KVCache):
    """Keys and values of every position, concatenated (HF ``DynamicCache``).

    Stored in buffers that double when full, so appending n tokens copies O(n) amortised, not
    the whole cache: ``k`` and ``v`` are the first ``length`` positions of the buffers. The key
    buffer is kept transposed, (B, Hkv, D, capacity): the scores q K^T of a step then read K^T
    as a row-major block, BLAS's fast case (K row-major, read transposed, is about 3x slower
    for a few query rows). ``key_max`` = max |k| over every key written (0 while empty).
    """

    def __init__(self, num_kv_heads, head_dim, v_head_dim=None, *, batch=1):
        super().__init__(num_kv_heads, head_dim, v_head_dim, batch=batch)
        self._kt = np.zeros((self.B, self.Hkv, self.D, 0))  # K^T: position p in column p
        self._vbuf = np.zeros((self.B, self.Hkv, 0, self.Dv))
        self.key_max = 0.0

    @property
    def k(self) -> np.ndarray:
        return self._kt[..., : self.length].swapaxes(-1, -2)

    @property
    def v(self) -> np.ndarray:
        return self._vbuf[:, :, : self.length]

    def _append(self, k, v):
        """Store checked k, v; return read-only views of every key and value held. Positions are only
        ever appended past ``length`` (a full buffer is replaced, never rewritten), so what a
        view shows never changes: it is a snapshot without a copy."""
        end = self.length + k.shape[2]
        if end > self._kt.shape[3]:
            check_budget("k, v (the cache after this update)", shape=(self.B, self.Hkv, end, self.D + self.Dv),
                         what=f"cache buffers for {end} positions")
            per_position = 8 * self.B * self.Hkv * (self.D + self.Dv)  # doubling stays within the budget
            cap = max(end, min(2 * self._kt.shape[3], max_bytes() // per_position))
            kt, vb = np.empty((self.B, self.Hkv, self.D, cap)), np.empty((self.B, self.Hkv, cap, self.Dv))
            kt[..., : self.length], vb[:, :, : self.length] = self._kt[..., : self.length], self.v
            self._kt, self._vbuf = kt, vb
        if k.size:
            self.key_max = max(self.key_max, float(np.abs(k).max()))
        self._kt[..., self.length : end], self._vbuf[:, :, self.length : end] = k.swapaxes(-1, -2), v
        self.length = end
        K, V = self.k, self.v
        K.flags.writeable = V.flags.writeable = False
        return K, V

    def update(self, k, v):
        K, V = self._append(*cache_kv(k, v, self.B, self.Hkv, self.D, self.Dv))
        return K.copy(), V.copy()  # the caller's copies: writing into them leaves the cache as it is

    def contents(self):
        return self.k.copy(), self.v.copy(), np.arange(self.length)


class PagedCache(KVCache):
    """Fixed-size blocks in a shared pool, one block table per sequence (vLLM PagedAttention).

    Sequences 0 .. batch-1 exist from the start and ``update`` appends to all of
    them; ``add_sequence``, ``fork``, ``append`` and ``gather`` work on one sequence.
    Free blocks are handed out lowest index first (deterministic). A write that needs more
    free blocks than the pool has raises ``PoolExhausted`` (a ValueError naming ``num_blocks``)
    before anything is written.
    """

    def __init__(self, num_kv_heads, head_dim, v_head_dim=None, *, batch=1, block_size: int = 16, num_blocks: int = 64):
        super().__init__(num_kv_heads, head_dim, v_head_dim, batch=batch)
        self.block_size = positive_int(block_size, "block_size")
        n = positive_int(num_blocks, "num_blocks")
        names = "num_blocks, block_size, num_kv_heads, head_dim, v_head_dim"
        check_budget(f"batch, {names}", shape=(n, self.Hkv, self.block_size, self.D + self.Dv), steps=self.B,
                     what=f"a pool of {n} blocks of shape ({self.Hkv}, {self.block_size}, {self.D} + {self.Dv}) "
                          f"and {self.B} block tables")
        self.k_pool = zero_pool((n, self.Hkv, self.block_size, self.D), names)
        self.v_pool = zero_pool((n, self.Hkv, self.block_size, self.Dv), names)
        self.ref_count = np.zeros(n, dtype=np.int64)
        self.tables: list[list[int]] = []
        self.lengths: list[int] = []
        for _ in range(self.B):
            self.add_sequence()

    def _allocate(self) -> int:
        free = np.flatnonzero(self.ref_count == 0)
        a_free_block(free.size, self.ref_count.size, PoolExhausted)
        b = int(free[0])
        self.ref_count[b] = 1
        return b

    def add_sequence(self) -> int:
        """A new empty sequence; returns its index."""
        self.tables.append([])
        self.lengths.append(0)
        return len(self.tables) - 1

    def _seq(self, seq) -> int:
        return count(seq, "seq", maximum=len(self.tables) - 1, what=f"one of the {len(self.tables)} sequences")

    def fork(self, seq: int) -> int:
        """A new sequence sharing every block of ``seq`` (no copy until one of them writes)."""
        seq = self._seq(seq)
        new = self.add_sequence()
        self.tables[new] = list(self.tables[seq])
        self.lengths[new] = self.lengths[seq]
        for b in self.tables[seq]:
            self.ref_count[b] += 1
        return new

    def block_table(self, seq: int) -> tuple:
        return tuple(self.tables[self._seq(seq)])

    def append(self, seq: int, k, v) -> None:
        """Write k (Hkv, n, D), v (Hkv, n, Dv) at the sequence's next positions.

        Raises ``PoolExhausted`` (a ValueError) when the pool has no free block left; blocks are
        counted before anything is written, so a failed append changes nothing.
        """
        seq = self._seq(seq)
        k, v = sequence_kv(k, v, self.Hkv, self.D, self.Dv)
        self._reserve([seq], k.shape[1])
        self._write(seq, k, v)

    def _write(self, seq: int, k, v) -> None:
        """k (Hkv, n, D), v token by token: position p into block table[p // block_size] at offset
        p % block_size (the caller has reserved the blocks)."""
        table = self.tables[seq]
        for t in range(k.shape[1]):
            p = self.lengths[seq]
            j, off = divmod(p, self.block_size)
            b = self._block_for_write(table, j)
            self.k_pool[b, :, off] = k[:, t]
            self.v_pool[b, :, off] = v[:, t]
            self.lengths[seq] = p + 1

    def _reserve(self, seqs, n: int) -> None:
        """PoolExhausted unless the free blocks cover n more tokens in each of ``seqs``: a fresh
        block past each table's end, and a copy for each write into a shared block (a block
        with r references written by w of the sequences is copied min(w, r - 1) times)."""
        fresh, writers = 0, {}
        seqs = list(seqs)
        blocks_per_seq = (n + self.block_size - 1) // self.block_size + 1
        check_budget("k, v", steps=len(seqs) * (blocks_per_seq + n),
                     what=f"writing {n} tokens into {len(seqs)} sequences, token by token")
        for s in seqs:
            if not n:
                continue
            table = self.tables[s]
            for j in range(self.lengths[s] // self.block_size, (self.lengths[s] + n - 1) // self.block_size + 1):
                if j >= len(table):
                    fresh += 1
                else:
                    writers[table[j]] = writers.get(table[j], 0) + 1
        need = fresh + sum(min(w, int(self.ref_count[b]) - 1) for b, w in writers.items())
        free_blocks(need, int(np.count_nonzero(self.ref_count == 0)), self.ref_count.size, n, PoolExhausted)

    def _block_for_write(self, table: list, j: int) -> int:
        """The physical block for logical block j: a fresh one past the end, a private copy if shared."""
        if j == len(table):
            table.append(self._allocate())
        elif self.ref_count[table[j]] > 1:  # copy-on-write
            b = self._allocate()
            self.k_pool[b], self.v_pool[b] = self.k_pool[table[j]], self.v_pool[table[j]]
            self.ref_count[table[j]] -= 1
            table[j] = b
        return table[j]

    def gather(self, seq: int):
        """(K (Hkv, n, D), V (Hkv, n, Dv)) of a sequence in position order: token p from
        physical block table[p // block_size], offset p % block_size."""
        seq = self._seq(seq)
        p = np.arange(self.lengths[seq])
        blocks = np.asarray(self.tables[seq], dtype=np.int64)[p // self.block_size]
        offsets = p % self.block_size
        return self.k_pool[blocks, :, offsets].transpose(1, 0, 2), self.v_pool[blocks, :, offsets].transpose(1, 0, 2)

    @property
    def blocks_in_use(self) -> int:
        return int(np.count_nonzero(self.ref_count))

    def update(self, k, v):
        k, v = cache_kv(k, v, self.B, self.Hkv, self.D, self.Dv)
        self._reserve(range(self.B), k.shape[2])
        for b in range(self.B):
            self._write(b, k[b], v[b])
        self.length += k.shape[2]
        return self.contents()[:2]

    def contents(self):
        kv = [self.gather(b) for b in range(self.B)]
        return np.stack([a for a, _ in kv]), np.stack([b for _, b in kv]), np.arange(self.length)


class RingCache(KVCache):
    """Sliding-window cache of ``capacity`` slots; position p in slot p % capacity.

    ``capacity = left + 1`` serves window (left, 0): W = left + 1 keys including self.
    ``_sized_by``: the caller's argument the capacity comes from (``make_cache``: window), named when
    the pool is beyond the work budget.
    """

    def __init__(self, num_kv_heads, head_dim, v_head_dim=None, *, batch=1, capacity: int,
                 _sized_by: str = "capacity"):
        super().__init__(num_kv_heads, head_dim, v_head_dim, batch=batch)
        self.capacity = positive_int(capacity, _sized_by)
        names = f"{_sized_by}, batch, num_kv_heads, head_dim, v_head_dim"
        self.k = zero_pool((self.B, self.Hkv, self.capacity, self.D), names)
        self.v = zero_pool((self.B, self.Hkv, self.capacity, self.Dv), names)
        self.slot_position = np.full(self.capacity, -1, dtype=np.int64)  # -1: empty

    def contents(self):
        held = np.arange(max(0, self.length - self.capacity), self.length)
        slots = held % self.capacity
        assert np.array_equal(self.slot_position[slots], held)  # no stale slot is ever read
        return self.k[:, :, slots], self.v[:, :, slots], held

    def update(self, k, v):
        k, v = cache_kv(k, v, self.B, self.Hkv, self.D, self.Dv)
        old_k, old_v, _ = self.contents()
        n = k.shape[2]
        pos = np.arange(self.length, self.length + n)
        keep = slice(max(0, n - self.capacity), n)  # only the last `capacity` tokens survive
        slots = pos[keep] % self.capacity
        self.k[:, :, slots], self.v[:, :, slots] = k[:, :, keep], v[:, :, keep]
        self.slot_position[slots] = pos[keep]
        self.length += n
        return np.concatenate([old_k, k], axis=2), np.concatenate([old_v, v], axis=2)


def make_cache(kind: str, num_kv_heads: int, head_dim: int, v_head_dim=None, *, batch=1, window=None,
               block_size: int = 16, num_blocks: int | None = None) -> KVCache:
    """A cache of ``kind`` in CACHE_KINDS; "ring" takes its capacity from ``window = (left, 0)``."""
    choice(kind, "kind", CACHE_KINDS)
    if kind == "contiguous":
        return ContiguousCache(num_kv_heads, head_dim, v_head_dim, batch=batch)
    if kind == "paged":
        return PagedCache(num_kv_heads, head_dim, v_head_dim, batch=batch, block_size=block_size,
                          num_blocks=64 if num_blocks is None else num_blocks)
    if kind == "ring":
        return RingCache(num_kv_heads, head_dim, v_head_dim, batch=batch, capacity=ring_window(window) + 1,
                         _sized_by="window")


def decode_step(q, k, v, cache: KVCache, *, window=None, rope=None, scale=None, align: str = "bottom_right"):
    """One decoding step: n new tokens' q (B, Hq, n, D), k, v (B, Hkv, n, D/Dv) -> out (B, Hq, n, Dv).

    ``rope``: None or apply_rope keywords (layout, rotary_dim, base, scaling); q and k
    are rotated at their absolute positions cache.length + i before k is cached.
    ``window``: None or (left, 0). ``align`` is "bottom_right" (what makes decoding
    exact); "top_left" is accepted only to demonstrate that it is wrong.
    """
    q, k, v, left, scale = step_inputs(q, k, v, cache, KVCache, RingCache, window, align, scale)
    if rope is not None:  # checked in full before the cache is touched
        rope = check_rope_kwargs(rope, q.shape[3])
    return _step(q, k, v, cache, left, rope, scale, align)


def _step(q, k, v, cache: KVCache, left, rope, scale, align: str):
    """``decode_step`` of checked arguments: RoPE at the absolute positions, store, attend (module docstring)."""
    B, Hq, n, D = q.shape
    if rope is not None:
        pos = np.arange(cache.length, cache.length + n)
        q, k = apply_rope(q, pos, **rope), apply_rope(k, pos, **rope)
    if isinstance(cache, ContiguousCache):  # views of its buffers; key_max bounds |K|
        K, V = cache._append(k, v)
        key_max = cache.key_max
    else:
        K, V = cache.update(k, v)
        key_max = float(np.abs(K).max(initial=0.0))
    span = K.shape[2] if left is None else min(K.shape[2], n + left)  # the keys some new query sees
    s = 1.0 / math.sqrt(D) if scale is None else scale
    if (align == "bottom_right" and n <= K.shape[2] and 0 < B * Hq * n * span * (D + V.shape[3]) < MIN_PARALLEL_WORK
            and _plain_range(q, key_max, s)):  # K holds the new keys (so no row is fully masked); one thread's work
        return _attend(q, K, V, left, s)
    return flash_attention(q, K, V, block_q=PREFILL_BLOCK, block_k=PREFILL_BLOCK, causal=True,
                           window=None if left is None else (left, 0), scale=scale, align=align)[0]


def _plain_range(q, key_max: float, scale: float) -> bool:
    """True where no partial sum of scale * <q_i, k_j> can leave float64's range: with e(x) the binary
    exponent of x (x < 2^e(x)), e(max|q|) + e(max|k|) + e(max(scale, 1)) + ceil(log2 D) <= 1000, the
    test of ``refimpl.attention`` for its plain GEMM path (``key_max``: max|k| over the cache's keys, or a bound)."""
    e = lambda x: math.frexp(x)[1] if x > 0 else 0  # noqa: E731
    return e(float(np.abs(q).max())) + e(key_max) + e(max(scale, 1.0)) + math.ceil(math.log2(q.shape[3])) <= 1000


def _attend(q, K, V, left, scale: float):
    """out (B, Hq, n, Dv) of the n new queries over the cache's keys K (B, Hkv, Lk, D) and V, in one pass.

    Query i sits at position p_i = Lk - n + i (bottom-right) and sees keys p_i - left .. p_i (0 .. p_i
    without a window), itself at least. Keys before lo = Lk - n - left are hidden from every query and
    are not read. The G = Hq / Hkv query heads of kv head h are the rows of one GEMM with K[h] (GQA):

        s = scale * q K^T,   s = -inf where hidden,   P = exp(s - max s) / sum exp(s - max s),   out = P V

    the formula and order of operations of ``refimpl.attention``, for scores in its plain range."""
    B, Hq, n, D = q.shape
    Hkv, Lk, G = K.shape[1], K.shape[2], Hq // K.shape[1]
    if left is not None and left >= Lk:  # a window reaching past the cache's start hides nothing (p - left: no int64)
        left = None
    lo = 0 if left is None else max(0, Lk - n - left)
    s = np.matmul(q.reshape(B, Hkv, G * n, D), K[:, :, lo:].swapaxes(-1, -2))  # <q_i, k_j>, (B, Hkv, G n, Lk - lo)
    s *= scale
    if n > 1:  # within the span, query i still sees only keys p_i - left .. p_i
        p, j = np.arange(Lk - n, Lk)[:, None], np.arange(lo, Lk)
        hidden = (j > p) if left is None else (j > p) | (j < p - left)
        s.reshape(B, Hkv, G, n, Lk - lo)[..., hidden] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    P = exp(s, out=s)
    P /= P.sum(axis=-1, keepdims=True)
    return np.matmul(P, V[:, :, lo:]).reshape(B, Hq, n, V.shape[3])  # out = P V


def decode(q, k, v, cache: KVCache, *, chunks, window=None, rope=None, scale=None):
    """Feed the whole sequence through ``cache`` in ``chunks`` (lengths summing to L); concatenate the outputs.

    Equals ``attention(RoPE(q), RoPE(k), v, causal=True, window=window)`` over the
    whole sequence (positions 0 .. L-1) for every cache kind.
    """
    q, k, v, chunks = sequence_inputs(q, k, v, chunks)  # q, k, v checked here, once
    q, k, v, left, scale = step_arguments(q, k, v, cache, KVCache, RingCache, window, "bottom_right", scale)
    if rope is not None:
        rope = check_rope_kwargs(rope, q.shape[3])
    outs, s = [], 0
    for c in chunks:
        sl = slice(s, s + c)
        outs.append(_step(q[:, :, sl], k[:, :, sl], v[:, :, sl], cache, left, rope, scale, "bottom_right"))
        s += c
    return np.concatenate(outs, axis=2)


def prefill_reference(q, k, v, *, window=None, rope=None, scale=None):
    """Full causal attention over the whole sequence with RoPE at positions 0 .. L-1 (what decode must equal)."""
    q, k = self_attention_inputs(q, k, one_head_dim=True)
    left = causal_window(window)
    if rope is not None:
        pos = np.arange(q.shape[2])
        rope = check_rope_kwargs(rope, q.shape[3])
        q, k = apply_rope(q, pos, **rope), apply_rope(k, pos, **rope)
    return attention(q, k, v, causal=True, window=None if left is None else (left, 0), scale=scale)[0]


__all__ = [
    "CACHE_KINDS", "ContiguousCache", "KVCache", "PagedCache", "RingCache",
    "decode", "decode_definition", "decode_step", "make_cache", "prefill_reference",
]
