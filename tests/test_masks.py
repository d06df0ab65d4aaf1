"""refimpl.masks: closed-form counts against materialised ones, composition, conventions, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl import masks as M

lengths = st.integers(0, 40)
side = st.one_of(st.none(), st.integers(0, 45))
aligns = st.sampled_from(M.ALIGNMENTS)


def materialised_count(mask, Lq, Lk):
    return int(mask.materialize(Lq, Lk).sum())


def assert_counts_match(mask, Lq, Lk):
    dense = mask.materialize(Lq, Lk)
    assert mask.count(Lq, Lk) == int(dense.sum()), (mask, Lq, Lk)
    assert np.array_equal(mask.row_counts(Lq, Lk), dense.sum(axis=1)), (mask, Lq, Lk)


@given(Lq=lengths, Lk=lengths, left=side, right=side, align=aligns)
def test_window_closed_form_count_equals_materialised(Lq, Lk, left, right, align):
    assert_counts_match(M.SlidingWindow(left, right, align), Lq, Lk)


@given(Lq=lengths, Lk=lengths, align=aligns)
def test_causal_closed_form_count_equals_materialised(Lq, Lk, align):
    assert_counts_match(M.Causal(align), Lq, Lk)


@given(Lq=lengths, Lk=lengths, w=st.integers(0, 12), s=st.integers(1, 9),
       g=st.lists(st.integers(0, 45), max_size=3), align=aligns)
def test_dsa_closed_form_count_equals_materialised(Lq, Lk, w, s, g, align):
    assert_counts_match(M.DSA(w, s, g, align), Lq, Lk)


@given(Lq=lengths, Lk=lengths, g=st.lists(st.integers(0, 45), max_size=4), align=aligns)
def test_global_tokens_closed_form_count_equals_materialised(Lq, Lk, g, align):
    assert_counts_match(M.GlobalTokens(g, align), Lq, Lk)


@given(Lq=lengths, Lk=lengths, data=st.data())
def test_document_closed_form_count_equals_materialised(Lq, Lk, data):
    ids = st.integers(-2, 3)
    q = data.draw(st.lists(ids, min_size=Lq, max_size=Lq))
    k = data.draw(st.lists(ids, min_size=Lk, max_size=Lk))
    assert_counts_match(M.Document(np.array(q, dtype=np.int64), np.array(k, dtype=np.int64)), Lq, Lk)


@given(Lq=lengths, Lk=lengths, bq=st.integers(1, 7), bk=st.integers(1, 7), seed=st.integers(0, 99),
       extra=st.integers(0, 2))
def test_block_sparse_closed_form_count_equals_materialised(Lq, Lk, bq, bk, seed, extra):
    shape = (-(-Lq // bq) + extra, -(-Lk // bk) + extra)  # a layout larger than needed reads its top-left part
    layout = np.random.default_rng(seed).random(shape) < 0.5
    assert_counts_match(M.BlockSparse(layout, bq, bk), Lq, Lk)


@given(L=lengths, block=st.integers(1, 7), wb=st.sampled_from([1, 3, 5, 9]), gb=st.integers(0, 4),
       rb=st.integers(0, 5), seed=st.integers(0, 9), cached=st.booleans())
def test_bigbird_closed_form_count_equals_materialised(L, block, wb, gb, rb, seed, cached):
    m = M.BigBird(block, wb, gb, rb, seed)
    if cached:  # the count reads a layout built before, or replays the draw: the same answer
        m.block_layout(-(-L // block))
    assert_counts_match(m, L, L)


@given(data=st.data(), causal=st.booleans(), align=aligns, window=st.none() | st.tuples(side, side))
def test_varlen_closed_form_count_equals_materialised(data, causal, align, window):
    n = data.draw(st.integers(1, 4))
    lq = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    lk = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    cq, ck = np.concatenate([[0], np.cumsum(lq)]), np.concatenate([[0], np.cumsum(lk)])
    m = M.Varlen(cq, ck, causal=causal, align=align, window=window)
    assert_counts_match(m, int(cq[-1]), int(ck[-1]))


LONG = 10**9


@pytest.mark.parametrize("mask, exact", [
    # G_q Lk + (Lq - G_q) G_k with G_q = G_k = 3
    (M.GlobalTokens([0, 5, 10**8]), 3 * LONG + (LONG - 3) * 3),
    # one 10**9 x 10**9 block visible of a (1, 3) layout with key blocks of 4e8: Lq Lk
    (M.BlockSparse(np.ones((1, 3), bool), LONG, 4 * 10**8), LONG * LONG),
    # equal blocks of 64 (e = 0): block^2 sum_a min(n, det(a) + 1); n = 15625000 blocks, rows 0 sees n,
    # rows 1 and n - 1 see 3 + 1, the others 4 + 1 (window 3, global column 0, one random block)
    (M.BigBird(64), 64**2 * (15625000 + 2 * 4 + (15625000 - 3) * 5)),
    # a partial last block without random blocks: closed form too (n = 142857143, last block 6 of 7)
    (M.BigBird(7, 3, 1, 0), None),
    # window 256 + 1 keys, then every 64th key further back: DSA(256, 64) per row
    (M.DSA(256, 64, [0, 3, 7]), None),
])
def test_closed_form_counts_at_a_billion_tokens_allocate_nothing(monkeypatch, mask, exact):
    """At 10**9 tokens under a 1 MiB work budget: a count that allocated per row would be refused.
    (Document is defined by its Lq + Lk segment ids, so its count reads them once: tested above.)"""
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(2**20))
    got = mask.count(LONG, LONG)
    if exact is not None:
        assert got == exact
    assert 0 < got <= LONG * LONG


def test_predicate_counts_are_budgeted_not_closed_form(monkeypatch):
    """A predicate (and a composition) has no closed form: its count materialises within the budget."""
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(2**20))
    for m in (M.predicate(lambda i, j, Lq, Lk: i >= j), M.Causal() & M.GlobalTokens([0])):
        assert m.count(100, 100) == int(m.materialize(100, 100).sum())
        with pytest.raises(ValueError, match=r"^Lq, Lk: expected work within the budget"):
            m.count(LONG, LONG)


def test_closed_form_check_catches_an_off_by_one_count():
    """Meta-test: the count comparison above rejects a closed form that is one key too wide."""

    class OffByOne(M.SlidingWindow):
        def row_counts(self, Lq, Lk):
            return super().row_counts(Lq, Lk) + (np.arange(Lq) >= self.left)

    with pytest.raises(AssertionError):
        assert_counts_match(OffByOne(3, 0), 12, 12)


def test_window_count_at_scale_without_materialising():
    # 1e6 x 1e6 would be a terabyte materialised; the closed form is O(1).
    n, W = 10**6, 4096
    m = M.SlidingWindow(W - 1, 0)
    assert m.count(n, n) == W * (W + 1) // 2 + W * (n - W)


def test_alignment_offsets():
    assert M.offset(2, 5, "bottom_right") == 3 and M.offset(2, 5, "top_left") == 0
    # flash-attn's docstring example: seqlen_q = 2, seqlen_k = 5, causal, bottom-right
    assert M.Causal().materialize(2, 5).astype(int).tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert M.Causal("top_left").materialize(2, 5).astype(int).tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    # Lq > Lk bottom-right: the first Lq - Lk rows see nothing
    assert M.Causal().materialize(5, 2).sum(axis=1).tolist() == [0, 0, 0, 1, 2]


def test_window_conventions():
    assert M.window_from_keys_including_self(4) == (3, 0)
    assert M.window_from_seed_mw(4) == (4, 0)
    rows = M.SlidingWindow(*M.window_from_keys_including_self(4)).materialize(10, 10)[-1]
    assert rows.sum() == 4 and rows[-4:].all()
    assert (M.SlidingWindow(*M.window_from_seed_mw(4)) & M.Causal()).materialize(10, 10)[-1].sum() == 5


def test_seed_inverted_causal_mask_leaks_the_future():
    """docs/errata.md#e1: the notes' mask shows keys j > i and hides the diagonal."""
    bad = M.seed_inverted_causal().materialize(4, 4)
    good = M.Causal().materialize(4, 4)
    assert bad[0, 3] and not good[0, 3]  # query 0 sees the last key: a leak of the future
    assert not bad.diagonal().any() and good.diagonal().all()
    assert not bad[-1].any()  # the last query sees nothing at all


@given(Lq=st.integers(1, 20), Lk=st.integers(1, 20), data=st.data())
def test_composition_laws(Lq, Lk, data):
    pool = [M.Causal(), M.SlidingWindow(2, 1), M.Strided(3), M.Dilated(2, 2), M.PrefixLM(3), M.GlobalTokens([1, 5]),
            M.DSA(3, 4)]
    a, b = data.draw(st.sampled_from(pool)), data.draw(st.sampled_from(pool))
    A, B = a.materialize(Lq, Lk), b.materialize(Lq, Lk)
    assert np.array_equal((a & b).materialize(Lq, Lk), A & B)
    assert np.array_equal((a | b).materialize(Lq, Lk), A | B)
    assert np.array_equal((~a).materialize(Lq, Lk), ~A)
    q0, q1, k0, k1 = min(2, Lq), min(7, Lq), min(1, Lk), min(6, Lk)
    assert np.array_equal(a.tile(q0, q1, k0, k1, Lq, Lk), A[q0:q1, k0:k1])


def test_mask_kinds_definitions():
    n = 12
    d = M.Dilated(2, 3).materialize(n, n)
    assert np.flatnonzero(d[9]).tolist() == [3, 6, 9]
    s = M.Strided(4).materialize(n, n)
    assert np.flatnonzero(s[9]).tolist() == [1, 5, 9]
    p = M.PrefixLM(3).materialize(n, n)
    assert p[0, :3].all() and not p[0, 3:].any() and p[5, :6].all() and not p[5, 6:].any()
    g = M.GlobalTokens([0]).materialize(n, n)
    assert g[:, 0].all() and g[0, :].all() and g.sum() == 2 * n - 1
    doc = M.Document([0, 0, 1, 1, 1]).materialize(5, 5)
    assert doc.astype(int).tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    layout = np.array([[1, 0], [1, 1]], dtype=bool)
    bs = M.BlockSparse(layout, 2, 3).materialize(4, 6)
    assert bs[:2, 3:].sum() == 0 and bs[2:, :].all() and bs[:2, :3].all()


def test_dsa_seed_example_neighbourhood():
    """docs/notes.md#dsa: t = 1000, w = 256, s = 64, global {0}."""
    row = M.DSA(256, 64).materialize(1001, 1001)[1000]
    vis = np.flatnonzero(row)
    assert vis[vis >= 744].tolist() == list(range(744, 1001))  # 257 keys, docs/errata.md#e6
    assert vis[(vis > 0) & (vis < 744)].tolist() == [40, 104, 168, 232, 296, 360, 424, 488, 552, 616, 680]
    assert vis[0] == 0 and len(vis) == 269


def test_dual_chunk_branches():
    local, strided = M.dual_chunk_masks(window=4, stride=3)
    L = local.materialize(10, 10)
    S = strided.materialize(10, 10)
    assert np.flatnonzero(L[9]).tolist() == [6, 7, 8, 9]
    assert np.flatnonzero(S[9]).tolist() == [0, 3, 6, 9]
    assert np.flatnonzero(S[4]).tolist() == [0, 3]


def test_bigbird_is_deterministic_in_its_seed_and_block_structured():
    a = M.BigBird(block=4, window_blocks=3, global_blocks=1, random_blocks=1, seed=7)
    b = M.BigBird(block=4, window_blocks=3, global_blocks=1, random_blocks=1, seed=7)
    A = a.materialize(32, 32)
    assert np.array_equal(A, b.materialize(32, 32))
    blocks = A.reshape(8, 4, 8, 4)
    assert (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all()  # whole blocks on or off
    layout = a.block_layout(8)
    assert layout[0].all() and layout[:, 0].all()  # global block
    assert all(layout[r, max(0, r - 1): r + 2].all() for r in range(8))  # window
    # each non-global row has exactly one random block beyond window and global
    for r in range(1, 8):
        base = {0} | set(range(max(0, r - 1), min(8, r + 2)))
        assert layout[r].sum() == len(base) + 1
    c = M.BigBird(block=4, window_blocks=3, global_blocks=1, random_blocks=1, seed=8).materialize(32, 32)
    assert not np.array_equal(A, c)


@pytest.mark.parametrize(
    "make, err",
    [
        (lambda: M.SlidingWindow(-1, 0), ValueError),
        (lambda: M.SlidingWindow(1.5, 0), TypeError),
        (lambda: M.Causal("upper_left"), ValueError),
        (lambda: M.Strided(0), ValueError),
        (lambda: M.BigBird(4, window_blocks=2), ValueError),
        (lambda: M.BlockSparse(np.ones((2, 2)), 2, 2), TypeError),
        (lambda: M.Causal() & np.ones((2, 2), bool), TypeError),
        (lambda: M.window_from_keys_including_self(0), ValueError),
    ],
)
def test_bad_arguments_raise(make, err):
    with pytest.raises(err):
        make()


def test_bad_use_raises():
    with pytest.raises(ValueError, match="layout, Lq, Lk: expected a layout of at least"):
        M.BlockSparse(np.ones((1, 1), bool), 2, 2).materialize(4, 4)
    with pytest.raises(ValueError, match="Lq == Lk"):
        M.BigBird(2).materialize(4, 6)
    with pytest.raises(ValueError, match=r"^Lq, Lk: expected the lengths of segment_ids_q, segment_ids_k"):
        M.Document([0, 1]).materialize(3, 3)


_EXTENTS = st.one_of(st.none(), st.integers(0, 80), st.just(10**12))


@given(Lq=st.integers(1, 70), Lk=st.integers(1, 70), left=_EXTENTS, right=_EXTENTS,
       align=st.sampled_from(["top_left", "bottom_right"]), cuts=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_band_tile_equals_its_predicate(Lq, Lk, left, right, align, cuts):
    """SlidingWindow / Causal build a tile from block-relative int32 indices with clipped bounds
    (mask_core.SlidingWindow._tile): it must equal the predicate evaluated at absolute indices
    (the generic Mask._tile), for every block, alignment and extent, unbounded and huge included."""
    from refimpl.mask_core import Mask
    q0, q1 = sorted(int(c * Lq) for c in cuts[:2])
    k0, k1 = sorted(int(c * Lk) for c in cuts[2:])
    for m in (M.SlidingWindow(left, right, align), M.Causal(align)):
        got = m._tile(q0, q1, k0, k1, Lq, Lk)
        want = Mask._tile(m, q0, q1, k0, k1, Lq, Lk)
        assert got.dtype == bool and got.shape == (q1 - q0, k1 - k0)
        assert np.array_equal(got, want)
