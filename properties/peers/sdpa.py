"""torch.nn.functional.scaled_dot_product_attention (CPU; float64 and float32).

Preset: ``refimpl.conventions.TORCH_SDPA``. The library's own conventions and
how the spec's keywords map onto them (torch 2.13.0, torch/nn/functional.py
scaled_dot_product_attention, torch/nn/attention/bias.py):

    spec keyword            torch argument
    causal, top_left        is_causal=True (tril: key j <= query i)
    causal, bottom_right    attn_mask=causal_lower_right(Lq, Lk) (CausalBias LOWER_RIGHT:
                            tril(diagonal=Lk - Lq)); with another mask or a bias the
                            same tril is materialised and folded into that mask
    mask= bool array        attn_mask= bool (True = attend)
    key_padding_mask (B,Lk) attn_mask= key_padding_mask[:, None, None, :] (and-ed with the mask; the
                            (B, 1, 1, Lk) form HF builds from attention_mask)
    bias= float array       attn_mask= float (added to the scaled scores; masked entries -inf)
    Hkv < Hq                enable_gqa=True (query head h reads kv head h // G)
    scale=                  scale=
    backward                torch.autograd through the same call

Not declared (the public API has none): lse (SDPA returns no log-sum-exp),
window, softcap, dropout with an explicit keep-mask (torch draws its own),
mask predicates. A fully masked row gives 0 (aten _safe_softmax, torch >= 2.5).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..attention_impls import AttentionAdapter
from ..core import Unsupported
from ._common import make, require, version

PRESET = "refimpl.conventions.TORCH_SDPA"
CAPABILITIES = frozenset({"causal", "top_left", "mask_array", "bias", "gqa", "lq_ne_lk", "dv_ne_d", "scale", "backward",
                          "key_padding"})


def _call(torch, q, k, v, *, mask=None, causal=False, align="bottom_right", scale=None, bias=None,
          key_padding_mask=None, **rest):
    from torch.nn.attention.bias import causal_lower_right

    if key_padding_mask is not None:
        pad = np.asarray(key_padding_mask, dtype=bool)[:, None, None, :]
        mask = pad if mask is None or not isinstance(mask, np.ndarray) else np.asarray(mask, dtype=bool) & pad
    bad = sorted(key for key, val in rest.items() if val is not None and not (key == "dropout_p" and val == 0))
    if bad:
        raise Unsupported(f"torch SDPA adapter: {bad} not supported")
    if mask is not None and not isinstance(mask, np.ndarray):
        raise Unsupported("torch SDPA adapter: mask predicates not supported (pass a bool array)")
    B, Hq, Lq, _ = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    attn_mask, is_causal = None, False
    if mask is not None:
        attn_mask = torch.as_tensor(np.broadcast_to(mask, (B, Hq, Lq, Lk)).copy())
    if causal:
        if attn_mask is None and bias is None:
            if align == "top_left":
                is_causal = True
            else:
                with warnings.catch_warnings():  # "will produce NaNs when seq_len_q > seq_len_kv": the
                    warnings.simplefilter("ignore")  # properties check what it produces
                    attn_mask = causal_lower_right(Lq, Lk)
        else:
            tril = torch.ones(Lq, Lk, dtype=torch.bool).tril(diagonal=Lk - Lq if align == "bottom_right" else 0)
            attn_mask = tril if attn_mask is None else attn_mask & tril
    if bias is not None:
        fb = torch.as_tensor(np.broadcast_to(bias, (B, Hq, Lq, Lk)).copy(), dtype=q.dtype)
        attn_mask = fb if attn_mask is None else fb.masked_fill(~attn_mask, float("-inf"))
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=Hkv != Hq)


def adapter(dtype: str = "float64") -> AttentionAdapter:
    """The SDPA adapter computing in ``dtype`` ("float64" or "float32") on the CPU."""
    torch = require("torch")
    tdt = {"float64": torch.float64, "float32": torch.float32}[dtype]

    def forward(q, k, v, **kw):
        args = [torch.as_tensor(np.asarray(a), dtype=tdt) for a in (q, k, v)]  # copies: inputs never aliased
        with torch.no_grad():
            out = _call(torch, *args, **kw)
        return out.double().numpy(), None

    def backward(q, k, v, dout, **kw):
        args = [torch.tensor(np.asarray(a), dtype=tdt, requires_grad=True) for a in (q, k, v)]
        out = _call(torch, *args, **kw)
        out.backward(torch.as_tensor(np.asarray(dout), dtype=tdt))
        return tuple(a.grad.double().numpy() for a in args)

    caps = CAPABILITIES if dtype == "float64" else CAPABILITIES - {"backward"}
    return make(AttentionAdapter, name=f"torch.sdpa[{dtype}]", forward=forward,
                backward=backward if "backward" in caps else None, capabilities=caps, precision=dtype,
                preset=PRESET, library=f"torch {version(torch)}")


def torch_sdpa() -> list:
    return [adapter("float64"), adapter("float32")]
