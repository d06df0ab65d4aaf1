"""The attention kind's protocol, declared once (moved from ``properties/attention_cases.py``,
which re-exports every name here): ``ATTENTION_CAPABILITIES`` (what each capability an adapter
may declare means), ``ATTENTION_OPTIONS`` (the drawn values an adapter may decline),
``ATTENTION_KIND`` (the methods ``forward`` / ``backward`` with their shapes and keywords, the
conventions' fully masked rows from ``refimpl.conventions.PRESETS``, the notes on what each
property compares) and the capability sets ``ALL_CAPS``, ``EXTENSION_CAPS`` (keywords
refimpl.attention does not take) and ``BASE_CAPS``.
"""

from __future__ import annotations

from refimpl.conventions import PRESETS

from .protocol import Capability, Kind, Option

ATTENTION_CAPABILITIES = {
    "lse": Capability("forward returns the log-sum-exp (B, Hq, Lq) of the final scores as its second value "
                      "(natural log, -inf for a fully masked row); without it the second value is ignored"),
    "causal": Capability("causal=True: key j visible to query i iff j <= i + o, o = Lk - Lq (align='bottom_right', "
                         "the default) or 0 (align='top_left', only with 'top_left')"),
    "top_left": Capability("align='top_left': causal and window positions counted from the top-left corner (o = 0)"),
    "window": Capability("window=(left, right): key j visible iff p - left <= j <= p + right, p = i + o; "
                         "a side None is unbounded (option window_side)"),
    "mask_array": Capability("mask= bool array broadcastable to (B, Hq, Lq, Lk), True = visible "
                             "(drawn (Lq, Lk) and (B, 1, Lq, Lk): option mask_ndim; key_permutation_invariance folds causal, window, "
                             "predicates, key padding and varlen into one (B, Hq, Lq, Lk) array), combined with "
                             "causal/window by and"),
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
    "key_padding": Capability("key_padding_mask= bool (B, Lk), True = a real key: key j of batch b is hidden from "
                              "every query of batch b iff key_padding_mask[b, j] is False (flash-attn's unpadded "
                              "batches, torch SDPA attn_mask (B, 1, 1, Lk)); and-ed with every other mask; queries "
                              "are never masked by it (a query row of padded keys only still has its own output)"),
    "alibi_slopes": Capability("alibi_slopes= float (Hq,) or (B, Hq) (option alibi_ndim): adds -slope_h |i + o - j| "
                               "to the scores after softcap, o = Lk - Lq (bottom_right) or 0 (top_left) as for "
                               "causal (refimpl.alibi.alibi_bias; flash-attn flash_attn_func alibi_slopes)"),
    "sinks": Capability("sinks= float (Hq,): one logit s_h per query head added to the softmax denominator with no "
                        "value, not scaled or masked: P_ij = exp(S_ij) / (exp(s_h) + sum_j exp(S_ij)); lse = "
                        "logaddexp(lse without sinks, s_h); a row with no visible key gives out 0, lse s_h "
                        "(refimpl.sinks; gpt-oss gpt_oss/torch/model.py sdpa)"),
    "varlen": Capability("cu_seqlens_q=, cu_seqlens_k= int64 (n + 1,) offsets of n packed sequences, B = 1: query i "
                         "of sequence s sees only keys of sequence s; causal, align and window apply per sequence "
                         "with local indices and o_s = Lk_s - Lq_s (bottom_right) or 0 (top_left) "
                         "(refimpl.masks.Varlen; flash_attn_varlen_func, xformers BlockDiagonal*Mask); never drawn "
                         "with mask predicates"),
}

ATTENTION_OPTIONS = {
    "mask_ndim": Option("rank of the drawn bool mask arrays", (2, 4)),
    "window_side": Option("a window side unbounded (None) or a finite int", ("unbounded", "finite")),
    "softcap": Option("softcap values drawn", (0.5, 2.0, 30.0)),
    "bias_kind": Option("bias arrays drawn: ALiBi (-slope |i + o - j|) or Gaussian", ("alibi", "random")),
    "scale": Option("scale values drawn", (0.05, 0.5, 1.0, 2.0)),
    "dropout_p": Option("dropout rates drawn", (0.1, 0.5)),
    "window_causal": Option("whether a drawn window comes with causal=True: decline 'without_causal' for a library "
                            "whose window implies causal (xformers make_local_attention, HF sliding_window)",
                            ("with_causal", "without_causal")),
    "lengths": Option("Lq against Lk (per sequence under varlen): decline 'lq_gt_lk' for a kernel that needs "
                      "Lk >= Lq (xformers BlockDiagonalCausalFromBottomRightMask)", ("lq_le_lk", "lq_gt_lk")),
    "alibi_ndim": Option("rank of the drawn alibi_slopes: (Hq,) or (B, Hq)", (1, 2)),
    "causal": Option("whether a case is causal (with 'causal' declared): decline 'non_causal' for a causal-only "
                     "kernel (fla parallel_attn): every case is then drawn with causal=True, and a property that "
                     "needs a non-causal call (key_permutation_invariance) is unsupported", ("causal", "non_causal")),
}

ATTENTION_KIND = Kind(
    name="attention",
    doc="Exact attention: forward(q, k, v, **keywords of refimpl.attention) -> (out, lse), compared with "
        "refimpl.attention. q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) float64 arrays (values exactly "
        "representable in the adapter's precision); out (B, Hq, Lq, Dv), lse (B, Hq, Lq).",
    methods={
        "forward": "forward(q, k, v, *, mask=None, causal=False, align='bottom_right', window=None, scale=None, "
                   "softcap=None, bias=None, dropout_mask=None, dropout_p=0.0, key_padding_mask=None, "
                   "alibi_slopes=None, sinks=None, cu_seqlens_q=None, cu_seqlens_k=None) -> (out, lse). "
                   "q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv) float64; mask a bool array of shape "
                   "(Lq, Lk), (B, 1, Lq, Lk) or, from key_permutation_invariance, (B, Hq, Lq, Lk) (True = "
                   "visible), or a refimpl.masks.Mask; causal bool; align 'bottom_right' | 'top_left'; window "
                   "(left, right) of int or None; scale, softcap float; bias float (1, Hq, Lq, Lk) or (B, Hq, Lq, "
                   "Lk) with -inf allowed; dropout_mask bool (B, Hq, Lq, Lk) with dropout_p float; "
                   "key_padding_mask bool (B, Lk); alibi_slopes float (Hq,) or (B, Hq); sinks float (Hq,); "
                   "cu_seqlens_q, cu_seqlens_k int64 (n + 1,). Only keywords of declared capabilities are passed; "
                   "lse (B, Hq, Lq) or None",
        "backward": "backward(q, k, v, dout, **forward keywords) -> (dq, dk, dv) of the shapes of q, k, v; "
                    "dout (B, Hq, Lq, Dv) float64; never passed sinks",
    },
    required=("forward",),
    capabilities=ATTENTION_CAPABILITIES,
    options=ATTENTION_OPTIONS,
    conventions={name: f"fully masked row: out {p.fully_masked}"
                       + (f" ({p.fully_masked_float64} at precision float64)" if p.fully_masked_float64 else "")
                       + f", its lse {p.masked_lse if p.masked_lse is not None else 'not compared'}"
                       + (", causal ALiBi lse shifted by slope (i + Lk - Lq)" if p.alibi_causal_lse_shift else "")
                       + f"; {p.source}"
                 for name, p in PRESETS.items()},
    attributes={"tiling": "(block_k, chunks) of a tiled float64 kernel: the float64 bound grows with its online-"
                          "softmax steps (properties.tolerance.flash_forward_bounds); with tiles but no tiling the "
                          "smallest tile is assumed"},
    notes=("lse is compared only when the adapter declares 'lse' and returns a second value that is not None; "
           "otherwise every check compares out only (the lse halves of matches_reference, alignment_relation, "
           "dropout_keep_mask, fully_masked_rows and the relations are inactive)",
           "under a convention, fully masked rows are compared with the preset's value (exactly for 0 and NaN, "
           "within the bound for the mean of values); the invariances about hidden keys (causal_ignores_future, "
           "window_ignores_outside) leave out rows whose convention value depends on every key (the mean of "
           "values), which matches_reference and fully_masked_rows check instead",
           "key_permutation_invariance never draws alibi_slopes (positional); causal_ignores_future, "
           "window_ignores_outside and alignment_relation never draw varlen (their alignment is the whole "
           "matrix's); the backward and dropout properties never draw sinks",
           "backward_matches_reference and backward_finite_differences compare with the spec's gradient whatever "
           "the convention (a NaN row's gradient is a deviation to xfail, citing the library)",
           "backward_finite_differences draws the small sizes (L <= 5, D <= 6) even for an adapter declaring tiles or "
           "head_dims (its central differences take 4 Lk Dv forward steps at once); backward_matches_reference draws "
           "the tile sizes"),
)

ALL_CAPS = frozenset(ATTENTION_CAPABILITIES)
#: the capabilities whose keywords refimpl.attention does not take (folded in by ``spec_kwargs``)
EXTENSION_CAPS = frozenset({"key_padding", "alibi_slopes", "sinks", "varlen"})
#: the capabilities of refimpl.attention's own keywords
BASE_CAPS = ALL_CAPS - EXTENSION_CAPS
