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
from properties.attention_lowp import kernel_bounds
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

def cases_for(kernel: str, include_thorough: bool | None = None):
    """The problems every route runs; the larger ones too under the thorough profile."""
    extra = thorough() if include_thorough is None else include_thorough
    if kernel == "attention":
        return ATTENTION_CASES + (THOROUGH_ATTENTION_CASES if extra else [])
    return ROUTING_CASES + (THOROUGH_ROUTING_CASES if extra else [])


def check(backend, kernel: str, case) -> dict:
    return check_attention(backend, case) if kernel == "attention" else check_routing(backend, case)


def find_rejecting_case(backend, kernel: str):
    """The first case on which ``backend`` (a mutant) fails its check, with the
    message; (None, None) if it passes them all (the checks are too weak)."""
    for case in cases_for(kernel, include_thorough=False):
        try:
            check(backend, kernel, case)
        except AssertionError as e:
            return case.name, str(e).splitlines()[0][:300]
    return None, None
