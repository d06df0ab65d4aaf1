"""Hypothesis strategies for attention problems.

Arrays are generated from a drawn seed (``numpy.random.default_rng``), not
element by element: fast, reproducible from the printed case, and the shapes
and options (which Hypothesis does shrink) are where the edge cases live:
L = 1, L not a multiple of a tile, Lq != Lk, Dv != D, Hkv = 1 and Hkv = Hq,
fully masked rows, windows wider than the sequence, extreme score magnitudes.

Capabilities (an adapter declares those it supports; strategies draw only those):
    lse            returns the log-sum-exp
    causal         causal=True
    top_left       align="top_left" (bottom_right is always required)
    window         window=(left, right)
    mask_array     mask= bool array
    mask_predicate mask= refimpl.masks.Mask
    gqa            Hkv < Hq
    lq_ne_lk       Lq != Lk
    dv_ne_d        Dv != D
    softcap        softcap=
    bias           bias= (e.g. ALiBi)
    dropout        dropout_mask= / dropout_p=
    backward       adapter.backward(q, k, v, dout, **kwargs) -> (dq, dk, dv)
    scale          scale= keyword
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from refimpl import masks as M
from refimpl.sdpa import alibi_bias, alibi_slopes

ALL_CAPS = frozenset(
    "lse causal top_left window mask_array mask_predicate gqa lq_ne_lk dv_ne_d softcap bias dropout backward scale".split()
)


@dataclasses.dataclass(frozen=True)
class AttnCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    kwargs: dict
    seed: int

    def __repr__(self) -> str:
        kw = {
            key: (f"<{type(val).__name__} {getattr(val, 'shape', '')}>" if isinstance(val, np.ndarray) else val)
            for key, val in self.kwargs.items()
        }
        return f"AttnCase(q{self.q.shape}, k{self.k.shape}, v{self.v.shape}, seed={self.seed}, kwargs={kw})"

    def _repr_pretty_(self, p, cycle):  # Hypothesis/IPython printing: keep it short
        p.text(repr(self))

    def with_(self, **changes) -> "AttnCase":
        return dataclasses.replace(self, **changes)

    def with_kwargs(self, **kw) -> "AttnCase":
        return dataclasses.replace(self, kwargs={**self.kwargs, **kw})


def shapes(caps: frozenset, *, max_len: int = 9, max_dim: int = 8):
    """Strategy for (B, Hq, Hkv, Lq, Lk, D, Dv)."""

    @st.composite
    def draw_shapes(draw):
        B = draw(st.integers(1, 2))
        Hkv = draw(st.integers(1, 3))
        G = draw(st.integers(1, 3)) if "gqa" in caps else 1
        Lq = draw(st.integers(1, max_len))
        Lk = draw(st.integers(1, max_len)) if "lq_ne_lk" in caps else Lq
        D = draw(st.integers(1, max_dim))
        Dv = draw(st.integers(1, max_dim)) if "dv_ne_d" in caps else D
        return B, Hkv * G, Hkv, Lq, Lk, D, Dv

    return draw_shapes()


def _window_side(max_len):
    return st.one_of(st.none(), st.integers(0, 2), st.integers(0, max_len + 2))


@st.composite
def attention_case(
    draw,
    caps: frozenset = ALL_CAPS,
    *,
    max_len: int = 9,
    max_dim: int = 8,
    magnitudes=(0.3, 1.0, 3.0),
    force: dict | None = None,
    options: bool = True,
):
    """An attention problem using only features in ``caps``.

    ``force`` fixes keyword arguments (e.g. ``{"causal": True}``); ``options=False``
    draws no optional features beyond ``force``.
    """
    B, Hq, Hkv, Lq, Lk, D, Dv = draw(shapes(caps, max_len=max_len, max_dim=max_dim))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.sampled_from(magnitudes))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, Lq, D)) * mag
    k = rng.standard_normal((B, Hkv, Lk, D)) * mag
    v = rng.standard_normal((B, Hkv, Lk, Dv))
    kw: dict = {}
    if options:
        if "causal" in caps and draw(st.booleans()):
            kw["causal"] = True
        if "top_left" in caps and draw(st.booleans()):
            kw["align"] = "top_left"
        if "window" in caps and draw(st.booleans()):
            kw["window"] = (draw(_window_side(max_len)), draw(_window_side(max_len)))
        mask_kinds = ["none"]
        if "mask_array" in caps:
            mask_kinds += ["array", "array_rows_empty"]
        if "mask_predicate" in caps:
            mask_kinds += ["predicate"]
        kind = draw(st.sampled_from(mask_kinds))
        if kind == "array":
            kw["mask"] = rng.random((B, 1, Lq, Lk)) < 0.7
        elif kind == "array_rows_empty":
            m = rng.random((Lq, Lk)) < 0.7
            m[rng.random(Lq) < 0.4] = False  # some fully masked rows
            kw["mask"] = m
        elif kind == "predicate":
            kw["mask"] = draw(
                st.sampled_from(
                    [
                        M.Dilated(2, 2),
                        M.Strided(3),
                        M.PrefixLM(2),
                        M.DSA(window=2, stride=3),
                        M.GlobalTokens([0]) | M.SlidingWindow(1, 1),
                        ~M.Causal(),
                    ]
                )
            )
        if "softcap" in caps and draw(st.booleans()):
            kw["softcap"] = draw(st.sampled_from([0.5, 2.0, 30.0]))
        if "bias" in caps and draw(st.booleans()):
            if draw(st.booleans()):
                kw["bias"] = alibi_bias(alibi_slopes(Hq), Lq, Lk, align=kw.get("align", "bottom_right"))
            else:
                kw["bias"] = rng.standard_normal((1, Hq, Lq, Lk))
        if "scale" in caps and draw(st.booleans()):
            kw["scale"] = draw(st.sampled_from([0.05, 0.5, 1.0, 2.0]))
        if "dropout" in caps and draw(st.booleans()):
            p = draw(st.sampled_from([0.1, 0.5]))
            kw["dropout_p"] = p
            kw["dropout_mask"] = rng.random((B, Hq, Lq, Lk)) >= p
    if force:
        kw.update(force)
    return AttnCase(q, k, v, kw, seed)


def visible(case: AttnCase) -> np.ndarray:
    """bool (B, Hq, Lq, Lk): which keys each query may attend to (from refimpl's mask logic)."""
    from refimpl.sdpa import AttentionMask

    B, Hq, Lq, _ = case.q.shape
    Lk = case.k.shape[2]
    kw = case.kwargs
    am = AttentionMask(kw.get("mask"), kw.get("causal", False), kw.get("align", "bottom_right"), kw.get("window"), (B, Hq, Lq, Lk))
    vis = np.broadcast_to(am.tile(slice(None), slice(None)), (B, Hq, Lq, Lk))
    bias = kw.get("bias")
    if bias is not None:
        vis = vis & np.isfinite(np.broadcast_to(bias, (B, Hq, Lq, Lk)))
    return vis
