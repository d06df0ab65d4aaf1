"""Linear-time mixer worked examples from the notes (docs/notes.md#rwkv), computed by refimpl.mixers.

The notes give the decay of a token 100 steps back at w = 0.1 as e^-10, about 0.000045. The spec
computes it from RWKV-4's WKV weights (:func:`refimpl.mixers.rwkv4.log_weights`, kernel
w = -0.1, k = 0, u = 0): two past tokens 100 steps apart differ by e^{100 w} = e^-10. Beside it,
what RWKV-4 actually gives a token at t - j = 100: the most recent past token (j = t - 1) is
undecayed, so the factor is e^{(t-1-j) w} = e^-9.9, and the current token carries the bonus e^u
instead (docs/errata.md#e9 covers the rest of the notes' RWKV formula).

The last linear-attention pieces (docs/mixers.md): trigonometric random features estimating
exp(q . k) (docs/notes.md#performer), the O(log n) depth of the WKV prefix scan (docs/notes.md#rwkv),
the constant state of gated linear attention (docs/notes.md#gated-linear-attention, docs/errata.md#e10)
and Linformer's n k_proj scores against N^2 (docs/notes.md#linformer).
"""

from __future__ import annotations

import numpy as np

from refimpl.mixers import cost, gated_kernel, linformer, random_features, rwkv4

from . import WorkedExample


def _weights(t: int, w: float = -0.1):
    """Unnormalised WKV weights of query t over j = 0..t (one channel, k = 0, u = 0)."""
    lw = rwkv4.log_weights(np.array([[w]]), np.array([[0.0]]), np.zeros((1, 1, t + 1, 1)))
    return np.exp(lw[0, 0, t, : t + 1, 0])


def _decay_100_steps():
    t = 101
    wts = _weights(t)
    return float(wts[0] / wts[100])  # j = 0 against j = 100: 100 steps of decay apart


def _rwkv4_exact():
    wts = _weights(100)
    return (f"RWKV-4 WKV at t - j = 100: weight e^((t-1-j) w) = {wts[0]:.4g} (= e^-9.9) relative to the undecayed "
            f"token t-1; the current token gets e^(u + k_t) instead of e^0")


# --- docs/notes.md#performer: trigonometric random features (Bochner) ---------------------------

_Q = np.array([0.3, -0.2, 0.5, 0.1])
_K = np.array([0.4, 0.1, 0.2, -0.3])
_M_RFF = 8192
_RFF_TOL = float(random_features.hoeffding_radius(_M_RFF, 1e-9) * np.exp(0.5 * (_Q @ _Q + _K @ _K)) / np.exp(_Q @ _K))


def _rff():
    """phi_sm(q).phi_sm(k) with 8192 seeded frequencies against exp(q . k) (relative error printed beside)."""
    W = random_features.gaussian_frequencies(_M_RFF, 4, seed=0)
    fq, fk = (random_features.softmax_trig_features(x[None, None, None], W)[0, 0, 0] for x in (_Q, _K))
    return float(fq @ fk)


def _rff_beside():
    W = random_features.gaussian_frequencies(_M_RFF, 4, seed=0)
    seed_map = np.exp(W @ _Q) @ np.exp(W @ _K) / _M_RFF
    amp = np.exp(0.5 * (_Q @ _Q + _K @ _K))
    return (f"exp(q.k) = {np.exp(_Q @ _K):.5f}; Hoeffding radius (delta 1e-9) x amplitude = "
            f"{random_features.hoeffding_radius(_M_RFF, 1e-9) * amp:.3f}; the notes' exp(w.x)/sqrt(m) map gives "
            f"{seed_map:.4f} ~ exp(|q+k|^2/2) = {np.exp(0.5 * np.sum((_Q + _K) ** 2)):.4f} (docs/errata.md#e8)")


# --- docs/notes.md#rwkv: the WKV prefix scan has O(log n) depth -----------------------------------

def _wkv_scan_depth():
    """Steps of the scan form at L = 1024, after checking the form against the definition at L = 37."""
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((2, 1, 1, 37, 2))
    w, u = -np.exp(rng.standard_normal(2)), rng.standard_normal(2)
    err = np.abs(rwkv4.wkv(w, u, k, v, form="scan") - rwkv4.wkv(w, u, k, v, form="parallel")).max()
    assert err < 1e-12, err
    return rwkv4.prefix_scan_steps(1024), rwkv4.prefix_scan_steps(37)


# --- docs/notes.md#gated-linear-attention: gated linear attention keeps a constant state -----------

def _gated_state():
    """State values per head (S: d_phi x d_v, z: d_phi) at d = 64, and the same output from the chunked form."""
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 1, 1, 12, 4))
    Wg, Wb = rng.standard_normal((2, 1, 4))
    a = gated_kernel.gated_kernel_attention(q, k, v, Wg, Wb)
    b = gated_kernel.gated_kernel_attention(q, k, v, Wg, Wb, form="chunked", chunk_size=5)
    assert np.abs(a - b).max() < 1e-12
    return cost.linear_attention(64, 64).state


# --- docs/notes.md#linformer: Linformer's scores n k_proj against N^2 --------------------------------

def _linformer():
    """Score MACs per head and unit width at N = 100,000: full N^2 and Linformer's N k_proj (k_proj = 256)."""
    n, kp = 100_000, 256
    full = cost.sequence_macs_softmax(n, 1, 1, causal=False) // 2
    lin = linformer.linformer_macs(n, kp, 1, 1, include_projections=False) // 2
    return full, lin


EXAMPLES = [
    WorkedExample(
        "rwkv_decay_w01_100_steps", "docs/notes.md#rwkv", "e^-10 ≈ 0.000045 (w = 0.1, t - j = 100)",
        _decay_100_steps, 4.54e-5, 1.2e-3,
        "100 steps of RWKV-4 per-channel decay with rate 0.1 (kernel w = -0.1); tolerance: half a unit in 4.54e-5's last digit",
        beside=_rwkv4_exact,
    ),
    WorkedExample(
        "trig_random_features_softmax_kernel", "docs/notes.md#performer",
        "phi(q)^T phi(k) = (1/m) sum_i ... -> exp(q^T k) as m -> inf (Bochner)",
        _rff, float(np.exp(_Q @ _K)), _RFF_TOL,
        "trigonometric features exp(|x|^2/2) m^-1/2 [cos Wx; sin Wx], m = 8192 seeded N(0, I) frequencies, q, k in R^4; "
        "tolerance (8.6%): the Hoeffding radius at delta = 1e-9 times the amplitude exp((|q|^2+|k|^2)/2), relative to "
        "exp(q.k)",
        beside=_rff_beside,
    ),
    WorkedExample(
        "wkv_prefix_scan_depth", "docs/notes.md#rwkv", "prefix sums in O(log n) depth via parallel scan",
        _wkv_scan_depth, (10, 6), 0.0,
        "doubling steps of refimpl.mixers.rwkv4.wkv(form='scan') at L = 1024 and L = 37 (ceil(log2 L)); the scan form "
        "is checked equal to the definition at L = 37 first",
    ),
    WorkedExample(
        "gated_linear_attention_state", "docs/notes.md#gated-linear-attention", "state O(d_phi d_v), independent of sequence length",
        _gated_state, 64 * 64 + 64, 0.0,
        "values per head of S (d_phi x d_v) and z (d_phi) at d_phi = d_v = 64; gamma_t = sigmoid(W_gamma q_t), "
        "beta_t = sigmoid(W_beta k_t) (refimpl.mixers.gated_kernel); the notes' 'delta attention' is gated linear "
        "attention (docs/errata.md#e10)",
    ),
    WorkedExample(
        "linformer_scores_n100k", "docs/notes.md#linformer", "N = 100,000 -> N^2 ≈ 10B; Linformer O(N)",
        _linformer, (10_000_000_000, 25_600_000), 0.0,
        "score entries per head: full attention N^2 beside Linformer's N k_proj with k_proj = 256 "
        "(refimpl.mixers.linformer.linformer_macs), 390.6 times fewer",
    ),
]
