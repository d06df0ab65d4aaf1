"""Worked examples on masks, attention and caches, reproduced with refimpl."""

from __future__ import annotations

import numpy as np

import refimpl
from refimpl import masks as M
from refimpl.cache import kv_cache_values, mla_key_cache_values
from refimpl.model_configs import LLAMA_2_70B, attention_variant

from . import WorkedExample

# --- docs/notes.md#sliding-window: sliding-window non-zero fraction, n = 8192, w = 2048 ----------

N1, W1 = 8192, 2048


def _p1_w_keys():
    """Problem 1's own count: min(i + 1, w) keys per row, i.e. window (w - 1, 0)."""
    m = M.SlidingWindow(*M.window_from_keys_including_self(W1)) & M.Causal()
    return m.count(N1, N1)


def _p1_mw():
    """Section 1's M_w: max(0, i - w) <= j <= i, w + 1 keys per row, window (w, 0)."""
    m = M.SlidingWindow(*M.window_from_seed_mw(W1)) & M.Causal()
    return m.count(N1, N1)


# --- docs/notes.md#dsa: DSA at t = 1000, window 256, stride 64, global {0} ------------

DSA = M.DSA(window=256, stride=64, global_tokens=(0,))


def _dsa_row_1000():
    return int(DSA.row_counts(1001, 1001)[1000])


def _dsa_seed_estimate():
    """The notes' estimate: the row count at t = 1000 times 1000 queries."""
    return _dsa_row_1000() * 1000


def _dsa_exact():
    """Exact counts for a 1000-token sequence (queries t = 0..999), beside the estimate."""
    n = 1000
    exact = DSA.count(n, n)  # closed form per row; tests/test_masks.py checks it against materialising
    causal = M.Causal().count(n, n)
    return (
        f"exact DSA count for n = {n}: {exact:,} ({1 - exact / n**2:.1%} fewer than {n**2:,}; "
        f"{1 - exact / causal:.1%} fewer than the {causal:,} causal scores)"
    )


# --- docs/notes.md#attention-dropout: dropout example ----------------------------------------------


def _dropout_example():
    """softmax gives [0.5, 0.3, 0.2]; the keep-mask drops the second; p = 0.1.

    Scores log(alpha) with D = 1 (scale 1), q = 1, k_j = log(alpha_j), and one-hot
    values make the output row equal to the dropped-and-rescaled weights.
    """
    alpha = np.array([0.5, 0.3, 0.2])
    q = np.ones((1, 1, 1, 1))
    k = np.log(alpha).reshape(1, 1, 3, 1)
    v = np.eye(3).reshape(1, 1, 3, 3)
    keep = np.array([True, False, True])
    out, _ = refimpl.attention(q, k, v, scale=1.0, dropout_mask=keep, dropout_p=0.1)
    return tuple(np.round(out[0, 0, 0], 3))


# --- GQA / MQA / MLA caches -----------------------------------------------------------------


def _gqa_reduction():
    """32 query heads sharing 8 kv heads (docs/notes.md#gqa)."""
    return kv_cache_values(4096, 32, 128) / kv_cache_values(4096, 8, 128)


def _llama70b_per_layer():
    """Values per layer at n = 4096, d_head = 128: with the notes' h = 64 K/V heads (MHA accounting of a
    64-head model), and with the published Llama-2-70B's 8 K/V heads (GQA; refimpl.model_configs)."""
    cfg = LLAMA_2_70B
    return kv_cache_values(4096, cfg.n_heads, cfg.hd), kv_cache_values(4096, cfg.kv_heads, cfg.hd)


def _llama70b_beside():
    cfg = LLAMA_2_70B
    return (f"Llama-2-70B config: {cfg.n_layers} layers, {cfg.n_heads} query heads, {cfg.kv_heads} K/V heads, "
            f"d_head {cfg.hd}: 2 x {cfg.kv_heads} x 4096 x {cfg.hd} = {kv_cache_values(4096, cfg.kv_heads, cfg.hd):,} "
            f"per layer, {kv_cache_values(4096, cfg.kv_heads, cfg.hd, layers=cfg.n_layers):,} over all layers "
            f"({attention_variant(cfg.n_heads, cfg.kv_heads)}); the 64-head MHA count is "
            f"{kv_cache_values(4096, cfg.n_heads, cfg.hd) // kv_cache_values(4096, cfg.kv_heads, cfg.hd)}x larger")


def _mla_key_reduction():
    """Keys only: h * d_k = 128 * 128 per token vs the latent d_c = 512."""
    full_keys = kv_cache_values(1, 128, 128) // 2  # keys and values alike: half are keys
    return full_keys / mla_key_cache_values(1, 512)


# --- docs/notes.md#sliding-window: sliding-window attention speedup -----------------------------------

D1, N_E1, W_E1 = 4096, 16384, 4096


def _attention_flops_last_token(mask):
    """The notes' convention: attention FLOPs per layer per token = 2 * d * (keys attended)."""
    return 2 * D1 * int(mask.row_counts(N_E1, N_E1)[-1])


def _example1():
    full = _attention_flops_last_token(M.Causal())
    window = _attention_flops_last_token(M.SlidingWindow(W_E1 - 1, 0))
    return full, window, full / window


EXAMPLES = [
    WorkedExample(
        "sliding_window_fraction_w_keys", "docs/notes.md#sliding-window", "≈ 14.68M non-zero; 0.219 ≈ 22%",
        lambda: (_p1_w_keys(), _p1_w_keys() / N1**2), (14.68e6, 0.219), 5e-3,
        "exact count with w keys per row (Problem 1's own count): 14,681,088 = 0.21877 of 8192^2",
    ),
    WorkedExample(
        "sliding_window_fraction_mw", "docs/notes.md#sliding-window", "0.219 ≈ 22%",
        lambda: (_p1_mw(), _p1_mw() / N1**2), (14.68e6, 0.219), 5e-3,
        "M_w admits w + 1 keys per row (docs/errata.md#e2): 14,687,232 = 0.21886; both conventions round to 22%",
    ),
    WorkedExample(
        "dsa_row_count", "docs/notes.md#dsa", "256 + ⌈744/64⌉ + 1 (per query)",
        _dsa_row_1000, 269, 0.0,
        "exact row at t = 1000: 257 local (744..1000 inclusive, docs/errata.md#e6) + 11 representatives "
        "(680, 616, ..., 40) + 1 global = 269, the same total as the notes' 256 + 12 + 1",
    ),
    WorkedExample(
        "dsa_seed_estimate", "docs/notes.md#dsa", "≈ 269,000 scores; ~73% fewer than 1M",
        lambda: (_dsa_seed_estimate(), 1 - _dsa_seed_estimate() / 1e6), (269_000, 0.731), 2e-3,
        "the notes multiply the last row's count by all 1000 queries and compares with the non-causal 1M",
        beside=_dsa_exact,
    ),
    WorkedExample(
        "dropout_example", "docs/notes.md#attention-dropout", "[0.556, 0, 0.222]",
        _dropout_example, (0.556, 0.0, 0.222), 0.0,
        "refimpl.attention with an explicit keep-mask [1, 0, 1] and p = 0.1, rounded to 3 digits",
    ),
    WorkedExample(
        "gqa_cache_reduction", "docs/notes.md#gqa", "4× smaller cache (32 -> 8 kv heads)",
        _gqa_reduction, 4.0, 0.0,
    ),
    WorkedExample(
        "llama70b_kv_values_per_layer", "docs/notes.md#gqa", "LLaMA-70B (h = 64, d_k = 128, n = 4096): ~67M values per layer",
        _llama70b_per_layer, (67.1e6, 8_388_608), 1e-3,
        "docs/errata.md#e20: the notes' count, 2 x 64 x 4096 x 128 = 67,108,864, treats all 64 heads as K/V heads (MHA); "
        "the published Llama-2-70B has 8 K/V heads (GQA): 2 x 8 x 4096 x 128 = 8,388,608 per layer",
        beside=_llama70b_beside, erratum=20,
    ),
    WorkedExample(
        "mla_key_cache_reduction", "docs/notes.md#mla", "32× smaller (keys)",
        _mla_key_reduction, 32.0, 0.0, "128 heads x 128 dims = 16,384 values vs d_c = 512",
    ),
    WorkedExample(
        "sliding_window_speedup", "docs/notes.md#sliding-window", "1.34 × 10^8 vs 3.36 × 10^7 FLOPs; ≈ 4×",
        _example1, (1.34e8, 3.36e7, 4.0), 5e-3,
        "2 * d * keys attended by the last token: 16,384 keys (causal) vs 4,096 (window of 4096 keys)",
    ),
]
