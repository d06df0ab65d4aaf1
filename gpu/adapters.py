"""Conformance-suite adapters for the GPU kernels (duck-typed, see properties.core).

Point the suite at a kernel with, for example::

    REFIMPL_IMPLS=gpu.adapters:opencl_attention pytest tests/test_attention_properties.py

An adapter declares only the features the kernel implements (capabilities), so
properties needing masks, bias, dropout or a backward are reported as
unsupported, never run against it. ``precision="float32"``: compared the
flash-attn way (2x the naive float32 error plus a noise floor).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

#: features of refimpl.attention that gpu.flash_attention implements
ATTENTION_CAPABILITIES = frozenset(
    {"lse", "causal", "top_left", "window", "gqa", "lq_ne_lk", "dv_ne_d", "softcap", "scale"})


@dataclasses.dataclass(frozen=True)
class KernelAttentionAdapter:
    name: str
    forward: Callable
    capabilities: frozenset = ATTENTION_CAPABILITIES
    backward: Callable | None = None
    precision: str = "float32"
    kind: str = "attention"
    tiles: tuple | None = None


def attention_adapter(backend, *, block_q=None, block_k=None, name=None) -> KernelAttentionAdapter:
    """An adapter running ``gpu.flash_attention`` on ``backend`` with the given tiles."""
    from .api import flash_attention

    def forward(q, k, v, **kwargs):
        return flash_attention(q, k, v, backend=backend, block_q=block_q, block_k=block_k, **kwargs)

    label = name or f"gpu-{getattr(backend, 'name', backend)}" + (
        f"-{block_q}x{block_k}" if block_q or block_k else "")
    return KernelAttentionAdapter(label, forward)


def attention_backward_adapter(backend, *, block_q=None, block_k=None, name=None) -> KernelAttentionAdapter:
    """An adapter with forward (``gpu.flash_attention``) and backward
    (``gpu.flash_attention_backward``) on ``backend`` at the same tiles; declares
    "backward", so the suite's gradient properties run against the kernels."""
    from .api import flash_attention, flash_attention_backward

    def forward(q, k, v, **kwargs):
        return flash_attention(q, k, v, backend=backend, block_q=block_q, block_k=block_k, **kwargs)

    def backward(q, k, v, dout, **kwargs):
        return flash_attention_backward(q, k, v, dout, backend=backend, block_q=block_q, block_k=block_k, **kwargs)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-bwd" + (
        f"-{block_q}x{block_k}" if block_q or block_k else "")
    tiles = tuple(t for t in (block_q, block_k) if t) or None
    return KernelAttentionAdapter(label, forward, ATTENTION_CAPABILITIES | {"backward"}, backward, tiles=tiles)


def opencl_attention_backward():
    """The OpenCL forward + backward kernels at small tiles (partial tiles at the suite's short lengths)."""
    return [attention_backward_adapter("opencl", block_q=2, block_k=3)]


def opencl_attention():
    """Adapters for the OpenCL kernel: small tiles (many partial tiles) and the default 16 x 16."""
    return [attention_adapter("opencl", block_q=4, block_k=3), attention_adapter("opencl")]


def numba_attention():
    """Adapter for the Numba kernel (a GPU, or the simulator if enabled before numba's import)."""
    return [attention_adapter("numba", block_q=4, block_k=3)]


def cupy_attention():
    return [attention_adapter("cupy")]


@dataclasses.dataclass(frozen=True)
class KernelRoutingAdapter:
    """properties.moe adapter for ``gpu.route``: declares only "route" (softmax or
    sigmoid, the three normalisations, capacity None or int, k_major and
    token_major), so the routing properties run and the rest are unsupported.
    ``precision`` tells the checks the kernel computes in float32 (properties.precision)."""

    name: str
    route: Callable
    capabilities: frozenset = frozenset({"route"})
    precision: str = "float32"
    kind: str = "moe"


def routing_adapter(backend, *, token_block=None, scan_block=None, name=None) -> KernelRoutingAdapter:
    from .api import route

    def run(logits, k, **options):
        return route(logits, k, backend=backend, token_block=token_block, scan_block=scan_block, **options)

    return KernelRoutingAdapter(name or f"gpu-{getattr(backend, 'name', backend)}-route", run)


def opencl_routing():
    """The OpenCL routing kernels with small blocks (many blocks, multi-step scans)."""
    return [routing_adapter("opencl", token_block=8, scan_block=4)]
