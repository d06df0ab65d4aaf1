"""Worked examples on positions and decoding (RoPE, KV caches, receptive fields, MLA), reproduced with refimpl."""

from __future__ import annotations

import numpy as np

import refimpl
from refimpl import accounting as A
from refimpl import kv_cache as KV
from refimpl import masks as M
from refimpl import mla as MLA
from refimpl import positional as PE
from refimpl import receptive_field as RF
from refimpl import rope as R

from . import WorkedExample

# --- docs/notes.md#rope: RoPE angles, d_k = 4, position m = 5 ----------------------------


def _rope_angles():
    theta = R.base_frequencies(4, 10000.0)
    alpha = R.rope_angles(np.array([5]), theta)[0]
    return float(theta[0]), float(theta[1]), float(alpha[0]), float(alpha[1])


def _rope_rotation():
    """apply_rope on the basis vectors e_0 and e_2 at m = 5 (interleaved = the notes' pairs (2i, 2i+1))."""
    e = np.eye(4)[None, :, None, :]  # head h holds e_h
    y = refimpl.apply_rope(e, np.array([5]), layout="interleaved")
    return (f"R_5 e_0 = ({y[0, 0, 0, 0]:.5f}, {y[0, 0, 0, 1]:.5f}) = (cos 5, sin 5); "
            f"R_5 e_2 = ({y[0, 2, 0, 2]:.5f}, {y[0, 2, 0, 3]:.5f}) = (cos 0.05, sin 0.05)")


# --- docs/notes.md#sliding-window: ring buffer of a 4096-key window over n = 16384 tokens ------------

N_E1, W_E1, D_E1 = 16384, 4096, 4096


def _fill(cache, n):
    """n - 1 tokens appended in chunks, then the last token decoded: (entries held, keys it attends to)."""
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((1, 1, n, 1)), rng.standard_normal((1, 1, n, 1))
    for s in range(0, n - 1, 1024):
        cache.update(k[:, :, s : min(s + 1024, n - 1)], v[:, :, s : min(s + 1024, n - 1)])
    window = None if isinstance(cache, KV.ContiguousCache) else (W_E1 - 1, 0)
    K, _ = cache.update(k[:, :, -1:], v[:, :, -1:])
    P = refimpl.attention_probs(rng.standard_normal((1, 1, 1, 1)), K, causal=True, window=window)
    return cache.contents()[2].size, int(np.count_nonzero(P))


def _ring_cache():
    full = _fill(KV.ContiguousCache(1, 1), N_E1)
    ring = _fill(KV.RingCache(1, 1, capacity=W_E1), N_E1)  # HF Mistral sliding_window = 4096: window (4095, 0)
    return full[0], ring[0], full[0] / ring[0]


def _ring_flops():
    full = _fill(KV.ContiguousCache(1, 1), N_E1)
    ring = _fill(KV.RingCache(1, 1, capacity=W_E1), N_E1)
    return (f"keys the last token attends to (nonzero weights): {full[1]:,} vs {ring[1]:,}; "
            f"the notes' convention 2 d keys with d = 4096: {2 * D_E1 * full[1]:.3e} vs {2 * D_E1 * ring[1]:.3e} FLOPs")


# --- docs/notes.md#mixer-costs: per-step decode cost O(H t d_head), cache O(L d_model) ----------

H_DEC, DH_DEC, L_DEC = 4, 8, 32


def _decode_costs():
    """Decode L tokens one by one; at step t count multiply-adds of q.k and p.v over the keys the
    cache returns (H t d_head each) and, at the end, the cached values (2 L d_model)."""
    rng = np.random.default_rng(1)
    cache = KV.ContiguousCache(H_DEC, DH_DEC)
    ratios = set()
    for t in range(1, L_DEC + 1):
        q = rng.standard_normal((1, H_DEC, 1, DH_DEC))
        K, V = cache.update(rng.standard_normal((1, H_DEC, 1, DH_DEC)), rng.standard_normal((1, H_DEC, 1, DH_DEC)))
        visible = int(M.Causal().row_counts(1, K.shape[2])[0])  # keys the one query sees
        macs = H_DEC * visible * (K.shape[3] + V.shape[3])
        ratios.add(macs / (H_DEC * t * DH_DEC))
        refimpl.attention(q, K, V, causal=True)
    (ratio,) = ratios
    return ratio, cache.stored_values / (L_DEC * H_DEC * DH_DEC)


# --- docs/notes.md#receptive-field: receptive field of stacked windows, w = 4, i = 10 ---------------


def _receptive():
    m = M.SlidingWindow(*M.window_from_seed_mw(4)) & M.Causal()
    return tuple(RF.receptive_interval(m, 10, layers) for layers in (1, 2, 3))


def _receptive_rule():
    rows = [RF.window_receptive_interval(10, 4, layers) for layers in (1, 2, 3)]
    return f"closed form [max(0, i - L w), i]: {rows} (tests check it against the boolean product for many i, w, L)"


# --- docs/notes.md#mla: MLA key cache from actual caches (DeepSeek-V2 dims) --------------

H_V2, DC_V2, DN_V2, DR_V2, DV_V2 = 128, 512, 128, 64, 128


def _mla_caches():
    """Two tokens through MLA with DeepSeek-V2's head dims (d_model 8 keeps the weights small)."""
    rng = np.random.default_rng(2)
    W = MLA.init_mla_weights(rng, 8, H_V2, DC_V2, DN_V2, DR_V2, DV_V2)
    x = rng.standard_normal((1, 2, 8))
    naive = refimpl.ContiguousCache(H_V2, DN_V2 + DR_V2, DV_V2)
    latent = MLA.MLALatentCache(DC_V2, DR_V2)
    MLA.mla_attention(x, W, cache=naive)
    MLA.mla_attention(x, W, absorbed=True, cache=latent)
    T = naive.length
    return {
        "naive_keys_nope": naive.k[..., :DN_V2].size // T,  # h d_k of the notes
        "naive_keys": naive.k.size // T,
        "naive_kv": (naive.k.size + naive.v.size) // T,
        "latent_c": latent.store.k[..., :DC_V2].size // T,
        "latent": latent.stored_values // T,
    }


def _mla_ratio():
    c = _mla_caches()
    return c["naive_keys_nope"], c["latent_c"], c["naive_keys_nope"] / c["latent_c"]


def _mla_beside():
    c = _mla_caches()
    return (f"with the decoupled RoPE key: {c['naive_keys']:,} vs {c['latent']:,} per token "
            f"({c['naive_keys'] / c['latent']:.1f}x); keys and values: {c['naive_kv']:,} vs {c['latent']:,} "
            f"({c['naive_kv'] / c['latent']:.1f}x; the latent c_KV serves both)")


# --- docs/notes.md#mla: DeepSeek-V2 236B total / 21B active -----------------------------

# deepseek-ai/DeepSeek-V2 config.json (Hugging Face hub): hidden_size 5120, num_hidden_layers 60,
# num_attention_heads 128, q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128,
# qk_rope_head_dim 64, v_head_dim 128, intermediate_size 12288 (the first_k_dense_replace = 1
# dense layer), moe_intermediate_size 1536, n_routed_experts 160, num_experts_per_tok 6,
# n_shared_experts 2, vocab_size 102400, tie_word_embeddings false; SwiGLU FFNs (3 matrices),
# two RMSNorms per layer, a final norm, router (160 x 5120) per MoE layer.
V2 = dict(d=5120, layers=60, heads=128, q_lora=1536, kv_lora=512, nope=128, rope=64, v=128, dense_ff=12288,
          moe_ff=1536, experts=160, top_k=6, shared=2, vocab=102400, dense_layers=1)


def _deepseek_v2_params():
    c = V2
    attn = MLA.mla_params(c["d"], c["heads"], q_lora_rank=c["q_lora"], kv_lora_rank=c["kv_lora"], d_nope=c["nope"],
                          d_rope=c["rope"], d_v=c["v"])
    expert = A.ffn_params(c["d"], c["moe_ff"], "glu")
    moe_layers = c["layers"] - c["dense_layers"]
    common = (2 * c["vocab"] * c["d"] + c["layers"] * (attn + 2 * c["d"]) + c["d"]
              + c["dense_layers"] * A.ffn_params(c["d"], c["dense_ff"], "glu") + moe_layers * c["experts"] * c["d"])
    total = common + moe_layers * (c["experts"] + c["shared"]) * expert
    active = common + moe_layers * (c["top_k"] + c["shared"]) * expert
    return total / 1e9, active / 1e9


# --- docs/notes.md#sinusoidal-encoding: sinusoidal position encoding ------------------------------------


def _sinusoidal():
    """PE(5) for d = 4 (the paper's interleaved layout): sin 5, cos 5, sin 0.05, cos 0.05."""
    return tuple(round(float(v), 5) for v in PE.sinusoidal_encoding(np.array([5]), 4)[0])


def _sinusoidal_beside():
    pe = PE.sinusoidal_encoding(np.arange(8), 64)
    theta = PE.sinusoidal_frequencies(64)
    return (f"theta_i = 10000^(-2i/d): {theta[0]:.0f} ... {theta[-1]:.3e} (d = 64); PE(0) = [0, 1, 0, 1, ...]; "
            f"PE(2) . PE(7) = {pe[2] @ pe[7]:.12f} = PE(0) . PE(5) = {pe[0] @ pe[5]:.12f} (offset only); "
            f"tensor2tensor / fairseq frequencies 10000^(-i/(d/2 - 1)) end at "
            f"{PE.sinusoidal_frequencies(64, frequencies='tensor2tensor')[-1]:.0e}")


EXAMPLES = [
    WorkedExample(
        "rope_angles", "docs/notes.md#rope", "θ_0 = 1.0, θ_1 = 10000^(-2/4) ≈ 0.01; at m = 5: 5 rad and 0.05 rad",
        _rope_angles, (1.0, 0.01, 5.0, 0.05), 1e-15,
        "theta_i = base^(-2i/d) with d = 4; angles are one float64 product of the integer position and theta_i",
        beside=_rope_rotation,
    ),
    WorkedExample(
        "ring_buffer_cache", "docs/notes.md#sliding-window", "cache size drops from n = 16384 to w = 4096 (4× reduction)",
        _ring_cache, (16384, 4096, 4.0), 0.0,
        "a real RingCache of 4096 slots (window of 4096 keys including self, HF Mistral sliding_window) after "
        "16,384 tokens vs a contiguous cache; decoding through the ring equals full windowed attention "
        "(property decode_equals_prefill)",
        beside=_ring_flops,
    ),
    WorkedExample(
        "decode_step_cost", "docs/notes.md#mixer-costs", "decoding at step t: O(H t d_head) time; cache O(L d_model)",
        _decode_costs, (2.0, 2.0), 0.0,
        "counted, not timed: a real token-by-token decode (H = 4, d_head = 8, 32 steps) runs through a "
        "ContiguousCache, and at every step t the count H x (keys the causal mask leaves the one query) x "
        "(d_k + d_v), read off the shapes the cache returns, is exactly 2 H t d_head multiply-adds (q.k and "
        "p.v); after L steps the cache holds exactly 2 L d_model values (K and V)",
    ),
    WorkedExample(
        "receptive_field", "docs/notes.md#receptive-field", "w = 4, i = 10: [6..10] -> [2..10] -> [0..10]; rule [i - L w, i]",
        _receptive, ((6, 10), (2, 10), (0, 10)), 0.0,
        "boolean powers of the causal window mask (w keys before self: the notes' M_w, window (4, 0))",
        beside=_receptive_rule,
    ),
    WorkedExample(
        "mla_key_cache_actual", "docs/notes.md#mla", "128 × 128 = 16,384 vs d_c = 512 per token: 32× smaller (keys)",
        _mla_ratio, (16384, 512, 32.0), 0.0,
        "counted in the caches after running two tokens through refimpl.mla_attention with DeepSeek-V2's "
        "head dims: the naive cache's per-head keys (no-RoPE part) vs the absorbed form's latent c_KV",
        beside=_mla_beside,
    ),
    WorkedExample(
        "deepseek_v2_params", "docs/notes.md#mla", "236B total parameters, 21B active per token",
        _deepseek_v2_params, (236.0, 21.0), 2.5e-2,
        "from DeepSeek-V2's published config (values in properties/examples/positions.py V2): 235.74B total, "
        "21.38B active (untied embeddings counted in both); tolerance half a unit of the notes' last digit of 21B",
    ),
    WorkedExample(
        "sinusoidal_encoding", "docs/notes.md#sinusoidal-encoding", "PE(pos, 2i) = sin(pos / 10000^(2i/d)) (and cos at 2i + 1)",
        _sinusoidal, (-0.95892, 0.28366, 0.04998, 0.99875), 0.0,
        "refimpl.positional.sinusoidal_encoding at pos = 5, d = 4, rounded to 5 digits: the RoPE angles 5 and "
        "0.05 rad again (docs/positional.md)", beside=_sinusoidal_beside,
    ),
]
