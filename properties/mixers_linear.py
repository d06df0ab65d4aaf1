"""Conformance of (gated) linear attention and the delta rule: every form equals the recurrence.

Kinds ``linear_attention`` and ``delta_rule`` (declared in ``KINDS``). A chunked kernel is
pointed at the suite by declaring ``"chunked"`` and, optionally, an attribute ``chunk_sizes``
(the sizes it supports; absent or None: any size >= 1); the strategies then draw lengths L that
the chunk size does not divide, L < chunk size, and L = 1. The reference is always the
recurrent definition in :mod:`refimpl.mixers.gated` / :mod:`refimpl.mixers.delta_rule`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl.mixers import delta_rule as DR
from refimpl.mixers import gated as GL
from refimpl.mixers import linear_attention as LA

from . import mixers_naive as NV
from .core import Property
from .mixers_common import compare_elementwise, precision_elementwise, rounding_bound, shape_repr
from .precision import NaiveOps, precision_of, round_inputs
from .protocol import Capability, Kind, Option
from .strategy_cache import sampled


@dataclasses.dataclass(frozen=True)
class LinearAttentionAdapter:
    name: str
    forward: Callable
    normalized: Optional[Callable] = None
    capabilities: frozenset = frozenset()
    chunk_sizes: Optional[tuple] = None
    kind: str = "linear_attention"
    precision: str = "float64"  # properties.precision


@dataclasses.dataclass(frozen=True)
class DeltaRuleAdapter:
    name: str
    forward: Callable
    capabilities: frozenset = frozenset()
    chunk_sizes: Optional[tuple] = None
    kind: str = "delta_rule"
    precision: str = "float64"  # properties.precision


_CHUNKED = Capability("accepts chunk_size (any int >= 1, or those in the adapter's chunk_sizes) and computes chunkwise")
_CHUNK_SIZES = ("tuple of the chunk sizes a 'chunked' kernel supports (fixed tiles): each case runs at one of "
                "them with L extended by m C tokens, m = 0, 1, 2, to straddle chunk boundaries")
#: per-value option: a chunked kernel that chunks only some gate types declines the others
_CHUNKED_GATE = Option("gate types a chunk_size is passed with, under 'chunked' (a declined one gets chunk_size "
                       "None: the adapter's recurrent path)", ("none", "scalar", "channel"))
KINDS = (
    Kind("linear_attention",
         "o_t = scale S_t^T q_t, S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T (q, k already feature-mapped): "
         "refimpl.mixers.gated.gated_linear_attention(form='recurrent')",
         {"forward": "forward(q, k, v, g, scale, chunk_size) -> (o (B,H,L,V), final state (B,H,K,V) or None); "
                     "q, k (B,H,L,K); g None, (B,H,L) or (B,H,L,K) log-gates <= 0; chunk_size None unless chunked",
          "normalized": "normalized(q, k, v, scale, eps, chunk_size) -> y = scale q S_t / (scale q z_t + eps), no gate"},
         ("forward",),
         {"gate_scalar": Capability("accepts g of shape (B, H, L) (RetNet, Mamba-2 style)"),
          "gate_channel": Capability("accepts g of shape (B, H, L, K) (GLA)"),
          "final_state": Capability("forward returns the final state S_L"),
          "normalize": Capability("supplies normalized(): Katharopoulos normaliser with eps", ("normalized",)),
          "chunked": _CHUNKED},
         options={"chunked_gate": _CHUNKED_GATE},
         attributes={"chunk_sizes": _CHUNK_SIZES}),
    Kind("delta_rule",
         "(gated) DeltaNet: S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T, o_t = scale S_t^T q_t: "
         "refimpl.mixers.delta_rule.delta_rule(form='recurrent')",
         {"forward": "forward(q, k, v, beta, g, scale, chunk_size) -> (o, final state or None); beta (B,H,L) in [0, 1]; "
                     "g None or (B,H,L) <= 0; keys L2-normalised by the caller"},
         ("forward",),
         {"gated": Capability("accepts g (gated DeltaNet)"),
          "beta_per_channel": Capability("accepts beta of shape (B, H, L, V), one rate per value channel (fla delta_rule_recurrence)"),
          "final_state": Capability("forward returns the final state S_L"),
          "chunked": _CHUNKED},
         options={"chunked_gate": _CHUNKED_GATE},
         attributes={"chunk_sizes": _CHUNK_SIZES}),
)


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class MixerCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    g: Optional[np.ndarray]
    beta: Optional[np.ndarray]
    scale: float
    chunk_size: Optional[int]
    seed: int = 0
    eps: float = LA.NORMALISER_EPS

    def for_adapter(self, impl) -> "MixerCase":
        """The case as run on ``impl``: an adapter with fixed ``chunk_sizes`` gets chunk size
        C = chunk_sizes[seed % n] and m C more tokens (m = 0, 1, 2; drawn like the others from a
        generator seeded by the case), so the drawn length L + m C straddles its chunk boundaries."""
        sizes = getattr(impl, "chunk_sizes", None)
        if not sizes or "chunked" not in impl.capabilities or self.chunk_size is None:
            return self
        C = int(sizes[self.seed % len(sizes)])
        m = (self.seed // len(sizes)) % 3
        rng = np.random.default_rng(self.seed + 1)
        B, H, _, K = self.q.shape

        def more(x, draw):
            return None if x is None else np.concatenate([x, draw(x.shape[:2] + (m * C,) + x.shape[3:])], axis=2)
        positive = bool((self.q > 0).all() and (self.k > 0).all())
        qk = (lambda shape: np.exp(0.5 * rng.standard_normal(shape))) if positive else rng.standard_normal
        q, k = more(self.q, qk), more(self.k, qk)
        if self.beta is not None:  # delta rule: unit keys and queries
            q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
        strength = 0.0 if self.g is None else float(-self.g.min(initial=0.0))
        return dataclasses.replace(
            self, q=q, k=k, v=more(self.v, rng.standard_normal),
            g=None if self.g is None else np.concatenate(
                [self.g, -strength * rng.random(self.g.shape[:2] + (m * C,) + self.g.shape[3:])], axis=2),
            beta=more(self.beta[..., None], rng.random)[..., 0] if self.beta is not None else None, chunk_size=C)

    def rounded(self, precision: str) -> "MixerCase":
        """The case with q, k, v, g, beta exactly representable in ``precision``."""
        q, k, v, g, beta = round_inputs(precision, self.q, self.k, self.v, self.g, self.beta)
        return dataclasses.replace(self, q=q, k=k, v=v, g=g, beta=beta)

    def __repr__(self):
        return (f"MixerCase({shape_repr(q=self.q, v=self.v)}, g={None if self.g is None else self.g.shape}, seed={self.seed}, "
                f"chunk_size={self.chunk_size}, scale={self.scale:.3g}, max|q|={np.abs(self.q).max(initial=0):.3g})")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


@st.composite
def _case(draw, caps, family, adapter_chunks=None, positive=False, extreme=False):
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    K, V = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    chunk = None
    if "chunked" in caps:
        chunk = draw(sampled(adapter_chunks) if adapter_chunks else st.integers(1, 8))
        L = draw(sampled([1, chunk, chunk + 1, 2 * chunk + draw(st.integers(1, max(1, chunk - 1))),
                                  draw(st.integers(1, 20))]))
    else:
        L = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mag = draw(sampled([1.0, 0.1, 5.0]))
    q, k = rng.standard_normal((2, B, H, L, K)) * mag
    if positive:
        q, k = np.exp(q / mag * 0.5), np.exp(k / mag * 0.5)
    v = rng.standard_normal((B, H, L, V)) * draw(sampled([1.0, 1e3]))
    g = beta = None
    gates = [None] + [s for s, c in (("scalar", "gate_scalar"), ("channel", "gate_channel"), ("scalar", "gated"))
                      if c in caps]
    kind = draw(sampled(gates[1:] if extreme else gates))
    strength = draw(sampled([0.05, 1.0, 8.0]))  # 8: decays ~ e^-8 per step, near underflow over L
    shape = {"scalar": (B, H, L), "channel": (B, H, L, K)}.get(kind)
    if shape and extreme:  # gates near their floor: e^-20 .. e^-100 on 70% of the steps, 1 on the rest
        g = np.where(rng.random(shape) < 0.7, -(20 + 80 * rng.random(shape)), 0.0)
    elif shape:
        g = -rng.random(shape) * strength
    if chunk is not None and hasattr(caps, "allowed") and (kind or "none") not in caps.allowed(
            "chunked_gate", ("none", "scalar", "channel")):
        chunk = None  # this gate type runs unchunked for this adapter
    if family == "delta":
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        beta = rng.random((B, H, L, V) if "beta_per_channel" in caps and draw(st.booleans()) else (B, H, L))
    scale = draw(sampled([1.0, K ** -0.5]))
    return MixerCase(q, k, v, g, beta, scale, chunk, seed)


def la_case(caps):
    return _case(caps, "linear")


def la_norm_case(caps):
    return _case(caps - {"gate_scalar", "gate_channel"}, "linear", positive=True)


def delta_case(caps):
    return _case(caps, "delta")


def _gated(caps, names):
    if not set(names) & set(caps):
        from .core import Unsupported

        raise Unsupported(f"extreme gates need a gate capability ({sorted(names)})")


def la_extreme_case(caps):
    """Gates near their floor (``_case(extreme=True)``): log-gates -20 .. -100 on most steps, so the
    cumulative decay sum_t g_t reaches -2000 (e^-2000 is 0 in every precision)."""
    _gated(caps, ("gate_scalar", "gate_channel"))
    return _case(caps, "linear", extreme=True)


def delta_extreme_case(caps):
    _gated(caps, ("gated",))
    return _case(caps, "delta", extreme=True)


# ----------------------------------------------------------------------------- checks


def _gla_magnitude(c: MixerCase):
    """(M_o, M_S, n): the recurrence on |q|, |k|, |v| (properties.mixers_common) and n."""
    L, K = c.q.shape[2], c.q.shape[3]
    Gmax = 0.0 if c.g is None else float(np.max(-np.sum(c.g, axis=2), initial=0.0))
    mo, mS = GL.gated_linear_attention(np.abs(c.q), np.abs(c.k), np.abs(c.v), c.g, scale=c.scale)
    return mo, mS, 2 * L + K + 8 + L * Gmax


def _gla_bound(c: MixerCase):
    """Entrywise float64 bound for o and S of gated linear attention (properties.mixers_common)."""
    mo, mS, n = _gla_magnitude(c)
    return rounding_bound(mo, n), rounding_bound(mS, n)


def _in_precision(impl, c: MixerCase):
    """(precision, the case as run on ``impl``: its chunk sizes, inputs rounded to its precision)."""
    p = precision_of(impl)
    return p, c.for_adapter(impl).rounded(p)


def _label(prop: str, p: str) -> str:
    return prop if p == "float64" else f"{prop}[{p}]"


def check_la_matches_recurrent(impl, c: MixerCase, prop: str = "la_matches_recurrent"):
    """o (and S_L when declared) equal the recurrent definition within the rounding bound
    (below float64: the precision rule on the naive recurrence, properties.mixers_common)."""
    p, c = _in_precision(impl, c)
    o, S = impl.forward(c.q, c.k, c.v, c.g, c.scale, c.chunk_size)
    ro, rS = GL.gated_linear_attention(c.q, c.k, c.v, c.g, scale=c.scale)
    mo, mS, n = _gla_magnitude(c)
    naive = [None]

    def nv(i):
        return lambda: (naive.__setitem__(0, naive[0] or NV.gla(NaiveOps(p), c.q, c.k, c.v, c.g, c.scale)), naive[0][i])[1]
    bo = precision_elementwise(p, rounding_bound(mo, n), mo, n, nv(0), ro)
    compare_elementwise(_label(prop, p), impl.name, o, ro, bo, repr(c))
    if "final_state" in impl.capabilities:
        bS = precision_elementwise(p, rounding_bound(mS, n), mS, n, nv(1), rS)
        compare_elementwise(_label(prop, p), impl.name, S, rS, bS, repr(c) + " (final state)")


def check_la_normalized(impl, c: MixerCase):
    """y = num / (den + eps) with the causal normaliser; |dy| <= (B_num + |y| B_den) / (den + eps)."""
    p, c = _in_precision(impl, c)
    y = impl.normalized(c.q, c.k, c.v, c.scale, c.eps, c.chunk_size)
    ry = LA.linear_attention(c.q, c.k, c.v, feature_map="identity", scale=c.scale, eps=c.eps)
    va = np.concatenate([c.v, np.ones(c.v.shape[:3] + (1,))], axis=3)
    num_den = GL.gated_linear_attention(c.q, c.k, va, None, scale=c.scale)[0]
    mo, _, n = _gla_magnitude(dataclasses.replace(c, v=va))
    bo = rounding_bound(mo, n)
    den = num_den[..., -1:] + c.eps
    bound = (bo[..., :-1] + np.abs(ry) * bo[..., -1:]) / den
    mag = (mo[..., :-1] + np.abs(ry) * mo[..., -1:]) / den  # the same propagation on magnitudes
    bound = precision_elementwise(p, bound, mag, n, lambda: NV.gla_normalized(NaiveOps(p), c.q, c.k, c.v, c.scale, c.eps), ry)
    compare_elementwise(_label("la_normalized", p), impl.name, y, ry, bound, repr(c))


def _delta_magnitude(c: MixerCase):
    """|S_t| <= sum_{j<=t} beta_j |v_j| (each I - beta k k^T a contraction for |k| = 1, beta in [0, 1]);
    the outputs scale |q_t| times that. The chunked form's triangular solve adds c roundings per
    entry and its entries are products of at most c contractions, so n = 2L + K + 8 + L Gmax.
    Returns (M_o, M_S, n)."""
    L, K = c.q.shape[2], c.q.shape[3]
    Gmax = 0.0 if c.g is None else float(np.max(-np.sum(c.g, axis=2), initial=0.0))
    n = 2 * L + K + 8 + L * Gmax
    beta = c.beta if c.beta.ndim == 3 else c.beta.max(axis=-1)  # per channel: the largest rate bounds |u_t|
    run = np.cumsum(beta * np.linalg.norm(c.v, axis=-1), axis=2)[..., None]  # (B, H, L, 1)
    mo = c.scale * np.linalg.norm(c.q, axis=-1)[..., None] * run
    return mo, run[:, :, -1:, :] * np.ones((1, 1, K, 1)), n


def _delta_bound(c: MixerCase):
    mo, mS, n = _delta_magnitude(c)
    return rounding_bound(mo, n), rounding_bound(mS, n)


def check_delta_matches_recurrent(impl, c: MixerCase, prop: str = "delta_matches_recurrent"):
    """o (and S_L when declared) equal the delta-rule recurrence within the rounding bound
    (below float64: the precision rule on the naive recurrence, properties.mixers_common)."""
    p, c = _in_precision(impl, c)
    o, S = impl.forward(c.q, c.k, c.v, c.beta, c.g, c.scale, c.chunk_size)
    ro, rS = DR.delta_rule(c.q, c.k, c.v, c.beta, c.g, scale=c.scale)
    mo, mS, n = _delta_magnitude(c)
    naive = [None]

    def nv(i):
        return lambda: (naive.__setitem__(0, naive[0] or NV.delta(NaiveOps(p), c.q, c.k, c.v, c.beta, c.g, c.scale)),
                        naive[0][i])[1]
    bo = precision_elementwise(p, rounding_bound(mo, n), mo, n, nv(0), ro)
    compare_elementwise(_label(prop, p), impl.name, o, ro, bo, repr(c))
    if "final_state" in impl.capabilities:
        bS = precision_elementwise(p, rounding_bound(mS, n), mS, n, nv(1), rS)
        compare_elementwise(_label(prop, p), impl.name, S, rS, bS, repr(c) + " (final state)")


@dataclasses.dataclass(frozen=True)
class MemoryCase:
    keys: np.ndarray  # (m, K) orthonormal
    writes: tuple  # key index written at each step
    reads: tuple  # key index read at each step
    v: np.ndarray  # (1, 1, L, V)
    chunk_size: Optional[int]

    def __repr__(self):
        return f"MemoryCase(K={self.keys.shape[1]}, writes={self.writes}, reads={self.reads}, chunk_size={self.chunk_size})"


@st.composite
def memory_case(draw, caps):
    K = draw(st.integers(1, 5))
    m = draw(st.integers(1, K))
    L = draw(st.integers(2, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keys = np.linalg.qr(rng.standard_normal((K, K)))[0][:, :m].T
    writes = tuple(draw(st.lists(st.integers(0, m - 1), min_size=L, max_size=L)))
    reads = tuple(draw(st.lists(st.integers(0, m - 1), min_size=L, max_size=L)))
    chunk = draw(st.integers(1, 6)) if "chunked" in caps else None
    return MemoryCase(keys, writes, reads, rng.standard_normal((1, 1, L, 3)), chunk)


def check_delta_memorises(impl, c: MemoryCase):
    """beta = 1, orthonormal keys: reading key a returns the LAST value written to a (0 if never):
    the delta rule overwrites; gated linear attention ("delta attention" of the notes,
    docs/errata.md#e10) adds up."""
    L = len(c.writes)
    p = precision_of(impl)
    keys, v = round_inputs(p, c.keys, c.v)
    k = keys[list(c.writes)][None, None]
    q = keys[list(c.reads)][None, None]
    sizes = getattr(impl, "chunk_sizes", None)
    chunk = min(sizes) if sizes and c.chunk_size is not None else c.chunk_size  # fixed sizes: the smallest
    o, _ = impl.forward(q, k, v, np.ones((1, 1, L)), None, 1.0, chunk)
    expect = np.zeros_like(v)
    for t in range(L):
        last = [j for j in range(t + 1) if c.writes[j] == c.reads[t]]
        if last:
            expect[0, 0, t] = v[0, 0, last[-1]]
    mag = np.cumsum(np.abs(v), axis=2).sum(-1, keepdims=True)
    bound = rounding_bound(mag, 2 * L + 8)
    if p != "float64":  # keys rounded to p are orthonormal only to O(u_p): the spec's own output moves too
        beta = np.ones((1, 1, L))
        ro = DR.delta_rule(q, k, v, beta, None, scale=1.0)[0]
        bound = precision_elementwise(p, bound, mag, 2 * L + 8,
                                      lambda: NV.delta(NaiveOps(p), q, k, v, beta, None, 1.0)[0], ro) + np.abs(ro - expect)
    compare_elementwise(_label("delta_memorises", p), impl.name, o, expect, bound, repr(c))


# ----------------------------------------------------------------------------- bundled and wrong


def _gla(form):
    def forward(q, k, v, g, scale, chunk_size):
        return GL.gated_linear_attention(q, k, v, g, scale=scale, form=form, chunk_size=chunk_size or 64)

    def normalized(q, k, v, scale, eps, chunk_size):
        return LA.linear_attention(q, k, v, feature_map="identity", scale=scale, eps=eps, form=form,
                                   chunk_size=chunk_size or 64)
    return forward, normalized


_LA_CAPS = frozenset({"gate_scalar", "gate_channel", "final_state", "normalize"})
BUNDLED = [LinearAttentionAdapter(f"refimpl.gla[{f}]", *_gla(f), capabilities=_LA_CAPS | ({"chunked"} if f == "chunked" else set()))
           for f in GL.FORMS]
BUNDLED += [DeltaRuleAdapter(f"refimpl.delta_rule[{f}]",
                             (lambda f: lambda q, k, v, b, g, s, c: DR.delta_rule(q, k, v, b, g, scale=s, form=f, chunk_size=c or 64))(f),
                             frozenset({"gated", "final_state", "beta_per_channel"}) | ({"chunked"} if f == "chunked" else set()))
            for f in DR.FORMS]


def _loop_gla(q, k, v, g, scale, decay_after=False, read_before=False):
    B, H, L, K = q.shape
    gg = np.zeros((B, H, L, 1)) if g is None else (g[..., None] if g.ndim == 3 else g)
    S, o = np.zeros((B, H, K, v.shape[3])), np.empty(v.shape)
    for t in range(L):
        kv = k[:, :, t, :, None] * v[:, :, t, None, :]
        if read_before:
            o[:, :, t] = scale * np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
        S = np.exp(gg[:, :, t])[..., None] * (S + kv) if decay_after else np.exp(gg[:, :, t])[..., None] * S + kv
        if not read_before:
            o[:, :, t] = scale * np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
    return o, S


def _chunks_without_carry(q, k, v, g, scale, chunk_size):
    """Each chunk from a zero state: the inter-chunk state dropped."""
    c = chunk_size or 64
    parts = [GL.gated_linear_attention(q[:, :, a:a + c], k[:, :, a:a + c], v[:, :, a:a + c],
                                       None if g is None else g[:, :, a:a + c], scale=scale)[0]
             for a in range(0, q.shape[2], c)]
    return np.concatenate(parts, axis=2), None


def _no_normaliser(q, k, v, scale, eps, chunk_size):
    return GL.gated_linear_attention(q, k, v, None, scale=scale)[0]


def _seed_delta_attention(q, k, v, beta, g, scale, chunk_size):
    """The notes' "delta attention" (docs/errata.md#e10): S_t = gamma_t S_{t-1} + beta_t k_t v_t^T
    (no erase term): gated linear attention."""
    return GL.gated_linear_attention(q, k * beta[..., None], v, g, scale=scale)


def _delta_decay_after(q, k, v, beta, g, scale, chunk_size):
    """Gate applied after the delta update, so the erase term reads the undecayed state."""
    B, H, L, K = q.shape
    g = np.zeros((B, H, L)) if g is None else g
    S, o = np.zeros((B, H, K, v.shape[3])), np.empty(v.shape)
    for t in range(L):
        u = beta[:, :, t, None] * (v[:, :, t] - np.einsum("bhkv,bhk->bhv", S, k[:, :, t]))
        S = np.exp(g[:, :, t])[..., None, None] * (S + k[:, :, t, :, None] * u[..., None, :])
        o[:, :, t] = scale * np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
    return o, S


def _delta_chunks_without_carry(q, k, v, beta, g, scale, chunk_size):
    c = chunk_size or 64
    parts = [DR.delta_rule(q[:, :, a:a + c], k[:, :, a:a + c], v[:, :, a:a + c], beta[:, :, a:a + c],
                           None if g is None else g[:, :, a:a + c], scale=scale)[0] for a in range(0, q.shape[2], c)]
    return np.concatenate(parts, axis=2), None


def _factorised_decay(q, k, v, g, scale, chunk_size):
    """The parallel form with the decay split across q and k (q_t e^{G_t}, k_j e^{-G_j}, G the
    cumulative log-gate): exact in exact arithmetic, inf * 0 = NaN once -G_j > 709."""
    B, H, L, K = q.shape
    gg = np.zeros((B, H, L, K)) if g is None else (np.broadcast_to(g[..., None], q.shape) if g.ndim == 3 else g)
    G = np.cumsum(gg, axis=2)
    with np.errstate(over="ignore", invalid="ignore"):
        A = np.einsum("bhtk,bhjk->bhtj", q * np.exp(G), k * np.exp(-G)) * np.tril(np.ones((L, L)))
        return scale * A @ v, None


def _delta_gate_clamped(q, k, v, beta, g, scale, chunk_size):
    """A "safe exp" floor: log-gates clamped to >= -20 (e^-20 ~ 2e-9 kept where the gate is smaller)."""
    return DR.delta_rule(q, k, v, beta, None if g is None else np.maximum(g, -20.0), scale=scale)


_W = "wrong[{}]"
WRONG = {
    "factorised_decay": LinearAttentionAdapter(_W.format("factorised_decay"), _factorised_decay,
                                               capabilities=frozenset({"gate_scalar", "gate_channel"})),
    "delta_gate_clamped": DeltaRuleAdapter(_W.format("delta_gate_clamped"), _delta_gate_clamped, frozenset({"gated"})),
    "decay_after_write": LinearAttentionAdapter(_W.format("decay_after_write"),
                                                lambda q, k, v, g, s, c: _loop_gla(q, k, v, g, s, decay_after=True),
                                                capabilities=frozenset({"gate_scalar", "gate_channel"})),
    "read_before_write": LinearAttentionAdapter(_W.format("read_before_write"),
                                                lambda q, k, v, g, s, c: _loop_gla(q, k, v, g, s, read_before=True),
                                                capabilities=frozenset({"gate_scalar", "gate_channel"})),
    "chunk_state_dropped": LinearAttentionAdapter(_W.format("chunk_state_dropped"), _chunks_without_carry,
                                                  capabilities=frozenset({"gate_scalar", "chunked"})),
    "normaliser_missing": LinearAttentionAdapter(_W.format("normaliser_missing"), BUNDLED[0].forward, _no_normaliser,
                                                 capabilities=frozenset({"normalize"})),
    "seed_delta_attention": DeltaRuleAdapter(_W.format("seed_delta_attention"), _seed_delta_attention, frozenset({"gated"})),
    "delta_decay_after_update": DeltaRuleAdapter(_W.format("delta_decay_after_update"), _delta_decay_after, frozenset({"gated"})),
    "delta_chunk_state_dropped": DeltaRuleAdapter(_W.format("delta_chunk_state_dropped"), _delta_chunks_without_carry,
                                                  frozenset({"gated", "chunked"})),
}

PROPERTIES = [
    Property("la_matches_recurrent", "linear_attention", check_la_matches_recurrent, la_case,
             "every form (recurrent, parallel, chunked at any chunk size) equals the recurrence S_t = diag(e^g) S + k v^T",
             rejects=("decay_after_write", "read_before_write", "chunk_state_dropped")),
    Property("la_normalized", "linear_attention", check_la_normalized, la_norm_case,
             "the Katharopoulos normaliser: y = q S_t / (q z_t + eps) for positive features",
             requires=frozenset({"normalize"}), rejects=("normaliser_missing",)),
    Property("delta_matches_recurrent", "delta_rule", check_delta_matches_recurrent, delta_case,
             "recurrent and WY/UT chunked delta rule (gated or not, any chunk size) equal the recurrence",
             rejects=("seed_delta_attention", "delta_decay_after_update", "delta_chunk_state_dropped")),
    Property("la_extreme_gates", "linear_attention", lambda i, c: check_la_matches_recurrent(i, c, "la_extreme_gates"),
             la_extreme_case,
             "gates near their floor (log-gates to -100 a step, cumulative decay to e^-2000) still equal the recurrence",
             rejects=("factorised_decay",)),
    Property("delta_extreme_gates", "delta_rule", lambda i, c: check_delta_matches_recurrent(i, c, "delta_extreme_gates"),
             delta_extreme_case,
             "gated delta rule with gates near their floor (log-gates to -100 a step) equals the recurrence",
             rejects=("delta_gate_clamped",)),
    Property("delta_memorises", "delta_rule", check_delta_memorises, memory_case,
             "beta = 1 and orthonormal keys: reading a key returns the last value written to it",
             rejects=("seed_delta_attention",)),
]

__all__ = ["BUNDLED", "KINDS", "PROPERTIES", "WRONG", "DeltaRuleAdapter", "LinearAttentionAdapter"]
