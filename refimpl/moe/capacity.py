"""Expert capacity: how many token slots each expert's buffer holds.

Formula (the spec's general rule, every part a named keyword):

    C = round_mode(factor * (k if k_in_capacity else 1) * tokens / experts)
    C = max(C, min_capacity)
    C = multiple_of * ceil(C / multiple_of)
    C = min(C, max_capacity)            (only if max_capacity is given)

with round_mode one of ``"floor"`` (Megablocks, Switch/Mesh TF), ``"ceil"``
(DeepSpeed) or ``"round"`` (round half to even, as Python's ``round``).

The two readings in the notes are both instances (docs/errata.md#e4, docs/notes.md#capacity): one
writes ``C = tokens / E * cf`` (``k_in_capacity=False``), the other
``C = tokens * k / E * cf`` (``k_in_capacity=True``, the default here).

Arithmetic: the product ``factor * k * tokens / experts`` is evaluated exactly
(``fractions.Fraction`` of the given float ``factor``), so the result does not
depend on the order of floating-point operations. Libraries evaluate it in
floating point, each in its own order; where that matters (a product within
rounding of an integer) the library presets in ``refimpl.moe.presets`` use the
library's own expression instead of this function.
"""

from __future__ import annotations

import dataclasses
import math
from .. import _validate as V
from .._validate import moe as VM
from fractions import Fraction

ROUNDINGS = ("floor", "ceil", "round")


def _check_int(x, name: str, *, minimum: int) -> int:
    return V.count(x, name, minimum=minimum, maximum=None)


def _check_factor(factor) -> Fraction:
    # NumPy scalars (np.float32(1.25)) are exact binary fractions too: Fraction of their float value
    return Fraction(V.real_number(factor, "factor", minimum=0.0))


def _round(x: Fraction, rounding: str) -> int:
    if rounding == "floor":
        return math.floor(x)
    if rounding == "ceil":
        return math.ceil(x)
    if rounding == "round":
        return round(x)  # Fraction.__round__: half to even, like Python's round()
    raise AssertionError(rounding)  # checked by capacity()


def capacity(
    tokens,
    experts,
    *,
    k=1,
    factor=1.0,
    k_in_capacity: bool = True,
    rounding: str = "floor",
    min_capacity=0,
    multiple_of=1,
    max_capacity=None,
) -> int:
    """Slots per expert: round_mode(factor * (k if k_in_capacity else 1) * tokens / experts),
    then at least ``min_capacity``, then rounded up to a multiple of ``multiple_of``,
    then at most ``max_capacity`` (None: no upper bound).

    ``tokens`` is the number of tokens routed together (the group or batch,
    padding included, as every library in docs/conventions.md#moe-presets counts it).

    docs/notes.md#capacity: ``capacity(1024, 16, k=2, factor=1.25) == 160``.
    """
    tokens = _check_int(tokens, "tokens", minimum=0)
    experts = _check_int(experts, "experts", minimum=1)
    k = _check_int(k, "k", minimum=1)
    f = _check_factor(factor)
    VM.python_bool(k_in_capacity, "k_in_capacity")
    min_capacity = _check_int(min_capacity, "min_capacity", minimum=0)
    multiple_of = _check_int(multiple_of, "multiple_of", minimum=1)
    if max_capacity is not None:
        max_capacity = _check_int(max_capacity, "max_capacity", minimum=0)
    V.choice(rounding, "rounding", ROUNDINGS)

    expected = f * (k if k_in_capacity else 1) * tokens / experts
    c = _round(expected, rounding)
    c = max(c, min_capacity)
    c = multiple_of * -(-c // multiple_of)
    if max_capacity is not None:
        c = min(c, max_capacity)
    return c


@dataclasses.dataclass(frozen=True)
class CapacityRule:
    """The keywords of :func:`capacity` frozen into a rule; call it as
    ``rule(tokens, experts, k) -> int``. ``route(..., capacity=rule)`` uses it, and
    ``route(..., capacity_factor=x)`` replaces ``factor``.

    ``cap_at_tokens``: also bound C by the number of tokens (Mesh TF's
    ``min(S, ...)``), applied after ``multiple_of``.
    """

    factor: float = 1.0
    k_in_capacity: bool = True
    rounding: str = "floor"
    min_capacity: int = 0
    multiple_of: int = 1
    cap_at_tokens: bool = False

    def __post_init__(self):
        # validate eagerly so a bad rule fails where it is written
        capacity(
            1, 1, factor=self.factor, k_in_capacity=self.k_in_capacity, rounding=self.rounding,
            min_capacity=self.min_capacity, multiple_of=self.multiple_of,
        )
        VM.python_bool(self.cap_at_tokens, "cap_at_tokens")

    def with_factor(self, factor) -> "CapacityRule":
        """This rule with ``factor`` (checked by ``refimpl._validate.capacity_factor``)."""
        return dataclasses.replace(self, factor=factor)

    def __call__(self, tokens: int, experts: int, k: int) -> int:
        return capacity(
            tokens, experts, k=k, factor=self.factor, k_in_capacity=self.k_in_capacity,
            rounding=self.rounding, min_capacity=self.min_capacity, multiple_of=self.multiple_of,
            max_capacity=tokens if self.cap_at_tokens else None,
        )
