"""When a GPU-path dependency is missing: skip locally, fail in CI.

Locally a missing optional dependency (numba-cuda, NVRTC/NVVM wheels, pyopencl,
an OpenCL platform) makes its tests skip with the reason. In CI (``CI`` set, or
``REFIMPL_REQUIRE_GPU_CHECKS=1``) every verification route must run, so the
same condition is a test failure instead: a green CI can never hide a route
that silently did not run.
"""

from __future__ import annotations

import os

import pytest


def checks_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("REFIMPL_REQUIRE_GPU_CHECKS", "") not in ("", "0")


def missing(reason: str):
    """Skip (locally) or fail (CI) because ``reason``."""
    if checks_required():
        pytest.fail(f"GPU verification route unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def opencl_backend_or_missing():
    """The default "opencl" backend with its runtime started, or skip/fail."""
    from gpu.backends import get_backend
    from gpu.errors import BackendUnavailable

    be = get_backend("opencl")
    try:
        be.runtime()
    except BackendUnavailable as e:
        missing(str(e))
    return be


def import_or_missing(module: str, hint: str):
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # ImportError, or a library-loading error
        missing(f"{module} unavailable ({type(e).__name__}: {e}); {hint}")
