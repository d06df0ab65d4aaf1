"""Expert networks with explicit weights: an FFN and a SwiGLU block, with their VJPs.

Row convention: a token is a row vector x (D,), a batch is X (N, D).

    FFN:     y = act(x W1 + b1) W2 + b2          W1 (D, H), W2 (H, D)   (docs/notes.md#moe-parameters:
                                                  d x 4d + 4d x d, 8 d^2 weights for H = 4d)
    SwiGLU:  y = (silu(x Wg) * (x Wu)) Wd         Wg, Wu (D, H), Wd (H, D)
             (Shazeer 2020; HF Mixtral w1 = gate, w3 = up, w2 = down; 3 D H weights)

Activations: "relu", "gelu" (exact, erf form), "silu" (x * sigmoid(x)).
``vjp(x, dy)`` returns dL/dx given dL/dy, for the gradient checks.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .. import _validate as V
from .._exp import exp
from .._validate import moe as VM
from ..ffn import GLUParams, MLPParams, _activation_of, _Forward, act, ffn_backward
from ..logistic import TAIL, silu


def activation(name: str, u: np.ndarray) -> np.ndarray:
    """``refimpl.ffn.act`` restricted to the experts' activations (one definition of each)."""
    return act(VM.expert_activation(name), u)


@dataclasses.dataclass(frozen=True)
class FFNExpert:
    """y = act(x W1 + b1) W2 + b2."""

    W1: np.ndarray
    W2: np.ndarray
    b1: Optional[np.ndarray] = None
    b2: Optional[np.ndarray] = None
    act: str = "relu"

    def __post_init__(self):
        weights = VM.ffn_expert_weights(self.W1, self.W2, self.b1, self.b2, self.act)
        for name, W in zip(("W1", "W2", "b1", "b2"), weights):
            object.__setattr__(self, name, W)

    @property
    def d_model(self) -> int:
        return self.W1.shape[0]

    @property
    def num_params(self) -> int:
        return self.W1.size + self.W2.size + sum(b.size for b in (self.b1, self.b2) if b is not None)

    def _params(self) -> MLPParams:
        return MLPParams(self.W1, self.W2, self.b1, self.b2)

    def __call__(self, x) -> np.ndarray:
        """``refimpl.ffn.ffn`` (one statement of the formula) on rows of x."""
        p = self._params()
        return _Forward(VM.expert_rows(x, self.d_model), p, _activation_of(p, self.act, None), None, 0.0,
                        names="x, W1, W2, b1, b2 (the expert's weights)").output()

    def vjp(self, x, dy) -> np.ndarray:
        """dL/dx (N, D) given dL/dy (N, D): ``refimpl.ffn.ffn_backward``'s dx."""
        return ffn_backward(VM.expert_rows(x, self.d_model), dy, self._params(), activation=self.act)[0]


@dataclasses.dataclass(frozen=True)
class SwiGLUExpert:
    """y = (silu(x Wg) * (x Wu)) Wd."""

    Wg: np.ndarray
    Wu: np.ndarray
    Wd: np.ndarray

    def __post_init__(self):
        for name, W in zip(("Wg", "Wu", "Wd"), VM.swiglu_expert_weights(self.Wg, self.Wu, self.Wd)):
            object.__setattr__(self, name, W)

    @property
    def d_model(self) -> int:
        return self.Wg.shape[0]

    @property
    def num_params(self) -> int:
        return self.Wg.size + self.Wu.size + self.Wd.size

    def _params(self) -> GLUParams:
        return GLUParams(self.Wg, self.Wu, self.Wd)

    def __call__(self, x) -> np.ndarray:
        """``refimpl.ffn.ffn`` with variant "swiglu" on rows of x."""
        p = self._params()
        return _Forward(VM.expert_rows(x, self.d_model), p, _activation_of(p, None, "swiglu"), None, 0.0,
                        names="x, Wg, Wu, Wd (the expert's weights)").output()

    def vjp(self, x, dy) -> np.ndarray:
        """dL/dx (N, D) given dL/dy (N, D): ``refimpl.ffn.ffn_backward``'s dx."""
        return ffn_backward(VM.expert_rows(x, self.d_model), dy, self._params(), variant="swiglu")[0]


def _swiglu_rows_into(expert: SwiGLUExpert, x: np.ndarray, out: np.ndarray) -> None:
    """out (N, D) = (silu(x Wg) * (x Wu)) Wd for float64 rows x (N, D): ``SwiGLUExpert.__call__``'s
    formula and errors, in the fewest passes over the (N, H) intermediates (the sparse layer forward,
    ``refimpl.moe.forward.apply_experts``).

        g = x Wg,  v = x Wu,  s = silu(g) = g / (1 + e^-g),  h = s v,  out = h Wd

    s and h share one buffer (exp, +1, divide, multiply in place) and the down projection writes
    into ``out`` (which may be x itself: x is read only before). Error of s: exp 1 ulp
    (``refimpl._exp``), the sum and the quotient 1/2 ulp each, within the 8 u |s| the layer's bound
    counts for the activation (tests/test_definition_moe.py).
    Below g = ``TAIL`` e^-g overflows: those entries take ``refimpl.logistic.silu`` (exact there).
    A non-finite g or v makes h non-finite, so h alone is checked; only then are g, v, h checked
    in the order ``refimpl.ffn`` checks them, for the same message."""
    names = "x, Wg, Wu, Wd (the expert's weights)"
    with np.errstate(over="ignore", invalid="ignore"):
        g, v = x @ expert.Wg, x @ expert.Wu
        h = np.negative(g)
        exp(h, out=h)
        h += 1.0
        np.divide(g, h, out=h)
        if h.size and np.min(g) < TAIL:  # e^-g = inf there: silu(g) = g e^g, taken where it is exact
            tail = g < TAIL
            h[tail] = silu(g[tail])
        h *= v
        if not np.isfinite(h).all():
            V.finite_result(g, "x W1 + b1", names)
            V.finite_result(v, "x W_up + b_up", names)
            V.finite_result(h, "the hidden activation", names)
        np.matmul(h, expert.Wd, out=out)
    V.finite_result(out, "the output", names)


def random_experts(num_experts: int, d_model: int, d_hidden: int, *, kind="ffn", act="relu",
                   bias=False, seed=0, scale=None) -> list:
    """Experts with N(0, scale^2) weights (default scale 1/sqrt(fan-in)) from an explicit seed."""
    from .. import _validate as V

    num_experts = V.count(num_experts, "num_experts", minimum=1, maximum=2**16)
    d_model, d_hidden = V.count(d_model, "d_model", minimum=1, maximum=2**16), V.count(d_hidden, "d_hidden", minimum=1, maximum=2**16)
    V.choice(kind, "kind", ("ffn", "swiglu")), V.flag(bias, "bias"), V.count(seed, "seed", maximum=2**64)
    if scale is not None:
        scale = V.real_number(scale, "scale", minimum=0.0, maximum=1e150)
    rng = np.random.default_rng(seed)
    s_in = 1 / np.sqrt(d_model) if scale is None else scale
    s_hid = 1 / np.sqrt(d_hidden) if scale is None else scale
    out = []
    for _ in range(num_experts):
        if kind == "ffn":
            out.append(FFNExpert(
                W1=rng.normal(0, s_in, (d_model, d_hidden)), W2=rng.normal(0, s_hid, (d_hidden, d_model)),
                b1=rng.normal(0, s_in, d_hidden) if bias else None,
                b2=rng.normal(0, s_hid, d_model) if bias else None, act=act))
        else:  # "swiglu"
            out.append(SwiGLUExpert(
                Wg=rng.normal(0, s_in, (d_model, d_hidden)), Wu=rng.normal(0, s_in, (d_model, d_hidden)),
                Wd=rng.normal(0, s_hid, (d_hidden, d_model))))
    return out
