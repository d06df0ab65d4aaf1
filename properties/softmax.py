"""Properties of softmax, log-sum-exp, online softmax (kind "softmax") and the
split-KV merge of partial attention states (kind "merge").

Softmax adapter: ``softmax(x)``, ``logsumexp(x)`` along the last axis, and
``online_logsumexp(x, boundaries)`` (one pass over the blocks cut at ``boundaries``).
Merge adapter: ``merge(outs, lses) -> (out, lse)``.

This module holds the kinds' declarations (KINDS), the rows' strategy, bounds and checks of the
softmax kind, and the PROPERTIES table of both kinds; the merge kind's case and check live in
``properties.softmax_merge_checks``, the adapters (refimpl's, the low-precision and the wrong
ones) in ``properties.softmax_adapters``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from .core import Property
from .protocol import Capability, Kind
from .precision import FLOOR_SAFETY, compare_in_precision, lowp_bound, naive_ops, precision_of, unit_roundoff
from .softmax_adapters import (REFIMPL_MERGE, REFIMPL_SOFTMAX, WRONG, MergeAdapter, SoftmaxAdapter,  # noqa: F401
                               lowp_merge_adapter, lowp_softmax_adapter)
from .softmax_merge_checks import MergeCase, check_merge_partition, merge_case  # noqa: F401
from .tolerance import U32, U64, compare_close, compare_lse, round_to
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


BUNDLED = [REFIMPL_SOFTMAX, REFIMPL_MERGE]

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
