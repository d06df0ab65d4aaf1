"""Eager torch attention in float32 / bfloat16 with its autograd backward (an example adapter).

The forward is HF transformers 5.25.0 models/gemma2/modeling_gemma2.py ``eager_attention_forward``
step for step: ``repeat_kv`` for GQA, ``matmul(q, k^T) * scaling``, the softcap as three steps
(``/ softcap``, ``torch.tanh``, ``* softcap``), the mask, ``softmax(dtype=float32).to(dtype)``,
dropout (here an explicit keep-mask: ``p * keep / (1 - p)``, what ``nn.functional.dropout``
multiplies by), ``matmul`` with v. The backward is torch.autograd through it (torch 2.13.0): the
softcap derivative is aten ``tanh_backward``, ``grad * (1 - y * y)`` from the saved float32 (or
bf16) tanh y, as flash-attn's ``calculate_dtanh`` and FlexAttention's score_mod backward form it.
So the suite's low-precision backward bound is checked against what the libraries compute
(``properties.attention_lowp``, "Softcap derivative").

Conventions are the spec's, not HF's: the mask is ``masked_fill(-inf)`` (HF adds
``finfo.min``), a row with no visible key gives out 0 (as torch SDPA's ``_safe_softmax``), and
lse is ``logsumexp`` of the float32 scores (HF returns none; FlexAttention's ``return_lse``).

    REFIMPL_IMPLS=properties.torch_eager:adapters python -m properties --impl "torch.eager[float32]"
"""

from __future__ import annotations

import numpy as np

from .attention_impls import AttentionAdapter, _visible

CAPABILITIES = frozenset({"lse", "causal", "top_left", "window", "mask_array", "gqa", "lq_ne_lk", "dv_ne_d", "scale",
                          "softcap", "bias", "dropout", "backward"})


def _forward(torch, q, k, v, *, mask=None, causal=False, align="bottom_right", window=None, scale=None,
             softcap=None, bias=None, dropout_mask=None, dropout_p=0.0):
    """(out, float32 lse) as torch tensors of q's dtype; q, k, v torch tensors (B, H, L, D)."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    vis = _visible(Lq, Lk, B, Hq, None if mask is None else np.asarray(mask), causal, align, window, bias, None)
    vis = torch.as_tensor(np.ascontiguousarray(vis))
    K = k[:, :, None].expand(B, Hkv, G, Lk, D).reshape(B, Hq, Lk, D)  # HF repeat_kv
    V = v[:, :, None].expand(B, Hkv, G, Lk, v.shape[-1]).reshape(B, Hq, Lk, v.shape[-1])
    s = torch.matmul(q, K.transpose(2, 3)) * (1.0 / np.sqrt(D) if scale is None else scale)
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if bias is not None:
        s = s + torch.as_tensor(np.where(np.isfinite(bias), bias, 0.0), dtype=q.dtype)
    s = s.float().masked_fill(~vis, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).to(q.dtype)
    p = torch.where(vis.any(-1, keepdim=True), p, torch.zeros((), dtype=q.dtype))  # empty rows: 0, not NaN
    if dropout_mask is not None:
        p = p * torch.as_tensor(np.asarray(dropout_mask), dtype=q.dtype) / (1.0 - dropout_p)
    return torch.matmul(p, V), lse


def adapter(dtype: str = "float32") -> AttentionAdapter:
    """The eager attention computing in ``dtype`` ("float32" or "bfloat16") on the CPU."""
    import torch

    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

    def forward(q, k, v, **kw):
        with torch.no_grad():
            out, lse = _forward(torch, *(torch.tensor(np.asarray(a), dtype=tdt) for a in (q, k, v)), **kw)
        return out.double().numpy(), lse.double().numpy()

    def backward(q, k, v, dout, **kw):
        args = [torch.tensor(np.asarray(a), dtype=tdt, requires_grad=True) for a in (q, k, v)]
        out, _ = _forward(torch, *args, **kw)
        out.backward(torch.tensor(np.asarray(dout), dtype=tdt))
        return tuple(a.grad.double().numpy() for a in args)

    return AttentionAdapter(name=f"torch.eager[{dtype}]", forward=forward, backward=backward,
                            capabilities=CAPABILITIES, precision=dtype)


def adapters() -> list:
    return [adapter("float32"), adapter("bfloat16")]


__all__ = ["CAPABILITIES", "adapter", "adapters"]
