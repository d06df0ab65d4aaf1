"""Fuzz recipes of the "seeds" family (issue 24): refimpl.model_configs and the modules added
with it (see contract_recipes.py for the recipe format)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from refimpl import model_configs as MC

from .contract_recipes import recipe

CONFIG = st.sampled_from(sorted(MC.PUBLISHED.values(), key=lambda c: (c.d_model, c.n_layers)))


@recipe("refimpl.model_configs.attention_variant", kinds=dict(n_heads="count", n_kv_heads="count"))
def _(draw):
    g = draw(st.integers(1, 8))
    return dict(n_heads=g * draw(st.integers(1, 8)), n_kv_heads=g)


recipe("refimpl.model_configs.ffn_expansion", kinds=dict(cfg="object"))(lambda draw: dict(cfg=draw(CONFIG)))
recipe("refimpl.model_configs.ffn_parameter_fraction", kinds=dict(cfg="object"))(lambda draw: dict(cfg=draw(CONFIG)))


# --- int_formats ------------------------------------------------------------------

from refimpl import int_formats as IF  # noqa: E402

from .contract_recipes import arr  # noqa: E402

QUANT_KINDS = dict(x="array", bits="count", symmetric="bool", granularity="name", group_size="count")


def _quant_args(draw):
    g = draw(st.integers(1, 3))
    return dict(x=arr(draw, (draw(st.integers(1, 3)), g * draw(st.integers(1, 3)))), bits=draw(st.sampled_from([4, 8])),
                symmetric=draw(st.booleans()), granularity=draw(st.sampled_from(IF.GRANULARITY)), group_size=g)


recipe("refimpl.int_formats.int_range", kinds=dict(bits="count", symmetric="bool"))(
    lambda draw: dict(bits=draw(st.integers(2, 16)), symmetric=draw(st.booleans())))
recipe("refimpl.int_formats.quant_params", "refimpl.int_formats.quantize", kinds=QUANT_KINDS)(_quant_args)


@recipe("refimpl.int_formats.dequantize", kinds=dict(q="int_array", scale="array", zero_point="int_array"))
def _(draw):
    q, s, z = IF.quantize(**_quant_args(draw))
    return dict(q=q, scale=s, zero_point=z)


recipe("refimpl.int_formats.quantization_error_bound", kinds=dict(scale="array"))(
    lambda draw: dict(scale=arr(draw, (draw(st.integers(1, 3)), 1), 0.01, 2)))
recipe("refimpl.int_formats.int32_safe_depth", kinds=dict(bits_a="count", bits_b="count"))(
    lambda draw: dict(bits_a=draw(st.integers(2, 16)), bits_b=draw(st.integers(2, 16))))


@recipe("refimpl.int_formats.int_matmul", kinds=dict(a_q="int_array", b_q="int_array"))
def _(draw):
    M, K, N = (draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    return dict(a_q=rng.integers(-128, 128, (M, K)), b_q=rng.integers(-128, 128, (K, N)))


@recipe("refimpl.int_formats.quantized_matmul", "refimpl.int_formats.quantized_matmul_bound",
        kinds=dict(a="array", b="array", bits="count"))
def _(draw):
    M, K, N = (draw(st.integers(1, 3)) for _ in range(3))
    return dict(a=arr(draw, (M, K)), b=arr(draw, (K, N)), bits=draw(st.sampled_from([4, 8])))


# --- roofline ----------------------------------------------------------------------

from refimpl import roofline as RL  # noqa: E402

HW = st.sampled_from([RL.H100_SEED, RL.Hardware("small", 1e9, 1e8)])
COST = st.builds(RL.Cost, st.integers(1, 10**15), st.floats(1.0, 1e12))
recipe("refimpl.roofline.Hardware", kinds=dict(name="str", peak_flops="float", bandwidth="float"))(
    lambda draw: dict(name="chip", peak_flops=draw(st.floats(1e9, 1e16)), bandwidth=draw(st.floats(1e8, 1e13))))
recipe("refimpl.roofline.Cost", kinds=dict(flops="count", bytes="float"))(
    lambda draw: dict(flops=draw(st.integers(0, 10**15)), bytes=draw(st.floats(1.0, 1e12))))
recipe("refimpl.roofline.time_bound", "refimpl.roofline.bound", kinds=dict(cost="object", hw="object"))(
    lambda draw: dict(cost=draw(COST), hw=draw(HW)))
recipe("refimpl.roofline.gemm_cost", kinds=dict(M="count", N="count", K="count", bytes_per_value="float"))(
    lambda draw: dict(M=draw(st.integers(1, 64)), N=draw(st.integers(1, 64)), K=draw(st.integers(1, 64)),
                      bytes_per_value=draw(st.sampled_from([0.5, 1, 2, 4]))))


@recipe("refimpl.roofline.attention_cost", kinds=dict(Lq="count", Lk="count", D="count", Dv="count", batch="count",
                                                      heads_q="count", heads_kv="count", schedule="name",
                                                      block_q="count", block_k="count", bytes_per_value="float"))
def _(draw):
    hk = draw(st.integers(1, 2))
    return dict(Lq=draw(st.integers(1, 40)), Lk=draw(st.integers(1, 40)), D=draw(st.integers(1, 8)),
                Dv=draw(st.integers(1, 8)), batch=draw(st.integers(1, 2)), heads_q=hk * draw(st.integers(1, 2)),
                heads_kv=hk, schedule=draw(st.sampled_from(RL.SCHEDULES)), block_q=draw(st.integers(1, 16)),
                block_k=draw(st.integers(1, 16)), bytes_per_value=draw(st.sampled_from([1, 2])))


recipe("refimpl.roofline.decode_step_cost", kinds=dict(cfg="object", context="count", batch="count",
                                                       bytes_per_param="float", bytes_per_value="float"))(
    lambda draw: dict(cfg=draw(CONFIG), context=draw(st.integers(0, 10**6)), batch=draw(st.integers(1, 64)),
                      bytes_per_param=draw(st.sampled_from([0.5, 1, 2])), bytes_per_value=draw(st.sampled_from([1, 2]))))
recipe("refimpl.roofline.kv_cache_read_time", kinds=dict(cfg="object", context="count", batch="count",
                                                         bytes_per_value="float", hw="object"))(
    lambda draw: dict(cfg=draw(CONFIG), context=draw(st.integers(0, 10**6)), batch=draw(st.integers(1, 64)),
                      bytes_per_value=draw(st.sampled_from([1, 2])), hw=draw(HW)))


# --- positional --------------------------------------------------------------------

from refimpl import positional as PE  # noqa: E402

recipe("refimpl.positional.sinusoidal_frequencies", kinds=dict(d_model="count", base="float", frequencies="name"))(
    lambda draw: dict(d_model=2 * draw(st.integers(2, 8)), base=draw(st.floats(2.0, 1e6)),
                      frequencies=draw(st.sampled_from(PE.FREQUENCIES))))


@recipe("refimpl.positional.sinusoidal_encoding", kinds=dict(positions="int_array", d_model="count", base="float",
                                                             layout="name", frequencies="name"))
def _(draw):
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    return dict(positions=rng.integers(0, 10**6, draw(st.integers(0, 5))), d_model=2 * draw(st.integers(2, 8)),
                base=draw(st.floats(2.0, 1e6)), layout=draw(st.sampled_from(PE.LAYOUTS)),
                frequencies=draw(st.sampled_from(PE.FREQUENCIES)))
