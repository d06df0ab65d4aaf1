"""Route (c): the Numba kernels executed under the Numba CUDA simulator.

The simulator must be enabled before numba is imported, and it replaces
``numba.cuda`` for the whole process, so the kernels run in a child process
(``tests/gpu/simulator_main.py``, started once per session by the fixture
below) with ``NUMBA_ENABLE_CUDASIM=1`` in its environment only. The child
records every case and mutant result as JSON; each becomes a test here, so the
report shows one line per simulated problem and per rejected mutant, and the
child's own summary line is echoed into the captured output.

The problems are those of tests/gpu/cases.py (also run on OpenCL and GPUs; the simulator
runs C.SIMULATOR_THOROUGH_ONLY under the thorough profile only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu import mutants

from . import cases as C
from .support import import_or_missing, missing

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 900


@pytest.fixture(scope="session")
def simulator_results(tmp_path_factory):
    import_or_missing("numba", "pip install 'transformer-refimpl[gpu]'")
    try:
        import numba_cuda  # noqa: F401  (the simulator ships with numba-cuda)
    except ImportError as e:
        missing(f"numba-cuda not installed ({e})")
    out = tmp_path_factory.mktemp("cudasim") / "results.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gpu.simulator_main", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"simulator child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    results = json.loads(out.read_text())
    results["summary"] = proc.stdout.strip().splitlines()[-1]
    return results


def test_simulator_child_ran_everything(simulator_results):
    """The child ran under the simulator, and ran every case and mutant (none silently dropped)."""
    r = simulator_results
    print(r["summary"])
    assert r["environment"]["simulator"] is True
    expected = set(_case_ids())
    assert set(r["cases"]) == expected
    assert set(r["mutants"]) == set(mutants.MUTATIONS)


def _case_ids():
    return [f"{kernel}:{c.name}" for kernel in C.KERNELS for c in C.simulator_cases_for(kernel)]


@pytest.mark.parametrize("key", _case_ids())
def test_simulated_kernel_matches_refimpl(simulator_results, key):
    res = simulator_results["cases"][key]
    assert res["ok"], f"{key} under the CUDA simulator: {res.get('error')}\n{res.get('traceback', '')}"
    print(f"{key}: {res['wall']:.2f} s " + ", ".join(f"{k}={v:.3g}" for k, v in res.items()
                                                     if k.startswith(("err_", "bound_"))))


@pytest.mark.parametrize("name", sorted(mutants.MUTATIONS))
def test_simulated_mutant_is_rejected(simulator_results, name):
    res = simulator_results["mutants"][name]
    assert "error" not in res, f"mutant {name} crashed the child: {res['error']}\n{res.get('traceback', '')}"
    assert res["rejected_by"] is not None, (
        f"mutant {name} ({mutants.MUTATIONS[name].doc}) passed every case under the simulator")
    print(f"mutant {name}: rejected by {res['rejected_by']}: {res['message']}")
