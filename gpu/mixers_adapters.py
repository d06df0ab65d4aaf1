"""Conformance adapters for the mixer kernels: the kinds ``ssm_scan``, ``linear_attention`` and
``delta_rule`` (``properties.mixers_scan``, ``properties.mixers_linear``), declared in float32, the protocol a
user's kernel meets. Point the suite at them with, for example::

    REFIMPL_IMPLS=gpu.mixers_adapters:opencl_mixers python -m properties --kind linear_attention

The GLA and delta-rule adapters declare ``chunked`` with ``chunk_sizes = (its chunk,)``: the suite runs it at
that chunk size with lengths that straddle chunk boundaries (L + m C, L < C, L = 1). It does
not declare ``normalize`` (the kernel has no normaliser).
"""

from __future__ import annotations

from properties.mixers_linear import DeltaRuleAdapter, LinearAttentionAdapter
from properties.mixers_scan import ScanAdapter

#: every ssm_scan capability: time-varying, grouped B/C, D and z, initial and final state
SCAN_CAPABILITIES = frozenset({"time_varying", "grouped", "skip_and_gate", "initial_state", "final_state"})
GLA_CAPABILITIES = frozenset({"gate_scalar", "gate_channel", "final_state", "chunked"})
#: no beta_per_channel: the kernel solves one UT system per head and chunk
DELTA_CAPABILITIES = frozenset({"gated", "final_state", "chunked"})


def scan_adapter(backend, *, block=None, name=None) -> ScanAdapter:
    from .mixers_api import selective_scan

    def forward(u, delta, A, B, C, D, z, initial_state):
        return selective_scan(u, delta, A, B, C, D, z, backend=backend, initial_state=initial_state, block=block)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-scan" + (f"-b{block}" if block else "")
    return ScanAdapter(label, forward, SCAN_CAPABILITIES, precision="float32")


def gla_adapter(backend, *, chunk_size=None, block_v=None, threads=None, name=None) -> LinearAttentionAdapter:
    """``chunk_size`` None: the kernel runs at the chunk size each case asks for (any >= 1);
    an int: the adapter declares that one size (``chunk_sizes``), as a fixed-tile kernel does."""
    from .mixers_api import gated_linear_attention

    def forward(q, k, v, g, scale, chunk):
        return gated_linear_attention(q, k, v, g, backend=backend, scale=scale, chunk_size=chunk or chunk_size,
                                      block_v=block_v, threads=threads)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-gla" + (f"-c{chunk_size}" if chunk_size else "")
    return LinearAttentionAdapter(label, forward, capabilities=GLA_CAPABILITIES,
                                  chunk_sizes=None if chunk_size is None else (int(chunk_size),), precision="float32")


def delta_adapter(backend, *, chunk_size=None, block_v=None, threads=None, name=None) -> DeltaRuleAdapter:
    """The chunked delta-rule kernel; ``chunk_size`` as for :func:`gla_adapter`."""
    from .mixers_api import delta_rule

    def forward(q, k, v, beta, g, scale, chunk):
        return delta_rule(q, k, v, beta, g, backend=backend, scale=scale, chunk_size=chunk or chunk_size,
                          block_v=block_v, threads=threads)

    label = name or f"gpu-{getattr(backend, 'name', backend)}-delta" + (f"-c{chunk_size}" if chunk_size else "")
    return DeltaRuleAdapter(label, forward, DELTA_CAPABILITIES,
                            chunk_sizes=None if chunk_size is None else (int(chunk_size),), precision="float32")


def opencl_mixers():
    """The OpenCL kernels: the scan with 4-channel blocks (several blocks per head), the GLA
    kernel at chunk size 4 with 3-column value tiles and 32 threads (many partial tiles),
    and at its default chunk size 16; the delta-rule kernel likewise."""
    return [scan_adapter("opencl", block=4), gla_adapter("opencl", chunk_size=4, block_v=3, threads=32),
            gla_adapter("opencl", chunk_size=16), delta_adapter("opencl", chunk_size=4, block_v=3, threads=32),
            delta_adapter("opencl", chunk_size=16)]
