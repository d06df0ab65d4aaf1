"""The last linear-attention pieces (docs/mixers.md): feature maps, trigonometric random features, data-dependent
gates and Linformer; each check rejects the wrong implementations kept beside it (meta-tests). The WKV prefix
scan is a bundled form of the ``wkv`` kind (properties/mixers_scan.py, wrong ``wkv_scan_decays_later``)."""

import types

import numpy as np
import pytest
from scipy.special import expit, softmax

import refimpl
from refimpl.mixers import gated_kernel as GK
from refimpl.mixers import linear_attention as LA
from refimpl.mixers import linformer as LF
from refimpl.mixers import random_features as RF
from refimpl.mixers import rwkv4 as RW

RNG = np.random.default_rng(31)
SPEC = types.SimpleNamespace(apply_feature_map=LA.apply_feature_map, trig_features=RF.trig_features,
                             softmax_trig_features=RF.softmax_trig_features,
                             gated_kernel_attention=GK.gated_kernel_attention,
                             linformer_attention=LF.linformer_attention)


# --------------------------------------------------------------------------- feature maps

def check_feature_maps(impl):
    x = np.concatenate([RNG.standard_normal((1, 2, 5, 4)) * 3, np.full((1, 2, 1, 4), 700.0)], axis=2)
    np.testing.assert_array_equal(impl.apply_feature_map(x, "squared_relu"), np.maximum(x, 0) ** 2)
    np.testing.assert_allclose(impl.apply_feature_map(x, "exp_scaled"), np.exp(x / 4), rtol=1e-15)
    sm = impl.apply_feature_map(x, "exp_normalised")
    np.testing.assert_allclose(sm, softmax(x, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(sm.sum(-1), 1.0, rtol=1e-15)  # also where exp(700) alone would be near overflow


def test_exp_scaled_overflow_names_x():
    with pytest.raises(ValueError, match="^x: feature_map 'exp_scaled'"):
        LA.apply_feature_map(np.full((1, 1, 1, 2), 2000.0), "exp_scaled")
    assert np.isfinite(LA.apply_feature_map(np.full((1, 1, 1, 2), 1e300), "exp_normalised")).all()


# --------------------------------------------------------------------------- trigonometric random features

def check_trig_identity(impl):
    """phi(x).phi(y) = mean_i cos(w_i . (x - y)), exactly (to rounding)."""
    W = RF.gaussian_frequencies(64, 3, seed=1)
    x, y = RNG.standard_normal((2, 1, 1, 5, 3))
    got = impl.trig_features(x, W)[0, 0] @ impl.trig_features(y, W)[0, 0].T
    want = np.cos(np.einsum("md,ijd->ijm", W, x[0, 0][:, None] - y[0, 0][None])).mean(-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def check_trig_unbiased(impl):
    """Seeded, m = 20000: the Gaussian and softmax kernels within Hoeffding's radius (delta = 1e-9)."""
    m = 20000
    W = RF.gaussian_frequencies(m, 3, seed=2)
    x, y = RNG.standard_normal((2, 1, 1, 4, 3)) * 0.6
    r = RF.hoeffding_radius(m, 1e-9)
    est = impl.trig_features(x, W)[0, 0] @ impl.trig_features(y, W)[0, 0].T
    assert np.abs(est - RF.gaussian_kernel(x, y)[0, 0]).max() <= r
    sm = impl.softmax_trig_features(x, W)[0, 0] @ impl.softmax_trig_features(y, W)[0, 0].T
    amp = np.exp(0.5 * (x[0, 0] ** 2).sum(-1))[:, None] * np.exp(0.5 * (y[0, 0] ** 2).sum(-1))[None]
    assert np.all(np.abs(sm - np.exp(x[0, 0] @ y[0, 0].T)) <= r * amp)  # each term bounded by the amplitudes


def _cos_only(x, W):
    return np.cos(np.asarray(x) @ W.T) * np.sqrt(2.0 / W.shape[0])


def _seed_positive_map(x, W):  # the notes' exp(w.x)/sqrt(m) (docs/errata.md#e8)
    return np.exp(np.asarray(x) @ W.T) / np.sqrt(W.shape[0])


# --------------------------------------------------------------------------- data-dependent gates

def _gated_loop(q, k, v, Wg, Wb, *, gate_after_write=False, gate_from_k=False, normaliser_ungated=False):
    phi = LA.FEATURE_MAPS["elu+1"]
    B, H, L, D = q.shape
    y = np.empty(v.shape)
    for b in range(B):
        for h in range(H):
            S, z = np.zeros((D, v.shape[3])), np.zeros(D)
            for t in range(L):
                gam = expit(Wg[h] @ (k if gate_from_k else q)[b, h, t])
                bet = expit(Wb[h] @ k[b, h, t])
                fk, fq = phi(k[b, h, t]), phi(q[b, h, t])
                if gate_after_write:
                    S, z = gam[:, None] * (S + np.outer(bet * fk, v[b, h, t])), gam * (z + bet * fk)
                else:
                    S = gam[:, None] * S + np.outer(bet * fk, v[b, h, t])
                    z = (1.0 if normaliser_ungated else gam) * z + bet * fk
                y[b, h, t] = fq @ S / (fq @ z + LA.NORMALISER_EPS)
    return y


def check_gates(impl):
    """docs/notes.md#gated-linear-attention as a loop, per-head and per-feature gates, every form; sigmoid(-800) keeps finite log-gates."""
    B, H, L, D = 2, 2, 9, 3
    q, k = RNG.standard_normal((2, B, H, L, D))
    v = RNG.standard_normal((B, H, L, 2))
    for G in (1, D):
        Wg, Wb = RNG.standard_normal((2, H, G, D)) * 2
        want = _gated_loop(q, k, v, Wg, Wb)
        for form in ("recurrent", "parallel", "chunked"):
            got = impl.gated_kernel_attention(q, k, v, Wg, Wb, form=form, chunk_size=4)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    qp = np.abs(q) + 0.1  # W_gamma q_t <= -100: the past is forgotten
    shut = impl.gated_kernel_attention(qp, k, v, np.full((1, D), -1e3), np.zeros((1, D)), eps=0.0)
    np.testing.assert_allclose(shut, v, rtol=1e-12)  # only the current token remains


WRONG_GATES = {
    "gate_after_write": lambda q, k, v, Wg, Wb, **kw: _gated_loop(q, k, v, _heads(Wg, q), _heads(Wb, q), gate_after_write=True),
    "gate_from_k": lambda q, k, v, Wg, Wb, **kw: _gated_loop(q, k, v, _heads(Wg, q), _heads(Wb, q), gate_from_k=True),
    "normaliser_ungated": lambda q, k, v, Wg, Wb, **kw: _gated_loop(q, k, v, _heads(Wg, q), _heads(Wb, q),
                                                                   normaliser_ungated=True),
}


def _heads(W, q):
    W = np.asarray(W, float)
    return np.broadcast_to(W, (q.shape[1],) + W.shape[-2:])


def test_gates_are_the_sigmoids_of_the_projections():
    q, k = RNG.standard_normal((2, 1, 2, 4, 3))
    Wg, Wb = RNG.standard_normal((2, 3, 3))
    lg, b = GK.data_dependent_gates(q, k, Wg, Wb)
    np.testing.assert_allclose(np.exp(lg), expit(q @ Wg.T), rtol=1e-14)
    np.testing.assert_allclose(b, expit(k @ Wb.T), rtol=1e-15)
    assert np.isfinite(GK.data_dependent_gates(q * 1e4, k, Wg, Wb)[0]).all()  # log sigmoid(-1e4) = -1e4, not log 0


# --------------------------------------------------------------------------- Linformer

def check_linformer(impl):
    q, k, v = RNG.standard_normal((3, 2, 2, 7, 4))
    E, F = RNG.standard_normal((2, 3, 7)) / np.sqrt(7)
    want, _ = refimpl.attention(q, E @ k, F @ v)  # softmax(Q (E K)^T / sqrt(d)) (F V)
    np.testing.assert_allclose(impl.linformer_attention(q, k, v, E, F), want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(impl.linformer_attention(q, k, v, np.eye(7), np.eye(7)), refimpl.attention(q, k, v)[0],
                               rtol=1e-13, atol=1e-14)


WRONG_LINFORMER = {
    "E_for_values": lambda q, k, v, E, F=None, **kw: LF.linformer_attention(q, k, v, E, E),
    "scale_by_k_proj": lambda q, k, v, E, F=None, **kw: LF.linformer_attention(q, k, v, E, F, scale=E.shape[0] ** -0.5),
}


def test_linformer_cost_and_refusals():
    """Per head: k_proj n (d + d_v) projections + n k_proj (d + d_v); n = 4096, k_proj = 256, d = 64: 1/16 of the
    score and value MACs of full attention (docs/notes.md#linformer)."""
    assert LF.linformer_macs(4096, 256, 64, 64) == 2 * 256 * 4096 * 128
    assert LF.linformer_macs(4096, 256, 64, 64, include_projections=False) * 16 == 4096 * 4096 * 128
    with pytest.raises(ValueError, match="^E: expected shape"):
        LF.linformer_attention(*RNG.standard_normal((3, 1, 1, 5, 2)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="^F: expected the shape of E"):
        LF.linformer_attention(*RNG.standard_normal((3, 1, 1, 5, 2)), np.ones((2, 5)), np.ones((3, 5)))


# --------------------------------------------------------------------------- meta-tests

CHECKS = [check_feature_maps, check_trig_identity, check_trig_unbiased, check_gates, check_linformer]

WRONG = {
    "squared_relu_unsquared": (dict(apply_feature_map=lambda x, m: LA.apply_feature_map(x, "relu" if m == "squared_relu" else m)),
                               check_feature_maps),
    "exp_scaled_by_sqrt_d": (dict(apply_feature_map=lambda x, m: np.exp(x / 2.0) if m == "exp_scaled"
                                  else LA.apply_feature_map(x, m)), check_feature_maps),
    "exp_normalised_over_tokens": (dict(apply_feature_map=lambda x, m: softmax(x, axis=-2) if m == "exp_normalised"
                                        else LA.apply_feature_map(x, m)), check_feature_maps),
    "trig_cos_only": (dict(trig_features=_cos_only), check_trig_identity),
    "trig_cos_only_unbiased": (dict(trig_features=_cos_only), check_trig_unbiased),
    "seed_positive_map": (dict(trig_features=_seed_positive_map,
                               softmax_trig_features=_seed_positive_map), check_trig_unbiased),
    **{f"gates_{n}": (dict(gated_kernel_attention=f), check_gates) for n, f in WRONG_GATES.items()},
    **{f"linformer_{n}": (dict(linformer_attention=f), check_linformer) for n, f in WRONG_LINFORMER.items()},
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(SPEC)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    overrides, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(types.SimpleNamespace(**{**vars(SPEC), **overrides}))


def test_wkv_scan_depth_and_extremes():
    """ceil(log2 L) doubling steps; keys past e^709 stay finite and equal the definition."""
    assert [RW.prefix_scan_steps(L) for L in (1, 2, 3, 1024, 1025)] == [0, 1, 2, 10, 11]
    k = RNG.standard_normal((1, 2, 11, 3)) * 1000
    v = RNG.standard_normal((1, 2, 11, 3))
    w, u = -np.exp(RNG.standard_normal((2, 3))), RNG.standard_normal((2, 3))
    np.testing.assert_allclose(RW.wkv(w, u, k, v, form="scan"), RW.wkv(w, u, k, v, form="parallel"), rtol=0, atol=1e-12)
