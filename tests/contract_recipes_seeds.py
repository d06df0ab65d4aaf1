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


# --- vision ------------------------------------------------------------------------

from refimpl import vision as VI  # noqa: E402


def _img(draw, P=None):
    P = P or draw(st.integers(1, 3))
    return arr(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), P * draw(st.integers(1, 3)),
                      P * draw(st.integers(1, 3)))), P


recipe("refimpl.vision.num_patches", kinds=dict(height="count", width="count", patch_size="count"))(
    lambda draw: (lambda P: dict(height=P * draw(st.integers(1, 20)), width=P * draw(st.integers(1, 20)),
                                 patch_size=P))(draw(st.integers(1, 16))))


@recipe("refimpl.vision.patchify", kinds=dict(images="array", patch_size="count", order="name"))
def _(draw):
    x, P = _img(draw)
    return dict(images=x, patch_size=P, order=draw(st.sampled_from(VI.ORDERS)))


@recipe("refimpl.vision.patch_embed", "refimpl.vision.conv2d_stride", kinds=dict(images="array", weight="array",
                                                                                 bias="array"))
def _(draw):
    x, P = _img(draw)
    d = draw(st.integers(1, 4))
    return dict(images=x, weight=arr(draw, (d, x.shape[1], P, P)), bias=arr(draw, (d,)))


@recipe("refimpl.vision.vit_embeddings", kinds=dict(images="array", weight="array", bias="array", cls_token="array",
                                                    pos_embed="array"))
def _(draw):
    x, P = _img(draw)
    d, N = draw(st.integers(1, 4)), (x.shape[2] // P) * (x.shape[3] // P)
    return dict(images=x, weight=arr(draw, (d, x.shape[1], P, P)), bias=arr(draw, (d,)), cls_token=arr(draw, (d,)),
                pos_embed=arr(draw, (N + 1, d)))


recipe("refimpl.vision.bicubic_resize", kinds=dict(grid="array", size="object"))(
    lambda draw: dict(grid=arr(draw, (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 3)))),
                      size=(draw(st.integers(1, 6)), draw(st.integers(1, 6)))))


@recipe("refimpl.vision.interpolate_pos_embed", kinds=dict(pos_embed="array", old_grid="object", new_grid="object"))
def _(draw):
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(pos_embed=arr(draw, (1 + h * w, draw(st.integers(1, 3)))), old_grid=(h, w),
                new_grid=(draw(st.integers(1, 6)), draw(st.integers(1, 6))))


@recipe("refimpl.vision.vit_params", kinds=dict(image_size="count", patch_size="count", channels="count",
                                                d_model="count", n_layers="count", d_mlp="count", n_classes="count"))
def _(draw):
    P = draw(st.integers(1, 32))
    return dict(image_size=P * draw(st.integers(1, 20)), patch_size=P, channels=draw(st.integers(1, 4)),
                d_model=draw(st.integers(1, 2048)), n_layers=draw(st.integers(1, 48)), d_mlp=draw(st.integers(1, 8192)),
                n_classes=draw(st.integers(0, 1000)))


recipe("refimpl.vision.relative_position_index", kinds=dict(window="count"))(
    lambda draw: dict(window=draw(st.integers(1, 8))))


@recipe("refimpl.vision.shift_mask", kinds=dict(height="count", width="count", window="count", shift="count"))
def _(draw):
    M = draw(st.integers(1, 4))
    return dict(height=M * draw(st.integers(1, 3)), width=M * draw(st.integers(1, 3)), window=M,
                shift=draw(st.integers(0, M - 1)))


@recipe("refimpl.vision.swin_window_attention", kinds=dict(x="array", w_qkv="array", b_qkv="array", w_out="array",
                                                           b_out="array", bias_table="array", num_heads="count",
                                                           window="count", shift="count"))
def _(draw):
    M, h = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    C = h * draw(st.integers(1, 2))
    return dict(x=arr(draw, (draw(st.integers(1, 2)), M * draw(st.integers(1, 2)), M * draw(st.integers(1, 2)), C)),
                w_qkv=arr(draw, (C, 3 * C)), b_qkv=arr(draw, (3 * C,)), w_out=arr(draw, (C, C)), b_out=arr(draw, (C,)),
                bias_table=arr(draw, ((2 * M - 1) ** 2, h)), num_heads=h, window=M, shift=draw(st.integers(0, M - 1)))


@recipe("refimpl.vision.swin_attention_scores", kinds=dict(height="count", width="count", window="count",
                                                           batch="count"))
def _(draw):
    M = draw(st.integers(1, 12))
    return dict(height=M * draw(st.integers(1, 10)), width=M * draw(st.integers(1, 10)), window=M,
                batch=draw(st.integers(1, 4)))


@recipe("refimpl.vision.patch_merging", kinds=dict(x="array", norm_weight="array", norm_bias="array",
                                                   w_reduction="array", eps="float"))
def _(draw):
    C = draw(st.integers(1, 3))
    return dict(x=arr(draw, (draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2)), C)),
                norm_weight=arr(draw, (4 * C,)), norm_bias=arr(draw, (4 * C,)), w_reduction=arr(draw, (4 * C, 2 * C)),
                eps=draw(st.sampled_from([1e-5, 1e-6])))


@recipe("refimpl.vision.clip_loss", kinds=dict(image_embeds="array", text_embeds="array", logit_scale="real"))
def _(draw):
    n, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(image_embeds=arr(draw, (n, d)), text_embeds=arr(draw, (n, d)), logit_scale=draw(st.floats(-5, 5)))


# --- latent ------------------------------------------------------------------------

from refimpl import latent as LTB  # noqa: E402

recipe("refimpl.latent.init_latent_block", kinds=dict(seed="count", d_model="count", num_latents="count",
                                                      num_heads="count", d_ff="count"))(
    lambda draw: (lambda h: dict(seed=draw(st.integers(0, 9)), d_model=h * draw(st.integers(1, 3)),
                                 num_latents=draw(st.integers(1, 4)), num_heads=h, d_ff=draw(st.integers(0, 5))))(
        draw(st.integers(1, 2))))


@recipe("refimpl.latent.latent_block", kinds=dict(x="array", weights="object", num_heads="count"))
def _(draw):
    h = draw(st.integers(1, 2))
    d = h * draw(st.integers(1, 3))
    w = LTB.init_latent_block(draw(st.integers(0, 9)), d_model=d, num_latents=draw(st.integers(1, 3)), num_heads=h,
                              d_ff=draw(st.integers(0, 4)))
    return dict(x=arr(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 5)), d)), weights=w, num_heads=h)


recipe("refimpl.latent.LatentBlockWeights", kinds=dict(latents="array", cross="object", self_attn="object",
                                                        ln_q="object", ln_kv="object", ln_s="object"),
       # x keeps the valid d_model = 2, so a broken field is reported under its own name
       call=lambda fn, kw: LTB.latent_block(np.ones((1, 2, 2)), fn(**kw), num_heads=1))(
    lambda draw: (lambda w: dict(latents=w.latents, cross=w.cross, self_attn=w.self_attn, ln_q=w.ln_q, ln_kv=w.ln_kv,
                                 ln_s=w.ln_s))(LTB.init_latent_block(draw(st.integers(0, 9)), d_model=2, num_latents=2,
                                                                     num_heads=1)))
recipe("refimpl.latent.latent_block_scores", kinds=dict(batch="count", num_latents="count", length="count",
                                                        num_heads="count"))(
    lambda draw: dict(batch=draw(st.integers(1, 4)), num_latents=draw(st.integers(1, 600)),
                      length=draw(st.integers(1, 10**5)), num_heads=draw(st.integers(1, 16))))


# --- scaling -----------------------------------------------------------------------

recipe("refimpl.scaling.logit_variance", kinds=dict(x="array", sigma="float"))(
    lambda draw: dict(x=arr(draw, (draw(st.integers(1, 3)), draw(st.integers(1, 8)))), sigma=draw(st.floats(0.0, 2.0))))


@recipe("refimpl.scaling.recentred_affine", kinds=dict(y="array", W="array", b="array"))
def _(draw):
    T, d, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(y=arr(draw, (T, d)), W=arr(draw, (d, n)), b=arr(draw, (n,)))


recipe("refimpl.scaling.constant_bias_residual", kinds=dict(y="array", W="array"))(
    lambda draw: (lambda d: dict(y=arr(draw, (draw(st.integers(1, 4)), d)), W=arr(draw, (d, draw(st.integers(1, 4))))))(
        draw(st.integers(1, 4))))


# --- pooled memory -----------------------------------------------------------------

from refimpl import pooled_memory as PMM  # noqa: E402

PM_KINDS = dict(window="count", g1="count", g2="count", mid_range="count")


def _pm_cfg(draw):
    g1 = draw(st.integers(1, 3))
    g2 = g1 * draw(st.integers(1, 3))
    return dict(window=draw(st.integers(1, 6)), g1=g1, g2=g2, mid_range=g2 * draw(st.integers(0, 3)))


recipe("refimpl.pooled_memory.boundaries", "refimpl.pooled_memory.units", kinds=dict(PM_KINDS, t="count"))(
    lambda draw: dict(_pm_cfg(draw), t=draw(st.integers(0, 60))))
recipe("refimpl.pooled_memory.unit_counts", kinds=dict(PM_KINDS, n="count"))(
    lambda draw: dict(_pm_cfg(draw), n=draw(st.integers(1, 60))))


@recipe("refimpl.pooled_memory.pooled_attention", kinds=dict(PM_KINDS, q="array", k="array", v="array",
                                                             size_bias="bool"))
def _(draw):
    L, D = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    return dict(_pm_cfg(draw), q=arr(draw, (L, D)), k=arr(draw, (L, D)), v=arr(draw, (L, draw(st.integers(1, 3)))),
                size_bias=draw(st.booleans()))


# --- gated -------------------------------------------------------------------------

from refimpl import gated as GT  # noqa: E402


@recipe("refimpl.gated.gated_fusion", kinds=dict(x="array", o_local="array", o_stride="array", W_lambda="array",
                                                 b_lambda="array"))
def _(draw):
    L, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(x=arr(draw, (L, d)), o_local=arr(draw, (L, d)), o_stride=arr(draw, (L, d)), W_lambda=arr(draw, (d, d)),
                b_lambda=arr(draw, (d,)))


@recipe("refimpl.gated.dual_chunk_branches", kinds=dict(q="array", k="array", v="array", window="count",
                                                        stride="count"))
def _(draw):
    B, H, L, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    return dict(q=arr(draw, (B, H, L, D)), k=arr(draw, (B, H, L, D)), v=arr(draw, (B, H, L, D)),
                window=draw(st.integers(1, 4)), stride=draw(st.integers(1, 4)))


@recipe("refimpl.gated.head_scaled_attention", kinds=dict(q="array", k="array", v="array", head_scale="array",
                                                          causal="bool"))
def _(draw):
    B, H, L, D = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    return dict(q=arr(draw, (B, H, L, D)), k=arr(draw, (B, H, L, D)), v=arr(draw, (B, H, L, D)),
                head_scale=arr(draw, (H,), 0.1, 3.0), causal=draw(st.booleans()))


# --- the Mamba block, hybrid stacks, per-layer masks ----------------------------------

import dataclasses as _dc  # noqa: E402

from refimpl import block as BLK  # noqa: E402
from refimpl import hybrid as HYB  # noqa: E402
from refimpl import mamba_block as MBK  # noqa: E402
from refimpl import masks as MSK  # noqa: E402

MAMBA_SIZES = dict(d_model="count", d_state="count", d_conv="count", expand="count", dt_rank="count")


def _mamba_sizes(draw):
    return dict(d_model=draw(st.integers(1, 4)), d_state=draw(st.integers(1, 3)), d_conv=draw(st.integers(1, 4)),
                expand=draw(st.integers(1, 2)), dt_rank=draw(st.none() | st.integers(1, 3)))


recipe("refimpl.mamba_block.mamba_params", kinds=dict(MAMBA_SIZES, conv_bias="bool", bias="bool"))(
    lambda draw: dict(_mamba_sizes(draw), d_model=draw(st.integers(1, 4096)), conv_bias=draw(st.booleans()),
                      bias=draw(st.booleans())))
recipe("refimpl.mamba_block.init_mamba", kinds=dict(MAMBA_SIZES, seed="count"),
       call=lambda fn, kw: MBK.mamba_mixer(np.ones((1, 2, kw["d_model"])) if isinstance(kw.get("d_model"), int)
                                           and not isinstance(kw.get("d_model"), bool) and 0 < kw["d_model"] < 64
                                           else np.ones((1, 2, 1)), fn(**kw)))(
    lambda draw: dict(_mamba_sizes(draw), seed=draw(st.integers(0, 9))))


def _mamba(draw):
    return MBK.init_mamba(draw(st.integers(0, 9)), **_mamba_sizes(draw))


@recipe("refimpl.mamba_block.mamba_mixer", kinds=dict(x="array", weights="object"))
def _(draw):
    w = _mamba(draw)
    return dict(x=arr(draw, (draw(st.integers(1, 2)), draw(st.integers(0, 5)), w.d_model)), weights=w)


recipe("refimpl.mamba_block.MambaWeights", kinds={f.name: "array" for f in _dc.fields(MBK.MambaWeights)},
       call=lambda fn, kw: MBK.mamba_mixer(np.ones((1, 2, np.shape(kw["out_proj"])[-1] if np.ndim(kw.get("out_proj"))
                                                    == 2 else 1)), fn(**kw)))(
    lambda draw: (lambda w: {f.name: getattr(w, f.name) for f in _dc.fields(w)})(
        _mamba(draw) if draw(st.booleans()) else _dc.replace(_mamba(draw), conv_bias=None)))


def _layers(draw, d):
    blk = BLK.init_block(draw(st.integers(0, 9)), d_model=d, num_heads=1, d_ff=draw(st.integers(1, 3)))
    norm = BLK.Norm(np.ones(d))
    ml = HYB.MambaLayer(norm, MBK.init_mamba(draw(st.integers(0, 9)), d_model=d, d_state=2, d_conv=2))
    la = HYB.LinearAttentionLayer(norm, blk.attn, draw(st.sampled_from(["elu+1", "squared_relu"])))
    return draw(st.permutations([blk, ml, la]))[: draw(st.integers(1, 3))]


@recipe("refimpl.hybrid.hybrid_stack", kinds=dict(x="array", layers="routing_list", masks="mask_list", causal="bool",
                                                  final_norm="object"))
def _(draw):
    d = draw(st.integers(1, 3))
    layers = _layers(draw, d)
    L = draw(st.integers(1, 4))
    kw = dict(x=arr(draw, (draw(st.integers(1, 2)), L, d)), layers=layers)
    if draw(st.booleans()):
        kw["masks"] = [MSK.SlidingWindow(draw(st.integers(0, 2)), 0) if isinstance(la, BLK.Block) and draw(st.booleans())
                       else None for la in layers]
    if draw(st.booleans()):
        kw["causal"] = draw(st.booleans())
    if draw(st.booleans()):
        kw["final_norm"] = BLK.Norm(np.ones(d))
    return kw


recipe("refimpl.hybrid.MambaLayer", kinds=dict(norm="object", mixer="object"),
       call=lambda fn, kw: HYB.hybrid_stack(np.ones((1, 2, 2)), [fn(**kw)]))(
    lambda draw: dict(norm=BLK.Norm(np.ones(2)), mixer=MBK.init_mamba(draw(st.integers(0, 9)), d_model=2, d_state=2)))
recipe("refimpl.hybrid.LinearAttentionLayer", kinds=dict(norm="object", attn="object", feature_map="name"),
       call=lambda fn, kw: HYB.hybrid_stack(np.ones((1, 2, 2)), [fn(**kw)]))(
    lambda draw: dict(norm=BLK.Norm(np.ones(2)), attn=BLK.init_block(draw(st.integers(0, 9)), d_model=2, num_heads=1,
                                                                     d_ff=1).attn,
                      feature_map=draw(st.sampled_from(["elu+1", "relu", "exp_normalised"]))))
recipe("refimpl.block.layer_masks", kinds=dict(masks="mask_list", n_layers="count", name="str"))(
    lambda draw: (lambda n: dict(masks=[draw(st.sampled_from([None, MSK.Causal(), MSK.SlidingWindow(1, 0)]))
                                        for _ in range(n)], n_layers=n))(draw(st.integers(1, 3))))


# --- DeiT, MAE, DINO ---------------------------------------------------------------------

VOP = "refimpl.vision_objectives."


@recipe(VOP + "deit_embeddings", kinds=dict(images="array", weight="array", bias="array", cls_token="array",
                                             dist_token="array", pos_embed="array"))
def _(draw):
    P, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    gh, gw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return dict(images=arr(draw, (draw(st.integers(1, 2)), 1, gh * P, gw * P)), weight=arr(draw, (d, 1, P, P)),
                bias=arr(draw, (d,)), cls_token=arr(draw, (d,)), dist_token=arr(draw, (d,)),
                pos_embed=arr(draw, (gh * gw + 2, d)))


@recipe(VOP + "deit_inference_logits", kinds=dict(cls_logits="array", dist_logits="array"))
def _(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    return dict(cls_logits=arr(draw, shape), dist_logits=arr(draw, shape))


@recipe(VOP + "deit_loss", kinds=dict(cls_logits="array", dist_logits="array", labels="int_array",
                                       teacher_logits="array", distillation_type="name", alpha="prob", tau="float"))
def _(draw):
    B, K = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return dict(cls_logits=arr(draw, (B, K)), dist_logits=arr(draw, (B, K)), teacher_logits=arr(draw, (B, K)),
                labels=np.array([draw(st.integers(0, K - 1)) for _ in range(B)]),
                distillation_type=draw(st.sampled_from(["hard", "soft"])), alpha=draw(st.floats(0.0, 1.0)),
                tau=draw(st.floats(0.1, 5.0)))


@recipe(VOP + "mae_random_masking", kinds=dict(x="array", mask_ratio="prob", seed="count", noise="array"))
def _(draw):
    N, L = draw(st.integers(1, 2)), draw(st.integers(0, 6))
    kw = dict(x=arr(draw, (N, L, draw(st.integers(1, 2)))), mask_ratio=draw(st.sampled_from([0.0, 0.5, 0.75, 0.9])))
    if draw(st.booleans()):
        kw["seed"] = draw(st.integers(0, 9))
    else:
        kw["noise"] = arr(draw, (N, L), 0.0, 1.0)
    return kw


recipe(VOP + "mae_num_kept", kinds=dict(num_patches="count", mask_ratio="prob"))(
    lambda draw: dict(num_patches=draw(st.integers(0, 10**6)), mask_ratio=draw(st.floats(0.0, 0.99))))


@recipe(VOP + "dino_loss", kinds=dict(student_output="array", teacher_output="array", center="array", n_crops="count",
                                       student_temp="float", teacher_temp="float"))
def _(draw):
    B, K, V_ = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(2, 4))
    return dict(student_output=arr(draw, (V_ * B, K)), teacher_output=arr(draw, (2 * B, K)), center=arr(draw, (K,)),
                n_crops=V_, student_temp=draw(st.floats(0.05, 1.0)), teacher_temp=draw(st.floats(0.01, 1.0)))


@recipe(VOP + "dino_center_update", kinds=dict(center="array", teacher_output="array", momentum="prob"))
def _(draw):
    K = draw(st.integers(1, 4))
    return dict(center=arr(draw, (K,)), teacher_output=arr(draw, (draw(st.integers(1, 4)), K)),
                momentum=draw(st.floats(0.0, 1.0)))


@recipe(VOP + "ema_update", kinds=dict(teacher="array", student="array", momentum="prob"))
def _(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return dict(teacher=arr(draw, shape), student=arr(draw, shape), momentum=draw(st.floats(0.0, 1.0)))


recipe(VOP + "dino_momentum", kinds=dict(step="count", total_steps="count", base="prob", final="prob"))(
    lambda draw: (lambda n: dict(step=draw(st.integers(0, n - 1)), total_steps=n, base=draw(st.floats(0.9, 1.0)),
                                 final=draw(st.floats(0.9, 1.0))))(draw(st.integers(1, 10**6))))
