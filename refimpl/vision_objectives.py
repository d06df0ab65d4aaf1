"""Training objectives of vision transformers: DeiT's distillation token, MAE's random masking, DINO's
self-distillation target (docs/vision.md#deit-a-distillation-token,
docs/vision.md#mae-masking-three-quarters-of-the-patches, docs/vision.md#dino-a-centred-sharpened-teacher).

DeiT (Touvron et al. 2021; facebookresearch/deit ``losses.py`` ``DistillationLoss``, commit 7e160fe;
transformers 5.25.0 ``models/deit/modeling_deit.py``): the input sequence is
z = [cls; dist; x_1 .. x_N] + E_pos with E_pos (N + 2, d) (``deit_embeddings``). Two heads read the
final cls and dist tokens; the training loss (``deit_loss``) is

    (1 - alpha) CE(head(cls), y) + alpha D,
    hard: D = CE(head_dist(dist), argmax_k teacher_k)
    soft: D = tau^2 / (B K) sum_b KL(softmax(teacher_b / tau) || softmax(head_dist(dist)_b / tau))

(alpha = 0.5 by default; the soft term is divided by B K, every logit, as DeiT's code does), and at
inference the two heads' logits are averaged (``deit_inference_logits``; HF
``DeiTForImageClassificationWithTeacher``: (cls_logits + distillation_logits) / 2).

MAE (He et al. 2022; facebookresearch/mae ``models_mae.py`` ``MaskedAutoencoderViT.random_masking``,
commit efb2a80): per sample, uniform noise over the L patches, ids_shuffle = argsort(noise) (ascending:
small noise is kept), ids_restore = argsort(ids_shuffle); the first len_keep = int(L (1 - mask_ratio))
of the shuffled patches are kept (in shuffled order); mask = 1 for removed patches, 0 for kept, in the
original order. Randomness only through ``seed`` (numpy ``default_rng(seed).random((N, L))``) or an
explicit ``noise`` array (then equal to MAE's code given the same noise).

DINO (Caron et al. 2021; facebookresearch/dino ``main_dino.py`` ``DINOLoss``, commit 7c446df): the
teacher's outputs are centred and sharpened, q = softmax((t - c) / tau_t) (tau_t = 0.04 after warm-up),
the students' are log-softmaxed at tau_s = 0.1, and the loss averages the cross-entropies
sum_k -q_k log p_k over every (teacher view iq, student view v) pair with v != iq, each averaged over the
batch. The centre follows the teacher's batch mean, c <- m c + (1 - m) mean_b t_b (m = 0.9), after the
loss (``dino_center_update``); the teacher's weights follow the student's, theta_t <- lam theta_t +
(1 - lam) theta_s (``ema_update``, lam from 0.996 to 1 on a cosine schedule, ``dino_momentum``).
Centring keeps one dimension from dominating; sharpening (tau_t < tau_s) keeps the target from being
uniform: together they prevent collapse.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import as_float_array, check_budget, choice, count, finite_result, positive_float, real_number
from ._validate import layers as _L
from ._validate import vision as _V
from .losses import cross_entropy
from .softmax import logsumexp, softmax
from .vision import patch_embed

DISTILLATION_TYPES = ("hard", "soft")


# --- DeiT ------------------------------------------------------------------------------------


def deit_embeddings(images, weight, bias, cls_token, dist_token, pos_embed) -> np.ndarray:
    """z = [cls; dist; patch_embed(images)] + pos_embed: (B, N + 2, d); cls_token, dist_token (d,), pos_embed (N + 2, d)."""
    x = patch_embed(images, weight, bias)
    B, N, d = x.shape
    cls = as_float_array(cls_token, "cls_token", shape=(d,), shape_doc="(d,)")
    dist = as_float_array(dist_token, "dist_token", shape=(d,), shape_doc="(d,)")
    pos = as_float_array(pos_embed, "pos_embed", shape=(N + 2, d), shape_doc=f"(N + 2, d) = ({N + 2}, {d})")
    tokens = np.concatenate([np.broadcast_to(cls, (B, 1, d)), np.broadcast_to(dist, (B, 1, d)), x], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        return finite_result(tokens + pos, "an embedding", "images, weight, cls_token, dist_token, pos_embed")


def deit_inference_logits(cls_logits, dist_logits) -> np.ndarray:
    """(cls_logits + dist_logits) / 2, both (B, K)."""
    a = as_float_array(cls_logits, "cls_logits", ndim=2)
    b = as_float_array(dist_logits, "dist_logits", shape=a.shape, shape_doc="(B, K) of cls_logits")
    return a / 2 + b / 2  # halves first: no overflow for logits near float64's maximum


def deit_loss(cls_logits, dist_logits, labels, teacher_logits, *, distillation_type: str = "hard",
              alpha: float = 0.5, tau: float = 1.0) -> float:
    """(1 - alpha) CE(cls_logits, labels) + alpha D (module doc); logits (B, K), labels (B,) class indices."""
    a = as_float_array(cls_logits, "cls_logits", ndim=2, min_size={0: 1, 1: 1})
    b = as_float_array(dist_logits, "dist_logits", shape=a.shape, shape_doc="(B, K) of cls_logits")
    t = as_float_array(teacher_logits, "teacher_logits", shape=a.shape, shape_doc="(B, K) of cls_logits")
    y = _V.class_labels(labels, *a.shape)
    choice(distillation_type, "distillation_type", DISTILLATION_TYPES)
    alpha = real_number(alpha, "alpha", minimum=0.0, maximum=1.0)
    base = _renamed_ce(a, y, "cls_logits")
    if distillation_type == "hard":
        dist = _renamed_ce(b, np.argmax(t, axis=1), "dist_logits, teacher_logits")  # argmax: the first of tied maxima
    else:
        tau = positive_float(tau, "tau")
        with np.errstate(over="ignore", invalid="ignore"):
            ls, lt = b / tau, t / tau
        ls = finite_result(ls, "dist_logits / tau", "dist_logits, tau")
        lt = finite_result(lt, "teacher_logits / tau", "teacher_logits, tau")
        log_p = ls - logsumexp(ls, axis=1)[:, None]
        log_q = lt - logsumexp(lt, axis=1)[:, None]
        kl = np.sum(np.exp(log_q) * (log_q - log_p))  # KL(q || p), summed over the batch and the classes
        dist = float(kl) * tau * tau / a.size
    return finite_result((1.0 - alpha) * base + alpha * dist, "the loss", "cls_logits, dist_logits, teacher_logits, tau")


def _renamed_ce(logits, targets, names: str) -> float:
    """cross_entropy, a refusal naming the caller's arguments instead of ``logits``."""
    with _L.renamed(_L.prefix("logits", names), errors=(ValueError,)):
        return cross_entropy(logits, targets)


# --- MAE -------------------------------------------------------------------------------------


def mae_random_masking(x, mask_ratio: float = 0.75, *, seed=None, noise=None):
    """MAE's per-sample random masking of x (N, L, D) (module doc). Exactly one of ``seed`` and ``noise`` (N, L).
    Returns (x_masked (N, len_keep, D), mask (N, L) float 0 keep / 1 remove, ids_restore (N, L) int64)."""
    x = as_float_array(x, "x", ndim=3, shape_doc="(N, L, D)")
    N, L, D = x.shape
    r = real_number(mask_ratio, "mask_ratio", minimum=0.0, maximum=1.0, max_open=True)
    _V.seed_or_noise(seed, noise)
    if noise is None:
        check_budget("x", shape=(N, L), what="the noise")
        noise = np.random.default_rng(count(seed, "seed", maximum=None)).random((N, L))
    else:
        noise = as_float_array(noise, "noise", shape=(N, L), shape_doc=f"(N, L) = ({N}, {L})")
    len_keep = int(L * (1 - r))  # MAE's own truncation, float arithmetic included
    ids_shuffle = np.argsort(noise, axis=1, kind="stable")
    ids_restore = np.argsort(ids_shuffle, axis=1, kind="stable")
    x_masked = np.take_along_axis(x, ids_shuffle[:, :len_keep, None], axis=1)
    mask = np.ones((N, L))
    mask[:, :len_keep] = 0.0
    return x_masked, np.take_along_axis(mask, ids_restore, axis=1), ids_restore


def mae_num_kept(num_patches: int, mask_ratio: float = 0.75) -> int:
    """int(L (1 - mask_ratio)): patches the encoder sees (196 at 0.75: 49)."""
    L = count(num_patches, "num_patches")
    return int(L * (1 - real_number(mask_ratio, "mask_ratio", minimum=0.0, maximum=1.0, max_open=True)))


# --- DINO ------------------------------------------------------------------------------------


def dino_loss(student_output, teacher_output, center, *, n_crops: int, student_temp: float = 0.1,
              teacher_temp: float = 0.04) -> float:
    """DINO's loss (module doc). student_output (n_crops B, K), crops stacked crop-major as DINO's ``chunk``
    splits them (the first two are the global views the teacher sees); teacher_output (2 B, K); center (K,)."""
    V = count(n_crops, "n_crops", minimum=2)
    s = as_float_array(student_output, "student_output", ndim=2, min_size={1: 1})
    t = as_float_array(teacher_output, "teacher_output", ndim=2, shape=(None, s.shape[1]), shape_doc="(2 B, K)")
    c = as_float_array(center, "center", shape=(s.shape[1],), shape_doc=f"(K,) = ({s.shape[1]},)")
    B = _V.dino_views(s, t, V)
    ts, tt = positive_float(student_temp, "student_temp"), positive_float(teacher_temp, "teacher_temp")
    with np.errstate(over="ignore", invalid="ignore"):
        zs, zt = s / ts, (t - c) / tt
    zs = finite_result(zs, "student_output / student_temp", "student_output, student_temp")
    zt = finite_result(zt, "(teacher_output - center) / teacher_temp", "teacher_output, center, teacher_temp")
    K = s.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):  # a log-probability beyond float64 is refused below
        log_p = (zs - logsumexp(zs, axis=1)[:, None]).reshape(V, B, K)
        q = softmax(zt, axis=1).reshape(2, B, K)
        terms = [np.mean(np.sum(-q[iq] * log_p[v], axis=-1)) for iq in range(2) for v in range(V) if v != iq]
        loss = np.mean(terms)
    # z_i - logsumexp(z) of a student output near -finfo.max beside one near +finfo.max is beyond float64
    return float(finite_result(loss, "the loss", "student_output, student_temp, teacher_output, center"))


def dino_center_update(center, teacher_output, momentum: float = 0.9) -> np.ndarray:
    """c <- m c + (1 - m) mean_b teacher_output_b (one process; DINO all-reduces the batch sum over ranks)."""
    t = as_float_array(teacher_output, "teacher_output", ndim=2, min_size={0: 1})
    c = as_float_array(center, "center", shape=(t.shape[1],), shape_doc=f"(K,) = ({t.shape[1]},)")
    m = real_number(momentum, "momentum", minimum=0.0, maximum=1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.sum(t / t.shape[0], axis=0)  # scaled first: a sum near float64's maximum stays finite
        return finite_result(c * m + mean * (1.0 - m), "the centre", "center, teacher_output")


def ema_update(teacher, student, momentum: float) -> np.ndarray:
    """theta_t <- lam theta_t + (1 - lam) theta_s, elementwise on arrays of one shape (DINO's teacher update)."""
    a = as_float_array(teacher, "teacher")
    b = as_float_array(student, "student", shape=a.shape, shape_doc="the shape of teacher")
    lam = real_number(momentum, "momentum", minimum=0.0, maximum=1.0)
    return lam * a + (1.0 - lam) * b


def dino_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """DINO's cosine schedule (``utils.cosine_scheduler`` without warm-up): final + (base - final)(1 + cos(pi i / n)) / 2."""
    i, n = _V.schedule_step(step, total_steps)
    b = real_number(base, "base", minimum=0.0, maximum=1.0)
    f = real_number(final, "final", minimum=0.0, maximum=1.0)
    return f + 0.5 * (b - f) * (1.0 + math.cos(math.pi * i / n))


__all__ = ["DISTILLATION_TYPES", "deit_embeddings", "deit_inference_logits", "deit_loss", "dino_center_update",
           "dino_loss", "dino_momentum", "ema_update", "mae_num_kept", "mae_random_masking"]
