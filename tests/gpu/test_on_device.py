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
    case, _ = C.find_rejecting_case(mutants.backend(name, backend), m.kernel)
    assert case is not None, f"mutant {name} passed every case on {backend}"


def test_bench_on_device():
    proc = subprocess.run([sys.executable, "-m", "gpu.bench"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
