"""Attention presets: the conventions of real libraries, as named wrappers of ``attention``.

Libraries agree on the formula and disagree on details that change results:
where a causal mask is aligned when Lq != Lk, how many keys a "window of W"
holds, and what a fully masked row gives. Each preset below pins those details
as one library does, with the library's own window parameter, so that a kernel
author can ask "does my kernel match flash-attn?" and get the right oracle.
Facts were read from the named files (versions in the docstrings).

=================  ==============  ===========================  =====================  ===============
preset             causal / window  native window -> (left, right)  fully masked row out  lse of that row
=================  ==============  ===========================  =====================  ===============
SPEC               bottom_right    (left, right), None unbounded    0                     -inf
FLASH_ATTN2        bottom_right    (l, r) as the kernel sees it (*) 0                     +inf
FLASH_ATTN3        bottom_right    (l, r), -1 unbounded             0                     -inf
TORCH_SDPA         top_left        no window parameter              0                     (not returned)
FLEX_ATTENTION     top_left        W -> (W, 0), causal implied      0                     -inf
XFORMERS           top_left        W -> (W - 1, 0), causal implied  NaN (reference)       (not returned)
XFORMERS_BR        bottom_right    (l, r)                           NaN (reference)       (not returned)
JAX                top_left        w -> (w, w); (l, r)              mean of all values    mask_value + log Lk
HF_MISTRAL         bottom_right    W -> (W - 1, 0), causal implied  mean of all values(**) (not returned)
=================  ==============  ===========================  =====================  ===============

(*) flash-attn 2's host code rewrites the window before the kernel sees it (a side >= Lk
becomes -1, then a lone -1 side becomes Lk): with Lq >= Lk + 2 a "-1" right side still
hides keys. (**) NaN for float64 inputs (HF's eager softmax runs in float32, where
finfo(float64).min is -inf).

All use scale 1/sqrt(D) by default and map query head h to kv head h // (Hq/Hkv).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._validate import check_real_4d
from ._validate.conventions import alibi_with_bias, convention_fields, native_window
from .alibi import alibi_bias
from .masks import ALIGNMENTS
from .sdpa import attention
from .preset_registry import Registry, Source

JAX_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
"""``jax._src.nn.functions._get_large_negative`` for float32 logits."""


# Each library's window, mapped to the spec's (left, right) and whether it implies causal. A rule takes
# the arguments ``refimpl._validate.conventions.native_window`` returns for it (the native form checked).


def _flash_window(left, right):
    """FA3 (hopper/flash_api.cpp): -1 becomes Lk - 1 (left) / Lq - 1 (right), i.e. unbounded."""
    return (None if left < 0 else left, None if right < 0 else right), False


def _flash2_window(left, right, Lq, Lk):
    """What FA2's kernel masks, after its host code rewrites the window.

    csrc/flash_attn/flash_api.cpp (v2.8.3 and main), mha_fwd then set_params_fprop:

        if (left  >= seqlen_k) left  = -1;     if (right >= seqlen_k) right = -1;
        if (left < 0 && right >= 0) left  = seqlen_k;
        if (left >= 0 && right < 0) right = seqlen_k;

    and csrc/flash_attn/src/mask.h keeps key j of row i iff
    i + Lk - Lq - left <= j <= i + Lk - Lq + right (both -1: no window at all).
    A left side of Lk bounds nothing (j >= i - Lq); a right side of Lk means
    j <= i + 2 Lk - Lq, which hides keys of rows i < Lq - Lk - 1: with Lq >= Lk + 2,
    (2, -1) is not "unbounded on the right" (Lq = 10, Lk = 3: rows 0-3 see nothing).
    """
    if left >= Lk:
        left = -1
    if right >= Lk:
        right = -1
    if left < 0 and right < 0:
        return None, False
    return (Lk if left < 0 else left, Lk if right < 0 else right), False


_WINDOW_RULES = {
    "spec": lambda window: (window, False),
    "flash": _flash_window,
    "flash2": _flash2_window,
    "keys_including_self": lambda W: ((W - 1, 0), True),   # W keys including self, causal implied
    "flex": lambda W: ((W, 0), True),                      # W keys before self, causal implied
    "xformers_br": lambda left, right: ((left, right), False),
    "jax": lambda left, right: ((left, right), False),
    "none": None,                                          # no window parameter (refused when checked)
}


FULLY_MASKED = ("zero", "nan", "uniform")


@dataclasses.dataclass(frozen=True)
class AttentionConvention:
    """One library's attention conventions.

    name:          preset name.
    align:         alignment of causal masks and windows ("bottom_right" | "top_left").
    window_rule:   how the library's own window argument maps to (left, right), and
                   whether that window implies causal (see ``_WINDOW_RULES``).
    fully_masked:  what a row with no visible key outputs: "zero" | "nan" | "uniform"
                   (the mean of all values, what a finite mask value gives).
    masked_lse:    the lse such a row reports (+inf, -inf, "finite" for
                   mask_value + log Lk), or None when the library returns no lse.
    source:        where the behaviour was read.
    fully_masked_float64: what such a row gives for float64 inputs, when that differs.
    """

    name: str
    align: str
    window_rule: str
    fully_masked: str
    masked_lse: object
    source: str
    alibi_causal_lse_shift: bool = False
    fully_masked_float64: str | None = None

    def __post_init__(self):
        convention_fields(self.name, self.source, self.align, self.window_rule, self.fully_masked,
                          self.fully_masked_float64, self.masked_lse, self.alibi_causal_lse_shift,
                          alignments=ALIGNMENTS, window_rules=tuple(_WINDOW_RULES), outputs=FULLY_MASKED)

    def window(self, window, Lq=None, Lk=None) -> tuple[tuple | None, bool]:
        """(left, right) in the spec's sense (None: no window) and whether the library's
        window implies causal; ``window`` in the library's own form (see the module
        table). ``Lq``, ``Lk`` are needed where the library rewrites the window by
        the problem's lengths (flash_attn2)."""
        return _WINDOW_RULES[self.window_rule](*native_window(window, self.window_rule, Lq, Lk))

    def attention(self, q, k, v, *, causal=False, window=None, alibi_slopes=None, mask=None, **kwargs):
        """Attention as this library computes it; ``window`` in the library's own form.

        Other keywords are those of ``refimpl.attention`` (scale, softcap, bias,
        dropout_mask, dropout_p). ``alibi_slopes`` (H,) or (B, H) adds ALiBi in the
        flash-attn form. Returns (out, lse); lse is None for libraries that do not
        return one.
        """
        q, k, v = (check_real_4d(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        spec_window = None
        Lq, Lk = np.shape(q)[2], np.shape(k)[2]
        if window is not None:
            spec_window, implies_causal = self.window(window, Lq, Lk)
            causal = causal or implies_causal
        bias = kwargs.pop("bias", None)
        if alibi_slopes is not None:
            slopes, bias = alibi_with_bias(alibi_slopes, bias, np.shape(q)[:2] + (Lq, Lk))
            ab = alibi_bias(slopes, Lq, Lk, align=self.align)
            bias = ab if bias is None else bias + ab
        out, lse = attention(q, k, v, mask=mask, causal=causal, align=self.align, window=spec_window, bias=bias, **kwargs)
        return self.apply(q, v, out, lse, alibi_slopes=alibi_slopes if causal else None)

    def apply(self, q, v, out, lse, *, alibi_slopes=None, float64=None):
        """(out, lse) of the spec turned into what this library returns.

        ``out`` (B, Hq, Lq, Dv), ``lse`` (B, Hq, Lq) as ``refimpl.attention`` returns
        them for the same problem (a fully masked row has lse -inf there). Rows with
        lse -inf get this library's ``fully_masked`` output (NaN, or the mean of all
        Lk values of the row's kv head) and ``masked_lse``; lse is None for a library
        that returns none. ``alibi_slopes`` (Hq,) or (B, Hq): only for a causal
        problem with flash-attn ALiBi (``alibi_causal_lse_shift``: every other row's
        lse grows by slope * (i + Lk - Lq)). ``float64``: whether the library computes
        in float64 (selects ``fully_masked_float64``); default: ``q``'s dtype is float64.
        Inputs are not modified.
        """
        out, lse = np.asarray(out, dtype=np.float64), np.asarray(lse, dtype=np.float64)
        empty = np.isneginf(lse)
        fully_masked = self.fully_masked
        if float64 is None:
            float64 = np.asarray(q).dtype == np.float64
        if self.fully_masked_float64 is not None and float64:
            fully_masked = self.fully_masked_float64
        out = out.copy()
        if empty.any():
            if fully_masked == "nan":
                out[empty] = np.nan
            elif fully_masked == "uniform":
                G = np.shape(q)[1] // np.shape(v)[1]
                mean_v = np.repeat(np.asarray(v, dtype=np.float64), G, axis=1).mean(axis=2)  # (B, Hq, Dv)
                out = np.where(empty[..., None], mean_v[:, :, None, :], out)
        if self.masked_lse is None:
            return out, None
        lse = lse.copy()
        if self.masked_lse == "finite":
            lse[empty] = JAX_MASK_VALUE + np.log(np.shape(v)[2])
        else:
            lse[empty] = self.masked_lse
        if self.alibi_causal_lse_shift and alibi_slopes is not None:
            # flash-attn adds +slope * j under causal (row-shift of -slope*|i+o-j|): same
            # output, lse larger by slope * (i + o); mask.h apply_mask (alibi, causal branch).
            Lq, Lk = np.shape(q)[2], np.shape(v)[2]
            s = np.asarray(alibi_slopes, dtype=np.float64)
            s = s.reshape((1,) * (2 - s.ndim) + s.shape)[..., None]
            shift = s * (np.arange(Lq) + Lk - Lq)[None, None, :]
            lse = np.where(empty, lse, lse + shift)
        return out, lse


SPEC = AttentionConvention(
    "spec", "bottom_right", "spec", "zero", -np.inf,
    "this specification's defaults (docs/conventions.md#attention-defaults)"
)

FLASH_ATTN2 = AttentionConvention(
    "flash_attn2", "bottom_right", "flash2", "zero", np.inf,
    "Dao-AILab/flash-attention v2.8.3 (and main, Aug 2026): flash_attn/flash_attn_interface.py "
    "flash_attn_func (causal aligned bottom-right since 2.1; window [i+Lk-Lq-left, i+Lk-Lq+right] "
    "inclusive); csrc/flash_attn/flash_api.cpp mha_fwd + set_params_fprop rewrite the window first "
    "(a side >= seqlen_k becomes -1, then a lone -1 side becomes seqlen_k: see _flash2_window); "
    "csrc/flash_attn/src/softmax.h normalize_softmax_lse (fully masked row: out 0, lse +INFINITY; "
    "combine_attn_seqk_parallel also returns +inf when every split is empty); mask.h apply_mask "
    "(causal ALiBi as +slope*j, so lse is shifted by slope*(i+Lk-Lq))",
    alibi_causal_lse_shift=True,
)

FLASH_ATTN3 = AttentionConvention(
    "flash_attn3", "bottom_right", "flash", "zero", -np.inf,
    "Dao-AILab/flash-attention hopper/: softmax.h Softmax::finalize and epilogue_fwd.hpp store_zero "
    "(fully masked row: out 0, lse -INFINITY); same alignment as FA2; hopper/flash_api.cpp (main, "
    "Aug 2026) maps a -1 left side to seqlen_k - 1 and a -1 right side to seqlen_q - 1, both unbounded",
)

TORCH_SDPA = AttentionConvention(
    "torch_sdpa", "top_left", "none", "zero", None,
    "torch 2.14 torch/nn/functional.py scaled_dot_product_attention (is_causal: tril, top-left; "
    "bottom-right only via torch.nn.attention.bias.causal_lower_right); "
    "aten/src/ATen/native/transformers/attention.cpp _safe_softmax (since 2.5: an all -inf row gives 0); "
    "enable_gqa uses repeat_interleave; no public lse",
)

FLEX_ATTENTION = AttentionConvention(
    "flex_attention", "top_left", "flex", "zero", -np.inf,
    "pytorch-labs/attention-gym attn_gym/masks/causal.py causal_mask (q_idx >= kv_idx), "
    "attn_gym/masks/sliding_window.py generate_sliding_window (q_idx - kv_idx <= W and causal: W+1 keys); "
    "torch/_higher_order_ops/flex_attention.py math_attention (masked rows: out 0, lse -inf; "
    "lse is natural log after dividing the base-2 value back)",
)

XFORMERS = AttentionConvention(
    "xformers", "top_left", "keys_including_self", "nan", None,
    "facebookresearch/xformers v0.0.35 xformers/ops/fmha/attn_bias.py LowerTriangularMask (top-left "
    "causal; it has no window); BlockDiagonalCausalMask.make_local_attention(W) (defined on "
    "BlockDiagonalMask) returns BlockDiagonalCausalLocalAttentionMask: per block, key j visible iff "
    "i - W < j <= i, top-left (W keys including self); xformers/attn_bias_utils.py ref_attention "
    "(softmax of an all -inf row: NaN)",
)

XFORMERS_BR = AttentionConvention(
    "xformers_bottom_right", "bottom_right", "xformers_br", "nan", None,
    "facebookresearch/xformers v0.0.35 attn_bias.py LowerTriangularFromBottomRightMask, "
    "LocalAttentionFromBottomRightMask(window_left, window_right) (left+1+right keys, as flash-attn); "
    "attn_bias_utils.py ref_attention (NaN on fully masked rows)",
)

JAX = AttentionConvention(
    "jax", "top_left", "jax", "uniform", "finite",
    "jax-ml/jax jax/_src/nn/functions.py dot_product_attention: _get_causal_mask (tril, top-left), "
    "_get_window_mask (local_window_size=(l, r) inclusive, int w -> (w, w), no Lk-Lq offset), "
    "_apply_masks replaces masked logits by _get_large_negative = -0.7*finfo(float32).max, so a fully "
    "masked row averages all values; return_residual gives lse = mask value + log(Lk) there",
)

HF_MISTRAL = AttentionConvention(
    "hf_mistral", "bottom_right", "keys_including_self", "uniform", None,
    fully_masked_float64="nan", source=
    "huggingface/transformers 5.23 src/transformers/masking_utils.py sliding_window_overlay / "
    "sliding_window_causal_mask_function (kv_idx > q_idx - W and causal: W keys incl. self; absolute "
    "positions, so bottom-right with a KV cache); modeling_flash_attention_utils.py passes "
    "window_size=(W-1, W-1) with causal (= (W-1, 0)); models/mistral/modeling_mistral.py "
    "eager_attention_forward adds finfo(dtype).min and takes softmax(dtype=torch.float32): a fully "
    "masked row is uniform for float32/bf16 inputs and NaN for float64 ones (finfo(float64).min "
    "casts to -inf; run on CPU with transformers 5.23.0, torch 2.13). The SDPA path passes a bool "
    "mask and gives 0 instead",
)

_SECTION = "docs/conventions.md#attention-presets"

#: name -> AttentionConvention, each with its Source (``PRESETS.source(name)``); refimpl.preset_registry.
PRESETS = Registry("convention", [
    (SPEC.name, SPEC, Source(_SECTION, "refimpl", "refimpl/definition.py", "attention_definition", "this repository")),
    (FLASH_ATTN2.name, FLASH_ATTN2, Source(
        _SECTION, "flash-attention", "flash_attn/flash_attn_interface.py; csrc/flash_attn/flash_api.cpp; src/softmax.h",
        "flash_attn_func; mha_fwd (window rewrite); normalize_softmax_lse",
        "v2.8.3 read; attention_ref of 2.8.4 (commit 0251105) reference")),
    (FLASH_ATTN3.name, FLASH_ATTN3, Source(_SECTION, "flash-attention", "hopper/softmax.h; hopper/flash_api.cpp",
                                           "Softmax::finalize", "main, Aug 2026, read")),
    (TORCH_SDPA.name, TORCH_SDPA, Source(
        _SECTION, "torch", "torch/nn/functional.py; aten/src/ATen/native/transformers/attention.cpp",
        "scaled_dot_product_attention; _safe_softmax", "read at 2.14; run 2.13.0+cpu")),
    (FLEX_ATTENTION.name, FLEX_ATTENTION, Source(
        _SECTION, "torch, attention-gym", "attn_gym/masks/sliding_window.py; torch/_higher_order_ops/flex_attention.py",
        "generate_sliding_window; math_attention", "run torch 2.13.0+cpu")),
    (XFORMERS.name, XFORMERS, Source(
        _SECTION, "xformers", "xformers/ops/fmha/attn_bias.py; xformers/attn_bias_utils.py",
        "LowerTriangularMask, BlockDiagonalCausalMask.make_local_attention; ref_attention", "v0.0.35, read")),
    (XFORMERS_BR.name, XFORMERS_BR, Source(
        _SECTION, "xformers", "xformers/ops/fmha/attn_bias.py",
        "LowerTriangularFromBottomRightMask, LocalAttentionFromBottomRightMask", "v0.0.35, read")),
    (JAX.name, JAX, Source(_SECTION, "jax", "jax/_src/nn/functions.py",
                           "dot_product_attention (_get_causal_mask, _get_window_mask, _get_large_negative)",
                           "run jax 0.10.2")),
    (HF_MISTRAL.name, HF_MISTRAL, Source(
        _SECTION, "transformers", "src/transformers/masking_utils.py; models/mistral/modeling_mistral.py",
        "sliding_window_causal_mask_function; eager_attention_forward", "read at 5.23; run 5.25.0 and 5.23.0")),
], kind=AttentionConvention)
