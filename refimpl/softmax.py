"""Softmax, log-sum-exp, the online-softmax state, and the split-KV merge.

Conventions (pinned by this spec):

* All arithmetic in float64; inputs are never mutated.
* A row whose entries are all ``-inf`` (a fully masked row) has
  ``logsumexp = -inf`` and ``softmax = 0`` everywhere, never NaN.
* NaN and ``+inf`` inputs are rejected with ValueError: softmax of a row holding
  ``+inf`` has no value, and silently returning NaN is what this spec exists to
  prevent.

Formulas:

    logsumexp(x) = m + log(sum_j exp(x_j - m)),   m = max_j x_j
    softmax(x)_j = exp(x_j - logsumexp(x))

Online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022)
keeps, for a stream of blocks, the running maximum ``m`` and the running sum
``l = sum_j exp(x_j - m)``. A new block ``b`` updates

    m' = max(m, max(b)),   l' = l * exp(m - m') + sum_j exp(b_j - m')

and two states over disjoint parts merge with the same rule:

    m = max(m1, m2),       l = l1 * exp(m1 - m) + l2 * exp(m2 - m).

The empty state is ``(m, l) = (-inf, 0)``; ``exp(-inf - (-inf))`` is defined
here as 0 (the empty part contributes nothing), never NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import _validate as V
from ._exp import EXP_MAX_ULP, exp  # noqa: F401 (EXP_MAX_ULP public here: the stated error of the exp used)
from ._validate import as_float_array
from ._validate.conventions import attention_parts, cut_points, online_state, state_and_block, two_states


def _exp_shift(x: np.ndarray, m: np.ndarray, out=None) -> np.ndarray:
    """exp(x - m) elementwise, for m a maximum over a set containing x (m >= x).

    Where m = -inf every x is -inf too (an empty or fully masked set); such an m
    is read as 0, so exp(-inf - (-inf)) is exp(-inf) = 0, never NaN. Only the
    (small) m is inspected: two passes over x, the subtraction and the exp.
    ``out`` (e.g. ``x`` itself) receives the result. As m >= x, x - m overflows only
    towards -inf (x near -finfo.max, m near +finfo.max), where the exact exp underflows
    to 0 too: that overflow is exact, so it is not reported.
    """
    with np.errstate(over="ignore"):
        d = np.subtract(x, np.where(np.isneginf(m), 0.0, m), out=out)
    return exp(d, out=d) if isinstance(d, np.ndarray) else exp(d)  # 0-d operands give a NumPy scalar


def _softmax_lse(x: np.ndarray, axis: int = -1, *, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The formula of ``softmax_and_logsumexp`` on an already validated float64 array.

    With ``inplace`` the exponentials and the weights overwrite ``x`` (the hot
    paths pass score arrays they own): max, exp(x - m), sum, divide.
    """
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    e = _exp_shift(x, m, out=x if inplace else None)
    l = np.sum(e, axis=axis, keepdims=True)
    nonempty = l > 0
    p = np.divide(e, np.where(nonempty, l, 1.0), out=e)
    with np.errstate(divide="ignore"):
        lse = np.where(nonempty, m + np.log(np.where(nonempty, l, 1.0)), -np.inf)
    return p, np.squeeze(lse, axis=axis)


def softmax_and_logsumexp(x, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(softmax(x), logsumexp(x)) along ``axis``, sharing the max-subtracted exponentials.

        m = max_j x_j,  e_j = exp(x_j - m),  l = sum_j e_j
        softmax_j = e_j / l,   logsumexp = m + log(l)

    Dividing by ``l`` rather than forming ``exp(x_j - logsumexp)`` keeps the
    rounding error of each weight near n*u whatever the magnitude of x (the
    latter has an extra error of u * |logsumexp|). An all -inf row gives
    softmax 0 and logsumexp -inf.
    """
    x = as_float_array(x, "x", allow_neg_inf=True)
    return _softmax_lse(x, V.axis_index(axis, x.ndim))


def logsumexp(x, axis: int = -1) -> np.ndarray:
    """Natural-log log-sum-exp along ``axis``; -inf for an all -inf (or empty) row.

    Shapes: x (..., n) -> (...) for the default axis.
    """
    return softmax_and_logsumexp(x, axis)[1]


def softmax(x, axis: int = -1) -> np.ndarray:
    """exp(x_j - m) / sum_k exp(x_k - m), m the row max; a row of all -inf gives zeros.

    Max-subtracted, so scores of any finite magnitude give no overflow.
    """
    return softmax_and_logsumexp(x, axis)[0]


@dataclasses.dataclass(frozen=True)
class OnlineSoftmaxState:
    """Running statistics of online softmax over the parts seen so far.

    m: running maximum, shape (...); -inf while nothing (unmasked) was seen.
    l: running sum of exp(x - m), shape (...); 0 while nothing was seen.
    """

    m: np.ndarray
    l: np.ndarray

    def __post_init__(self):
        m, l = online_state(self.m, self.l)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "l", l)

    @classmethod
    def empty(cls, shape=()) -> "OnlineSoftmaxState":
        return cls(np.full(shape, -np.inf), np.zeros(shape))

    @property
    def lse(self) -> np.ndarray:
        """log-sum-exp of everything seen: m + log(l), -inf if l == 0."""
        with np.errstate(divide="ignore"):
            return np.where(self.l > 0, self.m + np.log(np.where(self.l > 0, self.l, 1.0)), -np.inf)


def online_softmax_update(state: OnlineSoftmaxState, block, axis: int = -1) -> OnlineSoftmaxState:
    """Fold one block of scores into the state (one pass: the block is read once).

    m' = max(m, max(block)),  l' = l * exp(m - m') + sum exp(block - m').
    """
    block, axis = state_and_block(state, block, axis, OnlineSoftmaxState)
    return _update(state, block, axis)


def _update(state: OnlineSoftmaxState, block: np.ndarray, axis: int) -> OnlineSoftmaxState:
    """``online_softmax_update`` on a checked state and block."""
    m_new = np.maximum(state.m, np.max(block, axis=axis, initial=-np.inf))
    l_new = state.l * _exp_shift(state.m, m_new) + np.sum(
        _exp_shift(block, np.expand_dims(m_new, axis)), axis=axis
    )
    return OnlineSoftmaxState(m_new, l_new)


def online_softmax_merge(a: OnlineSoftmaxState, b: OnlineSoftmaxState) -> OnlineSoftmaxState:
    """Combine states of two disjoint parts: associative and commutative.

    m = max(m_a, m_b),  l = l_a * exp(m_a - m) + l_b * exp(m_b - m);
    the empty state (-inf, 0) is the identity.
    """
    two_states(a, b, OnlineSoftmaxState)
    m = np.maximum(a.m, b.m)
    return OnlineSoftmaxState(m, a.l * _exp_shift(a.m, m) + b.l * _exp_shift(b.m, m))


def online_logsumexp(x, boundaries, axis: int = -1) -> np.ndarray:
    """log-sum-exp of ``x`` along ``axis`` computed in one pass over blocks.

    ``boundaries`` are the split points (sorted ints in [0, n]) that cut the axis
    into consecutive blocks; empty blocks are allowed. Equals ``logsumexp(x)``
    for any partition (up to rounding).
    """
    x = as_float_array(x, "x", allow_neg_inf=True)
    x = np.moveaxis(x, V.axis_index(axis, x.ndim), -1)
    cuts = cut_points(boundaries, x.shape[-1])
    state = OnlineSoftmaxState.empty(x.shape[:-1])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        state = _update(state, x[..., lo:hi], x.ndim - 1)
    return state.lse


def merge_attention_states(outs, lses):
    """Combine partial attention results over disjoint key sets (split-KV).

    Each part i attended to its own subset of keys and produced a normalised
    output ``out_i`` (..., Dv) and ``lse_i`` (...). The combination is exactly
    attention over the union of the key sets:

        lse = logsumexp_i(lse_i),   out = sum_i exp(lse_i - lse) * out_i

    (flash-decoding's combine step; flash-attn ``combine_attn_seqk_parallel`` in
    ``csrc/flash_attn/src/flash_fwd_kernel.h``). A part that saw no unmasked key
    is (out 0, lse -inf) and is the identity; if every part is empty the result
    is (0, -inf). Returns (out, lse).

    Accuracy: each lse_i arrives rounded, |error| ~ u |lse_i| (u = 2^-53), so
    each weight exp(lse_i - lse) carries a relative error up to about
    2 u max|lse| + (n + 4) u: harmless at ordinary scores, 3e-5 at scores near
    1e12. ``refimpl.split_kv_attention`` merges the states (m_i, l_i) instead,
    which stays exact at any magnitude; this function is the flash-decoding
    combine as libraries write it.
    """
    outs, lses = attention_parts(outs, lses)
    # the weights exp(lse_i - lse) are a softmax over the parts' lse values
    w, lse = _softmax_lse(np.stack(lses), axis=0)  # w 0 for empty parts
    out = np.einsum("p...,p...d->...d", w, np.stack(outs))
    return out, lse
