"""The facade: NumPy arrays in, NumPy arrays out, one of three backends.

    gpu.flash_attention(q, k, v, *, backend, causal=False, align="bottom_right",
                        window=None, scale=None, softcap=None,
                        block_q=None, block_k=None) -> (out, lse)
    gpu.flash_attention_backward(q, k, v, dout, *, backend, same keywords) -> (dq, dk, dv)
    gpu.split_kv_attention(q, k, v, *, backend, boundaries | num_splits, same keywords) -> (out, lse)
    gpu.paged_attention(q, k_pool, v_pool, block_table, seq_lens, *, backend, window, ...) -> (out, lse)
    gpu.rms_norm(x, weight, *, backend, eps, eps_placement, weight_offset, preset) -> y
    gpu.layer_norm(x, weight, bias, *, backend, eps) -> y
    gpu.apply_rope(x, positions, *, backend, layout, rotary_dim, base, scaling) -> rotated x
    gpu.moe_permute(x, routing, *, backend, layout) -> Permutation;  gpu.moe_experts(x, routing, experts, ...) -> y
    gpu.route(logits, k, *, backend, **options of refimpl.moe.route) -> Routing

Backends:
    "numba"   the Numba CUDA kernels (gpu.attention_numba, gpu.routing_numba); on a
              GPU, or on the CPU under the Numba CUDA simulator
              (NUMBA_ENABLE_CUDASIM=1 set before numba is first imported);
    "cupy"    the neutral-dialect C sources (gpu.attention_c, gpu.routing_c) as
              CUDA C through cupy.RawModule; needs a GPU;
    "opencl"  the very same C sources as OpenCL C through pyopencl, e.g. on the
              CPU with PoCL (Debian's pocl-opencl-icd).

A backend may also be given as an object (``gpu.backends.Backend``), which is how
the meta-tests run deliberately wrong kernels through the same facade.

Semantics are those of ``refimpl.attention`` and ``refimpl.moe.route`` (the
oracles), computed in float32 with float32 accumulation. Options the kernels do
not implement raise :class:`gpu.errors.UnsupportedOption` (never silently
ignored); a missing runtime raises :class:`gpu.errors.BackendUnavailable`.
Inputs are never mutated: the facade makes float32 C-contiguous copies.
Output buffers are filled with NaN (float) or a sentinel (int) before the
launch, and the facade raises RuntimeError if any element was left unwritten.

This module is the facade over one module per topic; every name stays importable from here:
    gpu.api_common      backends' names, launch limits, the float32 argument rules, _check_written
    gpu.api_attention   flash_attention, flash_attention_backward, split_kv_attention, paged_attention
    gpu.api_norms       rms_norm, layer_norm, apply_rope
    gpu.api_moe         moe_permute, moe_experts
    gpu.api_routing     route
The linear-time mixer kernels (selective scan, chunked GLA, delta rule) have their own facade,
``gpu.mixers_api``.
"""

from __future__ import annotations

# the re-exports below are this module's API (``gpu.api.<name>``), private helpers included: the
# other facades (gpu.mixers_api) and the adapters read them
from .api_attention import (DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q, HEAD_DIM_VARIANTS, MAX_HEAD_DIM,  # noqa: F401
                            MAX_SPLITS, AttentionLaunch, _head_dim_variant, backward_shared_memory_bytes,
                            flash_attention, flash_attention_backward, paged_attention, prepare_attention,
                            shared_memory_bytes, split_kv_attention, tiled_shared_memory_bytes)
from .api_common import (_F32_MAX, _F32_TINY, _INT32_LIMIT, BACKENDS, DEFAULT_ROW_THREADS,  # noqa: F401
                         MAX_STATIC_SHARED_BYTES, MAX_THREADS_PER_BLOCK, _check_written, _float_4d, _int_array,
                         _positive_float32, _row_threads, _rows, _tile)
from .api_moe import (DEFAULT_MOE_BLOCK, MoELaunch, Permutation, _moe_launch, _moe_permute,  # noqa: F401
                      _moe_x, _stack_experts, moe_experts, moe_permute)
from .api_norms import (NormLaunch, RopeLaunch, _norm_eps, _vector, apply_rope, layer_norm,  # noqa: F401
                        rms_norm, rope_tables)
from .api_routing import (_GATE_SUM_MIN, DEFAULT_SCAN_BLOCK, DEFAULT_TOKEN_BLOCK, NORMALIZE_CODES,  # noqa: F401
                          ORDER_CODES, SCORE_CODES, SUPPORTED_DROP_ORDERS, SUPPORTED_SCORES, RouteLaunch,
                          _route_logits_float32, prepare_route, route)
from .constants import INT_UNWRITTEN  # noqa: F401 (part of this module's API)
