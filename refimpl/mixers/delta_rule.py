"""The delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet), recurrent and chunked.

The recurrence (the definition), state S (K x V) as in flash-linear-attention::

    for t = 1 .. L:
        S   = exp(g_t) S_{t-1}                     # gated DeltaNet: decay first (g = 0: DeltaNet)
        u_t = beta_t (v_t - S^T k_t)               # the "delta": new value minus what S recalls for k_t
        S_t = S + k_t u_t^T = (I - beta_t k_t k_t^T) S + beta_t k_t v_t^T
        o_t = scale * S_t^T q_t                    # read after the write

Transposed (V x K) this is Schlag et al. 2021 / Yang et al. 2024 ("Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", eq. 1):
S_t = S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T. Gated: Yang, Kautz, Hatamizadeh 2025
("Gated Delta Networks"), S_t = S_{t-1}(alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T,
alpha_t = exp(g_t). docs/errata.md#e10: the notes' "delta attention" S_t = gamma S_{t-1} + beta
phi(k) v^T has no -beta k k^T S term: it is gated linear attention
(:mod:`refimpl.mixers.gated`), not the delta rule.

Chunked (WY / UT transform; Yang et al. 2024 sec. 3; fla ``fla/ops/gated_delta_rule/naive.py``
``naive_chunk_gated_delta_rule``, fla 0.5.2). Within a chunk of c tokens with local cumulative
log-gates gam_i = g_a + .. + g_i and Gam_ij = exp(gam_i - gam_j) (i >= j), all u_i solve the
unit lower-triangular system

    u_i + beta_i sum_{j<i} Gam_ij (k_i . k_j) u_j = beta_i (v_i - exp(gam_i) S_prev^T k_i)
    i.e.  T^{-1} U = diag(beta) (V - diag(exp(gam)) K S_prev),  T^{-1} = I + strict_tril(diag(beta) (K K^T * Gam))

so U = T diag(beta) V - (T diag(beta exp(gam)) K) S_prev (the "UT transform": u = U_ - W S_prev), then

    O      = scale * [diag(exp(gam)) Q S_prev + tril(Q K^T * Gam) U]
    S_next = exp(gam_last) S_prev + (K * exp(gam_last - gam))^T U

Conventions: layout (B, H, L, D): q, k (B, H, L, K), v (B, H, L, V), beta (B, H, L) or
(B, H, L, V) (fla ``delta_rule_recurrence`` allows a per-value-channel beta), g (B, H, L) <= 0.
``scale`` default K^-0.5 (fla). Keys are usually L2-normalised (fla ``use_qk_l2norm_in_kernel``);
with |k| = 1 and 0 <= beta <= 1 (or <= 2) each I - beta k k^T is a contraction, so
|S_t| <= |S_{t-1}| + |beta_t v_t|. The spec does not normalise: pass normalised keys.
"""

from __future__ import annotations

import numpy as np

from .._validate import mixers as VX
from .._validate import as_float_array, choice, chunk_starts, finite_result, leading_shape, positive_float
from .gated import G_FLOOR

FORMS = ("recurrent", "chunked")


class _Setup:
    """Validated q, k, v, beta (B, H, L, V-broadcastable), g (B, H, L), scale and S_init."""

    def __init__(self, q, k, v, beta, g, scale, initial_state):
        self.q = as_float_array(q, "q", ndim=4)
        B, H, L, K = self.q.shape
        self.k = as_float_array(k, "k", ndim=4)
        leading_shape(self.k, "k", (B, H, L, K), "(B, H, L, K) of q")
        self.v = as_float_array(v, "v", ndim=4)
        leading_shape(self.v, "v", (B, H, L), "(B, H, L) of q")
        V = self.v.shape[3]
        self.B, self.H, self.L, self.K, self.V = B, H, L, K, V
        self.beta = VX.delta_beta(beta, B, H, L, V)
        self.g = np.zeros((B, H, L))
        if g is not None:
            self.g = np.maximum(VX.delta_log_gates(g, B, H, L), G_FLOOR)  # exp(g) is 0 either way; keeps chunk cumsums exact (gated.G_FLOOR)
        self.scale = K ** -0.5 if scale is None else positive_float(scale, "scale")
        self.S0 = np.zeros((B, H, K, V))
        if initial_state is not None:
            self.S0 = as_float_array(initial_state, "initial_state", ndim=4)
            leading_shape(self.S0, "initial_state", (B, H, K, V), "(B, H, K, V)")


def _chunk(s: _Setup, S, a: int, b: int):
    """Outputs of tokens a..b-1 and the state after them, by the UT transform (module doc)."""
    q, k, v, beta = s.q[:, :, a:b], s.k[:, :, a:b], s.v[:, :, a:b], s.beta[:, :, a:b]
    c = b - a
    gam = np.cumsum(s.g[:, :, a:b], axis=2)  # (B, H, c)
    lower = np.tril(np.ones((c, c), dtype=bool))
    Gam = np.exp(np.where(lower, gam[..., :, None] - gam[..., None, :], -np.inf))
    kk = k @ np.swapaxes(k, -1, -2) * Gam
    # T^{-1} = I + strict_tril(diag(beta) (K K^T * Gam)); value columns are independent, so a
    # per-value-channel beta gives one system per column (axis 2 below), a per-head beta one system.
    bcol = np.moveaxis(beta, 3, 2)[..., :, None]  # (B, H, 1 or V, c, 1)
    Tinv = np.eye(c) + np.tril(bcol * kk[:, :, None], -1)
    rhs = beta * (v - np.exp(gam)[..., None] * (k @ S))  # diag(beta) (V - diag(e^gam) K S_prev), (B, H, c, V)
    if beta.shape[3] == 1:
        U = np.linalg.solve(Tinv[:, :, 0], rhs)
    else:
        U = np.moveaxis(np.linalg.solve(Tinv, np.moveaxis(rhs, 3, 2)[..., None])[..., 0], 2, 3)
    o = s.scale * (np.exp(gam)[..., None] * q @ S + np.tril(q @ np.swapaxes(k, -1, -2) * Gam) @ U)
    kd = k * np.exp(gam[..., -1:] - gam)[..., None]
    return o, np.exp(gam[..., -1])[..., None, None] * S + np.swapaxes(kd, -1, -2) @ U


def delta_rule(q, k, v, beta, g=None, *, scale=None, initial_state=None, form="recurrent", chunk_size=64):
    """(Gated) DeltaNet: o_t = scale S_t^T q_t, S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T.

    ``form``: "recurrent" (the definition) or "chunked" (UT transform, any ``chunk_size``).
    Returns (o (B, H, L, V), final state (B, H, K, V)).
    """
    s = _Setup(q, k, v, beta, g, scale, initial_state)
    choice(form, "form", FORMS)
    starts = chunk_starts(s.L, chunk_size)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        try:
            o, S = _forms(s, form, starts, chunk_size)
        except np.linalg.LinAlgError:  # T^-1 is unit lower triangular: singular only once overflowed to inf/NaN
            o = S = np.full(1, np.inf)
    # unnormalised keys with beta |k|^2 > 2 make I - beta k k^T expand: the state can grow geometrically
    finite_result(o, "an output", "q, k, v, beta, scale, initial_state")
    finite_result(S, "the final state", "k, v, beta, initial_state")
    return o, S


def _forms(s: _Setup, form: str, starts: list, chunk_size: int):
    if form == "recurrent":
        S, o = s.S0, np.empty((s.B, s.H, s.L, s.V))
        for t in range(s.L):
            kt = s.k[:, :, t]
            S = np.exp(s.g[:, :, t])[..., None, None] * S
            u = s.beta[:, :, t] * (s.v[:, :, t] - np.einsum("bhkv,bhk->bhv", S, kt))
            S = S + kt[..., :, None] * u[..., None, :]
            o[:, :, t] = s.scale * np.einsum("bhk,bhkv->bhv", s.q[:, :, t], S)
        return o, S
    S, parts = s.S0, []  # chunked
    for a in starts:
        o, S = _chunk(s, S, a, min(a + int(chunk_size), s.L))
        parts.append(o)
    return (np.concatenate(parts, axis=2) if parts else np.empty((s.B, s.H, 0, s.V))), S


__all__ = ["FORMS", "delta_rule"]
