"""The notes' remaining figures (issue 24, item 10), each computed by refimpl from a stated
configuration: sparse-pattern counts and hops (docs/notes.md#global-and-random-tokens), softmax
temperature limits (docs/notes.md#softmax-temperature), GQA groups (docs/notes.md#gqa), MoE capacity and the
GPT-3-scale figures (docs/notes.md#moe-parameters, docs/errata.md#e19), Qwen's dual-chunk figures
(docs/notes.md#dual-chunk), Qwen1.5-MoE (docs/notes.md#moe-parameters) and N^2 (docs/notes.md#mixer-costs).
"""

from __future__ import annotations

import functools

import numpy as np

import refimpl
from refimpl import accounting as A
from refimpl import latent as LT
from refimpl import pooled_memory as PMEM
from refimpl import scaling as SC
from refimpl.norms import rms_norm
from refimpl import masks as M
from refimpl import receptive_field as RF
from refimpl.io_accounting import score_matrix_elements
from refimpl.model_configs import QWEN2_5_7B

from . import WorkedExample

# --- docs/notes.md#global-and-random-tokens: sliding window + global tokens, O(n (w + |G|)) ------------------------

N_G, W_G, G_G = 8192, 2048, 16


def _window_global_rows(n, w, g):
    """Closed form per row p of M_w (keys p - w .. p) | GlobalTokens(0 .. g-1), symmetric globals."""
    p = np.arange(n, dtype=np.int64)
    local = np.minimum(p, w) + 1
    extra = np.minimum(g, np.maximum(p - w, 0))  # global keys left of the window
    return np.where(p < g, n, local + extra)


def _window_global():
    """The closed form at n = 8192, after checking it row by row against the masks at n = 1024, w = 256."""
    mask = (M.SlidingWindow(*M.window_from_seed_mw(256)) & M.Causal()) | M.GlobalTokens(range(G_G))
    if not np.array_equal(mask.row_counts(1024, 1024), _window_global_rows(1024, 256, G_G)):
        raise AssertionError("closed form and mask disagree")
    return int(_window_global_rows(N_G, W_G, G_G).sum()), N_G * (W_G + G_G)


def _window_global_beside():
    exact, bound = _window_global()
    return (f"n = {N_G}, w = {W_G} (M_w: w + 1 keys incl. self), |G| = {G_G}: exact {exact:,} visible pairs "
            f"(closed form per row, checked against the masks at n = 1024) vs n (w + |G|) = {bound:,}: ratio {exact / bound:.4f}; "
            f"of n^2: {exact / N_G**2:.4f}")


# --- docs/notes.md#global-and-random-tokens: BigBird's random blocks give O(log n) hops ------------------------------

BB_BLOCK, BB_SIZES = 4, (32, 64, 128)


def _hops(mask, n):
    """Fewest layers after which every position reaches every other (receptive_field all True)."""
    hi = 1
    while not RF.receptive_field(mask, n, hi).all():
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if RF.receptive_field(mask, n, mid).all() else (mid, hi)
    return hi


@functools.lru_cache(maxsize=None)
def _bigbird_hops():
    random = tuple(_hops(M.BigBird(BB_BLOCK, 3, global_blocks=0, random_blocks=1, seed=0), n) for n in BB_SIZES)
    window = tuple(_hops(M.BigBird(BB_BLOCK, 3, global_blocks=0, random_blocks=0), n) for n in BB_SIZES)
    return random, window


def _bigbird_beside():
    random, window = _bigbird_hops()
    blocks = [n // BB_BLOCK for n in BB_SIZES]
    return (f"blocks of {BB_BLOCK}, window 3 blocks, no global blocks, n = {list(BB_SIZES)} ({blocks} blocks): hops "
            f"{list(random)} with one random block per row vs {list(window)} = blocks - 1 without; log2(blocks) = "
            f"{[int(np.log2(b)) for b in blocks]}; with a global block every pair is 2 hops apart")


# --- docs/notes.md#softmax-temperature: softmax temperature limits -------------------------------------------


def _temperature():
    s = np.array([1.0, 2.0, 3.0])
    cold, hot = refimpl.softmax(s / 0.01), refimpl.softmax(s / 1e4)
    return float(cold.max()), float(hot.min() * 3)


def _temperature_beside():
    s = np.array([1.0, 2.0, 3.0])
    rows = ", ".join(f"T = {T:g}: {np.round(refimpl.softmax(s / T), 4).tolist()}" for T in (0.01, 0.5, 1, 10, 1e4))
    return f"scores [1, 2, 3]: {rows}"


# --- docs/notes.md#gqa: 28 query heads on 4 KV heads (Qwen2.5-7B) ----------------------------


def _gqa_groups():
    """Which KV head each query head reads, observed through refimpl.attention: KV head g holds value g."""
    Hq, Hkv = QWEN2_5_7B.n_heads, QWEN2_5_7B.kv_heads
    q = np.zeros((1, Hq, 1, 1))
    k = np.zeros((1, Hkv, 1, 1))
    v = np.arange(Hkv, dtype=float).reshape(1, Hkv, 1, 1)
    out, _ = refimpl.attention(q, k, v)
    read = out[0, :, 0, 0].astype(int)
    return Hq // Hkv, tuple(int(np.sum(read == g)) for g in range(Hkv))


def _gqa_beside():
    Hq, Hkv = QWEN2_5_7B.n_heads, QWEN2_5_7B.kv_heads
    G = Hq // Hkv
    return "; ".join(f"KV {g}: Q {g * G}-{g * G + G - 1}" for g in range(Hkv)) + " (query head h reads KV head h // 7)"


# --- docs/notes.md#moe-parameters: 64 experts, top-2 --------------------------------------------------

_D = 1024
DENSE = A.TransformerConfig(d_model=_D, n_layers=1, n_heads=8, d_ff=4 * _D)
MOE64 = A.TransformerConfig(d_model=_D, n_layers=1, n_heads=8, d_ff=4 * _D, num_experts=64, top_k=2)


def _moe64():
    d, m = A.parameter_count(DENSE), A.parameter_count(MOE64)
    cd, cm = A.compute_per_token(DENSE), A.compute_per_token(MOE64)
    return m.experts_per_layer // d.experts_per_layer, cm.ffn_per_layer // cd.ffn_per_layer, \
        m.experts_per_layer // (MOE64.top_k * m.expert)


# --- docs/notes.md#moe-parameters: GPT-3-scale MoE (docs/errata.md#e19) -----------------------------------------

# GPT-3 175B (Brown et al. 2020, Table 2.1): 96 layers, d_model 12288, 96 heads of 128, d_ff = 4 d_model,
# vocabulary 50257 (tied input and output embeddings); learned positions (2048 x 12288) and biases
# are left out. The MoE replaces every FFN by 64 experts of the same shape, top-2.
GPT3 = A.TransformerConfig(d_model=12288, n_layers=96, n_heads=96, d_ff=4 * 12288, vocab_size=50257,
                           tied_embeddings=True)
GPT3_MOE = A.TransformerConfig(d_model=12288, n_layers=96, n_heads=96, d_ff=4 * 12288, vocab_size=50257,
                               tied_embeddings=True, num_experts=64, top_k=2)


def _gpt3_moe():
    d, m = A.parameter_count(GPT3), A.parameter_count(GPT3_MOE)
    return round(d.total / 1e9, 1), round(m.total / 1e12, 2), round(m.active / 1e9, 1)


def _gpt3_moe_beside():
    d, m = A.parameter_count(GPT3), A.parameter_count(GPT3_MOE)
    cd, cm = A.compute_per_token(GPT3), A.compute_per_token(GPT3_MOE)
    return (f"dense {d.total:,} params, {cd.total:,} MACs per token ({2 * cd.total / 1e9:.0f} GFLOPs); MoE "
            f"{m.total:,} params ({m.total / d.total:.1f}x), {cm.total:,} MACs ({cm.total / cd.total:.2f}x). The "
            f"notes' 1.7T (10x) with 350B (2x) fits no 64-expert top-2 model of this shape: 10x total needs about "
            f"{(10 * d.total - (d.total - 96 * d.expert)) / (96 * d.expert):.1f} experts' worth of FFN")


# --- docs/notes.md#dual-chunk: dual-chunk attention at 128K ------------------------------------------

N_Q, W_Q, S_Q = 128_000, 2048, 64


def _dual_chunk_rows(n, w, s):
    """Per row p: window keys (w incl. self) + stride keys (absolute j % s == 0, j <= p) - both."""
    p = np.arange(n, dtype=np.int64)
    lo = np.maximum(0, p - w + 1)
    local, stride = p - lo + 1, p // s + 1
    both = p // s - (lo - 1) // s  # multiples of s in [lo, p]
    return local + stride - both, local, stride


def _dual_chunk():
    """refimpl.masks.dual_chunk_masks (the notes' two branches): the last query's stride keys at n = 128,000,
    and the exact union count from the closed form, checked row by row against the masks at n = 700."""
    local, strided = M.dual_chunk_masks(W_Q, S_Q)
    last = int(strided.row_counts(1, N_Q)[0])
    total = int(_dual_chunk_rows(N_Q, W_Q, S_Q)[0].sum())
    lo_s, st_s = M.dual_chunk_masks(W_Q // 64, S_Q // 8)
    if not np.array_equal((lo_s & M.Causal() | st_s).row_counts(700, 700), _dual_chunk_rows(700, W_Q // 64, S_Q // 8)[0]):
        raise AssertionError("closed form and mask disagree")
    return last, total


def _dual_chunk_beside():
    total, local, stride = (int(a.sum()) for a in _dual_chunk_rows(N_Q, W_Q, S_Q))
    return (f"n = 128,000, w = 2048, s = 64: local {local:,} (n w = {N_Q * W_Q:,}), stride {stride:,} "
            f"(n^2 / (2 s) = {N_Q**2 // (2 * S_Q):,}: causal rows see p / s), union {total:,} = "
            f"{total / N_Q**2:.4f} of n^2 (the closed form per row is checked against the masks at n = 700)")


# --- docs/notes.md#moe-parameters: Qwen1.5-MoE-A2.7B --------------------------------------------------

# Qwen/Qwen1.5-MoE-A2.7B config.json: hidden_size 2048, num_hidden_layers 24, num_attention_heads 16
# (num_key_value_heads 16), moe_intermediate_size 1408, num_experts 60, num_experts_per_tok 4,
# shared_expert_intermediate_size 5632 (= 4 x 1408: counted as 4 always-active experts), vocab_size
# 151936, tie_word_embeddings false; q/k/v biases and a shared-expert gate (1 x 2048) per layer added below.
QWEN15_MOE = A.TransformerConfig(d_model=2048, n_layers=24, n_heads=16, d_ff=1408, ffn_kind="glu", num_experts=60,
                                 top_k=4, n_shared_experts=4, vocab_size=151936, norms_per_layer=2, final_norm=True)
_QWEN15_EXTRA = 24 * (3 * 2048 + 2048)


def _qwen15():
    c = A.parameter_count(QWEN15_MOE)
    return round((c.total + _QWEN15_EXTRA) / 1e9, 1), round((c.active + _QWEN15_EXTRA) / 1e9, 1)


def _qwen15_beside():
    c = A.parameter_count(QWEN15_MOE)
    return (f"total {c.total + _QWEN15_EXTRA:,}, active {c.active + _QWEN15_EXTRA:,}; the notes' '64 experts' are 60 "
            f"routed + a shared expert 4 times as wide (4 x 1408 = 5632); per token 4 routed + the shared one run")


# --- docs/latent.md: the latent block (docs/errata.md#e26: not DeepSeek's MLA) ----------------------


def _latent():
    """Scores per head of one latent block, M = 512 latents reading L = 224 x 224 inputs, vs L^2."""
    w = LT.init_latent_block(0, d_model=4, num_latents=3, num_heads=1)
    rows = LT.latent_block(np.random.default_rng(0).standard_normal((1, 40, 4)), w, num_heads=1).shape[1]
    return LT.latent_block_scores(1, 512, 224 * 224), (224 * 224) ** 2, rows


# --- docs/notes.md#logit-scaling and docs/notes.md#norms: scaling arguments ------------------------------------------


def _logit_var():
    """E = 4096, sigma = 0.02: Var(l) = E sigma^2 exactly for RMS(x) = 1; a seeded Monte Carlo over head rows."""
    rng = np.random.default_rng(31)
    x = rms_norm(rng.standard_normal((1, 4096)), eps=0.0)
    w = rng.standard_normal((2000, 4096)) * 0.02
    return float(SC.logit_variance(x, 0.02)[0]), float(np.var(w @ x[0]))


def _recentre():
    rng = np.random.default_rng(52)
    y, W, b = rng.standard_normal((64, 8)) + rng.standard_normal((64, 1)), rng.standard_normal((8, 8)), np.zeros(8)
    u, _ = SC.recentred_affine(y, W, b)
    return bool(np.allclose(u, y @ W + b, rtol=1e-12, atol=1e-12)), SC.constant_bias_residual(y, W) > 0


def _recentre_beside():
    rng = np.random.default_rng(52)
    y, W = rng.standard_normal((64, 8)) + rng.standard_normal((64, 1)), rng.standard_normal((8, 8))
    return (f"64 tokens, d = 8: per token W y + b = W (y - mu 1) + (b + mu W 1) to rounding; the best constant bias "
            f"leaves a mean squared remainder {SC.constant_bias_residual(y, W):.3f} = Var_t(mu) ||W 1||^2, against "
            f"mean ||W y||^2 = {np.mean(np.sum((y @ W) ** 2, axis=1)):.3f}")


# --- docs/notes.md#pooled-memory: recent single, mid-range pooled, distant coarser ---------------

PM_CFG = dict(window=256, g1=64, g2=1024, mid_range=4096)


def _pooled():
    m, a = PMEM.boundaries(100_000, **PM_CFG)
    return int(PMEM.unit_counts(100_001, **PM_CFG)[-1]), 100_000 - a + 1, (a - m) // 64, m // 1024


def _pooled_beside():
    c = PMEM.unit_counts(100_001, **PM_CFG)
    return (f"units per query at t = 100,000: single keys + mid groups of 64 + distant groups of 1024; summed over "
            f"all 100,001 queries {int(c.sum()):,} against {100_001 * 100_002 // 2:,} causal scores "
            f"({100_001 * 100_002 / 2 / c.sum():.0f}x fewer)")


EXAMPLES = [
    WorkedExample(
        "window_global_exact_count", "docs/notes.md#global-and-random-tokens", "O(n·(w + |G|)) ≈ O(n·w) when |G| ≪ w",
        _window_global, (14_916_336, 16_908_288), 0.0,
        "exact visible pairs of the notes' M_w (causal, w + 1 keys) OR 16 symmetric global tokens at n = 8192, "
        "w = 2048, beside n (w + |G|); the causal window's first w rows are short, the global rows are full",
        beside=_window_global_beside,
    ),
    WorkedExample(
        "bigbird_log_hops", "docs/notes.md#global-and-random-tokens", "random connections: information crosses the sequence in O(log n) hops",
        lambda: _bigbird_hops(), ((4, 5, 7), (7, 15, 31)), 0.0,
        "layers until receptive_field(BigBird mask) is all True, with one random block per row vs none (window "
        "only: blocks - 1 hops); seed 0 of BigBird's documented draw",
        beside=_bigbird_beside,
    ),
    WorkedExample(
        "softmax_temperature_limits", "docs/notes.md#softmax-temperature", "T -> 0: argmax (hard selection); T -> inf: uniform",
        _temperature, (1.0, 1.0), 1e-3,
        "refimpl.softmax(s / T) for s = [1, 2, 3]: largest weight at T = 0.01, 3 x smallest weight at T = 10^4",
        beside=_temperature_beside,
    ),
    WorkedExample(
        "gqa_28_query_4_kv_heads", "docs/notes.md#gqa", "Qwen2.5: 28 Q heads, 4 K/V heads (7:1)",
        _gqa_groups, (7, (7, 7, 7, 7)), 0.0,
        "Qwen2.5-7B config (refimpl.model_configs): each KV head serves 7 query heads, observed by running "
        "refimpl.attention with KV head g holding the value g",
        beside=_gqa_beside,
    ),
    WorkedExample(
        "moe_64_experts_top2", "docs/notes.md#moe-parameters", "64 experts, top-2 routing -> 32× capacity increase, 2× compute",
        _moe64, (64, 2, 32), 0.0,
        "docs/errata.md#x-moe-64-experts: FFN parameters grow 64x over one dense FFN and per-token FFN compute 2x; 32x is the "
        "ratio of total to active expert parameters, not the capacity increase (the notes' own 8-expert line "
        "says 8 experts = 8x capacity)",
    ),
    WorkedExample(
        "gpt3_scale_moe", "docs/notes.md#moe-parameters",
        "dense 175B; MoE 1.7T params (10×), top-2 of 64 experts -> 350B FLOPs/token (2×)",
        _gpt3_moe, (174.6, 7.48, 290.6), 0.0,
        "docs/errata.md#e19: from GPT-3's stated shape (96 layers, d 12288, d_ff 4d, tied 50257 vocabulary) with every FFN "
        "made 64 experts, top-2: 174.6B dense, 7.48T total (43x), 290.6B active (1.66x), not 1.7T and 2x",
        beside=_gpt3_moe_beside, erratum=19,
    ),
    WorkedExample(
        "dual_chunk_representatives", "docs/notes.md#dual-chunk", "128000/64 = 2000 representative tokens; O(n·w) + O(n²/s)",
        _dual_chunk, (2000, 384_047_616), 0.0,
        "refimpl.masks.dual_chunk_masks(2048, 64): the strided branch's row count for the last query at n = 128,000, "
        "and the exact visible pairs of the union of the 2048-key causal window and every 64th key",
        beside=_dual_chunk_beside,
    ),
    WorkedExample(
        "qwen15_moe_params", "docs/notes.md#moe-parameters", "Qwen1.5-MoE: 14.3B total params, 2.7B active; 64 experts, top-4",
        _qwen15, (14.3, 2.7), 0.0,
        "counted from Qwen1.5-MoE-A2.7B's published config (values in properties/examples/figures.py), billions",
        beside=_qwen15_beside,
    ),
    WorkedExample(
        "n_squared_figures", "docs/notes.md#mixer-costs", "N = 1024: N² ≈ 1M; N = 100,000: N² ≈ 10B",
        lambda: (score_matrix_elements(1024, 1024), score_matrix_elements(100_000, 100_000)),
        (1_048_576, 10_000_000_000), 0.0,
        "refimpl.io_accounting.score_matrix_elements: 2^20 = 1,048,576 and 10^10 scores per head",
    ),
    WorkedExample(
        "latent_block_cost", "docs/latent.md", "cross-attention with a latent array, M ≪ L: z += CrossAttn(z <- x); "
        "z += SelfAttn(z) (called 'MLA' there)",
        _latent, (25_952_256, 2_517_630_976, 3), 0.0,
        "docs/errata.md#e26: refimpl.latent.latent_block, a Perceiver-style block, named apart from DeepSeek's MLA "
        "(refimpl.mla); scores per head M L + M^2 for M = 512, L = 50,176 against L^2 (97x fewer); the block "
        "returns M rows whatever L (3 latents reading 40 tokens -> 3 rows)", erratum=26,
    ),
    WorkedExample(
        "lm_head_logit_variance", "docs/notes.md#logit-scaling", "Var(l) ≈ E σ², so the standard deviation ~ √E",
        _logit_var, (1.6384, 1.6384), 0.158,
        "refimpl.scaling.logit_variance at E = 4096, sigma = 0.02: exactly E sigma^2 = 1.6384 for RMS(x) = 1 "
        "(std 1.28 = 0.02 sqrt(4096)), beside a seeded Monte Carlo over 2000 head rows; tolerance 5 standard "
        "errors of a variance from 2000 normal draws, 5 sqrt(2/1999) = 0.158 relative",
    ),
    WorkedExample(
        "rmsnorm_mean_and_bias", "docs/notes.md#norms", "u = W(y − μ_y 1) + (b + W μ_y 1): equivalent to adjusting the bias",
        _recentre, (True, True), 0.0,
        "refimpl.scaling.recentred_affine: exact per token; but mu_y varies across tokens, so one learned bias "
        "cannot absorb it (constant_bias_residual > 0 unless W 1 = 0); docs/scaling.md", beside=_recentre_beside,
    ),
    WorkedExample(
        "pooled_memory_units", "docs/notes.md#pooled-memory",
        "recent: individual tokens | mid-range: pooled groups | distant: coarse summaries; O(w + groups) per token",
        _pooled, (452, 289, 70, 93), 0.0,
        "refimpl.pooled_memory with w = 256, g1 = 64 over a mid range of 4096, g2 = 1024: 289 single keys (the "
        "window plus the partial group beside it), 70 mid groups (the mid range rounded out to the 1024 grid), 93 distant groups, on absolute grids",
        beside=_pooled_beside,
    ),
]
