"""Worked examples and errata around the block: number formats
(docs/notes.md#number-formats, docs/errata.md#e16), the d_head scaling argument (docs/notes.md#score-variance,
docs/errata.md#e11), the SFT sign (docs/errata.md#e17), the parameter count of a layer
(docs/notes.md#layer-parameters), FFN widths (docs/notes.md#ffn, docs/errata.md#e28) and router collapse
(docs/notes.md#router-collapse, docs/errata.md#e29). Tolerances are half a unit in the last digit the notes print.
"""

from __future__ import annotations

import functools

import numpy as np

from refimpl import block as Bk
from refimpl import ffn as Fn
from refimpl import formats as F
from refimpl import losses as L
from refimpl import model_configs as MC

from . import WorkedExample

E4M3, E5M2 = F.FORMATS["float8_e4m3fn"], F.FORMATS["float8_e5m2"]


def _table():
    rows = F.format_table()
    return "; ".join(f"{r['name']}: bias {r['bias']}, max {r['max']:.6g}, min normal {r['smallest_normal']:.4g}, "
                     f"min subnormal {r['smallest_subnormal']:.4g}, ulp(1) 2^-{r['mantissa_bits']}" for r in rows)


# --- docs/errata.md#e11: Var(q.k) grows with d_head (the dot product's length), not d_model ----------
N_SAMPLES = 20000
D_MODEL, HEADS = 512, (8, 32)


def _var_qk_ratio():
    """Var(q.k) / d_head for q, k ~ N(0, I_{d_head}), d_head = 512 / H (seeded Monte Carlo).

    Standard error: q.k sums d iid products z = q_i k_i with E z^2 = 1, E z^4 = 9, so
    Var(s^2) ~ (mu4 - sigma^4) / n = (2 d^2 + 6 d) / n: relative SE sqrt((2 + 6/d) / n),
    0.0101 at d = 64 and 0.0106 at d = 16 for n = 20000. The tolerance 0.055 is > 5 SE.
    """
    rng = np.random.default_rng(11)
    out = []
    for H in HEADS:
        d = D_MODEL // H
        q, k = rng.standard_normal((N_SAMPLES, d)), rng.standard_normal((N_SAMPLES, d))
        out.append(float(np.var(np.einsum("nd,nd->n", q, k)) / d))
    return tuple(out)


def _var_qk_beside():
    r = _var_qk_ratio()
    return (f"Var(q.k) / d_head = {r[0]:.4f} (H = 8, d_head = 64) and {r[1]:.4f} (H = 32, d_head = 16); "
            f"as a fraction of d_model = 512: {r[0] * 64 / 512:.4f} and {r[1] * 16 / 512:.4f}. Dividing the scores "
            f"by sqrt(d_head) gives unit variance; sqrt(d_model) would give 1/H")


# --- docs/errata.md#e17: the SFT loss's sign ------------------------------------------------------


def _sft_example():
    """Uniform logits over V = 4: every response token has p = 1/4, so L_SFT = log 4."""
    z = np.zeros((1, 5, 4))
    tokens = np.array([[1, 2, 3, 0, 1]])
    response = np.array([[False, False, True, True, True]])
    return L.sft_loss(z, tokens, response)


def _sft_beside():
    v = _sft_example()
    return f"spec L_SFT = {v:.6f} = log 4 > 0; the notes' unsigned form gives {-v:.6f}, and descending it maximises the loss"


# --- docs/notes.md#layer-parameters: 12 d^2 parameters per layer --------------------------------------------


def _layer_params():
    blk = Bk.init_block(0, d_model=64, num_heads=4, d_ff=256, ffn_kind="mlp")
    return (blk.attn.num_params() + Fn.num_params(blk.ffn)) / 64**2


def _layer_params_beside():
    blk = Bk.init_block(0, d_model=64, num_heads=4, d_ff=256, ffn_kind="mlp")
    swi = Bk.init_block(0, d_model=64, num_heads=4, d_ff=Fn.llama_hidden_dim(64, multiple_of=16), ffn_kind="glu")
    return (f"counted from the arrays of a d = 64 block: attention {blk.attn.num_params()} = 4 d^2, FFN "
            f"{Fn.num_params(blk.ffn)} = 8 d^2, norms {blk.norm1.num_params() + blk.norm2.num_params()} = 2 d; "
            f"SwiGLU with d_ff = {swi.ffn.W_gate.shape[1]} (8/3 d rounded up to 16): FFN {Fn.num_params(swi.ffn)} "
            f"= {Fn.num_params(swi.ffn) / 64**2:.3f} d^2")


# --- docs/notes.md#ffn: expansion ratios (docs/errata.md#e28) -------------------------------------------

_RATIO_CONFIGS = ("transformer-base", "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "mistral-7b")


def _widths():
    """Per-matrix d_ff / d of the original Transformer and of Llama-2-7B, from their configs."""
    return MC.ffn_expansion(MC.TRANSFORMER_BASE)[0], MC.ffn_expansion(MC.LLAMA_2_7B)[0]


def _widths_beside():
    rows = ", ".join(f"{n} {MC.ffn_expansion(MC.PUBLISHED[n])[0]:.4g} (MLP-equivalent "
                     f"{MC.ffn_expansion(MC.PUBLISHED[n])[1]:.3g})" for n in _RATIO_CONFIGS)
    return (f"notes: 4x, 2x (LLaMA), 'typically 2.4x'; configs, d_ff / d per matrix: {rows}. Meta's rule "
            f"8/3 d rounded up to 256: {Fn.llama_hidden_dim(4096)} for d = 4096; none is near 2 or 2.4")


def _ffn_share():
    """FFN share of all parameters (embeddings included) of Llama-2-7B and Llama-2-70B."""
    return tuple(round(MC.ffn_parameter_fraction(MC.PUBLISHED[n]), 3) for n in ("llama-2-7b", "llama-2-70b"))


def _ffn_share_beside():
    rows = ", ".join(f"{n} {MC.ffn_parameter_fraction(MC.PUBLISHED[n]):.1%}" for n in _RATIO_CONFIGS[1:]
                     + ("qwen2.5-7b",))
    return f"notes: 50-60%; configs: {rows}"


# --- docs/notes.md#router-collapse (docs/errata.md#e29) ----------------------------------------

COLLAPSE_SEEDS = range(3)
COLLAPSE_E = 8


@functools.lru_cache(maxsize=None)
def _collapse_runs():
    return tuple((L.router_collapse_simulation(aux_coef=0.0, seed=s), L.router_collapse_simulation(aux_coef=1.0, seed=s))
                 for s in COLLAPSE_SEEDS)


@functools.lru_cache(maxsize=None)
def _collapse_16():
    """The same toy with 16 experts, no balance loss: a different number survives."""
    return [L.router_collapse_simulation(aux_coef=0.0, seed=s, num_experts=16).experts_used() for s in (0,)]


def _collapse():
    """(every seed leaves experts unused without the loss, every seed keeps more experts with it)."""
    runs = _collapse_runs()
    return (all(a.experts_used() < COLLAPSE_E for a, _ in runs),
            all(b.experts_used() > a.experts_used() for a, b in runs))


def _collapse_beside():
    runs = _collapse_runs()
    return (f"notes: 'the same 1-2 experts'; experts with > 1% of tokens, seeds {list(COLLAPSE_SEEDS)}: without "
            f"balance loss {[a.experts_used() for a, _ in runs]}, with aux_coef = 1 {[b.experts_used() for _, b in runs]} "
            f"(of {COLLAPSE_E}); with 16 experts and no loss (seed 0) {_collapse_16()[0]}; seed 0 final loads {np.round(runs[0][0].final_loads(), 2).tolist()} vs "
            f"{np.round(runs[0][1].final_loads(), 2).tolist()}")


EXAMPLES = [
    WorkedExample(
        "fp8_e4m3_smallest_normal", "docs/notes.md#number-formats", "9.2×10^-8 (low end of E4M3's range)",
        lambda: E4M3.smallest_normal, 2.0**-6, 0.0,
        "docs/errata.md#e16: the smallest normal of E4M3 (bias 7) is 2^(1-7) = 2^-6 = 0.015625 and the smallest "
        "subnormal 2^-9; 9.2e-8 is not near any value of the format", _table,
    ),
    WorkedExample(
        "fp8_e5m2_smallest_normal", "docs/notes.md#number-formats", "3.0×10^-10 (low end of E5M2's range)",
        lambda: E5M2.smallest_normal, 2.0**-14, 0.0,
        "docs/errata.md#e16: E5M2 has fp16's exponent (bias 15): smallest normal 2^-14 = 6.1e-5, subnormal 2^-16",
    ),
    WorkedExample(
        "fp8_max", "docs/notes.md#number-formats", "4.5×10^2 (E4M3), 5.7×10^4 (E5M2)",
        lambda: (E4M3.max, E5M2.max), (450.0, 57000.0), 0.012,
        "exact maxima 448 (e4m3fn: no inf, only S.1111.111 is NaN) and 57344 (IEEE-like, has inf)",
    ),
    WorkedExample(
        "ulp_at_1", "docs/notes.md#number-formats", "2^-23, 2^-10, 2^-7, 2^-10 (TF32), 2^-3, 2^-2",
        lambda: tuple(F.FORMATS[n].ulp_at_1 for n in ("float32", "float16", "bfloat16", "tf32", "float8_e4m3fn",
                                                      "float8_e5m2")),
        (2.0**-23, 2.0**-10, 2.0**-7, 2.0**-10, 2.0**-3, 2.0**-2), 0.0,
    ),
    WorkedExample(
        "fp16_range", "docs/notes.md#number-formats", "6.1×10^-5 - 6.6×10^4",
        lambda: (F.FORMATS["float16"].smallest_normal, F.FORMATS["float16"].max), (6.1e-5, 6.6e4), 0.008,
        "exact: 2^-14 = 6.1035e-5 and 65504",
    ),
    WorkedExample(
        "bf16_range", "docs/notes.md#number-formats", "1.2×10^-38 - 3.4×10^38",
        lambda: (F.FORMATS["bfloat16"].smallest_normal, F.FORMATS["bfloat16"].max), (1.2e-38, 3.4e38), 0.042,
        "exact: 2^-126 = 1.1755e-38 and (2 - 2^-7) 2^127 = 3.3895e38",
    ),
    WorkedExample(
        "var_qk_grows_with_d_head", "docs/notes.md#score-variance", "Var(<q_h, k_h>) ~ d_model sigma_q^2 sigma_k^2",
        _var_qk_ratio, (1.0, 1.0), 0.055,
        "docs/errata.md#e11: q_h.k_h sums d_head products, so Var = d_head (ratio 1 at d_head = 64 and 16, 5-sigma "
        "Monte Carlo tolerance, n = 20000 seeded samples); d_model = 512 would give 8 and 32", _var_qk_beside,
    ),
    WorkedExample(
        "sft_loss_sign", "docs/notes.md#sft-loss", "L_SFT = (1/L_y) sum_t sum_v (y'_t)_v log P(v | p, y_<t)",
        _sft_example, float(np.log(4.0)), 1e-12,
        "docs/errata.md#e17: the second form drops the minus sign; the loss is -(1/L_y) sum log P >= 0", _sft_beside,
    ),
    WorkedExample(
        "params_per_layer_12d2", "docs/notes.md#layer-parameters", "4 d^2 + 2 d d_ff = 12 d^2 for d_ff = 4d",
        _layer_params, 12.0, 0.0, "without biases and norms (the notes call them negligible)", _layer_params_beside,
    ),
    WorkedExample(
        "ffn_expansion_ratio", "docs/notes.md#ffn", "typically 2.4×; 4× (original Transformer), 2× (LLaMA)",
        _widths, (4.0, 2.6875), 0.0,
        "docs/errata.md#e28: d_ff / d per matrix from the configs (refimpl.model_configs, docs/model_configs.md): "
        "Llama-2-7B's SwiGLU width 11008 = 8/3 d rounded up to 256 is 2.6875 d, not 2 d; its three "
        "matrices hold the parameters of a 4.03 d MLP", _widths_beside, erratum=28,
    ),
    WorkedExample(
        "ffn_parameter_share", "docs/notes.md#ffn", "FFNs account for 50% - 60% of total parameters",
        _ffn_share, (0.642, 0.817), 0.0,
        "docs/errata.md#e28: FFN share of all parameters (embeddings included) counted from the published configs; "
        "64% for Llama-2-7B rising to 82% for Llama-2-70B, above the notes' range", _ffn_share_beside, erratum=28,
    ),
    WorkedExample(
        "router_collapse", "docs/notes.md#router-collapse", "without the balance loss the router collapses to the same 1-2 experts",
        _collapse, (True, True), 0.0,
        "docs/errata.md#e29: an empirical remark, not a count. A seeded top-1 toy (refimpl.losses.router_collapse_simulation) "
        "shows collapse in every seed (experts left unused, with zero gradient) and fewer surviving experts than "
        "with the balance loss; how many survive depends on initialisation and data, so no count is pinned",
        _collapse_beside, erratum=29,
    ),
]
