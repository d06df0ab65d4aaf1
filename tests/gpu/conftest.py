"""A per-route summary of the GPU verification at the end of the pytest run.

CI's output must show that each verification route ran and passed (not
skipped); this prints, after the usual summary, one line per route with the
number of tests passed / failed / skipped and their total time, e.g.

    ptx (numba.cuda.compile_ptx, cc 8.0 / 9.0)      passed 14  failed 0  skipped 0   9.8 s
"""

from __future__ import annotations

import collections

ROUTES = (
    # (label, test file, test-name prefixes or None for "all others in the file")
    ("ptx: numba.cuda.compile_ptx, cc 8.0 / 9.0", "test_compile.py", ("test_numba_kernel_compiles_to_ptx",)),
    ("nvrtc: CUDA C -> sm_80 / sm_90 cubin", "test_compile.py", ("test_c_source_compiles_with_nvrtc",)),
    ("compile checks: meta-tests and OpenCL build", "test_compile.py", None),
    ("simulator: Numba kernels vs refimpl", "test_simulator.py", ("test_simulated_kernel_matches_refimpl",
                                                                   "test_simulator_child_ran_everything")),
    ("simulator: mutants rejected", "test_simulator.py", ("test_simulated_mutant_is_rejected",)),
    ("opencl: C kernels vs refimpl (PoCL)", "test_opencl.py", ("test_attention_matches_refimpl",
                                                               "test_attention_backward_matches_refimpl",
                                                               "test_split_kv_matches_refimpl",
                                                               "test_paged_matches_refimpl",
                                                               "test_norm_matches_refimpl",
                                                               "test_rope_matches_refimpl",
                                                               "test_moe_matches_refimpl",
                                                               "test_routing_matches_refimpl",
                                                               "test_routing_random_problems")),
    ("opencl: mutants rejected", "test_opencl.py", ("test_mutant_is_rejected",)),
    ("opencl: conformance properties", "test_opencl_properties.py", None),
    ("opencl: MoE routing properties", "test_opencl_moe_properties.py", None),
    ("opencl: attention gradient properties", "test_opencl_backward_properties.py", None),
    ("opencl: flash and decode kind properties", "test_opencl_flash_decode_properties.py", None),
    ("opencl: norm and rope kind properties", "test_opencl_block_properties.py", None),
    ("opencl: MoE forward properties", "test_opencl_moe_forward_properties.py", None),
    ("opencl: instrumented I/O = formula", "test_io_count.py", None),
    ("facade: errors, inputs, bench", "test_facade.py", None),
    ("gpu hardware (cupy, numba)", "test_on_device.py", None),
)

_stats: dict = collections.defaultdict(lambda: collections.Counter())
_time: dict = collections.defaultdict(float)


def _route(nodeid: str):
    if "tests/gpu/" not in nodeid:
        return None
    path, _, name = nodeid.partition("::")
    fname = path.rsplit("/", 1)[-1]
    for label, file, prefixes in ROUTES:
        if file == fname and prefixes is not None and name.startswith(prefixes):
            return label
    for label, file, prefixes in ROUTES:
        if file == fname and prefixes is None:
            return label
    return None


def pytest_runtest_logreport(report):
    label = _route(report.nodeid)
    if label is None:
        return
    _time[label] += report.duration
    if hasattr(report, "wasxfail"):
        _stats[label]["xfailed" if report.outcome == "skipped" else "xpassed"] += 1
    elif report.when == "call":
        _stats[label][report.outcome] += 1
    elif report.outcome in ("skipped", "failed"):  # skipped or errored in setup/teardown
        _stats[label]["skipped" if report.outcome == "skipped" else "failed"] += 1


def pytest_collectreport(report):
    if report.outcome == "skipped":  # a module skipped as a whole (no GPU)
        label = _route(report.nodeid + "::")
        if label is not None:
            _stats[label]["skipped"] += 1


def pytest_terminal_summary(terminalreporter):
    if not _stats:
        return
    tr = terminalreporter
    tr.section("GPU verification routes (tests/gpu)")
    for label, _, _ in ROUTES:
        if label in _stats:
            c = _stats[label]
            tr.write_line(f"{label:<46} passed {c['passed']:>3}  failed {c['failed']:>3}  "
                          f"skipped {c['skipped']:>3}  {_time[label]:6.1f} s"
                          + (f"  (xfailed {c['xfailed']}: see the test's reason)" if c["xfailed"] else "")
                          + (f"  (XPASSED {c['xpassed']}: drop the xfail mark)" if c["xpassed"] else ""))


# the linear-time mixer kernels (tests/gpu/test_mixer_kernels.py); appended, so the table above
# merges with other kernels' rows
ROUTES = ROUTES + (
    ("mixers ptx: compile_ptx, cc 8.0 / 9.0", "test_mixer_kernels.py", ("test_mixer_ptx",)),
    ("mixers nvrtc: sm_80 / sm_90 cubin", "test_mixer_kernels.py", ("test_mixer_nvrtc",)),
    ("mixers simulator: vs refimpl, mutants", "test_mixer_kernels.py", ("test_mixer_simulated",)),
    ("mixers opencl: vs refimpl, mutants", "test_mixer_kernels.py", ("test_mixer_opencl",)),
    ("mixers opencl: conformance (float32)", "test_mixer_kernels.py", ("test_mixer_conformance",)),
    ("mixers facade and OpenCL build", "test_mixer_kernels.py", None),
)
