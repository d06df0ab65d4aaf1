"""Properties of activations and feed-forward / GLU blocks (kind "ffn"), against refimpl.ffn.
This module holds the kind's declaration (KINDS), the strategies and checks of the activations,
the FFN forward and backward and the gated product, and the PROPERTIES table; the naive baselines
live in ``properties.ffn_naive``, the adapters (refimpl's and the wrong ones) in
``properties.ffn_adapters``.

Adapter: ``act(name, u)`` for the names of ``refimpl.ffn.ACTIVATIONS`` ("gelu" is the erf
form, "gelu_tanh" the tanh approximation: two names, never one for the other);
``ffn(x, params, activation, keep_mask, p)`` for ``refimpl.ffn.MLPParams`` /
``GLUParams`` (x (N, d), keep_mask (N, d_ff) bool or None); with "backward"
``ffn_backward(x, dy, params, activation, keep_mask, p) -> (dx, grads)``.

Tolerance: activations are compared with an mpmath evaluation at 50 digits (error
<= 8 u |f(u)|, plus 4 u |u| for the GELUs, whose 1 + erf(u / sqrt 2) cancels for u << 0,
as in torch's CPU kernel); the FFN with a forward bound of 8 (d + d_ff + 4) u times the
magnitudes of each matmul's terms (|x||W1|, |h||W2|), computed from the case.

Precision (``properties.precision``): u, x, the parameters and dy are drawn representable in
the adapter's precision; lower precisions are held to 2x the error of the naive computation in
that precision (``naive_act``, ``naive_ffn``, ``naive_ffn_backward``: every matmul accumulated
in float32 and rounded, every elementwise step (bias, activation, gate, dropout scale)
rounded, as an eager framework computes) plus ``precision.layer_floor`` (the bounds above at
u = u32, plus 4 u_p |y|). The dropout mask is boolean: exact. In bfloat16 the two GELUs
(at most 4.7e-4 apart) are closer than half an ulp of their outputs near |u| = 2, so only the
float64 and float32 bounds tell them apart.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import mpmath
import numpy as np
from hypothesis import strategies as st

from refimpl import ffn as Fn

from .core import Property
from .ffn_adapters import REFIMPL, WRONG, FFNAdapter, in_precision  # noqa: F401  (re-exported)
from .ffn_naive import naive_act, naive_act_grad, naive_ffn, naive_ffn_backward
from .precision import compare_layer, naive_ops, precision_of, round_inputs
from .protocol import Capability, Kind, Option
from .tolerance import U64, compare_close
from .strategy_cache import sampled

KINDS = (
    Kind("ffn", "activations and MLP / GLU feed-forward blocks; compared with refimpl.ffn",
         {"act": "act(name in refimpl.ffn.ACTIVATIONS, u) -> array",
          "ffn": "ffn(x (N, d), params: MLPParams | GLUParams, activation, keep_mask (N, d_ff) | None, p) -> (N, d)",
          "ffn_backward": "ffn_backward(x, dy, params, activation, keep_mask, p) -> (dx, grads of params' type)",
          "gated": "gated(activation, a (N, F), b (N, F)) -> act(a) * b (N, F): the gated product of a GLU, "
                   "h = act(x W_gate + b_gate) * (x W_up + b_up) before W_down (refimpl.ffn.glu_split of [a, b])",
          "gated_backward": "gated_backward(activation, a, b, dc (N, F)) -> (da, db) = (dc * b * act'(a), dc * act(a))"},
         ("act", "ffn"),
         {"backward": Capability("supplies the analytic gradients", ("ffn_backward",)),
          "glu": Capability("ffn accepts GLUParams (gated: act(x W_gate) * (x W_up))"),
          "gated_only": Capability("a partial ffn: the kernel computes only the gated product act(a) * b of a GLU "
                                   "(Liger SwiGLU / GeGLU), through gated(); act and ffn are not supplied, so "
                                   "activation_matches_definition, ffn_matches and ffn_backward_matches are "
                                   "unsupported for it", ("gated",), waives=("act", "ffn")),
          "gated_backward": Capability("supplies the gated product's gradients", ("gated_backward",))},
         options={"activation": Option("activations drawn (act, ffn, gated): decline those the kernel does not "
                                       "compute (Liger's SwiGLU computes silu only)", Fn.ACTIVATIONS)}),
)


# ----------------------------------------------------------------------------
# activations


def _mp_act(name, u):
    mpmath.mp.dps = 50
    x = mpmath.mpf(float(u))
    if name == "relu":
        return float(max(x, 0))
    if name == "gelu":
        return float(x / 2 * (1 + mpmath.erf(x / mpmath.sqrt(2))))
    if name == "gelu_tanh":
        return float(x / 2 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x**3))))
    if name == "silu":
        return float(x / (1 + mpmath.exp(-x)))
    return float(1 / (1 + mpmath.exp(-x)))


@dataclasses.dataclass(frozen=True)
class ActCase:
    name: str
    u: np.ndarray

    def __repr__(self):
        return f"ActCase({self.name}, u={self.u.tolist()})"


def _activations(caps) -> tuple:
    """The activations drawn for ``caps``: refimpl.ffn.ACTIVATIONS less the declined ones
    (Unsupported when none is left)."""
    return caps.require("activation", Fn.ACTIVATIONS) if hasattr(caps, "require") else Fn.ACTIVATIONS


def _with_activations(make):
    """The strategy ``make(caps)``, after checking that the declaration leaves an activation to
    draw (Unsupported at once otherwise, not while drawing)."""
    def strategy(caps):
        _activations(caps)
        return make(caps)

    return strategy


@st.composite
def act_case(draw, caps=None):
    name = draw(sampled(_activations(caps)))
    u = draw(st.lists(st.floats(-40, 40, allow_nan=False, allow_subnormal=False) | st.sampled_from([-2.2, 2.2, -0.7, 1.5]),
                      min_size=1, max_size=6))
    return ActCase(name, round_inputs(getattr(caps, "precision", "float64"), np.array(u)))


def check_activation(impl, case: ActCase):
    """Each named activation equals its definition (mpmath, 50 digits) to 8 u relative."""
    got = np.asarray(impl.act(case.name, case.u), dtype=np.float64)
    want = np.array([_mp_act(case.name, v) for v in case.u])
    # x/2 (1 + erf(.)) cancels for x << 0: 1 + erf carries an absolute error <= 2 u, times |x|/2
    tol = 8 * U64 * (np.abs(want).max() + 1e-300) + 4 * U64 * np.abs(case.u).max() * case.name.startswith("gelu")
    p = precision_of(impl)
    compare_layer(f"act {case.name}", got, want, precision=p, float64_bound=tol,
                  naive=lambda: naive_ops(p).out(naive_act(naive_ops(p), case.name, case.u)), context=f"{impl.name}; {case!r}")


# ----------------------------------------------------------------------------
# FFN forward / backward


@dataclasses.dataclass(frozen=True)
class FFNCase:
    x: np.ndarray
    params: object
    activation: str
    keep: Optional[np.ndarray]
    p: float
    dy: np.ndarray
    seed: int

    def __repr__(self):
        kind = type(self.params).__name__
        return (f"FFNCase({kind}, x{self.x.shape}, d_ff={self.keep.shape[1] if self.keep is not None else '-'}, "
                f"activation={self.activation}, p={self.p}, seed={self.seed})")


@st.composite
def ffn_case(draw, caps):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n, d, dff = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 9))
    glu = "glu" in caps and draw(st.booleans())
    bias = draw(st.booleans())

    def m(r, c):
        return rng.standard_normal((r, c)) * 1.5 / np.sqrt(r)

    def v(k):
        return rng.standard_normal(k) if bias else None

    if glu:
        params = Fn.GLUParams(m(d, dff), m(d, dff), m(dff, d), v(dff), v(dff), v(d))
    else:
        params = Fn.MLPParams(m(d, dff), m(dff, d), v(dff), v(d))
    activation = draw(sampled(_activations(caps)))
    p = draw(sampled([0.0, 0.1, 0.5]))
    keep = None if p == 0 else rng.random((n, dff)) >= p
    x = rng.standard_normal((n, d)) * draw(sampled([1.0, 3.0]))
    prec = getattr(caps, "precision", "float64")
    params = type(params)(*round_inputs(prec, *(getattr(params, f.name) for f in dataclasses.fields(params))))
    x, dy = round_inputs(prec, x, rng.standard_normal((n, d)))
    return FFNCase(x, params, activation, keep, p, dy, seed)


def _ffn_tol(case):
    f = case.params
    W1 = f.W_gate if isinstance(f, Fn.GLUParams) else f.W1
    W2 = f.W_down if isinstance(f, Fn.GLUParams) else f.W2
    d, dff = W1.shape
    up = np.abs(case.x) @ np.abs(W1) + 1
    if isinstance(f, Fn.GLUParams):
        up = up * (np.abs(case.x) @ np.abs(f.W_up) + 1)
    scale = 1.0 / (1 - case.p)
    return 8 * (d + dff + 4) * U64 * float((scale * (up + 1) @ np.abs(W2)).max() + 1)


def _terms(case):
    """Sizes of the terms each output sums (for ``precision.layer_floor``), from the float64
    forward: y = h W2 + b2 sums |h| |W2| + |b2|; backward, dh = dy W2^T, du = dh v act'(u),
    dx = du W1^T (+ dv Wv^T), dW = x^T du, h^T dy, db = sums of |du|, |dv|, |dy|."""
    f = Fn._Forward(case.x, case.params, case.activation, case.keep, case.p)
    A = np.abs
    b2 = 0 if f.b2 is None else A(f.b2)
    fwd = float((A(f.h) @ A(f.W2) + b2).max())
    dy = A(case.dy).reshape(-1, case.x.shape[-1])
    dh = dy @ A(f.W2).T
    if f.mask is not None:
        dh = np.where(f.mask, dh / (1 - f.p), 0.0)
    g = A(Fn.act_grad(f.activation, f.u))
    du = dh * g * (1.0 if f.v is None else A(f.v))
    dv = None if f.v is None else dh * A(f.a)
    dx = du @ A(f.W1).T + (0 if dv is None else dv @ A(f.Wv).T)
    x = A(f.x)
    out = {"x": float(dx.max()), "W2": float((A(f.h).T @ dy).max()), "b2": float(dy.sum(0).max()),
           "W1": float((x.T @ du).max()), "b1": float(du.sum(0).max())}
    if dv is not None:
        out.update(W_gate=out["W1"], b_gate=out["b1"], W_down=out["W2"], b_down=out["b2"],
                   W_up=float((x.T @ dv).max()), b_up=float(dv.sum(0).max()))
    return fwd, out


def check_ffn(impl, case: FFNCase):
    """FFN / GLU forward equals refimpl.ffn.ffn (gate activation on W_gate, dropout M/(1-p) on h)."""
    got = impl.ffn(case.x, case.params, case.activation, case.keep, case.p)
    want = Fn.ffn(case.x, case.params, activation=case.activation, keep_mask=case.keep, dropout_p=case.p)
    p = precision_of(impl)
    compare_layer("ffn", got, want, precision=p, float64_bound=_ffn_tol(case), naive=lambda: naive_ffn(p, case)[0],
                  magnitude=_terms(case)[0] if p != "float64" else None, context=f"{impl.name}; {case!r}")


def check_ffn_backward(impl, case: FFNCase):
    """dx and every weight/bias gradient equal refimpl.ffn.ffn_backward's (relu' = 0 at 0)."""
    dx, grads = impl.ffn_backward(case.x, case.dy, case.params, case.activation, case.keep, case.p)
    rdx, rg = Fn.ffn_backward(case.x, case.dy, case.params, activation=case.activation, keep_mask=case.keep,
                              dropout_p=case.p)
    tol = _ffn_tol(case) * (np.abs(case.dy).max() + 1) * (np.abs(case.x).max() + 2) * 4
    ctx = f"{impl.name}; {case!r}"
    p = precision_of(impl)
    naive, terms = (naive_ffn_backward(p, case), _terms(case)[1]) if p != "float64" else ({}, {})
    compare_layer("ffn_backward dx", dx, rdx, precision=p, float64_bound=tol, naive=naive.get("x"),
                  magnitude=terms.get("x"), context=ctx)
    for fld in dataclasses.fields(rg):
        want, got = getattr(rg, fld.name), getattr(grads, fld.name)
        if want is None:
            continue
        compare_layer(f"ffn_backward d{fld.name}", got, want, precision=p, float64_bound=tol * case.x.shape[0],
                      naive=naive.get(fld.name), magnitude=terms.get(fld.name), context=ctx)


# ----------------------------------------------------------------------------
# the gated product alone (a partial ffn: Liger SwiGLU / GeGLU)


@dataclasses.dataclass(frozen=True)
class GatedCase:
    activation: str
    a: np.ndarray
    b: np.ndarray
    dc: np.ndarray
    seed: int

    def __repr__(self):
        return f"GatedCase({self.activation}, a{self.a.shape}, |a| <= {np.abs(self.a).max():.3g}, seed={self.seed})"


@st.composite
def gated_case(draw, caps):
    """act(a) * b on (N, F) rows: F from 1 to 70 (partial and whole power-of-two blocks: Liger's
    BLOCK_SIZE is the next power of two of F), |a| up to 40 (silu and the GELUs saturate: act(a)
    = a or 0 to the last ulp; sigmoid' underflows), some entries at the kinks 0 and +-2.2."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n, F = draw(st.integers(1, 4)), draw(st.one_of(st.integers(1, 9), st.sampled_from((16, 31, 33, 64, 70))))
    a = rng.standard_normal((n, F)) * draw(sampled([1.0, 3.0, 15.0]))
    a.flat[rng.integers(0, a.size, size=min(3, a.size))] = draw(sampled([0.0, -2.2, 2.2, -40.0, 40.0]))
    prec = getattr(caps, "precision", "float64")
    a, b, dc = round_inputs(prec, a, rng.standard_normal((n, F)), rng.standard_normal((n, F)))
    return GatedCase(draw(sampled(_activations(caps))), a, b, dc, seed)


def _gated_tol(case):
    """float64: act(a) to 8 u relative (+ 4 u |a| for the GELUs, as in check_activation), times |b|,
    and the product's rounding."""
    gelu = case.activation.startswith("gelu")
    act = np.abs(Fn.act(case.activation, case.a))
    return float(np.max((8 * U64 * act + 4 * U64 * np.abs(case.a) * gelu) * np.abs(case.b) + U64 * act * np.abs(case.b)))


def check_gated(impl, case: GatedCase):
    """gated(activation, a, b) equals act(a) * b (refimpl.ffn.glu_split of [a, b], gate first)."""
    got = impl.gated(case.activation, case.a, case.b)
    want = Fn.glu_split(np.concatenate([case.a, case.b], axis=-1), case.activation)
    p = precision_of(impl)

    def naive():
        ops = naive_ops(p)
        return ops.out(ops.r(naive_act(ops, case.activation, case.a) * ops.r(case.b)))

    compare_layer("gated", got, want, precision=p, float64_bound=_gated_tol(case), naive=naive,
                  context=f"{impl.name}; {case!r}")


def check_gated_backward(impl, case: GatedCase):
    """(da, db) of sum(dc * act(a) * b) equal (dc * b * act'(a), dc * act(a)) (refimpl.ffn.act_grad, act)."""
    da, db = impl.gated_backward(case.activation, case.a, case.b, case.dc)
    g, h = Fn.act_grad(case.activation, case.a), Fn.act(case.activation, case.a)
    want_da, want_db = case.dc * case.b * g, case.dc * h
    p = precision_of(impl)
    ops = naive_ops(p)
    gelu = case.activation.startswith("gelu")
    tol = float(np.max(16 * U64 * np.abs(case.dc * case.b) * (np.abs(g) + 1 + np.abs(case.a) * gelu)))
    ctx = f"{impl.name}; {case!r}"
    compare_layer("gated_backward da", da, want_da, precision=p, float64_bound=tol, context=ctx,
                  naive=lambda: ops.out(ops.r(ops.r(ops.r(case.dc) * ops.r(case.b))
                                              * naive_act_grad(ops, case.activation, case.a))))
    compare_layer("gated_backward db", db, want_db, precision=p, float64_bound=_gated_tol(case) * np.abs(case.dc).max(),
                  context=ctx, naive=lambda: ops.out(ops.r(ops.r(case.dc) * naive_act(ops, case.activation, case.a))))


BUNDLED = [REFIMPL]

PROPERTIES = [
    Property("activation_matches_definition", "ffn", check_activation, _with_activations(act_case),
             "relu, gelu (erf), gelu_tanh, silu, sigmoid equal their definitions (mpmath) to 8 u",
             rejects=("gelu_variant_swap", "gelu_variant_swap_float32"), methods=("act",)),
    Property("ffn_matches", "ffn", check_ffn, _with_activations(ffn_case),
             "MLP / GLU forward with activation dropout equals refimpl.ffn.ffn",
             rejects=("gelu_variant_swap", "glu_activation_on_value", "dropout_without_rescale",
                      "glu_activation_on_value_bfloat16", "dropout_without_rescale_float32"), methods=("ffn",)),
    Property("ffn_backward_matches", "ffn", check_ffn_backward, _with_activations(ffn_case),
             "FFN / GLU gradients (dx, dW, db) equal refimpl.ffn.ffn_backward", requires=frozenset({"backward"}),
             rejects=("backward_uses_act_not_derivative", "backward_forgets_dropout_mask",
                      "backward_uses_act_not_derivative_bfloat16", "backward_forgets_dropout_mask_float32")),
    Property("gated_matches", "ffn", check_gated, _with_activations(gated_case),
             "the gated product act(a) * b of a GLU equals refimpl.ffn.glu_split",
             rejects=("gated_activation_on_value", "gated_activation_on_value_float32"), methods=("gated",)),
    Property("gated_backward_matches", "ffn", check_gated_backward, _with_activations(gated_case),
             "the gated product's gradients equal (dc * b * act'(a), dc * act(a))",
             requires=frozenset({"gated_backward"}),
             rejects=("gated_backward_act_not_derivative", "gated_backward_act_not_derivative_float32")),
]
