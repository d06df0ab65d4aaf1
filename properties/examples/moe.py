"""MoE worked examples from the notes (docs/notes.md#moe-router, docs/notes.md#moe-parameters,
docs/notes.md#moe-memory, docs/notes.md#balance-loss, docs/notes.md#capacity), computed by refimpl.moe and
refimpl.accounting.

Tolerances are half a unit in the last digit the notes print, relative to the
printed figure (e.g. 4.83B: 0.005 / 4.83 ~ 1.04e-3).
"""

from __future__ import annotations

import numpy as np

from refimpl import accounting as A
from refimpl import moe as M

from . import WorkedExample

# docs/notes.md#moe-parameters: L = 24, d = 4096, E = 8, k = 2, FFN 8 d^2 (d x 4d + 4d x d), attention
# 4 d^2 (Q, K, V, O), router E d; no embeddings or norms in the notes' count.
_D = 4096
DENSE_000 = A.TransformerConfig(d_model=_D, n_layers=24, n_heads=32, d_ff=4 * _D)
MOE_000 = A.TransformerConfig(d_model=_D, n_layers=24, n_heads=32, d_ff=4 * _D, num_experts=8, top_k=2)


def _params():
    return A.parameter_count(DENSE_000).total / 1e9, A.parameter_count(MOE_000).total / 1e9


def _macs():
    return (A.compute_per_token(DENSE_000).per_layer / 1e6, A.compute_per_token(MOE_000).per_layer / 1e6)


def _ratios():
    pd, pm = A.parameter_count(DENSE_000).total, A.parameter_count(MOE_000).total
    cd, cm = A.compute_per_token(DENSE_000).per_layer, A.compute_per_token(MOE_000).per_layer
    return pm / pd, cm / cd


def _example2_exact():
    pd, pm = A.parameter_count(DENSE_000), A.parameter_count(MOE_000)
    c2d, c2m = A.compute_per_token(DENSE_000, convention="2flop"), A.compute_per_token(MOE_000, convention="2flop")
    cm = A.compute_per_token(MOE_000)
    return (f"params {pd.total:,} and {pm.total:,} (per layer {pd.per_layer:,} and {pm.per_layer:,}); "
            f"MoE per-layer MACs {cm.per_layer:,} of which router {cm.router_per_layer:,}; "
            f"2-FLOP convention: {c2d.per_layer:,} and {c2m.per_layer:,} FLOPs per layer per token")


def _problem3_batch():
    """1024 tokens, E = 16, k = 2, routed so that expert 3 receives exactly 200 assignments
    (all first choices of tokens 0..199) and every other expert at most 160."""
    T, E = 1024, 16
    z = np.zeros((T, E))
    others = [e for e in range(E) if e != 3]
    for t in range(T):
        first = 3 if t < 200 else others[t % 15]
        second = [e for e in others if e != first][t % 14]
        z[t, first], z[t, second] = 10.0, 5.0
    return z


def _problem3():
    z = _problem3_batch()
    r = M.route(z, 2, capacity=M.capacity(1024, 16, k=2, factor=1.25), drop_order="k_major")
    expected = 1024 * 2 // 16
    return expected, r.capacity, r.num_dropped


def _problem3_exact():
    r = M.route(_problem3_batch(), 2, capacity=M.capacity(1024, 16, k=2, factor=1.25))
    return (f"counts per expert {r.counts.tolist()}; kept {r.kept_counts.tolist()}; expert 3 loses "
            f"{int(r.counts[3] - r.kept_counts[3])} of {int(r.counts[3])} = "
            f"{(r.counts[3] - r.kept_counts[3]) / r.counts[3]:.0%}. Without k in the formula (the notes' other reading, "
            f"docs/errata.md#e4) C = {M.capacity(1024, 16, k=2, factor=1.25, k_in_capacity=False)}")


def _problem4():
    kv = 4e9
    return (A.inference_memory_bytes(7e9, kv, bytes_per_param=2) / 1e9,
            A.inference_memory_bytes(56e9, kv, bytes_per_param=2) / 1e9)


def _example3():
    f = np.array([100, 80, 50, 26]) / 256
    return M.product_balance_loss(f, [0.35, 0.30, 0.22, 0.13], alpha=0.01, scale="E")


def _example3_exact():
    f = np.array([100, 80, 50, 26]) / 256
    P = [0.35, 0.30, 0.22, 0.13]
    exact = M.product_balance_loss(f, P, alpha=0.01)
    return (f"exact {exact:.10f} (the notes round sum f P to 0.2867); the same counts under other "
            f"normalisations: no E factor (the notes' other form) {M.product_balance_loss(f, P, alpha=0.01, scale='1'):.6f}, "
            f"alpha CV(f)^2 = {0.01 * M.cv_squared(f):.6f}")


def _renorm():
    p = np.array([0.31, 0.02, 0.28, 0.05, 0.19, 0.08, 0.04, 0.03])
    r = M.route(np.log(p)[None, :], 2, normalize="after_drop")
    return tuple(float(g) for g in r.gates[0])


def _renorm_exact():
    p = np.array([0.31, 0.02, 0.28, 0.05, 0.19, 0.08, 0.04, 0.03])
    r = M.route(np.log(p)[None, :], 2, normalize="none")
    return (f"experts {r.indices[0].tolist()} (0-based; the notes' 1 and 3), gates {r.gates[0].round(6).tolist()} "
            f"without renormalisation (Switch, DeepSeek-V2; docs/errata.md#e14), renormalised "
            f"{(r.gates[0] / r.gates[0].sum()).round(6).tolist()}")


def _mixtral():
    c = A.parameter_count(A.MIXTRAL_8X7B)
    return c.total / 1e9, c.active / 1e9


def _mixtral_exact():
    cfg = A.MIXTRAL_8X7B
    c = A.parameter_count(cfg)
    macs = A.compute_per_token(cfg)
    return (f"per layer: attention {c.attention_per_layer:,} (q, o 4096x4096; k, v 4096x1024), "
            f"one SwiGLU expert 3x4096x14336 = {c.expert:,}, router {c.router_per_layer:,}, norms "
            f"{c.norms_per_layer:,}; 32 layers; embeddings + untied head + final norm {c.embeddings:,}. "
            f"Total {c.total:,}, active (2 of 8 experts) {c.active:,}; forward {macs.total:,} MACs per token "
            f"({2 * macs.total:,} FLOPs) without attention scores")


EXAMPLES = [
    WorkedExample(
        name="moe_example2_params", source="docs/notes.md#moe-parameters", seed_figure="4.83B params (dense), 27.4B params (MoE)",
        compute=_params, expected=(4.83, 27.4), rel_tol=1.0e-3,
        note="L = 24, d = 4096: dense 12 d^2 per layer; MoE 4 d^2 + E d + E 8 d^2 per layer (billions).",
        beside=_example2_exact),
    WorkedExample(
        name="moe_example2_macs", source="docs/notes.md#moe-parameters", seed_figure="201M and 336M FLOPs per layer",
        compute=_macs, expected=(201.0, 336.0), rel_tol=2.4e-3,
        note="The notes' 'FLOPs' are multiply-adds, one per weight used (MAC convention, docs/errata.md#e3); "
             "the 2-FLOP figures are twice these (see exact line). Millions per layer per token."),
    WorkedExample(
        name="moe_example2_ratios", source="docs/notes.md#moe-parameters", seed_figure="5.7x params, 1.67x FLOPs",
        compute=_ratios, expected=(5.7, 1.67), rel_tol=8.7e-3,
        note="Total parameters and per-token compute of the MoE relative to the dense model."),
    WorkedExample(
        name="moe_problem3_capacity", source="docs/notes.md#capacity",
        seed_figure="expected 128 tokens, capacity 160, 40 dropped (20%)",
        compute=_problem3, expected=(128, 160, 40), rel_tol=0,
        note="capacity(1024, 16, k=2, factor=1.25) with k in the formula; a batch routed so that expert 3 "
             "receives 200 assignments loses 200 - 160 = 40 under k_major dropping.",
        beside=_problem3_exact),
    WorkedExample(
        name="moe_problem4_memory", source="docs/notes.md#moe-memory", seed_figure="18 GB dense vs 116 GB MoE",
        compute=_problem4, expected=(18.0, 116.0), rel_tol=0,
        note="fp16 weights (2 bytes) of all parameters plus a 4 GB KV cache, decimal GB: "
             "7e9 x 2 + 4e9 and 56e9 x 2 + 4e9 bytes."),
    WorkedExample(
        name="moe_example3_balance_loss", source="docs/notes.md#balance-loss", seed_figure="L_balance = 0.01147",
        compute=_example3, expected=0.01147, rel_tol=4.4e-4,
        note="alpha E sum f P with f = counts / 256 (top-1 fractions), alpha = 0.01, E = 4.",
        beside=_example3_exact),
    WorkedExample(
        name="moe_renormalisation", source="docs/notes.md#moe-router", seed_figure="0.31/(0.31+0.28) ~ 0.53, ~ 0.47",
        compute=_renorm, expected=(0.53, 0.47), rel_tol=1.1e-2,
        note="route(log p, k=2, normalize='after_drop') on the notes' probabilities.", beside=_renorm_exact),
    WorkedExample(
        name="moe_mixtral_47b_13b", source="docs/notes.md#moe-parameters", seed_figure="47B total parameters, 13B active",
        compute=_mixtral, expected=(47.0, 13.0), rel_tol=1.1e-2,
        note="Counted from the published Mixtral-8x7B config.json (hidden 4096, intermediate 14336, 32 layers, "
             "32 heads, 8 KV heads, vocab 32000, 8 experts, top-2, untied embeddings); billions.",
        beside=_mixtral_exact),
]
