"""Properties of ViT patch embeddings (kind "patch_embed") and CLIP's contrastive loss (kind
"contrastive_loss"), against ``refimpl.vision`` (docs/vision.md).

Patch-embedding adapter: ``patch_embed(images (B, C, H, W), weight (d, C, P, P), bias (d,)) -> (B, N, d)``
with N = (H/P)(W/P) patches in row-major grid order; inputs hold float32 values. Bound: each output
is a dot product of K = C P^2 products plus the bias; computed in float32 in any order it is within
gamma_{K+1} (sum |w| |x| + |b|) of the exact value, gamma_n = n u / (1 - n u), u = 2^-24 (Higham,
Accuracy and Stability, eq. 3.5), plus half an ulp for rounding the output.

Contrastive-loss adapter: ``contrastive_loss(image_embeds (n, d), text_embeds (n, d), logit_scale) -> float``:
(CE(t V U^T, diag) + CE(t U V^T, diag)) / 2 with unit-normalised rows and t = exp(logit_scale).
Bound for float32 arithmetic (derived in ``loss_bound``): normalising and the dot products put each
cosine within (2 d + 8) u of the exact one, so each logit within t (2 d + 8) u; a row's loss
lse - logit_ii then moves by at most twice that plus the float32 rounding of the log-sum-exp,
(n + 4) u (|lse| + 1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from refimpl import vision as V

from .core import Property
from .protocol import Capability, Kind

U32 = 2.0**-24

KINDS = (
    Kind("patch_embed", "ViT patch embedding (a stride-P convolution); compared with refimpl.vision.patch_embed",
         {"patch_embed": "patch_embed(images (B, C, H, W), weight (d, C, P, P), bias (d,)) -> (B, N, d), patches "
                         "row-major over the (H/P, W/P) grid"},
         ("patch_embed",),
         {"non_square_images": Capability("accepts H != W")}),
    Kind("contrastive_loss", "CLIP's symmetric image-text cross-entropy; compared with refimpl.vision.clip_loss",
         {"contrastive_loss": "contrastive_loss(image_embeds (n, d), text_embeds (n, d), logit_scale: float) -> float"},
         ("contrastive_loss",), {}),
)


@dataclasses.dataclass(frozen=True)
class PatchEmbedAdapter:
    name: str
    patch_embed: Callable
    capabilities: frozenset = frozenset({"non_square_images"})
    kind: str = "patch_embed"


@dataclasses.dataclass(frozen=True)
class ContrastiveAdapter:
    name: str
    contrastive_loss: Callable
    capabilities: frozenset = frozenset()
    kind: str = "contrastive_loss"


@dataclasses.dataclass(frozen=True)
class PatchCase:
    images: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def __repr__(self):
        return f"PatchCase(images{self.images.shape}, weight{self.weight.shape})"


def _f32(a):
    return np.asarray(a, np.float32).astype(np.float64)


@st.composite
def patch_case(draw, caps):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P = draw(st.sampled_from([1, 2, 3, 4]))
    gh = draw(st.integers(1, 4))
    gw = draw(st.integers(1, 4)) if "non_square_images" in caps else gh
    B, C, d = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3])), draw(st.integers(1, 5))
    x = rng.standard_normal((B, C, gh * P, gw * P)) * 10.0 ** rng.uniform(-2, 2)
    if draw(st.booleans()):  # asymmetric content, so a transposed grid or flattening shows
        x = x + np.arange(x.size).reshape(x.shape) / x.size
    return PatchCase(_f32(x), _f32(rng.standard_normal((d, C, P, P))), _f32(rng.standard_normal(d)))


def patch_bound(case: PatchCase) -> np.ndarray:
    """gamma_{K+1} (|W| |patch| + |b|) + half an ulp of the output, per output entry."""
    K = case.weight[0].size
    g = (K + 1) * U32 / (1 - (K + 1) * U32)
    mag = V.patchify(np.abs(case.images), case.weight.shape[2]) @ np.abs(case.weight).reshape(len(case.bias), -1).T
    return g * (mag + np.abs(case.bias)) + U32 * np.abs(V.patch_embed(case.images, case.weight, case.bias))


def check_patch_embed(impl, case: PatchCase):
    """Equal to W flatten_chw(patch) + b with patches in row-major grid order, within the float32 bound."""
    got = np.asarray(impl.patch_embed(case.images, case.weight, case.bias), dtype=np.float64)
    want = V.patch_embed(case.images, case.weight, case.bias)
    if got.shape != want.shape:
        raise AssertionError(f"{impl.name}: shape {got.shape}, expected (B, N, d) = {want.shape}; {case!r}")
    B = patch_bound(case)
    bad = ~(np.abs(got - want) <= B)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.abs(got - want) / B, 0)), bad.shape)
        raise AssertionError(f"{impl.name}: output {list(map(int, i))} = {got[i]!r}, spec {want[i]!r}, bound "
                             f"{B[i]:.3e}; {case!r}")


@dataclasses.dataclass(frozen=True)
class LossCase:
    u: np.ndarray
    v: np.ndarray
    logit_scale: float

    def __repr__(self):
        return f"LossCase(n={len(self.u)}, d={self.u.shape[1]}, logit_scale={self.logit_scale})"


@st.composite
def loss_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d = draw(st.integers(1, 8)), draw(st.integers(1, 16))
    u = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-3, 3, (n, 1))  # norms differ per row
    v = u * draw(st.sampled_from([0.0, 0.5])) + rng.standard_normal((n, d))  # matched pairs correlate or not
    ls = draw(st.sampled_from([0.0, float(np.log(1 / 0.07)), float(np.log(100.0)), -1.0]))
    return LossCase(_f32(u), _f32(v), float(np.float32(ls)))


def loss_bound(case: LossCase, loss: float) -> float:
    n, d = case.u.shape
    t = np.exp(case.logit_scale)
    lse = abs(loss) + t + np.log(n)  # |lse| <= |loss| + max |logit|
    return U32 * (2 * t * (2 * d + 8) + (n + 4) * (lse + 1))


def check_contrastive_loss(impl, case: LossCase):
    """Symmetric CE over t cos(u_i, v_j) with the matching pairs as targets, within the float32 bound."""
    got = float(impl.contrastive_loss(case.u, case.v, case.logit_scale))
    want = V.clip_loss(case.u, case.v, case.logit_scale)
    B = loss_bound(case, want)
    if not abs(got - want) <= B:
        raise AssertionError(f"{impl.name}: loss {got!r}, spec {want!r} (|diff| {abs(got - want):.3e} > bound "
                             f"{B:.3e}); {case!r}")


# ----------------------------------------------------------------------------
# adapters


def _torch_conv(images, weight, bias):
    """torch.nn.functional.conv2d in float32, stride = kernel, flattened as HF ViTPatchEmbeddings does."""
    import torch

    P = np.asarray(weight).shape[2]
    y = torch.nn.functional.conv2d(torch.tensor(np.asarray(images, np.float32)), torch.tensor(np.asarray(weight, np.float32)),
                                   torch.tensor(np.asarray(bias, np.float32)), stride=P)
    return y.flatten(2).transpose(1, 2).double().numpy()


def _torch_clip(u, v, logit_scale):
    """HF transformers modeling_clip.image_text_contrastive_loss on float32 logits built as CLIPModel does."""
    import torch
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    ut, vt = torch.tensor(np.asarray(u, np.float32)), torch.tensor(np.asarray(v, np.float32))
    ut, vt = ut / ut.norm(dim=-1, keepdim=True), vt / vt.norm(dim=-1, keepdim=True)
    logits = vt @ ut.T * torch.tensor(logit_scale, dtype=torch.float32).exp()
    return float(image_text_contrastive_loss(logits))


def _hwc_flatten(images, weight, bias):
    w = np.asarray(weight)
    return V.patchify(images, w.shape[2], order="hwc") @ w.reshape(w.shape[0], -1).T + bias


def _grid_column_major(images, weight, bias):
    x = np.asarray(images)
    return V.patch_embed(x.transpose(0, 1, 3, 2), np.asarray(weight).transpose(0, 1, 3, 2), bias)


def _no_bias(images, weight, bias):
    return V.patch_embed(images, weight, np.zeros_like(np.asarray(bias)))


def _one_direction(u, v, ls):
    from refimpl.losses import cross_entropy

    un, vn = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (np.asarray(u), np.asarray(v)))
    return cross_entropy(np.exp(ls) * vn @ un.T, np.arange(len(un)))


def _unnormalised(u, v, ls):
    from refimpl.losses import cross_entropy

    L = np.exp(ls) * np.asarray(v) @ np.asarray(u).T
    t = np.arange(len(L))
    return 0.5 * (cross_entropy(L, t) + cross_entropy(L.T, t))


def _scale_not_exponentiated(u, v, ls):
    return V.clip_loss(u, v, float(np.log(ls))) if ls > 0 else V.clip_loss(u, v, -30.0)


def _torch_available() -> bool:  # installed, not imported: importing torch costs seconds the runner may not need
    import importlib.util

    return importlib.util.find_spec("torch") is not None


REFIMPL_PATCH = PatchEmbedAdapter("refimpl.vision.patch_embed", V.patch_embed)
REFIMPL_CONV = PatchEmbedAdapter("refimpl.vision.conv2d_stride", V.conv2d_stride)
TORCH_CONV = PatchEmbedAdapter("torch conv2d float32 (HF ViTPatchEmbeddings)", _torch_conv)
REFIMPL_CLIP = ContrastiveAdapter("refimpl.vision.clip_loss", V.clip_loss)
# HF's CLIP loss is the peer properties.peers:hf_clip (importing transformers' CLIP takes seconds)
BUNDLED = [REFIMPL_PATCH, REFIMPL_CONV, REFIMPL_CLIP] + ([TORCH_CONV] if _torch_available() else [])

WRONG = {
    "flatten_hwc_with_conv_weights": PatchEmbedAdapter("wrong[flatten_hwc_with_conv_weights]", _hwc_flatten),
    "patch_grid_column_major": PatchEmbedAdapter("wrong[patch_grid_column_major]", _grid_column_major),
    "bias_dropped": PatchEmbedAdapter("wrong[bias_dropped]", _no_bias),
    "loss_one_direction": ContrastiveAdapter("wrong[loss_one_direction]", _one_direction),
    "embeddings_not_normalised": ContrastiveAdapter("wrong[embeddings_not_normalised]", _unnormalised),
    "logit_scale_used_as_t": ContrastiveAdapter("wrong[logit_scale_used_as_t]", _scale_not_exponentiated),
}

PROPERTIES = [
    Property("patch_embed_is_stride_p_conv", "patch_embed", check_patch_embed, lambda caps: patch_case(caps),
             "patch embedding = W flatten_chw(patch) + b, patches row-major, within the float32 dot-product bound",
             rejects=("flatten_hwc_with_conv_weights", "patch_grid_column_major", "bias_dropped")),
    Property("contrastive_loss_symmetric", "contrastive_loss", check_contrastive_loss, loss_case(),
             "CLIP loss: mean of the two cross-entropies over t cos(u_i, v_j), targets on the diagonal",
             rejects=("loss_one_direction", "embeddings_not_normalised", "logit_scale_used_as_t")),
]
