"""Fuzz recipes for the methods of the public classes (names "methods.<Class>.<method>").

The public-callable recipes construct an object and call it; these call the methods a user
calls afterwards (Mask.tile / count / row_counts / __call__, counts at lengths in the band beyond
the budget (closed forms), BigBird.block_layout, the
PagedCache operations, MacCounter.add, CollapseResult.final_loads, GlobalMask.visible),
with the arguments broken one at a time by the engine like any other. Stateful methods
carry the aliasing oracle of their object (``twin_state_check``): a caller writing into
what a method returned leaves the object as an untouched twin.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from refimpl import block as B
from refimpl import kv_cache as KV
from refimpl import losses as LS
from refimpl import masks as M
from refimpl.distributed import sharding as SH

from .contract_recipes import R, Recipe, arr, scribble, twin_state_check

small = st.integers(0, 6)


def _mask(draw, L):
    """One mask of each construction family, valid for (L, L)."""
    kind = draw(st.sampled_from(["causal", "window", "strided", "dilated", "prefix", "bigbird", "blocksparse",
                                 "document", "global", "dsa"]))
    if kind == "causal":
        return M.Causal(draw(st.sampled_from(M.ALIGNMENTS)))
    if kind == "window":
        return M.SlidingWindow(draw(st.none() | small), draw(st.none() | small))
    if kind == "strided":
        return M.Strided(draw(st.integers(1, 3)))
    if kind == "dilated":
        return M.Dilated(draw(small), draw(st.integers(1, 3)))
    if kind == "prefix":
        return M.PrefixLM(draw(small))
    if kind == "bigbird":  # partial last blocks, global and random blocks: every term of the closed-form count
        return M.BigBird(draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 5])), draw(st.integers(0, 2)),
                         draw(st.integers(0, 3)), seed=draw(small))
    if kind == "blocksparse":
        bq, bk = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        return M.BlockSparse(np.random.default_rng(draw(small)).random((L + 1, L + 1)) < 0.5, bq, bk)
    if kind == "dsa":
        return M.DSA(draw(small), draw(st.integers(1, 3)), draw(st.lists(small, max_size=2)),
                     draw(st.sampled_from(M.ALIGNMENTS)))
    if kind == "document":
        return M.Document(np.sort(np.random.default_rng(draw(small)).integers(0, 3, size=L)))
    return M.GlobalTokens(draw(st.lists(small, max_size=2)))


def _square(draw):
    L = draw(small)
    return L, _mask(draw, L)


def _tile_args(draw):
    L, m = _square(draw)
    q0, k0 = draw(st.integers(0, L)), draw(st.integers(0, L))
    return dict(mask=m, q_start=q0, q_stop=draw(st.integers(q0, L)), k_start=k0, k_stop=draw(st.integers(k0, L)),
                Lq=L, Lk=L)


def _tile_oracle(kw, result):
    """A tile is the block of the materialised mask (checked where the mask is small)."""
    if (kw["Lq"] + 1) * (kw["Lk"] + 1) > 10**4:
        return
    full = kw["mask"].materialize(kw["Lq"], kw["Lk"])
    assert np.array_equal(result, full[kw["q_start"]:kw["q_stop"], kw["k_start"]:kw["k_stop"]]), "tile != block"


R["methods.Mask.tile"] = Recipe(
    _tile_args, dict(q_start="count", q_stop="count", k_start="count", k_stop="count", Lq="count", Lk="count"),
    call=lambda fn, kw: kw["mask"].tile(kw["q_start"], kw["q_stop"], kw["k_start"], kw["k_stop"], kw["Lq"], kw["Lk"]),
    oracle=_tile_oracle)


def _counts_oracle(kw, result):
    """count and row_counts agree with the materialised mask (closed forms included)."""
    rows, total = result
    if (kw["Lq"] + 1) * (kw["Lk"] + 1) > 10**4:
        return
    full = kw["mask"].materialize(kw["Lq"], kw["Lk"])
    assert np.array_equal(rows, full.sum(axis=1)) and total == int(full.sum()), "counts != materialised counts"


R["methods.Mask.count"] = Recipe(
    lambda draw: (lambda L, m: dict(mask=m, Lq=L, Lk=L))(*_square(draw)), dict(Lq="count", Lk="count"),
    call=lambda fn, kw: (kw["mask"].row_counts(kw["Lq"], kw["Lk"]), kw["mask"].count(kw["Lq"], kw["Lk"])),
    oracle=_counts_oracle)


# the band between "fits in memory" and "refused": lengths far beyond the fuzz's 64 MiB budget, where a
# count must be a closed form (it returns) and never a materialisation (refused) or an allocation per row
BAND_LENGTHS = [10**9 + 7, 2**40, 2**53 + 1, 2**62]


def _count_at_scale_args(draw):
    """A closed-form mask at a length in the band (or small, where the oracle materialises it)."""
    L = draw(st.sampled_from(BAND_LENGTHS) | st.integers(0, 12))
    kind = draw(st.sampled_from(["causal", "window", "strided", "dilated", "prefix", "bigbird", "blocksparse",
                                 "global", "dsa", "full"]))
    align = draw(st.sampled_from(M.ALIGNMENTS))
    if kind == "bigbird":
        block = draw(st.integers(1, 3)) if L <= 12 else draw(st.sampled_from([64, 2**20, L]))
        if L > 12:  # whole blocks (the draw's replay, needed only for a partial last block, is budgeted)
            L = max(block, L - L % block)
        m = M.BigBird(block, draw(st.sampled_from([1, 3, 5])), draw(st.integers(0, 2)), draw(st.integers(0, 3)),
                      seed=draw(small))
    elif kind == "blocksparse":
        nb = draw(st.integers(1, 3))
        block = -(-L // nb) or 1
        m = M.BlockSparse(np.random.default_rng(draw(small)).random((nb + 1, nb + 1)) < 0.5, block, block)
    elif kind == "global":
        m = M.GlobalTokens(draw(st.lists(st.integers(0, 20) | st.sampled_from([max(L - 1, 0), L // 2]), max_size=3)), align)
    elif kind == "dsa":
        m = M.DSA(draw(st.integers(0, 300)), draw(st.integers(1, 70)), draw(st.lists(st.integers(0, 20), max_size=3)),
                  align)
    else:
        m = {"causal": lambda: M.Causal(align), "full": M.Full, "window": lambda: M.SlidingWindow(draw(small), draw(small)),
             "strided": lambda: M.Strided(draw(st.integers(1, 3))), "prefix": lambda: M.PrefixLM(draw(small)),
             "dilated": lambda: M.Dilated(draw(small), draw(st.integers(1, 3)))}[kind]()
    return dict(mask=m, Lq=L, Lk=L)


def _count_at_scale_oracle(kw, result):
    """Equal to the materialised count where that is small; within [0, Lq Lk] always."""
    Lq, Lk = int(kw["Lq"]), int(kw["Lk"])  # NumPy scalars among the band's lengths: exact products
    assert isinstance(result, int) and 0 <= result <= Lq * Lk, f"count {result!r} out of [0, Lq Lk]"
    if Lq <= 12 and Lk <= 12:
        assert result == int(kw["mask"].materialize(kw["Lq"], kw["Lk"]).sum()), "count != materialised count"


R["methods.Mask.count_at_scale"] = Recipe(
    _count_at_scale_args, dict(Lq="count", Lk="count"),
    call=lambda fn, kw: kw["mask"].count(kw["Lq"], kw["Lk"]), oracle=_count_at_scale_oracle)


def _at_args(draw):
    L, m = _square(draw)
    L = max(L, 1)
    idx = st.lists(st.integers(0, L - 1), max_size=4)
    return dict(mask=m if not isinstance(m, (M.Document, M.BlockSparse)) else M.Causal(),
                i=np.array(draw(idx), dtype=np.int64)[:, None], j=np.array(draw(idx), dtype=np.int64)[None, :],
                Lq=L, Lk=L)


R["methods.Mask.__call__"] = Recipe(
    _at_args, dict(i="int_array", j="int_array", Lq="count", Lk="count"),
    call=lambda fn, kw: kw["mask"](kw["i"], kw["j"], kw["Lq"], kw["Lk"]))


def _block_layout(fn, kw):
    """block_layout, twice on one mask: the second call is not changed by writing into the first."""
    n = kw["n_blocks"]
    twin_state_check(lambda: M.BigBird(kw["block"], seed=kw["seed"]), lambda m: m.block_layout(n),
                     lambda m: m.block_layout(n), "BigBird.block_layout")
    return M.BigBird(kw["block"], seed=kw["seed"]).block_layout(n)


R["methods.BigBird.block_layout"] = Recipe(
    lambda draw: dict(block=draw(st.integers(1, 3)), seed=draw(small), n_blocks=draw(small)),
    dict(n_blocks="count"), call=_block_layout)


def _paged_args(draw):
    Hkv, D, n = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(small)
    return dict(num_kv_heads=Hkv, head_dim=D, block_size=draw(st.integers(1, 3)),
                num_blocks=draw(st.integers(2 * n + 2, 2 * n + 6)),  # the sequence and its fork's copies
                seq=0, k=arr(draw, (Hkv, n, D)), v=arr(draw, (Hkv, n, D)))


def _paged_ops(fn, kw):
    """append, fork, append to the fork (copy-on-write), gather both; the gathered copies are the
    caller's (writing into them leaves the pool as an untouched twin)."""
    def make():
        return KV.PagedCache(kw["num_kv_heads"], kw["head_dim"], block_size=kw["block_size"],
                             num_blocks=kw["num_blocks"])

    def run(c):
        c.append(kw["seq"], kw["k"], kw["v"])
        f = c.fork(kw["seq"])
        c.append(f, kw["k"], kw["v"])
        return [c.gather(kw["seq"]), c.gather(f), c.block_table(f)]

    twin_state_check(make, run, lambda c: [c.gather(0), c.gather(1)], "PagedCache.append/fork/gather")
    c = make()
    out = run(c)
    return out, c.blocks_in_use


R["methods.PagedCache.append"] = Recipe(_paged_args, dict(seq="count", k="array", v="array"), call=_paged_ops)


R["methods.MacCounter.add"] = Recipe(
    lambda draw: dict(n=draw(st.integers(0, 10**12))), dict(n="count"),
    call=lambda fn, kw: (lambda c: (c.add(kw["n"]), c.total)[1])(B.MacCounter()))

R["methods.CollapseResult.final_loads"] = Recipe(
    lambda draw: dict(loads=arr(draw, (draw(st.integers(1, 5)), 3), 0, 1), last=draw(st.integers(1, 8))),
    dict(last="count"), call=lambda fn, kw: LS.CollapseResult(kw["loads"]).final_loads(kw["last"]))


def _visible_args(draw):
    L = draw(st.integers(1, 8))
    pos = st.lists(st.integers(0, L - 1), max_size=4)
    return dict(L=L, causal=draw(st.booleans()), qpos=draw(pos), kpos=draw(pos))


R["methods.GlobalMask.visible"] = Recipe(
    _visible_args, dict(qpos="index_list", kpos="index_list"),
    call=lambda fn, kw: SH.GlobalMask(kw["L"], causal=kw["causal"]).visible(kw["qpos"], kw["kpos"]))


