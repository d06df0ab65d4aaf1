"""A Perceiver-style latent block: a learned latent array reads a long input by cross-attention, then
attends to itself (docs/latent.md). Not DeepSeek's multi-head latent attention (``refimpl.mla``),
which compresses a decoder's keys and values into a cached latent per token; this block instead
keeps M learned query vectors, shared by the batch, and never caches anything.

    z_0 = latents (M, d), broadcast to (B, M, d)
    z_1 = z_0 + MHA(LN_q(z_0), LN_kv(x))        cross-attention: queries from the latents,
                                                keys and values from the input x (B, L, d)
    z_2 = z_1 + MHA(LN_s(z_1), LN_s(z_1))       self-attention over the latents
    out = z_2 + MLP(LN_f(z_2))                  (the MLP when ``mlp`` is given; GELU, as Perceiver)

MHA is ``refimpl.mha.multi_head_attention`` (no mask: every latent sees every input token and every
latent), LN ``refimpl.norms.layer_norm``. Scores per head: B M L (cross) + B M^2 (self), linear in
the input length L; the output does not depend on the order of the input tokens (no positions are
added here).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ._validate import as_float_array, check_budget, count, finite_result, instance, positive_int
from ._validate.latent import heads_of_width, weight_tuple
from .mha import multi_head_attention
from .norms import layer_norm


@dataclasses.dataclass(frozen=True)
class LatentBlockWeights:
    """Weights of ``latent_block``: latents (M, d); cross and self attention as (W_q, W_k, W_v, W_o) with
    W_q, W_k, W_v (d, H hd) and W_o (H hd, d); LayerNorm (weight, bias) pairs ln_q, ln_kv, ln_s, ln_f;
    mlp (W_1 (d, d_ff), b_1, W_2 (d_ff, d), b_2) or None. Fields are validated where they are used."""

    latents: np.ndarray
    cross: tuple
    self_attn: tuple
    ln_q: tuple
    ln_kv: tuple
    ln_s: tuple
    ln_f: Optional[tuple] = None
    mlp: Optional[tuple] = None


def init_latent_block(seed: int, *, d_model: int, num_latents: int, num_heads: int, d_ff: int = 0) -> LatentBlockWeights:
    """Random weights (scale 1/sqrt(d)) from ``seed``; d_ff = 0: no MLP."""
    rng = np.random.default_rng(count(seed, "seed", maximum=None))
    d, M, H = positive_int(d_model, "d_model"), positive_int(num_latents, "num_latents"), positive_int(num_heads, "num_heads")
    f = count(d_ff, "d_ff")
    heads_of_width(d, H)
    # 8 (d, d) projections, the (M, d) latents, the (d, f) and (f, d) MLP and the vectors
    check_budget("d_model, num_latents, d_ff", nbytes=8 * (8 * d * d + M * d + 2 * d * f + 8 * d + f),
                 what="the latent block's weights")

    def attn():
        return tuple(rng.standard_normal((d, d)) / np.sqrt(d) for _ in range(4))

    def ln():
        return 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)

    mlp = (rng.standard_normal((d, f)) / np.sqrt(d), np.zeros(f), rng.standard_normal((f, d)) / np.sqrt(f),
           np.zeros(d)) if f else None
    return LatentBlockWeights(rng.standard_normal((M, d)), attn(), attn(), ln(), ln(), ln(), ln() if f else None, mlp)


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def latent_block(x, weights: LatentBlockWeights, *, num_heads: int) -> np.ndarray:
    """(B, L, d) -> (B, M, d): cross-attention from the latents, latent self-attention, optional MLP."""
    instance(weights, "weights", LatentBlockWeights, "refimpl.latent.LatentBlockWeights")
    x = as_float_array(x, "x", ndim=3, shape_doc="(B, L, d)", min_size={0: 1, 1: 1, 2: 1})
    B, _, d = x.shape
    lat = as_float_array(weights.latents, "weights.latents", shape=(None, d), shape_doc="(M, d)", min_size={0: 1})
    f = {n: weight_tuple(getattr(weights, n), n, k) for n, k in (("cross", 4), ("self_attn", 4))}
    f.update({n: weight_tuple(getattr(weights, n), n, 2, shape=(d,)) for n in ("ln_q", "ln_kv", "ln_s")})
    if weights.mlp is not None:
        f["mlp"], f["ln_f"] = weight_tuple(weights.mlp, "mlp", 4), weight_tuple(weights.ln_f, "ln_f", 2, shape=(d,))
    z = np.broadcast_to(lat, (B,) + lat.shape).copy()
    z = z + multi_head_attention(layer_norm(z, *f["ln_q"]), layer_norm(x, *f["ln_kv"]), *f["cross"],
                                 num_heads=num_heads)
    h = layer_norm(z, *f["ln_s"])
    z = z + multi_head_attention(h, h, *f["self_attn"], num_heads=num_heads)
    if weights.mlp is not None:
        W1, b1, W2, b2 = f["mlp"]
        with np.errstate(over="ignore", invalid="ignore"):
            z = z + _gelu(layer_norm(z, *f["ln_f"]) @ W1 + b1) @ W2 + b2
    return finite_result(z, "the block output", "x, weights")


def latent_block_scores(batch: int, num_latents: int, length: int, *, num_heads: int = 1) -> int:
    """Attention scores of one block: B H (M L + M^2)."""
    B, M = positive_int(batch, "batch"), positive_int(num_latents, "num_latents")
    L, H = positive_int(length, "length"), positive_int(num_heads, "num_heads")
    return B * H * (M * L + M * M)


__all__ = ["LatentBlockWeights", "init_latent_block", "latent_block", "latent_block_scores"]
