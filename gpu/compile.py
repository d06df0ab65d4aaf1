"""Compile every kernel for real GPU targets, with no GPU and no driver.

* Numba kernels: ``numba.cuda.compile_ptx(pyfunc, signature, cc=(8, 0) | (9, 0))``
  lowers the Python kernel through NVVM to PTX. This type-checks what the
  simulator does not (the simulator runs the Python function as Python), so a
  float64 slip or an unsupported construct fails here. Needs numba-cuda and
  libnvvm/libnvrtc (PyPI: nvidia-nvvm, nvidia-cuda-nvrtc).
* CUDA C (the neutral-dialect sources): NVRTC through ``cuda.bindings.nvrtc``
  with ``--gpu-architecture=sm_80 | sm_90``, which produces SASS (a cubin), so
  ptxas runs too; ``--ptxas-options=-v`` reports registers and shared memory.

Both are pure compilers: nothing here needs ``libcuda`` or a device.
"""

from __future__ import annotations

import dataclasses
import re

from .dialect import define_flags

#: compute capabilities every kernel is compiled for (A100, H100)
TARGET_CCS = ((8, 0), (9, 0))
#: head-dim variants of the later kernels compiled by the checks: the largest, whose registers and
#: shared memory are the most (the variants differ only in the -D constants; one keeps the run short)
BACKWARD_COMPILED_HEAD_DIMS = (128,)
#: the later kernels built from the attention tiles (BR, BC, DMAX, DVMAX): gpu.<name>_numba and gpu.<name>_c
#: with kernels(BR, BC, DMAX, DVMAX), SIGNATURES, SOURCE and KERNEL_NAMES
TILED_KERNELS = ("attention_backward", "split_kv", "paged")
#: the later kernels with a block of NT threads per row or per slice of rows (gpu.<name>_numba.kernels() at
#: the default block, gpu.<name>_c.DEFAULT_DEFINES)
ROW_KERNELS = ("norm", "rope", "moe")


@dataclasses.dataclass(frozen=True)
class NumbaKernelSpec:
    """A Numba kernel to compile: a name, its Python function and type signature."""

    name: str
    pyfunc: object
    signature: str


def numba_kernel_specs(attention_module=None, routing_module=None) -> list[NumbaKernelSpec]:
    """Every Numba kernel of the package, in the variants the facade launches:
    the attention kernel for each head-dim variant at the default tiles, the
    three routing kernels, and the kernels of TILED_KERNELS at head dims BACKWARD_COMPILED_HEAD_DIMS."""
    from . import api

    if attention_module is None:
        from . import attention_numba as attention_module
    if routing_module is None:
        from . import routing_numba as routing_module
    specs = []
    for d in api.HEAD_DIM_VARIANTS:
        specs.append(NumbaKernelSpec(
            f"flash_forward[BR={api.DEFAULT_BLOCK_Q},BC={api.DEFAULT_BLOCK_K},D<={d}]",
            attention_module.make_flash_forward(api.DEFAULT_BLOCK_Q, api.DEFAULT_BLOCK_K, d, d),
            attention_module.signature()))
    for name, (fn, sig) in routing_module.kernels().items():
        specs.append(NumbaKernelSpec(name, fn, sig))
    import importlib

    for kernel in ROW_KERNELS:
        for name, (fn, sig) in importlib.import_module(f"gpu.{kernel}_numba").kernels().items():
            specs.append(NumbaKernelSpec(name, fn, sig))
    for kernel in TILED_KERNELS:
        mod = importlib.import_module(f"gpu.{kernel}_numba")
        for d in BACKWARD_COMPILED_HEAD_DIMS:
            for name, fn in mod.kernels(api.DEFAULT_BLOCK_Q, api.DEFAULT_BLOCK_K, d, d).items():
                specs.append(NumbaKernelSpec(f"{name}[BR={api.DEFAULT_BLOCK_Q},BC={api.DEFAULT_BLOCK_K},D<={d}]", fn,
                                             mod.SIGNATURES[name]))
    return specs


#: numba-cuda code libraries of the kernels lowered so far, by (Python function, signature)
_LOWERED: dict = {}


def compile_numba_ptx(spec: NumbaKernelSpec, cc: tuple) -> str:
    """PTX of one Numba kernel for compute capability ``cc``, as ``numba.cuda.compile_ptx(pyfunc,
    signature, cc=cc)`` gives it.

    Typing and lowering (about 80% of a compile) do not depend on the target for these float32
    kernels: the kernel is lowered once, and its numba-cuda code library (which keeps the LLVM IR
    and compiles it with NVVM for any cc, caching the PTX per cc) gives the PTX of each target, so
    the second cc costs the NVVM step only. ``lowered_once_matches_compile_ptx`` (tests/gpu) checks
    that the result equals ``compile_ptx``'s. A numba-cuda without that entry point
    (``numba.cuda.compiler._compile_pyfunc_with_fixup``, numba-cuda 0.30) gets a full
    ``compile_ptx`` per cc."""
    from numba import cuda

    try:
        from numba.cuda.compiler import _compile_pyfunc_with_fixup
    except ImportError:
        return cuda.compile_ptx(spec.pyfunc, spec.signature, cc=cc)[0]
    key = (spec.pyfunc, spec.signature)
    if key not in _LOWERED:
        # the arguments compile_ptx passes for a kernel (the Numba ABI, no launch bounds)
        _LOWERED[key], _ = _compile_pyfunc_with_fixup(spec.pyfunc, spec.signature, device=False, cc=cc, abi="numba")
    (ptx,) = _LOWERED[key].get_asm_strs(cc=cc)
    return ptx


def ptx_shared_bytes(ptx: str) -> int:
    """Total static shared memory declared in a PTX module (bytes)."""
    return sum(int(n) for n in re.findall(r"\.shared\s+\.align\s+\d+\s+\.b8\s+\S+\[(\d+)\]", ptx))


def ptx_float64_instructions(ptx: str) -> list[str]:
    """PTX lines that use a float64 register or operation (a float32 kernel has none)."""
    return [ln.strip() for ln in ptx.splitlines() if ".f64" in ln]


@dataclasses.dataclass(frozen=True)
class NvrtcResult:
    arch: str
    cubin_bytes: int
    log: str

    def resource_usage(self) -> dict:
        """{kernel: {"registers": int, "smem": int}} from ptxas' verbose log."""
        usage: dict = {}
        current = None
        for ln in self.log.splitlines():
            m = re.search(r"Compiling entry function '(\w+)'", ln)
            if m:
                current = m.group(1)
            m = re.search(r"Used (\d+) registers", ln)
            if m and current:
                u = usage.setdefault(current, {})
                u["registers"] = int(m.group(1))
                s = re.search(r"(\d+) bytes smem", ln)
                if s:
                    u["smem"] = int(s.group(1))
        return usage


class NvrtcError(RuntimeError):
    pass


def nvrtc_compile(source: str, arch: str, defines: dict | None = None, name: str = "kernel.cu") -> NvrtcResult:
    """Compile CUDA C with NVRTC to a cubin for ``arch`` (e.g. "sm_80").

    Raises NvrtcError with the compiler log on failure.
    """
    from cuda.bindings import nvrtc

    def ok(err, what):
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"{what}: {err}")

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    ok(err, "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}", "--std=c++17", "--ptxas-options=-v"]
        opts += define_flags(defines or {})
        opts_b = [o.encode() for o in opts]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts_b), opts_b)
        e2, n = nvrtc.nvrtcGetProgramLogSize(prog)
        ok(e2, "nvrtcGetProgramLogSize")
        log = b" " * n
        (e3,) = nvrtc.nvrtcGetProgramLog(prog, log)
        ok(e3, "nvrtcGetProgramLog")
        log_s = log.rstrip(b"\x00 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"NVRTC failed for {arch} ({err}):\n{log_s}")
        e4, size = nvrtc.nvrtcGetCUBINSize(prog)
        ok(e4, "nvrtcGetCUBINSize")
        return NvrtcResult(arch, int(size), log_s)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def c_source_variants():
    """(name, source, defines) for every C kernel variant the facade builds: the
    attention source for each head-dim variant at the default tiles, the
    routing source, and the sources of TILED_KERNELS at head dims BACKWARD_COMPILED_HEAD_DIMS."""
    from . import api, attention_c, routing_c

    out = []
    for d in api.HEAD_DIM_VARIANTS:
        defs = {"BR": api.DEFAULT_BLOCK_Q, "BC": api.DEFAULT_BLOCK_K, "DMAX": d, "DVMAX": d}
        out.append((f"attention_c[D<={d}]", attention_c.SOURCE, defs))
    out.append(("routing_c", routing_c.SOURCE, routing_c.DEFAULT_DEFINES))
    import importlib

    for kernel in ROW_KERNELS:
        mod = importlib.import_module(f"gpu.{kernel}_c")
        out.append((f"{kernel}_c", mod.SOURCE, mod.DEFAULT_DEFINES))
    for kernel in TILED_KERNELS:
        mod = importlib.import_module(f"gpu.{kernel}_c")
        for d in BACKWARD_COMPILED_HEAD_DIMS:
            defs = {"BR": api.DEFAULT_BLOCK_Q, "BC": api.DEFAULT_BLOCK_K, "DMAX": d, "DVMAX": d}
            out.append((f"{kernel}_c[D<={d}]", mod.SOURCE, defs))
    return out
