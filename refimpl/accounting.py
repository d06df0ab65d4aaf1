"""Parameter, compute and memory accounting for dense and MoE transformers.

Conventions (each named):

* Parameters. Per layer: attention projections W_q (d x H hd), W_k, W_v
  (d x Hkv hd), W_o (H hd x d); the FFN, or E expert FFNs plus a router (E x d)
  for MoE; optionally shared experts (always active) and norm weights. An FFN
  is ``ffn_kind="mlp"`` (two matrices, d x d_ff and d_ff x d: 8 d^2 for
  d_ff = 4d, docs/notes.md#moe-parameters) or ``"glu"`` (three: gate, up, down, as in
  SwiGLU / Mixtral). Embeddings: vocab x d, plus an output head of the same
  size unless tied. Biases: none (add them with ``bias=True``).
* Active parameters: everything except the experts a token does not use:
  non-expert parameters plus top_k routed experts (plus shared experts) per
  layer. Embeddings count in full, as in published "active" figures.
* Compute per token (matmuls with the weights only, unless
  ``context_length`` is given):
    - ``convention="mac"``: multiply-accumulates; one per weight used, so the
      count equals the number of matmul weights a token touches. This is the
      notes' "FLOPs per token" (docs/notes.md#moe-parameters; docs/errata.md#e3).
    - ``convention="2flop"``: 2 FLOPs per MAC (a multiply and an add), the
      usual hardware FLOP count; training is about 3x the forward (the 6ND rule).
  Norms, activations, softmax, routing decisions and the embedding lookup are
  not counted. With ``context_length`` n, attention scores add H hd n MACs
  (q.k) and H hd n MACs (p.v) per layer per token.
* Memory: bytes = count x bytes per value (``bytes_per_param``: 2 for fp16/bf16).
  KV cache = 2 (K and V) x layers x Hkv x hd x tokens x batch x bytes.
  GB here are decimal (1e9 bytes), as the notes use them (docs/notes.md#moe-memory).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from . import _validate as V
from ._validate.accounting import byte_total, exact_count, transformer_config
from .cache import kv_cache_values


def _cfg(cfg) -> "TransformerConfig":
    return V.instance(cfg, "cfg", TransformerConfig)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """A decoder-only transformer, dense (num_experts = 1) or MoE.

    d_model, n_layers, n_heads; n_kv_heads (None: = n_heads); head_dim (None:
    d_model // n_heads); d_ff: hidden size of one FFN / expert; ffn_kind
    "mlp" | "glu"; num_experts, top_k, n_shared_experts; vocab_size (0: no
    embeddings); tied_embeddings; norms_per_layer (weight vectors of size
    d_model, e.g. 2 for pre-norm RMSNorm) and final_norm; bias.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    ffn_kind: str = "mlp"
    num_experts: int = 1
    top_k: int = 1
    n_shared_experts: int = 0
    vocab_size: int = 0
    tied_embeddings: bool = False
    norms_per_layer: int = 0
    final_norm: bool = False
    bias: bool = False

    def __post_init__(self):
        transformer_config(self)

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def hd(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


@dataclasses.dataclass(frozen=True)
class ParameterCount:
    """Parameters by part (per layer where named so) and totals."""

    attention_per_layer: int
    expert: int  # one expert FFN (or the dense FFN)
    experts_per_layer: int  # all routed experts (the FFN for dense)
    shared_per_layer: int
    router_per_layer: int
    norms_per_layer: int
    embeddings: int  # input embedding + output head (+ final norm)
    total: int
    active: int

    @property
    def per_layer(self) -> int:
        return (self.attention_per_layer + self.experts_per_layer + self.shared_per_layer
                + self.router_per_layer + self.norms_per_layer)


def ffn_params(d_model: int, d_ff: int, ffn_kind: str = "mlp", bias: bool = False) -> int:
    """mlp: 2 d d_ff (+ d_ff + d biases); glu: 3 d d_ff (+ 2 d_ff + d)."""
    d_model, d_ff = exact_count(d_model, "d_model"), exact_count(d_ff, "d_ff")
    V.choice(ffn_kind, "ffn_kind", ("mlp", "glu"))
    return _ffn_params(d_model, d_ff, ffn_kind, V.flag(bias, "bias"))


def _ffn_params(d_model: int, d_ff: int, ffn_kind: str, bias: bool) -> int:
    mats = 2 if ffn_kind == "mlp" else 3
    b = (d_ff + d_model if ffn_kind == "mlp" else 2 * d_ff + d_model) if bias else 0
    return mats * d_model * d_ff + b


def attention_params(cfg: TransformerConfig) -> int:
    """W_q, W_o: d x H hd each; W_k, W_v: d x Hkv hd each (GQA)."""
    return _attention_params(_cfg(cfg))


def _attention_params(cfg: TransformerConfig) -> int:
    d, q, kv = cfg.d_model, cfg.n_heads * cfg.hd, cfg.kv_heads * cfg.hd
    b = (q + 2 * kv + d) if cfg.bias else 0
    return 2 * d * q + 2 * d * kv + b


def parameter_count(cfg: TransformerConfig) -> ParameterCount:
    cfg = _cfg(cfg)
    attn = _attention_params(cfg)  # a TransformerConfig checked its fields when it was made
    expert = _ffn_params(cfg.d_model, cfg.d_ff, cfg.ffn_kind, cfg.bias)
    experts = cfg.num_experts * expert
    shared = cfg.n_shared_experts * expert
    router = cfg.num_experts * cfg.d_model if cfg.is_moe else 0
    norms = cfg.norms_per_layer * cfg.d_model
    emb = cfg.vocab_size * cfg.d_model * (1 if cfg.tied_embeddings else 2) + (cfg.d_model if cfg.final_norm else 0)
    total = cfg.n_layers * (attn + experts + shared + router + norms) + emb
    active_layer = attn + cfg.top_k * expert + shared + router + norms
    active = cfg.n_layers * active_layer + emb
    return ParameterCount(attention_per_layer=attn, expert=expert, experts_per_layer=experts,
                          shared_per_layer=shared, router_per_layer=router, norms_per_layer=norms,
                          embeddings=emb, total=total, active=active)


CONVENTIONS = {"mac": 1, "2flop": 2}


@dataclasses.dataclass(frozen=True)
class ComputePerToken:
    """Forward compute for one token, in the named convention."""

    convention: str
    attention_per_layer: int  # projections (+ scores if context_length was given)
    ffn_per_layer: int  # top_k experts + shared experts (or the dense FFN)
    router_per_layer: int
    head: int  # output projection to the vocabulary (0 if vocab_size = 0)
    n_layers: int

    @property
    def per_layer(self) -> int:
        return self.attention_per_layer + self.ffn_per_layer + self.router_per_layer

    @property
    def total(self) -> int:
        return self.n_layers * self.per_layer + self.head


def compute_per_token(cfg: TransformerConfig, *, convention: str = "mac",
                      context_length: Optional[int] = None) -> ComputePerToken:
    """Matmul compute of one token's forward pass (module docstring)."""
    cfg = _cfg(cfg)
    V.choice(convention, "convention", sorted(CONVENTIONS))
    m = CONVENTIONS[convention]
    d = cfg.d_model
    attn = 2 * d * cfg.n_heads * cfg.hd + 2 * d * cfg.kv_heads * cfg.hd
    if context_length is not None:
        attn += 2 * cfg.n_heads * cfg.hd * exact_count(context_length, "context_length", allow_zero=True)
    mats = 2 if cfg.ffn_kind == "mlp" else 3
    ffn = (cfg.top_k + cfg.n_shared_experts) * mats * d * cfg.d_ff
    router = cfg.num_experts * d if cfg.is_moe else 0
    head = cfg.vocab_size * d
    return ComputePerToken(convention=convention, attention_per_layer=m * attn, ffn_per_layer=m * ffn,
                           router_per_layer=m * router, head=m * head, n_layers=cfg.n_layers)


def training_flops(active_params: int, tokens: int) -> int:
    """The 6ND rule: forward (2 N per token) plus backward (4 N per token), 2-FLOP convention."""
    return 6 * exact_count(active_params, "active_params", allow_zero=True) * exact_count(tokens, "tokens", allow_zero=True)


def weight_bytes(num_params: int, bytes_per_param: float = 2) -> float:
    """Bytes to hold the weights (every expert: any may be called)."""
    # num_params may be a float (``7e9``, docs/notes.md#moe-memory): the result is a float estimate anyway
    n = V.real_number(num_params, "num_params", minimum=0.0) if isinstance(num_params, (float, np.floating)) \
        else exact_count(num_params, "num_params", allow_zero=True)
    return byte_total(n, bytes_per_param, "bytes_per_param", "num_params * bytes_per_param")


def kv_cache_bytes(cfg: TransformerConfig, *, tokens: int, batch: int = 1, bytes_per_value: float = 2) -> float:
    """2 x layers x Hkv x hd x tokens x batch x bytes (``refimpl.cache.kv_cache_values`` x bytes)."""
    cfg = _cfg(cfg)
    tokens, batch = V.count(tokens, "tokens"), V.count(batch, "batch", minimum=1)
    values = kv_cache_values(tokens, cfg.kv_heads, cfg.hd, layers=cfg.n_layers, batch=batch)
    return byte_total(values, bytes_per_value, "bytes_per_value", "the KV cache size")


def inference_memory_bytes(num_params: int, kv_bytes: float, *, bytes_per_param: float = 2) -> float:
    """Weights plus KV cache (docs/notes.md#moe-memory)."""
    kv = V.real_number(kv_bytes, "kv_bytes", minimum=0.0)
    return V.finite_result(weight_bytes(num_params, bytes_per_param=bytes_per_param) + kv, "the total", "num_params, kv_bytes")


# Published configuration: mistralai/Mixtral-8x7B-v0.1 (and -Instruct-v0.1) config.json on the
# Hugging Face Hub: hidden_size 4096, intermediate_size 14336, num_hidden_layers 32,
# num_attention_heads 32, num_key_value_heads 8, vocab_size 32000, num_local_experts 8,
# num_experts_per_tok 2, tie_word_embeddings false; RMSNorm (2 per layer + final), no biases;
# experts are SwiGLU (w1, w2, w3: modeling_mixtral.MixtralBlockSparseTop2MLP).
MIXTRAL_8X7B = TransformerConfig(
    d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, ffn_kind="glu",
    num_experts=8, top_k=2, vocab_size=32000, tied_embeddings=False, norms_per_layer=2,
    final_norm=True,
)
