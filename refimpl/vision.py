"""Vision transformers: patches, the ViT embedding, position-embedding interpolation, ViT parameter
counts, Swin's shifted-window attention and patch merging, and CLIP's contrastive loss
(docs/vision.md).

Patches (``patchify``): images (B, C, H, W) (channels first, as torch and HF ``pixel_values``), P
dividing H and W, N = (H / P)(W / P) patches in row-major order over the (H/P, W/P) grid. Each patch
is flattened ``order="chw"`` (C, P, P), the layout of a torch Conv2d weight, or ``"hwc"`` (P, P, C),
the einops / big_vision layout.

Patch embedding (``patch_embed``): x_i = W flatten(patch_i) + b with W (d, C, P, P) a torch Conv2d
weight; equal to the convolution with kernel P and stride P (``conv2d_stride``, written as the
convolution sum). ViT embedding (``vit_embeddings``): z = [cls; x_1 .. x_N] + E_pos, E_pos (N + 1, d)
(HF ``ViTEmbeddings``).

Interpolating E_pos to a new grid (``interpolate_pos_embed``): the class position is kept, the
(h, w) grid of patch positions is resized to (h', w') by bicubic interpolation with a = -0.75,
half-pixel centres (src = (dst + 0.5) in / out - 0.5) and edge indices clamped: torch
``interpolate(mode="bicubic", align_corners=False)`` as HF ``ViTEmbeddings.interpolate_pos_encoding``
calls it.

ViT parameters (``vit_params``): patch embedding C P^2 d + d, class token d, positions (N + 1) d;
per layer 4 (d^2 + d) attention (with biases), 2 d d_mlp + d_mlp + d MLP, 2 LayerNorms (4 d);
a final LayerNorm (2 d); a classification head d n_classes + n_classes when n_classes > 0.

Swin (``swin_window_attention``, on x (B, H, W, C), M the window, s the shift, H and W multiples of
M): roll x by (-s, -s); split into (H/M)(W/M) windows of M^2 tokens; in each window multi-head
attention with scores q.k / sqrt(hd) + B[rel(i, j)], B the relative position bias table
((2M - 1)^2, heads) indexed by the offset (dy + M - 1)(2M - 1) + (dx + M - 1); with s > 0, keys from
another region of the rolled image are hidden (the shift mask: regions [0, H - M), [H - M, H - s),
[H - s, H) in each axis); merge the windows and roll back by (s, s). Scores: B HW M^2 per head
against (HW)^2 for global attention. HF ``SwinLayer`` hides with an additive -100 instead of -inf, and
(as Swin's own ``SwinTransformerBlock``) sets the shift to 0 when min(H, W) <= M; here a shift is
applied whenever it is asked for (pass shift=0 for that rule).
Patch merging: concat x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (4C), LayerNorm,
then a linear map to 2C without bias (HF ``SwinPatchMerging``).

CLIP loss (``clip_loss``): with unit-normalised embeddings u_i (images) and v_i (texts) and
t = exp(logit_scale), logits L = t V U^T (texts x images); loss = (CE(L, diag) + CE(L^T, diag)) / 2,
the symmetric cross-entropy with the matching pair as the target (HF transformers 5.25
``modeling_clip.image_text_contrastive_loss``; no clamp of logit_scale: the original training code
clamps t at 100).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float_array, check_budget, choice, count, finite_result, positive_int, real_number
from ._validate import vision as _V
from .losses import cross_entropy
from .norms import layer_norm
from .softmax import softmax

ORDERS = ("chw", "hwc")


def num_patches(height: int, width: int, patch_size: int) -> int:
    """N = (H / P)(W / P) = H W / P^2; P must divide H and W (224, 224, 16 -> 196)."""
    H, W, P = _V.grid_of_patches(height, width, patch_size)
    return (H // P) * (W // P)


def patchify(images, patch_size: int, *, order: str = "chw") -> np.ndarray:
    """(B, C, H, W) -> (B, N, C P^2), patches row-major over the grid, each flattened in ``order``."""
    x, P = _V.images_and_patch(images, patch_size)
    choice(order, "order", ORDERS)
    return _patchify(x, P, order)


def _patchify(x, P, order="chw"):
    B, C, H, W = x.shape
    t = x.reshape(B, C, H // P, P, W // P, P)  # b c gh p gw q
    t = t.transpose(0, 2, 4, 1, 3, 5) if order == "chw" else t.transpose(0, 2, 4, 3, 5, 1)
    return t.reshape(B, (H // P) * (W // P), C * P * P).copy()


def patch_embed(images, weight, bias) -> np.ndarray:
    """x_i = W flatten_chw(patch_i) + b: (B, C, H, W) -> (B, N, d); weight (d, C, P, P), bias (d,)."""
    x = as_float_array(images, "images", ndim=4, shape_doc="(B, C, H, W)", min_size={0: 1, 1: 1, 2: 1, 3: 1})
    w, b = _V.conv_weight(weight, bias, x.shape)
    patches = _patchify(x, w.shape[2])
    d, C, P, _ = w.shape
    with np.errstate(over="ignore", invalid="ignore"):
        out = patches @ w.reshape(d, C * P * P).T + b
    return finite_result(out, "the embedding", "images, weight, bias")


def conv2d_stride(images, weight, bias) -> np.ndarray:
    """The convolution y[o, r, c] = b_o + sum_{ch, u, v} W[o, ch, u, v] x[ch, r P + u, c P + v] with
    kernel P = stride P, as (B, (H/P)(W/P), d) (the layout HF takes after ``flatten(2).transpose(1, 2)``)."""
    x = as_float_array(images, "images", ndim=4, shape_doc="(B, C, H, W)", min_size={0: 1, 1: 1, 2: 1, 3: 1})
    w, b = _V.conv_weight(weight, bias, x.shape)
    P = w.shape[2]
    B, C, H, W = x.shape
    out = np.broadcast_to(b[None, :, None, None], (B, w.shape[0], H // P, W // P)).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for u in range(P):  # one kernel tap at a time: the stride-P sampled image times W[:, :, u, v]
            for v in range(P):
                out += np.einsum("bchw,oc->bohw", x[:, :, u::P, v::P], w[:, :, u, v])
    return finite_result(out.reshape(B, w.shape[0], (H // P) * (W // P)).transpose(0, 2, 1).copy(), "the convolution",
                         "images, weight, bias")


def vit_embeddings(images, weight, bias, cls_token, pos_embed) -> np.ndarray:
    """z = [cls; patch_embed(images)] + pos_embed: (B, N + 1, d); cls_token (d,), pos_embed (N + 1, d)."""
    x = patch_embed(images, weight, bias)
    B, N, d = x.shape
    cls = as_float_array(cls_token, "cls_token", shape=(d,), shape_doc="(d,)")
    pos = as_float_array(pos_embed, "pos_embed", shape=(N + 1, d), shape_doc="(N + 1, d)")
    z = np.concatenate([np.broadcast_to(cls, (B, 1, d)), x], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        return finite_result(z + pos, "the embedding", "images, cls_token, pos_embed")


A_CUBIC = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights (a = -0.75) of the 4 neighbours at offsets -1, 0, 1, 2 of t in [0, 1)."""
    a = A_CUBIC

    def near(s):  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _resize_axis(x: np.ndarray, axis: int, out: int) -> np.ndarray:
    n = x.shape[axis]
    src = (np.arange(out) + 0.5) * (n / out) - 0.5
    f = np.floor(src)
    w = _cubic_weights(src - f)  # (out, 4)
    idx = np.clip(f.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
    g = np.take(x, idx, axis=axis)  # axis replaced by (out, 4)
    shape = [1] * g.ndim
    shape[axis], shape[axis + 1] = out, 4
    return (g * w.reshape(shape)).sum(axis=axis + 1)


def bicubic_resize(grid, size: tuple) -> np.ndarray:
    """(h, w, d) -> (h', w', d) by separable bicubic interpolation (a = -0.75, half-pixel centres,
    clamped edges), torch ``interpolate(mode="bicubic", align_corners=False)`` with ``size``."""
    return _bicubic(grid, "grid", size, "size")


def _bicubic(grid, gname, size, sname):
    g = as_float_array(grid, gname, ndim=3, shape_doc="(h, w, d)", min_size={0: 1, 1: 1})
    h, w = _V.grid_size(size, sname)
    with np.errstate(over="ignore", invalid="ignore"):
        out = _resize_axis(_resize_axis(g, 0, h), 1, w)
    return finite_result(out, "the interpolation", gname)


def interpolate_pos_embed(pos_embed, old_grid: tuple, new_grid: tuple) -> np.ndarray:
    """(1 + h w, d) -> (1 + h' w', d): the class position kept, the patch grid resized bicubically."""
    pos = as_float_array(pos_embed, "pos_embed", ndim=2, shape_doc="(1 + h w, d)")
    h, w = _V.grid_size(old_grid, "old_grid")
    _V.pos_embed_grid(pos, old_grid, h, w)
    grid = _bicubic(pos[1:].reshape(h, w, pos.shape[1]), "pos_embed", new_grid, "new_grid")  # d = 0 too (not -1)
    return np.concatenate([pos[:1], grid.reshape(grid.shape[0] * grid.shape[1], pos.shape[1])], axis=0)


def vit_params(*, image_size: int = 224, patch_size: int = 16, channels: int = 3, d_model: int = 768,
               n_layers: int = 12, d_mlp: int = 3072, n_classes: int = 0) -> int:
    """ViT parameters (module docstring): embeddings, n_layers encoder layers with biases and two
    LayerNorms, the final LayerNorm, and a head of n_classes (0: none). No pooler."""
    d, L, m = positive_int(d_model, "d_model"), positive_int(n_layers, "n_layers"), positive_int(d_mlp, "d_mlp")
    C = positive_int(channels, "channels")
    S, P = _V.vit_sizes(image_size, patch_size)
    N = (S // P) ** 2
    k = count(n_classes, "n_classes")
    embed = C * P * P * d + d + d + (N + 1) * d
    layer = 4 * (d * d + d) + (2 * d * m + m + d) + 4 * d
    return embed + L * layer + 2 * d + (d * k + k if k else 0)


# --- Swin ---------------------------------------------------------------------------------


def relative_position_index(window: int) -> np.ndarray:
    """(M^2, M^2) int64: (dy + M - 1)(2M - 1) + (dx + M - 1) for tokens i, j of an M x M window (row-major);
    M <= 64 (the table has M^4 entries)."""
    M = count(window, "window", minimum=1, maximum=64)
    yy, xx = np.divmod(np.arange(M * M), M)
    dy, dx = yy[:, None] - yy[None, :], xx[:, None] - xx[None, :]
    return (dy + M - 1) * (2 * M - 1) + (dx + M - 1)


def shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """bool (windows, M^2, M^2): True where key j is visible to query i in the rolled image (same region)."""
    H, W, M, s = _V.shifted_window(height, width, window, shift)
    check_budget("height, width, window", nbytes=H * W * (M * M + 24) + 8 * (H + W),
                 what=f"a shift mask of {H * W // (M * M)} windows of ({M * M}, {M * M})")

    def regions(n):
        r = np.zeros(n, np.int64)
        if s:
            r[n - M:n - s], r[n - s:] = 1, 2
        return r

    label = regions(H)[:, None] * 3 + regions(W)[None, :]
    win = label.reshape(H // M, M, W // M, M).transpose(0, 2, 1, 3).reshape((H // M) * (W // M), M * M)
    return win[:, :, None] == win[:, None, :]


def _windows(x, M):
    B, H, W, C = x.shape
    return x.reshape(B, H // M, M, W // M, M, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, (H // M) * (W // M), M * M, C)


def _unwindows(t, B, H, W, M):
    C = t.shape[-1]
    return t.reshape(B, H // M, W // M, M, M, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def swin_window_attention(x, w_qkv, b_qkv, w_out, b_out, bias_table, *, num_heads: int, window: int,
                          shift: int = 0) -> np.ndarray:
    """Shifted-window multi-head attention on x (B, H, W, C) (module docstring); w_qkv (C, 3C) with q, k, v
    stacked in that order, b_qkv (3C,), w_out (C, C), b_out (C,), bias_table ((2M - 1)^2, heads)."""
    x = as_float_array(x, "x", ndim=4, shape_doc="(B, H, W, C)", min_size={0: 1, 1: 1, 2: 1, 3: 1})
    B, H, W, C = x.shape
    h = _V.heads_of(C, num_heads)
    M = positive_int(window, "window")
    mask = shift_mask(H, W, M, shift)
    s = int(shift)
    wqkv = as_float_array(w_qkv, "w_qkv", shape=(C, 3 * C), shape_doc="(C, 3C)")
    bqkv = as_float_array(b_qkv, "b_qkv", shape=(3 * C,), shape_doc="(3C,)")
    wo = as_float_array(w_out, "w_out", shape=(C, C), shape_doc="(C, C)")
    bo = as_float_array(b_out, "b_out", shape=(C,), shape_doc="(C,)")
    table = as_float_array(bias_table, "bias_table", shape=((2 * M - 1) ** 2, h), shape_doc="((2M - 1)^2, heads)")
    hd, nW = C // h, (H // M) * (W // M)
    with np.errstate(over="ignore", invalid="ignore"):
        t = _windows(np.roll(x, (-s, -s), axis=(1, 2)), M) @ wqkv + bqkv  # (B, nW, M^2, 3C)
        q, k, v = (t[..., i * C:(i + 1) * C].reshape(B, nW, M * M, h, hd).transpose(0, 1, 3, 2, 4) for i in range(3))
        scores = q @ k.transpose(0, 1, 2, 4, 3) / np.sqrt(hd)  # (B, nW, h, M^2, M^2)
        scores = scores + table[relative_position_index(M)].transpose(2, 0, 1)[None, None]
        scores = np.where(mask[None, :, None], scores, -np.inf)
        o = (softmax(scores) @ v).transpose(0, 1, 3, 2, 4).reshape(B, nW, M * M, C) @ wo + bo
    out = np.roll(_unwindows(o, B, H, W, M), (s, s), axis=(1, 2))
    return finite_result(out, "the attention output", "x, w_qkv, w_out")


def swin_attention_scores(height: int, width: int, window: int, *, batch: int = 1) -> int:
    """Scores computed per head: batch x (H W / M^2) windows x M^4 = batch H W M^2."""
    H, W, M = _V.window_grid(height, width, window)
    return positive_int(batch, "batch") * H * W * M * M


def patch_merging(x, norm_weight, norm_bias, w_reduction, *, eps: float = 1e-5) -> np.ndarray:
    """(B, H, W, C) -> (B, H/2, W/2, 2C): [x00, x10, x01, x11] (4C), LayerNorm, @ w_reduction (4C, 2C)."""
    x = as_float_array(x, "x", ndim=4, shape_doc="(B, H, W, C)", min_size={0: 1, 1: 1, 2: 1, 3: 1})
    B, H, W, C = x.shape
    _V.even_grid(x)
    wr = as_float_array(w_reduction, "w_reduction", shape=(4 * C, 2 * C), shape_doc="(4C, 2C)")
    cat = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    g = as_float_array(norm_weight, "norm_weight", shape=(4 * C,), shape_doc="(4C,)")
    b = as_float_array(norm_bias, "norm_bias", shape=(4 * C,), shape_doc="(4C,)")
    y = layer_norm(cat, g, b, eps=eps)
    with np.errstate(over="ignore", invalid="ignore"):
        return finite_result(y @ wr, "the merged patches", "x, w_reduction")


# --- CLIP -----------------------------------------------------------------------------------


def clip_loss(image_embeds, text_embeds, logit_scale: float) -> float:
    """(CE(t V U^T, diag) + CE(t U V^T, diag)) / 2 with u, v the unit-normalised rows, t = exp(logit_scale)."""
    u = as_float_array(image_embeds, "image_embeds", ndim=2, shape_doc="(n, d)", min_size={0: 1, 1: 1})
    v = as_float_array(text_embeds, "text_embeds", shape=u.shape, shape_doc="(n, d), as image_embeds")
    ls = real_number(logit_scale, "logit_scale", maximum=700.0)
    mu, mv = _V.nonzero_rows(u, v)
    u, v = u / mu, v / mv  # rescaled first, so the norms neither overflow nor underflow
    u, v = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    logits = np.exp(ls) * (v @ u.T)  # texts x images
    target = np.arange(u.shape[0])
    return 0.5 * (cross_entropy(logits, target) + cross_entropy(logits.T, target))


__all__ = ["num_patches", "patchify", "patch_embed", "conv2d_stride", "vit_embeddings", "bicubic_resize",
           "interpolate_pos_embed", "vit_params", "relative_position_index", "shift_mask", "swin_window_attention",
           "swin_attention_scores", "patch_merging", "clip_loss", "ORDERS"]
