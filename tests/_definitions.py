"""Shared by the tests/test_definition_*.py files: rounding constants and the bound comparison."""

from __future__ import annotations

import numpy as np
from hypothesis import note
from hypothesis.errors import InvalidArgument

U = 2.0**-53  # unit roundoff of float64
FLOOR = 2.0**-1060  # absolute slack per operation for subnormal intermediates

#: worst |fast - definition| / (2 x bound) seen in this process, per family (for the report test)
WORST: dict = {}


def gamma(n):
    """gamma_n = n u / (1 - n u): the relative error bound of a sum or dot product of n terms."""
    return n * U / (1 - n * U)


def _note(text):
    try:
        note(text)
    except InvalidArgument:  # outside a Hypothesis test (the meta-tests)
        pass


def assert_within(family, name, got, want, bound):
    """|got - want| <= 2 x bound entrywise (bound: the two computations' first-order bounds summed; the
    factor 2 absorbs second-order terms); records the worst fraction under ``family``."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.isfinite(got).all(), f"{name}: not finite"
    err = np.abs(got - want)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        frac = float(np.max(np.where(err == 0, 0.0, err / (2 * np.asarray(bound))), initial=0.0))
    _note(f"{name}: worst |fast - definition| / (2 x bound) = {frac:.3g}")
    assert frac <= 1.0, f"{name}: |fast - definition| = {err.max():.3g} exceeds 2 x bound (fraction {frac:.3g})"
    WORST.setdefault(family, []).append(frac)


def report(family):
    if WORST.get(family):
        print(f"\n{family}: worst |difference| / (2 x bound) = {max(WORST[family]):.3g} "
              f"over {len(WORST[family])} comparisons")
