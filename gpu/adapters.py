"""Conformance-suite adapters for the GPU kernels (duck-typed, see properties.core).

Point the suite at a kernel with, for example::

    REFIMPL_IMPLS=gpu.adapters:opencl_attention pytest tests/test_conformance.py -k attention

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


# ---------------------------------------------------------------------------
# kind "flash" (properties.flash): the suite draws the tiles (from ``tiles``) and the key partitions

#: what the kernels implement of the flash kind: the attention features above, the FA2 variant,
#: the backward from the saved (out, lse) and split-KV
FLASH_CAPABILITIES = ATTENTION_CAPABILITIES | {"fa2", "backward", "split_kv"}


@dataclasses.dataclass(frozen=True)
class KernelFlashAdapter:
    name: str
    forward: Callable
    backward: Callable
    split_kv: Callable
    capabilities: frozenset = FLASH_CAPABILITIES
    tiles: tuple = (3,)
    precision: str = "float32"
    kind: str = "flash"


def flash_adapter(backend, *, tiles=(3,), name=None) -> KernelFlashAdapter:
    """``gpu.flash_attention`` (variant fa2), ``gpu.flash_attention_backward`` (from the saved
    out, lse) and ``gpu.split_kv_attention`` on ``backend`` at the tiles the suite draws from
    ``tiles``."""
    from .api import flash_attention, flash_attention_backward, split_kv_attention
    from .errors import UnsupportedOption

    def forward(q, k, v, *, block_q, block_k, variant, skip_masked_tiles=True, return_stats=False, **kw):
        if variant != "fa2" or return_stats or not skip_masked_tiles:
            raise UnsupportedOption(f"variant={variant!r}, return_stats={return_stats}, skip_masked_tiles="
                                    f"{skip_masked_tiles}: the kernel is FA2 with block skipping and no stats")
        return flash_attention(q, k, v, backend=backend, block_q=block_q, block_k=block_k, **kw)

    def backward(q, k, v, out, lse, dout, *, block_q, block_k, **kw):
        return flash_attention_backward(q, k, v, dout, backend=backend, block_q=block_q, block_k=block_k,
                                        out=out, lse=lse, **kw)

    def split_kv(q, k, v, *, block_q, block_k, boundaries, **kw):
        return split_kv_attention(q, k, v, backend=backend, block_q=block_q, block_k=block_k,
                                  boundaries=boundaries, **kw)

    return KernelFlashAdapter(name or f"gpu-{getattr(backend, 'name', backend)}-flash", forward, backward, split_kv,
                              tiles=tuple(tiles))


def opencl_flash():
    """The OpenCL forward, backward and split-KV kernels at 3 x 3 tiles (lengths drawn around
    multiples of 3: partial tiles; one build per kernel keeps the OpenCL route short)."""
    return [flash_adapter("opencl", tiles=(3,))]


# ---------------------------------------------------------------------------
# kind "decode" (properties.decode): a paged KV cache read by the paged-attention kernel


@dataclasses.dataclass(frozen=True)
class KernelDecodeAdapter:
    name: str
    decode: Callable
    capabilities: frozenset = frozenset({"paged", "gqa", "softcap"})
    precision: str = "float32"
    kind: str = "decode"


def paged_decode_adapter(backend, *, block_q=None, block_k=None, name=None) -> KernelDecodeAdapter:
    """A decoding loop whose attention is ``gpu.paged_attention``: each step's k, v are written
    into a ``refimpl.kv_cache.PagedCache`` on the host (the slot mapping: vLLM's
    ``reshape_and_cache``, not a kernel here), then the step's queries attend over the block
    table on ``backend``. cache="contiguous" is served the same way with one block holding the
    whole sequence (a contiguous cache is a paged one with a single block); "ring" and RoPE are
    not implemented (capabilities)."""
    import numpy as np

    from refimpl.kv_cache import PagedCache

    from .api import paged_attention

    def decode(q, k, v, *, cache, chunks, window, rope, block_size, softcap=None):
        from .errors import UnsupportedOption

        if cache not in ("contiguous", "paged") or rope is not None:
            raise UnsupportedOption(f"cache={cache!r}, rope={rope!r}: the adapter runs paged or contiguous caches "
                                    f"without RoPE")
        B, Hkv, L, D = k.shape
        bs = block_size if cache == "paged" else max(L, 1)
        c = PagedCache(Hkv, D, v.shape[-1], batch=B, block_size=bs, num_blocks=B * -(-L // bs) + 1)
        outs, s = [], 0
        for n in chunks:
            c.update(k[:, :, s:s + n], v[:, :, s:s + n])
            table = np.zeros((B, max(len(t) for t in c.tables)), dtype=np.int64)
            for b, t in enumerate(c.tables):
                table[b, :len(t)] = t
            out, _ = paged_attention(q[:, :, s:s + n], c.k_pool, c.v_pool, table, np.array(c.lengths),
                                     backend=backend, window=window, softcap=softcap, block_q=block_q,
                                     block_k=block_k)
            outs.append(out)
            s += n
        return np.concatenate(outs, axis=2)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-paged" + (
        f"-{block_q}x{block_k}" if block_q or block_k else "")
    return KernelDecodeAdapter(label, decode)


def opencl_paged_decode():
    """The OpenCL paged-attention kernel in a decoding loop, at small tiles (2 x 3)."""
    return [paged_decode_adapter("opencl", block_q=2, block_k=3)]


# ---------------------------------------------------------------------------
# kinds "norm" (properties.norms) and "rope" (properties.rope)

#: RMSNorm conventions an adapter can declare (properties.norms capabilities) -> gpu.rms_norm keywords
NORM_CONVENTIONS = {"llama": (frozenset(), {}),
                    "gemma": (frozenset({"gemma_offset"}), {"weight_offset": 1.0}),
                    "zhang_sennrich": (frozenset({"eps_outside_sqrt"}), {"eps_placement": "outside_sqrt"})}


@dataclasses.dataclass(frozen=True)
class KernelNormAdapter:
    name: str
    layer_norm: Callable
    rms_norm: Callable
    capabilities: frozenset = frozenset()
    precision: str = "float32"
    kind: str = "norm"


def norm_adapter(backend, *, threads=None, convention="llama", name=None) -> KernelNormAdapter:
    """``gpu.rms_norm`` / ``gpu.layer_norm`` on ``backend`` with ``threads`` per row, declaring the
    RMSNorm ``convention`` ("llama": eps inside, g = w; "gemma": g = 1 + w; "zhang_sennrich": eps
    outside the sqrt)."""
    from .api import layer_norm, rms_norm

    caps, kw = NORM_CONVENTIONS[convention]

    def rms(x, w, eps):
        return rms_norm(x, w, backend=backend, eps=eps, threads=threads, **kw)

    def layer(x, w, b, eps):
        return layer_norm(x, w, b, backend=backend, eps=eps, threads=threads)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-norm-{convention}" + (f"-{threads}t" if threads else "")
    return KernelNormAdapter(label, layer, rms, caps)


def opencl_norm():
    """The OpenCL norm kernels, 4 threads per row (rows of 1 to 33: partial strides, multi-step
    reductions), under each RMSNorm convention."""
    return [norm_adapter("opencl", threads=4, convention=c) for c in NORM_CONVENTIONS]


@dataclasses.dataclass(frozen=True)
class KernelRopeAdapter:
    name: str
    apply: Callable
    capabilities: frozenset = frozenset({"interleaved", "partial", "scaling"})
    precision: str = "float32"
    kind: str = "rope"


def rope_adapter(backend, *, threads=None, name=None) -> KernelRopeAdapter:
    """``gpu.apply_rope`` (in place on a copy; both layouts, partial rotary, scalings) on ``backend``."""
    from .api import apply_rope

    def apply(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
        return apply_rope(x, positions, backend=backend, layout=layout, rotary_dim=rotary_dim, base=base,
                          scaling=scaling, threads=threads)

    return KernelRopeAdapter(name or f"gpu-{getattr(backend, 'name', backend)}-rope" + (f"-{threads}t" if threads else ""),
                             apply)


def opencl_rope():
    """The OpenCL RoPE kernel with 4 threads per block (many blocks per row of pairs)."""
    return [rope_adapter("opencl", threads=4)]


# ---------------------------------------------------------------------------
# kind "moe" (properties.moe) with "forward": router GEMM, routing, permute, grouped GEMMs, combine


@dataclasses.dataclass(frozen=True)
class KernelMoEForwardAdapter:
    name: str
    route: Callable
    moe_forward: Callable
    dispatch_combine: Callable
    capabilities: frozenset = frozenset({"route", "forward"})
    precision: str = "float32"
    kind: str = "moe"


def moe_forward_adapter(backend, *, threads=None, block=None, token_block=None, scan_block=None,
                        name=None) -> KernelMoEForwardAdapter:
    """The whole MoE layer on ``backend``: router logits z = x W^T by the grouped GEMM (one
    group, no bias), ``gpu.route``, then ``gpu.moe_experts`` (sparse or GShard dense layout);
    ``dispatch_combine`` reads the GShard tensors off the dense-layout permutation kernel's
    slots (dispatch[t, e, c] at row e C + c of choice (t, j))."""
    import numpy as np

    from refimpl.moe.dispatch import buffer_capacity

    from .api import MoELaunch, moe_experts, moe_permute, route
    from .api_common import _check_written, _row_threads
    from .backends import get_backend

    def router_logits(x, W):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        wt = np.ascontiguousarray(np.asarray(W, dtype=np.float32).T[None])  # (1, D, E)
        T, E = x32.shape[0], wt.shape[2]
        z = np.full((max(T, 1), E), np.nan, dtype=np.float32)
        if T:
            p = MoELaunch(_row_threads(threads), *(block or (16, 16, 16)))
            get_backend(backend).moe_gemm(x32, wt, np.zeros((1, 1, 1), np.float32), np.zeros((1, E), np.float32),
                                          np.array([0, T], np.int32), z, 0, p)
            _check_written(logits=z[:T])
        return z[:T]

    def run_route(logits, k, **options):
        return route(logits, k, backend=backend, token_block=token_block, scan_block=scan_block, **options)

    def forward(x, W, experts, k, *, layout="sparse", **options):
        r = run_route(router_logits(x, W), k, **options)
        return moe_experts(x, r, experts, backend=backend, layout=layout, threads=threads, block=block), r

    def dispatch_combine(routing):
        T, E, C = routing.num_tokens, routing.num_experts, buffer_capacity(routing)
        perm = moe_permute(np.zeros((T, 1)), routing, backend=backend, layout="dense_tensors", threads=threads)
        dispatch = np.zeros((T, E, C), dtype=bool)
        combine = np.zeros((T, E, C))
        t, j = np.nonzero(perm.row_of >= 0)
        rows = perm.row_of[t, j]
        dispatch[t, rows // max(C, 1), rows % max(C, 1)] = True
        combine[t, rows // max(C, 1), rows % max(C, 1)] = routing.gates[t, j]
        return dispatch, combine

    label = name or f"gpu-{getattr(backend, 'name', backend)}-moe-forward"
    return KernelMoEForwardAdapter(label, run_route, forward, dispatch_combine)


def opencl_moe_forward():
    """The OpenCL MoE kernels at small sizes: 4 threads, GEMM tiles 4 x 3 x 2 (partial tiles and K slices)."""
    return [moe_forward_adapter("opencl", threads=4, block=(4, 3, 2), token_block=8, scan_block=4)]


# ---------------------------------------------------------------------------
# kind "linear_attention": the chunked GLA kernel is gpu.mixers_api's (adapters: gpu.mixers_adapters)


def opencl_gla():
    """Deprecated: the OpenCL chunked GLA kernel of ``gpu.mixers_api`` at 4-token chunks, 3-column
    value tiles, 32 threads (``gpu.mixers_adapters.gla_adapter``; ``opencl_mixers`` lists it too).
    The older ``gpu.gla_*`` kernel this name ran was removed."""
    from .mixers_adapters import gla_adapter

    return [gla_adapter("opencl", chunk_size=4, block_v=3, threads=32)]
