"""Position-wise feed-forward networks and gated linear units, with backward
(docs/notes.md#ffn; Shazeer 2020, "GLU Variants Improve Transformer").

Row convention: a token is a row x (d,); leading axes are batch/sequence.

    MLP:   u = x W1 + b1            W1 (d, d_ff)
           h = act(u) * M / q       M: activation-dropout keep-mask, q = 1 - p (docs/notes.md#attention-dropout)
           y = h W2 + b2            W2 (d_ff, d)
    GLU:   u = x W_gate + b_gate,  v = x W_up + b_up
           h = act(u) * v * M / q
           y = h W_down + b_down

    variant   act on the gate          used by
    GLU       sigmoid                  Dauphin et al. 2017
    ReGLU     relu
    GEGLU     gelu (erf) or gelu_tanh  T5 v1.1 "gated-gelu" (gelu_new = tanh form)
    SwiGLU    silu = x sigmoid(x)      LLaMA, PaLM, Mistral (HF: down(silu(gate(x)) * up(x)))

Activations, each named (torch.nn.functional, torch 2.13):
    relu(x)      = max(x, 0)                      (derivative 0 at x = 0, as torch)
    gelu(x)      = x Phi(x) = x/2 (1 + erf(x/sqrt 2))           F.gelu(approximate="none")
    gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) F.gelu(approximate="tanh")
    silu(x)      = x sigmoid(x)                                 F.silu
    sigmoid(x)   = 1 / (1 + e^-x)
The two GELUs differ by up to ~4.7e-4 (at |x| ~ 2.2): a kernel using one where the
model was trained with the other is a real bug, so they are distinct names.

Fused GLU projections: one matmul x [W_gate | W_up] gives h2 (.., 2 d_ff) split in halves;
which half is the gate is a convention (:func:`glu_split`): HF Phi-3 ``gate_up_proj.chunk``
and vLLM ``SiluAndMul`` take the first half as the gate, ``torch.nn.functional.glu(a|b) = a
sigmoid(b)`` the second.

Width: a GLU has three matrices, so d_ff = (2/3) 4d = 8d/3 keeps the 8 d^2 parameters of a
4d MLP. Meta's Llama ``FeedForward.__init__`` (meta-llama/llama model.py; llama3 the same):
hidden = int(2 * 4d / 3); hidden = int(ffn_dim_multiplier * hidden) if given; then rounded
up to a multiple of ``multiple_of`` (:func:`llama_hidden_dim`): 11008 for d = 4096 (Llama 1/2
7B), 13824 for 5120 (13B), 14336 for Llama 3 8B (x1.3, multiple_of 1024), 28672 for
Llama 2/3 70B (d = 8192, x1.3, multiple_of 4096).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
from scipy.special import ndtr

from ._validate import as_float_array, choice, finite_result, instance, positive_int, real_number, same_shape
from ._validate import layers as _V
from .logistic import mul_sigmoid, sigmoid, silu

_SQRT2 = np.sqrt(2.0)
_SQRT2PI = np.sqrt(2.0 * np.pi)
_TANH_C = np.sqrt(2.0 / np.pi)
_TANH_A = 0.044715

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "sigmoid")
GLU_VARIANTS = {"glu": "sigmoid", "reglu": "relu", "geglu": "gelu", "geglu_tanh": "gelu_tanh", "swiglu": "silu"}


def act(name: str, u) -> np.ndarray:
    """The activation ``name`` (one of ``ACTIVATIONS``) applied elementwise."""
    choice(name, "name", ACTIVATIONS)
    u = as_float_array(u, "u")
    with np.errstate(over="ignore"):  # u^3 = inf in gelu_tanh: tanh(inf) = 1 is the exact limit
        return _act(name, u)


def _act(name, u):
    if name == "relu":
        return np.maximum(u, 0.0)
    if name == "gelu":
        return u * ndtr(u)  # Phi(u) directly: (1 + erf(u / sqrt 2)) / 2 cancels at u << 0
    if name == "gelu_tanh":
        return mul_sigmoid(u, 2.0 * _TANH_C * (u + _TANH_A * u**3))  # (1 + tanh y) / 2 = sigmoid(2y), exact in the tail
    if name == "silu":
        return silu(u)
    return sigmoid(u)


def act_grad(name: str, u) -> np.ndarray:
    """d act(u) / du."""
    choice(name, "name", ACTIVATIONS)
    u = as_float_array(u, "u")
    with np.errstate(over="ignore", under="ignore"):
        return _act_grad(name, u)


def _act_grad(name, u):
    if name == "relu":
        return (u > 0).astype(np.float64)
    if name == "gelu":
        return ndtr(u) + u * _gauss(u) / _SQRT2PI
    if name == "gelu_tanh":
        # with s = sigmoid(2y): (1 + tanh y) / 2 = s and (1 - tanh^2 y) / 2 = 2 s (1 - s), 1 - s = sigmoid(-2y)
        y2 = 2.0 * _TANH_C * (u + _TANH_A * u**3)
        # s + 2 u s (1 - s) c (1 + 3 a u^2) = s (1 + 2 u (1 - s) c (...)): s applied last, by mul_sigmoid, so
        # a subnormal s (y2 < -708) does not cost the product its bits
        uc = np.clip(u, -50.0, 50.0)  # s (1 - s) is exactly 0 beyond |u| = 50; clipping avoids 0 * inf there
        return mul_sigmoid(1.0 + 2.0 * uc * sigmoid(-y2) * _TANH_C * (1.0 + 3 * _TANH_A * uc * uc), y2)
    s_neg = sigmoid(-u)  # 1 - s without cancellation at u >> 0
    if name == "silu":
        return mul_sigmoid(1.0 + u * s_neg, u)  # s (1 + u (1 - s)), s applied last (as above)
    return sigmoid(u) * s_neg


def _gauss(u):
    """exp(-u^2 / 2) to a few ulp at any u: u = hi + lo with hi of 24 bits, so hi^2 / 2 is exact
    (a rounded u^2 would carry a relative error u^2 eps / 2 into the exponential, 1e-13 at u = 37)."""
    uc = np.clip(u, -40.0, 40.0)  # exp(-800) = 0 in float64 already
    hi = uc.astype(np.float32).astype(np.float64)
    lo = uc - hi
    return np.exp(-0.5 * hi * hi) * np.exp(-(hi * lo + 0.5 * lo * lo))


def dropout(h, keep_mask, p: float) -> np.ndarray:
    """Inverted dropout by an explicit keep-mask: h * M / (1 - p); p = 0 is identity
    (docs/notes.md#attention-dropout)."""
    h = as_float_array(h, "h")
    m, p = _V.dropout_args(h.shape, keep_mask, p, "keep_mask", "p")
    return _dropout(h, m, p, "p")


def _dropout(h, m, p, p_name):
    """h * M / (1 - p) for a validated keep mask M (None: h); ``p_name`` the caller's argument."""
    if m is None:
        return h
    with np.errstate(over="ignore"):
        return finite_result(np.where(m, h / (1.0 - p), 0.0), "h / (1 - p)", f"h, {p_name}")


def glu_split(h2, activation: str = "silu", *, gate_half: str = "first") -> np.ndarray:
    """act(gate) * value for a fused projection h2 (..., 2 n) (module docstring)."""
    h2 = as_float_array(h2, "h2")
    choice(gate_half, "gate_half", ("first", "second"))
    h2 = _V.fused_gate_up(h2)
    a, b = np.split(h2, 2, axis=-1)
    gate, value = (a, b) if gate_half == "first" else (b, a)
    choice(activation, "activation", ACTIVATIONS)
    with np.errstate(over="ignore", invalid="ignore"):
        return finite_result(act(activation, gate) * value, "act(gate) * value", "h2")


def llama_hidden_dim(dim: int, *, multiple_of: int = 256, ffn_dim_multiplier: Optional[float] = None,
                     hidden_dim: Optional[int] = None) -> int:
    """Meta Llama's SwiGLU width (module docstring); ``hidden_dim`` defaults to 4 dim."""
    dim = positive_int(dim, "dim")
    m = positive_int(multiple_of, "multiple_of")
    h = 4 * dim if hidden_dim is None else positive_int(hidden_dim, "hidden_dim")
    h = int(2 * h / 3)
    if ffn_dim_multiplier is not None:
        mult = real_number(ffn_dim_multiplier, "ffn_dim_multiplier", minimum=0.0, min_open=True)
        h = int(finite_result(mult * h, "ffn_dim_multiplier * hidden_dim", "ffn_dim_multiplier"))
    return m * ((h + m - 1) // m)


# ----------------------------------------------------------------------------
# parameters and the shared forward


@dataclasses.dataclass(frozen=True)
class MLPParams:
    """W1 (d, d_ff), W2 (d_ff, d), optional biases b1 (d_ff,), b2 (d,)."""

    W1: np.ndarray
    W2: np.ndarray
    b1: Optional[np.ndarray] = None
    b2: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class GLUParams:
    """W_gate, W_up (d, d_ff), W_down (d_ff, d), optional biases."""

    W_gate: np.ndarray
    W_up: np.ndarray
    W_down: np.ndarray
    b_gate: Optional[np.ndarray] = None
    b_up: Optional[np.ndarray] = None
    b_down: Optional[np.ndarray] = None


def num_params(params) -> int:
    """Number of weights and biases in an :class:`MLPParams` / :class:`GLUParams`."""
    instance(params, "params", (MLPParams, GLUParams))
    return sum(int(np.size(getattr(params, f.name))) for f in dataclasses.fields(params)
               if getattr(params, f.name) is not None)


class _Forward:
    """Validated inputs and the intermediates u, v, a = act(u), h of one FFN call."""

    def __init__(self, x, params, activation, keep_mask, p, mask_name="keep_mask", p_name="dropout_p", names=None):
        x, self.glu, self.W1, self.Wv, self.W2, self.b1, self.bv, self.b2 = _V.ffn_arrays(
            x, params, glu_cls=GLUParams, mlp_cls=MLPParams)
        # the caller's arguments an overflowing intermediate comes from (an expert passes its own fields)
        self.xnames = names or ("x, params (W_gate, W_up, W_down, biases)" if self.glu else "x, params (W1, W2, b1, b2)")
        self.shape = x.shape
        rows, d, n_ff = math.prod(x.shape[:-1]), x.shape[-1], self.W1.shape[1]  # named: -1 is ambiguous for 0 rows
        self.x = x.reshape(rows, d)
        self.activation = choice(activation, "activation", ACTIVATIONS)
        self.p_name = p_name
        self.mask, self.p = _V.dropout_args(self.shape[:-1] + (n_ff,), keep_mask, p, mask_name, p_name)
        self.mask = None if self.mask is None else self.mask.reshape(rows, n_ff)
        with np.errstate(over="ignore", invalid="ignore"):
            self.u = self.x @ self.W1 + (0.0 if self.b1 is None else self.b1)
            self.v = None if not self.glu else self.x @ self.Wv + (0.0 if self.bv is None else self.bv)
            self.a = _act(self.activation, finite_result(self.u, "x W1 + b1", self.xnames))
            gated = self.a if self.v is None else self.a * finite_result(self.v, "x W_up + b_up", self.xnames)
        self.h = _dropout(finite_result(gated, "the hidden activation", self.xnames), self.mask, self.p, self.p_name)

    def output(self) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            y = self.h @ self.W2 + (0.0 if self.b2 is None else self.b2)
        return finite_result(y, "the output", self.xnames).reshape(self.shape)


def _activation_of(params, activation, variant):
    return _V.ffn_activation(isinstance(params, GLUParams), activation, variant, GLU_VARIANTS, ACTIVATIONS)


def ffn(x, params, *, activation=None, variant=None, keep_mask=None, dropout_p=0.0) -> np.ndarray:
    """MLP (``MLPParams``) or GLU (``GLUParams``) feed-forward of x (..., d) -> (..., d).

    ``variant`` ("glu", "reglu", "geglu", "geglu_tanh", "swiglu") names a GLU's gate
    activation; ``keep_mask`` (..., d_ff) and ``dropout_p`` apply activation dropout to h.
    """
    return _Forward(x, params, _activation_of(params, activation, variant), keep_mask, dropout_p).output()


def ffn_backward(x, dy, params, *, activation=None, variant=None, keep_mask=None, dropout_p=0.0):
    """Gradients of :func:`ffn`: (dx, grads) with grads a params object of the same type
    holding dL/dW and dL/db (None where the bias is None)."""
    f = _Forward(x, params, _activation_of(params, activation, variant), keep_mask, dropout_p)
    dy = as_float_array(dy, "dy")
    same_shape(dy, f.shape, "dy")
    dy = dy.reshape(f.x.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        dx, grads = _backward(f, dy)
    grads = type(grads)(*(None if g is None else finite_result(g, "the gradient", "x, dy, params")
                          for g in (getattr(grads, n.name) for n in dataclasses.fields(grads))))
    return finite_result(dx, "the gradient", "x, dy, params").reshape(f.shape), grads


def _backward(f, dy):
    dW2 = f.h.T @ dy
    db2 = None if f.b2 is None else dy.sum(axis=0)
    dh = dy @ f.W2.T
    dh = dh if f.mask is None else np.where(f.mask, dh / (1.0 - f.p), 0.0)  # the same mask and 1/q scale backward
    if f.glu:
        dv = dh * f.a
        du = dh * f.v * act_grad(f.activation, f.u)
    else:
        du = dh * act_grad(f.activation, f.u)
    dW1 = f.x.T @ du
    db1 = None if f.b1 is None else du.sum(axis=0)
    dx = du @ f.W1.T
    if f.glu:
        dx = dx + dv @ f.Wv.T
        grads = GLUParams(dW1, f.x.T @ dv, dW2, db1, None if f.bv is None else dv.sum(axis=0), db2)
    else:
        grads = MLPParams(dW1, dW2, db1, db2)
    return dx, grads


def ffn_macs_per_token(params) -> int:
    """Multiply-accumulates per token of the weight matmuls (2 d d_ff for an MLP, 3 for a GLU)."""
    instance(params, "params", (MLPParams, GLUParams))
    if isinstance(params, GLUParams):
        return int(np.size(params.W_gate) + np.size(params.W_up) + np.size(params.W_down))
    return int(np.size(params.W1) + np.size(params.W2))


__all__ = [
    "ACTIVATIONS", "GLU_VARIANTS", "GLUParams", "MLPParams", "act", "act_grad", "dropout", "ffn",
    "ffn_backward", "ffn_macs_per_token", "glu_split", "llama_hidden_dim", "num_params",
]
