"""The float64 exponential of the attention hot paths (softmax, flash forward and backward): one choice, one place.

    exp(x) = NumPy's ``np.exp``, error at most EXP_MAX_ULP = 1 ulp of the result (relative 2u, u = 2^-53)

Why this one (``python benchmarks/exp_candidates.py [--no-avx512]``, issue 23): NumPy dispatches
float64 exp to an AVX-512F kernel where the CPU has one (0.8 ns per element on one AMD EPYC core,
faster than torch's 1.7 ns; worst error measured against mpmath 0.654 ulp) and to the C library's
exp elsewhere (glibc: 8 ns, 0.503 ulp, where torch's vectorised exp takes 1.6 ns). Nothing else in
NumPy or SciPy is faster with a stated error: exp2(x log2 e) is 0.9 / 6.3 ns but carries the rounding
of x log2 e, |x| u relative (424 ulp measured); power(e, x) is slower and as wrong; expm1(x) + 1
cancels. A PyPI library (numexpr) would add threads, which refimpl's tiled kernels already use
(``refimpl._parallel``), not a faster kernel, and a dependency; so the spec keeps NumPy's.

EXP_MAX_ULP is the bound the float64 error analyses count for one exp (``properties.tolerance``:
the rescaling factors of the online softmax, the weights exp(s - lse)); tests/test_exp.py measures
the exp in use against mpmath and checks it stays within it.
"""

from __future__ import annotations

import numpy as np

EXP_MAX_ULP = 1.0
"""Stated error of :func:`exp` in ulps of the result (measured 0.654 with AVX-512, 0.503 without)."""


def exp(x, out=None):
    """e^x elementwise (``np.exp``), into ``out`` if given."""
    return np.exp(x, out=out)
