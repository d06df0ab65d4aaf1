"""A neutral kernel dialect: one C text that builds as CUDA C and as OpenCL C.

The prelude below detects the compiler from its predefined macros
(``__OPENCL_VERSION__`` for OpenCL C, ``__CUDACC_RTC__``/``__CUDACC__`` for NVRTC
and nvcc) and maps a handful of words onto each language:

    KERNEL            extern "C" __global__          |  __kernel
    GLOBAL            (nothing)                      |  __global      pointer space
    SHARED            __shared__                     |  __local       block memory
    SHARED_PTR        (nothing)                      |  __local       a pointer parameter into block memory
    DEVICE_FN         static __device__ __forceinline__ | static inline  a device function (inlined)
    BARRIER()         __syncthreads()                |  barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)
    THREAD_ID()       threadIdx.x                    |  get_local_id(0)
    BLOCK_ID_X/Y()    blockIdx.x / .y                |  get_group_id(0) / (1)
    EXPF LOGF TANHF   expf logf tanhf                |  exp log tanh (float overloads)
    SQRTF             sqrtf (correctly rounded)      |  sqrt (<= 3 ulp in OpenCL C 1.2)
    ERFCF COSHF       erfcf coshf                    |  erfc cosh
    NEG_INF           -__int_as_float(0x7f800000)    |  -INFINITY
    IMIN IMAX FMAXF   min max fmaxf                  |  min max fmax

Kernels in the dialect use only these words, plain C (int, float, loops,
per-thread arrays of constant size, DEVICE_FN functions; a barrier inside one is
reached by every thread that calls it) and block-level barriers: no warp
intrinsics, no atomics, no templates, no C++ (OpenCL C is C99). Launches are
always 2-D grids of 1-D blocks: grid (gx, gy), ``block`` threads; in OpenCL terms
global size (gx * block, gy) and local size (block, 1).

Compile-time constants (tile sizes) are passed as ``-DNAME=value`` to either
compiler; the host code (``gpu.attention_c``, ``gpu.routing_c``) owns them.
"""

PRELUDE = r"""
/* ---- neutral dialect prelude (gpu/dialect.py) ---- */
#if defined(__OPENCL_VERSION__)
#define KERNEL __kernel
#define GLOBAL __global
#define SHARED __local
#define SHARED_PTR __local
#define DEVICE_FN static inline
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)
#define THREAD_ID() ((int)get_local_id(0))
#define BLOCK_ID_X() ((int)get_group_id(0))
#define BLOCK_ID_Y() ((int)get_group_id(1))
#define EXPF(x) exp(x)
#define LOGF(x) log(x)
#define TANHF(x) tanh(x)
#define SQRTF(x) sqrt(x)
#define ERFCF(x) erfc(x)
#define COSHF(x) cosh(x)
#define NEG_INF (-INFINITY)
#define IMIN(a, b) min((a), (b))
#define IMAX(a, b) max((a), (b))
#define FMAXF(a, b) fmax((a), (b))
#elif defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define KERNEL extern "C" __global__
#define SHARED_PTR
#define DEVICE_FN static __device__ __forceinline__
#define GLOBAL
#define SHARED __shared__
#define BARRIER() __syncthreads()
#define THREAD_ID() ((int)threadIdx.x)
#define BLOCK_ID_X() ((int)blockIdx.x)
#define BLOCK_ID_Y() ((int)blockIdx.y)
#define EXPF(x) expf(x)
#define LOGF(x) logf(x)
#define TANHF(x) tanhf(x)
#define SQRTF(x) sqrtf(x)
#define ERFCF(x) erfcf(x)
#define COSHF(x) coshf(x)
#define NEG_INF (-__int_as_float(0x7f800000))
#define IMIN(a, b) min((a), (b))
#define IMAX(a, b) max((a), (b))
#define FMAXF(a, b) fmaxf((a), (b))
#else
#error "neutral dialect: compile as OpenCL C or CUDA C (NVRTC / nvcc)"
#endif
/* ---- end of prelude ---- */
"""


def with_prelude(body: str) -> str:
    """The full kernel text: the prelude followed by the kernel body."""
    return PRELUDE + body


def define_flags(defines: dict) -> list[str]:
    """``{"BR": 16}`` -> ``["-DBR=16"]`` (the same flag syntax for NVRTC and OpenCL)."""
    return [f"-D{k}={int(v)}" for k, v in sorted(defines.items())]
