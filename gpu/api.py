"""The facade: NumPy arrays in, NumPy arrays out, one of three backends.

    gpu.flash_attention(q, k, v, *, backend, causal=False, align="bottom_right",
                        window=None, scale=None, softcap=None,
                        block_q=None, block_k=None) -> (out, lse)
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
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from refimpl.masks import offset as alignment_offset
from refimpl.sdpa import check_qkv_shapes, check_real_4d, check_window  # the spec's own argument rules

from refimpl import validation as V

from .constants import INT_UNWRITTEN  # noqa: F401 (part of this module's API)
from .errors import UnsupportedOption

BACKENDS = ("numba", "cupy", "opencl")

#: largest head dims the kernels are built for (shared-array shapes)
MAX_HEAD_DIM = 128
#: head-dim variants compiled on demand: the smallest that holds D is used
HEAD_DIM_VARIANTS = (16, 32, 64, 128)
#: default tile sizes (see gpu.attention_numba for the shared-memory budget)
DEFAULT_BLOCK_Q = 16
DEFAULT_BLOCK_K = 16
MAX_THREADS_PER_BLOCK = 1024
MAX_STATIC_SHARED_BYTES = 48 * 1024
#: sentinel an integer output holds until the kernel writes it: INT_UNWRITTEN (gpu.constants)
_INT32_LIMIT = 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


# ---------------------------------------------------------------------------
# attention


@dataclasses.dataclass(frozen=True)
class AttentionLaunch:
    """Everything a backend needs besides the arrays: tile sizes (compile-time
    constants) and the scalars of the visibility band ``i + offset - left <= j <=
    i + offset + right`` (``refimpl.masks``' causal/window with alignment)."""

    block_q: int
    block_k: int
    d_max: int
    dv_max: int
    scale: float
    softcap: float  # 0.0 = off
    offset: int
    left: int
    right: int
    group: int

    @property
    def threads(self) -> int:
        return self.block_q * self.block_k

    @property
    def shared_bytes(self) -> int:
        return shared_memory_bytes(self.block_q, self.block_k, self.d_max, self.dv_max)


def shared_memory_bytes(block_q: int, block_k: int, d_max: int, dv_max: int) -> int:
    """Static shared memory of the attention kernel: Q, K, V tiles and S, P (float32)."""
    return 4 * (block_q * d_max + block_k * d_max + block_k * dv_max + 2 * block_q * block_k)


def _head_dim_variant(d: int, name: str) -> int:
    for v in HEAD_DIM_VARIANTS:
        if d <= v:
            return v
    raise UnsupportedOption(f"{name}={d}: the kernels support head dims up to {MAX_HEAD_DIM}")


def _float_4d(x, name: str) -> np.ndarray:
    arr = check_real_4d(x, name)
    if arr.size > _INT32_LIMIT:
        raise UnsupportedOption(f"{name}: {arr.size} elements; the kernels index with 32-bit ints")
    with np.errstate(over="ignore"):  # reported below as a ValueError
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if out is arr:  # never hand the caller's own buffer to a kernel
        out = out.copy()
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: overflows float32")
    return out


def _positive_float32(x, name: str) -> float:
    """A positive number as the float32 kernels will use it: validated after the cast, so a
    value that float32 turns into 0, a subnormal or inf is an error, never silently another value."""
    v = V.positive_float(x, name)
    v32 = float(np.float32(v)) if v <= _F32_MAX else math.inf
    if not _F32_TINY <= v32 <= _F32_MAX:
        raise ValueError(f"{name}: expected a value representable as a normal float32 "
                         f"[{_F32_TINY:.3g}, {_F32_MAX:.3g}] (the kernels compute in float32), got {x}")
    return v32


def _tile(x, name: str, default: int) -> int:
    if x is None:
        return default
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)) or x < 1:
        raise ValueError(f"{name}: expected a positive int, got {x!r}")
    return int(x)


def prepare_attention(q, k, v, *, mask=None, causal=False, align="bottom_right", window=None,
                      scale=None, softcap=None, bias=None, dropout_mask=None, dropout_p=0.0,
                      block_q=None, block_k=None):
    """Validate the arguments of ``flash_attention``; returns (q, k, v, AttentionLaunch)
    with float32 C-contiguous copies of the inputs."""
    if mask is not None:
        raise UnsupportedOption(
            "mask: the GPU kernels implement causal/align/window only, not arbitrary mask "
            "arrays or predicates; use refimpl.attention for those")
    if bias is not None:
        raise UnsupportedOption("bias: additive score bias (e.g. ALiBi) is not implemented by the GPU kernels")
    if dropout_mask is not None or (not isinstance(dropout_p, bool) and isinstance(dropout_p, numbers.Real)
                                    and dropout_p != 0.0):
        raise UnsupportedOption("dropout_mask/dropout_p: dropout is not implemented by the GPU kernels")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    q, k, v = _float_4d(q, "q"), _float_4d(k, "k"), _float_4d(v, "v")
    B, Hq, Hkv, Lq, Lk, D, Dv = check_qkv_shapes(q, k, v)  # the spec's own shape rules
    if B * Hq > 65535:
        raise UnsupportedOption(f"B * Hq = {B * Hq}: the grid's y dimension holds at most 65535")
    win = check_window(window)
    o = alignment_offset(Lq, Lk, align)
    # an unbounded side becomes a bound wider than any sequence (int32-safe)
    unbounded = Lq + Lk
    left = unbounded if win is None or win[0] is None else min(win[0], unbounded)
    right = unbounded if win is None or win[1] is None else min(win[1], unbounded)
    if causal:
        right = min(right, 0)  # causal == window (None, 0), combined by AND
    scale_ = float(np.float32(1.0 / math.sqrt(D))) if scale is None else _positive_float32(scale, "scale")
    softcap_ = 0.0 if softcap is None else _positive_float32(softcap, "softcap")
    # float32 scores: the bound of refimpl's overflow contract at float32's range; a softcap does
    # not help here, as the kernels form the raw float32 score before capping it
    V.check_score_range(q.astype(np.float64), k.astype(np.float64), scale_, None, None, limit=_F32_MAX / 2,
                        what="float32 (the kernels' precision)")
    bq = _tile(block_q, "block_q", DEFAULT_BLOCK_Q)
    bk = _tile(block_k, "block_k", DEFAULT_BLOCK_K)
    p = AttentionLaunch(bq, bk, _head_dim_variant(D, "D"), _head_dim_variant(Dv, "Dv"),
                        scale_, softcap_, o, left, right, Hq // Hkv)
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block_q * block_k = {p.threads} threads: at most {MAX_THREADS_PER_BLOCK} per block")
    if p.shared_bytes > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block_q={bq}, block_k={bk} with head dims ({p.d_max}, {p.dv_max}) need "
                         f"{p.shared_bytes} B of shared memory, more than {MAX_STATIC_SHARED_BYTES}")
    return q, k, v, p


def flash_attention(q, k, v, *, backend, mask=None, causal=False, align="bottom_right", window=None,
                    scale=None, softcap=None, bias=None, dropout_mask=None, dropout_p=0.0,
                    block_q=None, block_k=None):
    """FlashAttention-2 forward on a GPU backend; the semantics of ``refimpl.attention``.

    q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv), D and Dv <= 128; any
    float dtype in, computed in float32. Supported keywords: ``causal``, ``align``
    ("bottom_right" | "top_left"), ``window`` ((left, right), None = unbounded
    side), ``scale`` (default 1/sqrt(D)), ``softcap``; ``block_q``/``block_k``
    choose the tile (default 16 x 16). ``mask``, ``bias`` and dropout raise
    UnsupportedOption. Returns out (B, Hq, Lq, Dv) and lse (B, Hq, Lq), float32,
    natural-log LSE; a row that sees no key gives out 0 and lse -inf.
    """
    from .backends import get_backend

    be = get_backend(backend)
    q, k, v, p = prepare_attention(q, k, v, mask=mask, causal=causal, align=align, window=window,
                                   scale=scale, softcap=softcap, bias=bias, dropout_mask=dropout_mask,
                                   dropout_p=dropout_p, block_q=block_q, block_k=block_k)
    B, Hq, Lq, _ = q.shape
    if min(B, Hq, Lq) == 0 or k.shape[2] == 0:  # nothing to launch: no rows, or rows that see no key
        return (np.zeros((B, Hq, Lq, v.shape[3]), dtype=np.float32),
                np.full((B, Hq, Lq), -np.inf, dtype=np.float32))
    out = np.full((B, Hq, Lq, v.shape[3]), np.nan, dtype=np.float32)
    lse = np.full((B, Hq, Lq), np.nan, dtype=np.float32)
    out, lse = be.flash_attention(q, k, v, out, lse, p)
    _check_written(out=out, lse=lse)
    return out, lse


# ---------------------------------------------------------------------------
# routing

#: RouteOptions values the kernels implement
SUPPORTED_SCORES = ("softmax", "sigmoid")
SUPPORTED_DROP_ORDERS = ("k_major", "token_major")
NORMALIZE_CODES = {"none": 0, "before_drop": 1, "after_drop": 2}
SCORE_CODES = {"softmax": 0, "sigmoid": 1}
ORDER_CODES = {"k_major": 0, "token_major": 1}
DEFAULT_TOKEN_BLOCK = 64
DEFAULT_SCAN_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class RouteLaunch:
    """Scalars of the routing kernels: k, the capacity (-1 = dropless) and the
    convention codes (see NORMALIZE_CODES, SCORE_CODES, ORDER_CODES)."""

    k: int
    capacity: int
    score: int
    normalize: int
    order: int
    route_scale: float
    token_block: int = 64
    scan_block: int = 128


def prepare_route(logits, k, *, preset=None, padding_mask=None, selection_bias=None,
                  capacity_factor=None, seed=None, token_block=None, scan_block=None, **conventions):
    """Validate ``route``'s arguments with refimpl's own routing setup (``refimpl.moe.router.route_setup``);
    returns (logits float32 (T, E), token_mask int32 (T,), RouteOptions, RouteLaunch, capacity C or None)."""
    from refimpl.moe.router import resolve_capacity, route_setup

    setup = route_setup(logits, k, preset=preset, padding_mask=padding_mask, capacity_factor=capacity_factor,
                        **conventions)
    z, k, opts, token_mask = setup.logits, setup.k, setup.options, setup.token_mask
    T, E = z.shape
    if selection_bias is not None:
        raise UnsupportedOption("selection_bias: selection-only bias (DeepSeek-V3) is not implemented by the GPU kernels")
    if opts.n_groups is not None:
        raise UnsupportedOption("n_groups/topk_groups: group-limited selection is not implemented by the GPU kernels")
    if opts.score not in SUPPORTED_SCORES:
        raise UnsupportedOption(f"score={opts.score!r}: the GPU kernels implement {SUPPORTED_SCORES}")
    if opts.drop_order not in SUPPORTED_DROP_ORDERS:
        raise UnsupportedOption(
            f"drop_order={opts.drop_order!r}: the GPU kernels implement the position orders "
            f"{SUPPORTED_DROP_ORDERS} only")
    C = resolve_capacity(opts.capacity, T, E, k)
    if T * max(E, k) > _INT32_LIMIT:
        raise UnsupportedOption(f"T * E = {T * E}: the kernels index with 32-bit ints")
    if C is not None and C > _INT32_LIMIT:
        C = _INT32_LIMIT  # more slots than assignments: nothing can be dropped
    with np.errstate(over="ignore"):  # reported below as a ValueError
        z32 = np.ascontiguousarray(z, dtype=np.float32)
    if not np.isfinite(z32).all():
        raise ValueError(f"logits: expected values within float32 range (|z| <= {_F32_MAX:.4g}), got "
                         f"{float(np.abs(z).max()):.4g}")
    z32 = _route_logits_float32(z, z32, k, opts, exact32=getattr(logits, "dtype", None) == np.float32)
    p = RouteLaunch(k=k, capacity=-1 if C is None else int(C), score=SCORE_CODES[opts.score],
                    normalize=NORMALIZE_CODES[opts.normalize], order=ORDER_CODES[opts.drop_order],
                    route_scale=_positive_float32(opts.route_scale, "route_scale"),
                    token_block=_tile(token_block, "token_block", DEFAULT_TOKEN_BLOCK),
                    scan_block=_tile(scan_block, "scan_block", DEFAULT_SCAN_BLOCK))
    for name in ("token_block", "scan_block"):
        if getattr(p, name) > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{name}: at most {MAX_THREADS_PER_BLOCK} threads per block, got {getattr(p, name)}")
    return z32, token_mask.astype(np.int32), opts, p, C


_GATE_SUM_MIN = 2.0**-102
"""Smallest selected score a normalised row may have: float32 holds it with 24 bits (2^-126 * 2^24)."""


def _route_logits_float32(z: np.ndarray, z32: np.ndarray, k: int, opts, exact32: bool = False) -> np.ndarray:
    """The float32 logits the kernels get, or a refusal, by name, of what float32 cannot compute
    as the float64 spec does.

    * ties: the spec selects the top-k of the float64 scores, ties to the lower expert id; scores
      that underflow to 0 (softmax at a spread beyond ~745, |z| ~ 1e30) tie there although their
      logits differ. Their logits are sent as one value, -FLT_MAX (their float32 score is 0 as
      well), so the kernels see the same ties.
    * selection: what float32 still selects differently (two logits it merges whose scores float64
      keeps apart) is a ValueError naming ``logits``. Checked on the host, one top-k each way.
    * normalisation: a row whose selected scores are all float32 subnormals (sigmoid of logits
      below about -70) has gates score / sum that float32 cannot form to 24 bits: a ValueError.
    """
    from refimpl.moe.router import effective_options, router_scores, top_k

    if z.size == 0:
        return z32
    opts = effective_options(opts, k)
    # fast path (float32 logits at moderate spread, the common case): no float64 score underflows or
    # saturates (softmax: row spread < 700; sigmoid: logits in (-70, 36)) and float32 merges nothing,
    # so both sides select the same experts and no normalised gate comes from subnormal scores
    if exact32 or np.array_equal(z32, z):
        lo, hi = float(z32.min()), float(z32.max())  # whole-array bounds: a row's spread is at most hi - lo
        if (opts.score == "softmax" and hi - lo < 700.0) or (opts.score == "sigmoid" and -70.0 < lo and hi < 36.0):
            return z32
    probs = router_scores(z, opts.score)
    zero = probs == 0.0
    if zero.any():
        z32 = np.where(zero, np.float32(-_F32_MAX), z32)
    want = top_k(probs, k)
    got = top_k(z32.astype(np.float64), k)
    if not np.array_equal(want, got):
        t = int(np.flatnonzero((want != got).any(axis=1))[0])
        raise ValueError(f"logits: expected logits whose float32 values select the experts the float64 scores "
                         f"select, got token {t}: spec {want[t].tolist()}, float32 {got[t].tolist()} (float32 "
                         f"merges distinct logits or the float64 scores tie); rescale the logits or use refimpl")
    if opts.normalize != "none":
        top = np.take_along_axis(probs, want[:, :1], axis=-1)
        if (top < _GATE_SUM_MIN).any():
            raise ValueError(f"logits: expected a largest selected {opts.score} score >= 2^-102 (a normal float32 "
                             f"with 24 bits) when gates are normalised, got {float(top.min()):.3g}; use "
                             f"normalize='none' or refimpl")
    return z32


def route(logits, k, *, backend, preset=None, padding_mask=None, selection_bias=None,
          capacity_factor=None, seed=None, token_block=None, scan_block=None, **conventions):
    """Token-choice routing on a GPU backend; the semantics of ``refimpl.moe.route``.

    Takes the same arguments (raw logits (T, E), k, preset, padding_mask,
    capacity_factor, RouteOptions fields). Implemented: score "softmax" or
    "sigmoid", normalize "none" | "before_drop" | "after_drop", capacity (None, int
    or a rule, evaluated on the host exactly as refimpl does), drop_order
    "k_major" | "token_major", route_scale, padding_mask. selection_bias,
    group-limited selection and the other drop orders raise UnsupportedOption.
    ``token_block`` (default 64) and ``scan_block`` (default 128) are the
    kernels' threads per block (launch parameters, no effect on the result).

    Selection compares the float32 logits: softmax and sigmoid are strictly
    increasing, so the top-k of the logits is the top-k of the scores, ties to
    the lower expert id. Integer outputs equal refimpl's whenever float32 keeps
    the order of the float64 scores (distinct logits that float32 does not merge;
    exact ties stay ties).

    Returns a ``refimpl.moe.Routing``: indices, position and counts int64, kept
    bool, probs and gates float64 holding the float32 kernel values.
    """
    from refimpl.moe.router import Routing

    from .backends import get_backend

    be = get_backend(backend)
    z, token_mask, opts, p, C = prepare_route(
        logits, k, preset=preset, padding_mask=padding_mask, selection_bias=selection_bias,
        capacity_factor=capacity_factor, seed=seed, token_block=token_block, scan_block=scan_block,
        **conventions)
    T, E = z.shape
    outs = {
        "probs": np.full((T, E), np.nan, dtype=np.float32),
        "indices": np.full((T, p.k), INT_UNWRITTEN, dtype=np.int32),
        "gates": np.full((T, p.k), np.nan, dtype=np.float32),
        "kept": np.full((T, p.k), INT_UNWRITTEN, dtype=np.int32),
        "position": np.full((T, p.k), INT_UNWRITTEN, dtype=np.int32),
        "counts": np.full((E,), INT_UNWRITTEN, dtype=np.int32),
    }
    if T > 0:  # T = 0: nothing to launch (zero-size buffers are invalid OpenCL arguments)
        outs = be.route(z, token_mask, outs, p)
    else:
        outs["counts"][:] = 0
    _check_written(**outs)
    if not np.isin(outs["kept"], (0, 1)).all():
        raise RuntimeError("kept: kernel wrote values other than 0/1")
    return Routing(
        probs=outs["probs"].astype(np.float64),
        indices=outs["indices"].astype(np.int64),
        gates=outs["gates"].astype(np.float64),
        kept=outs["kept"].astype(bool),
        position=outs["position"].astype(np.int64),
        capacity=C,
        counts=outs["counts"].astype(np.int64),
        token_mask=token_mask.astype(bool),
        options=opts,
    )


def _check_written(**arrays) -> None:
    """Raise if a kernel left an output element unwritten (NaN / sentinel)."""
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating):
            bad = np.isnan(a)
        else:
            bad = a == INT_UNWRITTEN
        if bad.any():
            first = tuple(int(x) for x in np.argwhere(bad)[0])
            raise RuntimeError(f"{name}: {int(bad.sum())} element(s) never written by the kernel, first at {first}")
