"""FlashAttention: exact attention computed tile by tile, never materialising Lq x Lk.

The notes (docs/notes.md#flash-tiling) claim that tiling plus online softmax computes *the same*
output as standard attention in O(L) memory. This module is that claim made
executable, for every mask, window, alignment, GQA layout, softcap, bias and
dropout that ``refimpl.attention`` accepts: scores, masks and the order of
operations come from the very same ``refimpl._problem._Setup`` as the naive path,
only evaluated one (B_r x B_c) tile at a time.

Tiles. Queries are cut into T_r = ceil(Lq / B_r) tiles Q_i (``block_q`` = B_r
rows, the last one possibly shorter), keys and values into T_c = ceil(Lk / B_c)
tiles K_j, V_j (``block_k`` = B_c). Any positive sizes work; they need not
divide the lengths. Every array the loops hold is O(B_r x B_c) (a tile of
scores) or O(L) (per-row statistics, the output).

FA2 (Dao 2023, "FlashAttention-2", Algorithm 1; flash-attn
``csrc/flash_attn/src/flash_fwd_kernel.h::compute_attn_1rowblock`` with
``softmax.h::Softmax::softmax_rescale_o``). Query tiles outer, key tiles inner;
the accumulator stays unnormalised and normalisation is deferred to the end:

    for each query tile i:  m = -inf, l = 0, acc = 0          (on chip)
        for each key tile j:
            S    = scores(Q_i, K_j)                             (B_r x B_c)
            m'   = max(m, rowmax(S))
            P~   = exp(S - m')
            l    = exp(m - m') l + rowsum(P~)
            acc  = diag(exp(m - m')) acc + (P~ * Z) V_j        Z = dropout keep / (1 - p)
            m    = m'
        O_i = diag(l)^-1 acc,   lse_i = m + log l               written once

FA1 (Dao et al. 2022, "FlashAttention", Algorithm 1; the update the notes
write in docs/notes.md#flash-tiling). Key tiles outer, query tiles inner; O, l, m live
in slow memory and are read and written back at every step, and O is kept
normalised at every step:

    O = 0, l = 0, m = -inf                                       (slow memory)
    for each key tile j:
        for each query tile i:
            S    = scores(Q_i, K_j)
            m~   = rowmax(S),  P~ = exp(S - m~),  l~ = rowsum(P~)  (tile-local)
            m'   = max(m_i, m~),  l' = exp(m_i - m') l_i + exp(m~ - m') l~
            O_i  = diag(l')^-1 (diag(l_i) exp(m_i - m') O_i + exp(m~ - m') (P~ * Z) V_j)
            l_i, m_i = l', m'
    lse = m + log l

Both give ``refimpl.attention``'s (out, lse) up to rounding (docs/errata.md#e12: the
notes show only the FA1 form; the spec carries both and tests them equal).
Conventions are those of ``refimpl.attention``: a fully masked row gives
out 0 and lse -inf (its m stays -inf and its l 0; ``exp(-inf - (-inf))`` is 0
here, never NaN); lse is the natural-log log-sum-exp of the final scores and
ignores dropout.

Block skipping. A tile (i, j) whose mask (``mask`` & ``causal`` & ``window``)
hides every entry, for every batch entry and head, is never computed: no
scores, no loads. This generalises flash-attn's ``n_block_min`` /
``n_block_max`` range for causal and local attention
(``flash_fwd_kernel.h::compute_attn_1rowblock``) to any mask, as FlexAttention's
block masks do. Skipping cannot change a result: an all-hidden tile leaves
(m, l, acc) exactly as they were. ``skip_masked_tiles=False`` computes every
tile (for checking that claim); entries hidden only by a ``-inf`` bias never
cause a skip. The count is reported by ``return_stats=True`` (see FlashStats).

Backward: ``refimpl.flash_backward`` (FA2's Algorithm 2), re-exported here.

Threads. FA2's thread blocks (forward: a query tile of one batch entry and
a few kv heads, ``_forward_fa2``) and the backward's (batch, kv head)
pairs share no output, so they run concurrently on CPU threads
(``refimpl._parallel``), each computing exactly what it computes alone: the
results and the statistics are the same bits for any thread count. A tile
the mask hides only in part (a causal diagonal, a window's edge) is computed
in strips of rows, each over the span of keys its rows can see
(``_row_strips``); hidden entries would contribute exactly 0.

Arithmetic. Each tile's products are BLAS GEMMs with the G query heads of a
kv head folded into the rows (see ``refimpl.sdpa``); the scale is folded into
Q_i once per thread block (``_Setup.scaled_q``: within the same score bound)
and exp(S - m') overwrites the score tile in place, so a tile costs the two
GEMMs plus four passes (max, subtract, exp, sum), and the mask pass only on
the key columns a tile's mask cuts. m' = -inf (nothing visible yet) is read as 0 in the shift, so
exp(-inf - m') is exp(-inf) = 0, never NaN (``refimpl.softmax._exp_shift``).

I/O instrumentation. Every access to Q, K, V, O, dO, dQ, l, m, lse and D goes
through a small slow-memory model (``_SlowMemory``) that counts the elements
moved between slow memory (HBM) and on-chip memory (SRAM). Each iteration of
the outer loop is one thread block with its own SRAM: a tile it already holds
is not counted again (FA2 loads Q_i once per query tile, FA1 loads K_j, V_j
once per key tile); everything else is a fresh load. Tiles are loaded on first
use, so a fully skipped row of tiles never loads its Q_i. Mask, bias and
dropout-mask tiles are not counted (flash-attn computes causal/window masks
from indices). GQA: a K/V tile is loaded once for the G query heads that share
it (FlashAttention-3's PackGQA layout). ``refimpl.io_accounting`` gives the
closed-form counts, and the tests check the instrumented counts equal them.
"""

from __future__ import annotations

import numpy as np

from ._exp import exp
from ._parallel import map_blocks
from ._validate import choice, positive_int
from ._problem import _merge_heads
from ._tiled import FlashStats, _check_flag, _pv, _setup, _SlowMemory, _tiles, _TiledSetup  # noqa: F401
from .flash_backward import flash_attention_backward  # noqa: F401  (defined there, part of this module's API)
from .softmax import OnlineSoftmaxState, _exp_shift

VARIANTS = ("fa1", "fa2")


# ----------------------------------------------------------------------------
# statistics of a tiled run


def _check_variant(variant) -> str:
    return choice(variant, "variant", VARIANTS)


def _normalise(acc: np.ndarray, l: np.ndarray) -> np.ndarray:
    """diag(l)^-1 acc, with 0 for rows whose l is 0 (nothing visible)."""
    nonempty = l > 0
    return np.where(nonempty[..., None], acc / np.where(nonempty, l, 1.0)[..., None], 0.0)


# ----------------------------------------------------------------------------
# forward loops


def _row_strips(visible, nq: int, nk: int) -> list[tuple[slice, slice]]:
    """Parts of a tile to compute: the whole tile, or, where the mask hides much of
    it (a causal diagonal, a window's edge), strips of _STRIP rows, each over the
    span of key columns its rows can see (strips that see nothing are left out).

    Hidden entries contribute exactly 0 to l and acc, so leaving them out
    changes no result; computing only the strips is what makes causal cost about
    half of non-causal (the diagonal tiles are otherwise computed in full).
    """
    whole = [(slice(0, nq), slice(0, nk))]
    if visible is None:
        return whole
    seen = visible.reshape(-1, nq, nk)
    seen = seen[0] if len(seen) == 1 else seen.any(axis=0)  # visible for some batch entry and head
    if seen.all():
        return whole
    parts = []
    for r0 in range(0, nq, _STRIP):
        cols = np.flatnonzero(seen[r0:r0 + _STRIP].any(axis=0))
        if cols.size:
            parts.append((slice(r0, min(r0 + _STRIP, nq)), slice(int(cols[0]), int(cols[-1]) + 1)))
    area = sum((r.stop - r.start) * (c.stop - c.start) for r, c in parts)
    return parts if area <= 0.75 * nq * nk else whole


_STRIP = 32  # rows per strip of a partially hidden tile


def _fa2_thread_block(st: _TiledSetup, qs: slice, k_tiles: list, hidden: set, strips: bool):
    """One FA2 thread block: query tile Q_i of one batch entry and a few kv heads against the key tiles.

    ``st`` is that unit (``_Setup.unit``: B = 1, Hkv = the unit's kv heads, the G query
    heads of each folded into the rows of its GEMMs); key tiles whose index is in
    ``hidden`` are skipped, and with ``strips`` a partially hidden tile is computed in
    strips. Returns (memory, m, l, acc): m and l (1, Hkv, G, nq), acc (1, Hkv, G, nq, Dv)
    unnormalised, (m, l, acc) on chip. Rows of a strip (see ``_row_strips``) are
    updated with that strip's keys only, a part (a whole tile or a strip) a few kv
    heads at a time (``_head_groups``); per row and head the update is the one of the
    module docstring.
    """
    mem = _SlowMemory()
    nq = qs.stop - qs.start
    m = np.full((st.B, st.Hkv, st.G, nq), -np.inf)
    l = np.zeros((st.B, st.Hkv, st.G, nq))
    acc = np.zeros((st.B, st.Hkv, st.G, nq, st.Dv))
    Q_scaled = None
    heads = {}  # (first, last + 1) kv head of a group -> (its part of the unit, its query heads)
    for j, ks in enumerate(k_tiles):
        if j in hidden:
            continue  # hidden for every batch entry and head: never loaded, never computed
        visible = st.visible(qs, ks)
        Q_i, K_j, V_j = st.load(mem, qs, ks)  # Q_i loaded once per thread block
        if Q_scaled is None:
            Q_scaled = st.scaled_q(Q_i)  # scale * Q_i, once per thread block (see _Setup.scaled_q)
        nk = ks.stop - ks.start
        parts = _row_strips(visible, nq, nk) if strips else [(slice(0, nq), slice(0, nk))]
        for r, c in parts:
            q_rows, k_cols = _shift(r, qs.start), _shift(c, ks.start)
            for h in _head_groups(st, r.stop - r.start, c.stop - c.start):
                if (h.start, h.stop) not in heads:
                    n = h.stop - h.start
                    heads[h.start, h.stop] = (st if n == st.Hkv else st.unit(0, h.start, n),
                                              slice(h.start * st.G, h.stop * st.G))
                sub, hq = heads[h.start, h.stop]
                vis = None if visible is None else visible[:, hq if visible.shape[1] > 1 else slice(None), r, c]
                S, _ = sub.scores_of(Q_scaled[:, h, :, r], K_j[:, h, c], q_rows, k_cols, vis, q_scaled=True)
                m_r, l_r, acc_r = m[:, h, :, r], l[:, h, :, r], acc[:, h, :, r]  # views: updated in place
                m_new = np.maximum(m_r, np.max(S, axis=-1))  # m' = max(m, rowmax(S))
                shift = np.where(m_new == -np.inf, 0.0, m_new)  # m' = -inf (nothing visible yet) read as 0
                P = exp(np.subtract(S, shift[..., None], out=S), out=S)  # P~ = exp(S - m'), over S's buffer
                alpha = exp(m_r - shift)  # exp(m - m'): rescales what was accumulated so far (0 if m = -inf)
                Z = sub.dropout_scale(q_rows, k_cols)
                l_r *= alpha
                l_r += np.sum(P, axis=-1)  # l = exp(m - m') l + rowsum(P~)
                acc_r *= alpha[..., None]
                acc_r += _pv(P if Z is None else P * Z, V_j[:, h, c])  # acc = diag(exp(m - m')) acc + (P~ * Z) V_j
                m_r[...] = m_new
                del S, P  # one score tile alive at a time: freed before the next is formed
    return mem, m, l, acc


def _shift(part: slice, start: int) -> slice:
    """``part`` of a tile (a slice with explicit bounds) as absolute indices, the tile starting at ``start``."""
    return slice(start + part.start, start + part.stop)


_TILE_BYTES = 2**20  # scores of one step (a part of a tile, a few heads): the passes over it run from a core's L2 (1 MiB on the EPYC of issue 23)


def _heads_per_block(st: _TiledSetup, block_q: int, block_k: int) -> int:
    """kv heads per thread block: as many as keep the scores of its largest step within _TILE_BYTES
    (at least one). Without a mask a step is a whole tile, (heads * G * block_q) x block_k float64.
    Under a mask the block holds as many heads as keep a strip of _STRIP rows within budget: a cut
    tile's strips are small steps whose NumPy calls the heads share, while its whole tiles are taken
    a few heads at a time (``_head_groups``). Measured (one thread, L = 2048, block 512, MHA): a
    diagonal tile with the strips of 8 heads at once costs 0.71 of a whole tile, of 2 heads 0.84-1.05;
    whole tiles cost the same in groups of 1 to 8 MiB of scores, 25% more at 16 MiB (8 heads)."""
    rows = min(block_q, st.Lq) if st.mask.trivial else min(_STRIP, block_q, st.Lq)
    return min(st.Hkv, _heads_within(st, rows, min(block_k, st.Lk)))


def _head_groups(st: _TiledSetup, rows: int, cols: int) -> list[slice]:
    """The unit's kv heads in consecutive groups of ``_heads_within(st, rows, cols)``."""
    n = _heads_within(st, rows, cols)
    return [slice(h, min(h + n, st.Hkv)) for h in range(0, st.Hkv, n)]


def _heads_within(st: _TiledSetup, rows: int, cols: int) -> int:
    """kv heads whose (heads * G * rows) x cols float64 scores fit _TILE_BYTES (at least one)."""
    return max(1, _TILE_BYTES // (8 * st.G * max(1, rows) * max(1, cols)))


def _forward_fa2(st: _TiledSetup, block_q: int, block_k: int, key_range: tuple, skip: bool, state=None):
    """FA2 over the keys in ``key_range`` = (k0, k1): (out, lse, tiles_skipped, grid).

    The thread blocks, one per (batch entry, kv heads, query tile) as in
    flash-attn's grid (one kv head or a few, ``_heads_per_block``: few enough
    that the scores of each step stay in a core's cache for the passes over it,
    enough that the Python of each step is shared by the heads; under a mask the
    steps of a cut tile are strips, and whole tiles go a few heads at a time,
    ``_head_groups``), share no output: they
    run concurrently on CPU threads (``refimpl._parallel``; the last query tiles
    first, as under a causal mask they have the most keys), each computing
    exactly what it would alone.
    With a key range narrower than [0, Lk) this is one split of split-KV
    (flash-attn ``compute_attn_1rowblock_splitkv``): out and lse of attention
    restricted to those keys, under the full problem's mask and alignment.
    ``state``, if given, is a list that receives the final OnlineSoftmaxState
    (m, l), each (B, Hq, Lq), for an exact merge of splits.
    """
    out = np.zeros((st.B, st.Hq, st.Lq, st.Dv))
    lse = np.full((st.B, st.Hq, st.Lq), -np.inf)
    m_all, l_all = (np.full((st.B, st.Hq, st.Lq), -np.inf), np.zeros((st.B, st.Hq, st.Lq))) if state is not None else (None, None)
    q_tiles, k_tiles = _tiles(0, st.Lq, block_q), _tiles(key_range[0], key_range[1], block_k)
    # a tile is skipped when hidden for every batch entry and head (the stats count tiles so)
    hidden = [{j for j, ks in enumerate(k_tiles) if skip and st.hidden(qs, ks)} for qs in q_tiles]
    n = _heads_per_block(st, block_q, block_k)
    units = {(b, h): st.unit(b, h, min(n, st.Hkv - h)) for b in range(st.B) for h in range(0, st.Hkv, n)}

    def thread_block(item):  # each writes its own rows of out and lse, once
        (b, h), i = item
        u, qs = units[b, h], q_tiles[i]
        mem, m, l, acc = _fa2_thread_block(u, qs, k_tiles, hidden[i], skip)
        heads = slice(h * st.G, h * st.G + u.Hq)
        out[b, heads, qs] = mem.store("O", _merge_heads(_normalise(acc, l))[0])  # O_i = diag(l)^-1 acc
        lse[b, heads, qs] = mem.store("lse", _merge_heads(OnlineSoftmaxState(m, l).lse)[0])  # lse_i = m + log l
        if state is not None:
            m_all[b, heads, qs], l_all[b, heads, qs] = _merge_heads(m)[0], _merge_heads(l)[0]
        return mem

    work = st.B * st.Hq * st.Lq * (key_range[1] - key_range[0]) * (st.D + st.Dv)
    items = [(bh, i) for i in reversed(range(len(q_tiles))) for bh in units]
    for mem in map_blocks(thread_block, items, work):
        st.memory.absorb(mem)
    if state is not None:
        state.append(OnlineSoftmaxState(m_all, l_all))
    return out, lse, sum(map(len, hidden)), (len(q_tiles), len(k_tiles))


def _forward_fa1(st: _TiledSetup, block_q: int, block_k: int, skip: bool):
    """FA1 (key tiles outer; O, l, m in slow memory, O normalised at every step)."""
    mem = st.memory
    B, Hkv, G, Lq, Dv = st.B, st.Hkv, st.G, st.Lq, st.Dv
    O = mem.store("O", np.zeros((B, Hkv, G, Lq, Dv)))  # Algorithm 1, line 2: initialise in slow memory
    l = mem.store("l", np.zeros((B, Hkv, G, Lq)))
    m = mem.store("m", np.full((B, Hkv, G, Lq), -np.inf))
    q_tiles, k_tiles = _tiles(0, Lq, block_q), _tiles(0, st.Lk, block_k)
    skipped = 0
    for ks in k_tiles:  # one thread block per key tile
        mem.new_block()
        for qs in q_tiles:
            if skip and st.hidden(qs, ks):
                skipped += 1
                continue
            Q_i, K_j, V = st.load(mem, qs, ks)  # K_j, V_j once per thread block
            S, _ = st.scores_of(Q_i, K_j, qs, ks)
            O_i = mem.load("O", qs, O[..., qs, :])
            l_i = mem.load("l", qs, l[..., qs])
            m_i = mem.load("m", qs, m[..., qs])
            m_t = np.max(S, axis=-1)  # m~: the tile's own row max
            P = _exp_shift(S, m_t[..., None], out=S)  # P~ = exp(S - m~)
            l_t = np.sum(P, axis=-1)
            m_new = np.maximum(m_i, m_t)
            a, b = _exp_shift(m_i, m_new), _exp_shift(m_t, m_new)
            l_new = a * l_i + b * l_t
            Z = st.dropout_scale(qs, ks)
            unnormalised = (l_i * a)[..., None] * O_i + b[..., None] * _pv(P if Z is None else P * Z, V)
            O[..., qs, :] = mem.store("O", _normalise(unnormalised, l_new))
            l[..., qs] = mem.store("l", l_new)
            m[..., qs] = mem.store("m", m_new)
    mem.new_block()  # final pass: lse = m + log l
    rows = slice(0, Lq)
    lse = OnlineSoftmaxState(mem.load("m", rows, m), mem.load("l", rows, l)).lse
    return _merge_heads(O), mem.store("lse", _merge_heads(lse)), skipped, (len(q_tiles), len(k_tiles))


def flash_attention(
    q,
    k,
    v,
    *,
    block_q,
    block_k,
    variant="fa2",
    mask=None,
    causal=False,
    align="bottom_right",
    window=None,
    scale=None,
    softcap=None,
    bias=None,
    dropout_mask=None,
    dropout_p=0.0,
    skip_masked_tiles=True,
    return_stats=False,
):
    """Exact attention computed in (block_q x block_k) tiles. Returns (out, lse).

    Same arguments, shapes, conventions and results as ``refimpl.attention``
    (up to rounding), plus:
      block_q, block_k:   tile sizes B_r, B_c (positive ints; need not divide Lq, Lk).
      variant:            "fa2" (default; query tiles outer, normalisation deferred,
                          Dao 2023) or "fa1" (key tiles outer, output normalised at
                          every step, Dao et al. 2022 / docs/notes.md#flash-tiling).
      skip_masked_tiles:  skip tiles the mask hides entirely (default True); the
                          result is the same either way.
      return_stats:       if True, return (out, lse, FlashStats): the tile grid, the
                          number of skipped tiles and the elements read/written per tensor.
    Never materialises an (Lq, Lk) array: the largest temporary is one tile of
    scores, (B, Hq, block_q, block_k).
    """
    variant = _check_variant(variant)
    skip = _check_flag(skip_masked_tiles, "skip_masked_tiles")
    _check_flag(return_stats, "return_stats")
    st = _setup(q, k, v, block_q, block_k, dict(
        mask=mask, causal=causal, align=align, window=window, scale=scale, softcap=softcap,
        bias=bias, dropout_mask=dropout_mask, dropout_p=dropout_p))
    if variant == "fa2":
        out, lse, skipped, grid = _forward_fa2(st, block_q, block_k, (0, st.Lk), skip)
    else:
        out, lse, skipped, grid = _forward_fa1(st, block_q, block_k, skip)
    out = st.unshift(out)
    if return_stats:
        return out, lse, st.stats(grid, skipped)
    return out, lse


def tile_grid(Lq: int, Lk: int, block_q: int, block_k: int) -> tuple[int, int]:
    """(T_r, T_c) = (ceil(Lq / block_q), ceil(Lk / block_k))."""
    Lq, Lk = positive_int(Lq, "Lq", allow_zero=True), positive_int(Lk, "Lk", allow_zero=True)
    block_q, block_k = positive_int(block_q, "block_q"), positive_int(block_k, "block_k")
    return -(-Lq // block_q), -(-Lk // block_k)

