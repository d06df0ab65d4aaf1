"""Hypothesis strategies for attention problems.

Arrays are generated from a drawn seed (``numpy.random.default_rng``), not
element by element: fast, reproducible from the printed case, and the shapes
and options (which Hypothesis does shrink) are where the edge cases live:
L = 1, L not a multiple of a tile, Lq != Lk, Dv != D, Hkv = 1 and Hkv = Hq,
fully masked rows, windows wider than the sequence, extreme score magnitudes.

Capabilities (an adapter declares those it supports; strategies draw only those;
the exact meanings are ``ATTENTION_KIND`` in ``properties.attention_kind``, the one
declaration of the protocol, re-exported here):
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
    key_padding    key_padding_mask= bool (B, Lk)
    alibi_slopes   alibi_slopes= (Hq,) or (B, Hq)
    sinks          sinks= (Hq,) one logit per head in the softmax denominator
    varlen         cu_seqlens_q= / cu_seqlens_k= packed sequences (B = 1)

With ``convention`` set (a name in ``refimpl.conventions.PRESETS``) the expected
values are the preset's (``reference``): keywords stay in the spec's form.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from refimpl import masks as M
from refimpl.alibi import alibi_bias, alibi_slopes
from refimpl.conventions import PRESETS
from refimpl.sinks import apply_sinks

from . import sizes
from .strategy_cache import BOOLEANS, SEEDS, cached, caps_key, sampled
from .attention_kind import (  # noqa: F401  (re-exported: defined here before)
    ALL_CAPS, ATTENTION_CAPABILITIES, ATTENTION_KIND, ATTENTION_OPTIONS, BASE_CAPS, EXTENSION_CAPS)
from .tolerance import round_to

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
            "import properties.attention_cases",
            f"out, lse = impl.forward({case}.q, {case}.k, {case}.v, **{case}.kwargs)",
            f"ref_out, ref_lse = properties.attention_cases.reference(impl, {case})  # refimpl.attention under "
            "impl's convention",
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
    (the drop rate p), key_padding (True), alibi_slopes (its rank 1 or 2), sinks (True),
    varlen ((lengths_q, lengths_k) of the packed sequences; B = 1 and Lq, Lk their sums);
    ``kwargs`` the plain keywords (causal, align, window, ...).
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
    if arrays.get("key_padding"):
        kpm = rng.random((B, Lk)) < 0.75
        kpm[rng.random(B) < 0.25] = False  # a batch entry whose keys are all padding
        kw["key_padding_mask"] = kpm
    ndim = arrays.get("alibi_slopes")
    if ndim == 1:
        kw["alibi_slopes"] = alibi_slopes(Hq)
    elif ndim == 2:
        kw["alibi_slopes"] = round_to(rng.uniform(0.01, 1.0, (B, Hq)), precision)
    if arrays.get("sinks"):
        kw["sinks"] = round_to(rng.standard_normal(Hq) * 2.0, precision)
    lens = arrays.get("varlen")
    if lens is not None:
        lens_q, lens_k = lens
        kw["cu_seqlens_q"] = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int64)
        kw["cu_seqlens_k"] = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int64)
    kw.update(kwargs)
    recipe = dict(shape=tuple(shape), seed=seed, magnitude=magnitude, precision=precision, arrays=arrays,
                  kwargs={k: v for k, v in kwargs.items() if k != "dropout_p"})
    return AttnCase(q, k, v, kw, seed, recipe)


def allowed(caps, option, values) -> tuple:
    """``values`` less those ``caps`` declines for ``option`` (plain frozensets decline nothing)."""
    return caps.allowed(option, values) if hasattr(caps, "allowed") else tuple(values)


def shapes(caps: frozenset, *, max_len: int = sizes.DEFAULT_MAX_LEN, max_dim: int = sizes.DEFAULT_MAX_DIM):
    """Strategy for (B, Hq, Hkv, Lq, Lk, D, Dv); at tile sizes when the adapter declares tiles."""
    return cached(("shapes", caps_key(caps), max_len, max_dim), lambda: _draw_shapes(caps, max_len, max_dim), caps)


@st.composite  # at module level: Hypothesis reads a composite's source when it is decorated
def _draw_shapes(draw, caps, max_len, max_dim):
    big = bool(getattr(caps, "tiles", ()))
    B = 1 if big else draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 2 if big else 3))
    G = draw(st.integers(1, 2 if big else 3)) if "gqa" in caps else 1
    lengths = sizes.lengths(caps, max_len)
    Lq = draw(lengths)
    Lk = draw(lengths) if "lq_ne_lk" in caps else Lq
    if Lq > Lk and "lq_gt_lk" not in allowed(caps, "lengths", ("lq_gt_lk",)):
        Lq, Lk = Lk, Lq
    dims = sizes.head_dims(caps, max_dim)
    D = draw(dims)
    Dv = draw(dims) if "dv_ne_d" in caps else D
    return B, Hkv * G, Hkv, Lq, Lk, D, Dv


def attention_case(caps: frozenset = ALL_CAPS, **kwargs):
    """An attention problem using only features in ``caps`` and no declined option value
    (:func:`_attention_case`); :class:`properties.core.Unsupported` at once when the declaration
    leaves no causal value to draw."""
    _causal_values(caps)
    return _attention_case(caps, **kwargs)


@st.composite
def _attention_case(
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
    arrays: dict = {}
    if "varlen" in caps and draw(BOOLEANS):
        shape, arrays["varlen"] = draw(cached(("varlen", caps_key(caps), shape), lambda: varlen_lengths(caps, shape), caps))
    seed = draw(SEEDS)
    mag = draw(sampled(magnitudes))
    kw: dict = {}
    if options:
        causal = _causal_values(caps)
        if causal == ("causal",) or ("causal" in causal and draw(BOOLEANS)):
            kw["causal"] = True
        if "top_left" in caps and draw(BOOLEANS):
            kw["align"] = "top_left"
        if "window" in caps and draw(BOOLEANS):
            sides = cached(("window_sides", caps_key(caps), max_len), lambda: sizes.window_sides(caps, max_len), caps)
            kw["window"] = (draw(sides), draw(sides))
            if "causal" in caps and "without_causal" not in allowed("window_causal", ("without_causal",)):
                kw["causal"] = True
        mask_kinds = ["none"]
        if "mask_array" in caps:
            mask_kinds += [{4: "array4", 2: "array2_rows_empty"}[n] for n in allowed("mask_ndim", (4, 2))]
        if "mask_predicate" in caps and "varlen" not in arrays:
            mask_kinds += ["predicate"]
        kind = draw(sampled(mask_kinds))
        if kind == "predicate":
            arrays["mask"] = f"predicate:{draw(st.integers(0, len(PREDICATES) - 1))}"
        elif kind != "none":
            arrays["mask"] = kind
        if "softcap" in caps and draw(BOOLEANS):
            vals = allowed("softcap", ATTENTION_OPTIONS["softcap"].values)
            if vals:
                kw["softcap"] = draw(sampled(vals))
        if "bias" in caps and draw(BOOLEANS):
            vals = allowed("bias_kind", ("alibi", "random"))
            if vals:
                arrays["bias"] = draw(sampled(vals))
        if "scale" in caps and draw(BOOLEANS):
            vals = allowed("scale", ATTENTION_OPTIONS["scale"].values)
            if vals:
                kw["scale"] = draw(sampled(vals))
        if "dropout" in caps and draw(BOOLEANS):
            vals = allowed("dropout_p", ATTENTION_OPTIONS["dropout_p"].values)
            if vals:
                arrays["dropout_mask"] = draw(sampled(vals))
        if "key_padding" in caps and draw(BOOLEANS):
            arrays["key_padding"] = True
        if "alibi_slopes" in caps and draw(BOOLEANS):
            vals = allowed("alibi_ndim", ATTENTION_OPTIONS["alibi_ndim"].values)
            if vals:
                arrays["alibi_slopes"] = draw(sampled(vals))
        if "sinks" in caps and "dropout_mask" not in arrays and draw(BOOLEANS):  # gpt-oss drops after the sink
            arrays["sinks"] = True
    if force:
        kw.update(force)
    if kw.get("causal") is not True and "non_causal" not in _causal_values(caps):
        kw["causal"] = True  # a causal-only kernel: what is forced or drawn is also causal
    return build(shape=shape, seed=seed, magnitude=mag, precision=getattr(caps, "precision", "float64"),
                 arrays=arrays, kwargs=kw)


def _causal_values(caps) -> tuple:
    """The causal values drawn: ("non_causal",) without the 'causal' capability, else those of
    ("causal", "non_causal") not declined; Unsupported when none is left."""
    if "causal" not in caps:
        return caps.require("causal", ("non_causal",)) if hasattr(caps, "require") else ("non_causal",)
    return caps.require("causal", ("causal", "non_causal")) if hasattr(caps, "require") else ("causal", "non_causal")


@st.composite
def varlen_lengths(draw, caps, shape):
    """(shape with B = 1 and Lq, Lk the packed totals, (lengths_q, lengths_k)) of 1..3 sequences;
    a sequence may be empty on one side; Lq_s <= Lk_s when 'lq_gt_lk' is declined."""
    _, Hq, Hkv, _, _, D, Dv = shape
    n = draw(st.integers(1, 3))
    lens_q, lens_k = [], []
    for _ in range(n):
        a = draw(st.integers(0, 4))
        b = draw(st.integers(0, 4)) if "lq_ne_lk" in caps else a
        if a > b and "lq_gt_lk" not in allowed(caps, "lengths", ("lq_gt_lk",)):
            a, b = b, a
        lens_q.append(a)
        lens_k.append(b)
    if sum(lens_q) == 0 or sum(lens_k) == 0:  # at least one query and one key in the batch
        lens_q[0] += 1
        lens_k[0] += 1
    return (1, Hq, Hkv, sum(lens_q), sum(lens_k), D, Dv), (tuple(lens_q), tuple(lens_k))


#: keywords of the attention kind that refimpl.attention does not take (``spec_kwargs`` folds them in)
EXTENSION_KEYWORDS = ("key_padding_mask", "alibi_slopes", "sinks", "cu_seqlens_q", "cu_seqlens_k")


def spec_kwargs(case: AttnCase, kwargs: dict | None = None) -> dict:
    """``refimpl.attention`` keywords equivalent to the case's (or ``kwargs``), sinks left out.

    key_padding_mask (B, Lk) becomes a (B, 1, 1, Lk) mask and-ed with ``mask``;
    alibi_slopes the bias ``refimpl.alibi.alibi_bias`` (added to ``bias``); cu_seqlens
    the ``refimpl.masks.Varlen`` mask carrying causal, align and window per sequence.
    """
    kw = dict(case.kwargs if kwargs is None else kwargs)
    for key in EXTENSION_KEYWORDS:
        kw.pop(key, None)
    src = case.kwargs if kwargs is None else kwargs
    B, Hq, Lq, _ = case.q.shape
    Lk = case.k.shape[2]
    extra = []
    if src.get("cu_seqlens_q") is not None:
        vl = M.Varlen(src["cu_seqlens_q"], src["cu_seqlens_k"], causal=bool(kw.pop("causal", False)),
                      align=kw.pop("align", "bottom_right"), window=kw.pop("window", None))
        extra.append(vl.materialize(Lq, Lk))
    if src.get("key_padding_mask") is not None:
        extra.append(np.asarray(src["key_padding_mask"], dtype=bool)[:, None, None, :])
    if extra:
        m = kw.get("mask")
        if isinstance(m, M.Mask):
            m = m.materialize(Lq, Lk)
        for e in extra:
            m = e if m is None else np.asarray(m, dtype=bool) & e
        kw["mask"] = np.ascontiguousarray(m)
    if src.get("alibi_slopes") is not None:
        if src.get("cu_seqlens_q") is not None:  # distances within each sequence, aligned per sequence
            p, key = M.Varlen(src["cu_seqlens_q"], src["cu_seqlens_k"], align=src.get("align", "bottom_right")).positions()
            sl = np.asarray(src["alibi_slopes"], dtype=np.float64)
            sl = sl.reshape((1,) * (2 - sl.ndim) + sl.shape)[..., None, None]
            ab = -sl * np.abs(p[:, None] - key[None, :])
        else:
            ab = alibi_bias(src["alibi_slopes"], Lq, Lk, align=kw.get("align", "bottom_right"))
        kw["bias"] = ab if kw.get("bias") is None else kw["bias"] + ab
    return kw


def convention(impl):
    """The ``refimpl.conventions`` preset ``impl`` declares (None: the spec's own)."""
    name = getattr(impl, "convention", None)
    return None if name is None else PRESETS[name]


def reference(impl, case: AttnCase, **override):
    """(out, lse) ``impl`` must give on ``case`` (with keywords ``override``): ``refimpl.attention``
    on ``spec_kwargs``, then the sinks (``refimpl.sinks.apply_sinks``), then ``impl``'s convention
    (``AttentionConvention.apply``: its fully masked rows and lse; lse None if it returns none)."""
    kw = {**case.kwargs, **override}
    spec = spec_kwargs(case, kw)
    import refimpl

    out, lse = refimpl.attention(case.q, case.k, case.v, **spec)
    return finish(impl, case, out, lse, kw)


def finish(impl, case: AttnCase, out, lse, kwargs: dict | None = None):
    """The spec's sink-free (out, lse) for ``case`` turned into what ``impl`` must give:
    sinks applied, then ``impl``'s convention (fully masked rows, their lse)."""
    kw = case.kwargs if kwargs is None else kwargs
    if kw.get("sinks") is not None:
        out, lse = apply_sinks(out, lse, kw["sinks"])
    conv = convention(impl)
    if conv is None:
        return out, lse
    slopes = kw.get("alibi_slopes") if kw.get("causal") else None
    out, conv_lse = conv.apply(case.q, case.v, out, lse, alibi_slopes=slopes,
                               float64=getattr(impl, "precision", "float64") == "float64")
    return out, (lse if conv_lse is None else conv_lse)


def visible(case: AttnCase) -> np.ndarray:
    """bool (B, Hq, Lq, Lk): which keys each query may attend to (from refimpl's mask logic)."""
    from refimpl.sdpa import AttentionMask

    B, Hq, Lq, _ = case.q.shape
    Lk = case.k.shape[2]
    kw = spec_kwargs(case)
    am = AttentionMask(kw.get("mask"), kw.get("causal", False), kw.get("align", "bottom_right"), kw.get("window"), (B, Hq, Lq, Lk))
    vis = np.broadcast_to(am.tile(slice(None), slice(None)), (B, Hq, Lq, Lk))
    bias = kw.get("bias")
    if bias is not None:
        vis = vis & np.isfinite(np.broadcast_to(bias, (B, Hq, Lq, Lk)))
    return vis
