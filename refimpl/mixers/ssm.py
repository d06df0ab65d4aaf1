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
  associative: blocks of sqrt(L) scanned side by side, then their totals (Blelloch 1990; Smith et
  al. 2023 S5);
* ``"chunked"``: the sequence cut into chunks of ``CHUNK`` steps [a, b); with S_t = A sum_{a<i<=t} delta_i
  (the decay inside the chunk after its first step, S_a = 0, a cumulative sum of exponents)::

      x_t = exp(S_t) (Abar_a x_{a-1} + sum_{a<=j<=t} exp(-S_j) Bbar_j u_j),   a <= t < b

  the running sum one product with a lower triangle of ones, the whole chunk at once. The factor
  exp(-S_j) <= exp(span), span = max -S_{b-1} over the chunk's channels, is kept below e^SPAN_MAX
  (a chunk beyond it, or one whose scaled terms pass float64, runs the loop). Error: the computed S_t carries at most gamma_c |S_t| <=
  gamma_c span (a running sum of c non-negative steps times A, c = CHUNK), so exp(S_t) exp(-S_j) is
  exp(S_t - S_j) to a relative 2 gamma_c span + 5u (two exps of 1 ulp, one quotient). A chunk adds
  at most (c + 9) u more (its running sum of c terms, the products with E_t, Abar_a and x_{a-1},
  Abar_a's own exponent u delta_a |A|); a path crosses at most L / c + 2 chunks, whose spans add up
  to at most the total decay Dmax = max sum_t delta_t |A|. So each term of x_t is within
  (2c + 1) Dmax u + (c + 9)(L / c + 2) u of its exact value, relative; with the N-term output sum,
  D u and the gate: n = 3L + N + 40 + (2c + 1) Dmax (c = 8) in the mixers' gamma_n M bound
  (tests/test_mixers_oracle.py against mpmath, tests/test_mixers_forms.py against the loop);
* ``"convolution"``: only when delta, B and C do not depend on t (a time-invariant SSM):
  x_t = sum_{j<=t} Abar^{t-j} Bbar u_j, so y_t = sum_{j=0}^{t} Kbar_{t-j} u_j + D u_t with
  the kernel Kbar_k = sum_n C_n Abar_n^k Bbar_n, k = 0, 1, ... (the notes write
  y_t = sum_{j<t} C A^{t-j-1} B u_j: one step off from its own recurrence s_t = A s_{t-1} + B u_t,
  which includes the j = t term with A^0; docs/errata.md#e15). Computed directly here; an FFT gives
  the same sum in O(L log L).

Mamba-2's SSD (:func:`ssd`) is the case of one scalar decay per head: A[h, p, n] = a_h and
delta[b, h, t, p] = dt[b, h, t]; its chunked form (the SSD algorithm) is computed directly.

Layout (B, H, L, P) as attention: H heads of P channels (Mamba-1's d_inner channels are
(h, p) with d_inner = H P); u, delta, z (B, H, L, P); A (H, P, N) (negative real; Mamba stores
A_log and uses A = -exp(A_log)); B, C (B, G, L, N) with H % G == 0, head h reading group
h // (H / G) (Mamba's ``repeat(B, "B G N L -> B (G H) N L")``); D, delta_bias (H, P).
The state is (B, H, P, N).
"""

from __future__ import annotations

import numpy as np

from .. import logistic
from .._parallel import map_blocks
from .._validate import as_float_array, choice, chunk_starts, finite_result, flag, leading_shape, positive_int
from .._validate import mixers as VX

FORMS = ("sequential", "associative", "convolution", "chunked")
CHUNK = 8
"""Steps per chunk of the chunked form (measured fastest of 8, 16, 32, 64 at d_inner 256, N 16, L 1024-2048)."""
SPAN_MAX = 64.0
"""Largest decay -S_t within one chunk for which the chunked form factors exp(S_t - S_j) = exp(S_t) exp(-S_j):
exp(-S_j) <= e^64 ~ 6e27, far from overflow; a chunk that decays more runs step by step."""
DISCRETIZATIONS = ("zoh_a_euler_b", "zoh")


def softplus(x):
    """softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|) (refimpl.logistic: no overflow, e^x itself
    for x << 0)."""
    return logistic.softplus(as_float_array(x, "x"))


def silu(x):
    """silu(x) = x sigmoid(x) (torch ``F.silu``), by refimpl.logistic: exact in the tails (silu(-711) = -1.2e-306)."""
    return logistic.silu(as_float_array(x, "x"))


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
        VX.head_groups(G, H, f"heads {H}")
        self.Bg = np.repeat(Bm, H // G, axis=1)  # head h reads group h // (H // G)
        self.Cg = np.repeat(Cm, H // G, axis=1)
        if delta_bias is not None:
            db = as_float_array(delta_bias, "delta_bias", ndim=2)
            leading_shape(db, "delta_bias", (H, P), "(H, P)")
            delta = delta + db[None, :, None, :]
        self.delta = softplus(delta) if delta_softplus else delta
        flag(delta_softplus, "delta_softplus")
        VX.step_sizes(self.delta)
        VX.stable_diagonal(self.A)
        self.D = None if D is None else as_float_array(D, "D", ndim=2)
        if self.D is not None:
            leading_shape(self.D, "D", (H, P), "(H, P)")
        self.z = None if z is None else as_float_array(z, "z", ndim=4)
        if self.z is not None:
            VX.same_shape_as(self.z, "z", self.u, "u")
        self.discretization = choice(discretization, "discretization", DISCRETIZATIONS)
        self.x0 = np.zeros((b, H, P, N))
        if initial_state is not None:
            self.x0 = as_float_array(initial_state, "initial_state", ndim=4)
            leading_shape(self.x0, "initial_state", (b, H, P, N), "(B, H, P, N)")
        self.L = L
        # one row per step (the forms slice steps; Mamba's (B, D, L) arrive transposed): products stay contiguous
        self.u, self.delta = np.ascontiguousarray(self.u), np.ascontiguousarray(self.delta)
        self.z = None if self.z is None else np.ascontiguousarray(self.z)
        self.A_np = np.ascontiguousarray(np.swapaxes(self.A, 1, 2))  # (H, N, P)

    def _laid_out(self, steps: slice, np_state: bool):
        """delta_t, A, B_t, u_t of the steps t in ``steps``, broadcast to the state's axes (..., P, N), or
        (..., N, P) with ``np_state`` (P contiguous: the products over the state run long inner loops)."""
        d, u, Bg = self.delta[:, :, steps], self.u[:, :, steps], self.Bg[:, :, steps]
        if np_state:
            return d[..., None, :], self.A_np[None, :, None], Bg[..., :, None], u[..., None, :]
        return d[..., None], self.A[None, :, None], Bg[..., None, :], u[..., None]

    def decays(self, steps: slice = slice(None), np_state: bool = False) -> np.ndarray:
        """Abar_t = exp(delta_t A) for the steps t in ``steps``, (B, H, t, P, N) (or N, P), a new array."""
        d, A, _, _ = self._laid_out(steps, np_state)
        dA = d * A
        return np.exp(dA, out=dA)

    def _bfac(self, d, A) -> np.ndarray:
        """Bbar_t / B_t: delta_t (Euler) or (exp(delta_t A) - 1) / A = delta_t expm1(dA) / dA (ZOH; its limit
        delta_t as dA -> 0; written with dA, not A: for a subnormal A, expm1(delta A) / A loses every digit)."""
        if self.discretization == "zoh_a_euler_b":
            return d
        dA = d * A
        return d * np.where(dA == 0, 1.0, np.expm1(dA) / np.where(dA == 0, 1.0, dA))

    def inputs(self, steps: slice = slice(None), np_state: bool = False) -> np.ndarray:
        """Bbar_t u_t for the steps t in ``steps``, (B, H, t, P, N) (or N, P), a new array (the forms write
        over it); Euler: one product (delta_t u_t) B_t."""
        d, A, Bg, u = self._laid_out(steps, np_state)
        if self.discretization == "zoh_a_euler_b":
            return (d * u) * Bg
        return self._bfac(d, A) * (Bg * u)

    @property
    def Bbar(self) -> np.ndarray:
        """Bbar_t = Bfac_t B_t, (B, H, L, P, N) (the convolution form's kernel)."""
        d, A, Bg, _ = self._laid_out(slice(None), False)
        return self._bfac(d, A) * Bg

    def output(self, xs: np.ndarray) -> np.ndarray:
        """y_t = C_t . x_t (+ D u_t) (* silu(z_t)) from the states xs (B, H, L, P, N)."""
        y = np.einsum("bhlpn,bhln->bhlp", xs, self.Cg)
        return self.finish(y)

    def finish(self, y):
        if self.D is not None:
            y = y + self.D[None, :, None, :] * self.u
        return y if self.z is None else y * silu(self.z)


def _chunked(s: _Setup):
    """The chunked form (module doc): states chunk by chunk, each chunk's running sum one product; the
    state held as (N, P) here (``_Setup.inputs``), transposed back at the end."""
    B, H, L, P = s.u.shape
    N = s.A.shape[2]
    x, ys = np.swapaxes(s.x0, 2, 3), np.empty(s.u.shape)
    steepest = np.max(-s.A, axis=2, initial=0.0)  # (H, P): the fastest decay of each channel
    ones = np.tri(CHUNK)  # lower triangle of ones: the running sum over j <= t
    for a in range(0, L, CHUNK):
        sl, m = slice(a, min(a + CHUNK, L)), min(CHUNK, L - a)
        cd = np.zeros((B, H, m, 1, P))
        np.cumsum(s.delta[:, :, a + 1 : sl.stop, None], axis=2, out=cd[:, :, 1:])  # sum_{a<i<=t} delta_i
        entering = s.decays(slice(a, a + 1), np_state=True)[:, :, 0] * x  # Abar_a x_{a-1}
        factored = (cd[:, :, -1, 0] * steepest).max(initial=0.0) <= SPAN_MAX
        if factored:
            bu = s.inputs(sl, np_state=True)  # Bbar_j u_j, (B, H, m, N, P)
            E = np.exp(cd * s.A_np[None, :, None])  # exp(S_t)
            bu /= E  # exp(-S_j) Bbar_j u_j
            bu[:, :, 0] += entering
            xs = (ones[:m, :m] @ bu.reshape(B, H, m, N * P)).reshape(bu.shape)
            xs *= E
        # decays beyond e^SPAN_MAX inside the chunk, or an exp(-S_j) Bbar_j u_j past float64 (the last
        # running sum holds every term: non-finite if any is): the recurrence, step by step
        if not factored or not np.isfinite(xs[:, :, -1]).all():
            xs, Abar = s.inputs(sl, np_state=True), s.decays(sl, np_state=True)
            xs[:, :, 0] += entering
            for t in range(1, m):
                xs[:, :, t] += Abar[:, :, t] * xs[:, :, t - 1]
        ys[:, :, sl] = (s.Cg[:, :, sl, None, :] @ xs)[:, :, :, 0]  # y_t = C_t . x_t
        x = xs[:, :, -1]
    return s.finish(ys), np.swapaxes(x, 2, 3).copy()


def _associative_scan(a, b):
    """The second part of the inclusive prefix scan of (a, b) along axis 2 under
    (a1,b1) o (a2,b2) = (a1 a2, a2 b1 + b2): with (a_0, b_0) = (Abar_0, Abar_0 x_init + Bbar_0 u_0)
    these are the states x_t. Writes them over b when L is a multiple of c (the caller's own array).

    The blocked scan of Blelloch 1990 (sec. 1.3, p processors), in three phases over blocks of c
    elements (c the power of two at or above sqrt(L)), every block at once:
    1. reduce each block to its total (a_c ... a_1, x_c from x_0 = 0), one position at a time;
    2. scan the block totals (``_scan_recursive``): the state entering each block;
    3. run each block's recurrence again from the state entering it.
    Each step applies o to whole arrays, so by associativity the result is the prefix scan. Groups
    of blocks run on threads (``refimpl._parallel``), each computing exactly what it would alone.
    """
    B, H, L = a.shape[:3]
    c = 1
    while c * c < L:
        c *= 2
    nb = -(-L // c)
    if nb * c != L:  # identity elements (1, 0) fill the last block
        pad = [(0, 0)] * a.ndim
        pad[2] = (0, nb * c - L)
        a, b = np.pad(a, pad, constant_values=1.0), np.pad(b, pad, constant_values=0.0)
    A, X = a.reshape((B, H, nb, c) + a.shape[3:]), b.reshape((B, H, nb, c) + a.shape[3:])
    n = min(nb, 8)  # groups of a few blocks: each phase's operands stay in cache
    groups = [slice(g * nb // n, (g + 1) * nb // n) for g in range(n)]
    total_a, total_x = np.empty_like(A[:, :, :, 0]), np.empty_like(X[:, :, :, 0])

    def reduce_blocks(js: slice):  # phase 1 for blocks js
        ta, tx = A[:, :, js, 0].copy(), X[:, :, js, 0].copy()
        for i in range(1, c):
            tx *= A[:, :, js, i]
            tx += X[:, :, js, i]
            ta *= A[:, :, js, i]
        total_a[:, :, js], total_x[:, :, js] = ta, tx

    map_blocks(reduce_blocks, groups, A.size)
    _, T = _scan_recursive(total_a, total_x)  # phase 2: the state at the end of each block

    def run_blocks(js: slice):  # phase 3 for blocks js: x_i = a_i x_{i-1} + b_i from the entering state
        x = np.zeros_like(T[:, :, js])
        if js.start > 0:
            x[:, :, 0] = T[:, :, js.start - 1]
        x[:, :, 1:] = T[:, :, js.start : js.stop - 1]
        for i in range(c):
            X[:, :, js, i] += A[:, :, js, i] * x
            x = X[:, :, js, i]

    map_blocks(run_blocks, groups, A.size)
    return X.reshape((B, H, nb * c) + a.shape[3:])[:, :, :L]


def _scan_recursive(a, b):
    """The same scan, work-efficient (Blelloch 1990, sec. 1.4 recursive form): combine neighbours
    (0,1), (2,3), ..., scan those pairs (the prefixes ending at the odd positions), then each even
    position 2i >= 2 is prefix(2i - 1) o element(2i). O(L) combines in ceil(log2 L) levels."""
    L = a.shape[2]
    if L <= 1:
        return a.copy(), b.copy()
    left_a, left_b = a[:, :, 0 : L - 1 : 2], b[:, :, 0 : L - 1 : 2]  # elements 0, 2, ..., paired
    right_a, right_b = a[:, :, 1::2], b[:, :, 1::2]  # elements 1, 3, ...
    odd_a, odd_b = _scan_recursive(left_a * right_a, right_a * left_b + right_b)  # prefixes at 1, 3, ...
    pa, pb = np.empty_like(a), np.empty_like(b)
    pa[:, :, 1::2], pb[:, :, 1::2] = odd_a, odd_b
    pa[:, :, 0], pb[:, :, 0] = a[:, :, 0], b[:, :, 0]
    n_even = (L - 1) // 2  # even positions 2, 4, ... below L
    pa[:, :, 2::2] = a[:, :, 2::2] * odd_a[:, :, :n_even]
    pb[:, :, 2::2] = a[:, :, 2::2] * odd_b[:, :, :n_even] + b[:, :, 2::2]
    return pa, pb


def selective_scan(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False,
                   discretization="zoh_a_euler_b", initial_state=None, form="sequential"):
    """Mamba's selective scan (module doc). Returns (out (B, H, L, P), last state (B, H, P, N))."""
    choice(form, "form", FORMS)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        s = _Setup(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, initial_state)
        if form == "convolution":
            VX.time_invariant(((s.delta, "delta"), (s.Bg, "B"), (s.Cg, "C")), s.L)
        out, last = _forms(s, form)
    finite_result(out, "an output", "u, delta, A, B, C, D, delta_bias, initial_state")
    finite_result(last, "the last state", "u, delta, A, B, delta_bias, initial_state")
    return out, last


def _forms(s: _Setup, form: str):
    if form == "sequential":  # x_t = Abar_t x_{t-1} + Bbar_t u_t, written over Bbar_t u_t
        xs, x, Abar = s.inputs(), s.x0, s.decays()
        for t in range(s.L):
            xs[:, :, t] += Abar[:, :, t] * x
            x = xs[:, :, t]
        return s.output(xs), x.copy()
    if form == "associative":  # the initial state enters as Abar_0 x_init + Bbar_0 u_0 (the sequential first step)
        Abar, Bu = s.decays(), s.inputs()
        if s.L:
            Bu[:, :, 0] += Abar[:, :, 0] * s.x0
        xs = _associative_scan(Abar, Bu)
        return s.output(xs), (xs[:, :, -1].copy() if s.L else s.x0)
    if form == "chunked":
        return _chunked(s)
    if form == "convolution":
        if not s.L:
            return s.finish(np.zeros(s.u.shape)), s.x0
        Abar, Bbar, c = s.decays(slice(0, 1))[:, :, 0], s.Bbar[:, :, 0], s.Cg[:, :, 0]  # (B, H, P, N) x2, (B, H, N)
        powers = Abar[:, :, None] ** np.arange(s.L + 1)[None, None, :, None, None]  # Abar^k, k = 0..L
        kernel = np.einsum("bhkpn,bhn->bhkp", powers[:, :, :-1] * Bbar[:, :, None], c)  # Kbar_k, k < L
        t = np.arange(s.L)
        lag = t[:, None] - t[None, :]
        Kmat = np.where((lag >= 0)[None, None, :, :, None], kernel[:, :, np.maximum(lag, 0)], 0.0)
        y = np.einsum("bhtjp,bhjp->bhtp", Kmat, s.u)
        y = y + np.einsum("bhtpn,bhpn,bhn->bhtp", powers[:, :, 1:], s.x0, c)  # C Abar^{t+1} x_init
        last = np.einsum("bhjpn,bhjp->bhpn", powers[:, :, -2::-1] * Bbar[:, :, None], s.u) + powers[:, :, -1] * s.x0
        return s.finish(y), last


SSD_FORMS = ("sequential", "chunked")


def ssd(x, dt, A, B, C, D=None, z=None, *, initial_state=None, form="sequential", chunk_size=64):
    """Mamba-2's SSD layer: the selective scan with one scalar decay per head (Dao & Gu 2024,
    "Transformers are SSMs", section 6; mamba_ssm ``mamba_chunk_scan_combined``,
    ``mamba_ssm/ops/triton/ssd_combined.py``, whose reference is ``ssd_minimal_discrete``).

    The definition, per head h with a (P, N) state::

        h_t = exp(dt_t a_h) h_{t-1} + dt_t x_t B_t^T      (ZOH for the decay, Euler for B, as Mamba-1)
        y_t = h_t C_t + D_h x_t
        out = y * silu(z)                                  (z optional)

    i.e. :func:`selective_scan` with A[h, p, n] = a_h and delta[b, h, t, p] = dt[b, h, t] (tested
    equal). Forms: ``"sequential"`` (the loop) and ``"chunked"``, the SSD algorithm: chunks of
    ``chunk_size`` tokens, cum_t = sum of dt a over the chunk up to t (a sum of the exponents,
    never a log of a decay), within a chunk y_i = sum_{j<=i} e^{cum_i - cum_j} (C_i . B_j) dt_j x_j
    plus e^{cum_i} C_i h_prev, and between chunks h = e^{cum_last} h_prev + sum_j e^{cum_last -
    cum_j} dt_j x_j B_j^T.

    Layout as :func:`selective_scan`: x, z (B, H, L, P); dt (B, H, L) >= 0; A (H,) <= 0; B, C
    (B, G, L, N), head h reading group h // (H / G); D (H,) or (H, P); initial_state (B, H, P, N).
    Returns (out (B, H, L, P), last state (B, H, P, N)).
    """
    form = choice(form, "form", SSD_FORMS)
    xa = as_float_array(x, "x", ndim=4)
    b, H, L, P = xa.shape
    dta = as_float_array(dt, "dt", ndim=3)
    leading_shape(dta, "dt", (b, H, L), "(B, H, L) of x")
    Aa = as_float_array(A, "A", ndim=1)
    leading_shape(Aa, "A", (H,), "(H,)")
    VX.step_sizes(dta, "dt", after="", shown="min ")
    VX.stable_head_decay(Aa)
    Da = None if D is None else VX.ssd_skip(D, H, P)
    # the scalar-decay case of the selective scan: validated there, by the same names
    s = _Setup(xa, np.broadcast_to(dta[..., None], xa.shape), np.broadcast_to(Aa[:, None, None], (H, P, _state_size(B))),
               B, C, Da, z, None, False, "zoh_a_euler_b", initial_state)
    with np.errstate(over="ignore", invalid="ignore"):
        if form == "sequential":
            out, last = _ssd_sequential(s, dta, Aa)
        else:
            out, last = _ssd_chunked(s, dta, Aa, chunk_starts(L, chunk_size), positive_int(chunk_size, "chunk_size"))
    finite_result(out, "an output", "x, dt, A, B, C, D, initial_state")
    finite_result(last, "the last state", "x, dt, A, B, initial_state")
    return out, last


def _state_size(B) -> int:
    """N from B (B, G, L, N) (0 when B is not 4-d: _Setup then names the error)."""
    shape = np.shape(B)
    return shape[3] if len(shape) == 4 else 0


def _ssd_sequential(s: _Setup, dt, a):
    """The SSD recurrence, one scalar decay e^{dt_t a_h} per head and step."""
    h, ys = s.x0, np.empty(s.u.shape)
    for t in range(s.L):
        decay = np.exp(dt[:, :, t] * a[None, :])[..., None, None]  # (B, H, 1, 1)
        h = decay * h + (dt[:, :, t, None] * s.u[:, :, t])[..., None] * s.Bg[:, :, t, None, :]
        ys[:, :, t] = np.einsum("bhpn,bhn->bhp", h, s.Cg[:, :, t])
    return s.finish(ys), h


def _ssd_chunked(s: _Setup, dt, a, starts, Q):
    """The SSD chunked form (``ssd`` docstring) on the validated setup ``s``."""
    h = s.x0
    ys = np.empty(s.u.shape)
    for c0 in starts:
        sl = slice(c0, min(c0 + Q, s.L))
        cum = np.cumsum(dt[:, :, sl] * a[None, :, None], axis=2)  # (B, H, q)
        q = cum.shape[2]
        seg = np.exp(np.where(np.tril(np.ones((q, q), bool)), cum[..., :, None] - cum[..., None, :], -np.inf))
        Bc, Cc, xc = s.Bg[:, :, sl], s.Cg[:, :, sl], s.u[:, :, sl]
        dx = dt[:, :, sl, None] * xc  # dt_j x_j (B, H, q, P)
        scores = np.einsum("bhin,bhjn->bhij", Cc, Bc) * seg
        ys[:, :, sl] = np.einsum("bhij,bhjp->bhip", scores, dx) + np.exp(cum)[..., None] * np.einsum(
            "bhin,bhpn->bhip", Cc, h)
        decay_to_end = np.exp(cum[..., -1:] - cum)  # e^{cum_last - cum_j}
        h = np.exp(cum[..., -1])[..., None, None] * h + np.einsum("bhj,bhjp,bhjn->bhpn", decay_to_end, dx, Bc)
    return s.finish(ys), h


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
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=2)
        leading_shape(bias, "bias", (H, P), "(H, P)")
    xp = np.concatenate([np.zeros((b, H, W - 1, P)), x], axis=2)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowed sum (inf or nan) is refused below
        out = sum(weight[None, :, None, :, i] * xp[:, :, i : i + L] for i in range(W))
        if bias is not None:
            out = out + bias[None, :, None, :]
        out = out if activation is None else silu(out)
    return finite_result(out, "an output", "x, weight, bias")


__all__ = ["DISCRETIZATIONS", "FORMS", "causal_conv1d", "selective_scan", "silu", "softplus"]
