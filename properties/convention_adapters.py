"""Two attention adapters that follow a library's conventions, not the spec's (examples and tests).

``xformers_reference``: a torch port of facebookresearch/xformers 0.0.33
xformers/attn_bias_utils.py ``ref_attention`` (float32: ``q = q * scale``, ``attn = q @ k^T``,
the attention bias materialised with -inf, ``attn.softmax(-1)``, ``attn @ v``): a fully
masked row is 0/0 = NaN. Declared ``convention="xformers"``.

``hf_eager``: a torch port of huggingface/transformers 5.25.0
models/mistral/modeling_mistral.py ``eager_attention_forward`` (float32): the mask is
additive with ``torch.finfo(float32).min`` (masking_utils ``eager_mask``), softmax in
float32, so a fully masked row weighs every key equally: the mean of all values.
Declared ``convention="hf_mistral"``.

Neither returns an lse (neither library does). Both build their masks from the spec's
keywords with their own code (never refimpl's), so the properties compare two
implementations.
"""

from __future__ import annotations

import numpy as np

from .attention_impls import AttentionAdapter, _alibi, _visible

CAPABILITIES = frozenset({"causal", "top_left", "window", "mask_array", "gqa", "lq_ne_lk", "dv_ne_d", "bias", "scale",
                          "softcap", "key_padding", "alibi_slopes", "varlen"})


def _scores_and_mask(torch, q, k, *, mask=None, causal=False, align="bottom_right", window=None, scale=None,
                     softcap=None, bias=None, key_padding_mask=None, alibi_slopes=None, cu_seqlens_q=None,
                     cu_seqlens_k=None):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    if alibi_slopes is not None:
        cu = None if cu_seqlens_q is None else (cu_seqlens_q, cu_seqlens_k)
        ab = _alibi(alibi_slopes, B, Hq, Lq, Lk, align, None, cu)
        bias = ab if bias is None else bias + ab
    cu = None if cu_seqlens_q is None else (cu_seqlens_q, cu_seqlens_k)
    vis = _visible(Lq, Lk, B, Hq, None if mask is None else np.asarray(mask), causal, align, window, bias, None,
                   cu, key_padding_mask)
    f = torch.float32
    qt = torch.as_tensor(np.asarray(q), dtype=f) * sc
    kt = torch.as_tensor(np.repeat(np.asarray(k), Hq // Hkv, axis=1), dtype=f)
    s = qt @ kt.transpose(-2, -1)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + torch.as_tensor(np.where(np.isfinite(bias), bias, 0.0), dtype=f)
    return s, torch.as_tensor(vis)


def xformers_reference() -> AttentionAdapter:
    import torch

    def forward(q, k, v, **kw):
        s, vis = _scores_and_mask(torch, q, k, **kw)
        s = s + torch.where(vis, 0.0, float("-inf"))  # the materialised attn_bias
        p = s.softmax(-1)  # NaN for an all -inf row
        G = q.shape[1] // k.shape[1]
        out = p @ torch.as_tensor(np.repeat(np.asarray(v), G, axis=1), dtype=torch.float32)
        return out.double().numpy(), None

    return AttentionAdapter(name="example.xformers_ref_attention", forward=forward, capabilities=CAPABILITIES,
                            precision="float32", convention="xformers")


def hf_eager() -> AttentionAdapter:
    import torch

    def forward(q, k, v, **kw):
        s, vis = _scores_and_mask(torch, q, k, **kw)
        s = s + torch.where(vis, 0.0, torch.finfo(torch.float32).min)  # additive eager mask
        p = torch.softmax(s, dim=-1, dtype=torch.float32)
        G = q.shape[1] // k.shape[1]
        out = p @ torch.as_tensor(np.repeat(np.asarray(v), G, axis=1), dtype=torch.float32)
        return out.double().numpy(), None

    return AttentionAdapter(name="example.hf_eager_attention", forward=forward, capabilities=CAPABILITIES,
                            precision="float32", convention="hf_mistral")
