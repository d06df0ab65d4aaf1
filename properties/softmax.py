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
from .precision import FLOOR_SAFETY, compare_in_precision, lowp_bound, naive_ops, precision_of, unit_roundoff
from .tolerance import U32, U64, attention_forward_bounds, compare_close, compare_lse, round_to
from .strategy_cache import sampled


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
    precision: str = "float64"


@dataclasses.dataclass(frozen=True)
class MergeAdapter:
    name: str
    merge: Callable
    capabilities: frozenset = frozenset()
    kind: str = "merge"
    declines: dict = dataclasses.field(default_factory=dict)
    precision: str = "float64"


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
def rows_case(draw, magnitudes=(1.0, 30.0, 1e4), precision="float64"):
    """Rows of scores, some entries -inf and sometimes whole rows -inf, a block partition, a shift;
    entries representable in ``precision``. The magnitudes reach 1e4 and the shifts +-1e4 on
    purpose: exp overflows beyond 709, so only a max-subtracting softmax survives them."""
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = round_to(rng.standard_normal((rows, n)) * draw(sampled(magnitudes)), precision)
    if draw(st.booleans()):
        x[rng.random((rows, n)) < 0.3] = -np.inf
    if draw(st.booleans()):
        x[rng.integers(rows)] = -np.inf
    if draw(st.booleans()):  # ties
        x[:, : n // 2] = x[:, :1]
    boundaries = tuple(sorted(draw(st.lists(st.integers(0, n), max_size=5))))
    shift = draw(sampled([0.0, 1.0, -3.5, 700.0, -1e4, 1e4]))
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


# Lower precisions (properties.precision's rule). The naive eager softmax in precision p:
# m = max x, d = r(x - m), e = r(exp d), l = sum e (float32, rounded), P = r(e / l),
# lse = r(m + r(log l)). Floor (first order, deterministic, every rounding at its worst):
#   P_j:  u (P_j |x_j - m| + 3 P_j) + n u32 P_j <= u (1/e + 3) + n u32   (t e^-t <= 1/e)
#   lse:  u (sum_j P_j |x_j - m| + 2 + |lse|) + n u32 (1 + |lse|), sum_j P_j (m - x_j) <= log n
#   sums: sum_j |dP_j| <= u (log n + 3) + n u32
# each times FLOOR_SAFETY; P and the sums also carry u32 (1 + |lse|): a kernel that forms
# P = exp(x - lse) with its float32 lse (as flash kernels do) errs by u32 |lse| relative.


def _naive_softmax(x, precision):
    """(P, lse) of the naive eager softmax in ``precision`` (float64 arrays)."""
    o = naive_ops(precision)
    f, r = o.compute, o.r
    x = r(x)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, f(0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = r(np.exp(r(x - m)))
        l = o.sum(e, axis=-1, keepdims=True)
        P = r(np.where(l > 0, e / np.where(l > 0, l, f(1)), f(0)))
        lse = np.where(l[..., 0] > 0, r(m[..., 0] + r(np.log(np.where(l[..., 0] > 0, l[..., 0], f(1))))), -np.inf)
    return o.out(P), o.out(lse)


def _lowp_floors(x, precision, n_terms):
    """(floor_softmax, floor_lse, floor_sums) of the comment above."""
    u = unit_roundoff(precision)
    n = max(int(n_terms), 1)
    lse = _lse_ref(x)
    mag = float(np.max(np.abs(lse[np.isfinite(lse)]), initial=0.0))
    return (FLOOR_SAFETY * (u * (1 / np.e + 3) + n * U32 + U32 * (1 + mag)),
            FLOOR_SAFETY * (u * (np.log(n) + 2 + mag) + n * U32 * (1 + mag)),
            FLOOR_SAFETY * (u * (np.log(n) + 3) + n * U32 + U32 * (1 + mag)))


def _softmax_bound(impl, x, n_terms):
    """The bound on softmax entries of ``impl`` for rows x: float64 ``_row_tol``; lower
    precisions FACTOR x the naive error + floor (``properties.precision.lowp_bound``)."""
    precision = precision_of(impl)
    if precision == "float64":
        return _row_tol(x, n_terms)
    P, _ = _naive_softmax(x, precision)
    return max(lowp_bound(P, _softmax_ref(x), _lowp_floors(x, precision, n_terms)[0]), _row_tol(x, n_terms))


def _softmax_ref(x):
    lse = _lse_ref(x)
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(lse)[..., None] | np.isneginf(x), 0.0,
                        np.exp(x - np.where(np.isfinite(lse), lse, 0.0)[..., None]))


def _lse_bound(impl, x, n_terms):
    precision = precision_of(impl)
    if precision == "float64":
        return _row_tol(x, n_terms)
    _, lse = _naive_softmax(x, precision)
    ref = _lse_ref(x)
    fin = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        return max(lowp_bound(np.where(fin, lse, 0.0), np.where(fin, ref, 0.0), _lowp_floors(x, precision, n_terms)[1]),
                   _row_tol(x, n_terms))


def _rows_strategy(caps):
    return rows_case(precision=getattr(caps, "precision", "float64"))


def _merge_strategy(caps):
    return merge_case(precision=getattr(caps, "precision", "float64"))


# ----------------------------------------------------------------------------
# checks


def check_shift_invariance(impl, case: RowsCase):
    """softmax(x + c) == softmax(x): exact in math; in float64 within (n+4) u (|x| + |c|).
    Lower precisions: x + c is rounded to the precision first (the shifted input the adapter
    can receive), and the spec's own change between the two inputs is allowed on top of
    each side's precision bound."""
    x = case.x
    precision = precision_of(impl)
    xs = round_to(x + case.shift, precision)
    p0 = np.asarray(impl.softmax(x))
    p1 = np.asarray(impl.softmax(xs))
    if precision == "float64":
        tol = _row_tol(x, x.shape[-1]) + 8 * U64 * abs(case.shift)
    else:
        n = x.shape[-1]
        with np.errstate(invalid="ignore"):
            moved = float(np.max(np.abs(_softmax_ref(xs) - _softmax_ref(x)), initial=0.0))
        tol = _softmax_bound(impl, x, n) + _softmax_bound(impl, xs, n) + moved
    compare_close("softmax(x + c) vs softmax(x)", p1, p0, tol, f"{impl.name}; {case!r}")


def check_sums_to_one(impl, case: RowsCase):
    """Each softmax row lies in [0, 1] and sums to 1, or is all 0 for a row of -inf."""
    p = np.asarray(impl.softmax(case.x), dtype=np.float64)
    if not np.isfinite(p).all():
        raise AssertionError(f"{impl.name}: softmax gave non-finite values; {case!r}")
    precision = precision_of(impl)
    n = p.shape[-1]
    slack = 4 * U64 if precision == "float64" else _lowp_floors(case.x, precision, n)[0]
    if (p < 0).any() or (p > 1 + slack).any():
        raise AssertionError(f"{impl.name}: softmax entries outside [0, 1]; {case!r}")
    empty = np.isneginf(case.x).all(axis=-1)
    expect = np.where(empty, 0.0, 1.0)
    compare_in_precision("row sums", p.sum(axis=-1), expect, precision=precision, float64_bound=(n + 4) * U64 * 2,
                         naive=lambda: _naive_softmax(case.x, precision)[0].sum(axis=-1),
                         floor=_lowp_floors(case.x, precision, n)[2] if precision != "float64" else 0.0,
                         context=f"{impl.name}; {case!r}")


def check_softmax_matches(impl, case: RowsCase):
    """softmax equals exp(x - lse) with a direct max-subtracted lse, entry by entry:
    each entry is exp of an argument with error <= (n + 4) u (1 + max|x|), so the
    entry's relative error is at most that; all -inf rows give exactly 0. Lower
    precisions: ``_softmax_bound``."""
    got = np.asarray(impl.softmax(case.x), dtype=np.float64)
    compare_close("softmax", got, _softmax_ref(case.x), _softmax_bound(impl, case.x, case.x.shape[-1]),
                  f"{impl.name}; {case!r}")


def check_logsumexp_matches(impl, case: RowsCase):
    """logsumexp equals a direct max-subtracted evaluation; -inf exactly for all -inf rows."""
    got = np.asarray(impl.logsumexp(case.x))
    compare_lse("logsumexp", got, _lse_ref(case.x), _lse_bound(impl, case.x, case.x.shape[-1]), f"{impl.name}; {case!r}")


def check_online_equals_two_pass(impl, case: RowsCase):
    """One-pass blockwise log-sum-exp equals the two-pass one for any block partition."""
    got = np.asarray(impl.online_logsumexp(case.x, case.boundaries))
    compare_lse(
        "online logsumexp", got, _lse_ref(case.x), _lse_bound(impl, case.x, case.x.shape[-1] + len(case.boundaries)),
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
    precision: str = "float64"

    def __repr__(self):
        return (
            f"MergeCase(q{self.q.shape}, k{self.k.shape}, parts={[p.tolist() for p in self.parts]}, "
            f"order={self.order}, seed={self.seed})"
        )

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def merge_case(draw, magnitudes=(0.5, 2.0, 60.0), precision="float64"):
    """An attention problem and a partition of its keys into parts (Hypothesis draws the partition);
    magnitude 60 gives partial lse beyond 709 (exp overflows: only a max-shifted merge survives).
    ``precision``: the partials handed to the merge are rounded to it (lse to float32 for
    bfloat16 / float16, as flash kernels keep it)."""
    Lq = draw(st.integers(1, 5))
    Lk = draw(st.integers(1, 10))
    D = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mag = draw(sampled(magnitudes))
    q = rng.standard_normal((1, 2, Lq, D)) * mag
    k = rng.standard_normal((1, 2, Lk, D)) * mag
    v = rng.standard_normal((1, 2, Lk, 3))
    mask = rng.random((Lq, Lk)) < draw(sampled([1.0, 0.6, 0.2]))
    labels = draw(st.lists(st.integers(0, 4), min_size=Lk, max_size=Lk))
    parts = tuple(np.flatnonzero(np.array(labels) == lab) for lab in sorted(set(labels)))
    if draw(st.booleans()):
        parts = parts + (np.array([], dtype=np.int64),)  # an empty chunk
    order = tuple(draw(st.permutations(range(len(parts)))))
    return MergeCase(q, k, v, mask, parts, order, seed, precision)


def _partials(case: MergeCase):
    """The partial (out, lse) of each part, rounded to the case's precision (lse to float32 below it)."""
    lse_prec = "float64" if case.precision == "float64" else "float32"
    outs, lses = [], []
    for idx in case.parts:
        o, l = refimpl.attention(case.q, case.k[:, :, idx], case.v[:, :, idx], mask=case.mask[:, idx])
        outs.append(round_to(o, case.precision))
        lses.append(round_to(l, lse_prec))
    return outs, lses


def _naive_merge(outs, lses, precision):
    """The eager merge in ``precision``: m = max lse, w = r(exp(r(lse - m))), W = sum w,
    out = sum_c r(r(w_c / W) out_c), lse = m + r(log W) (float64 arrays)."""
    o = naive_ops(precision)
    f, r = o.compute, o.r
    L, O = np.stack(lses).astype(f), r(np.stack(outs))
    m = np.max(L, axis=0)
    m = np.where(np.isfinite(m), m, f(0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = r(np.exp(r(L - m)))
        W = o.sum(w, axis=0)
        a = r(np.where(W > 0, w / np.where(W > 0, W, f(1)), f(0)))
        out = o.sum(r(a[..., None] * O), axis=0)
        lse = np.where(W > 0, m + r(np.log(np.where(W > 0, W, f(1)))), -np.inf)
    return o.out(out), o.out(lse)


def _check_merge_lowp(impl, case: MergeCase, outs, lses, ctx):
    """Lower precisions: the merge of the rounded partials equals refimpl.merge_attention_states
    of the same partials within FACTOR x the naive eager merge's error + the floor: the weights
    are a softmax over the C parts (each off by at most u (1/e + 3) + C u32, as in the softmax
    floor), so |d out| <= 2 (u (1/e + 3) + C u32) max|out_c| + u |out|; the lse as the softmax's."""
    precision = case.precision
    u = unit_roundoff(precision)
    ref_out, ref_lse = refimpl.merge_attention_states(outs, lses)
    nv_out, nv_lse = _naive_merge(outs, lses, precision)
    C = len(outs)
    Omax = float(np.max(np.abs(np.stack(outs)), initial=0.0))
    fin = np.isfinite(ref_lse)
    lmag = float(np.max(np.abs(ref_lse[fin]), initial=0.0))
    fl_out = FLOOR_SAFETY * (2 * (u * (1 / np.e + 3) + C * U32) * Omax + u * Omax)
    fl_lse = FLOOR_SAFETY * (u * (np.log(max(C, 1)) + 2) + (u + C * U32) * (1 + lmag))
    with np.errstate(invalid="ignore"):
        b_lse = lowp_bound(np.where(fin, nv_lse, 0.0), np.where(fin, ref_lse, 0.0), fl_lse)
    b_out = lowp_bound(nv_out, ref_out, fl_out)
    got_out, got_lse = impl.merge([outs[i] for i in case.order], [lses[i] for i in case.order])
    compare_close("merged out (flat, permuted)", got_out, ref_out, b_out, ctx)
    compare_lse("merged lse (flat, permuted)", got_lse, ref_lse, b_lse, ctx)


def check_merge_partition(impl, case: MergeCase):
    """Merging the partial (out, lse) of any key partition, in any order and grouping,
    equals attention over all keys; (0, -inf) parts are the identity. Lower precisions:
    the partials are rounded to the precision and the flat merge is compared with the
    spec's merge of the same partials (``_check_merge_lowp``)."""
    outs, lses = _partials(case)
    ctx = f"{impl.name}; {case!r}"
    if precision_of(impl) != "float64":
        _check_merge_lowp(impl, case, outs, lses, ctx)
        return
    full_out, full_lse = refimpl.attention(case.q, case.k, case.v, mask=case.mask)
    atol_out, atol_lse = attention_forward_bounds(case.q, case.k, case.v, lse=full_lse)
    atol_out *= len(outs) + 1
    atol_lse *= len(outs) + 1
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


def lowp_softmax_adapter(precision: str, bug=None) -> SoftmaxAdapter:
    """A fused softmax in ``precision``: float32 arithmetic inside, results rounded to the precision
    (what torch's softmax / logsumexp do on bf16 tensors). ``bug``: "sharpened" (softmax(2x)),
    "online_no_rescale" (the running sum not rescaled)."""
    f = np.float32

    def rd(x):
        return round_to(np.asarray(x, np.float64), precision)

    def lse32(x):
        x = np.asarray(x, f)
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, f(0))
        l = np.sum(np.exp(x - m), axis=-1, dtype=f)
        with np.errstate(divide="ignore"):
            return np.where(l > 0, m[..., 0] + np.log(np.where(l > 0, l, f(1))), -np.inf)

    def softmax(x):
        x = np.asarray(x, f) * f(2.0 if bug == "sharpened" else 1.0)
        L = lse32(x)
        with np.errstate(invalid="ignore"):
            return rd(np.where(np.isneginf(L)[..., None] | np.isneginf(x), f(0), np.exp(x - np.where(np.isfinite(L), L, 0)[..., None])))

    def online(x, boundaries):
        if bug == "online_no_rescale":
            return rd(_online_no_rescale(np.asarray(x, f).astype(np.float64), boundaries).astype(f))
        return rd(refimpl.online_logsumexp(np.asarray(x, f).astype(np.float64), boundaries).astype(f))

    name = f"properties.softmax.lowp[{precision}]" + (f"[bug={bug}]" if bug else "")
    return SoftmaxAdapter(name, softmax, lambda x: rd(lse32(x)), online, precision=precision)


def lowp_merge_adapter(precision: str, bug=None) -> MergeAdapter:
    """The merge in float32 arithmetic, out rounded to ``precision``, lse kept float32;
    ``bug="average"`` ignores the lse weights."""
    f = np.float32

    def merge(outs, lses):
        O, L = np.stack(outs).astype(f), np.stack(lses).astype(f)
        m = np.max(L, axis=0)
        m = np.where(np.isfinite(m), m, f(0))
        w = np.exp(L - m)
        if bug == "average":
            w = np.isfinite(L).astype(f)
        W = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(W[..., None] > 0, np.einsum("c...,c...d->...d", w, O) / np.where(W > 0, W, f(1))[..., None], f(0))
            lse = np.where(W > 0, m + np.log(np.where(W > 0, W, f(1))), -np.inf)
        return round_to(out.astype(np.float64), precision), lse.astype(np.float64)

    name = f"properties.softmax.lowp_merge[{precision}]" + (f"[bug={bug}]" if bug else "")
    return MergeAdapter(name, merge, precision=precision)


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
    Property("softmax_shift_invariance", "softmax", check_shift_invariance, _rows_strategy,
             "softmax(x + c) = softmax(x)", rejects=("softmax_no_max_subtraction", "nan_on_empty_row")),
    Property("softmax_sums_to_one", "softmax", check_sums_to_one, _rows_strategy,
             "softmax rows lie in [0, 1] and sum to 1 (0 for an all -inf row)",
             rejects=("softmax_no_max_subtraction", "nan_on_empty_row")),
    Property("softmax_matches", "softmax", check_softmax_matches, _rows_strategy,
             "softmax equals exp(x - logsumexp(x)) entry by entry", rejects=("softmax_sharpened", "nan_on_empty_row")),
    Property("logsumexp_matches", "softmax", check_logsumexp_matches, _rows_strategy,
             "logsumexp is exact to rounding; -inf for an all -inf row", rejects=("nan_on_empty_row",)),
    Property("online_equals_two_pass", "softmax", check_online_equals_two_pass, _rows_strategy,
             "one-pass blockwise logsumexp equals two-pass for any block partition",
             requires=frozenset({"online"}), rejects=("online_no_rescale",)),
    Property("merge_partition", "merge", check_merge_partition, _merge_strategy,
             "merging partial (out, lse) over any key partition, in any order or grouping, equals full attention",
             rejects=("merge_average", "merge_no_max_subtraction", "merge_nan_identity")),
]
