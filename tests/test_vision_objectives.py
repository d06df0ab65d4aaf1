"""DeiT's distillation token and loss, MAE's random masking, DINO's centred and sharpened target
(refimpl.vision_objectives, docs/vision.md): each check is written from the formulas, and rejects the wrong
implementations kept beside it (meta-tests). The libraries' own code runs in tests/test_seeds_libraries.py."""

import math
import types

import numpy as np
import pytest

from refimpl import vision as V
from refimpl import vision_objectives as VO

RNG = np.random.default_rng(61)


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- DeiT

def check_deit(impl):
    imgs = RNG.standard_normal((2, 3, 8, 8))
    w, b = RNG.standard_normal((5, 3, 4, 4)), RNG.standard_normal(5)
    cls, dist, pos = RNG.standard_normal(5), RNG.standard_normal(5), RNG.standard_normal((6, 5))
    z = impl.deit_embeddings(imgs, w, b, cls, dist, pos)
    np.testing.assert_allclose(z[:, 0], np.broadcast_to(cls + pos[0], (2, 5)), rtol=1e-14)
    np.testing.assert_allclose(z[:, 1], np.broadcast_to(dist + pos[1], (2, 5)), rtol=1e-14)
    np.testing.assert_allclose(z[:, 2:], V.patch_embed(imgs, w, b) + pos[2:], rtol=1e-14, atol=1e-14)
    a, d, t = RNG.standard_normal((3, 4, 6)) * 2
    y = np.array([0, 5, 2, 2])
    ce = lambda z, k: float(np.mean(-_log_softmax(z)[np.arange(len(k)), k]))  # noqa: E731
    np.testing.assert_allclose(impl.deit_loss(a, d, y, t), 0.5 * ce(a, y) + 0.5 * ce(d, t.argmax(1)), rtol=1e-14)
    tau = 3.0
    lq, lp = _log_softmax(t / tau), _log_softmax(d / tau)
    soft = np.sum(np.exp(lq) * (lq - lp)) * tau**2 / a.size
    np.testing.assert_allclose(impl.deit_loss(a, d, y, t, distillation_type="soft", alpha=0.3, tau=tau),
                               0.7 * ce(a, y) + 0.3 * soft, rtol=1e-13)
    np.testing.assert_allclose(impl.deit_inference_logits(a, d), (a + d) / 2, rtol=1e-15)


DEIT_WRONG = {
    "tokens_dist_first": dict(deit_embeddings=lambda imgs, w, b, cls, dist, pos: VO.deit_embeddings(imgs, w, b, dist, cls, pos)),
    "soft_without_tau_squared": dict(deit_loss=lambda a, d, y, t, distillation_type="hard", alpha=0.5, tau=1.0:
                                     VO.deit_loss(a, d, y, t, distillation_type=distillation_type, alpha=alpha, tau=tau)
                                     if distillation_type == "hard" else
                                     (1 - alpha) * VO.deit_loss(a, d, y, t, alpha=0.0)
                                     + alpha * (VO.deit_loss(a, d, y, t, distillation_type="soft", alpha=1.0, tau=tau) / tau**2)),
    "hard_target_from_labels": dict(deit_loss=lambda a, d, y, t, **kw: VO.deit_loss(a, d, y, np.eye(a.shape[1])[y], **kw)),
    "inference_cls_only": dict(deit_inference_logits=lambda a, d: np.asarray(a, float)),
}


# --------------------------------------------------------------------------- MAE

def check_mae(impl):
    N, L, D = 3, 10, 2
    x = RNG.standard_normal((N, L, D))
    noise = RNG.random((N, L))
    xm, mask, restore = impl.mae_random_masking(x, 0.7, noise=noise)
    keep = int(L * (1 - 0.7))
    assert xm.shape == (N, keep, D) and keep == 3
    for n in range(N):
        kept = np.sort(np.argsort(noise[n])[:keep])  # the smallest noise values are kept
        np.testing.assert_array_equal(np.flatnonzero(mask[n] == 0), kept)
        np.testing.assert_array_equal(xm[n], x[n, np.argsort(noise[n])[:keep]])  # in shuffled (noise) order
        np.testing.assert_array_equal(np.argsort(noise[n])[restore[n]], np.arange(L))  # restore undoes the shuffle
    a, _, _ = impl.mae_random_masking(x, 0.75, seed=5)
    b, _, _ = impl.mae_random_masking(x, 0.75, seed=5)
    np.testing.assert_array_equal(a, b)  # explicit seed: reproducible


MAE_WRONG = {
    "mask_left_shuffled": dict(mae_random_masking=lambda x, r=0.75, **kw: (lambda o: (o[0], np.take_along_axis(
        o[1], np.argsort(o[2], axis=1), axis=1), o[2]))(VO.mae_random_masking(x, r, **kw))),
    "keep_largest_noise": dict(mae_random_masking=lambda x, r=0.75, *, seed=None, noise=None: VO.mae_random_masking(
        x, r, seed=seed, noise=None if noise is None else -np.asarray(noise))),
    # ceil(10 (1 - 0.7)) = ceil(3.0000000000000004) = 4 where MAE's int() keeps 3
    "len_keep_rounded_up": dict(mae_random_masking=lambda x, r=0.75, **kw: VO.mae_random_masking(
        x, 1 - math.ceil(x.shape[1] * (1 - r)) / x.shape[1], **kw)),
}


# --------------------------------------------------------------------------- DINO

def check_dino(impl):
    B, K, V_ = 3, 5, 4
    s = RNG.standard_normal((V_ * B, K)) * 2
    t = RNG.standard_normal((2 * B, K)) * 2
    c = RNG.standard_normal(K) * 0.5
    q = np.exp(_log_softmax((t - c) / 0.04)).reshape(2, B, K)
    lp = _log_softmax(s / 0.1).reshape(V_, B, K)
    want = np.mean([np.mean(np.sum(-q[i] * lp[v], axis=1)) for i in range(2) for v in range(V_) if v != i])
    np.testing.assert_allclose(impl.dino_loss(s, t, c, n_crops=V_), want, rtol=1e-13)
    np.testing.assert_allclose(impl.dino_center_update(c, t), 0.9 * c + 0.1 * t.mean(axis=0), rtol=1e-14)
    # centring a collapsed teacher (every output the same vector) makes its target uniform
    tc = np.tile(RNG.standard_normal(K), (2 * B, 1))
    cc = impl.dino_center_update(np.zeros(K), tc, 0.0)
    np.testing.assert_allclose(impl.dino_loss(s, tc, cc, n_crops=V_),
                               np.mean([np.mean(-lp[v].mean(axis=1)) for i in range(2) for v in range(V_) if v != i]),
                               rtol=1e-12)


DINO_WRONG = {
    "no_centring": dict(dino_loss=lambda s, t, c, **kw: VO.dino_loss(s, t, np.zeros_like(c), **kw)),
    "no_sharpening": dict(dino_loss=lambda s, t, c, **kw: VO.dino_loss(s, t, c, teacher_temp=0.1, **kw)),
    "same_view_pairs_kept": dict(dino_loss=lambda s, t, c, n_crops: float(np.mean(
        [VO.dino_loss(s, t, c, n_crops=n_crops)] * 6 + [VO.dino_loss(s[:2 * len(t) // 2], t, c, n_crops=2)]))),
    "center_momentum_swapped": dict(dino_center_update=lambda c, t, m=0.9: VO.dino_center_update(c, t, 1 - m)),
}


def test_dino_schedule_and_ema():
    assert VO.dino_momentum(0, 100) == 0.996 and abs(VO.dino_momentum(50, 100) - 0.998) < 1e-15
    np.testing.assert_allclose(VO.ema_update(np.ones(3), np.zeros(3), 0.996), 0.996)


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="^seed, noise"):
        VO.mae_random_masking(np.ones((1, 4, 2)), 0.5)
    with pytest.raises(ValueError, match="^labels"):
        VO.deit_loss(np.ones((2, 3)), np.ones((2, 3)), np.array([0, 3]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="^student_output, teacher_output, n_crops"):
        VO.dino_loss(np.ones((5, 3)), np.ones((4, 3)), np.zeros(3), n_crops=2)


# --------------------------------------------------------------------------- meta-tests

SPEC = types.SimpleNamespace(**{n: getattr(VO, n) for n in VO.__all__ if callable(getattr(VO, n))})
CHECKS = [check_deit, check_mae, check_dino]
WRONG = {**{f"deit_{n}": (o, check_deit) for n, o in DEIT_WRONG.items()},
         **{f"mae_{n}": (o, check_mae) for n, o in MAE_WRONG.items()},
         **{f"dino_{n}": (o, check_dino) for n, o in DINO_WRONG.items()}}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(SPEC)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    overrides, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(types.SimpleNamespace(**{**vars(SPEC), **overrides}))
