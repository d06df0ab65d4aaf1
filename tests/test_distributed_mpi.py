"""The distributed spec on real MPI ranks: ``mpiexec -n 2`` and ``-n 4`` running
``python -m properties.mpi_demo`` (the properties' checks through the MPI driver), and the
wrong rank programs rejected on real ranks.

MPI comes from the project's ``mpi`` extra (mpi4py + the PyPI ``mpich`` wheel, whose
``mpiexec`` sits next to the interpreter). Where it is absent these tests skip with the
reason, unless ``CI`` is set: in CI a missing MPI is a failure. MPICH runs 4 ranks on
2 cores and as root without flags; an Open MPI ``mpiexec`` gets ``--oversubscribe`` and
the allow-run-as-root variables.
"""

import functools
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from properties import distributed as DP

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


@functools.lru_cache(maxsize=None)
def _mpiexec():
    """(argv prefix, None) or (None, reason). The MPI library is loaded in a child process, not here."""
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return None, f'mpi4py or its MPI library does not load (pip install -e ".[mpi]"): {probe.stderr[-300:]}'
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    exe = str(here) if here.exists() else shutil.which("mpiexec")
    if exe is None:
        return None, "no mpiexec next to the interpreter or on PATH"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    extra = ["--oversubscribe"] if ("Open MPI" in version or "OpenRTE" in version) else []
    return [exe, *extra], None


def _launch(n, *args):
    prefix, reason = _mpiexec()
    if prefix is None:
        if os.environ.get("CI"):
            pytest.fail(f"MPI is required in CI: {reason}")
        pytest.skip(f"MPI not available: {reason}")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [*prefix, "-n", str(n), sys.executable, "-m", "properties.mpi_demo", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} timed out after {TIMEOUT_S} s (a deadlock?):\n{e.stdout}\n{e.stderr}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_spec_agrees_on_real_ranks(n):
    proc = _launch(n)
    out = proc.stdout
    assert proc.returncode == 0, f"mpiexec -n {n} failed (rc {proc.returncode}):\n{out}\n{proc.stderr}"
    assert f"distributed spec on {n} MPI ranks" in out
    for prop in DP.PROPERTIES:
        assert f"ok   {prop.name}" in out, f"{prop.name} not reported ok:\n{out}"
    assert "MPI == simulated, bit for bit: True" in out
    assert "all agree with the single-process spec" in out


@pytest.mark.slow
def test_wrong_rank_programs_rejected_on_real_ranks():
    """Every wrong program (a rank forwarding its own shard, a local causal offset, a partial merged
    twice, a token combined from the wrong rank, ...) fails its properties on 4 real ranks."""
    names = sorted(DP.WRONG_PROGRAMS)
    proc = _launch(4, "--wrong", ",".join(names))
    assert proc.returncode == 0, f"some wrong program passed on real ranks:\n{proc.stdout}\n{proc.stderr}"
    for name in names:
        assert f"rejected: {name} (" in proc.stdout, proc.stdout
