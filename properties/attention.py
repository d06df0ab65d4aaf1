"""Conformance properties of attention implementations (kind "attention").

Each check takes an adapter (see ``properties.attention_impls.AttentionAdapter``)
and a case (``properties.attention_cases.AttnCase``). ``PROPERTIES`` lists them
with the wrong implementations each must reject. The helpers the checks share (an
adapter's bounds, the comparisons) are in ``properties.attention_check_helpers``, the
backward checks in ``properties.attention_backward_checks``; both are re-exported here.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import refimpl

from . import attention_cases as C
from . import sizes
from . import attention_impls, tiled
from .attention_backward_checks import (  # noqa: F401  (re-exported: defined here before)
    check_backward_finite_differences, check_backward_matches_reference, spec_gradients_fd)
from .attention_check_helpers import _assert_matches, _bounds, _close, _close_lse, _empty_rows_move, _run
from .precision import precision_of  # noqa: F401  (the checks' bounds read the adapter's precision: _bounds)
from .core import Declared, Property

KINDS = (C.ATTENTION_KIND,)
#: refimpl.attention and the independent naive one (the 64-tile float64 / bfloat16
#: adapters, ``tiled.CORRECT``, run in tests/test_tile_scale.py: big sizes cost time)
BUNDLED = list(attention_impls.BUNDLED)
WRONG = {**attention_impls.WRONG, **tiled.WRONG}


# ----------------------------------------------------------------------------
# checks


def check_matches_reference(impl, case):
    """out and lse equal refimpl.attention's (under the adapter's convention) within the reasoned bound."""
    out, lse = _run(impl, case)
    ref_out, ref_lse = C.reference(impl, case)
    _assert_matches(impl, case, out, lse, ref_out, ref_lse)


def check_convex_combination(impl, case):
    """Each output row lies in the box spanned by the values it attends to (0 if none).

    Without dropout out_i = sum_j P_ij v_j with P_ij >= 0 summing to 1 over the
    visible keys, so min_j v_jd <= out_id <= max_j v_jd. Rejects outputs whose
    weights do not sum to 1 (a forgotten rescale, a wrong normaliser). With sinks the
    weights sum to less than 1 (the sink takes the rest), so 0 joins the box. A fully
    masked row gives the convention's value (0 in the spec's).
    """
    out, _ = _run(impl, case)
    vis = C.visible(case)  # (B, Hq, Lq, Lk)
    G = case.q.shape[1] // case.k.shape[1]
    seen = vis[..., None]  # (B, Hq, Lq, Lk, 1); the reductions skip hidden keys (no (.., Lk, Dv) copies)
    V = np.broadcast_to(np.repeat(case.v, G, axis=1)[:, :, None, :, :], vis.shape + case.v.shape[-1:])
    hi = np.max(V, axis=3, where=seen, initial=-np.inf)
    lo = np.min(V, axis=3, where=seen, initial=np.inf)
    if case.kwargs.get("sinks") is not None:
        hi, lo = np.maximum(hi, 0.0), np.minimum(lo, 0.0)
    empty = ~vis.any(axis=-1)
    tol, _ = _bounds(impl, case)
    if C.convention(impl) is not None and empty.any():
        ref_out, _ = C.reference(impl, case)
        _close("out of the fully masked rows", out[empty], ref_out[empty], tol, f"{impl.name} on {case!r}")
        out = np.where(empty[..., None], 0.0, out)
    if not np.isfinite(out).all():
        raise AssertionError(f"{impl.name}: non-finite output on {case!r}")
    bad = ~empty[..., None] & ((out > hi + tol) | (out < lo - tol))
    if bad.any():
        b = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{impl.name}: out{list(map(int, b))} = {out[b]:.6g} outside the attended values' range "
            f"[{lo[b]:.6g}, {hi[b]:.6g}]: the weights do not form a convex combination; {case!r}"
        )
    if np.any(np.abs(out[empty]) > 0):
        raise AssertionError(f"{impl.name}: a fully masked row has a non-zero output; {case!r}")


def _with_array_mask(case: C.AttnCase) -> C.AttnCase:
    """The same problem with causal/window/predicate masks folded into one bool array."""
    drop = ("mask", "causal", "window", "align", "key_padding_mask", "cu_seqlens_q", "cu_seqlens_k")
    kw = {k: v for k, v in case.kwargs.items() if k not in drop}
    B, Hq, Lq, _ = case.q.shape
    vis = C.visible(case.with_(kwargs={k: v for k, v in case.kwargs.items() if k != "bias"}))
    return case.with_(kwargs={**kw, "mask": np.ascontiguousarray(vis)})


def check_key_permutation_invariance(impl, case):
    """Permuting keys, values, mask columns (and bias, dropout columns) together changes nothing."""
    base = _with_array_mask(case)
    perm = np.random.default_rng(case.seed).permutation(case.k.shape[2])
    kw = dict(base.kwargs)
    for key in ("mask", "bias", "dropout_mask"):
        if kw.get(key) is not None:
            arr = np.asarray(kw[key])
            kw[key] = arr[..., perm] if arr.shape[-1] > 1 else arr
    permuted = base.with_(k=case.k[:, :, perm], v=case.v[:, :, perm], kwargs=kw)
    out0, lse0 = _run(impl, base)
    out1, lse1 = _run(impl, permuted)
    _assert_matches(impl, base, out1, lse1, out0, lse0, what=" (keys permuted vs not)", relation=True)


def check_gqa_equals_repeated_mha(impl, case):
    """GQA with Hkv kv heads equals MHA with each kv head repeated G times (h -> h // G)."""
    G = case.q.shape[1] // case.k.shape[1]
    if G == 1:
        return
    out0, lse0 = _run(impl, case)
    mha = case.with_(k=np.repeat(case.k, G, axis=1), v=np.repeat(case.v, G, axis=1))
    out1, lse1 = _run(impl, mha)
    _assert_matches(impl, case, out0, lse0, out1, lse1, what=" (GQA vs repeated-kv MHA)", relation=True)


def _perturb(case, cols_hidden: np.ndarray):
    """Replace keys and values where cols_hidden (Lk,) is True with unrelated ones."""
    rng = np.random.default_rng(case.seed + 1)
    k, v = case.k.copy(), case.v.copy()
    k[:, :, cols_hidden] = rng.standard_normal(k[:, :, cols_hidden].shape) * 5
    v[:, :, cols_hidden] = rng.standard_normal(v[:, :, cols_hidden].shape) * 5
    return case.with_(k=k, v=v)


def check_causal_ignores_future(impl, case):
    """With causal=True, row i does not depend on keys after its aligned position i + o."""
    Lq, Lk = case.q.shape[2], case.k.shape[2]
    o = Lk - Lq if case.kwargs.get("align", "bottom_right") == "bottom_right" else 0
    cut = int(np.random.default_rng(case.seed).integers(0, Lk + 1))
    out0, lse0 = _run(impl, case)
    out1, lse1 = _run(impl, _perturb(case, np.arange(Lk) >= cut))
    rows = np.arange(Lq) + o < cut  # rows whose visible keys all lie before the cut
    atol, _ = _bounds(impl, case)
    keep = np.broadcast_to(rows[:, None], out0.shape[2:])
    if _empty_rows_move(impl):
        keep = keep & C.visible(case).any(axis=-1)[..., None]
    sub = lambda a: np.where(keep, a, 0.0)  # noqa: E731
    _close("out (future keys perturbed)", sub(out1), sub(out0), atol, f"{impl.name}: cut={cut}, o={o}; {case!r}")


def check_window_ignores_outside(impl, case):
    """Row i does not depend on keys outside [i + o - left, i + o + right]."""
    Lq, Lk = case.q.shape[2], case.k.shape[2]
    left, right = case.kwargs["window"]
    o = Lk - Lq if case.kwargs.get("align", "bottom_right") == "bottom_right" else 0
    out0, lse0 = _run(impl, case)
    atol, _ = _bounds(impl, case)
    j = np.arange(Lk)
    for i in _rows_to_probe(Lq, getattr(impl, "tiles", None) or ()):
        inside = np.ones(Lk, dtype=bool)
        if left is not None:
            inside &= j >= i + o - left
        if right is not None:
            inside &= j <= i + o + right
        if inside.all():
            continue
        out1, _ = _run(impl, _perturb(case, ~inside))
        row0, row1 = out0[:, :, i], out1[:, :, i]
        if _empty_rows_move(impl):
            seen = C.visible(case)[:, :, i].any(axis=-1)[..., None]
            row0, row1 = np.where(seen, row0, 0.0), np.where(seen, row1, 0.0)
        _close(
            f"out row {i} (keys outside the window perturbed)", row1, row0, atol,
            f"{impl.name}: window={case.kwargs['window']}, o={o}; {case!r}",
        )


def _rows_to_probe(Lq: int, tiles) -> list:
    """Every row for short sequences; at tile scale the rows at and around each
    tile boundary plus the first and last (one forward per row)."""
    if Lq <= 12:
        return list(range(Lq))
    rows = {0, Lq - 1}
    for t in tiles:
        for b in range(t, Lq, t):
            rows |= {b - 1, b}
    return sorted(r for r in rows if 0 <= r < Lq)[:16]


def check_alignment_relation(impl, case):
    """Causal bottom_right equals top_left when Lq == Lk; otherwise each equals the spec's."""
    Lq, Lk = case.q.shape[2], case.k.shape[2]
    br_case = case.with_kwargs(causal=True, align="bottom_right")
    tl_case = case.with_kwargs(causal=True, align="top_left")
    br, tl = _run(impl, br_case), _run(impl, tl_case)
    if Lq == Lk:
        _assert_matches(impl, br_case, tl[0], tl[1], br[0], br[1], what=" (top_left vs bottom_right, Lq == Lk)",
                        relation=True)
        return
    for c, (out, lse) in ((br_case, br), (tl_case, tl)):
        ref_out, ref_lse = C.reference(impl, c)
        _assert_matches(impl, c, out, lse, ref_out, ref_lse, what=f" (align={c.kwargs['align']})")


def check_dropout_keep_mask(impl, case):
    """out = (P * keep / (1 - p)) V with P the dropout-free weights; lse ignores dropout."""
    out, lse = _run(impl, case)
    kw = C.spec_kwargs(case)
    P = refimpl.attention_probs(case.q, case.k, **{k: v for k, v in kw.items() if k not in ("dropout_mask", "dropout_p")})
    G = case.q.shape[1] // case.k.shape[1]
    expect = (P * kw["dropout_mask"] / (1 - kw["dropout_p"])) @ np.repeat(case.v, G, axis=1)
    ref_lse = refimpl.attention(case.q, case.k, case.v, **{k: v for k, v in kw.items() if k not in ("dropout_mask", "dropout_p")})[1]
    expect, ref_lse = C.finish(impl, case, expect, ref_lse)
    atol_out, atol_lse = _bounds(impl, case)
    ctx = f"{impl.name} with dropout p={kw['dropout_p']}; {case!r}"
    _close("out", out, expect, atol_out / (1 - kw["dropout_p"]), ctx)
    if lse is not None and "lse" in impl.capabilities:
        _close_lse("lse", lse, ref_lse, atol_lse, ctx, getattr(impl, "precision", "float64"))


def check_extreme_scores(impl, case):
    """Scores of magnitude up to ~1e4: finite outputs, no overflow, equal to the spec."""
    out, lse = _run(impl, case)
    if not np.isfinite(out[np.isfinite(C.reference(impl, case)[0])]).all():  # NaN only where the convention says
        raise AssertionError(f"{impl.name}: non-finite output with extreme scores; {case!r}")
    check_matches_reference(impl, case)


def check_default_scale(impl, case):
    """The default scale is 1/sqrt(D): attention(q, k, v) == attention(c q, k, v, scale=1/(c sqrt D))."""
    D = case.q.shape[-1]
    c = 1.7
    default = case.with_(kwargs={k: v for k, v in case.kwargs.items() if k != "scale"})
    out0, lse0 = _run(impl, default)
    out1, lse1 = _run(impl, default.with_(q=case.q * c), scale=1.0 / (c * np.sqrt(D)))
    _assert_matches(impl, default, out0, lse0, out1, lse1, what=" (default scale vs explicit 1/sqrt(D))", relation=True)


def check_fully_masked_rows(impl, case):
    """A row with no visible key gives out 0 and lse -inf (the spec's convention), exactly.

    Under a declared convention the row gives that library's value instead: NaN (xformers),
    the mean of all values (JAX, HF eager; within the bound), lse +inf (flash-attn 2) or
    mask value + log Lk (JAX). With sinks such a row gives out 0 and lse = the sink logit.
    """
    out, lse = _run(impl, case)
    empty = ~C.visible(case).any(axis=-1)
    if not empty.any():
        return
    ref_out, ref_lse = C.reference(impl, case)
    if C.convention(impl) is None and case.kwargs.get("sinks") is None:
        if not np.all(np.asarray(out)[empty] == 0):
            raise AssertionError(f"{impl.name}: fully masked rows must give out 0, got {np.asarray(out)[empty][:2]}; {case!r}")
        if lse is not None and "lse" in impl.capabilities and not np.all(np.isneginf(np.asarray(lse)[empty])):
            raise AssertionError(f"{impl.name}: fully masked rows must give lse -inf, got {np.asarray(lse)[empty][:3]}; {case!r}")
        return
    atol_out, atol_lse = _bounds(impl, case)
    ctx = f"{impl.name} (convention {getattr(impl, 'convention', None)!r}), fully masked rows; {case!r}"
    exact = not _empty_rows_move(impl)
    _close("out", out[empty], ref_out[empty], 0.0 if exact else atol_out, ctx)
    if lse is not None and "lse" in impl.capabilities:
        _close_lse("lse", np.asarray(lse)[empty], ref_lse[empty], atol_lse, ctx, getattr(impl, "precision", "float64"))


def check_inputs_not_mutated(impl, case):
    """q, k, v and every array keyword are unchanged by the call."""
    arrays = {"q": case.q, "k": case.k, "v": case.v, **{k: v for k, v in case.kwargs.items() if isinstance(v, np.ndarray)}}
    before = {name: a.copy() for name, a in arrays.items()}
    impl.forward(case.q, case.k, case.v, **case.kwargs)
    for name, a in arrays.items():
        if not np.array_equal(a, before[name]):
            raise AssertionError(f"{impl.name}: the call modified its input {name}; {case!r}")


# ----------------------------------------------------------------------------
# strategies bound to capabilities


def _general(caps):
    return C.attention_case(caps)


def _no_dropout(caps):
    return C.attention_case(caps - {"dropout"})


def _permutable(caps):
    """Positional ALiBi does not commute with a key permutation (a bias array would). The
    permuted call folds causal into the mask array, so it is a non-causal call."""
    if hasattr(caps, "require"):
        caps.require("causal", ("non_causal",))
    return C.attention_case(caps - {"alibi_slopes"})


def _causal(caps):
    """Alignment of the whole (Lq, Lk) matrix: no per-sequence varlen alignment here."""
    return C.attention_case(caps - {"window", "varlen"}, force={"causal": True})


def _windowed(caps):
    return _windowed_case(caps)


@st.composite
def _windowed_case(draw, caps):
    case = draw(C.attention_case(caps - {"mask_array", "mask_predicate", "varlen"}))
    if "window" not in case.kwargs:
        side = sizes.window_sides(caps)
        case = case.with_kwargs(window=(draw(side), draw(side)))
        if "causal" in caps and "without_causal" not in C.allowed(caps, "window_causal", ("without_causal",)):
            case = case.with_kwargs(causal=True)
    return case


def _alignment(caps):
    return C.attention_case(caps - {"window", "mask_predicate", "varlen"})


def _backward(caps):
    return C.attention_case(caps - {"sinks"}, max_len=5, max_dim=6)


def _backward_small(caps):
    """The backward cases at the small sizes whatever the adapter's tiles and head_dims: the
    central differences of ``spec_gradients_fd`` take 4 Lk Dv steps of the whole forward at
    once (gigabytes at tile scale, Lk ~ 200, Dv = 64); backward_matches_reference checks the
    gradients at the kernel's tile sizes."""
    if hasattr(caps, "tiles") and (caps.tiles or caps.head_dims):
        caps = Declared(caps, declines=caps.declines, precision=caps.precision, max_len=caps.max_len,
                        convention=caps.convention)
    return _backward(caps)


def _dropout(caps):
    if hasattr(caps, "require"):
        caps.require("dropout_p", C.ATTENTION_OPTIONS["dropout_p"].values)
    return C.attention_case(caps - {"sinks"}).filter(lambda c: "dropout_p" in c.kwargs)


def _extreme(caps):
    return C.attention_case(caps - {"dropout", "softcap"}, magnitudes=(30.0, 100.0))


def _masked_rows(caps):
    return C.attention_case(caps).filter(lambda c: not C.visible(c).any(axis=-1).all())


_ALL_BUGS_FORWARD = (
    "top_left_for_bottom_right", "ignore_align", "window_off_by_one", "head_map_mod", "no_scale",
    "inverted_causal", "nan_empty_rows", "uniform_empty_rows", "dropout_no_rescale", "online_no_rescale",
    "padding_on_queries", "alibi_top_left", "sink_in_numerator", "sink_scaled", "varlen_packed_causal",
    *tiled.WRONG,
)

PROPERTIES = [
    Property("matches_reference", "attention", check_matches_reference, _general,
             "out and lse equal refimpl.attention within the reasoned bound", rejects=_ALL_BUGS_FORWARD),
    Property("convex_combination", "attention", check_convex_combination, _no_dropout,
             "each output row is a convex combination of the attended values",
             rejects=("online_no_rescale", "sink_in_numerator")),
    Property("key_permutation_invariance", "attention", check_key_permutation_invariance, _permutable,
             "permuting keys, values and mask columns together changes nothing",
             requires=frozenset({"mask_array"}), rejects=("online_no_rescale",)),
    Property("gqa_equals_repeated_mha", "attention", check_gqa_equals_repeated_mha, _general,
             "GQA equals MHA with k/v repeated (head h reads kv head h // G)",
             requires=frozenset({"gqa"}), rejects=("head_map_mod",)),
    Property("causal_ignores_future", "attention", check_causal_ignores_future, _causal,
             "causal rows do not depend on keys after their aligned position",
             requires=frozenset({"causal"}), rejects=("inverted_causal", "top_left_for_bottom_right")),
    Property("window_ignores_outside", "attention", check_window_ignores_outside, _windowed,
             "window rows do not depend on keys outside [p - left, p + right]",
             requires=frozenset({"window"}), rejects=("window_off_by_one",)),
    Property("alignment_relation", "attention", check_alignment_relation, _alignment,
             "bottom_right equals top_left when Lq == Lk and each matches the spec otherwise",
             requires=frozenset({"causal", "top_left"}), rejects=("ignore_align", "top_left_for_bottom_right")),
    Property("backward_finite_differences", "attention", check_backward_finite_differences, _backward_small,
             "analytic gradients agree with central finite differences (of its own forward in float64, of the spec in lower precisions)",
             requires=frozenset({"backward"}), rejects=("backward_no_D", "backward_no_softcap_grad", "backward_dk_one_head")),
    Property("backward_matches_reference", "attention", check_backward_matches_reference, _backward,
             "gradients equal refimpl.attention_backward",
             requires=frozenset({"backward"}), rejects=("backward_no_D", "backward_no_softcap_grad", "backward_dk_one_head")),
    Property("dropout_keep_mask", "attention", check_dropout_keep_mask, _dropout,
             "dropout by an explicit keep-mask: out = (P * keep / (1 - p)) V, lse unchanged",
             requires=frozenset({"dropout"}), rejects=("dropout_no_rescale", "dropout_before_softmax")),
    Property("extreme_scores", "attention", check_extreme_scores, _extreme,
             "scores up to ~1e4 in magnitude: no overflow or NaN, equal to the spec", rejects=("no_max_subtraction",)),
    Property("default_scale", "attention", check_default_scale, _general,
             "default scale is 1/sqrt(D)", requires=frozenset({"scale"}), rejects=("no_scale",)),
    Property("fully_masked_rows", "attention", check_fully_masked_rows, _masked_rows,
             "a fully masked row gives out 0 and lse -inf (the declared convention's values under convention=)",
             requires=frozenset({"mask_array"}), rejects=("nan_empty_rows", "uniform_empty_rows")),
    Property("inputs_not_mutated", "attention", check_inputs_not_mutated, _general,
             "inputs are never modified", rejects=("mutates_input",)),
]
