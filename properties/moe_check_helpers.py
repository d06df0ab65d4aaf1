"""Helpers shared by the MoE checks (``properties.moe_route_checks``, ``moe_loss_checks``,
``moe_grad_checks``, ``moe_forward_checks``): the float64 unit roundoff ``U64``, the precision
bound of an output in the adapter's declared precision (``_bound``: the float64 bound written next
to each check, or below float64 the rule of ``properties.precision`` on a naive computation from
``properties.moe_naive``), inputs rounded to that precision, the failure message, and a direct
float64 softmax independent of refimpl.softmax. The precision rule itself is described in
``properties.moe``'s docstring.
"""

from __future__ import annotations

import numpy as np

from .moe_bounds import _prec
from .precision import NaiveOps, output_floor, precision_bound, round_inputs

U64 = 2.0**-53


def _bound(impl, float64_bound, naive, spec, n: int, magnitude=None):
    """``properties.precision.precision_bound`` with the floor ``output_floor(p, |spec|, n)``;
    ``naive(o)`` computes the quantity with ``NaiveOps(p)`` (called only below float64)."""
    p = _prec(impl)
    if p == "float64":
        return float64_bound
    mag = float(np.max(np.abs(np.asarray(spec, dtype=float)), initial=0.0)) if magnitude is None else magnitude
    return precision_bound(p, float64_bound, lambda: naive(NaiveOps(p)), spec, output_floor(p, max(mag, 1e-300), n))


def _lowp(impl) -> bool:
    return _prec(impl) != "float64"


def _inputs(impl, x):
    """x rounded to the adapter's precision (inputs the suite builds itself)."""
    return round_inputs(_prec(impl), x)


def _fail(impl, msg, case):
    raise AssertionError(f"{impl.name}: {msg}\n  case: {case!r}")


def _softmax_rows(z):
    """A direct float64 softmax, independent of refimpl.softmax."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
