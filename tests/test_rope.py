"""refimpl.rope: validation, the layout permutation, and HF transformers' RoPE code run side by side.

The HF comparisons skip (with the reason) when transformers is not installed.
"""

import math

import numpy as np
import pytest

import refimpl
from refimpl import rope as R

SCALINGS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096},
    {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
     "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1},
    {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 2048, "truncate": False},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
]


def _hf():
    transformers = pytest.importorskip("transformers", reason="transformers not installed: HF side-by-side skipped")
    torch = pytest.importorskip("torch", reason="torch not installed: HF side-by-side skipped")
    return transformers, torch


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: s["rope_type"] + str(s["factor"]))
def test_frequencies_match_hf_modeling_rope_utils(scaling):
    """inv_freq and attention_factor of HF's ROPE_INIT_FUNCTIONS (float32) vs the float64 spec."""
    transformers, torch = _hf()
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    D, base, P, seq_len = 64, 500000.0, 32768, 70000
    cfg = transformers.LlamaConfig(hidden_size=4 * D, num_attention_heads=4, max_position_embeddings=P,
                                   rope_parameters={**scaling, "rope_theta": base})
    kw = {"seq_len": seq_len} if scaling["rope_type"] == "dynamic" else {}
    inv, attn = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu", **kw)
    mine = dict(scaling)
    if scaling["rope_type"] == "dynamic":
        mine.update(max_position_embeddings=P, seq_len=seq_len)
    theta, a = R.rope_frequencies(D, base, mine)
    # HF rounds to float32 (u32 = 2^-24) a few times (pow, divide): 8 u32 relative; YaRN's float32 ramp r
    # (absolute error ~u32) mixes theta/f and theta, so the mix can be off by about f u32 relative.
    f = scaling["factor"] if scaling["rope_type"] == "yarn" else 1.0
    np.testing.assert_allclose(inv.double().numpy(), theta, rtol=8 * f * 2.0**-24, atol=0)
    assert math.isclose(attn, a, rel_tol=1e-12)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_apply_matches_hf_llama_and_gptj(layout):
    """HF Llama apply_rotary_pos_emb (rotate_half) and GPT-J's (rotate_every_two), in float64, partial rotary."""
    transformers, torch = _hf()
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply

    rng = np.random.default_rng(0)
    D, d = 12, 8
    x = rng.standard_normal((2, 3, 5, D))
    pos = np.array([0, 3, 7, 100, 4097])
    theta = torch.tensor(R.base_frequencies(d, 10000.0))
    freqs = torch.tensor(pos, dtype=torch.float64)[:, None] * theta
    xt = torch.tensor(x[..., :d])
    if layout == "half":
        emb = torch.cat([freqs, freqs], -1)
        rot, _ = llama_apply(xt, xt, emb.cos()[None], emb.sin()[None])
    else:
        rot = gptj_apply(xt.transpose(1, 2), freqs.sin()[None], freqs.cos()[None]).transpose(1, 2)
    ours = refimpl.apply_rope(x, pos, layout=layout, rotary_dim=d)
    np.testing.assert_allclose(ours[..., :d], rot.numpy(), rtol=0, atol=1e-12)
    assert np.array_equal(ours[..., d:], x[..., d:])


def test_hf_float32_angles_drift_at_large_positions():
    """HF's LlamaRotaryEmbedding forms angles in float32: at m = 2^20 its cos is off by far more than the
    float64 bound the property rope_exact_integer_positions enforces (so it would fail that property)."""
    transformers, torch = _hf()
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    D = 16
    emb = LlamaRotaryEmbedding(transformers.LlamaConfig(hidden_size=4 * D, num_attention_heads=4))
    m = 2**20
    cos, _ = emb(torch.zeros(1, 1, D, dtype=torch.float64), torch.tensor([[m]]))
    ours = np.cos(R.rope_angles(np.array([m]), R.base_frequencies(D, 10000.0)))[0]
    bound = m * (math.log(10000.0) + 5) * 2.0**-53 + 2 * 2.0**-53
    assert np.max(np.abs(cos.double().numpy()[0, 0, : D // 2] - ours)) > 1000 * bound


def test_layout_permutation_and_converter():
    perm = R.layout_permutation(6, 4)
    assert perm.tolist() == [0, 2, 1, 3, 4, 5]
    x = np.arange(12.0).reshape(1, 1, 2, 6)
    y = R.convert_layout(x, "half", "interleaved", rotary_dim=4)
    assert np.array_equal(R.convert_layout(y, "interleaved", "half", rotary_dim=4), x)
    pos = np.array([3, 11])
    assert np.array_equal(refimpl.apply_rope(x, pos, rotary_dim=4)[..., perm],
                          refimpl.apply_rope(x[..., perm], pos, layout="interleaved", rotary_dim=4))


def test_validation():
    x = np.zeros((1, 1, 2, 4))
    with pytest.raises(TypeError, match="positions"):
        refimpl.apply_rope(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="positions"):
        refimpl.apply_rope(x, np.array([0, -1]))
    with pytest.raises(ValueError, match="positions"):
        refimpl.apply_rope(x, np.array([0, 2**53]))
    with pytest.raises(ValueError, match="layout"):
        refimpl.apply_rope(x, np.array([0, 1]), layout="neox")
    with pytest.raises(ValueError, match="rotary_dim"):
        refimpl.apply_rope(x, np.array([0, 1]), rotary_dim=3)
    with pytest.raises(ValueError, match="scaling"):
        refimpl.apply_rope(x, np.array([0, 1]), scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="dynamic"):
        R.rope_frequencies(2, 10000.0, {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 8, "seq_len": 9})
    before = x.copy()
    refimpl.apply_rope(x, np.array([0, 1]))
    assert np.array_equal(x, before)


def test_scalings_reduce_to_identity():
    """factor 1: linear and llama3 leave theta unchanged; yarn's attention factor is 1."""
    theta = R.base_frequencies(8, 10000.0)
    assert np.array_equal(R.rope_frequencies(8, 10000.0, {"rope_type": "linear", "factor": 1.0})[0], theta)
    t, a = R.rope_frequencies(8, 10000.0, {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 64})
    np.testing.assert_allclose(t, theta, rtol=1e-15)
    assert a == 1.0
