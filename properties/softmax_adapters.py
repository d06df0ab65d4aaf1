"""Adapters of the softmax and merge kinds: the adapter classes ``SoftmaxAdapter`` and
``MergeAdapter``, the refimpl adapters, the low-precision adapters (``lowp_softmax_adapter``,
``lowp_merge_adapter``: float32 arithmetic, results rounded to the precision, optionally with a
bug), and the wrong implementations ``WRONG`` that ``properties.softmax``'s properties must reject
(no max subtraction, NaN on an empty row, an online sum not rescaled, softmax(2x), merges that
average, overflow or give NaN for the identity).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

import refimpl

from .tolerance import round_to


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

WRONG = {
    "softmax_no_max_subtraction": SoftmaxAdapter("wrong[softmax_no_max_subtraction]", _softmax_no_max, refimpl.logsumexp, refimpl.online_logsumexp),
    "nan_on_empty_row": SoftmaxAdapter("wrong[nan_on_empty_row]", _softmax_nan_empty, _lse_nan_empty, refimpl.online_logsumexp),
    "online_no_rescale": SoftmaxAdapter("wrong[online_no_rescale]", refimpl.softmax, refimpl.logsumexp, _online_no_rescale),
    "softmax_sharpened": SoftmaxAdapter("wrong[softmax_sharpened]", _softmax_sharpened, refimpl.logsumexp, refimpl.online_logsumexp),
    "merge_average": MergeAdapter("wrong[merge_average]", _merge_average),
    "merge_no_max_subtraction": MergeAdapter("wrong[merge_no_max_subtraction]", _merge_no_max),
    "merge_nan_identity": MergeAdapter("wrong[merge_nan_identity]", _merge_nan_identity),
}
