"""Issue 24's remaining pieces beside the libraries that define them, run on the CPU in float64.

* fla 0.6.0 (the triton extra) ``fla/modules/feature_map.py``: ``SquaredReLUFeatureMap``, ``HedgehogFeatureMap``;
* lucidrains ``linformer`` 0.2.3 ``linformer/linformer.py`` ``LinformerSelfAttention`` (commit 970e1c3), found
  under ``$REFIMPL_LIBRARY_SOURCES/linformer/`` (a checkout), skipped otherwise.

Bounds are stated per test (float64 on both sides unless the library rounds to float32).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest

from refimpl.mixers import linear_attention as LA
from refimpl.mixers import linformer as LF

torch = pytest.importorskip("torch", reason="torch is needed to run the libraries")
ROOT = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
RNG = np.random.default_rng(2024)


def _checkout(name: str, rel: str) -> pathlib.Path:
    base = pathlib.Path(ROOT) / name
    if not ROOT or not (base / rel).is_file():
        pytest.skip(f"library source {name}/{rel} not found (set REFIMPL_LIBRARY_SOURCES to a directory holding it)")
    return base


def _t(x):
    return torch.tensor(np.ascontiguousarray(x), dtype=torch.float64)


def test_fla_feature_maps():
    fm = pytest.importorskip("fla.modules.feature_map", reason="fla (the triton extra) defines the feature maps")
    x = RNG.standard_normal((2, 3, 5, 4)) * 3
    got = fm.SquaredReLUFeatureMap()(_t(x)).numpy()  # fla's sqrelu computes in float32: x rounded (u), squared
    # (2u), the square rounded (u): within 3 u32 relative of the float64 square
    np.testing.assert_allclose(got, LA.apply_feature_map(x, "squared_relu"), rtol=3 * 2.0**-24, atol=0)
    hh = fm.HedgehogFeatureMap(4).double()  # its layer starts as the identity: softmax([2x, -2x])
    want = LA.apply_feature_map(np.concatenate([2 * x, -2 * x], axis=-1), "exp_normalised")
    np.testing.assert_allclose(hh(_t(x)).detach().numpy(), want, rtol=4e-15, atol=1e-300)


def test_lucidrains_linformer():
    base = _checkout("linformer", "linformer/linformer.py")
    sys.path.insert(0, str(base))
    try:
        mod = importlib.import_module("linformer.linformer")
    finally:
        sys.path.remove(str(base))
    dim, n, kp, H = 8, 7, 3, 2
    torch.manual_seed(0)
    layer = mod.LinformerSelfAttention(dim, seq_len=n, k=kp, heads=H).double().eval()
    x = RNG.standard_normal((2, n, dim))
    ref = layer(_t(x)).detach().numpy()
    W_q, W_k, W_v = (getattr(layer, f"to_{c}").weight.detach().numpy().T for c in "qkv")
    E, F = layer.proj_k.detach().numpy().T, layer.proj_v.detach().numpy().T  # proj_k is E^T (n x k_proj)
    split = lambda y: y.reshape(2, n, H, dim // H).transpose(0, 2, 1, 3)  # noqa: E731
    out = LF.linformer_attention(split(x @ W_q), split(x @ W_k), split(x @ W_v), E, F)
    got = out.transpose(0, 2, 1, 3).reshape(2, n, dim) @ layer.to_out.weight.detach().numpy().T
    got = got + layer.to_out.bias.detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- the Mamba block

def _mamba_weights_f32(d_model, d_state, seed):
    """Spec weights whose A_log and dt_bias are float32 numbers: both libraries cast those two to float32."""
    from refimpl import mamba_block as MB
    w = MB.init_mamba(seed, d_model=d_model, d_state=d_state)
    return dataclasses.replace(w, A_log=w.A_log.astype(np.float32).astype(np.float64),
                               dt_bias=w.dt_bias.astype(np.float32).astype(np.float64))


def _mamba_magnitude(x, w):
    """|out| bound of the scan's terms: the spec on |B|, |C|, |u'|, |D|, |silu(z)| and |W_out| (same deltas), so
    a float32 rounding of B, C, u', delta (relative u32 each) moves each output by at most a few u32 of it."""
    from refimpl.mixers import ssm as SSM
    di, N, R = w.d_inner, w.d_state, w.dt_rank
    xz = x @ w.in_proj
    u, z = xz[..., :di], xz[..., di:]
    u = SSM.causal_conv1d(u[:, None], w.conv_weight[None], w.conv_bias[None], activation="silu")[:, 0]
    xdbl = u @ w.x_proj
    dt = xdbl[..., :R] @ w.dt_proj
    y, _ = SSM.selective_scan(np.abs(u)[:, None], dt[:, None], -np.exp(w.A_log)[None], np.abs(xdbl[..., R:R + N])[:, None],
                              np.abs(xdbl[..., R + N:])[:, None], np.abs(w.D)[None], delta_bias=w.dt_bias[None],
                              delta_softplus=True)
    return (y[:, 0] * np.abs(SSM.silu(z))) @ np.abs(w.out_proj)


def _mamba_check(name, got, ref, mag, n):
    """Within 4 (n + 8) u32 M (Higham's gamma_n for the float32 products and the sums over N and L)."""
    bound = 4 * (n + 8) * 2.0**-24 * np.maximum(mag, 1e-300)
    ratio = float(np.max(np.abs(got - ref) / bound))
    print(f"{name}: max |lib - spec| = {np.abs(got - ref).max():.3g}, ratio to bound {ratio:.3f}")
    assert ratio <= 1.0, (name, ratio)


def test_transformers_mamba_mixer():
    """transformers 5.25.0 ``MambaMixer.forward`` (torch path, no kernels) in float64; it rounds B and u' to
    float32 inside ``mamba_selective_scan``."""
    tr = pytest.importorskip("transformers")
    from transformers.models.mamba import modeling_mamba as HF
    from refimpl import mamba_block as MB
    d_model, N, L = 16, 4, 9
    w = _mamba_weights_f32(d_model, N, seed=3)
    cfg = tr.MambaConfig(hidden_size=d_model, state_size=N, conv_kernel=4, expand=2, time_step_rank=w.dt_rank,
                         use_bias=False, use_conv_bias=True, num_hidden_layers=1, use_mambapy=False)
    mixer = HF.MambaMixer(cfg, layer_idx=0).double().eval()
    with torch.no_grad():
        mixer.in_proj.weight.copy_(_t(w.in_proj.T))
        mixer.conv1d.weight.copy_(_t(w.conv_weight[:, None, :]))
        mixer.conv1d.bias.copy_(_t(w.conv_bias))
        mixer.x_proj.weight.copy_(_t(w.x_proj.T))
        mixer.dt_proj.weight.copy_(_t(w.dt_proj.T))
        mixer.dt_proj.bias.copy_(_t(w.dt_bias))
        mixer.A_log.copy_(_t(w.A_log))
        mixer.D.copy_(_t(w.D))
        mixer.out_proj.weight.copy_(_t(w.out_proj.T))
    x = RNG.standard_normal((2, L, d_model))
    with torch.no_grad():
        ref = mixer(_t(x)).numpy()
    assert sum(p.numel() for p in mixer.parameters()) == w.num_params() == MB.mamba_params(d_model, d_state=N)
    _mamba_check("transformers MambaMixer", MB.mamba_mixer(x, w), ref, _mamba_magnitude(x, w), L + N)


def test_mamba_ssm_mamba_simple():
    """mamba_ssm 2.3.2 ``Mamba.forward`` without the fused path (causal_conv1d absent: ``F.conv1d`` then silu), its
    ``selective_scan_fn`` replaced by the same file's pure-torch ``selective_scan_ref`` (float32 inside)."""
    base = _checkout("mamba", "mamba_ssm/modules/mamba_simple.py")
    pytest.importorskip("einops")
    sys.path.insert(0, str(base))
    try:
        ms = importlib.import_module("mamba_ssm.modules.mamba_simple")
        ssi = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except ImportError as e:  # triton or another import of the package missing
        pytest.skip(f"mamba_ssm does not import here: {e}")
    finally:
        sys.path.remove(str(base))
    from refimpl import mamba_block as MB
    d_model, N, L = 16, 4, 9
    w = _mamba_weights_f32(d_model, N, seed=4)
    ms_scan, ms.selective_scan_fn = ms.selective_scan_fn, ssi.selective_scan_ref
    try:
        mod = ms.Mamba(d_model, d_state=N, d_conv=4, expand=2, use_fast_path=False).double()
        with torch.no_grad():
            mod.in_proj.weight.copy_(_t(w.in_proj.T))
            mod.conv1d.weight.copy_(_t(w.conv_weight[:, None, :]))
            mod.conv1d.bias.copy_(_t(w.conv_bias))
            mod.x_proj.weight.copy_(_t(w.x_proj.T))
            mod.dt_proj.weight.copy_(_t(w.dt_proj.T))
            mod.dt_proj.bias.copy_(_t(w.dt_bias))
            mod.A_log.copy_(_t(w.A_log))
            mod.D.copy_(_t(w.D))
            mod.out_proj.weight.copy_(_t(w.out_proj.T))
            x = RNG.standard_normal((2, L, d_model))
            ref = mod(_t(x)).numpy()
    finally:
        ms.selective_scan_fn = ms_scan
    assert sum(p.numel() for p in mod.parameters()) == w.num_params() == MB.mamba_params(d_model, d_state=N)
    _mamba_check("mamba_ssm Mamba", MB.mamba_mixer(x, w), ref, _mamba_magnitude(x, w), L + N)


def test_mamba_130m_parameter_count():
    """state-spaces/mamba-130m's published config (d_model 768, 24 layers, vocab 50280 padded, tied head): the
    spec's count against transformers' MambaForCausalLM built on the meta device."""
    tr = pytest.importorskip("transformers")
    from refimpl import mamba_block as MB
    cfg = tr.MambaConfig(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16, expand=2,
                         conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    with torch.device("meta"):
        model = tr.MambaForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())  # tied: the head shares the embedding
    assert n == 24 * (MB.mamba_params(768) + 768) + 50280 * 768 + 768 == 129_135_360


def test_transformers_llama_decoder_layer_is_a_pre_norm_rope_block():
    """transformers 5.25.0 ``LlamaDecoderLayer`` (RMSNorm pre-norm, RoPE half layout, GQA, SwiGLU) in float64. Two
    float32 steps of HF are replaced by their float64 twins so the wiring is compared at float64 precision: cos / sin
    formed in float64 (``LlamaRotaryEmbedding`` forms angles in float32, tests/test_rope.py) and the norms'
    ``LlamaRMSNorm.forward`` (it casts to float32, then back) computed without the cast."""
    tr = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as HL
    from refimpl import block as BL
    from refimpl.rope import rope_frequencies
    d, H, Hkv, dff, L = 16, 4, 2, 24, 7
    blk = BL.init_block(11, d_model=d, num_heads=H, num_kv_heads=Hkv, d_ff=dff, ffn_kind="glu", activation="silu")
    blk = dataclasses.replace(blk, attn=dataclasses.replace(blk.attn, rope={"layout": "half", "base": 10000.0}),
                              norm1=dataclasses.replace(blk.norm1, eps=1e-6), norm2=dataclasses.replace(blk.norm2, eps=1e-6))
    cfg = tr.LlamaConfig(hidden_size=d, num_attention_heads=H, num_key_value_heads=Hkv, intermediate_size=dff,
                         rms_norm_eps=1e-6, attention_bias=False, mlp_bias=False, hidden_act="silu")
    cfg._attn_implementation = "sdpa"  # torch SDPA keeps float64 (eager_attention_forward takes the softmax in float32)
    layer = HL.LlamaDecoderLayer(cfg, layer_idx=0).double().eval()
    a = blk.attn
    with torch.no_grad():
        for name, W in (("q_proj", a.W_q), ("k_proj", a.W_k), ("v_proj", a.W_v), ("o_proj", a.W_o)):
            getattr(layer.self_attn, name).weight.copy_(_t(W.T))
        layer.mlp.gate_proj.weight.copy_(_t(blk.ffn.W_gate.T))
        layer.mlp.up_proj.weight.copy_(_t(blk.ffn.W_up.T))
        layer.mlp.down_proj.weight.copy_(_t(blk.ffn.W_down.T))
        layer.input_layernorm.weight.copy_(_t(blk.norm1.weight))
        layer.post_attention_layernorm.weight.copy_(_t(blk.norm2.weight))
    def rms64(norm):
        return lambda h: norm.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)

    layer.input_layernorm.forward = rms64(layer.input_layernorm)
    layer.post_attention_layernorm.forward = rms64(layer.post_attention_layernorm)
    theta, _ = rope_frequencies(d // H, 10000.0)
    ang = np.arange(L)[:, None] * theta[None]
    cos, sin = (_t(np.concatenate([f(ang), f(ang)], -1)[None]) for f in (np.cos, np.sin))
    x = RNG.standard_normal((2, L, d))
    causal = torch.full((L, L), float("-inf"), dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        out = layer(_t(x), attention_mask=causal, position_embeddings=(cos, sin))
    ref = (out[0] if isinstance(out, tuple) else out).numpy()
    np.testing.assert_allclose(BL.block(x, blk, causal=True), ref, rtol=1e-11, atol=1e-12)


# --------------------------------------------------------------------------- DeiT, MAE, DINO

def test_transformers_deit_with_teacher():
    """transformers 5.25.0 ``DeiTEmbeddings`` ([cls; dist; patches] + E_pos) and
    ``DeiTForImageClassificationWithTeacher`` (logits = (cls + distillation) / 2) in float64; and the parameter
    count of DeiT-B distilled: ViT-B/16 with a 1000-class head plus the distillation token, its position and the
    second head."""
    tr = pytest.importorskip("transformers")
    from transformers.models.deit import modeling_deit as HD
    from refimpl import vision as V
    from refimpl import vision_objectives as VO
    cfg = tr.DeiTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=8,
                        patch_size=4, num_channels=3, num_labels=5)
    torch.manual_seed(0)
    model = HD.DeiTForImageClassificationWithTeacher(cfg).double().eval()
    emb = model.deit.embeddings
    with torch.no_grad():
        for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            p.normal_()
        x = RNG.standard_normal((2, 3, 8, 8))
        got_emb = emb(_t(x)).numpy()
        out = model(_t(x))
    pe = emb.patch_embeddings.projection
    want = VO.deit_embeddings(x, pe.weight.detach().numpy(), pe.bias.detach().numpy(), emb.cls_token.detach().numpy()[0, 0],
                              emb.distillation_token.detach().numpy()[0, 0], emb.position_embeddings.detach().numpy()[0])
    np.testing.assert_allclose(got_emb, want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(out.logits.numpy(), VO.deit_inference_logits(out.cls_logits.numpy(),
                                                                            out.distillation_logits.numpy()), rtol=1e-15)
    big = tr.DeiTConfig(num_labels=1000)  # DeiT-B/16 at 224
    with torch.device("meta"):
        n = sum(p.numel() for p in HD.DeiTForImageClassificationWithTeacher(big).parameters())
    assert n == V.vit_params(n_classes=1000) + 2 * 768 + 768 * 1000 + 1000 == 87_338_192


def test_deit_distillation_loss():
    """facebookresearch/deit ``losses.py`` ``DistillationLoss`` (commit 7e160fe), base criterion CrossEntropyLoss,
    the teacher a function of the inputs; hard and soft, float64."""
    base = _checkout("deit", "losses.py")
    from refimpl import vision_objectives as VO
    spec = importlib.util.spec_from_file_location("deit_losses", base / "losses.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, d, t = RNG.standard_normal((3, 4, 7)) * 3
    y = np.array([1, 0, 6, 3])
    for kind, alpha, tau in (("hard", 0.5, 1.0), ("soft", 0.3, 3.0), ("soft", 0.5, 1.0)):
        loss = mod.DistillationLoss(torch.nn.CrossEntropyLoss(), lambda inputs: _t(t), kind, alpha, tau)
        ref = float(loss(None, (_t(a), _t(d)), torch.tensor(y)))
        got = VO.deit_loss(a, d, y, t, distillation_type=kind, alpha=alpha, tau=tau)
        np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_mae_random_masking():
    """facebookresearch/mae ``models_mae.py`` ``MaskedAutoencoderViT.random_masking`` (commit efb2a80), run with
    torch.rand returning the spec's noise: the same kept patches, mask and restore indices."""
    import ast
    import unittest.mock
    base = _checkout("mae", "models_mae.py")
    from refimpl import vision_objectives as VO
    tree = ast.parse((base / "models_mae.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "random_masking")
    ns = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "models_mae.py", "exec"), ns)
    x = RNG.standard_normal((3, 196, 4))
    noise = RNG.random((3, 196))
    with unittest.mock.patch.object(torch, "rand", lambda *s, **k: _t(noise)):
        xm, mask, restore = ns["random_masking"](None, _t(x), 0.75)
    got = VO.mae_random_masking(x, 0.75, noise=noise)
    np.testing.assert_array_equal(got[0], xm.numpy())
    np.testing.assert_array_equal(got[1], mask.numpy())
    np.testing.assert_array_equal(got[2], restore.numpy())
    assert got[0].shape[1] == 49 and got[1].sum() == 3 * 147


def test_dino_loss_and_schedule():
    """facebookresearch/dino ``main_dino.py`` ``DINOLoss`` (commit 7c446df) with one process (all_reduce the
    identity, world size 1), and ``utils.cosine_scheduler``, float64."""
    import ast
    base = _checkout("dino", "main_dino.py")
    from refimpl import vision_objectives as VO
    tree = ast.parse((base / "main_dino.py").read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "DINOLoss")
    dist = type("dist", (), {"all_reduce": staticmethod(lambda t: t), "get_world_size": staticmethod(lambda: 1)})
    ns = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "np": np, "dist": dist}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), "main_dino.py", "exec"), ns)
    K, B, crops = 6, 3, 4
    loss = ns["DINOLoss"](K, crops, 0.04, 0.04, 0, 10).double()
    center = np.zeros(K)
    for step in range(3):  # the centre carried across steps
        s, t = RNG.standard_normal((crops * B, K)) * 2, RNG.standard_normal((2 * B, K)) * 2
        ref = float(loss(_t(s), _t(t), epoch=0))
        np.testing.assert_allclose(VO.dino_loss(s, t, center, n_crops=crops), ref, rtol=1e-13)
        center = VO.dino_center_update(center, t)
        np.testing.assert_allclose(center, loss.center.numpy()[0], rtol=1e-13, atol=1e-16)
    utils = ast.parse((base / "utils.py").read_text()) if (base / "utils.py").is_file() else None
    if utils is not None:
        fn = next(n for n in ast.walk(utils) if isinstance(n, ast.FunctionDef) and n.name == "cosine_scheduler")
        ns2 = {"np": np}
        exec(compile(ast.Module(body=[fn], type_ignores=[]), "utils.py", "exec"), ns2)
        sched = ns2["cosine_scheduler"](0.996, 1.0, 5, 7)
        np.testing.assert_allclose([VO.dino_momentum(i, 35) for i in range(35)], sched, rtol=0, atol=1e-16)
