"""Conformance of RWKV-4 WKV and the selective state-space scan: every form equals the definition.

Kinds ``wkv`` and ``ssm_scan`` (declared in ``KINDS``). The WKV reference is the definition
as an explicit weighted average in log space (:func:`refimpl.mixers.rwkv4.wkv`, form
"parallel"); the scan reference is the sequential loop (:func:`refimpl.mixers.ssm.selective_scan`).
An adapter that only handles time-invariant SSMs (a convolution / FFT kernel) leaves out the
``time_varying`` capability and is drawn only time-invariant cases.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from refimpl.mixers import rwkv4 as RW
from refimpl.mixers import ssm as SSM

from . import mixers_naive as NV
from .core import Property
from .mixers_common import compare_elementwise, precision_elementwise, rounding_bound, shape_repr
from .precision import NaiveOps, precision_of, round_inputs
from .protocol import Capability, Kind, Option
from .strategy_cache import sampled


@dataclasses.dataclass(frozen=True)
class WKVAdapter:
    name: str
    forward: Callable
    capabilities: frozenset = frozenset()
    kind: str = "wkv"
    precision: str = "float64"  # properties.precision


@dataclasses.dataclass(frozen=True)
class ScanAdapter:
    name: str
    forward: Callable
    capabilities: frozenset = frozenset()
    kind: str = "ssm_scan"
    precision: str = "float64"  # properties.precision
    declines: dict = dataclasses.field(default_factory=dict)


KINDS = (
    Kind("wkv", "RWKV-4 WKV per channel, bonus u for the current token only, past token j weighted "
                "e^{(t-1-j) w + k_j}: refimpl.mixers.rwkv4.wkv",
         {"forward": "forward(w, u, k, v) -> wkv (B,H,L,D); k, v (B,H,L,D); w, u (H,D); w = -exp(time_decay) < 0"},
         ("forward",),
         {"large_keys": Capability("finite and exact for |k| up to 1e4 (a running-max / log-space kernel)")}),
    Kind("ssm_scan", "Mamba selective scan: x_t = exp(delta A) x_{t-1} + delta B_t u_t, y = C_t x_t + D u, "
                     "* silu(z): refimpl.mixers.ssm.selective_scan(form='sequential')",
         {"forward": "forward(u, delta, A, B, C, D, z, initial_state) -> (y (B,H,L,P), last state (B,H,P,N) or None); "
                     "u, delta, z (B,H,L,P); A (H,P,N); B, C (B,G,L,N); D (H,P); D, z, initial_state may be None"},
         ("forward",),
         {"time_varying": Capability("delta, B and C may vary along L (a selective scan, not only a convolution)"),
          "grouped": Capability("B, C with G < H groups; head h reads group h // (H / G)"),
          "skip_and_gate": Capability("accepts D and z"),
          "initial_state": Capability("accepts initial_state"),
          "final_state": Capability("returns the last state")},
         options={"decay": Option("decays drawn: 'per_channel' (A (H, P, N) and delta (B, H, L, P) of any values, "
                                  "Mamba-1) or 'per_head' (one decay a_h and step dt_h per head: A constant over (P, "
                                  "N), delta over P; the Mamba-2 SSD, refimpl.mixers.ssm.ssd): decline 'per_channel' "
                                  "for an SSD kernel, which reads A[:, 0, 0] and delta[..., 0]",
                                  ("per_channel", "per_head"))}),
)


# ----------------------------------------------------------------------------- WKV


@dataclasses.dataclass(frozen=True)
class WKVCase:
    w: np.ndarray
    u: np.ndarray
    k: np.ndarray
    v: np.ndarray

    def __repr__(self):
        return (f"WKVCase({shape_repr(k=self.k)}, max|k|={np.abs(self.k).max():.3g}, w in [{self.w.min():.3g}, "
                f"{self.w.max():.3g}], u in [{self.u.min():.3g}, {self.u.max():.3g}])")


@st.composite
def wkv_case(draw, caps):
    B, H, L, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 16)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kmag = draw(sampled([1.0, 5.0, 30.0] + ([1e3, 1e4] if "large_keys" in caps else [])))
    w = -np.exp(rng.standard_normal((H, D)) * draw(sampled([0.5, 2.0])))
    u = rng.standard_normal((H, D)) * draw(sampled([0.5, 3.0]))
    return WKVCase(w, u, rng.standard_normal((B, H, L, D)) * kmag, rng.standard_normal((B, H, L, D)))


def _wkv_magnitude(c: WKVCase):
    """wkv_t is a convex combination of v_j; each weight's exponent a = (t-1-j) w + k_j (or u + k_t)
    is evaluated with relative error ~ u, so its weight carries a relative error <= u |a| + (L + 4) u
    (the exps and the running-max rescalings); the average moves by at most twice that times max|v|.
    Returns (M = 2 max_{j<=t} |v_j|, n = |a| + 2L + 8)."""
    L = c.k.shape[2]
    a = np.abs(c.k).max() + np.abs(c.u).max() + L * np.abs(c.w).max()
    return 2 * np.maximum.accumulate(np.abs(c.v), axis=2), a + 2 * L + 8


@st.composite
def _wkv_extreme_case(draw, caps):
    """Exponents at the edge (needs ``large_keys``): a bonus near its floor, u in [-1000, -100], and
    keys climbing by -u (+- 3) a step, so each current token's e^{u + k_t} competes with the previous
    token's e^{k_{t-1}} at exponents up to ~8e3, far past e^709; decays w in [-1000, -1e-3]."""
    B, H, L, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(2, 16)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u = -(100 + 900 * rng.random((H, D)))
    w = -np.exp(rng.uniform(np.log(1e-3), np.log(1e3), (H, D)))
    steps = -u[None, :, None, :] + 3 * rng.standard_normal((B, H, L, D))
    k = np.cumsum(steps, axis=2)
    k = k - k[:, :, -1:] / 2  # centred: |k| <= ~8e3, within large_keys' 1e4
    return WKVCase(w, u, k, rng.standard_normal((B, H, L, D)))


def wkv_extreme_case(caps):
    if "large_keys" not in caps:
        from .core import Unsupported

        raise Unsupported("extreme exponents need large_keys (finite and exact past e^709)")
    return _wkv_extreme_case(caps)


def _wkv_bound(c: WKVCase):
    return rounding_bound(*_wkv_magnitude(c))


def check_wkv_matches_definition(impl, c: WKVCase, prop: str = "wkv_matches_definition"):
    """The WKV output equals the definition (explicit weighted average, log space) within the bound
    (below float64: the precision rule on the naive log-space WKV, properties.mixers_common)."""
    p = precision_of(impl)
    c = WKVCase(*round_inputs(p, c.w, c.u, c.k, c.v))
    got = impl.forward(c.w, c.u, c.k, c.v)
    ref = RW.wkv(c.w, c.u, c.k, c.v, form="parallel")
    M, n = _wkv_magnitude(c)
    bound = precision_elementwise(p, rounding_bound(M, n), M, n, lambda: NV.wkv(NaiveOps(p), c.w, c.u, c.k, c.v), ref)
    compare_elementwise(prop if p == "float64" else f"{prop}[{p}]",
                        impl.name, got, ref, bound, repr(c))


def _wkv_bonus_clamped(w, u, k, v):
    """A "safe exp" floor on the bonus: u clamped to >= -50 (the current token overweighted once
    u < -50; unseen unless a past token competes with e^{u + k_t} there)."""
    return RW.wkv(w, np.maximum(u, -50.0), k, v, form="stable")


def _wkv_naive(w, u, k, v):
    return RW.wkv(w, u, k, v, form="recurrent")


def _wkv_no_max_shift(w, u, k, v):
    """The naive recurrence as a kernel without the running max runs it: inf / NaN past e^709."""
    try:
        return _wkv_naive(w, u, k, v)
    except OverflowError:
        return np.full(np.shape(k), np.nan)


def _from_log_weights(lw, v):
    lw = lw - np.max(lw, axis=3, keepdims=True)
    p = np.exp(lw)
    return np.einsum("bhtjd,bhjd->bhtd", p / p.sum(axis=3, keepdims=True), v)


def _per_head(x, k):
    return np.broadcast_to(x, (k.shape[1], k.shape[3]))[None, :, None, None, :]


def _wkv_u_on_past(w, u, k, v):
    """Bonus u also given to a past token (j = t - 1), an indexing slip. (Adding u to every
    token instead would cancel in the normalisation and change nothing.)"""
    L = k.shape[2]
    prev = np.eye(L, k=-1, dtype=bool)[None, None, :, :, None]
    lw = RW.log_weights(w, u, k)
    return _from_log_weights(np.where(prev, lw + _per_head(u, k), lw), v)


def _wkv_decay_t_minus_j(w, u, k, v):
    """Past token j weighted e^{(t-j) w}: one extra decay step (the notes' e^{-(t-j) w} read
    literally, docs/errata.md#e9)."""
    lw = RW.log_weights(w, u, k)
    past = np.tril(np.ones((k.shape[2],) * 2, dtype=bool), -1)[None, None, :, :, None]
    return _from_log_weights(np.where(past, lw + _per_head(w, k), lw), v)


def _combine_decays_later(earlier, later, w):
    """Scan operator decaying the LATER segment by the earlier one's length (the order of the affine
    maps swapped); equal to the right one only where both segments are one token long."""
    nx, ox, qx, mx = earlier
    ny, oy, qy, my = later
    oy = oy + nx[:, None] * w[:, :, None, :]
    o = np.maximum(ox, oy)
    ax, ay = qx * np.exp(ox - o), qy * np.exp(oy - o)
    return nx + ny, o, ax + ay, (ax * mx + ay * my) / (ax + ay)


def _wkv_scan_decays_later(w, u, k, v):
    return RW.wkv_prefix_scan(w, u, k, v, combine=_combine_decays_later)


# ----------------------------------------------------------------------------- selective scan


@dataclasses.dataclass(frozen=True)
class ScanCase:
    u: np.ndarray
    delta: np.ndarray
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: Optional[np.ndarray]
    z: Optional[np.ndarray]
    x0: Optional[np.ndarray]

    def __repr__(self):
        return (f"ScanCase({shape_repr(u=self.u, A=self.A, B=self.B)}, D={self.D is not None}, z={self.z is not None}, "
                f"x0={self.x0 is not None}, max delta*|A|={np.max(self.delta[..., None] * -self.A[None, :, None]):.3g})")


def _decays(caps) -> tuple:
    """The decay forms drawn (option 'decay'), less the declined ones; Unsupported when none is left."""
    return caps.require("decay", ("per_channel", "per_head")) if hasattr(caps, "require") else ("per_channel", "per_head")


def scan_case(caps):
    """A selective-scan problem of the declared capabilities and decays (:func:`_scan_case`);
    Unsupported at once when every decay form is declined."""
    _decays(caps)
    return _scan_case(caps)


@st.composite
def _scan_case(draw, caps):
    b, L, P, N = draw(st.integers(1, 2)), draw(st.integers(1, 16)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    G = draw(st.integers(1, 2))
    H = G * (draw(st.integers(1, 2)) if "grouped" in caps else 1)
    per_head = draw(sampled(_decays(caps))) == "per_head"
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = -np.exp(rng.standard_normal((H, 1, 1) if per_head else (H, P, N)))
    A = np.broadcast_to(A, (H, P, N)).copy()
    tv = "time_varying" in caps and draw(st.booleans())
    delta = np.log1p(np.exp(rng.standard_normal((b, H, L if tv else 1, 1 if per_head else P))
                            * draw(sampled([1.0, 3.0]))))
    delta = np.broadcast_to(delta, delta.shape[:3] + (P,)).copy()
    Bm, Cm = rng.standard_normal((2, b, G, L if tv else 1, N))
    delta, Bm, Cm = (np.broadcast_to(x, x.shape[:2] + (L,) + x.shape[3:]).copy() for x in (delta, Bm, Cm))
    u = rng.standard_normal((b, H, L, P)) * draw(sampled([1.0, 100.0]))
    D = z = x0 = None
    if "skip_and_gate" in caps and draw(st.booleans()):
        D, z = rng.standard_normal((H, P)), rng.standard_normal((b, H, L, P))
    if "initial_state" in caps and draw(st.booleans()):
        x0 = rng.standard_normal((b, H, P, N))
    return ScanCase(u, delta, A, Bm, Cm, D, z, x0)


@st.composite
def _scan_extreme_case(draw, caps):
    """Decays near their floor: delta |A| from 50 to 1000 on most steps (exp(delta A) below e^-50,
    down to an exact 0 past e^-745; cumulative sums to -1e4), delta ~ 1e-3 (no decay) on the others."""
    c = draw(scan_case(caps))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_head = bool(np.all(c.A == c.A[:, :1, :1])) and bool(np.all(c.delta == c.delta[..., :1]))  # an SSD case
    A = -np.exp(rng.uniform(0.0, 3.0, c.A[:, :1, :1].shape if per_head else c.A.shape))  # |A| in [1, 20]
    A = np.broadcast_to(A, c.A.shape).copy()
    shape = c.delta[..., :1].shape if per_head else c.delta.shape
    big = rng.random(shape) < 0.7
    delta = np.broadcast_to(np.where(big, 50 + 950 * rng.random(shape), 1e-3), c.delta.shape)
    if "time_varying" not in caps:
        delta = np.broadcast_to(delta[:, :, :1], delta.shape)
    return dataclasses.replace(c, delta=delta / np.max(-A, axis=-1)[None, :, None, :], A=A)


def scan_extreme_case(caps):
    _decays(caps)  # Unsupported at once when every decay form is declined
    return _scan_extreme_case(caps)


def _scan_magnitude(c: ScanCase):
    """Same recurrence on absolute values (Abar > 0 already) bounds every path's magnitude; a decay
    over s steps is a product of s exps (sequential, associative) or a power (convolution):
    <= L roundings, plus u * sum_t delta |A| from the exponents, so n = 3L + N + 8 + max sum delta |A|.
    Returns (M_y, M_x, n)."""
    L, N = c.u.shape[2], c.A.shape[2]
    absD = None if c.D is None else np.abs(c.D)
    my, mx = SSM.selective_scan(np.abs(c.u), c.delta, c.A, np.abs(c.B), np.abs(c.C), absD, None, initial_state=None if c.x0 is None else np.abs(c.x0))
    if c.z is not None:
        my = my * np.abs(SSM.silu(c.z))
    n = 3 * L + N + 8 + float(np.max(np.sum(c.delta, axis=2)[..., None] * -c.A[None], initial=0.0))
    return my, mx, n


def _scan_bound(c: ScanCase):
    my, mx, n = _scan_magnitude(c)
    return rounding_bound(my, n), rounding_bound(mx, n)


def check_scan_matches_sequential(impl, c: ScanCase, prop: str = "scan_matches_sequential"):
    """Output (and last state when declared) equal the sequential scan within the rounding bound
    (below float64: the precision rule on the naive sequential scan, properties.mixers_common)."""
    p = precision_of(impl)
    c = ScanCase(*round_inputs(p, c.u, c.delta, c.A, c.B, c.C, c.D, c.z, c.x0))
    y, x = impl.forward(c.u, c.delta, c.A, c.B, c.C, c.D, c.z, c.x0)
    ry, rx = SSM.selective_scan(c.u, c.delta, c.A, c.B, c.C, c.D, c.z, initial_state=c.x0)
    my, mx, n = _scan_magnitude(c)
    naive = [None]

    def nv(i):
        return lambda: (naive.__setitem__(0, naive[0] or NV.selective_scan(NaiveOps(p), c.u, c.delta, c.A, c.B, c.C,
                                                                            c.D, c.z, c.x0)), naive[0][i])[1]
    label = prop if p == "float64" else f"{prop}[{p}]"
    compare_elementwise(label, impl.name, y, ry, precision_elementwise(p, rounding_bound(my, n), my, n, nv(0), ry), repr(c))
    if "final_state" in impl.capabilities:
        compare_elementwise(label, impl.name, x, rx, precision_elementwise(p, rounding_bound(mx, n), mx, n, nv(1), rx),
                            repr(c) + " (last state)")


def _scan_form(form):
    return lambda u, dl, A, B, C, D, z, x0: SSM.selective_scan(u, dl, A, B, C, D, z, initial_state=x0, form=form)


def _scan_log_decay(u, dl, A, B, C, D, z, x0):
    """The segment-sum form (Mamba-2 SSD style): x_t = sum_j e^{cum_t - cum_j} dB_j u_j with
    cum = cumsum(log Abar) and log Abar taken of the computed exp(delta A): exact while Abar > 0,
    but an Abar that underflows to 0 (delta |A| > 745) makes cum -inf and -inf - -inf = NaN."""
    b, H, L, P = u.shape
    G = B.shape[1]
    Bg, Cg = np.repeat(B, H // G, axis=1), np.repeat(C, H // G, axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cum = np.cumsum(np.log(np.exp(dl[..., None] * A[None, :, None])), axis=2)  # (b, H, L, P, N)
        seg = np.exp(cum[:, :, :, None] - cum[:, :, None, :])  # (b, H, t, j, P, N)
        seg = np.where(np.tril(np.ones((L, L), bool))[None, None, :, :, None, None], seg, 0.0)
        dBu = dl[..., None] * Bg[:, :, :, None, :] * u[..., None]  # (b, H, L, P, N)
        xs = np.einsum("bhtjpn,bhjpn->bhtpn", seg, dBu)
        if x0 is not None:
            xs = xs + np.exp(cum) * x0[:, :, None]
    y = np.einsum("bhlpn,bhln->bhlp", xs, Cg) + (0 if D is None else D[None, :, None] * u)
    return (y if z is None else y * SSM.silu(z)), xs[:, :, -1]


def _scan_euler_a(u, dl, A, B, C, D, z, x0):
    """Euler for A too: Abar = 1 + delta A (first-order, not ZOH): differs at O((delta A)^2)."""
    b, H, L, P = u.shape
    G = B.shape[1]
    Bg, Cg = np.repeat(B, H // G, axis=1), np.repeat(C, H // G, axis=1)
    x = np.zeros((b, H, P, A.shape[2])) if x0 is None else x0
    ys = []
    for t in range(L):
        x = (1 + dl[:, :, t, :, None] * A[None]) * x + dl[:, :, t, :, None] * Bg[:, :, t, None, :] * u[:, :, t, :, None]
        ys.append(np.einsum("bhpn,bhn->bhp", x, Cg[:, :, t]))
    y = np.stack(ys, axis=2) + (0 if D is None else D[None, :, None] * u)
    return (y if z is None else y * SSM.silu(z)), x


def _scan_group_mod(u, dl, A, B, C, D, z, x0):
    """Head h reads group h % G instead of h // (H / G) (the GQA-style mapping bug)."""
    H, G = u.shape[1], B.shape[1]
    order = [h % G for h in range(H)]
    rep = H // G
    Bp, Cp = B[:, order], C[:, order]  # (b, H, L, N): treat every head as its own group
    return SSM.selective_scan(u, dl, A, Bp, Cp, D, z, initial_state=x0) if rep > 1 else \
        SSM.selective_scan(u, dl, A, B, C, D, z, initial_state=x0)


def _scan_seed_convolution(u, dl, A, B, C, D, z, x0):
    """The notes' convolution form read literally: y_t = sum_{j<t} C Abar^{t-j-1} Bbar u_j + D u_t
    (docs/errata.md#e15)."""
    s = SSM.selective_scan(u, dl, A, B, C, None, None, form="convolution")  # for the setup checks
    H, G = u.shape[1], B.shape[1]
    Abar = np.exp(dl[:, :, 0, :, None] * A[None])
    Bbar = dl[:, :, 0, :, None] * np.repeat(B, H // G, axis=1)[:, :, 0, None, :]
    c = np.repeat(C, H // G, axis=1)[:, :, 0]
    L = u.shape[2]
    y = np.zeros(u.shape)
    for t in range(L):
        for j in range(t):
            y[:, :, t] += np.einsum("bhpn,bhn->bhp", Abar ** (t - j - 1) * Bbar, c) * u[:, :, j]
    y = y + (0 if D is None else D[None, :, None] * u)
    return (y if z is None else y * SSM.silu(z)), s[1]


def _ssd_form(form, chunk_size=4):
    """refimpl.mixers.ssm.ssd as a scan adapter: one decay per head (A[:, 0, 0], delta[..., 0])."""
    def forward(u, dl, A, B, C, D, z, x0):
        return SSM.ssd(u, dl[..., 0], A[:, 0, 0], B, C, D, z, initial_state=x0, form=form, chunk_size=chunk_size)

    return forward


def _ssd_no_state_passing(u, dl, A, B, C, D, z, x0):
    """Chunked SSD whose chunks forget the state of the chunks before them (each chunk starts from
    the initial state): the inter-chunk recurrence left out."""
    outs, h = [], x0
    for c0 in range(0, u.shape[2], 4):
        sl = slice(c0, c0 + 4)
        y, h = SSM.ssd(u[:, :, sl], dl[:, :, sl, 0], A[:, 0, 0], B[:, :, sl], C[:, :, sl], D,
                       None if z is None else z[:, :, sl], initial_state=x0)
        outs.append(y)
    return (np.concatenate(outs, axis=2) if outs else np.zeros(u.shape)), h


_ALL = frozenset({"time_varying", "grouped", "skip_and_gate", "initial_state", "final_state"})
_SSD = {"decay": {"per_channel"}}
BUNDLED = [WKVAdapter(f"refimpl.wkv[{f}]", (lambda f: lambda w, u, k, v: RW.wkv(w, u, k, v, form=f))(f),
                      frozenset({"large_keys"})) for f in ("stable", "parallel", "scan")]
BUNDLED.append(WKVAdapter("refimpl.wkv[recurrent]", _wkv_naive))  # exact, but overflows for large keys
BUNDLED += [ScanAdapter(f"refimpl.selective_scan[{f}]", _scan_form(f), _ALL) for f in ("sequential", "associative")]
BUNDLED.append(ScanAdapter("refimpl.selective_scan[convolution]", _scan_form("convolution"), _ALL - {"time_varying"}))
BUNDLED.append(ScanAdapter("refimpl.ssd[chunked]", _ssd_form("chunked"), _ALL, declines=_SSD))

_W = "wrong[{}]"
WRONG = {
    "wkv_naive_overflows": WKVAdapter(_W.format("wkv_naive_overflows"), _wkv_no_max_shift, frozenset({"large_keys"})),
    "wkv_u_on_past": WKVAdapter(_W.format("wkv_u_on_past"), _wkv_u_on_past),
    "wkv_decay_t_minus_j": WKVAdapter(_W.format("wkv_decay_t_minus_j"), _wkv_decay_t_minus_j),
    "wkv_bonus_clamped": WKVAdapter(_W.format("wkv_bonus_clamped"), _wkv_bonus_clamped, frozenset({"large_keys"})),
    "wkv_scan_decays_later": WKVAdapter(_W.format("wkv_scan_decays_later"), _wkv_scan_decays_later,
                                        frozenset({"large_keys"})),
    "scan_log_decay": ScanAdapter(_W.format("scan_log_decay"), _scan_log_decay, _ALL),
    "scan_euler_a": ScanAdapter(_W.format("scan_euler_a"), _scan_euler_a, _ALL),
    "scan_group_mod": ScanAdapter(_W.format("scan_group_mod"), _scan_group_mod, _ALL),
    "scan_seed_convolution": ScanAdapter(_W.format("scan_seed_convolution"), _scan_seed_convolution, _ALL - {"time_varying"}),
    "ssd_no_state_passing": ScanAdapter(_W.format("ssd_no_state_passing"), _ssd_no_state_passing, _ALL, declines=_SSD),
}

PROPERTIES = [
    Property("wkv_matches_definition", "wkv", check_wkv_matches_definition, wkv_case,
             "WKV equals its definition (bonus u on the current token only, past token j decayed (t-1-j) w); "
             "with large_keys, also for |k| up to 1e4 where exp(k) overflows",
             rejects=("wkv_naive_overflows", "wkv_u_on_past", "wkv_decay_t_minus_j", "wkv_scan_decays_later")),
    Property("wkv_extreme_exponents", "wkv", lambda i, c: check_wkv_matches_definition(i, c, "wkv_extreme_exponents"),
             wkv_extreme_case, "WKV with a bonus near its floor and keys climbing past e^709 equals its definition",
             requires=frozenset({"large_keys"}), rejects=("wkv_bonus_clamped",)),
    Property("scan_extreme_decays", "ssm_scan", lambda i, c: check_scan_matches_sequential(i, c, "scan_extreme_decays"),
             scan_extreme_case, "decays near their floor (delta |A| to 1000 a step) still equal the sequential scan",
             rejects=("scan_log_decay",)),
    Property("scan_matches_sequential", "ssm_scan", check_scan_matches_sequential, scan_case,
             "sequential, associative and convolution forms equal the ZOH-A / Euler-B selective scan",
             rejects=("scan_euler_a", "scan_group_mod", "scan_seed_convolution", "ssd_no_state_passing")),
]

__all__ = ["BUNDLED", "KINDS", "PROPERTIES", "WRONG", "ScanAdapter", "WKVAdapter"]
