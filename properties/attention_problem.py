"""The attention problem of the properties' own tiled kernels: arguments from the spec, arithmetic their own.

``properties.tiled`` (the bundled 64-tile kernels) and ``properties.flash`` (the compact FA1 / FA2
and their wrong variants) are implementations checked *against* ``refimpl``: a scoring bug shared
with the oracle would pass unseen. So they take only the validated arguments from the spec
(``refimpl.definition.attention_arguments``: the same checks and messages, and the visibility of
each (query, key) pair as ``refimpl.masks`` defines it) and form every score here:

    R = scale * <q_i, k_j>     computed on q / 2^a and k / 2^b (exact powers of two), scaled back
    S = c tanh(R / c)          with softcap c
    S = S + bias,  S = -inf where hidden

Heads are kept as (B, Hkv, G, ...): query head h = kv * G + g reads kv head kv (GQA).
"""

from __future__ import annotations

import numpy as np

from refimpl.definition import attention_arguments

KEYWORDS = ("mask", "causal", "align", "window", "scale", "softcap", "bias", "dropout_mask", "dropout_p")


def split_heads(x: np.ndarray, Hkv: int) -> np.ndarray:
    """(B, Hq, ...) -> (B, Hkv, G, ...); a head axis of size 1 (broadcast) stays size 1 on both."""
    if x.shape[1] == 1:
        return x[:, :, None]
    return x.reshape(x.shape[0], Hkv, x.shape[1] // Hkv, *x.shape[2:])


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, Hkv, G, ...) -> (B, Hq, ...)."""
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def exp_shift(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """exp(x - m) with m = -inf read as 0 (a set with nothing visible: exp(-inf) = 0, never NaN)."""
    return np.exp(x - np.where(np.isneginf(m), 0.0, m))


def _exponent(x: np.ndarray) -> int:
    a = float(np.max(np.abs(x), initial=0.0))
    return int(np.frexp(a)[1]) if a > 0 else 0


def _tile(x, qs: slice, ks: slice):
    """The (qs, ks) block of a 4-D array broadcastable to (B, Hq, Lq, Lk) (size-1 axes kept)."""
    if not isinstance(x, np.ndarray):
        return x
    return x[:, :, qs if x.shape[2] > 1 else slice(None), ks if x.shape[3] > 1 else slice(None)]


class Problem:
    """Validated q, k, v and keywords; scores, visibility and dropout scale of any tile."""

    def __init__(self, q, k, v, kw: dict):
        kw = {n: kw[n] for n in KEYWORDS if n in kw}
        q, self.k, self.v, self.scale, self.softcap, vis, bias, Z = attention_arguments(q, k, v, **kw)
        self.B, self.Hq, self.Lq, self.D = q.shape
        self.Hkv, self.Lk, self.Dv = self.k.shape[1], self.k.shape[2], self.v.shape[3]
        self.G = self.Hq // self.Hkv
        self.q = split_heads(q, self.Hkv)
        self.visible = vis.reshape((1,) * (4 - vis.ndim) + vis.shape)
        self.trivial = bool(self.visible.all())
        self.bias, self.Z = bias, Z

    def q5(self, qs: slice = slice(None)) -> np.ndarray:
        return self.q[..., qs, :]

    def kv(self, ks: slice = slice(None)):
        return self.k[:, :, ks], self.v[:, :, ks]

    def visible_tile(self, qs: slice, ks: slice) -> np.ndarray:
        """bool, broadcastable to (B, Hq, nq, nk)."""
        return _tile(self.visible, qs, ks)

    def scores(self, qs: slice, ks: slice):
        """(S, R): final and pre-softcap scores of the tile, (B, Hkv, G, nq, nk); -inf where hidden."""
        q, k = self.q5(qs), self.k[:, :, ks]
        a, b = _exponent(q), _exponent(k)
        with np.errstate(over="ignore"):
            dot = np.matmul(np.ldexp(q, -a), np.ldexp(k, -b).swapaxes(-1, -2)[:, :, None])  # (B, Hkv, G, nq, nk)
            R = np.ldexp(dot * self.scale, a + b)
            S = R if self.softcap is None else self.softcap * np.tanh(R / self.softcap)
        if self.bias is not None:
            S = S + split_heads(np.broadcast_to(_tile(self.bias, qs, ks),
                                                (self.B, self.Hq) + S.shape[-2:]), self.Hkv)
        vis = split_heads(np.broadcast_to(self.visible_tile(qs, ks), (self.B, self.Hq) + S.shape[-2:]), self.Hkv)
        return np.where(vis, S, -np.inf), R

    def dropout_scale(self, qs: slice, ks: slice):
        """keep / (1 - p) for the tile, (B, Hkv, G, nq, nk), or None without dropout."""
        if not isinstance(self.Z, np.ndarray):
            return None
        n = (len(range(*qs.indices(self.Lq))), len(range(*ks.indices(self.Lk))))
        Z = np.broadcast_to(_tile(self.Z, qs, ks), (self.B, self.Hq) + n)
        return split_heads(Z, self.Hkv)
