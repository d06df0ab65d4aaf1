"""float64 exp candidates from NumPy / SciPy (and torch for reference): time per element and error against mpmath.

    python benchmarks/exp_candidates.py            # this machine, NumPy's SIMD dispatch as detected
    python benchmarks/exp_candidates.py --no-avx512  # the same with NumPy's AVX-512 kernels disabled
                                                   # (NPY_DISABLE_CPU_FEATURES): the machines without them

Time: one thread, 2^20 arguments in [-30, 0] (the range of exp(s - max) in softmax), written into
a preallocated output, best of 9. Error: the largest |computed - exact| / ulp(exact) over 20,000
arguments spread over [-745, 709.7] plus 20,000 in [-30, 0], exact values from mpmath at 40 digits.
The result feeds ``refimpl/_exp.py`` (``EXP_MAX_ULP``). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR X86_V4"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-avx512", action="store_true")
    a = ap.parse_args()
    if a.no_avx512 and "NPY_DISABLE_CPU_FEATURES" not in os.environ:
        env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=AVX512)
        sys.exit(subprocess.call([sys.executable, __file__], env=env))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import mpmath
    import numpy as np

    rng = np.random.default_rng(0)
    x = -30 * rng.random(2**20)
    out = np.empty_like(x)
    log2e = 1 / np.log(2)
    cands = {
        "np.exp": lambda x, out: np.exp(x, out=out),
        "np.exp2(x log2 e)": lambda x, out: np.exp2(np.multiply(x, log2e, out=out), out=out),
        "np.expm1(x) + 1": lambda x, out: np.add(np.expm1(x, out=out), 1.0, out=out),
        "np.power(e, x)": lambda x, out: np.power(np.e, x, out=out),
    }
    try:
        import torch

        torch.set_num_threads(1)
        cands["torch.exp (reference, not a candidate)"] = lambda x, out: torch.exp(torch.from_numpy(x),
                                                                                  out=torch.from_numpy(out))
    except ImportError:
        pass
    mpmath.mp.dps = 40
    xs = np.concatenate([rng.uniform(-745.0, 709.7, 20000), -30 * rng.random(20000)])
    exact = [mpmath.exp(mpmath.mpf(float(t))) for t in xs]
    ulp = np.array([float(np.spacing(float(e))) if float(e) > 0 else 2.0**-1074 for e in exact])
    simd = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found", [])
    print(f"numpy {np.__version__}; SIMD dispatch {'/'.join(simd)}; "
          f"NPY_DISABLE_CPU_FEATURES={os.environ.get('NPY_DISABLE_CPU_FEATURES', '')!r}; load {os.getloadavg()[0]:.2f}")
    print(f"{'candidate':<40} {'ns/element':>10} {'max error (ulp)':>16}")
    for name, f in cands.items():
        f(x, out)
        t = min(_timed(lambda: f(x, out)) for _ in range(9)) / x.size * 1e9
        got = np.empty_like(xs)
        f(xs, got)
        err = max(float(abs(mpmath.mpf(float(g)) - e) / u) for g, e, u in zip(got, exact, ulp))
        print(f"{name:<40} {t:10.2f} {err:16.3f}")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
