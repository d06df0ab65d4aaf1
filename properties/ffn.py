"""Properties of activations and feed-forward / GLU blocks (kind "ffn"), against refimpl.ffn.

Adapter: ``act(name, u)`` for the names of ``refimpl.ffn.ACTIVATIONS`` ("gelu" is the erf
form, "gelu_tanh" the tanh approximation: two names, never one for the other);
``ffn(x, params, activation, keep_mask, p)`` for ``refimpl.ffn.MLPParams`` /
``GLUParams`` (x (N, d), keep_mask (N, d_ff) bool or None); with "backward"
``ffn_backward(x, dy, params, activation, keep_mask, p) -> (dx, grads)``.

Tolerance: activations are compared with an mpmath evaluation at 50 digits (error
<= 8 u |f(u)|, plus 4 u |u| for the GELUs, whose 1 + erf(u / sqrt 2) cancels for u << 0,
as in torch's CPU kernel); the FFN with a forward bound of 8 (d + d_ff + 4) u times the
magnitudes of each matmul's terms (|x||W1|, |h||W2|), computed from the case.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import mpmath
import numpy as np
from hypothesis import strategies as st

from refimpl import ffn as Fn

from .core import Property
from .protocol import Capability, Kind
from .tolerance import U64, compare_close

KINDS = (
    Kind("ffn", "activations and MLP / GLU feed-forward blocks; compared with refimpl.ffn",
         {"act": "act(name in refimpl.ffn.ACTIVATIONS, u) -> array",
          "ffn": "ffn(x (N, d), params: MLPParams | GLUParams, activation, keep_mask (N, d_ff) | None, p) -> (N, d)",
          "ffn_backward": "ffn_backward(x, dy, params, activation, keep_mask, p) -> (dx, grads of params' type)"},
         ("act", "ffn"),
         {"backward": Capability("supplies the analytic gradients", ("ffn_backward",)),
          "glu": Capability("ffn accepts GLUParams (gated: act(x W_gate) * (x W_up))")}),
)


@dataclasses.dataclass(frozen=True)
class FFNAdapter:
    name: str
    act: Callable
    ffn: Callable
    ffn_backward: Optional[Callable] = None
    capabilities: frozenset = frozenset({"backward", "glu"})
    kind: str = "ffn"


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


@st.composite
def act_case(draw):
    name = draw(st.sampled_from(Fn.ACTIVATIONS))
    u = draw(st.lists(st.floats(-40, 40, allow_nan=False, allow_subnormal=False) | st.sampled_from([-2.2, 2.2, -0.7, 1.5]),
                      min_size=1, max_size=6))
    return ActCase(name, np.array(u))


def check_activation(impl, case: ActCase):
    """Each named activation equals its definition (mpmath, 50 digits) to 8 u relative."""
    got = np.asarray(impl.act(case.name, case.u), dtype=np.float64)
    want = np.array([_mp_act(case.name, v) for v in case.u])
    # x/2 (1 + erf(.)) cancels for x << 0: 1 + erf carries an absolute error <= 2 u, times |x|/2
    tol = 8 * U64 * (np.abs(want).max() + 1e-300) + 4 * U64 * np.abs(case.u).max() * case.name.startswith("gelu")
    compare_close(f"act {case.name}", got, want, tol, f"{impl.name}; {case!r}")


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
    activation = draw(st.sampled_from(Fn.ACTIVATIONS))
    p = draw(st.sampled_from([0.0, 0.1, 0.5]))
    keep = None if p == 0 else rng.random((n, dff)) >= p
    x = rng.standard_normal((n, d)) * draw(st.sampled_from([1.0, 3.0]))
    return FFNCase(x, params, activation, keep, p, rng.standard_normal((n, d)), seed)


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


def check_ffn(impl, case: FFNCase):
    """FFN / GLU forward equals refimpl.ffn.ffn (gate activation on W_gate, dropout M/(1-p) on h)."""
    got = impl.ffn(case.x, case.params, case.activation, case.keep, case.p)
    want = Fn.ffn(case.x, case.params, activation=case.activation, keep_mask=case.keep, dropout_p=case.p)
    compare_close("ffn", got, want, _ffn_tol(case), f"{impl.name}; {case!r}")


def check_ffn_backward(impl, case: FFNCase):
    """dx and every weight/bias gradient equal refimpl.ffn.ffn_backward's (relu' = 0 at 0)."""
    dx, grads = impl.ffn_backward(case.x, case.dy, case.params, case.activation, case.keep, case.p)
    rdx, rg = Fn.ffn_backward(case.x, case.dy, case.params, activation=case.activation, keep_mask=case.keep,
                              dropout_p=case.p)
    tol = _ffn_tol(case) * (np.abs(case.dy).max() + 1) * (np.abs(case.x).max() + 2) * 4
    ctx = f"{impl.name}; {case!r}"
    compare_close("ffn_backward dx", dx, rdx, tol, ctx)
    for fld in dataclasses.fields(rg):
        want, got = getattr(rg, fld.name), getattr(grads, fld.name)
        if want is None:
            continue
        compare_close(f"ffn_backward d{fld.name}", got, want, tol * case.x.shape[0], ctx)


# ----------------------------------------------------------------------------
# adapters


def _ref_ffn(x, params, activation, keep, p):
    return Fn.ffn(x, params, activation=activation, keep_mask=keep, dropout_p=p)


def _ref_ffn_backward(x, dy, params, activation, keep, p):
    return Fn.ffn_backward(x, dy, params, activation=activation, keep_mask=keep, dropout_p=p)


def _act_swapped_gelu(name, u):
    swap = {"gelu": "gelu_tanh", "gelu_tanh": "gelu"}
    return Fn.act(swap.get(name, name), u)


def _ffn_gelu_swapped(x, params, activation, keep, p):
    swap = {"gelu": "gelu_tanh", "gelu_tanh": "gelu"}
    return Fn.ffn(x, params, activation=swap.get(activation, activation), keep_mask=keep, dropout_p=p)


def _ffn_gate_on_value(x, params, activation, keep, p):
    if isinstance(params, Fn.GLUParams):
        params = dataclasses.replace(params, W_gate=params.W_up, W_up=params.W_gate, b_gate=params.b_up, b_up=params.b_gate)
    return Fn.ffn(x, params, activation=activation, keep_mask=keep, dropout_p=p)


def _ffn_dropout_no_rescale(x, params, activation, keep, p):
    y = Fn.ffn(x, params, activation=activation, keep_mask=keep, dropout_p=p)
    if keep is None:
        return y
    b2 = params.b_down if isinstance(params, Fn.GLUParams) else params.b2
    b2 = 0.0 if b2 is None else b2
    return (y - b2) * (1 - p) + b2


def _backward_act_instead_of_derivative(x, dy, params, activation, keep, p):
    """Backward through the activation multiplies by act(u) instead of act'(u) (a classic slip)."""
    import unittest.mock as _m

    with _m.patch.object(Fn, "act_grad", Fn.act):
        return Fn.ffn_backward(x, dy, params, activation=activation, keep_mask=keep, dropout_p=p)


def _backward_mask_forgotten(x, dy, params, activation, keep, p):
    """Forward used the dropout mask; backward forgets it (gradient flows to dropped units)."""
    dx, g = Fn.ffn_backward(x, dy, params, activation=activation, keep_mask=None, dropout_p=0.0)
    return dx, g


REFIMPL = FFNAdapter("refimpl.ffn", Fn.act, _ref_ffn, _ref_ffn_backward)
BUNDLED = [REFIMPL]

WRONG = {
    "gelu_variant_swap": FFNAdapter("wrong[gelu_variant_swap]", _act_swapped_gelu, _ffn_gelu_swapped, _ref_ffn_backward),
    "glu_activation_on_value": FFNAdapter("wrong[glu_activation_on_value]", Fn.act, _ffn_gate_on_value, _ref_ffn_backward),
    "dropout_without_rescale": FFNAdapter("wrong[dropout_without_rescale]", Fn.act, _ffn_dropout_no_rescale,
                                          _ref_ffn_backward),
    "backward_uses_act_not_derivative": FFNAdapter("wrong[backward_uses_act_not_derivative]", Fn.act, _ref_ffn,
                                                   _backward_act_instead_of_derivative),
    "backward_forgets_dropout_mask": FFNAdapter("wrong[backward_forgets_dropout_mask]", Fn.act, _ref_ffn,
                                                _backward_mask_forgotten),
}

PROPERTIES = [
    Property("activation_matches_definition", "ffn", check_activation, act_case(),
             "relu, gelu (erf), gelu_tanh, silu, sigmoid equal their definitions (mpmath) to 8 u",
             rejects=("gelu_variant_swap",)),
    Property("ffn_matches", "ffn", check_ffn, lambda caps: ffn_case(caps),
             "MLP / GLU forward with activation dropout equals refimpl.ffn.ffn",
             rejects=("gelu_variant_swap", "glu_activation_on_value", "dropout_without_rescale")),
    Property("ffn_backward_matches", "ffn", check_ffn_backward, lambda caps: ffn_case(caps),
             "FFN / GLU gradients (dx, dW, db) equal refimpl.ffn.ffn_backward", requires=frozenset({"backward"}),
             rejects=("backward_uses_act_not_derivative", "backward_forgets_dropout_mask")),
]
