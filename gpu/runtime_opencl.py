"""The "opencl" runtime: builds neutral-dialect C text as OpenCL C with pyopencl.

On a machine without a GPU this runs on the CPU through PoCL (Debian's
``pocl-opencl-icd``). The platform is chosen by ``GPU_OPENCL_PLATFORM`` (a
substring of the platform name; default: the first platform with a device).
Programs are built without ``-cl-fast-relaxed-math``: float32 exp/log/tanh with
the accuracy OpenCL C requires (<= 3 ulp for exp and log, <= 5 ulp for tanh).
"""

from __future__ import annotations

import os

import numpy as np

from .constants import INSTALL_HINT
from .dialect import define_flags
from .errors import BackendUnavailable


class OpenCLRuntime:
    name = "opencl"

    def __init__(self):
        try:
            import pyopencl as cl
        except ImportError as e:
            raise BackendUnavailable(f"backend 'opencl': pyopencl is not installed ({e}); {INSTALL_HINT}") from e
        self.cl = cl
        want = os.environ.get("GPU_OPENCL_PLATFORM", "")
        try:
            platforms = cl.get_platforms()
        except cl.Error as e:  # no ICD at all
            raise BackendUnavailable(
                f"backend 'opencl': no OpenCL platform ({e}); on Debian: apt-get install pocl-opencl-icd") from e
        chosen = None
        for plat in platforms:
            if want and want.lower() not in plat.name.lower():
                continue
            try:
                devs = plat.get_devices()
            except cl.Error:
                continue
            if devs:
                chosen = (plat, devs[0])
                break
        if chosen is None:
            names = [p.name for p in platforms]
            raise BackendUnavailable(
                f"backend 'opencl': no OpenCL device (platforms: {names}, GPU_OPENCL_PLATFORM={want!r}); "
                "on Debian: apt-get install pocl-opencl-icd")
        self.platform, self.device = chosen
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self._programs: dict = {}
        self._kernels: dict = {}

    @property
    def description(self) -> str:
        return f"{self.platform.name} / {self.device.name}"

    def build(self, source: str, defines: dict):
        key = (source, tuple(sorted(defines.items())))
        prog = self._programs.get(key)
        if prog is None:
            prog = self.cl.Program(self.context, source).build(options=define_flags(defines))
            self._programs[key] = prog
        return prog

    def to_device(self, arr: np.ndarray):
        mf = self.cl.mem_flags
        return self.cl.Buffer(self.context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))

    def launch(self, prog, name: str, grid: tuple, block: int, args: list) -> None:
        key = (id(prog), name)
        kern = self._kernels.get(key)
        if kern is None:
            kern = self._kernels[key] = (prog, self.cl.Kernel(prog, name))
        kern[1](self.queue, (grid[0] * block, grid[1]), (block, 1), *args)

    def to_host(self, buf, out: np.ndarray) -> None:
        self.cl.enqueue_copy(self.queue, out, buf)
        self.queue.finish()
