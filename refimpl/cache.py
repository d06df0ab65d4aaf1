"""KV-cache sizes: standard (MHA/GQA/MQA) and MLA's compressed latent cache.

Counts are numbers of cached scalar values (multiply by bytes per value for memory).

    standard:  2 * kv_heads * seq_len * head_dim          per layer and sequence
               (keys and values; MHA kv_heads = H, GQA kv_heads = g, MQA kv_heads = 1;
                docs/notes.md#gqa)
    MLA keys:  seq_len * d_c  instead of seq_len * H * d_k  (DeepSeek-V2's latent c^K;
               docs/notes.md#mla). DeepSeek-V2 in fact caches one joint latent of
               d_c = 512 for keys and values plus a decoupled RoPE key of 64 per token.
"""

from __future__ import annotations

from ._validate import positive_int


def kv_cache_values(seq_len: int, kv_heads: int, head_dim: int, *, layers: int = 1, batch: int = 1, v_head_dim: int | None = None) -> int:
    """Cached keys + values: batch * layers * seq_len * kv_heads * (head_dim + v_head_dim)."""
    n = positive_int(seq_len, "seq_len", allow_zero=True)
    h = positive_int(kv_heads, "kv_heads")
    dk = positive_int(head_dim, "head_dim")
    dv = dk if v_head_dim is None else positive_int(v_head_dim, "v_head_dim")
    return positive_int(batch, "batch") * positive_int(layers, "layers") * n * h * (dk + dv)


def mla_key_cache_values(seq_len: int, latent_dim: int, *, layers: int = 1, batch: int = 1) -> int:
    """MLA's compressed key cache: batch * layers * seq_len * d_c (the latent c^K per token)."""
    return (
        positive_int(batch, "batch") * positive_int(layers, "layers")
        * positive_int(seq_len, "seq_len", allow_zero=True) * positive_int(latent_dim, "latent_dim")
    )
