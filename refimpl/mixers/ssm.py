"""Selective state-space scan (Mamba) and the causal depthwise convolution in front of it.

The recurrence (the definition; Gu & Dao 2023, "Mamba", Algorithm 2; mamba_ssm 2.3.2
``mamba_ssm/ops/selective_scan_interface.py`` ``selective_scan_ref``), per channel (h, p)
with a diagonal state of size N::

    delta_t = softplus(delta_t + delta_bias)     (each optional)
    Abar_t  = exp(delta_t A)                     ZOH for A (exact for a constant input over the step)
    Bbar_t  = delta_t B_t                        Euler for B, as selective_scan_ref: ``delta * B * u``
              or (exp(delta_t A) - 1) / A * B_t  ZOH for B too (``discretization="zoh"``; the S4/Mamba paper)
    x_t     = Abar_t * x_{t-1} + Bbar_t u_t      x: (N,), elementwise (A diagonal)
    y_t     = C_t . x_t + D u_t
    out_t   = y_t * silu(z_t)                    (z optional)

Forms, all equal to the definition:

* ``"sequential"``: the loop above;
* ``"associative"``: the same first-order linear recurrence as a prefix scan of pairs
  (a_t, b_t) = (Abar_t, Bbar_t u_t) under (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), which is
  associative, in ceil(log2 L) doubling steps (Hillis-Steele; Blelloch 1990; Smith et al. 2023 S5);
* ``"convolution"``: only when delta, B and C do not depend on t (a time-invariant SSM):
  x_t = sum_{j<=t} Abar^{t-j} Bbar u_j, so y_t = sum_{j=0}^{t} Kbar_{t-j} u_j + D u_t with
  the kernel Kbar_k = sum_n C_n Abar_n^k Bbar_n, k = 0, 1, ... (the notes write
  y_t = sum_{j<t} C A^{t-j-1} B u_j: one step off from its own recurrence s_t = A s_{t-1} + B u_t,
  which includes the j = t term with A^0; docs/errata.md#e15). Computed directly here; an FFT gives
  the same sum in O(L log L).

Layout (B, H, L, P) as attention: H heads of P channels (Mamba-1's d_inner channels are
(h, p) with d_inner = H P); u, delta, z (B, H, L, P); A (H, P, N) (negative real; Mamba stores
A_log and uses A = -exp(A_log)); B, C (B, G, L, N) with H % G == 0, head h reading group
h // (H / G) (Mamba's ``repeat(B, "B G N L -> B (G H) N L")``); D, delta_bias (H, P).
The state is (B, H, P, N).
"""

from __future__ import annotations

import numpy as np

from scipy.special import expit

from .._validate import as_float_array, choice, finite_result, flag, leading_shape, positive_int

FORMS = ("sequential", "associative", "convolution")
DISCRETIZATIONS = ("zoh_a_euler_b", "zoh")


def softplus(x):
    """softplus(x) = log(1 + e^x), computed as logaddexp(0, x) (no overflow; ~x for large x)."""
    return np.logaddexp(0.0, as_float_array(x, "x"))


def silu(x):
    """silu(x) = x sigmoid(x) (torch ``F.silu``); sigmoid by ``expit``, so e^-x never overflows."""
    x = as_float_array(x, "x")
    return x * expit(x)


class _Setup:
    """Validated inputs and the discretised (Abar, Bbar u) every form starts from."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, initial_state):
        self.u = as_float_array(u, "u", ndim=4)
        b, H, L, P = self.u.shape
        delta = as_float_array(delta, "delta", ndim=4)
        leading_shape(delta, "delta", (b, H, L, P), "(B, H, L, P) of u")
        self.A = as_float_array(A, "A", ndim=3)
        leading_shape(self.A, "A", (H, P), "(H, P)")
        N = self.A.shape[2]
        Bm, Cm = as_float_array(B, "B", ndim=4), as_float_array(C, "C", ndim=4)
        G = Bm.shape[1]
        for arr, name in ((Bm, "B"), (Cm, "C")):
            leading_shape(arr, name, (b, G, L, N), "(B, G, L, N)")
        if G == 0 or H % G:
            raise ValueError(f"B: number of groups {G} must divide the number of heads {H}")
        self.Bg = np.repeat(Bm, H // G, axis=1)  # head h reads group h // (H // G)
        self.Cg = np.repeat(Cm, H // G, axis=1)
        if delta_bias is not None:
            db = as_float_array(delta_bias, "delta_bias", ndim=2)
            leading_shape(db, "delta_bias", (H, P), "(H, P)")
            delta = delta + db[None, :, None, :]
        self.delta = softplus(delta) if delta_softplus else delta
        flag(delta_softplus, "delta_softplus")
        if (self.delta < 0).any():
            raise ValueError("delta: step sizes must be >= 0 (after delta_bias and softplus)")
        if (self.A > 0).any():
            raise ValueError("A: expected a stable diagonal A <= 0 (Mamba uses A = -exp(A_log))")
        self.D = None if D is None else as_float_array(D, "D", ndim=2)
        if self.D is not None:
            leading_shape(self.D, "D", (H, P), "(H, P)")
        self.z = None if z is None else as_float_array(z, "z", ndim=4)
        if self.z is not None and self.z.shape != self.u.shape:
            raise ValueError(f"z: expected the shape of u {self.u.shape}, got {self.z.shape}")
        choice(discretization, "discretization", DISCRETIZATIONS)
        dA = self.delta[..., None] * self.A[None, :, None]  # (B, H, L, P, N)
        self.Abar = np.exp(dA)
        if discretization == "zoh_a_euler_b":
            Bfac = self.delta[..., None]
        else:  # (exp(dA) - 1) / A = delta * expm1(dA) / dA; its limit delta as dA -> 0
            # written with dA, not A: for a subnormal A, expm1(delta A) / A loses every digit
            safe = np.where(dA == 0, 1.0, dA)
            Bfac = self.delta[..., None] * np.where(dA == 0, 1.0, np.expm1(dA) / safe)
        self.Bbar = Bfac * self.Bg[:, :, :, None, :]  # (B, H, L, P, N)
        self.Bu = self.Bbar * self.u[..., None]  # Bbar_t u_t
        self.x0 = np.zeros((b, H, P, N))
        if initial_state is not None:
            self.x0 = as_float_array(initial_state, "initial_state", ndim=4)
            leading_shape(self.x0, "initial_state", (b, H, P, N), "(B, H, P, N)")
        self.L = L

    def output(self, xs: np.ndarray) -> np.ndarray:
        """y_t = C_t . x_t (+ D u_t) (* silu(z_t)) from the states xs (B, H, L, P, N)."""
        y = np.einsum("bhlpn,bhln->bhlp", xs, self.Cg)
        return self.finish(y)

    def finish(self, y):
        if self.D is not None:
            y = y + self.D[None, :, None, :] * self.u
        return y if self.z is None else y * silu(self.z)


def _associative_scan(a, b):
    """Inclusive prefix scan of (a, b) along axis 2 under (a1,b1) o (a2,b2) = (a1 a2, a2 b1 + b2)."""
    a, b = a.copy(), b.copy()
    L, d = a.shape[2], 1
    while d < L:
        a_prev, b_prev = a[:, :, :-d], b[:, :, :-d]
        b[:, :, d:] = a[:, :, d:] * b_prev + b[:, :, d:]
        a[:, :, d:] = a[:, :, d:] * a_prev
        d *= 2
    return a, b


def selective_scan(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False,
                   discretization="zoh_a_euler_b", initial_state=None, form="sequential"):
    """Mamba's selective scan (module doc). Returns (out (B, H, L, P), last state (B, H, P, N))."""
    choice(form, "form", FORMS)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        s = _Setup(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, initial_state)
        out, last = _forms(s, form)
    finite_result(out, "an output", "u, delta, A, B, C, D, delta_bias, initial_state")
    finite_result(last, "the last state", "u, delta, A, B, delta_bias, initial_state")
    return out, last


def _forms(s: _Setup, form: str):
    if form == "sequential":
        x, xs = s.x0, np.empty(s.Bu.shape)
        for t in range(s.L):
            x = s.Abar[:, :, t] * x + s.Bu[:, :, t]
            xs[:, :, t] = x
        return s.output(xs), x
    if form == "associative":
        a, b = _associative_scan(s.Abar, s.Bu)
        xs = a * s.x0[:, :, None] + b  # prefix product applied to the initial state
        return s.output(xs), (xs[:, :, -1] if s.L else s.x0)
    if form == "convolution":
        for arr, name in ((s.delta, "delta"), (s.Bg, "B"), (s.Cg, "C")):
            if s.L and not np.array_equal(arr, np.broadcast_to(arr[:, :, :1], arr.shape)):
                raise ValueError(f"form='convolution' needs a time-invariant SSM: {name} varies along L")
        if not s.L:
            return s.finish(np.zeros(s.u.shape)), s.x0
        Abar, Bbar, c = s.Abar[:, :, 0], s.Bbar[:, :, 0], s.Cg[:, :, 0]  # (B, H, P, N) x2, (B, H, N)
        powers = Abar[:, :, None] ** np.arange(s.L + 1)[None, None, :, None, None]  # Abar^k, k = 0..L
        kernel = np.einsum("bhkpn,bhn->bhkp", powers[:, :, :-1] * Bbar[:, :, None], c)  # Kbar_k, k < L
        t = np.arange(s.L)
        lag = t[:, None] - t[None, :]
        Kmat = np.where((lag >= 0)[None, None, :, :, None], kernel[:, :, np.maximum(lag, 0)], 0.0)
        y = np.einsum("bhtjp,bhjp->bhtp", Kmat, s.u)
        y = y + np.einsum("bhtpn,bhpn,bhn->bhtp", powers[:, :, 1:], s.x0, c)  # C Abar^{t+1} x_init
        last = np.einsum("bhjpn,bhjp->bhpn", powers[:, :, -2::-1] * Bbar[:, :, None], s.u) + powers[:, :, -1] * s.x0
        return s.finish(y), last


def causal_conv1d(x, weight, bias=None, *, activation=None):
    """Depthwise causal convolution, as ``causal_conv1d_ref`` (Dao-AILab causal-conv1d 1.6.1,
    ``causal_conv1d/causal_conv1d_interface.py``), which is ``F.conv1d`` (cross-correlation)
    with W - 1 zeros of left padding:

        out_t = bias + sum_{i=0}^{W-1} weight[i] * x_{t - (W-1) + i}     (x_s = 0 for s < 0)

    so weight[W-1] multiplies the current token. x (B, H, L, P); weight (H, P, W); bias (H, P);
    activation None or "silu".
    """
    x = as_float_array(x, "x", ndim=4)
    weight = as_float_array(weight, "weight", ndim=3)
    if activation is not None:
        choice(activation, "activation", ("silu", "swish"))
    b, H, L, P = x.shape
    leading_shape(weight, "weight", (H, P), "(H, P)")
    W = positive_int(weight.shape[2], "weight width")
    xp = np.concatenate([np.zeros((b, H, W - 1, P)), x], axis=2)
    out = sum(weight[None, :, None, :, i] * xp[:, :, i : i + L] for i in range(W))
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=2)
        leading_shape(bias, "bias", (H, P), "(H, P)")
        out = out + bias[None, :, None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        out = out if activation is None else silu(out)  # (inf from an overflowed sum is caught below)
    return finite_result(out, "an output", "x, weight, bias")


__all__ = ["DISCRETIZATIONS", "FORMS", "causal_conv1d", "selective_scan", "silu", "softplus"]
