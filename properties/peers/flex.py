"""torch.nn.attention.flex_attention.flex_attention (eager, CPU float64), with lse.

Preset: ``refimpl.conventions.FLEX_ATTENTION``. FlexAttention has no causal or
window flag: masks are ``mask_mod(b, h, q_idx, kv_idx)`` functions compiled
into a BlockMask (``create_block_mask``), score changes are ``score_mod(score,
b, h, q_idx, kv_idx)`` applied to the scaled score. This adapter writes the
mask_mods of attention-gym (attn_gym/masks/causal.py ``q_idx >= kv_idx``,
sliding_window.py) with the spec's offset o = Lk - Lq for bottom_right, and:

    spec keyword            flex argument
    causal                  mask_mod  kv_idx <= q_idx + o
    window=(left, right)    mask_mod  q_idx + o - left <= kv_idx <= q_idx + o + right
    mask= bool array        mask_mod  mask[b, h, q_idx, kv_idx]
    softcap=                score_mod softcap * tanh(score / softcap)
    bias=                   score_mod score + bias[b, h, q_idx, kv_idx] (after the softcap)
    Hkv < Hq                enable_gqa=True
    scale=                  scale=
    lse                     return_lse=True (natural log; fully masked rows: out 0, lse -inf)

Checked with torch 2.13.0 (torch/nn/attention/flex_attention.py, eager path
torch/_higher_order_ops/flex_attention.py math_attention). Not declared:
backward (eager CPU flex raises "FlexAttention does not support backward on
CPU"), dropout, mask predicates.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..attention_impls import AttentionAdapter
from ..core import Unsupported
from ._common import make, require, version

PRESET = "refimpl.conventions.FLEX_ATTENTION"
CAPABILITIES = frozenset({"lse", "causal", "top_left", "window", "mask_array", "softcap", "bias", "gqa",
                          "lq_ne_lk", "dv_ne_d", "scale"})


def torch_flex():
    torch = require("torch")
    fa = require("torch.nn.attention.flex_attention")

    def forward(q, k, v, *, mask=None, causal=False, align="bottom_right", window=None, scale=None,
                softcap=None, bias=None, **rest):
        if any(val is not None for val in rest.values()):
            raise Unsupported(f"torch flex adapter: {sorted(rest)} not supported")
        if mask is not None and not isinstance(mask, np.ndarray):
            raise Unsupported("torch flex adapter: mask predicates not supported (pass a bool array)")
        B, Hq, Lq, _ = q.shape
        Hkv, Lk = k.shape[1], k.shape[2]
        o = Lk - Lq if align == "bottom_right" else 0
        m = None if mask is None else torch.as_tensor(np.broadcast_to(mask, (B, Hq, Lq, Lk)).copy())
        left, right = window if window is not None else (None, None)

        def mask_mod(b, h, q_idx, kv_idx):
            keep = kv_idx >= 0
            if causal:
                keep = keep & (kv_idx <= q_idx + o)
            if left is not None:
                keep = keep & (kv_idx >= q_idx + o - left)
            if right is not None:
                keep = keep & (kv_idx <= q_idx + o + right)
            if m is not None:
                keep = keep & m[b, h, q_idx, kv_idx]
            return keep

        bt = None if bias is None else torch.as_tensor(np.broadcast_to(bias, (B, Hq, Lq, Lk)).copy())

        def score_mod(score, b, h, q_idx, kv_idx):
            if softcap is not None:
                score = softcap * torch.tanh(score / softcap)
            if bt is not None:
                score = score + bt[b, h, q_idx, kv_idx]
            return score

        t = [torch.as_tensor(np.asarray(a, dtype=np.float64)).clone() for a in (q, k, v)]
        with warnings.catch_warnings():  # "flex_attention called without torch.compile()": eager is the point
            warnings.simplefilter("ignore")
            bm = fa.create_block_mask(mask_mod, B, Hq, Lq, Lk, device="cpu")
            with torch.no_grad():
                out, lse = fa.flex_attention(*t, score_mod=score_mod if (softcap or bt is not None) else None,
                                             block_mask=bm, scale=scale, enable_gqa=Hkv != Hq, return_lse=True)
        return out.numpy(), lse.numpy()

    return make(AttentionAdapter, name="torch.flex_attention[float64]", forward=forward, capabilities=CAPABILITIES,
                precision="float64", preset=PRESET, library=f"torch {version(torch)}")
