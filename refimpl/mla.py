"""Multi-head latent attention (MLA; DeepSeek-V2/V3; docs/notes.md#mla), naive and absorbed.

Follows DeepSeek-V3 ``inference/model.py`` class ``MLA`` (attn_impl "naive" and
"absorb") with q_lora_rank = 0 (queries from one matrix W_q) and without the
RMSNorm on the latent (``kv_norm``: a fixed elementwise map of c_KV that both
forms apply alike). Per token x (d_model), heads h = 1..H:

    [q_nope_h, q_pe_h] = (x W_q)_h                     d_nope + d_rope per head
    [c_KV, k_pe]       = x W_DKV                       latent of rank d_c, one RoPE key for all heads
    q_pe, k_pe         = RoPE(q_pe, m), RoPE(k_pe, m)  decoupled RoPE (interleaved layout in DeepSeek)
    [k_nope_h, v_h]    = c_KV W_UKV[h]                 W_UKV[h] = [W_UK[h]; W_UV[h]]  (d_nope + d_v) x d_c

  naive     s_h(t, j) = scale * (q_nope_h(t) . k_nope_h(j) + q_pe_h(t) . k_pe(j))
            o_h(t)    = sum_j softmax_j(s_h(t, .)) v_h(j);          cache k_h, v_h: H (d_nope + d_rope + d_v) per token
  absorbed  q_lat_h   = W_UK[h]^T q_nope_h                 (W_UK folded into the query, d_c)
            s_h(t, j) = scale * (q_lat_h(t) . c_KV(j) + q_pe_h(t) . k_pe(j))
            o_h(t)    = W_UV[h] sum_j softmax_j(...) c_KV(j) (W_UV folded into the output)
                                                           cache c_KV, k_pe: d_c + d_rope per token
  y = [o_1 .. o_H] W_o

The absorbed form is attention with one shared key/value head (MQA) of width
d_c + d_rope over the latent cache, which is how it is computed here. The definition is
``mla_definition``: the naive form over positions 0 .. L-1, one line per formula above.
scale = (d_nope + d_rope)^(-1/2), times mscale^2 with YaRN (mscale = 0.1 *
mscale_all_dim * ln(factor) + 1, DeepSeek-V3 ``softmax_scale``): the absorbed
form must keep the naive head dim's scale, not 1/sqrt(d_c + d_rope).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._validate import (as_float_array, check_budget, choice, count, finite_result, instance, positive_float, positive_int,
                        real_number)
from ._validate.latent import latent_cache_update, mla_attention_inputs, mla_dims, mla_init_dims, mla_weights
from .definition import attention_definition
from .kv_cache import ContiguousCache
from .rope import apply_rope, check_rope_kwargs, rope_definition, yarn_get_mscale
from .sdpa import attention


def mla_definition(x, weights: "MLAWeights", *, scale=None, rope=None):
    """y (B, L, d_model), float64: the naive form of the module docstring, written out over positions
    0 .. L-1 (docs/notes.md#mla). ``mla_attention`` (naive and absorbed, with and without a cache) is
    tested equal to it (tests/test_definition_mla.py). ``rope``, ``scale``: as ``mla_attention``."""
    W = instance(weights, "weights", MLAWeights).check()
    x = as_float_array(x, "x", shape=(None, None, W["W_q"].shape[0]), shape_doc="(B, L, d_model)")
    (B, L, _), H, dn, dr, dv, dc = x.shape, weights.num_heads, weights.d_nope, weights.d_rope, weights.d_v, weights.d_c
    rope, m = {"layout": "interleaved", **check_rope_kwargs({} if rope is None else rope, dr)}, np.arange(L)
    q = (x @ W["W_q"]).reshape(B, L, H, dn + dr).transpose(0, 2, 1, 3)   # [q_nope_h, q_pe_h] = (x W_q)_h
    c, k_pe = np.split(x @ W["W_dkv"], [dc], axis=-1)                     # [c_KV, k_pe] = x W_DKV
    q_pe, k_pe = rope_definition(q[..., dn:], m, **rope), rope_definition(k_pe[:, None], m, **rope)  # decoupled RoPE
    kv = (c @ W["W_ukv"]).reshape(B, L, H, dn + dv).transpose(0, 2, 1, 3)  # [k_nope_h, v_h] = c_KV W_UKV[h]
    k = np.concatenate([kv[..., :dn], np.broadcast_to(k_pe, (B, H, L, dr))], axis=-1)  # k_h = [k_nope_h, k_pe]
    scale = mla_softmax_scale(dn, dr) if scale is None else positive_float(scale, "scale")
    o, _ = attention_definition(np.concatenate([q[..., :dn], q_pe], axis=-1), k, kv[..., dn:], causal=True, scale=scale)
    return finite_result(o.transpose(0, 2, 1, 3).reshape(B, L, H * dv) @ W["W_o"], "an output entry", "x, weights")


@dataclasses.dataclass(frozen=True)
class MLAWeights:
    """W_q (d_model, H (d_nope + d_rope)), W_dkv (d_model, d_c + d_rope),
    W_ukv (d_c, H (d_nope + d_v)) (DeepSeek ``wkv_b``, transposed), W_o (H d_v, d_model).

    Checked on construction (shapes agree, d_rope even); the matrices are stored as float64 arrays."""

    W_q: np.ndarray
    W_dkv: np.ndarray
    W_ukv: np.ndarray
    W_o: np.ndarray
    num_heads: int
    d_nope: int
    d_rope: int
    d_v: int

    def __post_init__(self):
        for n, a in self.check().items():
            object.__setattr__(self, n, a)

    @property
    def d_c(self) -> int:
        return self.W_ukv.shape[0]

    def check(self) -> dict:
        """{name: float64 array} of the four matrices, checked against the dims (``_validate.latent.mla_weights``)."""
        return mla_weights(self.W_q, self.W_dkv, self.W_ukv, self.W_o, self.num_heads, self.d_nope, self.d_rope, self.d_v)

    def W_uk(self) -> np.ndarray:
        """(H, d_nope, d_c): k_nope_h = W_uk[h] c_KV."""
        W = self.W_ukv.reshape(self.d_c, self.num_heads, self.d_nope + self.d_v)
        return W[:, :, : self.d_nope].transpose(1, 2, 0)

    def W_uv(self) -> np.ndarray:
        """(H, d_v, d_c): v_h = W_uv[h] c_KV."""
        W = self.W_ukv.reshape(self.d_c, self.num_heads, self.d_nope + self.d_v)
        return W[:, :, self.d_nope :].transpose(1, 2, 0)


def init_mla_weights(rng: np.random.Generator, d_model: int, num_heads: int, d_c: int, d_nope: int, d_rope: int, d_v: int) -> MLAWeights:
    """Random weights with entries N(0, 1/fan_in) (an explicit Generator: no hidden randomness)."""
    instance(rng, "rng", np.random.Generator, "numpy.random.Generator (np.random.default_rng(seed))")
    d_model, H, d_c, d_nope, d_rope, d_v = mla_init_dims(d_model, num_heads, d_c, d_nope, d_rope, d_v)
    check_budget("d_model, num_heads, d_c, d_nope, d_rope, d_v",
                 nbytes=16 * (d_model * H * (d_nope + d_rope) + d_model * (d_c + d_rope) + d_c * H * (d_nope + d_v)
                              + H * d_v * d_model), what="four weight matrices")

    def w(m, n):
        return rng.standard_normal((m, n)) / math.sqrt(m)

    return MLAWeights(w(d_model, H * (d_nope + d_rope)), w(d_model, d_c + d_rope), w(d_c, H * (d_nope + d_v)),
                      w(H * d_v, d_model), H, d_nope, d_rope, d_v)


def mla_softmax_scale(d_nope: int, d_rope: int, *, rope_factor: float = 1.0, mscale: float = 1.0) -> float:
    """(d_nope + d_rope)^(-1/2) * mscale(rope_factor)^2 (DeepSeek-V3 ``MLA.softmax_scale``; 1 without YaRN)."""
    d_nope, d_rope = positive_int(d_nope, "d_nope"), positive_int(d_rope, "d_rope")
    rope_factor, mscale = positive_float(rope_factor, "rope_factor"), real_number(mscale, "mscale")
    m = yarn_get_mscale(rope_factor, mscale)
    return finite_result((d_nope + d_rope) ** -0.5 * m * m, "the softmax scale", "rope_factor, mscale")


class MLALatentCache:
    """The absorbed form's cache: c_KV (B, T, d_c) and the shared RoPE key k_pe (B, T, d_rope)."""

    def __init__(self, d_c: int, d_rope: int, *, batch: int = 1):
        d_c, d_rope = positive_int(d_c, "d_c"), positive_int(d_rope, "d_rope")
        check_budget("d_c, d_rope, batch", shape=(positive_int(batch, "batch"), d_c + d_rope + 1),
                     what="one token's latent entry")
        self.d_rope = d_rope
        self.store = ContiguousCache(1, d_c + d_rope, 1, batch=batch)  # one "head": [c_KV, k_pe]
        self.d_c = d_c

    @property
    def length(self) -> int:
        return self.store.length

    def update(self, c_kv, k_pe):
        c_kv, k_pe = latent_cache_update(c_kv, k_pe, self.store.B, self.d_c, self.d_rope)
        kv = np.concatenate([c_kv, k_pe], axis=-1)[:, None]  # (B, 1, n, d_c + d_rope)
        K, _ = self.store.update(kv, np.zeros(kv.shape[:3] + (1,)))
        return K  # (B, 1, T, d_c + d_rope)

    @property
    def stored_values(self) -> int:
        """Latent values held: batch * T * (d_c + d_rope) (keys and values share c_KV)."""
        return self.store.k.size


def _project(x, Wt: MLAWeights, W, positions, rope):
    B, L, _ = x.shape
    H, dn, dr, d_c = Wt.num_heads, Wt.d_nope, Wt.d_rope, Wt.d_c
    q = (x @ W["W_q"]).reshape(B, L, H, dn + dr).transpose(0, 2, 1, 3)  # (B, H, L, dn + dr)
    kv = x @ W["W_dkv"]
    c_kv, k_pe = kv[..., :d_c], kv[..., d_c:]
    q_nope, q_pe = q[..., :dn], apply_rope(q[..., dn:], positions, **rope)
    k_pe = apply_rope(k_pe[:, None], positions, **rope)[:, 0]  # (B, L, dr), one head
    return q_nope, q_pe, c_kv, k_pe


def mla_attention(x, weights: MLAWeights, *, absorbed: bool = False, cache=None, scale=None, rope=None):
    """MLA self-attention over x (B, L, d_model) -> (B, L, d_model), causal (bottom-right).

    ``cache``: None (prefill of positions 0..L-1), or a cache holding earlier
    tokens: ``ContiguousCache(H, d_nope + d_rope, d_v)`` for the naive form,
    ``MLALatentCache(d_c, d_rope)`` for the absorbed one; the new tokens sit at
    positions cache.length + i and are appended. ``rope``: apply_rope keywords
    (default interleaved, as DeepSeek). ``scale``: default ``mla_softmax_scale``.
    """
    W = instance(weights, "weights", MLAWeights).check()
    H, dn, dr, dv = weights.num_heads, weights.d_nope, weights.d_rope, weights.d_v
    x, absorbed, scale = mla_attention_inputs(x, W["W_q"].shape[0], absorbed, cache, scale, (H, dn, dr, dv, weights.d_c),
                                              (MLALatentCache, ContiguousCache))
    B, L, _ = x.shape
    rope = {"layout": "interleaved", **check_rope_kwargs({} if rope is None else rope, dr)}
    start = 0 if cache is None else cache.length
    positions = np.arange(start, start + L)
    d_c = weights.d_c
    scale = mla_softmax_scale(dn, dr) if scale is None else scale
    with np.errstate(over="ignore", invalid="ignore"):
        q_nope, q_pe, c_kv, k_pe = _project(x, weights, W, positions, rope)
    for a in (q_nope, q_pe, c_kv, k_pe):  # x W: an exact projection beyond float64 range is an error
        finite_result(a, "a projection x W", "x, weights")
    if absorbed:
        q_lat = np.einsum("bhld,hdc->bhlc", q_nope, weights.W_uk())
        K = np.concatenate([c_kv, k_pe], axis=-1)[:, None]  # (B, 1, L, d_c + d_rope)
        if cache is not None:
            K = cache.update(c_kv, k_pe)
        o_lat, _ = attention(np.concatenate([q_lat, q_pe], axis=-1), K, K[..., :d_c], causal=True, scale=scale)
        o = np.einsum("bhlc,hvc->bhlv", o_lat, weights.W_uv())
    else:
        kv = (c_kv @ W["W_ukv"]).reshape(B, L, H, dn + dv).transpose(0, 2, 1, 3)
        k = np.concatenate([kv[..., :dn], np.broadcast_to(k_pe[:, None], (B, H, L, weights.d_rope))], axis=-1)
        v = kv[..., dn:]
        if cache is not None:
            k, v = cache.update(k, v)
        o, _ = attention(np.concatenate([q_nope, q_pe], axis=-1), k, v, causal=True, scale=scale)
    with np.errstate(over="ignore", invalid="ignore"):
        y = o.transpose(0, 2, 1, 3).reshape(B, L, H * dv) @ W["W_o"]
    return finite_result(y, "an output entry", "x, weights")


def mla_cache_values_per_token(weights_or_dims, *, form: str) -> int:
    """Cached scalars per token and layer: "naive" H (d_nope + d_rope + d_v); "latent" d_c + d_rope.

    ``weights_or_dims``: an MLAWeights or the tuple (H, d_nope, d_rope, d_v, d_c)."""
    form = choice(form, "form", ("naive", "latent"))
    H, dn, dr, dv, d_c = mla_dims(weights_or_dims, MLAWeights)
    return H * (dn + dr + dv) if form == "naive" else d_c + dr


def mla_params(d_model: int, num_heads: int, *, q_lora_rank: int, kv_lora_rank: int, d_nope: int, d_rope: int, d_v: int) -> int:
    """Attention parameters of one DeepSeek-V2 MLA layer (no biases), norms included:

    q_lora_rank > 0: W_DQ (d, r_q) + q_norm (r_q) + W_UQ (r_q, H (d_nope + d_rope)); else W_q (d, H (d_nope + d_rope));
    W_DKV (d, d_c + d_rope) + kv_norm (d_c) + W_UKV (d_c, H (d_nope + d_v)) + W_o (H d_v, d).
    """
    d, H = positive_int(d_model, "d_model"), positive_int(num_heads, "num_heads")
    q_lora_rank = count(q_lora_rank, "q_lora_rank")
    kv_lora_rank, d_nope, d_rope, d_v = (positive_int(x, n) for x, n in (
        (kv_lora_rank, "kv_lora_rank"), (d_nope, "d_nope"), (d_rope, "d_rope"), (d_v, "d_v")))
    qk = H * (d_nope + d_rope)
    q = d * q_lora_rank + q_lora_rank + q_lora_rank * qk if q_lora_rank else d * qk
    kv = d * (kv_lora_rank + d_rope) + kv_lora_rank + kv_lora_rank * H * (d_nope + d_v)
    return q + kv + H * d_v * d


__all__ = ["MLALatentCache", "MLAWeights", "init_mla_weights", "mla_attention", "mla_cache_values_per_token", "mla_definition",
           "mla_params", "mla_softmax_scale"]
