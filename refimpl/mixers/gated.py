"""Gated linear attention: one decayed outer-product recurrence in three forms.

The recurrence (the definition; every other form must equal it)::

    S_0 = S_init                                    (K x V; zeros unless given)
    for t = 1 .. L:
        S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T    # decay the old state FIRST, then write
        o_t = scale * S_t^T q_t                     # read AFTER the write: token t sees itself

with log-space gates g_t <= 0 (forget rate), one of

* ``g=None``: plain linear attention, S_t = S_{t-1} + k_t v_t^T (Katharopoulos et al. 2020,
  "Transformers are RNNs", eq. 16-18; :mod:`refimpl.mixers.linear_attention` adds the feature
  map and the normaliser on top of this module);
* scalar per head and step, shape (B, H, L): RetNet (Sun et al. 2023, eq. 1-6) when constant,
  g = log gamma_h with gamma_h = 1 - 2^(-5-h) (:func:`retnet_gammas`); Mamba-2 / gated
  RetNet style when data dependent;
* per key channel, shape (B, H, L, K): GLA (Yang et al. 2024, "Gated Linear Attention
  Transformers with Hardware-Efficient Training", eq. 3).

With G_t = sum_{s<=t} g_s (cumulative log-decay) the recurrence unrolls to the *parallel* form

    o_t = scale * sum_{j<=t} sum_c q_tc k_jc exp(G_tc - G_jc) v_j      (+ scale (q_t * exp(G_t))^T S_init)

and, cutting the sequence into chunks [a, b) of any size (the last one shorter), the *chunked*
form reads the carried state once per chunk and uses the parallel form inside the chunk:

    o_t   = scale * (q_t * exp(G_t - G_{a-1}))^T S_{a-1} + intra-chunk parallel form,  a <= t < b
    S_b-1 = diag(exp(G_{b-1} - G_{a-1})) S_{a-1} + sum_{a<=j<b} (k_j * exp(G_{b-1} - G_j)) v_j^T

Every exponent is G_later - G_earlier <= 0, so no form overflows for g <= 0. Gates below
``G_FLOOR`` = -800 are raised to it: exp(g) underflows to 0 either way (exp(-745) is float64's
smallest subnormal), and without the floor a gate like -1e300 would absorb every later gate into
the cumulative sum G (G_t - G_j = 0 for the small gates after it: a silent wrong answer).
Inputs whose exact outputs or states exceed float64 range are a ValueError naming the arrays,
never inf or NaN.

Conventions (named; docs/conventions.md#mixer-presets):

* layout (B, H, L, D) as attention: q, k (B, H, L, K), v (B, H, L, V), state (B, H, K, V).
  flash-linear-attention's naive references take (B, L, H, D) (``fla/ops/gla/naive.py``
  ``naive_recurrent_gla``, fla 0.5.2) except ``naive_retention`` and ``delta_rule`` (B, H, L, D).
* ``scale`` multiplies q; default K^-0.5 as fla (``naive_recurrent_gla``:
  ``scale = K ** -0.5``). Katharopoulos et al. and the notes use no scale: pass ``scale=1``
  (docs/notes.md#linear-attention).
* state updated before the output (fla ``naive_recurrent_gla``: ``h = h * gk.exp() + kv``
  then ``o = q h``); the "read before write" variant is a different layer, not a preset.
"""

from __future__ import annotations

import numpy as np

from .._validate import (as_float_array, check_budget, choice, chunk_starts, entries_first, finite_entries, finite_result,
                         leading_shape, positive_float, positive_int)
from .._validate import mixers as VX
from .._parallel import map_blocks, num_threads
from ._chunks import chunks

FORMS = ("recurrent", "parallel", "chunked")
G_FLOOR = -800.0
"""Log-gates below this are raised to it: exp(-800) == 0.0 in float64 already (see module doc)."""
FACTOR_SPAN = 64.0
"""Largest decay G_{a-1} - G_{b-1} within one chunk for which the intra-chunk scores are a matrix
product of decayed queries and keys (``GatedSetup.intra``): the key factor stays below e^64 ~ 6e27
and the query factor above e^-64, far from overflow and from subnormals; each factor's exponent is
rounded with an error of at most span * u, as the exponent G_t - G_j of the elementwise form is."""


def retnet_gammas(num_heads: int) -> np.ndarray:
    """RetNet's per-head decay gamma_h = 1 - 2^(-5-h), h = 0..H-1 (Sun et al. 2023, sec. 2.2;
    fla ``fla/ops/retention/naive.py`` ``naive_retention``). Log-gate: ``np.log(gamma)``."""
    H = positive_int(num_heads, "num_heads")
    check_budget("num_heads", shape=(H,), itemsize=16, what=f"{H} decays")
    return 1.0 - 2.0 ** (-5.0 - np.arange(H, dtype=np.float64))


class GatedSetup:
    """Validated inputs shared by every form: scaled q, k, v, cumulative gates G, S_init.

    ``checked``: q, k, v are float64 arrays of 4 dimensions whose entries the caller has checked
    (linear attention's features) or has ``_run`` check; their shapes are still checked here."""

    def __init__(self, q, k, v, g, scale, initial_state, *, checked=False):
        arrays = (lambda x, name, ndim: x) if checked else as_float_array
        self.q = arrays(q, "q", ndim=4)
        B, H, L, K = self.q.shape
        self.k = arrays(k, "k", ndim=4)
        leading_shape(self.k, "k", (B, H, L, K), "(B, H, L, K) of q")
        self.v = arrays(v, "v", ndim=4)
        leading_shape(self.v, "v", (B, H, L), "(B, H, L) of q")
        self.B, self.H, self.L, self.K, self.V = B, H, L, K, self.v.shape[3]
        self.scale = K ** -0.5 if scale is None else positive_float(scale, "scale")
        self.gate = None  # (B, H): the gate of every step, when one gate per head never changes (RetNet)
        if g is None:
            G = np.zeros((B, H, L, 1))
        else:
            g = np.maximum(VX.log_gates(g, B, H, L, K), G_FLOOR)
            if g.shape[3] == 1 and L and (g == g[:, :, :1]).all():
                self.gate = g[:, :, 0, 0]
            G = np.cumsum(g, axis=2)
        # G_{-1} = 0 prepended: G[:, :, t + 1] is G_t, G[:, :, 0] the start.
        self.G = np.concatenate([np.zeros((B, H, 1, G.shape[3])), G], axis=2)
        self.S0 = np.zeros((B, H, K, self.V))
        if initial_state is not None:
            self.S0 = as_float_array(initial_state, "initial_state", ndim=4)
            leading_shape(self.S0, "initial_state", (B, H, K, self.V), "(B, H, K, V)")

    def decay(self, later: int, earlier: int) -> np.ndarray:
        """exp(G_later - G_earlier), (B, H, K or 1); indices into the padded G (t + 1 is G_t)."""
        return np.exp(self.G[:, :, later] - self.G[:, :, earlier])

    def intra(self, a: int, b: int) -> np.ndarray:
        """sum_{a<=j<=t} scale (q_t * exp(G_t - G_j)) . k_j v_j for a <= t < b, (B, H, b-a, V).

        exp(G_t - G_j) = exp(G_t - G_{a-1}) exp(G_{a-1} - G_j) splits the decay between q and k, so
        the scores are one matrix product (q_t e^{G_t - G_{a-1}}) . (k_j e^{G_{a-1} - G_j}). The second
        factor grows up to e^span (span = G_{a-1} - G_{b-1}, the chunk's total decay); beyond
        ``FACTOR_SPAN`` (or if a scaled key overflows) the chunk takes the elementwise form below.
        """
        Gt = self.G[:, :, a + 1 : b + 1]  # G_t, t in [a, b)
        ref = self.G[:, :, a : a + 1]  # G_{a-1}
        causal = np.tril(np.ones((b - a, b - a), dtype=bool))
        if np.max(ref - Gt, initial=0.0) <= FACTOR_SPAN:
            kd = self.k[:, :, a:b] * np.exp(ref - Gt)  # |k_j| e^{G_{a-1} - G_j} <= |k_j| e^FACTOR_SPAN
            if np.isfinite(kd).all():
                qd = self.q[:, :, a:b] * np.exp(Gt - ref)
                scores = np.where(causal, qd @ np.swapaxes(kd, -1, -2), 0.0)
                return self.scale * scores @ self.v[:, :, a:b]
        rel = Gt[:, :, :, None, :] - Gt[:, :, None, :, :]  # (B, H, t, j, K|1)
        w = np.exp(np.where(causal[..., None], rel, -np.inf))
        scores = np.einsum("bhtc,bhjc,bhtjc->bhtj", self.q[:, :, a:b], self.k[:, :, a:b],
                           np.broadcast_to(w, rel.shape[:4] + (self.K,)))
        return self.scale * scores @ self.v[:, :, a:b]

    def read(self, S: np.ndarray, a: int, b: int) -> np.ndarray:
        """Inter-chunk read scale * (q_t * exp(G_t - G_{a-1}))^T S for a <= t < b."""
        qd = self.q[:, :, a:b] * np.exp(self.G[:, :, a + 1 : b + 1] - self.G[:, :, a : a + 1])
        return self.scale * qd @ S

    def carry(self, S: np.ndarray, a: int, b: int) -> np.ndarray:
        """S_{b-1} from S_{a-1} and the chunk's writes, each decayed to the chunk's end."""
        kd = self.k[:, :, a:b] * np.exp(self.G[:, :, b : b + 1] - self.G[:, :, a + 1 : b + 1])
        return self.decay(b, a)[..., None] * S + np.swapaxes(kd, -1, -2) @ self.v[:, :, a:b]


def gated_linear_attention(q, k, v, g=None, *, scale=None, initial_state=None, form="recurrent",
                           chunk_size=64):
    """o_t = scale * S_t^T q_t with S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T (see module doc).

    q, k: (B, H, L, K); v: (B, H, L, V); g: None, (B, H, L) or (B, H, L, K), log-gates <= 0;
    initial_state: (B, H, K, V) or None. ``form``: "recurrent" (the definition), "parallel"
    (masked quadratic) or "chunked" (any ``chunk_size`` >= 1; need not divide L).
    Returns (o (B, H, L, V), final state S_L (B, H, K, V)).
    """
    return _gla(q, k, v, g, scale, initial_state, form, chunk_size,
                ("q, k, v, scale, initial_state", "k, v, initial_state"))


def _gla(q, k, v, g, scale, initial_state, form, chunk_size, names: tuple, checked=False):
    """``gated_linear_attention``; ``names``: the caller's arguments an overflowing output / state comes from;
    ``checked`` as ``GatedSetup``'s."""
    s = GatedSetup(q, k, v, g, scale, initial_state, checked=checked)
    choice(form, "form", FORMS)
    return _run(s, form, chunk_starts(s.L, chunk_size), chunk_size, names)


def _run(s: GatedSetup, form: str, starts: list, chunk_size: int, names: tuple, scan: tuple = ()):
    """``form`` on the setup: (o, S), both checked finite (``names`` as ``_gla``'s). ``scan``: the (array,
    name) pairs, in argument order, of q, k, v whose entries are still to be checked for NaN and inf: the
    chunked form with one gate per head checks them (and o) in its blocks, while in cache; any other form first."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        if form == "chunked" and s.G.shape[3] == 1 and s.L:  # one gate per head and step (RetNet, simple GLA, no gate)
            o, S, finite = _chunked_scalar(s, int(chunk_size), scan=bool(scan))
        else:
            for x, name in scan:
                finite_entries(x, name)
            o, S = _forms(s, form, starts, chunk_size)
            finite = np.isfinite(o).all()
    if not finite:
        _refuse_nonfinite(o, scan, names[0])
    finite_result(S, "the final state", names[1])
    return o, S


def _refuse_nonfinite(o: np.ndarray, scan: tuple, names: str) -> None:
    """The error of a form whose output (or an entry of q, k, v still to be checked, ``scan``) is not
    finite: a NaN or inf in an argument is reported as such, first, else the output's overflow."""
    for x, name in scan:
        finite_entries(x, name)
    finite_result(o, "an output", names)


def _forms(s: GatedSetup, form: str, starts: list, chunk_size: int):
    if form == "recurrent":
        S, o = s.S0, np.empty((s.B, s.H, s.L, s.V))
        for t in range(s.L):
            S = s.decay(t + 1, t)[..., None] * S + s.k[:, :, t, :, None] * s.v[:, :, t, None, :]
            o[:, :, t] = s.scale * np.einsum("bhk,bhkv->bhv", s.q[:, :, t], S)
        return o, S
    if form == "parallel":
        o = s.intra(0, s.L) + s.read(s.S0, 0, s.L)
        return o, s.carry(s.S0, 0, s.L)
    S, parts = s.S0, []  # chunked (a gate per key channel)
    for a in starts:
        b = min(a + int(chunk_size), s.L)
        parts.append(s.read(S, a, b) + s.intra(a, b))
        S = s.carry(S, a, b)
    o = np.concatenate(parts, axis=2) if parts else np.empty((s.B, s.H, 0, s.V))
    return o, S



SCALAR_SPAN = 256
"""Tokens per batch of chunks in ``_chunked_scalar``, whose blocks (on threads) are single heads once a head
holds this many tokens (measured, one thread, CPU time, B1 H4 d 64, chunk 64, retention / linear attention:
all four heads at once in batches of 64, 128, 256, 512 tokens took 9.8-10.3, 9.8-9.95, 9.5-9.8, 9.6-9.9 ms at
L = 2048 and 4.5-4.6, 3.9-4.1, 4.0, 4.9-5.0 ms (linear attention) at L = 1024; one head at a time in batches of
256 tokens takes as long, and its temporaries are a quarter the size: retention at L = 1024 4.5-4.8 ms
against 5.3-5.8 where all heads' temporaries made glibc return the heap to the system after every call,
~1050 page faults a call). On n > 1 threads a block is a group of H / n heads, one per thread: the pool's
threads hand the GIL to each other around every NumPy call, and a call over two heads halves the calls (2 threads,
wall, old and new interleaved, minimum of 21, load 0.9: retention L = 2048 7.5 -> 6.4 ms, L = 1024 4.6 -> 3.8 ms;
linear attention 6.1 -> 5.6, 3.4 -> 3.3 ms)."""


def _chunked_scalar(s: GatedSetup, c: int, scan: bool = False):
    """The chunked form with one gate per head and step (G (B, H, L + 1, 1)): (o, final state, whether every
    entry of o is finite and, with ``scan``, every entry of q, k, v too: each block checks its own, in cache).

    In chunk m (steps a .. a + c - 1; G_l(t) = G_t - G_{a-1} <= 0, the decay since the chunk began):

        o_t     = scale (e^{G_l(t)} q_t . S_m + sum_{a<=j<=t} D_tj (q_t . k_j) v_j),  D_tj = e^{G_l(t) - G_l(j)}
        S_{m+1} = e^{G_l(a+c-1)} S_m + sum_j e^{G_l(a+c-1) - G_l(j)} k_j v_j^T

    Every exponent is <= 0, so no factor can overflow and nothing needs splitting (unlike a channel
    gate's chunks, ``GatedSetup.intra``): each chunk's products are batched over ``SCALAR_SPAN``
    tokens of chunks and written straight into o's rows, the state S carried chunk to chunk (one
    multiply-add each), blocks of heads on threads (bit for bit one call over every head). A gate that
    never changes (``GatedSetup.gate``: RetNet's gamma) gives every chunk the same D_tj = e^{(t - j) g},
    built once per head (as exact as the exp of one rounding of (t - j) g; differences of the cumulative
    G would carry its rounding). Without a gate (g None: linear attention) every e^... is 1 and is not
    formed: D is the lower triangle and S a running sum."""
    c = min(c, max(s.L, 1))  # a chunk longer than the sequence is the sequence (padding would multiply zeros)
    span = c * max(1, SCALAR_SPAN // c)
    o = np.empty((s.B, s.H, -(-s.L // c) * c, s.V))  # whole chunks: each product writes its own rows
    S_out = np.empty_like(s.S0)
    tri = np.tri(c, dtype=bool)
    decays = bool(np.any(s.G))

    def heads(hs: slice) -> bool:
        S, finite = s.S0[:, hs].copy(), True  # S carried in place
        if s.gate is not None:  # D_tj = e^{(t - j) g}: the same for every chunk, built once
            lag = np.arange(c)[:, None] - np.arange(c)
            D = np.exp(np.where(tri, lag * s.gate[:, hs, None, None, None], -np.inf))  # (B, h, 1, c, c)
        for a in range(0, s.L, span):
            b = min(a + span, s.L)
            Q, K, V = (chunks(x[:, hs, a:b], c) for x in (s.q, s.k, s.v))  # (B, h, n, c, .), padded with 0
            n = Q.shape[2]
            if scan and finite:
                finite = all(np.isfinite(x).all() for x in (Q, K, V))
            Kt = np.ascontiguousarray(np.swapaxes(K, -1, -2))  # (B, h, n, K, c): both products run faster on it
            if decays:
                G = chunks(s.G[:, hs, a + 1:b + 1, 0], c)  # G_t
                if n * c != b - a:  # a padded step decays no further: its G is the last real one
                    G[:, :, -1, (b - a) - (n - 1) * c:] = s.G[:, hs, b, 0][:, :, None]
                ref = np.concatenate([s.G[:, hs, a:a + 1, 0], G[:, :, :-1, -1]], axis=2)  # G_{a-1} of each chunk
                Gl = G - ref[..., None]
                if s.gate is None:
                    D = np.exp(np.where(tri, Gl[..., :, None] - Gl[..., None, :], -np.inf))  # j <= t
                last = Gl[..., -1:]
                writes = (Kt * np.exp(last - Gl)[..., None, :]) @ V  # (B, h, n, K, V)
                carry, Qd = np.exp(last[..., 0]), Q * np.exp(Gl)[..., None]
            else:
                D, writes, carry, Qd = tri, Kt @ V, None, Q
            A = Q @ Kt
            A *= D
            O = chunks(o[:, hs, a:a + n * c], c)  # a view: o's rows of these chunks
            np.matmul(A, V, out=O)
            entering = np.empty_like(writes)
            for m in range(n):
                entering[:, :, m] = S
                if carry is not None:
                    S *= carry[:, :, m, None, None]
                S += writes[:, :, m]
            O += Qd @ entering
            O *= s.scale
            finite = finite and np.isfinite(O).all()
        S_out[:, hs] = S
        return finite

    per = max(1, SCALAR_SPAN // max(1, s.B * s.L))  # heads per block: one at length, more while they are short
    threads = num_threads()
    if threads > 1:  # one block per thread: each NumPy call covers more heads, fewer GIL handoffs between threads
        per = max(per, -(-s.H // threads))
    finite = map_blocks(heads, [slice(h, h + per) for h in range(0, s.H, per)], s.B * s.H * s.L * (2 * c + 2 * s.K) * s.V)
    return o[:, :, :s.L], S_out, all(finite)


def retention(q, k, v, *, scale=None, form="parallel", chunk_size=64):
    """RetNet retention: gated linear attention with constant per-head gamma_h = 1 - 2^(-5-h).

    o_t = scale * sum_{j<=t} gamma_h^(t-j) (q_t . k_j) v_j; as fla ``naive_retention``
    (layout (B, H, L, D), scale D^-0.5, no normaliser, no group norm). Returns o only.
    """
    named = ((q, "q"), (k, "k"), (v, "v"))
    with entries_first(named, ndim=4):  # the entries are checked by _run, where the form runs
        q, k, v = (as_float_array(x, name, ndim=4, entries=False) for x, name in named)
        B, H, L, _ = q.shape
        g = np.broadcast_to(np.log(retnet_gammas(H))[None, :, None], (B, H, L))
        s = GatedSetup(q, k, v, g, scale, None, checked=True)
        choice(form, "form", FORMS)
        starts = chunk_starts(L, chunk_size)
    return _run(s, form, starts, chunk_size, ("q, k, v, scale", "k, v"), scan=((q, "q"), (k, "k"), (v, "v")))[0]


__all__ = ["FACTOR_SPAN", "FORMS", "G_FLOOR", "gated_linear_attention", "retention", "retnet_gammas"]
