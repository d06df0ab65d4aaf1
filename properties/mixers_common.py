"""Shared by the linear-time mixer property modules: elementwise bounds and case reprs.

Every mixer bound has the same shape. Each output entry is a sum of products
o = sum_i prod_m x_im (over tokens, channels, state entries), one per path through the
recurrence. Evaluate the same computation on absolute values (decays are positive) to get
M = sum_i prod_m |x_im|; then any float64 evaluation order of the sum is within
gamma_n M, gamma_n = n u / (1 - n u) (Higham, *Accuracy and Stability*, eq. 3.5, for sums of
n terms in any order, each product carrying its own (1 + delta)^m), where n counts the
additions along the longest path plus the roundings inside one product (decays computed as a
product of L per-step exps in one form and as one exp of a cumulative sum in another: L roundings
plus the cumulative sum's error L u max|G| turned into a relative one by exp). Two
implementations each within the bound of the exact value differ by at most twice it; the
suite takes ``SAFETY`` = 2 more (4 in all, the same as ``properties.tolerance.FLOAT64_SAFETY``).
The measured ratios error / bound are recorded in ``MEASURED`` (max per property) and printed
by ``tests/test_property_strategies.py``.

Below float64 (an adapter declaring ``precision``) every mixer output is held to the rule of
``properties.precision``, entrywise (``precision_elementwise``): the naive recurrence in that
precision (``properties.mixers_naive``) from the same rounded inputs errs by rho M_i at entry i,
rho = max_j |naive_j - spec_j| / M_j its error relative to the path magnitude M above (the
quantity gamma_n plays in float64); the bound is FACTOR rho M_i + output_floor(p, M_i, n), the
floor being the output's own rounding u_p M_i and the float32 accumulation n u32 M_i that no
evaluation order escapes. Entrywise, so a decayed entry e^-40 times smaller than its neighbours
keeps a bound of its own size. Ratios are recorded under "<property>[<precision>]".
"""

from __future__ import annotations

import numpy as np

from .precision import FACTOR, output_floor

U64 = 2.0**-53
SAFETY = 4.0

#: property name -> largest error / bound seen on a bundled (correct) implementation.
MEASURED: dict = {}


def rounding_bound(magnitude, n_terms: float) -> np.ndarray:
    """SAFETY * gamma_n * M for entries of magnitude M (see the module doc)."""
    n = float(n_terms)
    return SAFETY * (n * U64 / (1.0 - n * U64)) * np.asarray(magnitude, dtype=np.float64)


def precision_elementwise(precision: str, float64_bound, magnitude, n_terms: float, naive, spec) -> np.ndarray:
    """The entrywise bound for ``precision`` (module doc): ``float64_bound`` for float64, else
    max(float64_bound, FACTOR rho M + output_floor(p, M, n)); ``naive`` (an array or a callable
    called only below float64) is the quantity from ``properties.mixers_naive``."""
    if precision == "float64":
        return float64_bound
    base = np.asarray(naive() if callable(naive) else naive, dtype=np.float64)
    spec = np.asarray(spec, dtype=np.float64)
    M = np.broadcast_to(np.asarray(magnitude, dtype=np.float64), spec.shape)
    ok = np.isfinite(base) & np.isfinite(spec) & (M > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = float(np.max(np.abs(base - spec)[ok] / M[ok], initial=0.0))
    return np.maximum(float64_bound, FACTOR * rho * M + output_floor(precision, M, int(np.ceil(n_terms))))


def compare_elementwise(prop: str, impl_name: str, got, ref, bound, context: str) -> None:
    """Assert |got - ref| <= bound entrywise (bound an array broadcastable to ref) and record the ratio."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{prop}: {impl_name} returned shape {got.shape}, expected {ref.shape}; {context}")
    if got.size == 0:
        return
    if not np.isfinite(got).all():
        bad = tuple(np.argwhere(~np.isfinite(got))[0].tolist())
        raise AssertionError(f"{prop}: {impl_name} gave non-finite {got[bad]} at {list(bad)}; {context}")
    err = np.abs(got - ref)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    ratio = err / np.maximum(bound, np.finfo(float).tiny)
    worst = np.unravel_index(np.argmax(ratio), ratio.shape)
    if ratio[worst] > 1.0:
        raise AssertionError(
            f"{prop}: {impl_name} differs by {err[worst]:.3e} at {list(map(int, worst))}, bound {bound[worst]:.3e} "
            f"(got {float(got[worst])!r}, expected {float(ref[worst])!r}); {context}"
        )
    if not impl_name.startswith("wrong["):
        MEASURED[prop] = max(MEASURED.get(prop, 0.0), float(ratio[worst]))


def shape_repr(**arrays) -> str:
    return ", ".join(f"{k}{tuple(v.shape)}" if hasattr(v, "shape") else f"{k}={v}" for k, v in arrays.items())


__all__ = ["MEASURED", "SAFETY", "U64", "compare_elementwise", "precision_elementwise", "rounding_bound", "shape_repr"]
