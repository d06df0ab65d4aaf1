"""Router scores and top-k selection: the first steps of ``refimpl.moe.route``, also used by
the losses and expert choice (re-exported by ``refimpl.moe.router``; see its docstring).

Public functions validate, the underscored ones compute on validated arguments.
"""

from __future__ import annotations

import numpy as np

from .. import _validate as V
from .._validate import as_float_array
from .._validate import moe as VM
from ..logistic import sigmoid
from ..softmax import _softmax_lse

SCORES = ("softmax", "sigmoid")
_ARGMAX_K = 8  # top_k by k argmax passes up to this k (a partition beyond)


def router_scores(logits, score: str = "softmax") -> np.ndarray:
    """p (T, E), float64 on both paths: softmax over experts (refimpl.softmax) or
    elementwise sigmoid (logits of any real dtype are converted to float64 first)."""
    return _router_scores(VM.router_logits(logits), V.choice(score, "score", SCORES))


def _router_scores(z: np.ndarray, score: str) -> np.ndarray:
    """``router_scores`` on validated float64 logits."""
    if score == "softmax":
        return _softmax_lse(z, axis=-1)[0]
    return sigmoid(z)  # "sigmoid"; refimpl.logistic: e^z below z = -709.8, where scipy's expit is 0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(T, k) int64: column indices of the k largest scores per row, descending,
    ties to the lower index: the first k columns of a stable sort of -scores.

    Computed without sorting whole rows: for k <= 8 and no -inf score, by k
    argmax passes (each takes the lowest index among ties; the chosen entry is
    then set below every other); otherwise v = the k-th largest score of the row
    (a partition), the chosen columns are those with s > v and the lowest-index
    ones with s == v, and these k are sorted by (-s, index).
    """
    scores = as_float_array(scores, "scores", ndim=2, allow_neg_inf=True, shape_doc="(T, E)")
    return _top_k(scores, VM.experts_per_token(k, scores.shape[1]))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``top_k`` on validated scores and k."""
    T, E = scores.shape
    if k <= _ARGMAX_K and T and not np.isneginf(scores.min()):
        # k argmax passes: argmax takes the lowest index among ties, and a chosen entry
        # set to -inf falls below every score left (none is -inf), so pass j picks the
        # j-th column of the stable sort of -scores
        rest = scores.copy()
        rows = np.arange(T)
        out = np.empty((T, k), dtype=np.int64)
        for j in range(k):
            out[:, j] = np.argmax(rest, axis=-1)
            rest[rows, out[:, j]] = -np.inf
        return out
    if k == E or T == 0:
        return np.argsort(-scores, axis=-1, kind="stable")[:, :k].astype(np.int64)
    v = np.partition(scores, E - k, axis=-1)[:, E - k, None]
    above, tie = scores > v, scores == v
    need = k - np.count_nonzero(above, axis=-1)  # ties at v to take, >= 1
    chosen = above | tie
    crowded = np.nonzero(np.count_nonzero(tie, axis=-1) > need)[0]  # rows with more ties than places
    if crowded.size:  # keep the lowest-index ties only
        tie_c = tie[crowded]
        chosen[crowded] = above[crowded] | (tie_c & (np.cumsum(tie_c, axis=-1) <= need[crowded, None]))
    cols = np.nonzero(chosen)[1].reshape(T, k)  # ascending column order within each row
    order = np.argsort(-np.take_along_axis(scores, cols, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(cols, order, axis=-1).astype(np.int64)
