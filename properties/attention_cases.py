"""Hypothesis strategies for attention problems.

Arrays are generated from a drawn seed (``numpy.random.default_rng``), not
element by element: fast, reproducible from the printed case, and the shapes
and options (which Hypothesis does shrink) are where the edge cases live:
L = 1, L not a multiple of a tile, Lq != Lk, Dv != D, Hkv = 1 and Hkv = Hq,
fully masked rows, windows wider than the sequence, extreme score magnitudes.

Capabilities (an adapter declares those it supports; strategies draw only those;
the exact meanings are ``ATTENTION_KIND``, the one declaration of the protocol):
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
from refimpl.alibi import alibi_bias, alibi_slopes

from . import sizes
from .protocol import Capability, Kind, Option
from .tolerance import round_to

ATTENTION_CAPABILITIES = {
    "lse": Capability("forward returns the log-sum-exp (B, Hq, Lq) of the final scores as its second value "
                      "(natural log, -inf for a fully masked row); without it the second value is ignored"),
    "causal": Capability("causal=True: key j visible to query i iff j <= i + o, o = Lk - Lq (align='bottom_right', "
                         "the default) or 0 (align='top_left', only with 'top_left')"),
    "top_left": Capability("align='top_left': causal and window positions counted from the top-left corner (o = 0)"),
    "window": Capability("window=(left, right): key j visible iff p - left <= j <= p + right, p = i + o; "
                         "a side None is unbounded (option window_side)"),
    "mask_array": Capability("mask= bool array broadcastable to (B, Hq, Lq, Lk), True = visible "
                             "(drawn (Lq, Lk) and (B, 1, Lq, Lk): option mask_ndim), combined with causal/window by and"),
    "mask_predicate": Capability("mask= a refimpl.masks.Mask predicate object (Dilated, Strided, PrefixLM, DSA, ...)"),
    "gqa": Capability("Hkv < Hq with Hq % Hkv == 0: query head h reads kv head h // (Hq / Hkv)"),
    "lq_ne_lk": Capability("Lq != Lk (queries and keys of different lengths, e.g. decode Lq = 1)"),
    "dv_ne_d": Capability("value head dim Dv != query/key head dim D"),
    "softcap": Capability("softcap=c: scores become c * tanh(s / c) after scaling, before bias and mask (option softcap)"),
    "bias": Capability("bias= float array broadcastable to (B, Hq, Lq, Lk) added after softcap; -inf hides the key "
                       "(drawn: ALiBi or Gaussian, option bias_kind)"),
    "dropout": Capability("dropout_mask= bool keep-mask (B, Hq, Lq, Lk) with dropout_p= p: kept weights divided by "
                          "(1 - p); the lse ignores dropout (option dropout_p)"),
    "backward": Capability("backward(q, k, v, dout, **same keywords) -> (dq, dk, dv), the gradient of "
                           "sum(dout * out)", methods=("backward",)),
    "scale": Capability("scale= keyword multiplies q.k (default 1/sqrt(D)); values option scale"),
}

ATTENTION_OPTIONS = {
    "mask_ndim": Option("rank of the drawn bool mask arrays", (2, 4)),
    "window_side": Option("a window side unbounded (None) or a finite int", ("unbounded", "finite")),
    "softcap": Option("softcap values drawn", (0.5, 2.0, 30.0)),
    "bias_kind": Option("bias arrays drawn: ALiBi (-slope |i + o - j|) or Gaussian", ("alibi", "random")),
    "scale": Option("scale values drawn", (0.05, 0.5, 1.0, 2.0)),
    "dropout_p": Option("dropout rates drawn", (0.1, 0.5)),
}

ATTENTION_KIND = Kind(
    name="attention",
    doc="Exact attention: forward(q, k, v, **keywords of refimpl.attention) -> (out, lse), compared with "
        "refimpl.attention. q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) float64 arrays (values exactly "
        "representable in the adapter's precision); out (B, Hq, Lq, Dv), lse (B, Hq, Lq).",
    methods={
        "forward": "forward(q, k, v, *, mask=None, causal=False, align='bottom_right', window=None, scale=None, "
                   "softcap=None, bias=None, dropout_mask=None, dropout_p=0.0) -> (out, lse); keywords of "
                   "undeclared capabilities are never passed",
        "backward": "backward(q, k, v, dout, **forward keywords) -> (dq, dk, dv)",
    },
    required=("forward",),
    capabilities=ATTENTION_CAPABILITIES,
    options=ATTENTION_OPTIONS,
)

ALL_CAPS = frozenset(ATTENTION_CAPABILITIES)

#: predicate masks drawn for "mask_predicate" (a recipe names one by its index)
PREDICATES = (
    M.Dilated(2, 2),
    M.Strided(3),
    M.PrefixLM(2),
    M.DSA(window=2, stride=3),
    M.GlobalTokens([0]) | M.SlidingWindow(1, 1),
    ~M.Causal(),
)


@dataclasses.dataclass(frozen=True)
class AttnCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    kwargs: dict
    seed: int
    recipe: dict | None = None  # build(**recipe) rebuilds this case (None once arrays were replaced)

    def __repr__(self) -> str:
        kw = {
            key: (f"<{type(val).__name__} {getattr(val, 'shape', '')}>" if isinstance(val, np.ndarray) else val)
            for key, val in self.kwargs.items()
        }
        return f"AttnCase(q{self.q.shape}, k{self.k.shape}, v{self.v.shape}, seed={self.seed}, kwargs={kw})"

    def _repr_pretty_(self, p, cycle):  # Hypothesis/IPython printing: keep it short
        p.text(repr(self))

    def with_(self, **changes) -> "AttnCase":
        if "recipe" not in changes and self.recipe is not None:
            changes["recipe"] = self._recipe_after(changes)
        return dataclasses.replace(self, **changes)

    def _recipe_after(self, changes):
        """The recipe still valid after ``changes``, or None (arrays replaced)."""
        if set(changes) & {"q", "k", "v"}:
            return None
        if "kwargs" not in changes:
            return self.recipe
        drawn = self.recipe["arrays"]
        plain, arrays = {}, {}
        for key, val in changes["kwargs"].items():
            if key in drawn:
                if val is not self.kwargs.get(key):
                    return None
                arrays[key] = drawn[key]
            elif key == "dropout_p":
                if "dropout_mask" not in changes["kwargs"] or val != self.kwargs.get(key):
                    return None
            elif isinstance(val, (np.ndarray, M.Mask)):
                return None
            else:
                plain[key] = val
        return {**self.recipe, "kwargs": plain, "arrays": arrays}

    def with_kwargs(self, **kw) -> "AttnCase":
        return self.with_(kwargs={**self.kwargs, **kw})

    def side_by_side(self, case="case") -> list:
        """Snippet lines calling the adapter and refimpl.attention on this case."""
        return [
            f"out, lse = impl.forward({case}.q, {case}.k, {case}.v, **{case}.kwargs)",
            f"ref_out, ref_lse = refimpl.attention({case}.q, {case}.k, {case}.v, **{case}.kwargs)",
            "print('max |out - ref_out|:', np.max(np.abs(np.asarray(out, float) - ref_out)))",
            "if lse is not None:",
            "    print('lse:', np.asarray(lse).ravel()[:6], 'refimpl:', ref_lse.ravel()[:6])",
        ]

    def python(self) -> str | None:
        """Python source rebuilding this case (for the reproduction snippet)."""
        if self.recipe is None:
            return None
        args = ", ".join(f"{k}={v!r}" for k, v in self.recipe.items())
        return f"properties.attention_cases.build({args})"


def build(*, shape, seed, magnitude=1.0, precision="float64", arrays=None, kwargs=None) -> AttnCase:
    """The attention case a recipe describes, from its seed.

    shape (B, Hq, Hkv, Lq, Lk, D, Dv); q, k ~ N(0, magnitude^2), v ~ N(0, 1),
    rounded to ``precision``; ``arrays`` names the array keywords drawn from the
    same generator in this order: mask ("array4", "array2_rows_empty",
    "predicate:<index into PREDICATES>"), bias ("alibi", "random"), dropout_mask
    (the drop rate p); ``kwargs`` the plain keywords (causal, align, window, ...).
    """
    arrays, kwargs = dict(arrays or {}), dict(kwargs or {})
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(seed)
    q = round_to(rng.standard_normal((B, Hq, Lq, D)) * magnitude, precision)
    k = round_to(rng.standard_normal((B, Hkv, Lk, D)) * magnitude, precision)
    v = round_to(rng.standard_normal((B, Hkv, Lk, Dv)), precision)
    kw: dict = {}
    mask = arrays.get("mask")
    if mask == "array4":
        kw["mask"] = rng.random((B, 1, Lq, Lk)) < 0.7
    elif mask == "array2_rows_empty":
        m = rng.random((Lq, Lk)) < 0.7
        m[rng.random(Lq) < 0.4] = False  # some fully masked rows
        kw["mask"] = m
    elif mask is not None:
        kw["mask"] = PREDICATES[int(mask.split(":")[1])]
    bias = arrays.get("bias")
    if bias == "alibi":
        kw["bias"] = alibi_bias(alibi_slopes(Hq), Lq, Lk, align=kwargs.get("align", "bottom_right"))
    elif bias == "random":
        kw["bias"] = rng.standard_normal((1, Hq, Lq, Lk))
    if bias is not None and precision != "float64":
        kw["bias"] = round_to(kw["bias"], precision)
    p = arrays.get("dropout_mask")
    if p is not None:
        kw["dropout_p"] = p
        kw["dropout_mask"] = rng.random((B, Hq, Lq, Lk)) >= p
    kw.update(kwargs)
    recipe = dict(shape=tuple(shape), seed=seed, magnitude=magnitude, precision=precision, arrays=arrays,
                  kwargs={k: v for k, v in kwargs.items() if k != "dropout_p"})
    return AttnCase(q, k, v, kw, seed, recipe)


def shapes(caps: frozenset, *, max_len: int = sizes.DEFAULT_MAX_LEN, max_dim: int = sizes.DEFAULT_MAX_DIM):
    """Strategy for (B, Hq, Hkv, Lq, Lk, D, Dv); at tile sizes when the adapter declares tiles."""
    big = bool(getattr(caps, "tiles", ()))

    @st.composite
    def draw_shapes(draw):
        B = 1 if big else draw(st.integers(1, 2))
        Hkv = draw(st.integers(1, 2 if big else 3))
        G = draw(st.integers(1, 2 if big else 3)) if "gqa" in caps else 1
        Lq = draw(sizes.lengths(caps, max_len))
        Lk = draw(sizes.lengths(caps, max_len)) if "lq_ne_lk" in caps else Lq
        D = draw(sizes.head_dims(caps, max_dim))
        Dv = draw(sizes.head_dims(caps, max_dim)) if "dv_ne_d" in caps else D
        return B, Hkv * G, Hkv, Lq, Lk, D, Dv

    return draw_shapes()


@st.composite
def attention_case(
    draw,
    caps: frozenset = ALL_CAPS,
    *,
    max_len: int = sizes.DEFAULT_MAX_LEN,
    max_dim: int = sizes.DEFAULT_MAX_DIM,
    magnitudes=(0.3, 1.0, 3.0),
    force: dict | None = None,
    options: bool = True,
):
    """An attention problem using only features in ``caps`` and no declined option value.

    ``force`` fixes keyword arguments (e.g. ``{"causal": True}``); ``options=False``
    draws no optional features beyond ``force``.
    """
    allowed = getattr(caps, "allowed", lambda option, values: values)
    shape = draw(shapes(caps, max_len=max_len, max_dim=max_dim))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.sampled_from(magnitudes))
    arrays: dict = {}
    kw: dict = {}
    if options:
        if "causal" in caps and draw(st.booleans()):
            kw["causal"] = True
        if "top_left" in caps and draw(st.booleans()):
            kw["align"] = "top_left"
        if "window" in caps and draw(st.booleans()):
            kw["window"] = (draw(sizes.window_sides(caps, max_len)), draw(sizes.window_sides(caps, max_len)))
        mask_kinds = ["none"]
        if "mask_array" in caps:
            mask_kinds += [{4: "array4", 2: "array2_rows_empty"}[n] for n in allowed("mask_ndim", (4, 2))]
        if "mask_predicate" in caps:
            mask_kinds += ["predicate"]
        kind = draw(st.sampled_from(mask_kinds))
        if kind == "predicate":
            arrays["mask"] = f"predicate:{draw(st.integers(0, len(PREDICATES) - 1))}"
        elif kind != "none":
            arrays["mask"] = kind
        if "softcap" in caps and draw(st.booleans()):
            vals = allowed("softcap", ATTENTION_OPTIONS["softcap"].values)
            if vals:
                kw["softcap"] = draw(st.sampled_from(vals))
        if "bias" in caps and draw(st.booleans()):
            vals = allowed("bias_kind", ("alibi", "random"))
            if vals:
                arrays["bias"] = draw(st.sampled_from(vals))
        if "scale" in caps and draw(st.booleans()):
            vals = allowed("scale", ATTENTION_OPTIONS["scale"].values)
            if vals:
                kw["scale"] = draw(st.sampled_from(vals))
        if "dropout" in caps and draw(st.booleans()):
            vals = allowed("dropout_p", ATTENTION_OPTIONS["dropout_p"].values)
            if vals:
                arrays["dropout_mask"] = draw(st.sampled_from(vals))
    if force:
        kw.update(force)
    return build(shape=shape, seed=seed, magnitude=mag, precision=getattr(caps, "precision", "float64"),
                 arrays=arrays, kwargs=kw)


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
