"""Shipped adapters for real libraries (install with ``pip install -e '.[peers]'``).

Point the suite at one with ``REFIMPL_IMPLS=properties.peers:torch_sdpa pytest
tests/test_conformance.py -k attention`` (or ``python -m properties``). Each name
below is a zero-argument factory returning the adapter(s); it raises
:class:`Unavailable` ("unavailable: <reason>") when the library or the GPU it
needs is absent. Importing this package, or any module in it, never imports a
library. Each adapter carries ``preset`` (the refimpl preset whose conventions
the library follows) and ``library`` (the version it was run with).

    torch_sdpa       torch.nn.functional.scaled_dot_product_attention, CPU float64 + float32
    torch_flex       torch.nn.attention.flex_attention (eager, CPU float64), with lse
    jax_attention    jax.nn.dot_product_attention (CPU float64), with lse
    hf_mixtral       transformers MixtralTopKRouter (+ load_balancing_loss_func)
    hf_qwen2_moe     transformers Qwen2MoeTopKRouter, norm_topk_prob False and True
    deepspeed_topk   deepspeed.moe.sharded_moe.topkgating, drop_policy "probs" and "position"
    hf_clip          transformers modeling_clip.image_text_contrastive_loss (CLIP's symmetric loss)
    flash_attn       flash_attn.flash_attn_func (GPU only)
    xformers         xformers.ops.memory_efficient_attention (GPU only)
    flashinfer       flashinfer.single_prefill_with_kv_cache (GPU only)

Triton kernels (``pip install -e '.[triton]'``; under Triton's interpreter when no GPU is
present, through the shims of ``properties.peers.triton_shims``):

    fla_linear       fla linear attention, simple GLA, GLA, delta rule, gated delta rule
                     (fused_recurrent and chunk forms)
    fla_attention    fla parallel_attn: Triton FlashAttention-2 forward and backward (causal only)
    liger            Liger-Kernel RMSNorm (llama, gemma), LayerNorm, cross-entropy (plain and
                     fused linear), RoPE, SwiGLU and GeGLU (the gated product: a partial ffn)
    mamba_triton     mamba's selective_state_update (token by token) and mamba_chunk_scan_combined
                     (Mamba-2 SSD) (source checkout via REFIMPL_LIBRARY_SOURCES)
    sglang_decode    SGLang's Triton decode attention, one request a query row (an unpacked sglang
                     wheel via REFIMPL_LIBRARY_SOURCES)
    sglang_fused_moe SGLang's Triton fused MoE: softmax top-k router, token alignment, both expert
                     GEMMs and the top-k sum, float32 and float16 (an unpacked sglang wheel via
                     REFIMPL_LIBRARY_SOURCES)
"""

from __future__ import annotations

import importlib

from ._common import Unavailable

FACTORIES = {
    "torch_sdpa": "sdpa",
    "torch_flex": "flex",
    "jax_attention": "jax_dpa",
    "hf_mixtral": "hf_moe",
    "hf_qwen2_moe": "hf_moe",
    "deepspeed_topk": "deepspeed_gating",
    "hf_clip": "hf_vision",
    "flash_attn": "gpu_only",
    "xformers": "gpu_only",
    "flashinfer": "gpu_only",
    "fla_linear": "fla_ops",
    "fla_attention": "fla_attn",
    "liger": "liger_ops",
    "mamba_triton": "mamba_ssu",
    "sglang_decode": "sglang_ops",
    "sglang_fused_moe": "sglang_moe",
}

#: factories of Triton kernels (interpreted without a GPU: seconds an example, not milliseconds);
#: tests/test_triton_peers.py smoke-tests them at their own budget
TRITON = ("fla_linear", "fla_attention", "liger", "mamba_triton", "sglang_decode", "sglang_fused_moe")


def _factory(name: str):
    def make():
        module = importlib.import_module(f"{__name__}.{FACTORIES[name]}")
        return getattr(module, name)()

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"The {name} adapter(s); raises Unavailable when the library or device is absent."
    return make


for _name in FACTORIES:  # module names differ from factory names: importing one never shadows a factory
    assert _name not in {FACTORIES[n] for n in FACTORIES}, _name
    globals()[_name] = _factory(_name)


def every_available() -> list:
    """Every adapter whose library is present here (for ``REFIMPL_IMPLS=properties.peers:every_available``)."""
    out = []
    for name in FACTORIES:
        try:
            got = globals()[name]()
        except Unavailable:
            continue
        out.extend(got if isinstance(got, (list, tuple)) else [got])
    return out


def availability() -> dict:
    """name -> "available" or "unavailable: <reason>"."""
    out = {}
    for name in FACTORIES:
        try:
            globals()[name]()
            out[name] = "available"
        except Unavailable as e:
            out[name] = str(e)
    return out


__all__ = ["FACTORIES", "TRITON", "Unavailable", "availability", "every_available", *FACTORIES]
