"""docs/errata.md#e20 to #e29: the spec encodes the right rule, and each test shows the notes'
literal rule (the wrong implementation it guards against) giving a different answer."""

import numpy as np
import pytest

import refimpl
from refimpl import losses as L
from refimpl import masks as M
from refimpl import model_configs as MC
from refimpl import moe
from refimpl.cache import kv_cache_values
from refimpl.ffn import llama_hidden_dim


# --- docs/errata.md#e20, docs/errata.md#e22: name the configuration; the cache counts K/V heads ---------------------

def test_published_attention_variants():
    assert MC.attention_variant(MC.LLAMA_1_7B.n_heads, MC.LLAMA_1_7B.kv_heads) == "MHA"  # not MQA (docs/errata.md#e22)
    assert MC.attention_variant(MC.LLAMA_2_70B.n_heads, MC.LLAMA_2_70B.kv_heads) == "GQA"
    assert MC.LLAMA_2_70B.n_heads // MC.LLAMA_2_70B.kv_heads == 8
    assert MC.QWEN2_5_7B.n_heads // MC.QWEN2_5_7B.kv_heads == 7
    assert not any(MC.attention_variant(c.n_heads, c.kv_heads) == "MQA" for c in MC.PUBLISHED.values())
    assert [MC.attention_variant(8, g) for g in (8, 4, 2, 1)] == ["MHA", "GQA", "GQA", "MQA"]
    with pytest.raises(ValueError, match="n_kv_heads"):
        MC.attention_variant(8, 3)


def test_llama2_70b_cache_counts_kv_heads():
    cfg = MC.LLAMA_2_70B
    assert kv_cache_values(4096, cfg.kv_heads, cfg.hd) == 2 * 8 * 4096 * 128 == 8_388_608
    # the notes' count uses the 64 query heads: the cache of an MHA model of the same shape
    assert kv_cache_values(4096, cfg.n_heads, cfg.hd) == 67_108_864 == 8 * 8_388_608


# --- docs/errata.md#e21: V's rows are v_1 ... v_n ------------------------------------------------------

def test_attention_output_rows_weight_the_value_rows():
    rng = np.random.default_rng(21)
    n, d = 5, 3
    q, k, v = (rng.standard_normal((1, 1, n, d)) for _ in range(3))
    P = refimpl.attention_probs(q, k)
    out, _ = refimpl.attention(q, k, v)
    np.testing.assert_allclose(out[0, 0], P[0, 0] @ v[0, 0], rtol=1e-13, atol=1e-15)
    v_seed = v.copy()
    v_seed[..., -1, :] = q[..., -1, :]  # the notes' matrix: q_n^T as the last row
    assert np.abs(P[0, 0] @ v_seed[0, 0] - out[0, 0]).min(axis=1).max() > 1e-3


# --- docs/errata.md#e23: class-index targets (BL,); one-hot (BL, V) is another convention ---------------

def test_cross_entropy_targets_are_class_indices():
    torch = pytest.importorskip("torch")  # the peers extra (CI installs it)
    rng = np.random.default_rng(23)
    B, Lq, V = 2, 3, 5
    z = rng.standard_normal((B * Lq, V))
    t = rng.integers(0, V, B * Lq)
    got = L.cross_entropy(z, t)
    assert got == pytest.approx(float(torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(t))), rel=1e-13)
    one_hot = np.eye(V)[t]  # (BL, V): torch's probability-target convention gives the same loss
    assert got == pytest.approx(float(torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(one_hot))),
                                rel=1e-13)
    with pytest.raises((ValueError, TypeError), match="targets"):
        L.cross_entropy(z, one_hot)  # refimpl takes indices only: (BL, V) is rejected by name


# --- docs/errata.md#e24: the online softmax divides by the final l -------------------------------------

def _seed_online_literal(q, k, v, block):
    """The online softmax as the notes print it (docs/notes.md#online-softmax): the output is
    rescaled but never divided by l."""
    s = (q @ k.T) / np.sqrt(q.shape[-1])
    m, out = np.full(s.shape[0], -np.inf), np.zeros((s.shape[0], v.shape[1]))
    l = np.zeros(s.shape[0])
    for j in range(0, s.shape[1], block):
        sb = s[:, j:j + block]
        m_new = np.maximum(m, sb.max(axis=1))
        l = l * np.exp(m - m_new) + np.exp(sb - m_new[:, None]).sum(axis=1)
        out = out * np.exp(m - m_new)[:, None] + np.exp(sb - m_new[:, None]) @ v[j:j + block]
        m = m_new
    return out, l


@pytest.mark.parametrize("variant", ["fa1", "fa2"])
def test_online_softmax_output_is_divided_by_l(variant):
    rng = np.random.default_rng(24)
    q, k, v = rng.standard_normal((4, 8)), rng.standard_normal((10, 8)), rng.standard_normal((10, 3))
    ref, _ = refimpl.attention(q[None, None], k[None, None], v[None, None])
    got, _ = refimpl.flash_attention(q[None, None], k[None, None], v[None, None], block_q=2, block_k=3, variant=variant)
    np.testing.assert_allclose(got[0, 0], ref[0, 0], rtol=1e-12, atol=1e-14)
    literal, l = _seed_online_literal(q, k, v, 3)
    np.testing.assert_allclose(literal / l[:, None], ref[0, 0], rtol=1e-12, atol=1e-14)  # acc / l is the answer
    assert np.abs(literal - ref[0, 0]).max() > 1e-2  # without it, every row is off by its factor l > 1


# --- docs/errata.md#e25: the prefix-LM boundary row ----------------------------------------------------

def test_prefix_lm_boundary_row():
    """0-based positions, prefix p_0..p_{m-1}: key j visible to query i iff j < m or j <= i."""
    m, n = 3, 7
    vis = M.PrefixLM(m)(np.arange(n)[:, None], np.arange(n)[None, :], n, n)
    counts = vis.sum(axis=1)
    assert counts.tolist() == [m] * m + [i + 1 for i in range(m, n)]
    # the notes' cases read with 0-based indices ("j <= m" for the prefix rows) show g_0 = position m,
    # a generated token, to every prefix row: one key more, from the future
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    seed = ((i <= m) & (j <= m)) | ((i >= m) & (j <= m)) | ((i > m) & (j > m) & (j <= i))
    assert (seed.sum(axis=1)[:m] == m + 1).all() and seed[0, m] and not vis[0, m]


# --- docs/errata.md#e27: only the CV form is 0 under uniform routing ------------------------------------

@pytest.mark.parametrize("E, k", [(4, 1), (8, 2), (64, 2)])
def test_uniform_routing_values(E, k):
    alpha = 0.01
    assert moe.cv_squared(np.full(E, 1 / E)) == 0.0
    P = np.full(E, 1 / E)
    assert moe.product_balance_loss(np.full(E, 1 / E), P, alpha=alpha) == pytest.approx(alpha, rel=1e-14)  # top-1 f
    assert moe.product_balance_loss(np.full(E, k / E), P, alpha=alpha) == pytest.approx(alpha * k, rel=1e-14)  # k-hot
    assert moe.product_balance_loss(np.full(E, k / E), P, alpha=alpha, scale="E/k", k=k) == pytest.approx(alpha, rel=1e-14)


# --- docs/errata.md#e28: which ratio --------------------------------------------------------------------

def test_ffn_expansion_ratios():
    assert llama_hidden_dim(4096) == MC.LLAMA_2_7B.d_ff == 11008
    assert MC.ffn_expansion(MC.LLAMA_2_7B) == (11008 / 4096, 1.5 * 11008 / 4096)
    assert MC.ffn_expansion(MC.TRANSFORMER_BASE) == (4.0, 4.0)
    assert all(MC.ffn_expansion(c)[0] > 2.5 for c in MC.PUBLISHED.values())  # no config has the notes' 2x or 2.4x
    share = {n: MC.ffn_parameter_fraction(c) for n, c in MC.PUBLISHED.items()}
    assert share["transformer-base"] == pytest.approx(2 / 3, rel=1e-15)
    assert 0.64 < share["llama-2-7b"] < share["llama-2-70b"] < 0.82


def test_ffn_share_counts_every_parameter():
    cfg = MC.LLAMA_2_7B
    ffn = cfg.n_layers * 3 * cfg.d_model * cfg.d_ff
    attn = cfg.n_layers * 4 * cfg.d_model**2
    total = ffn + attn + cfg.n_layers * 2 * cfg.d_model + 2 * 32000 * cfg.d_model + cfg.d_model
    assert total == 6_738_415_616  # the published "6.7B"
    assert MC.ffn_parameter_fraction(cfg) == ffn / total
