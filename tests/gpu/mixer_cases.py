"""Fixed problems for the mixer kernels, checked by the conformance suite's own checks.

Shared by every execution route (OpenCL in-process, the CUDA simulator in a child process, a
GPU), like tests/gpu/cases.py. Each problem is run through an adapter of its kind
(``gpu.mixers_adapters``) and judged by ``properties.mixers_scan.check_scan_matches_sequential``
/ ``properties.mixers_linear.check_la_matches_recurrent`` / ``check_delta_matches_recurrent``: the reference is the recurrent
definition in refimpl, the bound the float32 rule of properties.mixers_common (entrywise,
a multiple of the naive float32 recurrence's error plus the float32 floor). Small (the simulator
runs each CUDA thread as a Python thread) but aimed at the edges: partial channel blocks and
value tiles, a partial last chunk, L < chunk, L = 1, chunks of one token, one thread per block,
thread counts that divide nothing, grouped B/C (G < H), D, z and an initial
state, channel and scalar gates, no gate, the delta rule gated and not.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np

from properties import mixers_linear as ML
from properties import mixers_scan as MS


@dataclasses.dataclass(frozen=True)
class ScanProblem:
    name: str
    shape: tuple  # (b, H, G, L, P, N)
    extras: bool = True  # D, z and an initial state
    block: int = 4
    step: float = 1.0  # spread of delta before softplus
    seed: int = 0

    def case(self) -> MS.ScanCase:
        b, H, G, L, P, N = self.shape
        rng = np.random.default_rng(self.seed)
        A = -np.exp(rng.standard_normal((H, P, N)))
        delta = np.log1p(np.exp(rng.standard_normal((b, H, L, P)) * self.step))
        Bm, Cm = rng.standard_normal((2, b, G, L, N))
        u = rng.standard_normal((b, H, L, P))
        D = z = x0 = None
        if self.extras:
            D, z, x0 = rng.standard_normal((H, P)), rng.standard_normal((b, H, L, P)), rng.standard_normal((b, H, P, N))
        return MS.ScanCase(u, delta, A, Bm, Cm, D, z, x0)


@dataclasses.dataclass(frozen=True)
class GLAProblem:
    name: str
    shape: tuple  # (B, H, L, K, V)
    gate: Optional[str]  # None | "scalar" | "channel"
    chunk: int
    block_v: int = 3
    threads: int = 32
    seed: int = 0
    strength: float = 1.0  # log-gates drawn in (-strength, 0]

    def case(self) -> ML.MixerCase:
        B, H, L, K, V = self.shape
        rng = np.random.default_rng(self.seed)
        q, k = rng.standard_normal((2, B, H, L, K))
        v = rng.standard_normal((B, H, L, V))
        g = None
        if self.gate is not None:
            g = -rng.random((B, H, L) if self.gate == "scalar" else (B, H, L, K)) * self.strength
        return ML.MixerCase(q, k, v, g, None, K ** -0.5, self.chunk, self.seed)


@dataclasses.dataclass(frozen=True)
class DeltaProblem:
    name: str
    shape: tuple  # (B, H, L, K, V)
    gated: bool
    chunk: int
    block_v: int = 3
    threads: int = 32
    seed: int = 0

    def case(self) -> ML.MixerCase:
        """Unit keys and queries (the spec's premise), beta in [0, 1), gates in (-1, 0]."""
        B, H, L, K, V = self.shape
        rng = np.random.default_rng(self.seed)
        q, k = rng.standard_normal((2, B, H, L, K))
        q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
        g = -rng.random((B, H, L)) if self.gated else None
        return ML.MixerCase(q, k, rng.standard_normal((B, H, L, V)), g, rng.random((B, H, L)), K ** -0.5,
                            self.chunk, self.seed)


SCAN_PROBLEMS = [
    ScanProblem("grouped_skip_gate_state_partial_block", (1, 4, 2, 9, 5, 3), block=2),
    ScanProblem("large_steps_no_extras", (2, 1, 1, 7, 3, 5), extras=False, block=64, step=3.0, seed=1),
    ScanProblem("single_token_single_state", (1, 2, 1, 1, 2, 1), seed=2),
]
GLA_PROBLEMS = [
    GLAProblem("channel_gate_partial_last_chunk", (1, 2, 11, 5, 7), "channel", 4),
    GLAProblem("scalar_gate_L_lt_chunk", (2, 1, 5, 3, 2), "scalar", 8, seed=1),
    GLAProblem("no_gate_default_chunk_16", (1, 1, 20, 6, 4), None, 16, block_v=16, threads=64, seed=2),
    GLAProblem("chunk_1_one_thread_one_column_strong_decay", (1, 1, 6, 3, 2), "channel", 1, block_v=1, threads=1,
               seed=3, strength=8.0),
    # the K <= 64 variant (K = 33: not a power of two), two value blocks (the second partial), default tiles
    GLAProblem("wide_dims_K33_V17_default_tiles", (1, 1, 37, 33, 17), "channel", 16, block_v=16, threads=128, seed=4),
]

DELTA_PROBLEMS = [
    DeltaProblem("gated_partial_last_chunk", (1, 2, 11, 5, 7), True, 4),
    DeltaProblem("ungated_L_lt_chunk", (2, 1, 5, 3, 2), False, 8, seed=1),
    DeltaProblem("gated_default_chunk_16", (1, 1, 20, 6, 4), True, 16, block_v=16, threads=64, seed=2),
    DeltaProblem("chunk_3_seven_threads", (1, 1, 10, 4, 5), True, 3, block_v=2, threads=7, seed=3),
]
KERNELS = ("scan", "gla", "delta")
# larger problems at the facade's default tiles for REFIMPL_PROFILE=thorough (minutes under the simulator)
THOROUGH_PROBLEMS = {
    "scan": [ScanProblem("thorough_mamba_like_N16", (1, 4, 2, 64, 40, 16), block=64, seed=20)],
    "gla": [GLAProblem("thorough_K64_channel_default_tiles", (1, 2, 70, 64, 40), "channel", 16, block_v=16,
                       threads=128, seed=20)],
    "delta": [DeltaProblem("thorough_K64_gated_default_tiles", (1, 2, 70, 64, 40), True, 16, block_v=16,
                           threads=128, seed=20)],
}


def thorough() -> bool:
    import os

    return os.environ.get("REFIMPL_PROFILE") == "thorough"


def problems_for(kernel: str, include_thorough: bool | None = None):
    """The problems every route runs; the larger ones too under the thorough profile."""
    extra = thorough() if include_thorough is None else include_thorough
    base = {"scan": SCAN_PROBLEMS, "gla": GLA_PROBLEMS, "delta": DELTA_PROBLEMS}[kernel]
    return base + (THOROUGH_PROBLEMS[kernel] if extra else [])


def check(backend, kernel: str, problem) -> dict:
    """Run ``problem`` on ``backend`` through the adapter of its kind; AssertionError on a mismatch
    (a RuntimeError from the facade, an element never written, becomes one too)."""
    from gpu.mixers_adapters import delta_adapter, gla_adapter, scan_adapter

    t0 = time.perf_counter()
    try:
        if kernel == "scan":
            MS.check_scan_matches_sequential(scan_adapter(backend, block=problem.block), problem.case())
        elif kernel == "delta":
            impl = delta_adapter(backend, block_v=problem.block_v, threads=problem.threads)
            ML.check_delta_matches_recurrent(impl, problem.case())
        else:
            impl = gla_adapter(backend, block_v=problem.block_v, threads=problem.threads)
            ML.check_la_matches_recurrent(impl, problem.case())
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{problem.name}: {e}") from e
    return {"seconds": time.perf_counter() - t0}


def find_rejecting_problem(backend, kernel: str):
    """The first problem ``backend`` (a mutant) fails, with the message; (None, None) if none."""
    for problem in problems_for(kernel, include_thorough=False):
        try:
            check(backend, kernel, problem)
        except AssertionError as e:
            return problem.name, str(e).splitlines()[0][:300]
    return None, None
