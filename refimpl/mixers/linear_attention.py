"""Linear attention (Katharopoulos et al. 2020) and Performer's FAVOR+ features (Choromanski et al. 2021).

Replace exp(q.k) by a kernel phi(q).phi(k) and attention becomes a recurrence
(docs/notes.md#linear-attention)::

    S_t = S_{t-1} + phi(k_t) v_t^T          (d_phi x d_v)
    z_t = z_{t-1} + phi(k_t)                (d_phi; the normaliser's state)
    y_t = scale * phi(q_t)^T S_t / (scale * phi(q_t)^T z_t + eps)       (causal)

Non-causal: S and z summed over all L tokens for every query. Cost O(L d_phi d_v) against
softmax attention's O(L^2 d) (:mod:`refimpl.mixers.cost`).

One computation, one setup: the numerator and the normaliser are the same recurrence, so
the normaliser is computed by appending a column of ones to v (z_t = S_t[:, d_v]) and both
go through :func:`refimpl.mixers.gated.gated_linear_attention` (gate g = 0), which supplies
the recurrent and parallel (masked quadratic) forms. The chunked form is gated's with every
decay 1, every chunk's products at once (chunks m of c tokens, Q_m, K_m, V_m their rows)::

    S_(0) = S_init,   S_(m+1) = S_(m) + K_m^T V_m              the state entering each chunk
    O_m   = scale * (Q_m S_(m) + tril(Q_m K_m^T) V_m)          the carried state, then the causal part inside

Feature maps (``feature_map``; docs/mixers.md#feature-maps), each over the head dim D of x:

* "elu+1" (Katharopoulos, elu(x) + 1 > 0); "relu"; "identity" (no normaliser makes sense then);
* "squared_relu": max(x, 0)^2 (fla 0.6.0 ``fla/modules/feature_map.py`` ``SquaredReLUFeatureMap``);
* "exp_scaled": exp(x / D), the head dim dividing the exponent (docs/notes.md#linear-attention's exp(x / d_head));
  overflow past exp(709) is a ValueError naming x;
* "exp_normalised": softmax over the D features, exp(x_i - m) / sum_c exp(x_c - m) with m = max_c x_c
  (every feature vector sums to 1; Hedgehog's map, fla 0.6.0 ``HedgehogFeatureMap``, is this applied
  to [2 (W x + b), -2 (W x + b)]);

or a callable (B, H, L, D) -> (B, H, L, d_phi).

FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers", Lemma 1, eq. 7)::

    phi(x) = exp(W x - |x|^2 / 2 - c) / sqrt(m),   rows w_i of W ~ N(0, I_d), orthogonal blocks

gives E[phi(q).phi(k)] = exp(q.k - c_q - c_k): unbiased for exp(q.k) up to the constant
factor exp(-c_q - c_k), which the normaliser cancels. c is the stabilising shift: here the max
of W x - |x|^2/2 per query row (queries) or over all keys (keys). google-research
``performer/fast_attention/jax/fast_attention.py`` ``nonnegative_softmax_kernel_feature_creator``
takes the max of W x alone (a different constant, equally cancelled) and adds
``numerical_stabilizer`` (1e-6 in ``make_fast_softmax_attention``) to every feature, which this
spec leaves out (it biases the estimate). docs/errata.md#e8: the notes' phi(x) = exp(w.x)/sqrt(m) (no -|x|^2/2) has
E[phi(q).phi(k)] = E_w[exp(w.(q+k))] = exp(|q+k|^2/2), not exp(q.k).
Softmax attention's exp(q.k / sqrt(d)) is matched by feeding x / d^(1/4) to phi.
"""

from __future__ import annotations

import numpy as np

from .._validate import mixers as VX
from .._validate import (as_float_array, check_budget, choice, count, entries_first, finite_entries, finite_result,
                         flag, positive_float, positive_int, real_number)
from .gated import FORMS, GatedSetup, _chunked_scalar, _gla, _refuse_nonfinite

FEATURE_MAPS = {
    "elu+1": lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0))),
    "relu": lambda x: np.maximum(x, 0.0),
    "identity": lambda x: x,
    "squared_relu": lambda x: np.maximum(x, 0.0) ** 2,
    "exp_scaled": lambda x: np.exp(x / max(x.shape[-1], 1)),
    "exp_normalised": lambda x: _softmax_features(x),
}


def _softmax_features(x):
    """exp(x - max) / sum exp(x - max) over the last axis; never overflows (every exponent <= 0)."""
    if x.shape[-1] == 0:
        return x.copy()
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

#: Default epsilon of the normaliser: fla ``fla/ops/linear_attn/naive.py``
#: ``naive_recurrent_linear_attn(normalize=True)`` adds 1e-10 to the denominator (fla 0.5.2);
#: the notes write "+ epsilon" without a value (docs/notes.md#linear-attention).
NORMALISER_EPS = 1e-10


def apply_feature_map(x, feature_map="elu+1"):
    """phi(x) for a named map or a callable; the result must be finite, shape (B, H, L, d_phi)."""
    return _apply_feature_map(x, feature_map, "x")


def _apply_feature_map(x, feature_map, name: str):
    """``apply_feature_map``, its messages naming the caller's argument ``name``."""
    x = as_float_array(x, name, ndim=4)
    if callable(feature_map):
        return VX.mapped_features(feature_map(x), x.shape, name)
    VX.feature_map_name(feature_map, FEATURE_MAPS)
    with np.errstate(over="ignore", invalid="ignore"):
        out = FEATURE_MAPS[feature_map](x)
    return out if out is x else finite_result(out, f"feature_map {feature_map!r}", name)  # identity: x, checked


def linear_attention(q, k, v, *, feature_map="elu+1", causal=True, normalize=True, eps=NORMALISER_EPS,
                     scale=1.0, form="recurrent", chunk_size=64):
    """y_t = scale phi(q_t)^T S_t / (scale phi(q_t)^T z_t + eps); see the module doc.

    q, k: (B, H, L, D); v: (B, H, L, Dv). ``scale`` multiplies phi(q) (default 1 as the paper;
    fla's naive reference uses D^-0.5, preset in :mod:`refimpl.mixers.presets`);
    ``normalize=False`` returns the numerator only (fla's default). ``form`` and ``chunk_size``
    as :func:`refimpl.mixers.gated.gated_linear_attention`; non-causal has one form.
    Returns y (B, H, L, Dv).
    """
    # phi(x) = x: the entries of q, k, v are checked where the form runs (the chunked form: in its blocks);
    # a validation error before then reports a NaN or inf in an argument validated before it first
    deferred = isinstance(feature_map, str) and feature_map == "identity"
    raw = ((q, "q"), (k, "k"), (v, "v")) if deferred else ()
    with entries_first(raw[:2], ndim=4):
        if deferred:
            fq, fk = (as_float_array(x, name, ndim=4, entries=False) for x, name in raw[:2])
        else:
            fq, fk = _phi(q, "q", feature_map), _phi(k, "k", feature_map)
        VX.feature_widths(fq, fk)
        with entries_first(raw[2:], ndim=4):
            v = as_float_array(v, "v", ndim=4, entries=not deferred)
            causal, normalize = flag(causal, "causal"), flag(normalize, "normalize")
            eps, scale = real_number(eps, "eps", minimum=0.0), positive_float(scale, "scale")
            choice(form, "form", FORMS)
            count(chunk_size, "chunk_size", minimum=1)
            if not causal:
                VX.leading_bhl(v, "v", fk, "k")
            va = np.concatenate([v, np.ones(v.shape[:3] + (1,))], axis=3) if normalize else v
            if causal and form == "chunked":
                s = GatedSetup(fq, fk, va, None, scale, None, checked=True)
    scan = ((fq, "q"), (fk, "k"), (v, "v")) if deferred else ()  # the float64 arrays, entries unchecked
    if causal and form == "chunked":
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
            out, _, finite = _chunked_scalar(s, int(chunk_size), scan=bool(scan))
        if not finite:
            _refuse_nonfinite(out, scan, "q, k, v, scale, feature_map")
    else:
        for x, name in scan:
            finite_entries(x, name)
        if causal:
            out, _ = _gla(fq, fk, va, None, scale, None, form, chunk_size,
                          ("q, k, v, scale, feature_map", "k, v, feature_map"), checked=True)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                S = np.swapaxes(fk, -1, -2) @ va  # (B, H, d_phi, Dv [+1]): every query sees every key
                out = scale * fq @ S
            finite_result(out, "an output", "q, k, v, scale, feature_map")
    if not normalize:
        return out
    num, den = out[..., :-1], np.broadcast_to(out[..., -1:] + eps, out[..., :-1].shape)
    # den = 0 only with eps = 0 and a query that sees no feature mass (relu): output 0, never 0/0.
    with np.errstate(over="ignore"):
        y = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    # |y| <= max |v| when phi >= 0 (a weighted average); a signed map (identity) can make den tiny
    return finite_result(y, "an output (numerator / normaliser)", "q, k, v, eps, feature_map")


def _phi(x, name, feature_map):
    """apply_feature_map with the caller's argument name in its messages."""
    return _apply_feature_map(x, feature_map, name)


def orthogonal_gaussian(m: int, d: int, seed) -> np.ndarray:
    """(m, d) random features: stacked blocks of d orthogonal directions, row norms ~ chi_d.

    FAVOR+ "ORF" (Choromanski et al. 2021, sec. 2.4; google-research
    ``gaussian_orthogonal_random_matrix``): QR of a Gaussian block gives orthonormal rows,
    rescaled by the norms of independent Gaussian vectors so each row is marginally N(0, I_d).
    """
    m, d = positive_int(m, "m"), positive_int(d, "d")
    n_blocks = -(-m // d)
    check_budget("m, d", nbytes=8 * (3 * m * d + 3 * d * d), steps=n_blocks,
                 what=f"{n_blocks} QR factorisations of ({d}, {d}) and an ({m}, {d}) result")
    rng = np.random.default_rng(count(seed, "seed", maximum=None))
    blocks = []
    for _ in range(-(-m // d)):
        Q, R = np.linalg.qr(rng.standard_normal((d, d)))
        blocks.append((Q * np.sign(np.diag(R))).T)  # sign fix: Haar-distributed rows
    W = np.concatenate(blocks)[:m]
    return W * np.linalg.norm(rng.standard_normal((m, d)), axis=1, keepdims=True)


def favor_features(x, W, *, is_query: bool, stabilize=True):
    """FAVOR+ positive features phi(x) = exp(W x - |x|^2/2 - c)/sqrt(m), x (B, H, L, d), W (m, d).

    c = 0 without ``stabilize``; else the max of W x - |x|^2/2 over features per row (queries:
    the constant cancels in the normaliser row by row) or over everything (keys: one constant
    for all keys keeps their relative weights). Returns (B, H, L, m).
    """
    return _favor_features(x, W, is_query, stabilize, "x, W")


def _favor_features(x, W, is_query, stabilize, names: str):
    """``favor_features``; ``names``: the caller's arguments x and W are (e.g. "q, W")."""
    xname = names.split(",")[0]
    x, W = VX.feature_matrix(x, W, xname)
    is_query, stabilize = flag(is_query, "is_query"), flag(stabilize, "stabilize")
    VX.favor_logit_range(x, W, names)  # bounded logits: the features are computed only then (never NaN)
    logits = x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    if stabilize and logits.size:
        c = logits.max(axis=-1, keepdims=True) if is_query else logits.max(axis=(-3, -2, -1), keepdims=True)
        logits = logits - c
    with np.errstate(over="ignore"):
        phi = np.exp(logits) / np.sqrt(W.shape[0])
    return finite_result(phi, "a feature exp(W x - |x|^2/2) (pass stabilize=True)", f"{names}, stabilize")


def performer_attention(q, k, v, W, *, causal=True, eps=NORMALISER_EPS, form="recurrent", chunk_size=64):
    """FAVOR+ estimate of softmax attention softmax(q k^T / sqrt(d)) v (Choromanski et al. eq. 7).

    q and k are scaled by d^-1/4 so that exp(q'.k') = exp(q.k/sqrt(d)); then linear attention
    with the FAVOR+ features and the normaliser. W (m, d) from :func:`orthogonal_gaussian`.
    The stabilising shifts cancel exactly only with ``eps=0``; an eps > 0 is added to the
    shifted normaliser, so its effect depends on the shift. The default keeps eps > 0 so that a query
    whose visible keys all underflow gives 0, never 0/0.
    """
    q = as_float_array(q, "q", ndim=4)
    d = q.shape[3]
    k = as_float_array(k, "k", ndim=4)
    VX.head_dim(k, d)
    fq = _favor_features(q * d ** -0.25, W, True, True, "q, W")
    fk = _favor_features(k * d ** -0.25, W, False, True, "k, W")
    return linear_attention(fq, fk, v, feature_map="identity", causal=causal, normalize=True, eps=eps,
                            form=form, chunk_size=chunk_size)


__all__ = ["FEATURE_MAPS", "NORMALISER_EPS", "apply_feature_map", "favor_features", "linear_attention",
           "orthogonal_gaussian", "performer_attention"]
