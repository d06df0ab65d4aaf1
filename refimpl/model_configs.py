"""Published model configurations and the ratios read off them (docs/model_configs.md).

Attention variant, from the head counts alone (docs/model_configs.md "Which attention"):

    n_kv_heads == n_heads       -> "MHA"  (every query head has its own K and V)
    n_kv_heads == 1 < n_heads   -> "MQA"  (one K/V head shared by all query heads)
    1 < n_kv_heads < n_heads    -> "GQA"  (group size G = n_heads / n_kv_heads)

FFN width ratios (docs/model_configs.md "FFN expansion"), two different quantities:

    per-matrix ratio       d_ff / d_model               (11008 / 4096 = 2.6875 for Llama-2-7B)
    MLP-equivalent ratio   (matrices / 2) d_ff / d_model (a GLU has 3 matrices: 1.5 x 2.6875 = 4.03,
                                                          the parameters of a 4d two-matrix MLP)

FFN share of parameters: n_layers * (routed + shared experts) * ffn_params / total, with
``refimpl.accounting.parameter_count`` (embeddings and norms in the total).

Configurations are ``refimpl.accounting.TransformerConfig`` values transcribed from each
model's ``config.json`` on the Hugging Face Hub (hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
tie_word_embeddings); the comment above each names the repository. Biases are left out
(none of these Llama-family models has them, except Qwen2's q/k/v biases, omitted).
"""

from __future__ import annotations

from . import accounting as A
from ._validate import instance
from ._validate.accounting import kv_heads
from .preset_registry import Registry, Source

# huggyllama/llama-7b (LLaMA-1): MHA, no num_key_value_heads field
LLAMA_1_7B = A.TransformerConfig(d_model=4096, n_layers=32, n_heads=32, d_ff=11008, ffn_kind="glu",
                                 vocab_size=32000, norms_per_layer=2, final_norm=True)
# meta-llama/Llama-2-7b-hf: num_key_value_heads 32 (MHA)
LLAMA_2_7B = A.TransformerConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008, ffn_kind="glu",
                                 vocab_size=32000, norms_per_layer=2, final_norm=True)
# meta-llama/Llama-2-13b-hf
LLAMA_2_13B = A.TransformerConfig(d_model=5120, n_layers=40, n_heads=40, n_kv_heads=40, d_ff=13824, ffn_kind="glu",
                                  vocab_size=32000, norms_per_layer=2, final_norm=True)
# meta-llama/Llama-2-70b-hf: 64 query heads, 8 KV heads (GQA, G = 8)
LLAMA_2_70B = A.TransformerConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672, ffn_kind="glu",
                                  vocab_size=32000, norms_per_layer=2, final_norm=True)
# meta-llama/Meta-Llama-3-8B
LLAMA_3_8B = A.TransformerConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, ffn_kind="glu",
                                 vocab_size=128256, norms_per_layer=2, final_norm=True)
# mistralai/Mistral-7B-v0.1
MISTRAL_7B = A.TransformerConfig(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, ffn_kind="glu",
                                 vocab_size=32000, norms_per_layer=2, final_norm=True)
# Qwen/Qwen2.5-7B: 28 query heads, 4 KV heads (G = 7); q/k/v biases omitted
QWEN2_5_7B = A.TransformerConfig(d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, d_ff=18944, ffn_kind="glu",
                                 vocab_size=152064, norms_per_layer=2, final_norm=True)
# Vaswani et al. 2017, Transformer base (Table 3): d_model 512, d_ff 2048, 8 heads; the decoder stack
# (6 layers) as a decoder-only count, ReLU MLP, no vocabulary
TRANSFORMER_BASE = A.TransformerConfig(d_model=512, n_layers=6, n_heads=8, d_ff=2048, ffn_kind="mlp")

def _hub(repo) -> Source:
    return Source("docs/model_configs.md", repo, "config.json", "-", "Hugging Face Hub; revision not recorded")


#: name -> TransformerConfig, each with its Source (``PUBLISHED.source(name)``); refimpl.preset_registry.
PUBLISHED = Registry("config", [
    ("transformer-base", TRANSFORMER_BASE, Source("docs/model_configs.md", "Vaswani et al. 2017", "-", "Table 3",
                                                  "the paper")),
    ("llama-1-7b", LLAMA_1_7B, _hub("huggyllama/llama-7b")),
    ("llama-2-7b", LLAMA_2_7B, _hub("meta-llama/Llama-2-7b-hf")),
    ("llama-2-13b", LLAMA_2_13B, _hub("meta-llama/Llama-2-13b-hf")),
    ("llama-2-70b", LLAMA_2_70B, _hub("meta-llama/Llama-2-70b-hf")),
    ("llama-3-8b", LLAMA_3_8B, _hub("meta-llama/Meta-Llama-3-8B")),
    ("mistral-7b", MISTRAL_7B, _hub("mistralai/Mistral-7B-v0.1")),
    ("qwen2.5-7b", QWEN2_5_7B, _hub("Qwen/Qwen2.5-7B")),
], kind=A.TransformerConfig)


def attention_variant(n_heads: int, n_kv_heads: int) -> str:
    """"MHA" (n_kv_heads = n_heads), "MQA" (n_kv_heads = 1 < n_heads) or "GQA" (in between).

    ``n_kv_heads`` must divide ``n_heads`` (query head h reads KV head h // (n_heads / n_kv_heads)).
    """
    h, g = kv_heads(n_heads, n_kv_heads)
    return "MHA" if g == h else "MQA" if g == 1 else "GQA"


def ffn_expansion(cfg: A.TransformerConfig) -> tuple[float, float]:
    """(d_ff / d_model, MLP-equivalent ratio (matrices / 2) d_ff / d_model); matrices = 2 (mlp) or 3 (glu)."""
    cfg = instance(cfg, "cfg", A.TransformerConfig)
    per_matrix = cfg.d_ff / cfg.d_model
    return per_matrix, per_matrix * (3 if cfg.ffn_kind == "glu" else 2) / 2


def ffn_parameter_fraction(cfg: A.TransformerConfig) -> float:
    """Share of all parameters held by the FFNs (routed and shared experts), embeddings included in the total."""
    cfg = instance(cfg, "cfg", A.TransformerConfig)
    c = A.parameter_count(cfg)
    return cfg.n_layers * (c.experts_per_layer + c.shared_per_layer) / c.total


__all__ = ["attention_variant", "ffn_expansion", "ffn_parameter_fraction", "PUBLISHED"]
