"""Adapters of the ffn kind: the adapter class ``FFNAdapter``, the refimpl adapter ``REFIMPL``,
``in_precision`` (an adapter declaring a lower precision, its results stored in it), and the wrong
implementations ``WRONG`` that ``properties.ffn``'s properties must reject (GELU variants swapped,
the activation on the GLU's value half, dropout without rescaling, act instead of act' in the
backward, the dropout mask forgotten, and the same mistakes stored in float32 or bfloat16).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from refimpl import ffn as Fn

from .precision import round_inputs


@dataclasses.dataclass(frozen=True)
class FFNAdapter:
    name: str
    act: Callable
    ffn: Callable
    ffn_backward: Optional[Callable] = None
    capabilities: frozenset = frozenset({"backward", "glu"})
    kind: str = "ffn"
    precision: str = "float64"
    gated: Optional[Callable] = None
    gated_backward: Optional[Callable] = None
    declines: dict = dataclasses.field(default_factory=dict)


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


def _ref_gated(activation, a, b):
    return Fn.glu_split(np.concatenate([a, b], axis=-1), activation)


def _ref_gated_backward(activation, a, b, dc):
    return dc * b * Fn.act_grad(activation, a), dc * Fn.act(activation, a)


def _gated_on_value(activation, a, b):
    """The activation applied to the value half: act(b) * a (gate and up swapped, as in a
    fused projection split the wrong way round)."""
    return Fn.act(activation, b) * a


def _gated_backward_act_not_derivative(activation, a, b, dc):
    return dc * b * Fn.act(activation, a), dc * Fn.act(activation, a)


REFIMPL = FFNAdapter("refimpl.ffn", Fn.act, _ref_ffn, _ref_ffn_backward,
                     capabilities=frozenset({"backward", "glu", "gated_backward"}), gated=_ref_gated,
                     gated_backward=_ref_gated_backward)


def in_precision(adapter, precision: str, name: str | None = None):
    """``adapter`` declaring ``precision``, its results stored in that precision."""
    def act(n, u):
        return round_inputs(precision, adapter.act(n, u))

    def ffn(*a):
        return round_inputs(precision, adapter.ffn(*a))

    def ffn_backward(*a):
        dx, g = adapter.ffn_backward(*a)
        return round_inputs(precision, dx), type(g)(*(None if v is None else round_inputs(precision, v)
                                                     for v in (getattr(g, f.name) for f in dataclasses.fields(g))))

    def gated(*a):
        return round_inputs(precision, adapter.gated(*a))

    def gated_backward(*a):
        return tuple(round_inputs(precision, g) for g in adapter.gated_backward(*a))

    return dataclasses.replace(adapter, name=name or f"{adapter.name}[{precision}]", act=act, ffn=ffn,
                               ffn_backward=None if adapter.ffn_backward is None else ffn_backward, precision=precision,
                               gated=None if adapter.gated is None else gated,
                               gated_backward=None if adapter.gated_backward is None else gated_backward)

WRONG = {
    "gelu_variant_swap": FFNAdapter("wrong[gelu_variant_swap]", _act_swapped_gelu, _ffn_gelu_swapped, _ref_ffn_backward),
    "glu_activation_on_value": FFNAdapter("wrong[glu_activation_on_value]", Fn.act, _ffn_gate_on_value, _ref_ffn_backward),
    "dropout_without_rescale": FFNAdapter("wrong[dropout_without_rescale]", Fn.act, _ffn_dropout_no_rescale,
                                          _ref_ffn_backward),
    "backward_uses_act_not_derivative": FFNAdapter("wrong[backward_uses_act_not_derivative]", Fn.act, _ref_ffn,
                                                   _backward_act_instead_of_derivative),
    "backward_forgets_dropout_mask": FFNAdapter("wrong[backward_forgets_dropout_mask]", Fn.act, _ref_ffn,
                                                _backward_mask_forgotten),
    "gated_activation_on_value": FFNAdapter("wrong[gated_activation_on_value]", None, None,
                                            capabilities=frozenset({"gated_only"}), gated=_gated_on_value),
    "gated_backward_act_not_derivative": FFNAdapter(
        "wrong[gated_backward_act_not_derivative]", None, None, capabilities=frozenset({"gated_only", "gated_backward"}),
        gated=_ref_gated, gated_backward=_gated_backward_act_not_derivative),
}
# the same mistakes in float32 / bfloat16 kernels: the low-precision bound still rejects them
# (the GELU swap only in float32: bfloat16 cannot resolve it, see properties.ffn's docstring)
WRONG.update({f"{b}_{p}": in_precision(WRONG[b], p, f"wrong[{b}][{p}]") for b, p in (
    ("gelu_variant_swap", "float32"), ("glu_activation_on_value", "bfloat16"), ("dropout_without_rescale", "float32"),
    ("backward_uses_act_not_derivative", "bfloat16"), ("backward_forgets_dropout_mask", "float32"),
    ("gated_activation_on_value", "float32"), ("gated_backward_act_not_derivative", "float32"))})
