"""refimpl.accounting: parameter counts, compute conventions, memory (docs/notes.md#moe-parameters,
docs/notes.md#moe-memory, the Mixtral-8x7B configuration)."""

import pytest

from refimpl import accounting as A

D = 4096


def test_seed_000_example_2_exact_counts():
    dense = A.TransformerConfig(d_model=D, n_layers=24, n_heads=32, d_ff=4 * D)
    moe = A.TransformerConfig(d_model=D, n_layers=24, n_heads=32, d_ff=4 * D, num_experts=8, top_k=2)
    pd, pm = A.parameter_count(dense), A.parameter_count(moe)
    assert pd.attention_per_layer == 4 * D * D == 67_108_864
    assert pd.expert == 8 * D * D == 134_217_728
    assert pd.per_layer == 12 * D * D == 201_326_592
    assert pm.router_per_layer == 8 * D == 32_768
    assert pm.per_layer == 4 * D * D + 8 * D + 64 * D * D == 1_140_883_456
    assert pd.total == 24 * 12 * D * D and pm.total == 27_381_202_944
    assert pm.active == 24 * (20 * D * D + 8 * D)
    cm = A.compute_per_token(moe)
    assert cm.per_layer == 20 * D * D + 8 * D
    assert A.compute_per_token(moe, convention="2flop").per_layer == 2 * cm.per_layer


def test_mixtral_8x7b_counts_from_the_published_config():
    c = A.parameter_count(A.MIXTRAL_8X7B)
    assert c.attention_per_layer == 2 * 4096 * 4096 + 2 * 4096 * 1024
    assert c.expert == 3 * 4096 * 14336
    assert c.embeddings == 2 * 32000 * 4096 + 4096
    assert c.total == 46_702_792_704
    assert c.active == 12_879_925_248


def test_compute_with_attention_scores_and_head():
    cfg = A.TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256, vocab_size=100)
    base = A.compute_per_token(cfg)
    with_ctx = A.compute_per_token(cfg, context_length=10)
    assert with_ctx.attention_per_layer - base.attention_per_layer == 2 * 4 * 16 * 10
    assert base.head == 100 * 64
    assert base.total == 2 * base.per_layer + base.head
    assert A.training_flops(1000, 10) == 60_000


def test_memory():
    cfg = A.TransformerConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672, ffn_kind="glu")
    # 2 (K, V) x 80 layers x 8 heads x 128 dims x 4096 tokens x 2 bytes
    assert A.kv_cache_bytes(cfg, tokens=4096) == 2 * 80 * 8 * 128 * 4096 * 2
    assert A.inference_memory_bytes(7e9, 4e9) == 18e9
    assert A.inference_memory_bytes(56e9, 4e9) == 116e9
    assert A.weight_bytes(10, 4) == 40.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=0, n_layers=1, n_heads=1, d_ff=1), "d_model"),
        (dict(d_model=8, n_layers=1, n_heads=3, d_ff=4), "head_dim"),
        (dict(d_model=8, n_layers=1, n_heads=4, n_kv_heads=3, d_ff=4), "n_kv_heads"),
        (dict(d_model=8, n_layers=1, n_heads=4, d_ff=4, ffn_kind="moe"), "ffn_kind"),
        (dict(d_model=8, n_layers=1, n_heads=4, d_ff=4, num_experts=2, top_k=3), "top_k"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.TransformerConfig(**kwargs)
    with pytest.raises(ValueError, match="convention"):
        A.compute_per_token(A.TransformerConfig(d_model=8, n_layers=1, n_heads=4, d_ff=4), convention="flops")
