"""Properties of softmax, log-sum-exp, online softmax (kind "softmax") and the
split-KV merge of partial attention states (kind "merge").

Softmax adapter: ``softmax(x)``, ``logsumexp(x)`` along the last axis, and
``online_logsumexp(x, boundaries)`` (one pass over the blocks cut at ``boundaries``).
Merge adapter: ``merge(outs, lses) -> (out, lse)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import refimpl

from .core import Property
from .protocol import Capability, Kind
from .tolerance import U64, attention_forward_bounds, compare_close, compare_lse


SOFTMAX_KIND = Kind(
    name="softmax",
    doc="Softmax and log-sum-exp along the last axis of float64 rows (entries may be -inf, whole rows too), "
        "compared with refimpl.softmax / refimpl.logsumexp.",
    methods={
        "softmax": "softmax(x) -> array like x: exp(x - lse) per row; an all -inf row gives all 0",
        "logsumexp": "logsumexp(x) -> x.shape[:-1]: log sum exp over the last axis; -inf for an all -inf row",
        "online_logsumexp": "online_logsumexp(x, boundaries) -> x.shape[:-1]: one pass over the blocks of the "
                            "last axis cut at the sorted indices boundaries (empty blocks allowed)",
    },
    required=("softmax", "logsumexp"),
    capabilities={"online": Capability("supplies online_logsumexp (the one-pass blockwise form)",
                                       methods=("online_logsumexp",))},
)

MERGE_KIND = Kind(
    name="merge",
    doc="The split-KV merge of partial attention states, compared with refimpl.merge_attention_states.",
    methods={"merge": "merge(outs, lses) -> (out, lse): lists of partial (B, H, L, Dv) outputs and (B, H, L) "
                      "lses over disjoint key sets; (0, -inf) partials are the identity"},
    required=("merge",),
    capabilities={},
)

KINDS = (SOFTMAX_KIND, MERGE_KIND)


@dataclasses.dataclass(frozen=True)
class SoftmaxAdapter:
    name: str
    softmax: Callable
    logsumexp: Callable
    online_logsumexp: Callable | None = None
    capabilities: frozenset = frozenset({"online"})
    kind: str = "softmax"
    declines: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MergeAdapter:
    name: str
    merge: Callable
    capabilities: frozenset = frozenset()
    kind: str = "merge"
    declines: dict = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------
# cases


@dataclasses.dataclass(frozen=True)
class RowsCase:
    x: np.ndarray
    boundaries: tuple
    shift: float

    def __repr__(self):
        return f"RowsCase(x{self.x.shape} max|x|={np.max(np.abs(self.x[np.isfinite(self.x)]), initial=0):.3g}, boundaries={self.boundaries}, shift={self.shift})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def rows_case(draw, magnitudes=(1.0, 30.0, 1e4)):
    """Rows of scores, some entries -inf and sometimes whole rows -inf, a block partition, a shift."""
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * draw(st.sampled_from(magnitudes))
    if draw(st.booleans()):
        x[rng.random((rows, n)) < 0.3] = -np.inf
    if draw(st.booleans()):
        x[rng.integers(rows)] = -np.inf
    if draw(st.booleans()):  # ties
        x[:, : n // 2] = x[:, :1]
    boundaries = tuple(sorted(draw(st.lists(st.integers(0, n), max_size=5))))
    shift = draw(st.sampled_from([0.0, 1.0, -3.5, 700.0, -1e4, 1e4]))
    return RowsCase(x, boundaries, shift)


def _lse_ref(x):
    """A direct float64 log-sum-exp with max subtraction (independent of refimpl)."""
    m = np.max(x, axis=-1, keepdims=True)
    safe = np.where(np.isfinite(m), m, 0.0)
    s = np.sum(np.exp(x - safe), axis=-1)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(m[..., 0]), safe[..., 0] + np.log(s), -np.inf)


def _row_tol(x, n_terms):
    """|error| bound for softmax/lse entries of rows x: (n + 4) u (1 + max|x|)."""
    mag = np.max(np.abs(np.where(np.isfinite(x), x, 0.0)), initial=0.0)
    return (n_terms + 4) * U64 * (1.0 + mag) * 4


# ----------------------------------------------------------------------------
# checks


def check_shift_invariance(impl, case: RowsCase):
    """softmax(x + c) == softmax(x): exact in math; in float64 within (n+4) u (|x| + |c|)."""
    x = case.x
    p0 = np.asarray(impl.softmax(x))
    p1 = np.asarray(impl.softmax(x + case.shift))
    tol = _row_tol(x, x.shape[-1]) + 8 * U64 * abs(case.shift)
    compare_close("softmax(x + c) vs softmax(x)", p1, p0, tol, f"{impl.name}; {case!r}")


def check_sums_to_one(impl, case: RowsCase):
    """Each softmax row lies in [0, 1] and sums to 1, or is all 0 for a row of -inf."""
    p = np.asarray(impl.softmax(case.x))
    if not np.isfinite(p).all():
        raise AssertionError(f"{impl.name}: softmax gave non-finite values; {case!r}")
    if (p < 0).any() or (p > 1 + 4 * U64).any():
        raise AssertionError(f"{impl.name}: softmax entries outside [0, 1]; {case!r}")
    empty = np.isneginf(case.x).all(axis=-1)
    sums = p.sum(axis=-1)
    expect = np.where(empty, 0.0, 1.0)
    compare_close("row sums", sums, expect, (p.shape[-1] + 4) * U64 * 2, f"{impl.name}; {case!r}")


def check_softmax_matches(impl, case: RowsCase):
    """softmax equals exp(x - lse) with a direct max-subtracted lse, entry by entry:
    each entry is exp of an argument with error <= (n + 4) u (1 + max|x|), so the
    entry's relative error is at most that; all -inf rows give exactly 0."""
    got = np.asarray(impl.softmax(case.x), dtype=np.float64)
    lse = _lse_ref(case.x)
    with np.errstate(invalid="ignore"):
        want = np.where(np.isneginf(lse)[..., None] | np.isneginf(case.x), 0.0,
                        np.exp(case.x - np.where(np.isfinite(lse), lse, 0.0)[..., None]))
    compare_close("softmax", got, want, _row_tol(case.x, case.x.shape[-1]), f"{impl.name}; {case!r}")


def check_logsumexp_matches(impl, case: RowsCase):
    """logsumexp equals a direct max-subtracted evaluation; -inf exactly for all -inf rows."""
    got = np.asarray(impl.logsumexp(case.x))
    compare_lse("logsumexp", got, _lse_ref(case.x), _row_tol(case.x, case.x.shape[-1]), f"{impl.name}; {case!r}")


def check_online_equals_two_pass(impl, case: RowsCase):
    """One-pass blockwise log-sum-exp equals the two-pass one for any block partition."""
    got = np.asarray(impl.online_logsumexp(case.x, case.boundaries))
    compare_lse(
        "online logsumexp", got, _lse_ref(case.x), _row_tol(case.x, case.x.shape[-1] + len(case.boundaries)),
        f"{impl.name}; {case!r}",
    )


@dataclasses.dataclass(frozen=True)
class MergeCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray
    parts: tuple  # tuple of index arrays partitioning the keys
    order: tuple  # a permutation of the parts
    seed: int

    def __repr__(self):
        return (
            f"MergeCase(q{self.q.shape}, k{self.k.shape}, parts={[p.tolist() for p in self.parts]}, "
            f"order={self.order}, seed={self.seed})"
        )

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def merge_case(draw, magnitudes=(0.5, 2.0, 60.0)):
    """An attention problem and a partition of its keys into parts (Hypothesis draws the partition)."""
    Lq = draw(st.integers(1, 5))
    Lk = draw(st.integers(1, 10))
    D = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mag = draw(st.sampled_from(magnitudes))
    q = rng.standard_normal((1, 2, Lq, D)) * mag
    k = rng.standard_normal((1, 2, Lk, D)) * mag
    v = rng.standard_normal((1, 2, Lk, 3))
    mask = rng.random((Lq, Lk)) < draw(st.sampled_from([1.0, 0.6, 0.2]))
    labels = draw(st.lists(st.integers(0, 4), min_size=Lk, max_size=Lk))
    parts = tuple(np.flatnonzero(np.array(labels) == lab) for lab in sorted(set(labels)))
    if draw(st.booleans()):
        parts = parts + (np.array([], dtype=np.int64),)  # an empty chunk
    order = tuple(draw(st.permutations(range(len(parts)))))
    return MergeCase(q, k, v, mask, parts, order, seed)


def _partials(case: MergeCase):
    outs, lses = [], []
    for idx in case.parts:
        o, l = refimpl.attention(case.q, case.k[:, :, idx], case.v[:, :, idx], mask=case.mask[:, idx])
        outs.append(o)
        lses.append(l)
    return outs, lses


def check_merge_partition(impl, case: MergeCase):
    """Merging the partial (out, lse) of any key partition, in any order and grouping,
    equals attention over all keys; (0, -inf) parts are the identity."""
    full_out, full_lse = refimpl.attention(case.q, case.k, case.v, mask=case.mask)
    outs, lses = _partials(case)
    atol_out, atol_lse = attention_forward_bounds(case.q, case.k, case.v, lse=full_lse)
    atol_out *= len(outs) + 1
    atol_lse *= len(outs) + 1
    ctx = f"{impl.name}; {case!r}"
    flat = impl.merge([outs[i] for i in case.order], [lses[i] for i in case.order])
    compare_close("merged out (flat, permuted)", flat[0], full_out, atol_out, ctx)
    compare_lse("merged lse (flat, permuted)", flat[1], full_lse, atol_lse, ctx)
    # tree: merge the first half and the second half separately, then the two results
    h = max(1, len(outs) // 2)
    if len(outs) > 1:
        a = impl.merge(outs[:h], lses[:h])
        b = impl.merge(outs[h:], lses[h:])
        tree = impl.merge([b[0], a[0]], [b[1], a[1]])
        compare_close("merged out (tree)", tree[0], full_out, atol_out, ctx)
        compare_lse("merged lse (tree)", tree[1], full_lse, atol_lse, ctx)


# ----------------------------------------------------------------------------
# adapters: bundled and wrong


def _softmax_no_max(x):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)


def _lse_nan_empty(x):
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def _softmax_nan_empty(x):
    with np.errstate(invalid="ignore"):
        return np.exp(x - _lse_nan_empty(x)[..., None])


def _online_no_rescale(x, boundaries):
    """Running max updated but the running sum not rescaled by exp(m_old - m_new)."""
    n = x.shape[-1]
    cuts = [0, *boundaries, n]
    m = np.full(x.shape[:-1], -np.inf)
    l = np.zeros(x.shape[:-1])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        blk = x[..., lo:hi]
        m_new = np.maximum(m, np.max(blk, axis=-1, initial=-np.inf))
        safe = np.where(np.isfinite(m_new), m_new, 0.0)
        l = l + np.sum(np.where(np.isfinite(blk), np.exp(blk - safe[..., None]), 0.0), axis=-1)  # bug: l not rescaled
        m = m_new
    with np.errstate(divide="ignore"):
        return np.where(l > 0, m + np.log(np.where(l > 0, l, 1.0)), -np.inf)


def _softmax_sharpened(x):
    """softmax(2 x) (a temperature folded in twice): sums to one and is shift invariant,
    so only a check by value sees that it is not the softmax of x."""
    return refimpl.softmax(2.0 * np.asarray(x))


def _merge_average(outs, lses):
    """Ignores the lse weights: a plain average of the partial outputs."""
    return np.mean(outs, axis=0), refimpl.logsumexp(np.stack(lses), axis=0)


def _merge_no_max(outs, lses):
    """Weights exp(lse_i) / sum exp(lse_j) without subtracting the max: overflows."""
    L = np.stack(lses)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        w = np.exp(L)
        tot = w.sum(axis=0)
        return np.einsum("p...,p...d->...d", w / tot, np.stack(outs)), np.log(tot)


def _merge_nan_identity(outs, lses):
    """max-subtracted, but exp(-inf - (-inf)) = NaN when every part is empty."""
    L = np.stack(lses)
    m = L.max(axis=0)
    with np.errstate(invalid="ignore"):
        w = np.exp(L - m)
        tot = w.sum(axis=0)
        return np.einsum("p...,p...d->...d", w / tot, np.stack(outs)), m + np.log(tot)


REFIMPL_SOFTMAX = SoftmaxAdapter("refimpl.softmax", refimpl.softmax, refimpl.logsumexp, refimpl.online_logsumexp)
REFIMPL_MERGE = MergeAdapter("refimpl.merge_attention_states", refimpl.merge_attention_states)
BUNDLED = [REFIMPL_SOFTMAX, REFIMPL_MERGE]

WRONG = {
    "softmax_no_max_subtraction": SoftmaxAdapter("wrong[softmax_no_max_subtraction]", _softmax_no_max, refimpl.logsumexp, refimpl.online_logsumexp),
    "nan_on_empty_row": SoftmaxAdapter("wrong[nan_on_empty_row]", _softmax_nan_empty, _lse_nan_empty, refimpl.online_logsumexp),
    "online_no_rescale": SoftmaxAdapter("wrong[online_no_rescale]", refimpl.softmax, refimpl.logsumexp, _online_no_rescale),
    "softmax_sharpened": SoftmaxAdapter("wrong[softmax_sharpened]", _softmax_sharpened, refimpl.logsumexp, refimpl.online_logsumexp),
    "merge_average": MergeAdapter("wrong[merge_average]", _merge_average),
    "merge_no_max_subtraction": MergeAdapter("wrong[merge_no_max_subtraction]", _merge_no_max),
    "merge_nan_identity": MergeAdapter("wrong[merge_nan_identity]", _merge_nan_identity),
}

PROPERTIES = [
    Property("softmax_shift_invariance", "softmax", check_shift_invariance, rows_case(),
             "softmax(x + c) = softmax(x)", rejects=("softmax_no_max_subtraction", "nan_on_empty_row")),
    Property("softmax_sums_to_one", "softmax", check_sums_to_one, rows_case(),
             "softmax rows lie in [0, 1] and sum to 1 (0 for an all -inf row)",
             rejects=("softmax_no_max_subtraction", "nan_on_empty_row")),
    Property("softmax_matches", "softmax", check_softmax_matches, rows_case(),
             "softmax equals exp(x - logsumexp(x)) entry by entry", rejects=("softmax_sharpened", "nan_on_empty_row")),
    Property("logsumexp_matches", "softmax", check_logsumexp_matches, rows_case(),
             "logsumexp is exact to rounding; -inf for an all -inf row", rejects=("nan_on_empty_row",)),
    Property("online_equals_two_pass", "softmax", check_online_equals_two_pass, rows_case(),
             "one-pass blockwise logsumexp equals two-pass for any block partition",
             requires=frozenset({"online"}), rejects=("online_no_rescale",)),
    Property("merge_partition", "merge", check_merge_partition, merge_case(),
             "merging partial (out, lse) over any key partition, in any order or grouping, equals full attention",
             rejects=("merge_average", "merge_no_max_subtraction", "merge_nan_identity")),
]
