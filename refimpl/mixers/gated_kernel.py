"""Linear attention with data-dependent forget and input gates (gated linear attention with a normaliser).

docs/mixers.md#data-dependent-gates. The recurrence (the definition), per head::

    gamma_t = sigmoid(W_gamma q_t)        forget gate in (0, 1): (G,), G = 1 or d_phi
    beta_t  = sigmoid(W_beta k_t)         input gate in (0, 1):  (G',), G' = 1 or d_phi
    S_t = gamma_t * S_{t-1} + (beta_t * phi(k_t)) v_t^T        (d_phi x d_v; gamma scales rows)
    z_t = gamma_t * z_{t-1} +  beta_t * phi(k_t)               (d_phi)
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

Decay first, then write, then read (token t sees itself), as :mod:`refimpl.mixers.gated`. The
normaliser is decayed by the same gate as the numerator, so y_t stays a weighted average of the
visible v_j (weights beta_j phi(q_t).phi(k_j) prod_{j<s<=t} gamma_s) when phi >= 0. The notes call
this "delta attention" (docs/errata.md#e10); it is gated linear attention. The delta rule
(S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t k_t v_t^T) is :mod:`refimpl.mixers.delta_rule`.

Computed by :func:`refimpl.mixers.gated.gated_linear_attention` with keys beta_t * phi(k_t),
log-gates log gamma_t = -softplus(-W_gamma q_t) (never log(0)) and a column of ones appended to v
for the normaliser, so the "recurrent", "parallel" and "chunked" forms are all available.
Weights: W_gamma (G, D) or per head (H, G, D); W_beta (G', D) or (H, G', D). No bias (as the notes).
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array, choice, count, finite_result, real_number
from .._validate import mixers as VX
from ..logistic import log_sigmoid, sigmoid
from .gated import FORMS, _gla
from .linear_attention import NORMALISER_EPS, _apply_feature_map


def _gate_logits(x, W, name, H, D, d_phi):
    """x W^T per head: (B, H, L, G) with G = 1 or d_phi."""
    W = VX.gate_weight(W, name, H, D, d_phi)
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.einsum("bhld,hgd->bhlg", x, W)
    return finite_result(z, "a gate logit", f"{name}, {'q' if name == 'W_gamma' else 'k'}")


def data_dependent_gates(q, k, W_gamma, W_beta, d_phi=None):
    """(log gamma, beta) of the module doc: log gamma_t = log sigmoid(W_gamma q_t) (B, H, L, G) and
    beta_t = sigmoid(W_beta k_t) (B, H, L, G'). ``d_phi``: the feature width a per-feature gate must
    have (default D, the head dim of q)."""
    q = as_float_array(q, "q", ndim=4)
    k = as_float_array(k, "k", shape=q.shape, shape_doc="(B, H, L, D) of q")
    B, H, L, D = q.shape
    d_phi = D if d_phi is None else count(d_phi, "d_phi", minimum=1)
    zg = _gate_logits(q, W_gamma, "W_gamma", H, D, d_phi)
    zb = _gate_logits(k, W_beta, "W_beta", H, D, d_phi)
    return log_sigmoid(zg), sigmoid(zb)


def gated_kernel_attention(q, k, v, W_gamma, W_beta, *, feature_map="elu+1", eps=NORMALISER_EPS,
                           form="recurrent", chunk_size=64):
    """y_t of the module doc. q, k (B, H, L, D); v (B, H, L, Dv); ``feature_map`` as
    :func:`refimpl.mixers.linear_attention.linear_attention`. Returns y (B, H, L, Dv)."""
    q = as_float_array(q, "q", ndim=4)
    k = as_float_array(k, "k", shape=q.shape, shape_doc="(B, H, L, D) of q")
    v = as_float_array(v, "v", ndim=4)
    VX.leading_bhl(v, "v", q, "q")
    eps = real_number(eps, "eps", minimum=0.0)
    choice(form, "form", FORMS)
    fq, fk = _apply_feature_map(q, feature_map, "q"), _apply_feature_map(k, feature_map, "k")
    VX.same_feature_shape(fq, fk)
    log_gamma, beta = data_dependent_gates(q, k, W_gamma, W_beta, d_phi=fq.shape[3])
    g = log_gamma[..., 0] if log_gamma.shape[3] == 1 else log_gamma
    va = np.concatenate([v, np.ones(v.shape[:3] + (1,))], axis=3)
    out, _ = _gla(fq, beta * fk, va, g, 1.0, None, form, chunk_size,
                  ("q, k, v, W_gamma, W_beta, feature_map", "k, v, W_beta, feature_map"))
    num, den = out[..., :-1], np.broadcast_to(out[..., -1:] + eps, out[..., :-1].shape)
    with np.errstate(over="ignore"):
        y = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    return finite_result(y, "an output (numerator / normaliser)", "q, k, v, eps, feature_map")


__all__ = ["data_dependent_gates", "gated_kernel_attention"]
