"""On a CUDA GPU: the same problems and mutants on the device (cupy and numba
backends) and the benchmark. Without a GPU these skip, with the reason: the
GPU-free routes (test_compile, test_simulator, test_opencl) verify the same
kernels on every run, and none of them skips in CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpu import mutants
from gpu.bench import gpu_or_reason

from . import cases as C

ROOT = Path(__file__).resolve().parents[2]
_cupy, _reason = gpu_or_reason()
if _cupy is None:  # one skip line for the module, with the reason
    pytest.skip(f"no CUDA GPU, device tests not run: {_reason}", allow_module_level=True)

BACKENDS = ("cupy", "numba")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, case", [(kern, c) for kern in C.KERNELS for c in C.cases_for(kern)],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_kernel_on_device(backend, kernel, case):
    C.check(backend, kernel, case)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(mutants.MUTATIONS))
def test_mutant_rejected_on_device(backend, name):
    m = mutants.MUTATIONS[name]
    case, _ = C.find_rejecting_case(mutants.backend(name, backend), m.kernel, name)
    assert case is not None, f"mutant {name} passed every case on {backend}"


def test_bench_on_device():
    proc = subprocess.run([sys.executable, "-m", "gpu.bench"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)


# ---------------------------------------------------------------------------
# the linear-time mixer kernels (gpu.mixers_numba, gpu.mixers_c): the problems and mutants of
# tests/gpu/mixer_cases.py on the device; the benchmark above runs gpu.mixers_bench too

from gpu import mixers_mutants  # noqa: E402

from . import mixer_cases as MC  # noqa: E402


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, problem", [(k, p) for k in MC.KERNELS for p in MC.problems_for(k)],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_mixer_on_device(backend, kernel, problem):
    MC.check(backend, kernel, problem)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(mixers_mutants.MUTATIONS))
def test_mixer_mutant_rejected_on_device(backend, name):
    m = mixers_mutants.MUTATIONS[name]
    problem, _ = MC.find_rejecting_problem(mixers_mutants.backend(name, backend), m.kernel)
    assert problem is not None, f"mutant {name} passed every problem on {backend}"
