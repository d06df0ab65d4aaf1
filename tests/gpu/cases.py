"""Fixed problems for the GPU kernels and the checks that compare them with refimpl.

Shared by every execution route (OpenCL in-process, the CUDA simulator in a
subprocess, a real GPU), so each route runs exactly the same problems. This
module imports neither numba nor pyopencl: the simulator's parent process
imports it to learn the case names without importing numba.

Problems are small (the simulator runs every CUDA thread as a Python thread)
but chosen to hit the edges: partial query and key tiles, Lq != Lk both ways,
L = 1, fully masked rows and whole query tiles with no visible key (block
skipping), windows with one or two unbounded sides, GQA and MQA, Dv != D,
head dims that are not a power of two, softcap, extreme scores (the running
max changes between tiles), ties in router logits, k = E, capacity 0, every
token to one expert, padding, token_major order, sigmoid scores.

Tolerances (docs/conventions.md#tolerances): float outputs against the float64
spec within 2x the error of a naive float32 NumPy computation plus a noise
floor of 8 float32 units of roundoff (2^-24) of the output's scale
(``properties.attention_lowp.kernel_bounds`` for attention; the same rule
for router probabilities and gates below); integer outputs exactly equal.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import refimpl
from properties.attention_lowp import backward_kernel_bounds, kernel_bounds
from properties.tolerance import U32, compare_close, compare_lse

# ---------------------------------------------------------------------------
# attention


@dataclasses.dataclass(frozen=True)
class AttentionCase:
    name: str
    shape: tuple  # (B, Hq, Hkv, Lq, Lk, D, Dv)
    options: dict = dataclasses.field(default_factory=dict)  # refimpl.attention keywords
    tiles: tuple = (4, 3)  # (block_q, block_k)
    magnitude: float = 1.0  # of q and k
    seed: int = 0

    def inputs(self):
        B, Hq, Hkv, Lq, Lk, D, Dv = self.shape
        rng = np.random.default_rng(self.seed)
        f = np.float32  # inputs representable in float32: the kernel sees exactly the spec's inputs
        q = (rng.standard_normal((B, Hq, Lq, D)) * self.magnitude).astype(f)
        k = (rng.standard_normal((B, Hkv, Lk, D)) * self.magnitude).astype(f)
        v = rng.standard_normal((B, Hkv, Lk, Dv)).astype(f)
        return q, k, v


ATTENTION_CASES = [
    # (B, Hq, Hkv, Lq, Lk, D, Dv)
    AttentionCase("plain_mqa_partial_tiles", (1, 2, 1, 7, 9, 5, 3)),
    AttentionCase("window_2_1_block_skipping", (1, 1, 1, 10, 10, 4, 4), {"window": (2, 1)}, (3, 3), seed=5),
    AttentionCase("extreme_scores_rescale", (1, 1, 1, 6, 11, 4, 4), magnitude=6.0, seed=1),
    AttentionCase("causal_bottom_right_lq_lt_lk_gqa", (1, 4, 2, 5, 11, 4, 4), {"causal": True}, (2, 4), seed=2),
    AttentionCase("causal_bottom_right_empty_rows", (1, 1, 1, 9, 3, 3, 2), {"causal": True}, (2, 2), seed=3),
    AttentionCase("causal_top_left_lq_lt_lk", (1, 2, 2, 6, 9, 4, 5), {"causal": True, "align": "top_left"}, seed=4),
    AttentionCase("window_left_unbounded_right_top_left", (1, 2, 1, 8, 5, 3, 3), {"window": (1, None), "align": "top_left"}, seed=6),
    AttentionCase("window_left_causal", (1, 1, 1, 12, 12, 4, 2), {"window": (3, None), "causal": True}, (4, 4), seed=7),
    AttentionCase("softcap_and_scale", (2, 1, 1, 6, 6, 4, 4), {"softcap": 2.0, "scale": 0.7}, seed=8, magnitude=2.0),
    AttentionCase("single_query_single_key", (1, 1, 1, 1, 1, 1, 1), seed=9),
    AttentionCase("decode_one_query_causal", (1, 2, 1, 1, 13, 4, 4), {"causal": True}, (1, 4), seed=10),
    AttentionCase("head_dims_not_power_of_two", (1, 1, 1, 5, 5, 33, 17), {}, (2, 2), seed=11),
    AttentionCase("default_tiles_16x16", (1, 1, 1, 20, 18, 8, 8), {"causal": True}, (16, 16), seed=12),
]


def visible_mask(case: AttentionCase) -> np.ndarray:
    """bool (B, Hq, Lq, Lk) from refimpl.masks (the spec's visibility)."""
    B, Hq, Hkv, Lq, Lk, D, Dv = case.shape
    o = case.options
    m = np.ones((Lq, Lk), dtype=bool)
    if o.get("causal"):
        m &= refimpl.masks.Causal(o.get("align", "bottom_right")).materialize(Lq, Lk)
    if o.get("window") is not None:
        left, right = o["window"]
        m &= refimpl.masks.SlidingWindow(left, right, o.get("align", "bottom_right")).materialize(Lq, Lk)
    return np.broadcast_to(m, (B, Hq, Lq, Lk))


def check_attention(backend, case: AttentionCase) -> dict:
    """Run ``case`` on ``backend`` and compare with refimpl.attention; returns figures.

    Raises AssertionError on a mismatch (RuntimeError from the facade, an
    element never written, is turned into AssertionError too).
    """
    import gpu

    q, k, v = case.inputs()
    ref_out, ref_lse = refimpl.attention(q, k, v, **case.options)
    t0 = time.perf_counter()
    try:
        out, lse = gpu.flash_attention(q, k, v, backend=backend, block_q=case.tiles[0], block_k=case.tiles[1],
                                       **case.options)
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    if out.dtype != np.float32 or lse.dtype != np.float32:
        raise AssertionError(f"{case.name}: expected float32 outputs, got {out.dtype}, {lse.dtype}")
    D = q.shape[-1]
    scale = case.options.get("scale") or 1.0 / np.sqrt(D)
    with np.errstate(invalid="ignore"):  # -inf - (-inf) in rows that see no key, masked out
        atol_out, atol_lse = kernel_bounds(q, k, v, ref_out, ref_lse, visible_mask(case), scale, "float32",
                                           case.options.get("softcap"))
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case.name} {case}"
    compare_close("out", out, ref_out, atol_out, ctx)
    compare_lse("lse", lse, ref_lse, atol_lse, ctx)
    fin = np.isfinite(ref_lse)
    err_out = float(np.max(np.abs(out - ref_out)))
    err_lse = float(np.max(np.abs(lse[fin].astype(np.float64) - ref_lse[fin]), initial=0.0))
    return {"seconds": seconds, "err_out": err_out, "bound_out": atol_out, "err_lse": err_lse,
            "bound_lse": atol_lse}


# ---------------------------------------------------------------------------
# attention backward (the same problem type; the cotangent dO is drawn from the case's seed)

BACKWARD_CASES = [
    # (B, Hq, Hkv, Lq, Lk, D, Dv)
    AttentionCase("bwd_plain_mqa_partial_tiles", (1, 2, 1, 7, 9, 5, 3)),
    AttentionCase("bwd_causal_bottom_right_gqa", (1, 4, 2, 5, 11, 4, 4), {"causal": True}, (2, 3), seed=2),
    AttentionCase("bwd_causal_empty_rows_and_keys", (1, 1, 1, 9, 3, 3, 2), {"causal": True}, (2, 3), seed=3),
    AttentionCase("bwd_window_top_left", (1, 2, 2, 8, 6, 3, 3), {"window": (1, 2), "align": "top_left"}, (2, 3), seed=6),
    AttentionCase("bwd_softcap_scale_extreme", (2, 1, 1, 6, 6, 4, 4), {"softcap": 2.0, "scale": 0.7}, seed=8,
                  magnitude=3.0),
    AttentionCase("bwd_extreme_scores", (1, 1, 1, 5, 7, 4, 4), {}, (2, 3), magnitude=6.0, seed=1),
    AttentionCase("bwd_single_query_single_key", (1, 1, 1, 1, 1, 1, 1), seed=9),
]
THOROUGH_BACKWARD_CASES = [
    AttentionCase("thorough_bwd_d64_default_tiles_causal", (1, 2, 1, 40, 37, 64, 48), {"causal": True}, (16, 16),
                  seed=20),
    AttentionCase("thorough_bwd_gqa_window", (2, 4, 2, 17, 29, 16, 16), {"window": (5, 3)}, (4, 8), seed=22),
]


def check_attention_backward(backend, case: AttentionCase) -> dict:
    """Run ``gpu.flash_attention_backward`` on ``case`` and compare (dq, dk, dv) with
    refimpl.attention_backward within properties.attention_lowp.backward_kernel_bounds
    (2x the larger error of the naive float32 eager backward in its two orders + the
    float32 rounding floor); returns figures."""
    import gpu

    q, k, v = case.inputs()
    dout = np.random.default_rng(case.seed + 1000).standard_normal(
        (q.shape[0], q.shape[1], q.shape[2], v.shape[3])).astype(np.float32)
    ref = refimpl.attention_backward(q, k, v, dout, **case.options)
    t0 = time.perf_counter()
    try:
        got = gpu.flash_attention_backward(q, k, v, dout, backend=backend, block_q=case.tiles[0],
                                           block_k=case.tiles[1], **case.options)
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    scale = case.options.get("scale") or 1.0 / np.sqrt(q.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        bounds = backward_kernel_bounds(q, k, v, dout, ref, visible_mask(case), scale, "float32",
                                        case.options.get("softcap"))
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case.name} {case}"
    figures = {"seconds": seconds}
    for name, g, r, atol in zip(("dq", "dk", "dv"), got, ref, bounds):
        if g.dtype != np.float32 or g.shape != r.shape:
            raise AssertionError(f"{case.name}: {name} expected float32 {r.shape}, got {g.dtype} {g.shape}")
        compare_close(name, g, r, atol, ctx)
        figures[f"err_{name}"] = float(np.max(np.abs(g - r), initial=0.0))
        figures[f"bound_{name}"] = float(atol)
    return figures


# ---------------------------------------------------------------------------
# split-KV (flash-decoding): an attention problem and a partition of its keys


@dataclasses.dataclass(frozen=True)
class SplitCase(AttentionCase):
    boundaries: tuple | None = None  # inner key cuts (repeats: empty chunks); else num_splits
    num_splits: int | None = None


SPLIT_CASES = [
    # (B, Hq, Hkv, Lq, Lk, D, Dv)
    SplitCase("split_decode_gqa_empty_chunks", (1, 4, 2, 1, 13, 4, 4), {"causal": True}, (1, 4), boundaries=(0, 6, 13)),
    SplitCase("split_causal_chunks_rows_cannot_see", (1, 1, 1, 9, 9, 3, 2), {"causal": True}, (2, 3), seed=3,
              boundaries=(2, 2, 5)),
    SplitCase("split_extreme_scores_rescale", (1, 2, 1, 5, 11, 4, 4), {}, (2, 3), magnitude=6.0, seed=1,
              boundaries=(4,)),
    SplitCase("split_even_window_partial_tiles", (1, 1, 1, 10, 10, 4, 4), {"window": (2, 1)}, (2, 3), seed=5,
              num_splits=3),
    SplitCase("split_top_left_softcap_scale", (2, 2, 2, 6, 9, 4, 5), {"causal": True, "align": "top_left",
                                                                       "softcap": 2.0, "scale": 0.7}, (2, 3), seed=4,
              magnitude=2.0, boundaries=(1, 7)),
    SplitCase("split_one_key_per_chunk", (1, 1, 1, 2, 4, 3, 3), {}, (2, 3), seed=9, boundaries=(1, 2, 3)),
]
THOROUGH_SPLIT_CASES = [
    SplitCase("thorough_split_decode_d128", (2, 8, 2, 1, 200, 128, 128), {"causal": True}, (1, 16), seed=20,
              num_splits=7),
]


def check_split_kv(backend, case: SplitCase) -> dict:
    """``gpu.split_kv_attention`` on ``case`` against refimpl.attention at the float32 kernel bound
    (the chunks partition the keys: the merged result is attention over all of them)."""
    import gpu

    q, k, v = case.inputs()
    ref_out, ref_lse = refimpl.attention(q, k, v, **case.options)
    t0 = time.perf_counter()
    try:
        out, lse = gpu.split_kv_attention(q, k, v, backend=backend, boundaries=case.boundaries,
                                          num_splits=case.num_splits, block_q=case.tiles[0], block_k=case.tiles[1],
                                          **case.options)
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    scale = case.options.get("scale") or 1.0 / np.sqrt(q.shape[-1])
    with np.errstate(invalid="ignore"):
        atol_out, atol_lse = kernel_bounds(q, k, v, ref_out, ref_lse, visible_mask(case), scale, "float32",
                                           case.options.get("softcap"))
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case.name} {case}"
    compare_close("out", out, ref_out, atol_out, ctx)
    compare_lse("lse", lse, ref_lse, atol_lse, ctx)
    fin = np.isfinite(ref_lse)
    return {"seconds": seconds, "err_out": float(np.max(np.abs(out - ref_out))), "bound_out": atol_out,
            "err_lse": float(np.max(np.abs(lse[fin].astype(np.float64) - ref_lse[fin]), initial=0.0)),
            "bound_lse": atol_lse}


# ---------------------------------------------------------------------------
# paged-KV decode: sequences of their own lengths in a shared block pool


@dataclasses.dataclass(frozen=True)
class PagedCase:
    name: str
    lens: tuple  # each sequence's cached tokens (the n queries are its last n)
    n: int
    heads: tuple  # (Hq, Hkv)
    dims: tuple  # (D, Dv)
    block_size: int
    window: tuple | None = None
    softcap: float | None = None
    tiles: tuple = (2, 3)
    seed: int = 0

    def inputs(self):
        """q (B, Hq, n, D), the pool and tables of a refimpl.kv_cache.PagedCache the sequences were
        appended to in interleaved pieces (so block tables are not the identity), and per-sequence
        (K_b, V_b) as gathered by refimpl."""
        from refimpl.kv_cache import PagedCache

        (Hq, Hkv), (D, Dv), B = self.heads, self.dims, len(self.lens)
        rng = np.random.default_rng(self.seed)
        f = np.float32
        ks = [rng.standard_normal((Hkv, L, D)).astype(f) for L in self.lens]
        vs = [rng.standard_normal((Hkv, L, Dv)).astype(f) for L in self.lens]
        q = rng.standard_normal((B, Hq, self.n, D)).astype(f)
        blocks = sum(-(-L // self.block_size) for L in self.lens) + 3
        cache = PagedCache(Hkv, D, Dv, batch=B, block_size=self.block_size, num_blocks=blocks)
        cache._allocate()  # block 0 held by nobody: no table starts at 0
        written = [0] * B
        piece = max(1, self.block_size - 1)
        while any(w < L for w, L in zip(written, self.lens)):
            for b, L in enumerate(self.lens):
                s, e = written[b], min(written[b] + piece, L)
                if e > s:
                    cache.append(b, ks[b][:, s:e], vs[b][:, s:e])
                    written[b] = e
        MB = max(len(t) for t in cache.tables) + 1
        table = np.full((B, MB), 0, dtype=np.int64)  # entries past a sequence's blocks: never read
        for b, t in enumerate(cache.tables):
            table[b, :len(t)] = t
        gathered = [cache.gather(b) for b in range(B)]
        return q, cache.k_pool, cache.v_pool, table, np.array(self.lens), gathered


PAGED_CASES = [
    PagedCase("paged_decode_ragged_gqa", (9, 4, 13), 1, (4, 2), (4, 4), 4, tiles=(1, 4)),
    PagedCase("paged_chunk_of_3_partial_blocks", (7, 11), 3, (2, 1), (5, 3), 3, seed=1),
    PagedCase("paged_window_block_size_1", (6, 8), 2, (2, 2), (4, 4), 1, window=(2, 0), seed=2),
    PagedCase("paged_softcap_prefill_whole", (5, 10), 5, (1, 1), (4, 4), 4, softcap=2.0, seed=3),
    PagedCase("paged_block_larger_than_sequence", (3,), 1, (2, 1), (3, 2), 8, tiles=(1, 4), seed=4),
]
THOROUGH_PAGED_CASES = [
    PagedCase("thorough_paged_d128_long", (150, 61, 97), 1, (8, 2), (128, 128), 16, tiles=(1, 16), seed=20),
]


def check_paged(backend, case: PagedCase) -> dict:
    """``gpu.paged_attention`` on ``case``: each sequence's rows against refimpl.attention(q_b,
    K_b, V_b, causal=True, window) over refimpl's gather of its blocks, at the float32 kernel bound."""
    import gpu

    q, k_pool, v_pool, table, lens, gathered = case.inputs()
    t0 = time.perf_counter()
    try:
        out, lse = gpu.paged_attention(q, k_pool, v_pool, table, lens, backend=backend, window=case.window,
                                       softcap=case.softcap, block_q=case.tiles[0], block_k=case.tiles[1])
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case}"
    figures = {"seconds": seconds, "err_out": 0.0, "bound_out": np.inf}
    for b, (K, V) in enumerate(gathered):
        qb, Kb, Vb = q[b:b + 1], K[None], V[None]
        ref_out, ref_lse = refimpl.attention(qb, Kb, Vb, causal=True, window=case.window, softcap=case.softcap)
        Lq, Lk = qb.shape[2], Kb.shape[2]
        vis = refimpl.masks.Causal("bottom_right").materialize(Lq, Lk)
        if case.window is not None:
            vis &= refimpl.masks.SlidingWindow(case.window[0], case.window[1], "bottom_right").materialize(Lq, Lk)
        vis = np.broadcast_to(vis, (1, q.shape[1], Lq, Lk))
        with np.errstate(invalid="ignore"):
            atol_out, atol_lse = kernel_bounds(qb, Kb, Vb, ref_out, ref_lse, vis, 1.0 / np.sqrt(q.shape[-1]),
                                               "float32", case.softcap)
        compare_close(f"out[{b}]", out[b:b + 1], ref_out, atol_out, ctx)
        compare_lse(f"lse[{b}]", lse[b:b + 1], ref_lse, atol_lse, ctx)
        figures["err_out"] = max(figures["err_out"], float(np.max(np.abs(out[b:b + 1] - ref_out))))
        figures["bound_out"] = min(figures["bound_out"], atol_out)
    return figures


# ---------------------------------------------------------------------------
# the block: RMSNorm / LayerNorm and RoPE, judged by the conformance checks themselves
# (properties.norms / properties.rope: 2x the naive float32 error plus the layer floor)

@dataclasses.dataclass(frozen=True)
class NormGpuCase:
    name: str
    op: str  # "rms" | "layer"
    shape: tuple
    convention: str = "llama"
    shift: float = 0.0  # mean / spread of the rows
    scale: float = 1.0
    eps: float = 1e-6
    bias: bool = True
    threads: int = 4
    seed: int = 0

    def case(self):
        from properties.norms import NormCase
        from properties.precision import round_inputs

        rng = np.random.default_rng(self.seed)
        x = (rng.standard_normal(self.shape) + self.shift) * self.scale
        w = rng.standard_normal(self.shape[-1])
        b = rng.standard_normal(self.shape[-1]) if self.bias else None
        x, w, b, dy = round_inputs("float32", x, w, b, rng.standard_normal(self.shape))
        return NormCase(x, w, b, dy, self.eps, self.seed)


NORM_CASES = [
    NormGpuCase("rms_llama_partial_block", "rms", (3, 33)),
    NormGpuCase("rms_gemma_offset", "rms", (2, 9), "gemma", seed=1),
    NormGpuCase("rms_eps_outside_small_rows", "rms", (2, 8), "zhang_sennrich", scale=1e-3, eps=1e-2, seed=2),
    NormGpuCase("rms_width_one", "rms", (4, 1), seed=3),
    NormGpuCase("layer_shifted_1e4", "layer", (3, 33), shift=1e4, seed=4),
    NormGpuCase("layer_no_bias_wide_block", "layer", (2, 5), bias=False, threads=16, seed=5),
]


def check_norm(backend, case: NormGpuCase) -> dict:
    """The conformance check of ``case.op`` (properties.norms) on the kernel at ``case.threads``."""
    from gpu.adapters import norm_adapter
    from properties import norms as PN

    impl = norm_adapter(backend, threads=case.threads, convention=case.convention)
    t0 = time.perf_counter()
    try:
        (PN.check_rms_norm if case.op == "rms" else PN.check_layer_norm)(impl, case.case())
    except RuntimeError as e:
        raise AssertionError(f"{case.name}: {e}") from e
    return {"seconds": time.perf_counter() - t0}


@dataclasses.dataclass(frozen=True)
class RopeGpuCase:
    name: str
    shape: tuple  # (B, H, L, D)
    layout: str = "half"
    rotary_dim: int | None = None
    scaling: dict | None = None
    batch_positions: bool = False  # positions (B, L) instead of (L,)
    max_position: int = 4096
    threads: int = 4
    seed: int = 0

    def case(self):
        from properties.rope import RopeCase

        rng = np.random.default_rng(self.seed)
        B, H, L, D = self.shape
        x = rng.standard_normal(self.shape).astype(np.float32).astype(np.float64)  # representable in float32
        pos = rng.integers(0, self.max_position, (B, L) if self.batch_positions else (L,))
        kw = {"layout": self.layout, "rotary_dim": self.rotary_dim, "scaling": self.scaling}
        return RopeCase(x, pos, kw, self.seed)


ROPE_CASES = [
    RopeGpuCase("rope_half_partial_block", (2, 3, 5, 8)),
    RopeGpuCase("rope_interleaved_partial_rotary_batch_positions", (2, 1, 4, 10), "interleaved", 6,
                batch_positions=True, seed=1),
    RopeGpuCase("rope_yarn_attention_factor", (1, 2, 3, 8), "half", None,
                {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, seed=2),
    RopeGpuCase("rope_llama3_interleaved_far_positions", (1, 1, 4, 16), "interleaved", None,
                {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 64}, max_position=2**20, seed=3),
]


def check_rope(backend, case: RopeGpuCase) -> dict:
    """properties.rope's check_matches_reference (and the pass-through / norm check) on the kernel."""
    from gpu.adapters import rope_adapter
    from properties import rope as PR

    impl = rope_adapter(backend, threads=case.threads)
    t0 = time.perf_counter()
    try:
        c = case.case()
        PR.check_matches_reference(impl, c)
        PR.check_norm_preserving(impl, c)
    except RuntimeError as e:
        raise AssertionError(f"{case.name}: {e}") from e
    return {"seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------
# MoE experts: permutation (exact), grouped GEMMs and combine (float32 bound)


@dataclasses.dataclass(frozen=True)
class MoECase:
    name: str
    T: int
    E: int
    k: int
    D: int
    H: int
    expert: str = "ffn_gelu"  # ffn_relu | ffn_gelu | ffn_silu | swiglu
    route_options: dict = dataclasses.field(default_factory=dict)
    layout: str = "sparse"
    threads: int = 4
    block: tuple = (4, 3, 2)  # (BM, BN, BK) of the grouped GEMM
    seed: int = 0

    def inputs(self):
        from refimpl.moe import random_experts, route

        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.T, self.D)).astype(np.float32).astype(np.float64)
        z = rng.integers(-64, 64, size=(self.T, self.E)) / 16.0
        opts = dict(self.route_options)
        if opts.get("padding_mask") == "random":
            opts["padding_mask"] = rng.random(self.T) < 0.7
        r = route(z, self.k, **opts)
        kind, _, act = self.expert.partition("_")
        experts = random_experts(self.E, self.D, self.H, kind=kind, act=act or "relu", bias=kind == "ffn",
                                 seed=self.seed + 1)
        f32 = lambda a: None if a is None else a.astype(np.float32).astype(np.float64)  # noqa: E731
        experts = [type(ex)(**{f.name: (f32(getattr(ex, f.name)) if isinstance(getattr(ex, f.name), np.ndarray)
                                         else getattr(ex, f.name)) for f in dataclasses.fields(ex)})
                   for ex in experts]  # weights representable in float32
        return x, r, experts


MOE_CASES = [
    MoECase("moe_gelu_capacity_drops", 13, 4, 2, 5, 7, route_options={"capacity": 3, "normalize": "after_drop"}),
    MoECase("moe_swiglu_dropless_k3", 9, 3, 3, 4, 6, "swiglu", seed=1),
    MoECase("moe_silu_gshard_dense", 11, 5, 2, 3, 17, "ffn_silu", {"capacity": 2, "normalize": "after_drop"},
            "dense_tensors", seed=2),
    MoECase("moe_relu_padding_token_major", 10, 3, 2, 6, 5, "ffn_relu",
            {"capacity": 4, "drop_order": "token_major", "padding_mask": "random", "normalize": "before_drop"}, seed=3),
    MoECase("moe_wide_rows_default_block", 7, 2, 1, 33, 20, "ffn_gelu", threads=128, block=(16, 16, 16), seed=4),
    MoECase("moe_one_expert_all_dropped_but_two", 6, 3, 1, 3, 4, "ffn_relu", {"capacity": 2}, seed=5),
]


def _moe_bound(x, r, experts, spec) -> float:
    """2x the naive float32 error (inputs and each expert output rounded, gates and their products
    rounded, properties.moe_naive) plus the float32 output floor over k + D + H accumulated terms
    (the combine, then the two GEMMs)."""
    from properties.moe_naive import NaiveOps, expert_outputs
    from properties.precision import output_floor, precision_bound

    def naive():
        o = NaiveOps("float32")
        F = expert_outputs(o, x, r, experts)
        g = o.r(np.where(r.kept, r.gates, 0.0))
        return o.sum(o.r(g[:, :, None] * F), axis=1)

    H = experts[0].W1.shape[1] if hasattr(experts[0], "W1") else experts[0].Wg.shape[1]
    mag = max(float(np.max(np.abs(spec), initial=0.0)), 1e-300)
    n = r.indices.shape[1] + x.shape[1] + H
    return float(np.max(precision_bound("float32", 8 * n * 2.0**-53 * mag, naive, spec, output_floor("float32", mag, n))))


def check_moe(backend, case: MoECase) -> dict:
    """gpu.moe_permute against refimpl.moe.sort_by_expert (sparse) or the GShard slots (dense),
    integers exactly and x_perm bit for bit; gpu.moe_experts against refimpl.moe.apply_experts
    within _moe_bound."""
    import gpu
    from refimpl.moe import apply_experts
    from refimpl.moe.dispatch import buffer_capacity, sort_by_expert

    x, r, experts = case.inputs()
    t0 = time.perf_counter()
    try:
        perm = gpu.moe_permute(x, r, backend=backend, layout=case.layout, threads=case.threads)
        y = gpu.moe_experts(x, r, experts, backend=backend, layout=case.layout, threads=case.threads,
                            block=case.block)
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case}"
    sa = sort_by_expert(r)
    if case.layout == "sparse":
        want_token, want_offsets = sa.token, sa.offsets
    else:
        C = buffer_capacity(r)
        want_token = np.full(r.num_experts * C, -1)
        t, j = np.nonzero(r.kept)
        want_token[r.indices[t, j] * C + r.position[t, j]] = t
        want_offsets = np.arange(r.num_experts + 1) * C
    for name, got, want in (("token", perm.token, want_token), ("offsets", perm.offsets, want_offsets),
                            ("counts", perm.counts, np.diff(sa.offsets))):
        if got.shape != want.shape or not np.array_equal(got, want):
            raise AssertionError(f"permutation {name}: got {got.tolist()}, expected {want.tolist()}; {ctx}")
    want_x = np.where((want_token >= 0)[:, None], x.astype(np.float32)[np.maximum(want_token, 0)], 0.0)
    if not np.array_equal(perm.x_perm, want_x):
        raise AssertionError(f"x_perm: rows are not the tokens' rows of x; {ctx}")
    ref = apply_experts(x, r, experts, layout=case.layout)
    bound = _moe_bound(x, r, experts, ref)
    compare_close("y", y, ref, bound, ctx)
    return {"seconds": seconds, "err_y": float(np.max(np.abs(y - ref))), "bound_y": bound}


# ---------------------------------------------------------------------------
# routing


@dataclasses.dataclass(frozen=True)
class RoutingCase:
    name: str
    T: int
    E: int
    k: int
    options: dict = dataclasses.field(default_factory=dict)  # refimpl.moe.route keywords
    blocks: tuple = (8, 4)  # (token_block, scan_block)
    logits: str = "grid"  # "grid" | "ties" | "one_expert"
    seed: int = 0

    def inputs(self) -> np.ndarray:
        """Logits on a grid of multiples of 1/16 in [-4, 4): exactly representable in
        float32, and distinct values differ by at least 1/16, so float32 and float64
        order them alike (the premise of exact integer equality). "ties" draws from
        only 3 values (many exact ties); "one_expert" makes expert 0 everyone's first
        choice (capacity overflow)."""
        rng = np.random.default_rng(self.seed)
        if self.logits == "ties":
            z = rng.integers(-1, 2, size=(self.T, self.E)) / 2.0
        else:
            z = rng.integers(-64, 64, size=(self.T, self.E)) / 16.0
        if self.logits == "one_expert":
            z[:, 0] = 6.0
        opts = dict(self.options)
        if opts.get("padding_mask") == "random":
            opts["padding_mask"] = rng.random(self.T) < 0.7
        return z, opts


ROUTING_CASES = [
    RoutingCase("top2_dropless", 13, 6, 2),
    RoutingCase("top2_capacity_after_drop", 29, 6, 2, {"capacity": 6, "normalize": "after_drop"}, seed=1),
    RoutingCase("top3_capacity_before_drop", 23, 5, 3, {"capacity": 9, "normalize": "before_drop"}, (16, 5), seed=2),
    RoutingCase("ties_to_lower_id", 17, 6, 3, {"capacity": 5, "normalize": "after_drop"}, (8, 3), "ties", seed=3),
    RoutingCase("one_expert_overflow", 21, 4, 2, {"capacity": 4, "normalize": "after_drop"}, (8, 8), "one_expert", seed=4),
    RoutingCase("k_equals_E", 9, 4, 4, {"capacity": 3, "normalize": "before_drop"}, (4, 4), seed=5),
    RoutingCase("capacity_zero", 7, 4, 1, {"capacity": 0}, (4, 2), seed=6),
    RoutingCase("capacity_rule_factor", 30, 6, 2, {"capacity_factor": 1.0, "normalize": "after_drop"}, (8, 4), seed=7),
    RoutingCase("token_major_padding", 19, 5, 2, {"capacity": 5, "drop_order": "token_major", "normalize": "after_drop",
                                               "padding_mask": "random"}, (8, 4), seed=8),
    RoutingCase("sigmoid_route_scale", 15, 6, 2, {"score": "sigmoid", "normalize": "after_drop", "capacity": 4,
                                               "route_scale": 2.5}, (8, 4), seed=9),
]

# larger problems for REFIMPL_PROFILE=thorough (minutes under the simulator)
THOROUGH_ATTENTION_CASES = [
    AttentionCase("thorough_d64_default_tiles_causal", (1, 2, 1, 40, 37, 64, 64), {"causal": True}, (16, 16), seed=20),
    AttentionCase("thorough_d128_window", (1, 1, 1, 33, 33, 128, 96), {"window": (7, 3)}, (8, 8), seed=21),
    AttentionCase("thorough_gqa_top_left", (2, 4, 2, 17, 29, 16, 16), {"causal": True, "align": "top_left"}, (4, 8), seed=22),
]
THOROUGH_ROUTING_CASES = [
    RoutingCase("thorough_top2_many_tokens", 300, 16, 2, {"capacity_factor": 1.25, "normalize": "after_drop"}, (64, 32), seed=20),
    RoutingCase("thorough_top4_ties", 200, 8, 4, {"capacity": 60, "normalize": "before_drop"}, (32, 16), "ties", seed=21),
]


def thorough() -> bool:
    import os

    return os.environ.get("REFIMPL_PROFILE") == "thorough"


INTEGER_FIELDS = ("indices", "kept", "position", "counts", "token_mask")


def _naive_float32_route_floats(z: np.ndarray, ref) -> tuple:
    """probs and gates computed naively in float32 NumPy from the spec's integer
    decisions (indices, kept): the baseline a float32 kernel is held to."""
    f = np.float32
    z32 = z.astype(f)
    if ref.options.score == "softmax":
        e = np.exp(z32 - z32.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    else:
        p = f(1) / (f(1) + np.exp(-z32))
    raw = np.take_along_axis(p, ref.indices, axis=-1)
    kept = ref.kept
    if ref.options.normalize == "none":
        g = np.where(kept, raw, f(0))
    else:
        num = raw if ref.options.normalize == "before_drop" else np.where(kept, raw, f(0))
        den = num.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(kept & (den > 0), num / np.where(den > 0, den, f(1)), f(0))
    g = g * f(ref.options.route_scale)
    return p.astype(np.float64), g.astype(np.float64)


def check_routing(backend, case: RoutingCase) -> dict:
    """Run ``case`` on ``backend``; integer fields must equal refimpl.moe.route's,
    probs and gates within 2x the naive float32 error + 8 u32 of their scale."""
    import gpu
    from refimpl.moe import route

    z, opts = case.inputs()
    ref = route(z, case.k, **opts)
    t0 = time.perf_counter()
    try:
        got = gpu.route(z, case.k, backend=backend, token_block=case.blocks[0], scan_block=case.blocks[1], **opts)
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailable":
            raise
        raise AssertionError(f"{case.name}: {e}") from e
    seconds = time.perf_counter() - t0
    ctx = f"backend {getattr(backend, 'name', backend)}, case {case}"
    for field in INTEGER_FIELDS:
        a, b = getattr(got, field), getattr(ref, field)
        if a.shape != b.shape or not np.array_equal(a, b):
            diff = np.argwhere(a != b)[:3].tolist() if a.shape == b.shape else "shape"
            raise AssertionError(f"{field}: differs from refimpl at {diff}: got\n{a}\nexpected\n{b}\n{ctx}")
    if got.capacity != ref.capacity:
        raise AssertionError(f"capacity {got.capacity} != refimpl's {ref.capacity}; {ctx}")
    p32, g32 = _naive_float32_route_floats(z, ref)
    figures = {"seconds": seconds}
    for field, naive in (("probs", p32), ("gates", g32)):
        r = getattr(ref, field)
        scale = max(1.0, float(np.max(np.abs(r), initial=0.0)))
        bound = 2.0 * float(np.max(np.abs(naive - r), initial=0.0)) + 8 * U32 * scale
        compare_close(field, getattr(got, field), r, bound, ctx)
        figures[f"err_{field}"] = float(np.max(np.abs(getattr(got, field) - r), initial=0.0))
        figures[f"bound_{field}"] = bound
    return figures


# ---------------------------------------------------------------------------
# meta-tests: every mutant must be rejected by at least one case

#: every kernel the routes run, in the order they were added
KERNELS = ("attention", "routing", "attention_backward", "split_kv", "paged", "norm", "rope", "moe")


def cases_for(kernel: str, include_thorough: bool | None = None):
    """The problems every route runs; the larger ones too under the thorough profile."""
    extra = thorough() if include_thorough is None else include_thorough
    base, more = {"attention": (ATTENTION_CASES, THOROUGH_ATTENTION_CASES),
                  "routing": (ROUTING_CASES, THOROUGH_ROUTING_CASES),
                  "attention_backward": (BACKWARD_CASES, THOROUGH_BACKWARD_CASES),
                  "split_kv": (SPLIT_CASES, THOROUGH_SPLIT_CASES),
                  "paged": (PAGED_CASES, THOROUGH_PAGED_CASES),
                  "norm": (NORM_CASES, []), "rope": (ROPE_CASES, []), "moe": (MOE_CASES, [])}[kernel]
    return base + (more if extra else [])


def check(backend, kernel: str, case) -> dict:
    return {"attention": check_attention, "routing": check_routing,
            "attention_backward": check_attention_backward, "split_kv": check_split_kv,
            "paged": check_paged, "norm": check_norm, "rope": check_rope, "moe": check_moe}[kernel](backend, case)


#: a case that rejects each mutant, tried first: the cheapest of those that reject it under the
#: simulator (the search then skips the cases a mutant passes before it). Only an order: a mutant
#: this case no longer rejects is still searched through every case, and passing them all still fails
#: (tests/gpu/test_opencl.py checks the names).
REJECTED_FIRST_BY = {
    # attention
    "partial_tile_dropped": "single_query_single_key", "key_bound_off_by_one": "single_query_single_key",
    "missing_rescale": "window_left_causal", "head_map_mod": "causal_bottom_right_lq_lt_lk_gqa",
    "window_left_off_by_one": "window_left_causal",
    # routing
    "ties_to_higher_id": "ties_to_lower_id", "token_major_for_k_major": "k_equals_E",
    "renormalize_before_drop": "ties_to_lower_id", "scan_inclusive": "k_equals_E", "capacity_off_by_one": "capacity_zero",
    # backward, split-KV, paged
    "backward_no_D": "bwd_single_query_single_key", "backward_group_dropped": "bwd_plain_mqa_partial_tiles",
    "split_merge_no_rescale": "split_one_key_per_chunk", "block_table_off_by_one": "paged_window_block_size_1",
    # norm, rope, MoE
    "norm_weight_offset_ignored": "rms_gemma_offset",
    "rope_interleaved_as_half": "rope_interleaved_partial_rotary_batch_positions",
    "moe_bins_count_dropped": "moe_one_expert_all_dropped_but_two",
    "moe_gemm_partial_k_dropped": "moe_one_expert_all_dropped_but_two",
    "moe_combine_double_count": "moe_relu_padding_token_major",
}

#: cases the simulator runs under the thorough profile only: the largest repetition of a kernel whose
#: other cases cover it (the MoE kernels at the default 16 x 16 x 16 tiles and 128 threads: 4 s under
#: the simulator; PoCL still runs it by default, and PTX/NVRTC compile those tiles)
SIMULATOR_THOROUGH_ONLY = ("moe_wide_rows_default_block",)


def simulator_cases_for(kernel: str):
    """The cases the simulator child runs: cases_for(kernel) less SIMULATOR_THOROUGH_ONLY outside thorough."""
    return [c for c in cases_for(kernel) if thorough() or c.name not in SIMULATOR_THOROUGH_ONLY]


def find_rejecting_case(backend, kernel: str, mutant: str | None = None):
    """The first case on which ``backend`` (a mutant) fails its check, with the
    message; (None, None) if it passes them all (the checks are too weak).
    ``mutant``: its name, whose REJECTED_FIRST_BY case is tried first."""
    cases = cases_for(kernel, include_thorough=False)
    first = REJECTED_FIRST_BY.get(mutant)
    cases = sorted(cases, key=lambda c: c.name != first)  # stable: the rest keep their order
    for case in cases:
        try:
            check(backend, kernel, case)
        except AssertionError as e:
            return case.name, str(e).splitlines()[0][:300]
    return None, None
