"""Vision worked examples (docs/notes.md#vision), computed by refimpl.vision and refimpl.vision_objectives
(DeiT's distillation token, MAE's 75% masking, DINO's centring and sharpening: docs/vision.md)."""

from __future__ import annotations

import numpy as np

from refimpl import vision as V
from refimpl import vision_objectives as VO

from . import WorkedExample


def _patches():
    return V.num_patches(224, 224, 16), V.patchify(np.zeros((1, 3, 224, 224)), 16).shape[1:]


def _patches_beside():
    return (f"14 x 14 grid of 16 x 16 patches, each 3 x 16 x 16 = 768 values; CLIP ViT-L/14 at 224: "
            f"{V.num_patches(224, 224, 14)} patches; at 384 with P = 16: {V.num_patches(384, 384, 16)} "
            f"(position embeddings interpolated 14 x 14 -> 24 x 24)")


VIT = {"B/16": dict(patch_size=16, d_model=768, n_layers=12, d_mlp=3072),
       "L/16": dict(patch_size=16, d_model=1024, n_layers=24, d_mlp=4096),
       "H/14": dict(patch_size=14, d_model=1280, n_layers=32, d_mlp=5120)}


def _vit_params():
    return tuple(round(V.vit_params(**kw, n_classes=1000) / 1e6, 1) for kw in VIT.values())


def _vit_params_beside():
    rows = ", ".join(f"ViT-{n}: {V.vit_params(**kw):,} without head, {V.vit_params(**kw, n_classes=1000):,} with"
                     for n, kw in VIT.items())
    l32 = V.vit_params(patch_size=32, d_model=1024, n_layers=24, d_mlp=4096, n_classes=1000)
    return f"{rows}; ViT-L/32 with head {l32:,} (the notes' 307M)"


def _interp():
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1 + 14 * 14, 8))
    same = V.interpolate_pos_embed(pos, (14, 14), (14, 14))
    return V.interpolate_pos_embed(pos, (14, 14), (24, 24)).shape[0], bool(np.array_equal(same, pos))


def _swin():
    w, g = V.swin_attention_scores(56, 56, 7), (56 * 56) ** 2
    return w, g, g // w


def _deit():
    """Tokens of DeiT-B/16 at 224 (from a run of deit_embeddings at 32 pixels: N + 2 rows) and its parameters."""
    rng = np.random.default_rng(0)
    z = VO.deit_embeddings(rng.standard_normal((1, 3, 32, 32)), rng.standard_normal((4, 3, 16, 16)), np.zeros(4),
                           np.ones(4), -np.ones(4), np.zeros((6, 4)))
    assert z.shape[1] == V.num_patches(32, 32, 16) + 2 and z[0, 1, 0] == -1.0  # cls, then dist, then patches
    return V.num_patches(224, 224, 16) + 2, V.vit_params(n_classes=1000) + 2 * 768 + 768 * 1000 + 1000


def _mae():
    """Patches kept and masked per image at mask ratio 0.75, 196 patches, seed 0."""
    x = np.zeros((2, 196, 1))
    xm, mask, _ = VO.mae_random_masking(x, 0.75, seed=0)
    return xm.shape[1], int(mask[0].sum())


def _dino():
    """A collapsed teacher (every output the same vector t = 0, 0.5, ..., 7.5): its largest target probability
    after centring (c = t) and without it, both at teacher temperature 0.04."""
    t = np.tile(np.arange(16) * 0.5, (4, 1))
    c = VO.dino_center_update(np.zeros(16), t, momentum=0.0)
    softmax = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # noqa: E731
    return float(softmax((t[0] - c) / 0.04).max()), float(softmax(t[0] / 0.04).max())


EXAMPLES = [
    WorkedExample(
        "vit_patches_196", "docs/notes.md#vision", "224×224 image, 16×16 patches -> 196 patches (14 × 14)",
        _patches, (196, (196, 768)), 0.0,
        "refimpl.vision.num_patches and patchify (docs/vision.md)", beside=_patches_beside,
    ),
    WorkedExample(
        "vit_parameter_counts", "docs/notes.md#vision", "ViT-Base 86M, ViT-Large 307M, ViT-Huge 632M params",
        _vit_params, (86.6, 304.3, 632.0), 0.0,
        "docs/errata.md#x-vit-params: counted with patch and position embeddings, the class token, all biases, LayerNorms "
        "and a 1000-class head (refimpl.vision.vit_params, checked against HF ViTModel); millions. B/16 (86.6M) "
        "and H/14 (632.0M) match; L/16 has 304.3M, the notes' 307M is L/32's 306.5M",
        beside=_vit_params_beside,
    ),
    WorkedExample(
        "vit_pos_embed_interpolation", "docs/notes.md#vision", "resize position embeddings at fine-tune time",
        _interp, (577, True), 0.0,
        "14 x 14 grid to 24 x 24 (224 -> 384 pixels): 1 + 576 rows; resizing to the same grid returns the "
        "embeddings unchanged (bicubic weights 0, 1, 0, 0 at the sample points)",
    ),
    WorkedExample(
        "swin_window_cost", "docs/notes.md#vision", "reduces complexity from O(HW)^2 to O(HW·M^2)",
        _swin, (153_664, 9_834_496, 64), 0.0,
        "scores per head at 56 x 56 patches (Swin's first stage) with M = 7: H W M^2 in windows vs (H W)^2 globally",
    ),
    WorkedExample(
        "deit_distillation_token", "docs/notes.md#vision", "distillation token x_dist alongside [CLS]",
        _deit, (198, 87_338_192), 0.0,
        "sequence [cls; dist; 196 patches] and DeiT-B/16's parameters with both heads (ViT-B/16 with a 1000-class head "
        "+ the token, its position and the distillation head); transformers 5.25.0 counts the same",
    ),
    WorkedExample(
        "mae_mask_75_percent", "docs/notes.md#vision", "mask 75% of patches",
        _mae, (49, 147), 0.0,
        "refimpl.vision_objectives.mae_random_masking (MAE's random_masking, seed 0): int(196 x 0.25) = 49 patches "
        "enter the encoder, 147 are masked",
    ),
    WorkedExample(
        "dino_centring_sharpening", "docs/notes.md#vision", "self-distillation (student-teacher with momentum update)",
        _dino, (1 / 16, 1.0), 1e-5,
        "target of a collapsed teacher over 16 outputs at temperature 0.04: centred, uniform (1/16); not centred, "
        "sharpened to one output (1 - 3.7e-6)",
    ),
]
