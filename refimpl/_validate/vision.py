"""The vision checks: ``refimpl.vision`` (patches, ViT, Swin, CLIP), ``refimpl.vision_objectives`` (DeiT, MAE,
DINO) and ``refimpl.receptive_field``. Classes are passed in; this module imports only NumPy and its siblings."""

from __future__ import annotations

import numpy as np

from .arrays import as_float_array, int_array
from .scalars import count, fail, instance, positive_int


# ----------------------------------------------------------------------------
# refimpl.vision


def images_and_patch(images, patch_size) -> tuple:
    """(images (B, C, H, W) float64, each axis >= 1; P) with P a positive divisor of H and W."""
    x = as_float_array(images, "images", ndim=4, shape_doc="(B, C, H, W)", min_size={0: 1, 1: 1, 2: 1, 3: 1})
    P = positive_int(patch_size, "patch_size")
    if x.shape[2] % P or x.shape[3] % P:
        fail("patch_size", f"a divisor of H = {x.shape[2]} and W = {x.shape[3]}", str(P))
    return x, P


def grid_of_patches(height, width, patch_size) -> tuple:
    """(H, W, P): positive, P dividing H and W."""
    H, W, P = positive_int(height, "height"), positive_int(width, "width"), positive_int(patch_size, "patch_size")
    if H % P or W % P:
        fail("patch_size", f"a divisor of height = {H} and width = {W}", str(P))
    return H, W, P


def conv_weight(weight, bias, image_shape: tuple) -> tuple:
    """weight (d, C, P, P) and bias (d,) for images of ``image_shape`` (B, C, H, W): the patch size is weight's,
    so an H or W it does not divide names both (the callers have no ``patch_size``)."""
    C, H, W = image_shape[1:]
    w = as_float_array(weight, "weight", ndim=4, shape_doc="(d, C, P, P)", min_size={0: 1, 2: 1, 3: 1})
    if w.shape[1] != C or w.shape[2] != w.shape[3]:
        fail("weight", f"shape (d, C, P, P) with C = {C}", str(w.shape))
    P = w.shape[2]
    if H % P or W % P:
        fail("images, weight", f"H and W divisible by weight's patch size P = {P}", f"(H, W) = ({H}, {W})")
    b = as_float_array(bias, "bias", shape=(w.shape[0],), shape_doc="(d,)")
    return w, b


def grid_size(x, name: str) -> tuple:
    """A grid size: a tuple (h, w) of positive ints."""
    if not isinstance(x, tuple) or len(x) != 2:
        fail(name, "a tuple (h, w)", repr(x), error=TypeError)
    return positive_int(x[0], name), positive_int(x[1], name)


def pos_embed_grid(pos: np.ndarray, old_grid, h: int, w: int) -> None:
    """pos_embed (1 + h w, d) for the grid (h, w)."""
    if pos.shape[0] != 1 + h * w:
        fail("pos_embed", f"1 + h w = {1 + h * w} rows for old_grid {old_grid}", str(pos.shape[0]))


def vit_sizes(image_size, patch_size) -> tuple:
    """(S, P): positive, P dividing S."""
    P, S = positive_int(patch_size, "patch_size"), positive_int(image_size, "image_size")
    if S % P:
        fail("patch_size", f"a divisor of image_size = {S}", str(P))
    return S, P


def window_grid(height, width, window) -> tuple:
    """(H, W, M): positive, the window M dividing H and W."""
    H, W, M = positive_int(height, "height"), positive_int(width, "width"), positive_int(window, "window")
    return _window_divides(H, W, M)


def _window_divides(H, W, M):
    if H % M or W % M:
        fail("window", f"a divisor of height = {H} and width = {W}", str(M))
    return H, W, M


def shifted_window(height, width, window, shift) -> tuple:
    """(H, W, M, s): a window grid and a shift 0 <= s < M."""
    H, W, M = positive_int(height, "height"), positive_int(width, "width"), positive_int(window, "window")
    s = count(shift, "shift")
    if s >= M:  # a bound set by another argument: the message names both
        fail("shift, window", f"0 <= shift < window = {M}", f"shift = {s}")
    return _window_divides(H, W, M) + (s,)


def heads_of(C: int, num_heads) -> int:
    """A positive number of heads dividing the C channels."""
    h = positive_int(num_heads, "num_heads")
    if C % h:
        fail("num_heads", f"a divisor of C = {C}", str(h))
    return h


def even_grid(x: np.ndarray) -> None:
    """x (B, H, W, C) with H and W even (patch merging takes 2 x 2 neighbours)."""
    if x.shape[1] % 2 or x.shape[2] % 2:
        fail("x", "even H and W", f"shape {x.shape}")


def nonzero_rows(u: np.ndarray, v: np.ndarray) -> tuple:
    """(max |u_i|, max |v_i|) per row, each > 0 (a zero embedding has no direction)."""
    mu, mv = np.abs(u).max(axis=1, keepdims=True), np.abs(v).max(axis=1, keepdims=True)
    if not (mu > 0).all() or not (mv > 0).all():
        fail("image_embeds, text_embeds", "a non-zero norm for every embedding", "a zero one")
    return mu, mv


# ----------------------------------------------------------------------------
# refimpl.vision_objectives


def class_labels(labels, B: int, K: int) -> np.ndarray:
    """labels (B,): class indices in [0, K)."""
    y = int_array(labels, "labels", shape=(B,))
    if (y < 0).any() or (y >= K).any():
        fail("labels", f"class indices in [0, {K})", f"values from {y.min()} to {y.max()}")
    return y


def seed_or_noise(seed, noise) -> None:
    """Exactly one source of randomness (it is explicit)."""
    if (seed is None) == (noise is None):
        fail("seed, noise", "exactly one (randomness is explicit)", "both" if seed is not None else "neither")


def dino_views(s: np.ndarray, t: np.ndarray, V: int) -> int:
    """student_output (n_crops B, K) and teacher_output (2 B, K), B >= 1; returns B."""
    if t.shape[0] % 2 or t.shape[0] == 0 or s.shape[0] != V * (t.shape[0] // 2):
        fail("student_output, teacher_output, n_crops", "(n_crops B, K) and (2 B, K) with B >= 1",
             f"{s.shape} and {t.shape} with n_crops = {V}")
    return t.shape[0] // 2


def schedule_step(step, total_steps) -> tuple:
    """(i, n): 0 <= step < total_steps, total_steps >= 1."""
    n = count(total_steps, "total_steps", minimum=1)
    i = count(step, "step")
    if i >= n:  # a bound set by another argument: the message names both
        fail("step, total_steps", f"step < total_steps = {n}", str(i))
    return i, n


# ----------------------------------------------------------------------------
# refimpl.receptive_field


def layer_count(layers, n_masks: int | None) -> int:
    """With one mask (``n_masks`` None), the number of layers (required); with ``n_masks`` masks, None or
    their number."""
    if n_masks is None:
        if layers is None:
            fail("layers", "the number of layers for a single mask", "None", error=TypeError)
        return positive_int(layers, "layers")
    if layers is not None and positive_int(layers, "layers") != n_masks:
        fail("layers", f"None or the number of masks ({n_masks})", str(layers))
    return n_masks


def mask_list(masks, mask_cls) -> list:
    """One mask per layer, each a ``mask_cls`` (refimpl.masks.Mask), at least one."""
    if not masks:
        fail("mask", "at least one layer's mask", "an empty sequence")
    for i, m in enumerate(masks):
        instance(m, f"mask[{i}]", mask_cls, "refimpl.masks.Mask")
    return list(masks)


def position(i, n) -> tuple:
    """(i, n): a position 0 <= i < n (n defaults to i + 1)."""
    i = positive_int(i, "i", allow_zero=True)
    n = i + 1 if n is None else positive_int(n, "n")
    if i >= n:
        fail("i", f"a position < n = {n}", str(i))
    return i, n


def interval_row(row: np.ndarray, i: int, layers) -> np.ndarray:
    """Position i's receptive field (its sorted positions): non-empty and an interval."""
    if row.size == 0:
        fail("mask", "every position to see a key", f"position {i} seeing nothing after {layers} layers")
    if row.size != row[-1] - row[0] + 1:
        fail("mask", f"an interval as position {i}'s receptive field", str(row.tolist()))
    return row
