"""refimpl.mla: scale conventions, cache types, parameter count, validation."""

import math

import numpy as np
import pytest

import refimpl
from refimpl import mla as MLA


def test_softmax_scale_is_the_naive_head_dim_with_yarn_mscale():
    assert MLA.mla_softmax_scale(128, 64) == 192 ** -0.5
    m = 0.1 * 1.0 * math.log(40) + 1.0  # DeepSeek-V3: mscale = 0.1 * mscale * ln(rope_factor) + 1
    assert math.isclose(MLA.mla_softmax_scale(128, 64, rope_factor=40.0), 192 ** -0.5 * m * m, rel_tol=1e-15)


def test_absorbed_with_the_latent_width_scale_is_wrong():
    """Using 1/sqrt(d_c + d_rope) in the absorbed form (the width of its q . c_KV) changes the result."""
    rng = np.random.default_rng(0)
    W = MLA.init_mla_weights(rng, 8, 2, 6, 3, 2, 3)
    x = rng.standard_normal((1, 5, 8))
    naive = refimpl.mla_attention(x, W)
    np.testing.assert_allclose(refimpl.mla_attention(x, W, absorbed=True), naive, rtol=0, atol=1e-13)
    assert np.max(np.abs(refimpl.mla_attention(x, W, absorbed=True, scale=(6 + 2) ** -0.5) - naive)) > 1e-3


def test_cache_type_and_shape_validation():
    rng = np.random.default_rng(1)
    W = MLA.init_mla_weights(rng, 8, 2, 6, 3, 2, 3)
    x = rng.standard_normal((1, 2, 8))
    with pytest.raises(TypeError, match="MLALatentCache"):
        refimpl.mla_attention(x, W, absorbed=True, cache=refimpl.ContiguousCache(2, 5, 3))
    with pytest.raises(ValueError, match="d_model"):
        refimpl.mla_attention(rng.standard_normal((1, 2, 7)), W)
    with pytest.raises(ValueError, match="W_ukv"):  # checked on construction
        MLA.MLAWeights(W.W_q, W.W_dkv, W.W_ukv[:, :-1], W.W_o, 2, 3, 2, 3)


def test_latent_cache_counts_d_c_plus_d_rope_per_token():
    rng = np.random.default_rng(2)
    W = MLA.init_mla_weights(rng, 8, 4, 6, 3, 2, 3)
    cache = MLA.MLALatentCache(6, 2, batch=2)
    refimpl.mla_attention(rng.standard_normal((2, 3, 8)), W, absorbed=True, cache=cache)
    assert cache.stored_values == 2 * 3 * (6 + 2)
    assert MLA.mla_cache_values_per_token((4, 3, 2, 3, 6), form="latent") == 8
    assert MLA.mla_cache_values_per_token((4, 3, 2, 3, 6), form="naive") == 4 * (3 + 2 + 3)


def test_mla_params_small_case_by_hand():
    # d=4, H=2, no q compression: W_q 4*2*(3+2)=40; W_DKV 4*(5+2)=28; kv_norm 5; W_UKV 5*2*(3+1)=40; W_o 2*1*4=8
    assert MLA.mla_params(4, 2, q_lora_rank=0, kv_lora_rank=5, d_nope=3, d_rope=2, d_v=1) == 40 + 28 + 5 + 40 + 8
