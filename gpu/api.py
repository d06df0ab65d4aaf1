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
    gpu.gated_linear_attention(q, k, v, g, *, backend, scale, initial_state, chunk_size) -> (o, state)
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
        raise ValueError(f"{name}: expected values within float32 range, got one that overflows float32")
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
        raise ValueError(f"block_q, block_k: expected block_q * block_k <= {MAX_THREADS_PER_BLOCK} threads per block, "
                         f"got {p.threads}")
    if p.shared_bytes > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block_q, block_k: expected tiles within {MAX_STATIC_SHARED_BYTES} B of shared memory, got "
                         f"{p.shared_bytes} B (block_q={bq}, block_k={bk}, head dims ({p.d_max}, {p.dv_max}))")
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


def backward_shared_memory_bytes(block_q: int, block_k: int, d_max: int, dv_max: int) -> dict:
    """Static shared memory of the backward kernels (float32): Q, dO, K, V tiles, the (P,) dR
    tiles and the lse/delta rows (see gpu.attention_backward_numba)."""
    tiles = block_q * d_max + block_q * dv_max + block_k * d_max + block_k * dv_max + 2 * block_q
    return {"flash_backward_dot": 0, "flash_backward_dkdv": 4 * (tiles + 2 * block_q * block_k),
            "flash_backward_dq": 4 * (tiles + block_q * block_k)}


def tiled_shared_memory_bytes(kernel: str, block_q: int, block_k: int, d_max: int, dv_max: int) -> dict:
    """{kernel function: static shared bytes} of a kernel module of gpu.compile.TILED_KERNELS."""
    if kernel == "attention_backward":
        return backward_shared_memory_bytes(block_q, block_k, d_max, dv_max)
    fwd = shared_memory_bytes(block_q, block_k, d_max, dv_max)  # the forward's tiles
    if kernel == "split_kv":
        return {"split_kv_partial": fwd, "split_kv_merge": 0}
    if kernel == "paged":
        return {"paged_attention": fwd}
    raise ValueError(f"kernel: expected one of attention_backward, split_kv, paged, got {kernel!r}")


def flash_attention_backward(q, k, v, dout, *, backend, mask=None, causal=False, align="bottom_right",
                             window=None, scale=None, softcap=None, bias=None, dropout_mask=None, dropout_p=0.0,
                             block_q=None, block_k=None, out=None, lse=None):
    """FlashAttention-2 backward on a GPU backend; the semantics of ``refimpl.attention_backward``.

    Same arguments and restrictions as :func:`flash_attention`, plus ``dout`` (B, Hq, Lq, Dv).
    Runs the forward kernel (for out and lse) and then the three backward kernels
    (``gpu.attention_backward_numba``: delta = rowsum(dO * O); dK, dV K/V-outer; dQ Q-outer)
    at the same tiles; given the forward's saved ``out`` (B, Hq, Lq, Dv) and ``lse`` (B, Hq, Lq)
    (both or neither), the forward is not run again. Returns (dq, dk, dv), float32, shaped like
    q, k, v; a key no query sees and a row that sees no key get zero gradients.
    """
    from .backends import get_backend

    be = get_backend(backend)
    q, k, v, p = prepare_attention(q, k, v, mask=mask, causal=causal, align=align, window=window,
                                   scale=scale, softcap=softcap, bias=bias, dropout_mask=dropout_mask,
                                   dropout_p=dropout_p, block_q=block_q, block_k=block_k)
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    dout = _float_4d(dout, "dout")
    if dout.shape != (B, Hq, Lq, Dv):
        raise ValueError(f"dout: expected shape {(B, Hq, Lq, Dv)} (that of the output), got {dout.shape}")
    smem = max(backward_shared_memory_bytes(p.block_q, p.block_k, p.d_max, p.dv_max).values())
    if smem > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block_q, block_k: expected backward tiles within {MAX_STATIC_SHARED_BYTES} B of shared "
                         f"memory, got {smem} B (block_q={p.block_q}, block_k={p.block_k}, head dims ({p.d_max}, "
                         f"{p.dv_max}))")
    if B * max(Hq, Hkv) == 0 or Lq == 0 or Lk == 0:  # nothing to launch: every gradient is zero
        return (np.zeros(q.shape, np.float32), np.zeros(k.shape, np.float32), np.zeros(v.shape, np.float32))
    if (out is None) != (lse is None):
        raise ValueError(f"out, lse: expected both (the forward's saved results) or neither, got "
                         f"{'out' if lse is None else 'lse'} alone")
    if out is None:
        out = np.full((B, Hq, Lq, Dv), np.nan, dtype=np.float32)
        lse = np.full((B, Hq, Lq), np.nan, dtype=np.float32)
        out, lse = be.flash_attention(q, k, v, out, lse, p)
        _check_written(out=out, lse=lse)
    else:
        out = _float_4d(out, "out")
        if out.shape != (B, Hq, Lq, Dv):
            raise ValueError(f"out: expected shape {(B, Hq, Lq, Dv)}, got {out.shape}")
        lse = np.array(lse, dtype=np.float32)  # a copy; -inf allowed (rows that see no key)
        if lse.shape != (B, Hq, Lq) or np.isnan(lse).any() or np.isposinf(lse).any():
            raise ValueError(f"lse: expected shape {(B, Hq, Lq)} with entries finite or -inf, got {lse.shape}")
    dq = np.full(q.shape, np.nan, dtype=np.float32)
    dk = np.full(k.shape, np.nan, dtype=np.float32)
    dv = np.full(v.shape, np.nan, dtype=np.float32)
    dq, dk, dv = be.flash_attention_backward(q, k, v, out, lse, dout, dq, dk, dv, p)
    _check_written(dq=dq, dk=dk, dv=dv)
    return dq, dk, dv


#: most key chunks a split-KV launch takes (flash-attn caps its own num_splits at 128)
MAX_SPLITS = 1024


def split_kv_attention(q, k, v, *, backend, boundaries=None, num_splits=None, mask=None, causal=False,
                       align="bottom_right", window=None, scale=None, softcap=None, bias=None, dropout_mask=None,
                       dropout_p=0.0, block_q=None, block_k=None):
    """Split-KV attention (flash-decoding) on a GPU backend; the semantics of ``refimpl.split_kv_attention``.

    The keys are cut at ``boundaries`` (non-decreasing ints in [0, Lk]; repeats make empty
    chunks) or by ``num_splits`` (flash-attn's even split in whole key tiles of ``block_k``,
    ``refimpl.split_kv.even_boundaries``); exactly one of the two. Each chunk's FA2 state is
    computed under the full problem's causal/window band, then merged
    (``gpu.split_kv_numba``). Other keywords and restrictions as :func:`flash_attention`.
    Returns (out, lse), float32.
    """
    from refimpl.split_kv import split_chunks

    from .backends import get_backend

    be = get_backend(backend)
    q, k, v, p = prepare_attention(q, k, v, mask=mask, causal=causal, align=align, window=window,
                                   scale=scale, softcap=softcap, bias=bias, dropout_mask=dropout_mask,
                                   dropout_p=dropout_p, block_q=block_q, block_k=block_k)
    B, Hq, Lq, _ = q.shape
    Lk, Dv = k.shape[2], v.shape[3]
    chunks = split_chunks(boundaries, num_splits, Lk, p.block_k)  # the spec's own validation and even split
    if len(chunks) > MAX_SPLITS:
        raise UnsupportedOption(f"{len(chunks)} key chunks: the split-KV kernels take at most {MAX_SPLITS}")
    if len(chunks) * B * Hq * Lq * max(Dv, 1) > _INT32_LIMIT:
        raise UnsupportedOption("chunks * B * Hq * Lq * Dv partial elements: the kernels index with 32-bit ints")
    if min(B, Hq, Lq) == 0 or Lk == 0:
        return (np.zeros((B, Hq, Lq, Dv), dtype=np.float32), np.full((B, Hq, Lq), -np.inf, dtype=np.float32))
    edges = np.array([chunks[0][0]] + [c[1] for c in chunks], dtype=np.int32)
    out = np.full((B, Hq, Lq, Dv), np.nan, dtype=np.float32)
    lse = np.full((B, Hq, Lq), np.nan, dtype=np.float32)
    out, lse = be.split_kv_attention(q, k, v, edges, out, lse, p)
    _check_written(out=out, lse=lse)
    return out, lse


def _int_array(x, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


def paged_attention(q, k_pool, v_pool, block_table, seq_lens, *, backend, window=None, scale=None, softcap=None,
                    block_q=None, block_k=None):
    """Decode attention over a paged KV cache on a GPU backend (``gpu.paged_numba``).

    q (B, Hq, n, D): the n newest tokens of each of B sequences; k_pool (NB, Hkv, bs, D) and
    v_pool (NB, Hkv, bs, Dv): the block pool (``refimpl.kv_cache.PagedCache.k_pool``);
    block_table (B, MB) ints: sequence b's token j lives in block ``block_table[b, j // bs]``
    at offset ``j % bs``; seq_lens (B,) ints, n <= seq_lens[b] <= MB * bs (the step's tokens
    already written). Computes, per sequence, ``refimpl.attention(q[b], K_b, V_b, causal=True,
    window=window)`` (bottom-right: query i is token seq_lens[b] - n + i) over the gathered
    K_b, V_b; ``window`` None or (left, 0 | None). Returns (out (B, Hq, n, Dv), lse (B, Hq, n)) float32.
    """
    from .backends import get_backend

    be = get_backend(backend)
    q, kp, vp = _float_4d(q, "q"), _float_4d(k_pool, "k_pool"), _float_4d(v_pool, "v_pool")
    B, Hq, n, D = q.shape
    NB, Hkv, bs, Dk = kp.shape
    if Dk != D:
        raise ValueError(f"k_pool: expected head dim D = {D} (that of q), got shape {kp.shape}")
    if vp.shape[:3] != (NB, Hkv, bs):
        raise ValueError(f"v_pool: expected shape ({NB}, {Hkv}, {bs}, Dv) to match k_pool, got {vp.shape}")
    Dv = vp.shape[3]
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"q, k_pool: expected Hq a positive multiple of Hkv, got Hq={Hq}, Hkv={Hkv}")
    if B * Hq > 65535:
        raise UnsupportedOption(f"B * Hq = {B * Hq}: the grid's y dimension holds at most 65535")
    table = _int_array(block_table, "block_table", 2)
    lens = _int_array(seq_lens, "seq_lens", 1)
    if table.shape[0] != B or lens.shape != (B,):
        raise ValueError(f"block_table, seq_lens: expected {B} rows (the batch of q), got shapes {table.shape}, "
                         f"{lens.shape}")
    MB = table.shape[1]
    if B and ((lens < n).any() or (lens > MB * bs).any()):
        raise ValueError(f"seq_lens: expected lengths in [n = {n}, block_table width * block size = {MB * bs}], "
                         f"got {lens.tolist()}")
    for b in range(B):
        used = table[b, : -(-int(lens[b]) // bs)] if bs else table[b, :0]
        if ((used < 0) | (used >= NB)).any():
            raise ValueError(f"block_table: expected blocks of the pool [0, {NB}) in row {b}, got {used.tolist()}")
    win = check_window(window)
    if win is not None and win[1] not in (None, 0):
        raise UnsupportedOption(f"window={window}: decode attention is causal; the right side must be 0 or None")
    left = _INT32_LIMIT // 4 if win is None or win[0] is None else min(win[0], _INT32_LIMIT // 4)
    scale_ = float(np.float32(1.0 / math.sqrt(D))) if scale is None else _positive_float32(scale, "scale")
    softcap_ = 0.0 if softcap is None else _positive_float32(softcap, "softcap")
    V.check_score_range(q.astype(np.float64), kp.astype(np.float64), scale_, None, None, limit=_F32_MAX / 2,
                        what="float32 (the kernels' precision)")
    bq = _tile(block_q, "block_q", DEFAULT_BLOCK_Q)
    bk = _tile(block_k, "block_k", DEFAULT_BLOCK_K)
    p = AttentionLaunch(bq, bk, _head_dim_variant(D, "D"), _head_dim_variant(Dv, "Dv"), scale_, softcap_,
                        0, left, 0, Hq // Hkv)
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block_q, block_k: expected block_q * block_k <= {MAX_THREADS_PER_BLOCK} threads per block, "
                         f"got {p.threads}")
    if p.shared_bytes > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block_q, block_k: expected tiles within {MAX_STATIC_SHARED_BYTES} B of shared memory, got "
                         f"{p.shared_bytes} B (block_q={bq}, block_k={bk}, head dims ({p.d_max}, {p.dv_max}))")
    if min(B, Hq, n) == 0:
        return np.zeros((B, Hq, n, Dv), np.float32), np.full((B, Hq, n), -np.inf, np.float32)
    out = np.full((B, Hq, n, Dv), np.nan, dtype=np.float32)
    lse = np.full((B, Hq, n), np.nan, dtype=np.float32)
    out, lse = be.paged_attention(q, kp, vp, np.ascontiguousarray(table, dtype=np.int32),
                                  np.ascontiguousarray(lens, dtype=np.int32), out, lse, p)
    _check_written(out=out, lse=lse)
    return out, lse


# ---------------------------------------------------------------------------
# the block: RMSNorm / LayerNorm, RoPE

DEFAULT_ROW_THREADS = 128


@dataclasses.dataclass(frozen=True)
class NormLaunch:
    """Threads per row (a power of two) and the scalars of the norm kernels (``gpu.norm_numba``)."""

    threads: int
    eps: float
    outside: int = 0  # RMSNorm: 1 = eps outside the sqrt
    offset: float = 0.0  # RMSNorm: weight offset (1 for HF Gemma)


def _row_threads(threads) -> int:
    t = _tile(threads, "threads", DEFAULT_ROW_THREADS)
    if t & (t - 1) or t > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected a power of two <= {MAX_THREADS_PER_BLOCK} (the tree reduction), got {t}")
    return t


def _rows(x, name: str = "x") -> np.ndarray:
    from refimpl.norms import last_axis

    x = last_axis(x, name)
    if x.size > _INT32_LIMIT:
        raise UnsupportedOption(f"{name}: {x.size} elements; the kernels index with 32-bit ints")
    with np.errstate(over="ignore"):
        x32 = np.array(x, dtype=np.float32)  # a copy, C-contiguous
    if not np.isfinite(x32).all():
        raise ValueError(f"{name}: expected values within float32 range, got one that overflows float32")
    return x32.reshape(-1, x.shape[-1])


def _vector(p, name: str, d: int, default: float) -> np.ndarray:
    """weight / bias as float32 (d,); ``default`` everywhere when None."""
    if p is None:
        return np.full(d, default, dtype=np.float32)
    if np.shape(p) != (d,):
        raise ValueError(f"{name}: expected shape ({d},) (the last axis of x), got {np.shape(p)}")
    return _rows(p, name).reshape(-1)


def _norm_eps(eps) -> float:
    if eps == 0:
        raise UnsupportedOption("eps=0: the float32 kernels need eps > 0 (a zero row would divide by zero)")
    return _positive_float32(eps, "eps")


def rms_norm(x, weight=None, *, backend, eps=1e-6, eps_placement="inside_sqrt", weight_offset=0.0, preset=None,
             threads=None):
    """RMSNorm fused with its weight on a GPU backend; the semantics of ``refimpl.norms.rms_norm``.

    x (..., d), weight (d,) or None; ``eps_placement`` "inside_sqrt" | "outside_sqrt",
    ``weight_offset`` (1.0: HF Gemma) or a ``preset`` of ``refimpl.norms.RMSNORM_PRESETS``;
    ``threads`` per row (a power of two, default 128). Returns y float32, shaped like x.
    """
    from refimpl.norms import check_eps, rms_args

    from .backends import get_backend

    be = get_backend(backend)
    eps, placement, offset = rms_args(eps, eps_placement, weight_offset, preset)
    check_eps(eps, placement)
    shape = np.shape(x)
    rows = _rows(x)
    d = rows.shape[1]
    w = _vector(weight, "weight", d, 1.0)
    p = NormLaunch(_row_threads(threads), _norm_eps(eps), int(placement == "outside_sqrt"),
                   0.0 if weight is None else float(np.float32(offset)))
    if rows.shape[0] == 0:
        return np.zeros(shape, np.float32)
    y = np.full(rows.shape, np.nan, dtype=np.float32)
    y = be.norm("rms_norm", rows, w, np.zeros(d, np.float32), y, p)
    _check_written(y=y)
    return y.reshape(shape)


def layer_norm(x, weight=None, bias=None, *, backend, eps=1e-5, threads=None):
    """LayerNorm on a GPU backend; the semantics of ``refimpl.norms.layer_norm`` (two-pass
    statistics, biased variance, eps inside the sqrt). Returns y float32, shaped like x."""
    from refimpl.norms import check_eps

    from .backends import get_backend

    be = get_backend(backend)
    check_eps(eps, "inside_sqrt")
    shape = np.shape(x)
    rows = _rows(x)
    d = rows.shape[1]
    w = _vector(weight, "weight", d, 1.0)
    b = _vector(bias, "bias", d, 0.0)
    p = NormLaunch(_row_threads(threads), _norm_eps(eps))
    if rows.shape[0] == 0:
        return np.zeros(shape, np.float32)
    y = np.full(rows.shape, np.nan, dtype=np.float32)
    y = be.norm("layer_norm", rows, w, b, y, p)
    _check_written(y=y)
    return y.reshape(shape)


@dataclasses.dataclass(frozen=True)
class RopeLaunch:
    threads: int
    interleaved: int


def rope_tables(positions, B: int, L: int, rotary_dim: int, base, scaling) -> tuple:
    """(cos, sin), float32 (Bp, L, rotary_dim / 2), Bp = 1 for positions (L,) else B: the angles
    m theta_i in float64 by refimpl.rope (scalings included), the attention factor folded in,
    rounded once to float32 (a cos/sin cache as vLLM keeps it)."""
    from refimpl.rope import int_positions, rope_angles, rope_frequencies

    pos = int_positions(positions)
    if pos.shape not in ((L,), (B, L)):
        raise ValueError(f"positions: expected shape ({L},) or ({B}, {L}), got {pos.shape}")
    theta, attn = rope_frequencies(rotary_dim, base, scaling)
    alpha = rope_angles(pos.reshape(-1, L), theta)
    return (np.ascontiguousarray(attn * np.cos(alpha), dtype=np.float32),
            np.ascontiguousarray(attn * np.sin(alpha), dtype=np.float32))


def apply_rope(x, positions, *, backend, layout="half", rotary_dim=None, base=10000.0, scaling=None, threads=None):
    """RoPE applied in place (to a float32 copy of x) on a GPU backend; the semantics of
    ``refimpl.apply_rope``: x (B, H, L, D), positions (L,) or (B, L), layout "half" |
    "interleaved", rotary_dim (even, <= D; the other columns pass through), base, scaling
    (refimpl.rope's dicts; the cos/sin table is built on the host in float64, ``rope_tables``).
    Returns the rotated float32 array; x itself is never modified."""
    from refimpl.rope import check_layout, check_rotary_dim

    from .backends import get_backend

    be = get_backend(backend)
    x32 = _float_4d(x, "x")
    B, H, L, D = x32.shape
    lay = check_layout(layout)
    d = check_rotary_dim(rotary_dim, D)
    cos, sin = rope_tables(positions, B, L, d, base, scaling)
    if B * H > 65535:
        raise UnsupportedOption(f"B * H = {B * H}: the grid's y dimension holds at most 65535")
    p = RopeLaunch(_tile(threads, "threads", DEFAULT_ROW_THREADS), int(lay == "interleaved"))
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected at most {MAX_THREADS_PER_BLOCK}, got {p.threads}")
    if x32.size == 0 or d == 0:
        return x32
    x32 = be.rope(x32, cos, sin, p)
    if not np.isfinite(x32).all():
        raise ValueError("x, scaling: expected rotated entries within float32 range, got one that overflows")
    return x32


# ---------------------------------------------------------------------------
# MoE experts: permute by expert, grouped GEMM, gated combine

DEFAULT_MOE_BLOCK = (16, 16, 16)  # (BM, BN, BK) of the grouped GEMM


@dataclasses.dataclass(frozen=True)
class MoELaunch:
    """Threads of the per-expert / per-choice / per-token kernels, the grouped GEMM's tiles and
    the layout: dense_rows = C (every bin C rows, GShard) or -1 (bins of the kept counts)."""

    threads: int
    bm: int
    bn: int
    bk: int
    dense_rows: int = -1


@dataclasses.dataclass(frozen=True)
class Permutation:
    """The permuted buffer: x_perm (rows, D) float32, row r holds x[token[r]] (token -1: an
    empty GShard slot, zeros); expert e owns rows offsets[e]:offsets[e + 1]; row_of (T, k) the
    row of each kept choice (-1 dropped); counts (E,) kept choices per expert."""

    x_perm: np.ndarray
    token: np.ndarray
    offsets: np.ndarray
    row_of: np.ndarray
    counts: np.ndarray


def _moe_launch(routing, layout, threads, block):
    from refimpl.moe.dispatch import buffer_capacity

    V.choice(layout, "layout", ("sparse", "dense_tensors"))
    t = _row_threads(threads)
    if block is None:
        block = DEFAULT_MOE_BLOCK
    if not isinstance(block, (tuple, list)) or len(block) != 3:
        raise ValueError(f"block: expected (BM, BN, BK), got {block!r}")
    bm, bn, bk = (_tile(b, f"block[{i}]", 16) for i, b in enumerate(block))
    if bm * bn > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block: expected BM * BN <= {MAX_THREADS_PER_BLOCK} threads, got {bm * bn}")
    if 4 * (bm * bk + 2 * bk * bn) > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block: expected tiles within {MAX_STATIC_SHARED_BYTES} B of shared memory, got {block} "
                         f"needing {4 * (bm * bk + 2 * bk * bn)} B")
    return MoELaunch(t, bm, bn, bk, buffer_capacity(routing) if layout == "dense_tensors" else -1)


def _moe_permute(be, x, r, p) -> Permutation:
    T, k = r.indices.shape
    E = r.num_experts
    D = x.shape[1]
    rows = E * p.dense_rows if p.dense_rows >= 0 else int(r.kept.sum())
    if rows * max(D, 1) > _INT32_LIMIT:
        raise UnsupportedOption("rows * D: the kernels index with 32-bit ints")
    dense = p.dense_rows >= 0
    # room for T k rows: a kernel whose bins overrun the kept count still writes inside the buffer,
    # and the offsets check below reports it
    alloc = max(rows, 1) if dense else max(rows, T * k, 1)
    xp = np.full((alloc, D), 0.0 if dense else np.nan, dtype=np.float32)  # empty GShard slots: zeros
    token = np.full(alloc, -1 if dense else INT_UNWRITTEN, dtype=np.int32)
    row_of = np.full((T, k), INT_UNWRITTEN, dtype=np.int32)
    offsets = np.full(E + 1, INT_UNWRITTEN, dtype=np.int32)
    counts = np.full(E, INT_UNWRITTEN, dtype=np.int32)
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
    be.moe_permute(x, i32(r.indices), i32(np.where(r.kept, r.position, -1)), i32(r.kept), xp, row_of, token,
                   offsets, counts, p)
    _check_written(row_of=row_of, offsets=offsets, counts=counts)
    if offsets[-1] != rows:
        raise RuntimeError(f"offsets: the kernel's bins hold {int(offsets[-1])} rows, expected {rows} "
                           f"({'E * C' if dense else 'the kept choices'})")
    xp, token = xp[:rows], token[:rows]
    _check_written(x_perm=xp, token=token)
    return Permutation(xp, token.astype(np.int64), offsets.astype(np.int64), row_of.astype(np.int64),
                       counts.astype(np.int64))


def _moe_x(x, r) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] != r.num_tokens:
        raise ValueError(f"x: expected shape ({r.num_tokens}, D) (T from routing), got {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"x: expected D >= 1, got shape {arr.shape}")
    return _rows(arr, "x")


def moe_permute(x, routing, *, backend, layout="sparse", threads=None) -> Permutation:
    """Token permutation by expert (the slot assignment of ``refimpl.moe.route``) on a GPU backend.

    x (T, D); routing: a ``refimpl.moe.Routing`` (from refimpl.moe.route or gpu.route). layout
    "sparse": bins of the kept counts, rows in (expert, position) order (``refimpl.moe.sort_by_expert``
    and ``gather_by_expert``); "dense_tensors": bins of C rows (``refimpl.moe.dispatch_dense``).
    Returns a :class:`Permutation`; integers exact, x_perm a bit-exact copy of x's rows.
    """
    from refimpl import validation as RV

    from .backends import get_backend

    be = get_backend(backend)
    r = RV.routing(routing)
    x = _moe_x(x, r)
    return _moe_permute(be, x, r, _moe_launch(r, layout, threads, None))


def _stack_experts(experts, E: int, D: int):
    """(W1, W1b (gated: Wu) , b1, act code, W2, b2) float32 stacks of one expert type."""
    from refimpl.moe.experts import FFNExpert, SwiGLUExpert

    from .moe_numba import ACT_CODES

    experts = list(experts)
    if len(experts) != E:
        raise ValueError(f"experts: expected {E} experts (E from routing), got {len(experts)}")
    f = lambda a: np.ascontiguousarray(np.stack(a), dtype=np.float32)  # noqa: E731
    if all(isinstance(ex, SwiGLUExpert) for ex in experts):
        H = experts[0].Wg.shape[1]
        if any(ex.Wg.shape != (D, H) for ex in experts):
            raise ValueError(f"experts: expected SwiGLU weights Wg, Wu (D={D}, H) with one H for every expert, got "
                             f"{sorted({ex.Wg.shape for ex in experts})}")
        return (f([ex.Wg for ex in experts]), f([ex.Wu for ex in experts]), np.zeros((E, H), np.float32),
                ACT_CODES["swiglu"], f([ex.Wd for ex in experts]), np.zeros((E, D), np.float32))
    if all(isinstance(ex, FFNExpert) for ex in experts):
        H = experts[0].W1.shape[1]
        acts = {ex.act for ex in experts}
        if any(ex.W1.shape != (D, H) for ex in experts) or len(acts) != 1:
            raise ValueError(f"experts: expected FFN weights W1 (D={D}, H) with one H and one activation for every "
                             f"expert, got activations {sorted(acts)}")
        z = lambda b, n: np.zeros(n) if b is None else b  # noqa: E731
        W1 = f([ex.W1 for ex in experts])
        return (W1, W1[:1] * 0, f([z(ex.b1, H) for ex in experts]), ACT_CODES[acts.pop()],
                f([ex.W2 for ex in experts]), f([z(ex.b2, D) for ex in experts]))
    raise UnsupportedOption("experts: the kernels run lists of refimpl.moe.FFNExpert or of SwiGLUExpert (one type)")


def moe_experts(x, routing, experts, *, backend, layout="sparse", threads=None, block=None):
    """The experts of a routed MoE layer on a GPU backend; the semantics of
    ``refimpl.moe.apply_experts(x, routing, experts, layout=layout)``.

    Permute (:func:`moe_permute`), two grouped GEMMs over the expert bins with the activation
    (relu, gelu (erf), silu; SwiGLU's silu(x Wg) * (x Wu)) and biases fused, then the gated
    combine y[t] = sum_j gates[t, j] out[row(t, j)] (``gpu.moe_numba``). ``block`` = (BM, BN,
    BK), the grouped GEMM's tiles (default 16 x 16 x 16). Returns y (T, D) float32.
    """
    from refimpl import validation as RV

    from .backends import get_backend

    be = get_backend(backend)
    r = RV.routing(routing)
    x = _moe_x(x, r)
    T, D = x.shape
    W1, U1, b1, act, W2, b2 = _stack_experts(experts, r.num_experts, D)
    if act != 4:
        U1 = np.zeros((1, 1, 1), np.float32)
    p = _moe_launch(r, layout, threads, block)
    perm = _moe_permute(be, x, r, p)
    rows = perm.x_perm.shape[0]
    y = np.full((T, D), np.nan, dtype=np.float32)
    if rows == 0 or T == 0:
        y[:] = 0.0  # no kept choice: every token's output is the empty sum
        return y
    offsets = perm.offsets.astype(np.int32)
    h = np.full((rows, W1.shape[2]), np.nan, dtype=np.float32)
    be.moe_gemm(perm.x_perm, W1, U1, b1, offsets, h, act, p)
    _check_written(hidden=h)
    out = np.full((rows, D), np.nan, dtype=np.float32)
    be.moe_gemm(h, W2, np.zeros((1, 1, 1), np.float32), b2, offsets, out, 0, p)
    _check_written(expert_out=out)
    if not np.isfinite(out).all():
        raise ValueError("x, experts: expected expert outputs within float32 range, got one that overflows")
    be.moe_combine(out, perm.row_of.astype(np.int32), np.ascontiguousarray(r.gates, dtype=np.float32), y, p)
    _check_written(y=y)
    return y


# ---------------------------------------------------------------------------
# linear-time mixers: chunked GLA

#: key / value head-dim variants of the GLA kernel (its state K x V lives in shared memory)
GLA_DIM_VARIANTS = (16, 32, 64)
DEFAULT_GLA_CHUNK = 16
MAX_GLA_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class GLALaunch:
    threads: int
    chunk: int
    k_max: int
    v_max: int
    scale: float


def gla_shared_bytes(chunk: int, k_max: int, v_max: int) -> int:
    """Static shared memory of gla_chunked: q, k, cumulative gates, v, the scores A and the state S."""
    return 4 * (3 * chunk * k_max + chunk * v_max + chunk * chunk + k_max * v_max)


def gated_linear_attention(q, k, v, g=None, *, backend, scale=None, initial_state=None, chunk_size=None,
                           threads=None):
    """Chunked GLA forward on a GPU backend; the semantics of
    ``refimpl.mixers.gated.gated_linear_attention``: q, k (B, H, L, K), v (B, H, L, V), K and V <= 64;
    g None, (B, H, L) or (B, H, L, K) log-gates <= 0; initial_state (B, H, K, V) or None;
    ``chunk_size`` (default 16, at most 64) the kernel's chunk. Returns (o, final state), float32.
    """
    from refimpl.mixers.gated import GatedSetup

    from .backends import get_backend

    be = get_backend(backend)
    st = GatedSetup(q, k, v, g, scale, initial_state)  # the spec's own argument rules
    B, H, L, K, Vd = st.B, st.H, st.L, st.K, st.V
    kmax = next((d for d in GLA_DIM_VARIANTS if K <= d), None)
    vmax = next((d for d in GLA_DIM_VARIANTS if Vd <= d), None)
    if kmax is None or vmax is None:
        raise UnsupportedOption(f"K={K}, V={Vd}: the GLA kernel keeps its state in shared memory, K and V <= 64")
    chunk = _tile(chunk_size, "chunk_size", DEFAULT_GLA_CHUNK)
    if chunk > MAX_GLA_CHUNK:
        raise UnsupportedOption(f"chunk_size={chunk}: the GLA kernel takes chunks of at most {MAX_GLA_CHUNK}")
    if B * H > 65535:
        raise UnsupportedOption(f"B * H = {B * H}: the grid's y dimension holds at most 65535")
    p = GLALaunch(_tile(threads, "threads", 256), chunk, kmax, vmax, float(np.float32(st.scale)))
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected at most {MAX_THREADS_PER_BLOCK}, got {p.threads}")
    if gla_shared_bytes(chunk, kmax, vmax) > MAX_STATIC_SHARED_BYTES:
        raise UnsupportedOption(f"chunk_size={chunk} with K, V <= ({kmax}, {vmax}) needs "
                                f"{gla_shared_bytes(chunk, kmax, vmax)} B of shared memory, more than "
                                f"{MAX_STATIC_SHARED_BYTES}")
    f32 = lambda a, name: _float_4d(a, name)  # noqa: E731
    qq, kk, vv = f32(st.q, "q"), f32(st.k, "k"), f32(st.v, "v")
    gg = np.zeros((B, H, L, K), np.float32) if g is None else np.ascontiguousarray(
        np.broadcast_to(np.maximum(np.asarray(g, np.float64).reshape(B, H, L, -1), -1e30), (B, H, L, K)),
        dtype=np.float32)
    s0 = f32(st.S0, "initial_state")
    o = np.full((B, H, L, Vd), np.nan, dtype=np.float32)
    s_out = np.full((B, H, K, Vd), np.nan, dtype=np.float32)
    if B * H == 0:
        return o, s_out
    o, s_out = be.gla(qq, kk, vv, gg, s0, o, s_out, p)
    _check_written(o=o, final_state=s_out)
    if not (np.isfinite(o).all() and np.isfinite(s_out).all()):
        raise ValueError("q, k, v, initial_state: expected outputs and state within float32 range, got one that "
                         "overflows")
    return o, s_out


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
            raise ValueError(f"{name}: expected at most {MAX_THREADS_PER_BLOCK} threads per block, got {getattr(p, name)}")
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
