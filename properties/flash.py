"""Conformance properties of tiled (FlashAttention) implementations, kind "flash".

A *flash* adapter exposes the tile sizes, so the properties can draw them
(any sizes, dividing the lengths or not):

    forward(q, k, v, *, block_q, block_k, variant, skip_masked_tiles=True,
            return_stats=False, **attention_kwargs) -> (out, lse) [, stats]
    backward(q, k, v, out, lse, dout, *, block_q, block_k, **kw) -> (dq, dk, dv)
    split_kv(q, k, v, *, block_q, block_k, boundaries, **kw) -> (out, lse)

with capabilities: those of attention (``properties.attention_cases``) plus
"fa1", "fa2" (variants; at least one), "stats" (``return_stats`` gives an object with
``tiles_skipped``), "skip_toggle" (``skip_masked_tiles``), "split_kv", "backward";
their exact meanings are ``FLASH_KIND``. An adapter declaring ``tiles`` gets its
block sizes from them and lengths around their multiples (``properties.sizes``).

This module also defines:

* ``FLASH``: ``refimpl.flash_attention`` (fa1 and fa2, several tile sizes) and
  ``refimpl.split_kv_attention`` as plain *attention* adapters, so every
  attention property (``properties.attention.PROPERTIES``) runs against them;
* ``compact_flash`` etc. (``properties.flash_compact``): a second, compact tiled
  implementation (FA2 and FA1 loops written out again; scores from
  ``properties.attention_problem``) that, with ``bug=...``, becomes one of the
  deliberately wrong implementations in ``WRONG``:

    no_rescale                       accumulator not rescaled by exp(m - m') when the running max grows
    wrong_l                          divides by the last key tile's row sum instead of the running l
    drop_last_partial_k_tile         loops over whole key tiles only: the last partial one is dropped
    double_count_last_partial_k_tile the last partial key tile is processed twice (main loop + "tail")
    drop_last_partial_q_tile         loops over whole query tiles only: the last rows stay 0
    skip_partial_tile                block skipping drops tiles that are only partly masked
    fa1_forgets_old_l                FA1 step d without diag(l): the normalised O is treated as unnormalised
    backward_no_D                    tiled backward with dS = P * dP (the rowsum(dO * O) term dropped)
    backward_dq_not_accumulated      dQ_i overwritten by each key tile instead of accumulated
    split_merge_average              split-KV partials averaged instead of weighted by exp(lse_c - lse)
    split_chunk_mask_realigned       each chunk run as attention over k[a:b] with the same keywords:
                                     causal/window re-aligned to the chunk (the pitfall of refimpl.split_kv)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl.flash import flash_attention, flash_attention_backward
from refimpl.sdpa import AttentionMask
from refimpl.split_kv import split_kv_attention

from . import attention as A
from . import attention_cases as C
from .attention_impls import AttentionAdapter
from .core import Property, Unsupported
from .flash_compact import compact_flash, compact_flash_backward, compact_split_kv
from .protocol import Capability, Kind
from .tolerance import compare_close, compare_lse, flash_forward_bounds  # noqa: F401 (re-exported)
from .strategy_cache import sampled

# ----------------------------------------------------------------------------
# adapters


FLASH_KIND = Kind(
    name="flash",
    doc="Tiled exact attention whose tile sizes the suite chooses: forward(q, k, v, *, block_q, block_k, variant, "
        "**keywords of refimpl.attention) -> (out, lse), compared with refimpl.attention (tiled float64 bound, "
        "properties.tolerance.flash_forward_bounds). Tile sizes are drawn from the adapter's ``tiles`` when it "
        "declares them (lengths then around their multiples), else from 1 to L + 2.",
    methods={
        "forward": "forward(q, k, v, *, block_q, block_k, variant, skip_masked_tiles=True, return_stats=False, "
                   "**attention keywords) -> (out, lse), or (out, lse, stats) with return_stats=True",
        "backward": "backward(q, k, v, out, lse, dout, *, block_q, block_k, **attention keywords) -> (dq, dk, dv)",
        "split_kv": "split_kv(q, k, v, *, block_q, block_k, boundaries, **attention keywords) -> (out, lse): "
                    "partials over the key chunks cut at boundaries, merged",
    },
    required=("forward",),
    capabilities={
        **{c: cap for c, cap in C.ATTENTION_CAPABILITIES.items() if c not in C.EXTENSION_CAPS | {"backward"}},
        "backward": Capability("backward(q, k, v, out, lse, dout, *, block_q, block_k, **kw) -> (dq, dk, dv): "
                               "the FA2 backward from the saved (out, lse)", methods=("backward",)),
        "fa1": Capability("variant='fa1': key tiles outer, output normalised at every step"),
        "fa2": Capability("variant='fa2': query tiles outer, normalised once at the end"),
        "stats": Capability("return_stats=True returns a third value with .tiles_skipped (int): tiles the mask "
                            "hides entirely and the kernel skipped"),
        "skip_toggle": Capability("skip_masked_tiles=False disables tile skipping (tiles_skipped == 0)"),
        "split_kv": Capability("split_kv(...) computes partial (out, lse) per key chunk and merges them",
                               methods=("split_kv",)),
    },
    options={o: opt for o, opt in C.ATTENTION_OPTIONS.items() if o != "alibi_ndim"},
    one_of=(("fa1", "fa2"),),
    notes=("lse is always compared (a tiled kernel keeps it for its merge and backward); the 'lse' capability "
           "is not consulted",
           "no conventions: fully masked rows give exactly (0, -inf); key_padding, alibi_slopes, sinks and varlen "
           "are attention-kind capabilities only"),
)


@dataclasses.dataclass(frozen=True)
class FlashAdapter:
    """Adapter protocol for tiled implementations (``FLASH_KIND``; module docstring)."""

    name: str
    forward: Callable
    capabilities: frozenset
    backward: Callable | None = None
    split_kv: Callable | None = None
    kind: str = "flash"
    precision: str = "float64"
    declines: dict = dataclasses.field(default_factory=dict)
    tiles: tuple | None = None
    head_dims: tuple | None = None
    max_len: int | None = None


KINDS = (FLASH_KIND,)
FLASH_CAPS = frozenset(FLASH_KIND.capabilities)

REFIMPL_FLASH = FlashAdapter(
    name="refimpl.flash_attention",
    forward=flash_attention,
    backward=flash_attention_backward,
    split_kv=split_kv_attention,
    capabilities=FLASH_CAPS,
)


def _fixed_tiles(block_q: int, block_k: int, variant: str) -> AttentionAdapter:
    """refimpl.flash_attention at fixed tiles, as an attention adapter."""
    fwd = functools.partial(flash_attention, block_q=block_q, block_k=block_k, variant=variant)

    def bwd(q, k, v, dout, **kw):
        out, lse = fwd(q, k, v, **kw)
        return flash_attention_backward(q, k, v, out, lse, dout, block_q=block_q, block_k=block_k, **kw)

    return AttentionAdapter(
        name=f"refimpl.flash_attention[{variant},{block_q}x{block_k}]", forward=fwd, backward=bwd,
        capabilities=C.BASE_CAPS, tiling=(block_k, 1),
    )


def _split_adapter(num_splits: int, block_q: int, block_k: int) -> AttentionAdapter:
    return AttentionAdapter(
        name=f"refimpl.split_kv_attention[{num_splits} splits,{block_q}x{block_k}]",
        forward=functools.partial(split_kv_attention, num_splits=num_splits, block_q=block_q, block_k=block_k),
        capabilities=C.BASE_CAPS - {"backward"}, tiling=(block_k, num_splits),
    )


#: Tiled implementations as attention adapters: all attention properties run on them.
FLASH = [
    _fixed_tiles(1, 1, "fa2"),
    _fixed_tiles(2, 3, "fa2"),
    _fixed_tiles(3, 2, "fa1"),
    _fixed_tiles(4, 4, "fa1"),
    _fixed_tiles(16, 16, "fa2"),
    _split_adapter(3, 2, 2),
]


# ----------------------------------------------------------------------------
# the compact second tiled implementation (properties.flash_compact) as adapters, and its wrong variants


def compact_adapter(bug=None) -> FlashAdapter:
    name = "properties.compact_flash" + (f"[bug={bug}]" if bug else "")
    bwd_bug = bug if bug and bug.startswith("backward") else None
    split_bug = bug if bug and bug.startswith("split") else None
    fwd_bug = None if (bwd_bug or split_bug) else bug
    return FlashAdapter(
        name=name,
        forward=functools.partial(compact_flash, bug=fwd_bug),
        backward=functools.partial(compact_flash_backward, bug=bwd_bug),
        split_kv=functools.partial(compact_split_kv, bug=split_bug),
        capabilities=FLASH_CAPS,
    )


BUGS = (
    "no_rescale",
    "wrong_l",
    "drop_last_partial_k_tile",
    "double_count_last_partial_k_tile",
    "drop_last_partial_q_tile",
    "skip_partial_tile",
    "fa1_forgets_old_l",
    "backward_no_D",
    "backward_dq_not_accumulated",
    "split_merge_average",
    "split_chunk_mask_realigned",
)

#: Bundled implementations: the tiled ones (kind "flash") and, as attention
#: adapters, refimpl.flash_attention at fixed tiles and refimpl.split_kv_attention.
BUNDLED = [REFIMPL_FLASH, compact_adapter(), *FLASH]
WRONG = {bug: compact_adapter(bug) for bug in BUGS}


# ----------------------------------------------------------------------------
# cases


@dataclasses.dataclass(frozen=True)
class FlashCase:
    attn: C.AttnCase
    block_q: int
    block_k: int
    variant: str
    boundaries: tuple

    def __repr__(self) -> str:
        return (f"FlashCase(block_q={self.block_q}, block_k={self.block_k}, variant={self.variant!r}, "
                f"boundaries={self.boundaries}, {self.attn!r})")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))

    def side_by_side(self) -> list:
        """Snippet lines calling the adapter at the case's tiles and refimpl.attention."""
        return [
            "a = case.attn",
            "res = impl.forward(a.q, a.k, a.v, **case.tiles, variant=case.variant, **a.kwargs)",
            "ref_out, ref_lse = refimpl.attention(a.q, a.k, a.v, **a.kwargs)",
            "print('max |out - ref_out|:', np.max(np.abs(np.asarray(res[0], float) - ref_out)))",
        ]

    @property
    def tiles(self) -> dict:
        return dict(block_q=self.block_q, block_k=self.block_k)


def flash_case(caps: frozenset, **attention_case_kwargs):
    """An attention problem (only features in ``caps``), tile sizes from 1 to L + 2
    (so often not dividing L, and sometimes larger than it) or from the adapter's
    declared ``tiles``, a variant, and key-chunk boundaries for split-KV
    (repeated cuts give empty chunks)."""
    variants = sorted(frozenset(caps) & {"fa1", "fa2"})
    if not variants:
        raise Unsupported("declares neither 'fa1' nor 'fa2': no variant to run")
    return _flash_case(caps, tuple(variants), **attention_case_kwargs)


@st.composite
def _flash_case(draw, caps, variants, **attention_case_kwargs):
    attn = draw(C.attention_case(caps & C.BASE_CAPS, **attention_case_kwargs))
    Lq, Lk = attn.q.shape[2], attn.k.shape[2]
    tiles = getattr(caps, "tiles", ())
    block_q = draw(sampled(tiles) if tiles else st.integers(1, Lq + 2))
    block_k = draw(sampled(tiles) if tiles else st.integers(1, Lk + 2))
    variant = draw(sampled(variants))
    boundaries = tuple(sorted(draw(st.lists(st.integers(0, Lk), max_size=3))))
    return FlashCase(attn, block_q, block_k, variant, boundaries)


def _general(caps):
    return flash_case(caps)


def _backward(caps):
    return flash_case(caps, max_len=5, max_dim=6)


# ----------------------------------------------------------------------------
# checks


def _forward(impl, fc: FlashCase, **extra):
    a = fc.attn
    res = impl.forward(a.q, a.k, a.v, **fc.tiles, variant=fc.variant, **a.kwargs, **extra)
    return tuple(np.asarray(x, dtype=np.float64) if isinstance(x, np.ndarray) else x for x in res)


def _bounds(fc: FlashCase, ref_lse, chunks=1):
    a = fc.attn
    kw = a.kwargs
    return flash_forward_bounds(a.q, a.k, a.v, block_k=fc.block_k, scale=kw.get("scale"), softcap=kw.get("softcap"),
                                bias=kw.get("bias"), lse=ref_lse, chunks=chunks)


def _assert_close(what, fc, out, lse, ref_out, ref_lse, chunks=1, impl=None, relation=False):
    """Within the tiled float64 bound, or, for an adapter declaring a lower precision,
    within the bound properties.attention gives that precision (doubled for two runs
    of the same adapter, ``relation=True``)."""
    if impl is not None and getattr(impl, "precision", "float64") != "float64":
        atol_out, atol_lse = A._bounds(impl, fc.attn)
        if relation:
            atol_out, atol_lse = 2 * atol_out, 2 * atol_lse
    else:
        atol_out, atol_lse = _bounds(fc, ref_lse, chunks)
    compare_close("out", out, ref_out, atol_out, what)
    compare_lse("lse", lse, ref_lse, atol_lse, what)


def check_flash_matches_attention(impl, fc: FlashCase):
    """(out, lse) equal refimpl.attention's within the tiled bound; fully masked rows give exactly (0, -inf)."""
    a = fc.attn
    out, lse = _forward(impl, fc)
    ref_out, ref_lse = refimpl.attention(a.q, a.k, a.v, **a.kwargs)
    _assert_close(f"{impl.name} vs refimpl.attention on {fc!r}", fc, out, lse, ref_out, ref_lse, impl=impl)
    empty = np.isneginf(ref_lse)
    if np.any(out[empty] != 0):
        raise AssertionError(f"{impl.name}: a fully masked row must give out exactly 0; {fc!r}")


def check_fa1_equals_fa2(impl, fc: FlashCase):
    """FA1 (output normalised every step, key tiles outer) equals FA2 (deferred normalisation)."""
    fa1 = _forward(impl, dataclasses.replace(fc, variant="fa1"))
    fa2 = _forward(impl, dataclasses.replace(fc, variant="fa2"))
    _assert_close(f"{impl.name}: fa1 vs fa2 on {fc!r}", fc, fa1[0], fa1[1], fa2[0], fa2[1], impl=impl, relation=True)


def _as_attention(impl: FlashAdapter, fc: FlashCase) -> AttentionAdapter:
    """The flash adapter at the case's tiles, seen as an attention adapter."""

    def fwd(q, k, v, **kw):
        return impl.forward(q, k, v, **fc.tiles, variant=fc.variant, **kw)

    def bwd(q, k, v, dout, **kw):
        out, lse = fwd(q, k, v, **kw)
        return impl.backward(q, k, v, out, lse, dout, **fc.tiles, **kw)

    return AttentionAdapter(f"{impl.name}[{fc.variant},{fc.block_q}x{fc.block_k}]", fwd, impl.capabilities, bwd,
                            precision=getattr(impl, "precision", "float64"))


def check_flash_backward_matches_reference(impl, fc: FlashCase):
    """The tiled backward (from the saved lse) equals refimpl.attention_backward (bound of
    properties.attention.check_backward_matches_reference, in the adapter's precision)."""
    A.check_backward_matches_reference(_as_attention(impl, fc), fc.attn)


def check_flash_backward_finite_differences(impl, fc: FlashCase):
    """The tiled backward agrees with central differences of the tiled forward (float64), or of
    the spec's forward within the precision bound (lower precisions;
    properties.attention.check_backward_finite_differences)."""
    A.check_backward_finite_differences(_as_attention(impl, fc), fc.attn)


def visible_tile_grid(fc: FlashCase) -> np.ndarray:
    """bool (T_r, T_c): tiles where mask & causal & window leave some entry visible
    (for some batch entry and head), from the materialised mask."""
    a = fc.attn
    B, Hq, Lq, _ = a.q.shape
    Lk = a.k.shape[2]
    kw = a.kwargs
    vis = AttentionMask(kw.get("mask"), kw.get("causal", False), kw.get("align", "bottom_right"), kw.get("window"),
                        (B, Hq, Lq, Lk)).tile(slice(None), slice(None))
    vis = np.broadcast_to(vis, (B, Hq, Lq, Lk)).any(axis=(0, 1))
    return np.array([[vis[i : i + fc.block_q, j : j + fc.block_k].any() for j in range(0, Lk, fc.block_k)]
                     for i in range(0, Lq, fc.block_q)], dtype=bool).reshape(-(-Lq // fc.block_q), -(-Lk // fc.block_k))


def hidden_tile_count(fc: FlashCase) -> int:
    """Tiles of the (T_r, T_c) grid that mask & causal & window hide entirely."""
    return int((~visible_tile_grid(fc)).sum())


def check_block_skipping_invisible(impl, fc: FlashCase):
    """Skipping fully masked tiles changes no result, and exactly the fully masked tiles are skipped."""
    out1, lse1, stats1 = _forward(impl, fc, skip_masked_tiles=True, return_stats=True)
    out0, lse0, stats0 = _forward(impl, fc, skip_masked_tiles=False, return_stats=True)
    expected = hidden_tile_count(fc)
    if stats0.tiles_skipped != 0:
        raise AssertionError(f"{impl.name}: skipped {stats0.tiles_skipped} tiles with skip_masked_tiles=False; {fc!r}")
    if stats1.tiles_skipped != expected:
        raise AssertionError(
            f"{impl.name}: skipped {stats1.tiles_skipped} tiles, but exactly {expected} tiles are fully masked; {fc!r}"
        )
    _assert_close(f"{impl.name}: skipping on vs off on {fc!r}", fc, out1, lse1, out0, lse0, impl=impl, relation=True)


def check_split_kv_matches_attention(impl, fc: FlashCase):
    """Split-KV over any key partition (empty and fully masked chunks included) equals refimpl.attention."""
    a = fc.attn
    out, lse = impl.split_kv(a.q, a.k, a.v, **fc.tiles, boundaries=fc.boundaries, **a.kwargs)
    ref_out, ref_lse = refimpl.attention(a.q, a.k, a.v, **a.kwargs)
    _assert_close(f"{impl.name} split at {fc.boundaries} vs refimpl.attention on {fc!r}", fc,
                  np.asarray(out, float), np.asarray(lse, float), ref_out, ref_lse, chunks=len(fc.boundaries) + 1, impl=impl)


_TILING_BUGS = ("no_rescale", "wrong_l", "drop_last_partial_k_tile", "double_count_last_partial_k_tile",
                "drop_last_partial_q_tile", "skip_partial_tile", "fa1_forgets_old_l")
_BACKWARD_BUGS = ("backward_no_D", "backward_dq_not_accumulated")

PROPERTIES = [
    Property("flash_matches_attention", "flash", check_flash_matches_attention, _general,
             "tiled (out, lse) equal refimpl.attention for any tile sizes, masks and shapes",
             rejects=_TILING_BUGS),
    Property("fa1_equals_fa2", "flash", check_fa1_equals_fa2, _general,
             "FA1 (normalise every step) equals FA2 (deferred normalisation)",
             requires=frozenset({"fa1", "fa2"}), rejects=("fa1_forgets_old_l",)),
    Property("flash_backward_matches_reference", "flash", check_flash_backward_matches_reference, _backward,
             "tiled backward from (out, lse) equals refimpl.attention_backward",
             requires=frozenset({"backward"}), rejects=_BACKWARD_BUGS),
    Property("flash_backward_finite_differences", "flash", check_flash_backward_finite_differences, _backward,
             "tiled backward agrees with central finite differences",
             requires=frozenset({"backward"}), rejects=_BACKWARD_BUGS),
    Property("block_skipping_invisible", "flash", check_block_skipping_invisible, _general,
             "skipping fully masked tiles changes nothing; exactly those tiles are skipped",
             requires=frozenset({"stats", "skip_toggle"}), rejects=("skip_partial_tile",)),
    Property("split_kv_matches_attention", "flash", check_split_kv_matches_attention, _general,
             "split-KV (partials + merge) equals attention for any key partition",
             requires=frozenset({"split_kv"}), rejects=("split_merge_average", "split_chunk_mask_realigned")),
]
