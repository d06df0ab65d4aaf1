"""Routes (a) and (b): every kernel compiled for real GPU targets, no GPU needed.

(a) every Numba kernel through ``numba.cuda.compile_ptx`` for cc 8.0 and 9.0;
    the PTX must use no float64 (the kernels are float32 end to end) and
    declare exactly the shared memory the docstring's budget says;
(b) every CUDA C source through NVRTC for sm_80 and sm_90 (to SASS, so ptxas
    runs): no spills, shared memory as budgeted.
Both checks are shown to fail on a bad kernel (a float64 slip, a CUDA-only
intrinsic, a syntax error), and the neutral dialect's text is shown to build
unchanged as OpenCL C.

The forward's head-dim variants differ only in the -D constants / shared-array shapes: the
default run compiles the smallest and the largest (D <= 16 and D <= 128, whose shared memory
is the most) on both routes, REFIMPL_PROFILE=thorough all four (``FORWARD_HEAD_DIMS``).
"""

from __future__ import annotations

import importlib

import pytest

from gpu import api, attention_c, compile as gc, dialect

from .cases import thorough
from .support import import_or_missing, opencl_backend_or_missing

NVRTC_ARCHS = ("sm_80", "sm_90")
#: the forward's head-dim variants compiled by both routes (all of them under the thorough profile)
FORWARD_HEAD_DIMS = api.HEAD_DIM_VARIANTS if thorough() else (api.HEAD_DIM_VARIANTS[0], api.HEAD_DIM_VARIANTS[-1])


def _numba_cuda():
    cuda = import_or_missing("numba.cuda", "pip install 'transformer-refimpl[gpu]'")
    try:
        # compile_ptx needs libnvvm and libnvrtc (PyPI: nvidia-nvvm, nvidia-cuda-nvrtc)
        cuda.compile_ptx(lambda a: None, "void(float32[::1])", cc=(8, 0))
    except Exception as e:  # noqa: BLE001 - any loader error means the route is unavailable
        from .support import missing

        missing(f"numba.cuda.compile_ptx unavailable ({type(e).__name__}: {str(e)[:200]})")
    return cuda


def _nvrtc():
    import_or_missing("cuda.bindings.nvrtc", "pip install cuda-bindings nvidia-cuda-nvrtc")
    try:
        gc.nvrtc_compile('extern "C" __global__ void f(float* a) { a[0] = 1.0f; }', "sm_80")
    except Exception as e:  # noqa: BLE001
        from .support import missing

        missing(f"NVRTC unavailable ({type(e).__name__}: {str(e)[:200]})")




def _spec_names():
    # names only: building the specs imports numba, which collection must not need
    names = [f"flash_forward[BR={api.DEFAULT_BLOCK_Q},BC={api.DEFAULT_BLOCK_K},D<={d}]" for d in FORWARD_HEAD_DIMS]
    names += ["route_topk", "route_positions", "route_gates"]
    for kernel in gc.ROW_KERNELS:
        names += list(importlib.import_module(f"gpu.{kernel}_c").KERNEL_NAMES)
    for kernel in gc.TILED_KERNELS:
        mod = importlib.import_module(f"gpu.{kernel}_c")
        names += [f"{k}[BR={api.DEFAULT_BLOCK_Q},BC={api.DEFAULT_BLOCK_K},D<={d}]"
                  for d in gc.BACKWARD_COMPILED_HEAD_DIMS for k in mod.KERNEL_NAMES]
    return names


def _tiled_kernel_of(function: str):
    """The TILED_KERNELS module name that defines kernel function ``function``, or None."""
    for kernel in gc.TILED_KERNELS:
        if function in importlib.import_module(f"gpu.{kernel}_c").KERNEL_NAMES:
            return kernel
    return None


#: static shared memory of the row kernels at their default sizes (a 4-byte reduction slot per thread;
#: the grouped GEMM's X, W and second W tiles)
ROW_KERNEL_SHARED = {"rms_norm": 4 * 128, "layer_norm": 4 * 128, "rope_inplace": 0,
                     "moe_bin_counts": 4 * 128, "moe_bin_offsets": 0, "moe_permute": 0,
                     "moe_grouped_gemm": 4 * (16 * 16 + 2 * 16 * 16), "moe_combine": 0}


def _expected_shared_bytes(name: str) -> int:
    if name in ROW_KERNEL_SHARED:
        return ROW_KERNEL_SHARED[name]
    function = name.split("[")[0]
    kernel = _tiled_kernel_of(function)
    if kernel is not None:
        d = int(name.split("D<=")[1].rstrip("]"))
        return api.tiled_shared_memory_bytes(kernel, api.DEFAULT_BLOCK_Q, api.DEFAULT_BLOCK_K, d, d)[function]
    if name.startswith("flash_forward"):
        d = int(name.split("D<=")[1].rstrip("]"))
        return api.shared_memory_bytes(api.DEFAULT_BLOCK_Q, api.DEFAULT_BLOCK_K, d, d)
    if name == "route_positions":
        return 4 * api.DEFAULT_SCAN_BLOCK
    return 0


@pytest.fixture(scope="module")
def numba_specs():
    _numba_cuda()
    return {s.name: s for s in gc.numba_kernel_specs()}


@pytest.mark.parametrize("name", _spec_names())
def test_numba_kernel_compiles_to_ptx(numba_specs, name):
    """For each cc of gc.TARGET_CCS (one test per kernel: it is typed and lowered once, then
    compiled by NVVM for each target, even when pytest-xdist spreads the tests over workers)."""
    for cc in gc.TARGET_CCS:
        ptx = gc.compile_numba_ptx(numba_specs[name], cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, f"{name}: cc {cc}"
        assert ".entry" in ptx, f"{name}: cc {cc}"
        f64 = gc.ptx_float64_instructions(ptx)
        assert not f64, f"{name} cc {cc}: float64 in a float32 kernel's PTX: {f64[:5]}"
        assert gc.ptx_shared_bytes(ptx) == _expected_shared_bytes(name), f"{name}: cc {cc}"


def test_lowered_once_ptx_equals_compile_ptx(numba_specs):
    """gc.compile_numba_ptx lowers a kernel once and compiles its IR for each cc: the PTX for the
    second cc equals numba.cuda.compile_ptx's (up to the mangled symbol names, which carry a
    per-compile id)."""
    import re

    from numba import cuda

    def normalised(ptx):
        return re.sub(r"_cudapy_smem_\d+", "SMEM", re.sub(r"_ZN\w+", "SYMBOL", ptx))

    spec = gc.NumbaKernelSpec("rms_norm", *importlib.import_module("gpu.norm_numba").kernels()["rms_norm"])
    first, second = gc.TARGET_CCS
    gc.compile_numba_ptx(spec, first)
    assert normalised(gc.compile_numba_ptx(spec, second)) == normalised(cuda.compile_ptx(spec.pyfunc, spec.signature,
                                                                                        cc=second)[0])


def test_ptx_check_rejects_a_float64_slip(numba_specs):
    """A kernel with one float64 constant (0.0 instead of ZERO) fails the check."""
    from gpu import mutants

    m = mutants.Mutation("float64_slip", "attention", "", numba=(("pv = ZERO", "pv = 0.0", 1),), c=())
    mod = mutants.numba_module(m)
    spec = gc.NumbaKernelSpec("slip", mod.make_flash_forward(16, 16, 32, 32), mod.signature())
    assert gc.ptx_float64_instructions(gc.compile_numba_ptx(spec, (8, 0)))


def test_ptx_check_rejects_an_untypable_kernel(numba_specs):
    from numba.core.errors import TypingError

    def bad(a):
        a[0] = "text"  # a str into a float32 array: the simulator would not notice until run

    with pytest.raises(TypingError):
        gc.compile_numba_ptx(gc.NumbaKernelSpec("bad", bad, "void(float32[::1])"), (8, 0))


@pytest.fixture(scope="module")
def nvrtc():
    _nvrtc()


@pytest.mark.parametrize("arch", NVRTC_ARCHS)
@pytest.mark.parametrize("variant", [v[0] for v in gc.c_source_variants()
                                     if not v[0].startswith("attention_c[")
                                     or int(v[0].split("D<=")[1].rstrip("]")) in FORWARD_HEAD_DIMS])
def test_c_source_compiles_with_nvrtc(nvrtc, variant, arch):
    name, source, defines = next(v for v in gc.c_source_variants() if v[0] == variant)
    res = gc.nvrtc_compile(source, arch, defines)
    assert res.cubin_bytes > 0
    usage = res.resource_usage()
    module = name.split("[")[0]
    kernels = importlib.import_module(f"gpu.{module}").KERNEL_NAMES
    assert set(usage) == set(kernels), usage
    spill_lines = [ln for ln in res.log.splitlines() if "spill stores" in ln]
    assert len(spill_lines) == len(kernels), res.log
    for line in spill_lines:
        assert " 0 bytes spill stores, 0 bytes spill loads" in line, f"{name} {arch}: {line}"
    if module[:-2] in gc.TILED_KERNELS:
        d = defines["DMAX"]
        want = api.tiled_shared_memory_bytes(module[:-2], defines["BR"], defines["BC"], d, d)
        assert {kern: usage[kern].get("smem", 0) for kern in kernels} == want, usage
    elif module[:-2] in gc.ROW_KERNELS:
        assert {kern: usage[kern].get("smem", 0) for kern in kernels} == {k: ROW_KERNEL_SHARED[k] for k in kernels}
    elif name.startswith("attention"):
        d = defines["DMAX"]
        assert usage["flash_forward"]["smem"] == api.shared_memory_bytes(defines["BR"], defines["BC"], d, d)
    else:
        assert usage["route_positions"]["smem"] == 4 * defines["SCAN_BLOCK"]
    print(f"{name} {arch}: cubin {res.cubin_bytes} B, {usage}")


def test_nvrtc_check_rejects_a_compile_error(nvrtc):
    broken = attention_c.SOURCE.replace("return s * scale;", "return s * scale", 1)
    assert broken != attention_c.SOURCE
    with pytest.raises(gc.NvrtcError, match="error"):
        gc.nvrtc_compile(broken, "sm_80", {"BR": 4, "BC": 4, "DMAX": 16, "DVMAX": 16})


def test_same_text_builds_as_opencl_c():
    """The very same SOURCE strings (not a translation) build for OpenCL; a
    CUDA-only intrinsic outside the dialect does not."""
    be = opencl_backend_or_missing()
    rt = be.runtime()
    for name, source, defines in gc.c_source_variants():
        rt.build(source, defines)
    cuda_only = dialect.with_prelude(
        "KERNEL void f(GLOBAL float* a) { a[0] = __shfl_sync(0xffffffffu, a[0], 0); }")
    with pytest.raises(Exception):
        rt.build(cuda_only, {})
