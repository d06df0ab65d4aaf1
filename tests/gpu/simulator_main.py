"""Route (c), the child process: the Numba kernels under the CUDA simulator.

Run as ``python -m tests.gpu.simulator_main --json PATH`` from the repository
root. It sets ``NUMBA_ENABLE_CUDASIM=1`` before anything imports numba (the
simulator is chosen once, at numba's import), runs every problem of
tests/gpu/cases.py through ``gpu.flash_attention`` / ``gpu.route`` with
backend "numba", runs every mutant until a case rejects it, and writes the
results as JSON. ``tests/gpu/test_simulator.py`` starts it and turns each
result into a test. The child never decides pass/fail for the parent: it
records what happened, including exceptions, and the parent asserts.

Why a child process: the simulator replaces ``numba.cuda`` for the whole
process, so it cannot share a process with the PTX compile checks (which need
the real CUDA target), and an environment variable set inside the main pytest
process would come too late if anything had imported numba already.
"""

from __future__ import annotations

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported, by anything

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402


def run(only: list[str] | None = None) -> dict:
    import numba
    from numba import cuda

    from gpu import mutants
    from gpu.backends import get_backend

    from . import cases as C

    if not numba.config.ENABLE_CUDASIM or not cuda.is_available():
        raise SystemExit("the Numba CUDA simulator is not active")
    t_start = time.perf_counter()
    be = get_backend("numba")
    results: dict = {"cases": {}, "mutants": {}}
    for kernel in C.KERNELS:
        for case in C.simulator_cases_for(kernel):
            key = f"{kernel}:{case.name}"
            if only and key not in only:
                continue
            t0 = time.perf_counter()
            try:
                figures = C.check(be, kernel, case)
                results["cases"][key] = {"ok": True, **figures}
            except Exception as e:  # noqa: BLE001 - reported to the parent
                results["cases"][key] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                         "traceback": traceback.format_exc()}
            results["cases"][key]["wall"] = time.perf_counter() - t0
    for name, m in sorted(mutants.MUTATIONS.items()):
        key = f"mutant:{name}"
        if only and key not in only:
            continue
        t0 = time.perf_counter()
        try:
            case, message = C.find_rejecting_case(mutants.backend(name, "numba"), m.kernel, name)
            results["mutants"][name] = {"rejected_by": case, "message": message}
        except Exception as e:  # noqa: BLE001
            results["mutants"][name] = {"rejected_by": None, "message": None,
                                        "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        results["mutants"][name]["wall"] = time.perf_counter() - t0
    results["total_seconds"] = time.perf_counter() - t_start
    results["environment"] = {"numba": numba.__version__, "simulator": bool(numba.config.ENABLE_CUDASIM),
                              "python": platform.python_version()}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--only", nargs="*", help="case keys (KERNEL:NAME for a kernel of tests.gpu.cases.KERNELS, mutant:NAME)")
    args = ap.parse_args(argv)
    results = run(args.only)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    n_ok = sum(r["ok"] for r in results["cases"].values())
    n_rej = sum(r["rejected_by"] is not None for r in results["mutants"].values())
    print(f"simulator: {n_ok}/{len(results['cases'])} cases passed, {n_rej}/{len(results['mutants'])} mutants "
          f"rejected in {results['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
