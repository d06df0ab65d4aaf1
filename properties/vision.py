"""Properties of ViT patch embeddings (kind "patch_embed"), CLIP's contrastive loss (kind
"contrastive_loss") and Swin's shifted-window attention (kind "swin_window_attention"), against
``refimpl.vision`` (docs/vision.md).

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

Swin adapter: ``swin_window_attention(x (B, H, W, C), w_qkv (C, 3C), b_qkv (3C,), w_out (C, C), b_out (C,),
bias_table ((2M-1)^2, heads), num_heads, window, shift) -> (B, H, W, C)``: roll by -shift, M x M windows,
per-head scores q.k / sqrt(hd) + B[rel(i, j)] with the other regions of a shifted window hidden, softmax,
values, output projection, roll back. Bound for float32 arithmetic (``swin_bound``; u = 2^-24,
gamma_n = n u / (1 - n u)): with hats the same products on absolute values (Q = |x||W_q| + |b_q| ...),
a score is within gamma_{C+hd+4} S, S = Q.K / sqrt(hd) + |B|; a softmax weight p_j moves by at most
p_j (2 max_j dS_j + (M^2 + 4) u); so the window output o = sum p_j v_j is within
(2 dS + gamma_{2M^2+2C+8}) sum p_j V_j, and the projected output within that times |W_o| plus
gamma_{C+1} |b_o|; a factor 2 spare and half an ulp of the output on top.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from refimpl import vision as V

from .core import Property
from .protocol import Capability, Kind
from .strategy_cache import sampled

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
    Kind("swin_window_attention", "Swin window attention with a cyclic shift, the shift mask and the relative "
                                  "position bias; compared with refimpl.vision.swin_window_attention",
         {"swin_window_attention": "swin_window_attention(x (B, H, W, C), w_qkv (C, 3C), b_qkv (3C,), w_out (C, C), "
                                   "b_out (C,), bias_table ((2M-1)^2, heads), *, num_heads, window, shift) -> (B, H, W, C)"},
         ("swin_window_attention",),
         {"non_square_images": Capability("accepts H != W (both multiples of the window)"),
          "shift_when_one_window": Capability("shifts (rolls and masks) even when one window spans the image's height "
                                              "or width; Swin's code and HF's SwinLayer then set the shift to 0"),
          "hides_with_neg_inf": Capability("a hidden key gets weight 0 whatever the scores (without it, cases keep every "
                                           "window's score spread below 30: HF's SwinLayer adds -100 instead of -inf, so "
                                           "a hidden key scoring 100 above a visible one would take the weight)")}),
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
class SwinAdapter:
    name: str
    swin_window_attention: Callable
    capabilities: frozenset = frozenset({"non_square_images", "shift_when_one_window", "hides_with_neg_inf"})
    kind: str = "swin_window_attention"


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
    P = draw(sampled([1, 2, 3, 4]))
    gh = draw(st.integers(1, 4))
    gw = draw(st.integers(1, 4)) if "non_square_images" in caps else gh
    B, C, d = draw(st.integers(1, 2)), draw(sampled([1, 3])), draw(st.integers(1, 5))
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
    v = u * draw(sampled([0.0, 0.5])) + rng.standard_normal((n, d))  # matched pairs correlate or not
    ls = draw(sampled([0.0, float(np.log(1 / 0.07)), float(np.log(100.0)), -1.0]))
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


@dataclasses.dataclass(frozen=True)
class SwinCase:
    x: np.ndarray
    w_qkv: np.ndarray
    b_qkv: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    table: np.ndarray
    num_heads: int
    window: int
    shift: int

    def args(self):
        return (self.x, self.w_qkv, self.b_qkv, self.w_out, self.b_out, self.table)

    def kwargs(self):
        return dict(num_heads=self.num_heads, window=self.window, shift=self.shift)

    def __repr__(self):
        return (f"SwinCase(x{self.x.shape}, heads={self.num_heads}, window={self.window}, shift={self.shift}, "
                f"max|x|={np.abs(self.x).max():.3g})")


@st.composite
def swin_case(draw, caps):
    """Windows M = 1..4, 1..3 windows per axis (non-square with the capability), every shift 0..M-1, C = heads hd;
    a shift > 0 with one window along an axis only with ``shift_when_one_window``."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    M = draw(st.integers(1, 4))
    shift = draw(st.integers(0, M - 1))
    lo = 1 if (shift == 0 or "shift_when_one_window" in caps) else 2
    gh = draw(st.integers(lo, 3))
    gw = draw(st.integers(lo, 3)) if "non_square_images" in caps else gh
    h, hd = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    C = h * hd
    wide = "hides_with_neg_inf" in caps
    x = rng.standard_normal((draw(st.integers(1, 2)), gh * M, gw * M, C)) * draw(
        st.sampled_from([0.1, 1.0, 3.0] if wide else [0.1, 1.0]))
    if draw(st.booleans()):  # asymmetric content: a transposed bias or a wrong roll shows
        x = x + np.linspace(0.0, 1.0, x.size).reshape(x.shape)
    w = rng.standard_normal((C, 4 * C)) / np.sqrt(C)
    b = 0.1 * rng.standard_normal(4 * C)
    c = SwinCase(_f32(x), _f32(w[:, :3 * C]), _f32(b[:3 * C]), _f32(w[:, 3 * C:]), _f32(b[3 * C:]),
                 _f32(rng.standard_normal(((2 * M - 1) ** 2, h))), h, M, shift)
    assume(wide or _score_spread(c) < 30.0)
    return c


def _score_spread(c: SwinCase) -> float:
    """Largest max - min of one query's scores (bias included, nothing hidden) over every window."""
    C, h, M = c.x.shape[3], c.num_heads, c.window
    x = _win(c.x, M, c.shift)
    q, k = ((x @ c.w_qkv[:, i * C:(i + 1) * C] + c.b_qkv[i * C:(i + 1) * C]).reshape(x.shape[:3] + (h, C // h))
            for i in range(2))
    sc = np.einsum("bwihd,bwjhd->bwhij", q, k) / np.sqrt(C // h)
    sc = sc + c.table[V.relative_position_index(M)].transpose(2, 0, 1)[None, None]
    return float(np.max(sc.max(axis=-1) - sc.min(axis=-1)))


def _gamma(n):
    return n * U32 / (1 - n * U32)


def _win(a, M, s):
    """(B, H, W, K) -> (B, windows, M^2, K) after the roll by -s (the spec's layout of the windows)."""
    B, H, W, K = a.shape
    a = np.roll(a, (-s, -s), axis=(1, 2))
    return a.reshape(B, H // M, M, W // M, M, K).transpose(0, 1, 3, 2, 4, 5).reshape(B, -1, M * M, K)


def swin_bound(c: SwinCase) -> np.ndarray:
    """Per output entry, the float32 bound of the module doc."""
    B, H, W, C = c.x.shape
    M, s, h = c.window, c.shift, c.num_heads
    hd = C // h
    xa = _win(np.abs(c.x), M, s)
    heads = lambda a: a.reshape(a.shape[:3] + (h, hd)).transpose(0, 1, 3, 2, 4)  # noqa: E731
    qh, kh, vh = (heads(xa @ np.abs(c.w_qkv[:, i * C:(i + 1) * C]) + np.abs(c.b_qkv[i * C:(i + 1) * C]))
                  for i in range(3))
    rel = np.abs(c.table)[V.relative_position_index(M)].transpose(2, 0, 1)  # (h, M^2, M^2)
    S = qh @ kh.transpose(0, 1, 2, 4, 3) / np.sqrt(hd) + rel[None, None]
    mask = V.shift_mask(H, W, M, s)[None, :, None]
    dS = _gamma(C + hd + 4) * np.max(np.where(mask, S, 0.0), axis=-1, keepdims=True)
    # the exact weights p, from the spec's own scores
    x = _win(c.x, M, s)
    q, k = (heads(x @ c.w_qkv[:, i * C:(i + 1) * C] + c.b_qkv[i * C:(i + 1) * C]) for i in range(2))
    sc = q @ k.transpose(0, 1, 2, 4, 3) / np.sqrt(hd) + c.table[V.relative_position_index(M)].transpose(2, 0, 1)[None, None]
    sc = np.where(mask, sc, -np.inf)
    p = np.exp(sc - sc.max(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    do = (2 * dS + _gamma(2 * M * M + 2 * C + 8)) * (p @ vh)  # (B, nW, h, M^2, hd)
    do = do.transpose(0, 1, 3, 2, 4).reshape(B, -1, M * M, C)
    bound = do @ np.abs(c.w_out) + _gamma(C + 1) * np.abs(c.b_out)
    bound = np.roll(bound.reshape(B, H // M, W // M, M, M, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, C),
                    (s, s), axis=(1, 2))
    out = V.swin_window_attention(*c.args(), **c.kwargs())
    return 2 * bound + U32 * np.abs(out)


def check_swin_window_attention(impl, c: SwinCase):
    """Equal to the spec's shifted-window attention within the float32 bound."""
    got = np.asarray(impl.swin_window_attention(*c.args(), **c.kwargs()), dtype=np.float64)
    want = V.swin_window_attention(*c.args(), **c.kwargs())
    if got.shape != want.shape:
        raise AssertionError(f"{impl.name}: shape {got.shape}, expected (B, H, W, C) = {want.shape}; {c!r}")
    Bd = swin_bound(c)
    bad = ~(np.abs(got - want) <= Bd)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.abs(got - want) / Bd, 0)), bad.shape)
        raise AssertionError(f"{impl.name}: output {list(map(int, i))} = {got[i]!r}, spec {want[i]!r}, bound "
                             f"{Bd[i]:.3e}; {c!r}")


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


def _hf_swin(x, w_qkv, b_qkv, w_out, b_out, table, *, num_heads, window, shift):
    """HF transformers ``SwinLayer`` (models/swin/modeling_swin.py), its attention sublayer alone (layernorm_before
    replaced by the identity, the MLP's output projection zeroed), run in float64 so that out - x recovers the
    attention output exactly; its eager attention still takes the softmax in float32 (within the kind's bound)."""
    import torch
    from transformers import SwinConfig
    from transformers.models.swin.modeling_swin import SwinLayer

    x = np.asarray(x, np.float64)
    B, H, W, C = x.shape
    cfg = SwinConfig(embed_dim=C, num_heads=[num_heads], depths=[1], window_size=window)
    layer = SwinLayer(cfg, dim=C, input_resolution=(H, W), num_heads=num_heads, drop_path_rate=0.0,
                      shift_size=shift).double().eval()
    layer.layernorm_before = torch.nn.Identity()
    a = layer.attention
    t = lambda y: torch.tensor(np.asarray(y, np.float64))  # noqa: E731
    with torch.no_grad():
        for i, lin in enumerate((a.q_proj, a.k_proj, a.v_proj)):
            lin.weight.copy_(t(np.asarray(w_qkv)[:, i * C:(i + 1) * C].T))
            lin.bias.copy_(t(np.asarray(b_qkv)[i * C:(i + 1) * C]))
        a.o_proj.weight.copy_(t(np.asarray(w_out).T))
        a.o_proj.bias.copy_(t(b_out))
        a.relative_position_bias.relative_position_bias_table.copy_(t(table))
        layer.mlp.fc2.weight.zero_(), layer.mlp.fc2.bias.zero_()
        out = layer(t(x).reshape(B, -1, C), (H, W))[0]
    return out.numpy().reshape(B, H, W, C) - x


def _swin_no_shift_mask(x, *a, window, shift=0, **kw):
    """Rolled windows attended whole: tokens from other regions of a shifted window leak in."""
    y = V.swin_window_attention(np.roll(x, (-shift, -shift), (1, 2)), *a, window=window, shift=0, **kw)
    return np.roll(y, (shift, shift), (1, 2))


def _swin_roll_not_undone(x, *a, window, shift=0, **kw):
    return np.roll(V.swin_window_attention(x, *a, window=window, shift=shift, **kw), (-shift, -shift), (1, 2))


def _swin_bias_transposed(x, w_qkv, b_qkv, w_out, b_out, table, **kw):
    """B[rel(j, i)] where B[rel(i, j)] belongs (the offset taken key minus query)."""
    idx = V.relative_position_index(kw["window"])
    perm = np.empty(np.asarray(table).shape[0], int)
    perm[idx.ravel()] = idx.T.ravel()
    return V.swin_window_attention(x, w_qkv, b_qkv, w_out, b_out, np.asarray(table)[perm], **kw)


def _swin_bias_dropped(x, w_qkv, b_qkv, w_out, b_out, table, **kw):
    return V.swin_window_attention(x, w_qkv, b_qkv, w_out, b_out, np.zeros_like(np.asarray(table)), **kw)


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
REFIMPL_SWIN = SwinAdapter("refimpl.vision.swin_window_attention", V.swin_window_attention)
# HF's layer is built per example (about 0.4 s each): run by tests/test_vision.py, not by the binder
HF_SWIN = SwinAdapter("HF SwinLayer attention (float64 layer, float32 softmax)", _hf_swin,
                      frozenset({"non_square_images"}))
# HF's CLIP loss is the peer properties.peers:hf_clip (importing transformers' CLIP takes seconds)
BUNDLED = [REFIMPL_PATCH, REFIMPL_CONV, REFIMPL_CLIP, REFIMPL_SWIN] + ([TORCH_CONV] if _torch_available() else [])

WRONG = {
    "flatten_hwc_with_conv_weights": PatchEmbedAdapter("wrong[flatten_hwc_with_conv_weights]", _hwc_flatten),
    "patch_grid_column_major": PatchEmbedAdapter("wrong[patch_grid_column_major]", _grid_column_major),
    "bias_dropped": PatchEmbedAdapter("wrong[bias_dropped]", _no_bias),
    "loss_one_direction": ContrastiveAdapter("wrong[loss_one_direction]", _one_direction),
    "embeddings_not_normalised": ContrastiveAdapter("wrong[embeddings_not_normalised]", _unnormalised),
    "logit_scale_used_as_t": ContrastiveAdapter("wrong[logit_scale_used_as_t]", _scale_not_exponentiated),
    "swin_shift_without_mask": SwinAdapter("wrong[swin_shift_without_mask]", _swin_no_shift_mask),
    "swin_roll_not_undone": SwinAdapter("wrong[swin_roll_not_undone]", _swin_roll_not_undone),
    "swin_bias_index_transposed": SwinAdapter("wrong[swin_bias_index_transposed]", _swin_bias_transposed),
    "swin_bias_dropped": SwinAdapter("wrong[swin_bias_dropped]", _swin_bias_dropped),
}

PROPERTIES = [
    Property("patch_embed_is_stride_p_conv", "patch_embed", check_patch_embed, lambda caps: patch_case(caps),
             "patch embedding = W flatten_chw(patch) + b, patches row-major, within the float32 dot-product bound",
             rejects=("flatten_hwc_with_conv_weights", "patch_grid_column_major", "bias_dropped")),
    Property("contrastive_loss_symmetric", "contrastive_loss", check_contrastive_loss, loss_case(),
             "CLIP loss: mean of the two cross-entropies over t cos(u_i, v_j), targets on the diagonal",
             rejects=("loss_one_direction", "embeddings_not_normalised", "logit_scale_used_as_t")),
    Property("swin_shifted_window_attention", "swin_window_attention", check_swin_window_attention,
             lambda caps: swin_case(caps),
             "cyclic shift, windows, relative position bias, the shift mask, roll back: equal to the spec within the "
             "float32 bound", rejects=("swin_shift_without_mask", "swin_roll_not_undone", "swin_bias_index_transposed",
                                       "swin_bias_dropped")),
]
