"""Gated and hybrid blocks (docs/hybrid.md), computed by refimpl: the Mamba block's parameters at mamba-130m's
configuration (docs/notes.md#ssm), full layers interleaved with windowed ones (docs/notes.md#receptive-field), the
parallel block's 1/sqrt(2) as learnable per-branch scales and a pre-norm RoPE block on packed documents
(docs/notes.md#transformer-block).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from refimpl import block as BL
from refimpl import mamba_block as MB
from refimpl import masks as M
from refimpl.receptive_field import receptive_interval

from . import WorkedExample


def _mamba_130m():
    """Mixer parameters per layer and the whole model: state-spaces/mamba-130m's config (d_model 768, 24 layers,
    d_state 16, expand 2, d_conv 4, vocab 50277 padded to 50280, RMSNorm per layer and at the end, tied head)."""
    per_layer = MB.mamba_params(768)
    return per_layer, 24 * (per_layer + 768) + 50280 * 768 + 768


def _interleaved():
    """First visible position of token 127 after 4 layers of an 8-key causal window, and with layer 3 full."""
    w = M.SlidingWindow(8, 0)
    only_windows = receptive_interval([w] * 4, 127, n=128)[0]
    with_full = receptive_interval([w, w, M.Causal(), w], 127, n=128)[0]
    return only_windows, with_full


def _branch_scales():
    """Var(y - x) of a parallel block with s = 1 over Var(y - x) with learnable scales a_attn = a_ffn = 1/sqrt(2)."""
    blk = BL.init_block(0, d_model=16, num_heads=2, d_ff=32)
    x = np.random.default_rng(0).standard_normal((2, 8, 16))
    r2 = np.array(2 ** -0.5)
    plain = BL.block(x, blk, arrangement="parallel", causal=True) - x
    scaled = BL.block(x, dataclasses.replace(blk, attn_scale=r2, ffn_scale=r2), arrangement="parallel", causal=True) - x
    return float(plain.var() / scaled.var())


def _packed_rope():
    """Two copies of a 6-token document packed into 12 positions, a pre-norm RoPE block with a Document & Causal mask:
    the second copy's outputs equal the first's (RoPE sees only relative positions)."""
    blk = BL.init_block(1, d_model=8, num_heads=2, d_ff=16, ffn_kind="glu", activation="silu", num_kv_heads=1)
    blk = dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope={"layout": "half"}))
    doc = np.random.default_rng(1).standard_normal((1, 6, 8))
    x = np.concatenate([doc, doc], axis=1)
    out = BL.stack(x, [blk, blk], causal=True, masks=[M.Document(np.repeat([0, 1], 6))] * 2)
    return bool(np.allclose(out[:, 6:], out[:, :6], rtol=0, atol=1e-12))


def _packed_beside():
    blk = BL.init_block(1, d_model=8, num_heads=2, d_ff=16, ffn_kind="glu", activation="silu", num_kv_heads=1)
    blk = dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope={"layout": "half"}))
    doc = np.random.default_rng(1).standard_normal((1, 6, 8))
    x = np.concatenate([doc, doc], axis=1)
    out = BL.stack(x, [blk, blk], causal=True)
    return f"without the per-layer document masks the second copy differs by up to {np.abs(out[:, 6:] - out[:, :6]).max():.3g}"


EXAMPLES = [
    WorkedExample(
        "mamba_130m_parameters", "docs/notes.md#ssm", "Mamba block: in-projection, causal conv1d, selective scan, gate, "
        "out-projection (mamba-130m)", _mamba_130m, (3_770_880, 129_135_360), 0.0,
        "refimpl.mamba_block.mamba_params at d_model 768 (d_inner 1536, dt_rank 48, d_state 16, d_conv 4) and the "
        "whole model from its config; transformers 5.25.0 MambaForCausalLM gives the same count "
        "(tests/test_seeds_libraries.py). The name's '130m' is the rounded total",
    ),
    WorkedExample(
        "interleaved_full_layers_receptive_field", "docs/notes.md#receptive-field",
        "windowed layers lose global reach; interleaving some full-attention layers recovers it",
        _interleaved, (95, 0), 0.0,
        "refimpl.receptive_field with one mask per layer, n = 128: four 8-key windows reach back 4 x 8 = 32 "
        "positions (127 - 32 = 95); one full causal layer among them reaches position 0",
    ),
    WorkedExample(
        "parallel_block_learnable_scales", "docs/notes.md#transformer-block", "x' = x + (attn_out + ffn_out)/sqrt(2); or learnable "
        "alpha_attn, alpha_ffn", _branch_scales, 2.0, 1e-12,
        "variance of the summed branches of a parallel block with s = 1, over the same with per-branch scales "
        "alpha_attn = alpha_ffn = 1/sqrt(2) (Block.attn_scale, ffn_scale): exactly 2 for any branch outputs",
    ),
    WorkedExample(
        "pre_norm_rope_block_packed_documents", "docs/notes.md#transformer-block", "LLaMA lineage: decoder-only, RoPE, GQA, SwiGLU, "
        "pre-norm", _packed_rope, True, 0.0,
        "a pre-norm RMSNorm block with RoPE (half layout), GQA 2:1 and SwiGLU, two layers with a per-layer "
        "Document & Causal mask: a document packed at offset 6 gives the outputs it gives at offset 0",
        beside=_packed_beside,
    ),
]
