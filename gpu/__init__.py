"""GPU kernels for the hot paths of ``refimpl``, verified without a GPU.

* ``gpu.flash_attention(q, k, v, *, backend, ...)``: FlashAttention-2 forward
  (float32), the semantics of ``refimpl.attention`` for causal/align/window/
  scale/softcap, GQA/MQA, Lq != Lk, D and Dv up to 128.
* ``gpu.flash_attention_backward(q, k, v, dout, *, backend, ...)``: its backward
  (dq, dk, dv; D = rowsum(dO * O), scores recomputed per tile, no atomics), the
  semantics of ``refimpl.attention_backward``.
* ``gpu.split_kv_attention(q, k, v, *, backend, boundaries | num_splits, ...)``:
  flash-decoding (per-chunk FA2 states under the full band, then the exact merge),
  the semantics of ``refimpl.split_kv_attention``.
* ``gpu.paged_attention(q, k_pool, v_pool, block_table, seq_lens, *, backend, ...)``:
  decode attention over a paged KV cache (vLLM block tables), the semantics of
  ``refimpl.kv_cache.decode_step`` on a ``PagedCache``.
* ``gpu.rms_norm``, ``gpu.layer_norm`` (one block per row, tree reduction, the weight
  fused into the write) and ``gpu.apply_rope`` (in place, both pair layouts, a host-built
  float32 cos/sin table): the semantics of ``refimpl.norms`` and ``refimpl.apply_rope``.
* ``gpu.moe_permute`` / ``gpu.moe_experts(x, routing, experts, *, backend, layout)``: the
  token permutation by expert (the slot assignment of ``refimpl.moe.route``), grouped
  expert GEMMs over the permuted rows and the gated combine, the semantics of
  ``refimpl.moe.apply_experts`` (sparse and GShard dense layouts).
* ``gpu.gated_linear_attention``: deprecated, a re-export of
  ``gpu.mixers_api.gated_linear_attention`` (the chunked GLA forward; the linear-time mixer
  kernels live in ``gpu.mixers_api``), kept so the older import path works; it warns.
* ``gpu.route(logits, k, *, backend, ...)``: MoE token-choice routing (softmax or
  sigmoid scores, top-k with ties to the lower id, renormalisation, capacity
  positions in k_major or token_major order), the semantics of
  ``refimpl.moe.route``; returns a ``refimpl.moe.Routing``.

``backend`` is "numba" (Numba CUDA: a GPU, or the CUDA simulator), "cupy"
(CUDA C via cupy.RawModule: a GPU) or "opencl" (the same C text as OpenCL C,
e.g. PoCL on the CPU). Kernel modules: ``attention_numba``, ``routing_numba``
(Numba), ``attention_c``, ``routing_c`` (neutral C dialect, ``dialect``);
compile checks without a GPU: ``gpu.compile``; ``python -m gpu.bench``.
"""

import functools as _functools
import warnings as _warnings

from . import mixers_api as _mixers_api
from .api import (BACKENDS, apply_rope, flash_attention, flash_attention_backward, layer_norm, moe_experts,
                  moe_permute, paged_attention, rms_norm, route, split_kv_attention)
from .errors import BackendUnavailable, UnsupportedOption


@_functools.wraps(_mixers_api.gated_linear_attention)
def gated_linear_attention(*args, **kwargs):
    _warnings.warn("gpu.gated_linear_attention is deprecated: use gpu.mixers_api.gated_linear_attention "
                   "(the older gpu.gla_* kernel was removed)", DeprecationWarning, stacklevel=2)
    return _mixers_api.gated_linear_attention(*args, **kwargs)


gated_linear_attention.__doc__ = ("Deprecated: use gpu.mixers_api.gated_linear_attention (this alias calls it and "
                                  "warns).\n\n" + (_mixers_api.gated_linear_attention.__doc__ or ""))


__all__ = ["BACKENDS", "BackendUnavailable", "UnsupportedOption", "apply_rope", "flash_attention",
           "flash_attention_backward", "gated_linear_attention", "layer_norm", "moe_experts", "moe_permute",
           "paged_attention", "rms_norm", "route", "split_kv_attention"]
