"""The "cupy" runtime: builds neutral-dialect C text as CUDA C with ``cupy.RawModule``.

Needs a CUDA GPU and driver. NVRTC flags: the ``-D`` tile constants and
``--std=c++17``; no ``--use_fast_math`` (expf/logf/tanhf keep CUDA's documented
accuracy: 2 ulp for expf, 1 ulp for logf, 2 ulp for tanhf).
"""

from __future__ import annotations

import numpy as np

from .constants import INSTALL_HINT
from .dialect import define_flags
from .errors import BackendUnavailable


def _device_or_raise():
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailable(f"backend 'cupy': cupy is not installed ({e}); {INSTALL_HINT}") from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver
        raise BackendUnavailable(f"backend 'cupy': no usable CUDA GPU/driver ({e})") from e
    if n < 1:
        raise BackendUnavailable("backend 'cupy': no CUDA GPU found")
    return cupy


class CupyRuntime:
    name = "cupy"

    def __init__(self):
        self.cupy = _device_or_raise()
        self._modules: dict = {}

    @property
    def description(self) -> str:
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def build(self, source: str, defines: dict):
        key = (source, tuple(sorted(defines.items())))
        mod = self._modules.get(key)
        if mod is None:
            opts = tuple(define_flags(defines)) + ("--std=c++17",)
            mod = self._modules[key] = self.cupy.RawModule(code=source, options=opts)
        return mod

    def to_device(self, arr: np.ndarray):
        return self.cupy.asarray(np.ascontiguousarray(arr))

    def launch(self, mod, name: str, grid: tuple, block: int, args: list) -> None:
        mod.get_function(name)(tuple(grid), (block,), tuple(args))

    def to_host(self, buf, out: np.ndarray) -> None:
        out[...] = self.cupy.asnumpy(buf)
