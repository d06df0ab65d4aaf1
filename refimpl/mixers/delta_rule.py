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

Everything but S_prev is known before the scan, so T (by doubling its inverted diagonal blocks,
``_unit_lower_inverse``), U_ = T diag(beta) V, W = T diag(beta exp(gam)) K and the masked products
are computed for a batch of chunks at once (``_chunks.BLOCK`` tokens); the loop over chunks carries S alone (u = U_ - W S_prev and
S_next: two products per chunk), and the outputs are again one batched product. A per-value-channel
beta is one delta rule per value column (the columns of S never mix).

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
from .._parallel import map_blocks
from . import _chunks
from ._chunks import chunks, head_groups, unchunk
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


def _unit_lower_inverse(N: np.ndarray) -> np.ndarray:
    """(I + N)^-1 for strictly lower triangular N (..., c, c), by doubling the inverted diagonal blocks
    (sizes 1, 2, 4, ...; N padded by zeros to a power of two), each step the block identity

        [[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]

    (two batched products a step; Higham 2002, "Accuracy and Stability of Numerical Algorithms",
    sec. 14.2.2, the blocked inversion whose error bound is forward substitution's)."""
    c = N.shape[-1]
    p = 1 << max(c - 1, 0).bit_length()
    Np = np.zeros(N.shape[:-2] + (p, p))
    Np[..., :c, :c] = N
    inv = np.ones(N.shape[:-2] + (p, 1, 1))  # the inverted diagonal blocks, (..., p / b, b, b); b = 1: 1 / 1
    b = 1
    while b < p:
        m = p // (2 * b)
        blocks = np.moveaxis(np.diagonal(Np.reshape(Np.shape[:-2] + (m, 2 * b, m, 2 * b)), axis1=-4, axis2=-2), -1, -3)
        Ainv, Dinv = inv[..., 0::2, :, :], inv[..., 1::2, :, :]
        nxt = np.zeros(N.shape[:-2] + (m, 2 * b, 2 * b))
        nxt[..., :b, :b], nxt[..., b:, b:] = Ainv, Dinv
        nxt[..., b:, :b] = -(Dinv @ blocks[..., b:, :b] @ Ainv)
        inv, b = nxt, 2 * b
    return inv[..., 0, :c, :c]


def _chunked(q, k, v, beta, g, scale: float, S0, c: int):
    """The chunked form (module doc) for a per-head beta (B, H, L, 1): (o (B, H, L, V), final state)."""
    Q, K, V, bt = chunks(q, c), chunks(k, c), chunks(v, c), chunks(beta, c)  # padding: k = v = beta = 0 write nothing
    gam = np.cumsum(chunks(g, c), axis=3)  # (B, H, n, c), local cumulative log-gates
    Kt = np.ascontiguousarray(np.swapaxes(K, -1, -2))
    if gam.any():
        lower = np.tri(c, dtype=bool)
        Gam = np.exp(np.where(lower, gam[..., :, None] - gam[..., None, :], -np.inf))  # exp(gam_i - gam_j), i >= j
        eg = np.exp(gam)[..., None]  # exp(gam_i)
        Kdt = np.ascontiguousarray(np.swapaxes(K * np.exp(gam[..., -1:] - gam)[..., None], -1, -2))
    else:  # every gate 1: each decay is exp(0) = 1 exactly
        Gam, eg, Kdt = np.tri(c), 1.0, Kt
    T = _unit_lower_inverse(np.tril(bt * (K @ Kt) * Gam, -1))  # T = (I + strict_tril(diag(beta) (K K^T * Gam)))^-1
    U_, W = T @ (bt * V), T @ (bt * eg * K)  # u = U_ - W S_prev
    scores = (Q @ Kt) * Gam  # tril(Q K^T * Gam)
    last = np.exp(gam[..., -1])[..., None, None]  # exp(gam_last), (B, H, n, 1, 1)
    entering, u, S = np.empty(Q.shape[:3] + S0.shape[2:]), np.empty_like(U_), S0
    for m in range(Q.shape[2]):
        entering[:, :, m] = S
        u[:, :, m] = U_[:, :, m] - W[:, :, m] @ S
        S = last[:, :, m] * S + Kdt[:, :, m] @ u[:, :, m]
    o = (eg * Q) @ entering
    o += scores @ u
    o *= scale
    return unchunk(o, q.shape[2]), S


def delta_rule(q, k, v, beta, g=None, *, scale=None, initial_state=None, form="recurrent", chunk_size=64):
    """(Gated) DeltaNet: o_t = scale S_t^T q_t, S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T.

    ``form``: "recurrent" (the definition) or "chunked" (UT transform, any ``chunk_size``).
    Returns (o (B, H, L, V), final state (B, H, K, V)).
    """
    s = _Setup(q, k, v, beta, g, scale, initial_state)
    choice(form, "form", FORMS)
    chunk_starts(s.L, chunk_size)  # validates chunk_size
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        o, S = _forms(s, form, chunk_size)
    # unnormalised keys with beta |k|^2 > 2 make I - beta k k^T expand: the state can grow geometrically
    finite_result(o, "an output", "q, k, v, beta, scale, initial_state")
    finite_result(S, "the final state", "k, v, beta, initial_state")
    return o, S


def _forms(s: _Setup, form: str, chunk_size: int):
    if form == "recurrent":
        S, o = s.S0, np.empty((s.B, s.H, s.L, s.V))
        for t in range(s.L):
            kt = s.k[:, :, t]
            S = np.exp(s.g[:, :, t])[..., None, None] * S
            u = s.beta[:, :, t] * (s.v[:, :, t] - np.einsum("bhkv,bhk->bhv", S, kt))
            S = S + kt[..., :, None] * u[..., None, :]
            o[:, :, t] = s.scale * np.einsum("bhk,bhkv->bhv", s.q[:, :, t], S)
        return o, (S if s.L else S.copy())  # never the caller's initial_state itself
    # a chunk longer than the sequence is the sequence (padding it would only multiply zeros)
    o, S, c = np.empty((s.B, s.H, s.L, s.V)), np.empty(s.S0.shape), min(int(chunk_size), max(s.L, 1))
    span = c * max(1, _chunks.BLOCK // c)

    def heads(hs: slice):  # chunked, a group of heads (_chunks.head_groups)
        # per-value-channel beta: one delta rule per value column (the columns of S never mix)
        for cols in ([slice(None)] if s.beta.shape[3] == 1 else [slice(i, i + 1) for i in range(s.V)]):
            St = s.S0[:, hs][..., cols]
            for a in range(0, s.L, span):  # batches of chunks, the state carried between them
                t = slice(a, a + span)
                o[:, hs, t][..., cols], St = _chunked(s.q[:, hs, t], s.k[:, hs, t], s.v[:, hs, t][..., cols],
                                                      s.beta[:, hs, t][..., cols], s.g[:, hs, t], s.scale, St, c)
            S[:, hs][..., cols] = St

    map_blocks(heads, head_groups(s.H), s.B * s.H * s.L * (4 * c + 6 * s.K) * s.V)
    return o, S


__all__ = ["FORMS", "delta_rule"]
