"""Checks of the merge kind (the split-KV merge of partial attention states): the case (an
attention problem and a partition of its keys, ``merge_case``), the partial (out, lse) of each part,
the naive eager merge in a lower precision, and ``check_merge_partition`` (any partition, order and
grouping merges to attention over all keys; (0, -inf) parts are the identity). The PROPERTIES
table that runs it is ``properties.softmax``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

import refimpl

from .precision import FLOOR_SAFETY, lowp_bound, naive_ops, precision_of, unit_roundoff
from .tolerance import U32, attention_forward_bounds, compare_close, compare_lse, round_to
from .strategy_cache import sampled


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

