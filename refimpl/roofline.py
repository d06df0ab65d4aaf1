"""The roofline: arithmetic intensity, the time bound, and the costs of a GEMM, attention and a
decode step (docs/roofline.md).

    FLOPs       2 per multiply-add
    intensity   I = FLOPs / bytes moved between slow memory (HBM) and the chip
    time bound  T = max(FLOPs / peak, bytes / bandwidth)      no kernel finishes sooner
    ridge       I* = peak / bandwidth: I < I* is memory-bound, I >= I* compute-bound

``H100_SEED`` is the figure pair the roofline examples use: 1000 TFLOP/s and 3 TB/s (decimal),
so I* = 333.3 FLOP/byte.

Costs (``Cost(flops, bytes)``):

* ``gemm_cost(M, N, K)``: 2 M N K FLOPs; (M K + K N + M N) values, each moved once (the least
  traffic any schedule achieves).
* ``attention_cost(Lq, Lk, D, ...)``: 2 Lq Lk (D + Dv) FLOPs per (batch entry, query head) (q.k and
  p.v, no mask skipping); bytes from ``refimpl.io_accounting``: ``schedule="flash"`` is the tiled
  forward with query tiles outer (``forward_io``, K and V re-read once per query tile),
  ``"standard"`` materialises S and P in slow memory (``standard_io``).
* ``decode_step_cost(cfg, context)``: one new token for each of ``batch`` sequences holding
  ``context`` cached tokens. FLOPs: 2 x (active matmul weights) x batch + 4 x layers x H x hd x
  context x batch (q.k and p.v over the cache), as ``refimpl.accounting.compute_per_token`` counts
  them. Bytes: every parameter read once per step (shared by the batch; for an MoE an upper bound,
  the step reads only the experts some token uses) plus the KV cache read once per sequence,
  2 x layers x Hkv x hd x context x batch values.
* ``kv_cache_read_time(cfg, context)``: the KV-cache bytes of one step over the bandwidth, the
  least time a decoded token spends reading its cache.
"""

from __future__ import annotations

import dataclasses

from . import accounting as A
from . import io_accounting as IO
from ._validate import choice, count, finite_result, instance, positive_int, real_number
from ._validate.accounting import flop_count, moved_bytes
from .cache import kv_cache_values

SCHEDULES = ("flash", "standard")


@dataclasses.dataclass(frozen=True)
class Hardware:
    """A chip for the roofline: ``peak_flops`` FLOP/s and ``bandwidth`` bytes/s of slow memory."""

    name: str
    peak_flops: float
    bandwidth: float

    def __post_init__(self):
        instance(self.name, "name", str)
        real_number(self.peak_flops, "peak_flops", minimum=0.0, min_open=True)
        real_number(self.bandwidth, "bandwidth", minimum=0.0, min_open=True)

    @property
    def ridge(self) -> float:
        """I* = peak / bandwidth, FLOP per byte."""
        return self.peak_flops / self.bandwidth


H100_SEED = Hardware("H100 (1000 TFLOP/s, 3 TB/s)", 1000e12, 3e12)


@dataclasses.dataclass(frozen=True)
class Cost:
    """FLOPs (an int) and bytes (a positive real) of one operation; ``intensity`` = flops / bytes."""

    flops: int
    bytes: float

    def __post_init__(self):
        flop_count(self.flops)  # an int, within float64 range (it is divided)
        real_number(self.bytes, "bytes", minimum=0.0, min_open=True)

    @property
    def intensity(self) -> float:
        return finite_result(self.flops / self.bytes, "the intensity", "flops, bytes")


def _cost(cost) -> Cost:
    return instance(cost, "cost", Cost, "refimpl.roofline.Cost")


def _hw(hw) -> Hardware:
    return instance(hw, "hw", Hardware, "refimpl.roofline.Hardware")


def _cfg(cfg) -> A.TransformerConfig:
    return instance(cfg, "cfg", A.TransformerConfig)


def time_bound(cost: Cost, hw: Hardware = H100_SEED) -> float:
    """T = max(flops / peak, bytes / bandwidth), seconds."""
    cost, hw = _cost(cost), _hw(hw)
    return finite_result(max(cost.flops / hw.peak_flops, cost.bytes / hw.bandwidth), "the time", "cost, hw")


def bound(cost: Cost, hw: Hardware = H100_SEED) -> str:
    """"memory" when bytes / bandwidth > flops / peak (I < I*), else "compute"."""
    cost, hw = _cost(cost), _hw(hw)
    return "memory" if cost.bytes / hw.bandwidth > cost.flops / hw.peak_flops else "compute"


def _bytes_per(x, name) -> float:
    return real_number(x, name, minimum=0.0, min_open=True)


def gemm_cost(M: int, N: int, K: int, *, bytes_per_value: float = 2) -> Cost:
    """(M, K) @ (K, N): 2 M N K FLOPs, (M K + K N + M N) x bytes_per_value bytes."""
    M, N, K = positive_int(M, "M"), positive_int(N, "N"), positive_int(K, "K")
    b = _bytes_per(bytes_per_value, "bytes_per_value")
    return Cost(2 * M * N * K, finite_result((M * K + K * N + M * N) * b, "the bytes", "M, N, K, bytes_per_value"))


def attention_cost(Lq: int, Lk: int, D: int, Dv=None, *, batch: int = 1, heads_q: int = 1, heads_kv=None,
                   schedule: str = "flash", block_q: int = 128, block_k: int = 128,
                   bytes_per_value: float = 2) -> Cost:
    """2 Lq Lk (D + Dv) FLOPs per (batch, query head); bytes of ``io_accounting`` for the schedule."""
    choice(schedule, "schedule", SCHEDULES)
    b = _bytes_per(bytes_per_value, "bytes_per_value")
    if schedule == "flash":
        io = IO.forward_io(Lq, Lk, D, Dv, block_q=block_q, block_k=block_k, batch=batch, heads_q=heads_q,
                           heads_kv=heads_kv)
    else:
        io = IO.standard_io(Lq, Lk, D, Dv, batch=batch, heads_q=heads_q, heads_kv=heads_kv)
    Dv = D if Dv is None else Dv
    moved = finite_result((io.elements_read + io.elements_written) * b, "the bytes", "Lq, Lk, D, bytes_per_value")
    return Cost(2 * batch * heads_q * Lq * Lk * (D + Dv), moved_bytes(moved, "Lq, Lk, D, Dv, batch, heads_q"))


def decode_step_cost(cfg: A.TransformerConfig, context: int, *, batch: int = 1, bytes_per_param: float = 2,
                     bytes_per_value: float = 2) -> Cost:
    """One decoded token per sequence: 2 (active matmul weights + 2 layers H hd context) batch FLOPs;
    all parameters + the KV cache (2 layers Hkv hd context batch values) in bytes."""
    cfg = _cfg(cfg)
    context, batch = count(context, "context"), positive_int(batch, "batch")
    p = A.parameter_count(cfg)
    macs = A.compute_per_token(cfg, context_length=context).total
    kv = kv_cache_values(context, cfg.kv_heads, cfg.hd, layers=cfg.n_layers, batch=batch)
    total = p.total * _bytes_per(bytes_per_param, "bytes_per_param") + kv * _bytes_per(bytes_per_value, "bytes_per_value")
    return Cost(2 * macs * batch, finite_result(total, "the bytes", "cfg, context, batch, bytes_per_param, bytes_per_value"))


def kv_cache_read_time(cfg: A.TransformerConfig, context: int, *, batch: int = 1, bytes_per_value: float = 2,
                       hw: Hardware = H100_SEED) -> float:
    """2 layers Hkv hd context batch x bytes_per_value / bandwidth, seconds per decode step."""
    cfg, hw = _cfg(cfg), _hw(hw)
    kv = kv_cache_values(count(context, "context"), cfg.kv_heads, cfg.hd, layers=cfg.n_layers,
                         batch=positive_int(batch, "batch"))
    return finite_result(kv * _bytes_per(bytes_per_value, "bytes_per_value") / hw.bandwidth, "the time",
                         "context, batch, bytes_per_value, hw")


__all__ = ["Hardware", "Cost", "H100_SEED", "time_bound", "bound", "gemm_cost", "attention_cost", "decode_step_cost",
           "kv_cache_read_time"]
