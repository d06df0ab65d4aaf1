"""The mixer kernels under the Numba CUDA simulator, in a child process (as
tests/gpu/simulator_main.py for attention and routing: the simulator must be chosen before numba
is imported and replaces ``numba.cuda`` for the whole process).

``python -m tests.gpu.mixers_simulator_main --json PATH`` runs every problem of
tests/gpu/mixer_cases.py with backend "numba" and every mixer mutant until a problem rejects it,
and records the results (exceptions included) as JSON; tests/gpu/test_mixer_kernels.py asserts.
"""

from __future__ import annotations

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported, by anything

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402


def run() -> dict:
    import numba
    from numba import cuda

    from gpu import mixers_mutants

    from . import mixer_cases as MC

    if not numba.config.ENABLE_CUDASIM or not cuda.is_available():
        raise SystemExit("the Numba CUDA simulator is not active")
    t_start = time.perf_counter()
    results: dict = {"cases": {}, "mutants": {}}
    for kernel in MC.KERNELS:
        for problem in MC.problems_for(kernel):
            key = f"{kernel}:{problem.name}"
            t0 = time.perf_counter()
            try:
                MC.check("numba", kernel, problem)
                results["cases"][key] = {"ok": True}
            except Exception as e:  # noqa: BLE001 - reported to the parent
                results["cases"][key] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                         "traceback": traceback.format_exc()}
            results["cases"][key]["wall"] = time.perf_counter() - t0
    for name, m in sorted(mixers_mutants.MUTATIONS.items()):
        t0 = time.perf_counter()
        try:
            problem, message = MC.find_rejecting_problem(mixers_mutants.backend(name, "numba"), m.kernel)
            results["mutants"][name] = {"rejected_by": problem, "message": message}
        except Exception as e:  # noqa: BLE001
            results["mutants"][name] = {"rejected_by": None, "message": None,
                                        "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        results["mutants"][name]["wall"] = time.perf_counter() - t0
    results["total_seconds"] = time.perf_counter() - t_start
    results["environment"] = {"numba": numba.__version__, "simulator": bool(numba.config.ENABLE_CUDASIM)}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    args = ap.parse_args(argv)
    results = run()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    n_ok = sum(r["ok"] for r in results["cases"].values())
    n_rej = sum(r["rejected_by"] is not None for r in results["mutants"].values())
    print(f"mixer simulator: {n_ok}/{len(results['cases'])} cases passed, {n_rej}/{len(results['mutants'])} mutants "
          f"rejected in {results['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
