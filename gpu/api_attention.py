"""The attention facade: ``flash_attention`` (FA2 forward), ``flash_attention_backward``,
``split_kv_attention`` (flash-decoding) and ``paged_attention`` (decode over a block table); the
argument rules and launch scalars of ``gpu.attention_numba`` / ``gpu.attention_c`` and the tiled
kernels that share their tiles (``gpu.attention_backward_*``, ``gpu.split_kv_*``, ``gpu.paged_*``).
Reached through ``gpu.api`` (whose docstring states the shared rules)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from refimpl import validation as V
from refimpl.masks import offset as alignment_offset
from refimpl.sdpa import check_qkv_shapes, check_window  # the spec's own argument rules

from .api_common import (_F32_MAX, _INT32_LIMIT, MAX_STATIC_SHARED_BYTES, MAX_THREADS_PER_BLOCK, _check_written,
                         _float_4d, _int_array, _positive_float32, _tile)
from .errors import unsupported


#: largest head dims the kernels are built for (shared-array shapes)
MAX_HEAD_DIM = 128
#: head-dim variants compiled on demand: the smallest that holds D is used
HEAD_DIM_VARIANTS = (16, 32, 64, 128)
#: default tile sizes (see gpu.attention_numba for the shared-memory budget)
DEFAULT_BLOCK_Q = 16
DEFAULT_BLOCK_K = 16


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
    raise unsupported(name, f"a head dim <= {MAX_HEAD_DIM} (the largest the kernels are built for)", d)


def prepare_attention(q, k, v, *, mask=None, causal=False, align="bottom_right", window=None,
                      scale=None, softcap=None, bias=None, dropout_mask=None, dropout_p=0.0,
                      block_q=None, block_k=None):
    """Validate the arguments of ``flash_attention``; returns (q, k, v, AttentionLaunch)
    with float32 C-contiguous copies of the inputs."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    q, k, v = _float_4d(q, "q"), _float_4d(k, "k"), _float_4d(v, "v")
    B, Hq, Hkv, Lq, Lk, D, Dv = check_qkv_shapes(q, k, v)  # the spec's own shape rules
    win = check_window(window)
    o = alignment_offset(Lq, Lk, align)
    if B * Hq > 65535:
        raise unsupported("q", "B * Hq <= 65535 (the grid's y dimension)", f"B * Hq = {B * Hq}")
    # an unbounded side becomes a bound wider than any sequence (int32-safe)
    unbounded = Lq + Lk
    left = unbounded if win is None or win[0] is None else min(win[0], unbounded)
    right = unbounded if win is None or win[1] is None else min(win[1], unbounded)
    if causal:
        right = min(right, 0)  # causal == window (None, 0), combined by AND
    scale_, softcap_, bq, bk = _launch_scalars(q, k, D, scale, softcap, block_q, block_k)
    p = AttentionLaunch(bq, bk, _head_dim_variant(D, "D"), _head_dim_variant(Dv, "Dv"),
                        scale_, softcap_, o, left, right, Hq // Hkv)
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block_q, block_k: expected block_q * block_k <= {MAX_THREADS_PER_BLOCK} threads per block, "
                         f"got {p.threads}")
    if p.shared_bytes > MAX_STATIC_SHARED_BYTES:
        raise ValueError(f"block_q, block_k: expected tiles within {MAX_STATIC_SHARED_BYTES} B of shared memory, got "
                         f"{p.shared_bytes} B (block_q={bq}, block_k={bk}, head dims ({p.d_max}, {p.dv_max}))")
    drop_p = V.real_number(dropout_p, "dropout_p", minimum=0.0, maximum=1.0, max_open=True)
    # valid options the kernels lack: refused by name once every argument is known valid
    if mask is not None:
        raise unsupported("mask", "None (the kernels implement causal, align and window; use refimpl.attention for "
                          "mask arrays and predicates)", type(mask).__name__)
    if bias is not None:
        raise unsupported("bias", "None (the kernels have no additive score bias; use refimpl.attention)",
                          type(bias).__name__)
    if dropout_mask is not None or drop_p != 0.0:
        raise unsupported("dropout_mask, dropout_p", "no dropout (the kernels have none; use refimpl.attention)",
                          f"dropout_p = {drop_p}" + ("" if dropout_mask is None else " and a mask"))
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
    saved = out is not None
    if not saved:
        out = np.full((B, Hq, Lq, Dv), np.nan, dtype=np.float32)
        lse = np.full((B, Hq, Lq), np.nan, dtype=np.float32)
        out, lse = be.flash_attention(q, k, v, out, lse, p)
        _check_written(out=out, lse=lse)
    else:
        out = _float_4d(out, "out")
        if out.shape != (B, Hq, Lq, Dv):
            raise ValueError(f"out: expected shape {(B, Hq, Lq, Dv)}, got {out.shape}")
        lse64 = V.as_float_array(lse, "lse", shape=(B, Hq, Lq), shape_doc="(B, Hq, Lq)", allow_neg_inf=True)
        with np.errstate(over="ignore"):
            lse = np.array(lse64, dtype=np.float32)  # a copy; -inf allowed (rows that see no key)
        if not np.array_equal(np.isfinite(lse), np.isfinite(lse64)):
            raise ValueError("lse: expected entries within float32 range (the kernels' precision), got one beyond it")
    dq = np.full(q.shape, np.nan, dtype=np.float32)
    dk = np.full(k.shape, np.nan, dtype=np.float32)
    dv = np.full(v.shape, np.nan, dtype=np.float32)
    dq, dk, dv = be.flash_attention_backward(q, k, v, out, lse, dout, dq, dk, dv, p)
    if saved and not all(np.isfinite(g).all() for g in (dq, dk, dv)):
        # P = exp(S - lse) overflowed (lse below a row's scores: not this forward's), or a gradient is beyond float32
        raise ValueError("out, lse: expected the forward's saved results for these q, k, v and options (P = exp(S - "
                         "lse) <= 1), got gradients beyond float32 range (an lse below a row's scores, or gradients "
                         "too large for float32)")
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
        raise unsupported("boundaries, num_splits", f"at most {MAX_SPLITS} key chunks (the split-KV kernels' limit)",
                          len(chunks))
    if len(chunks) * B * Hq * Lq * max(Dv, 1) > _INT32_LIMIT:
        raise unsupported("q, v, boundaries, num_splits", "chunks * B * Hq * Lq * Dv partial elements within int32 "
                          "(the kernels' indices)", len(chunks) * B * Hq * Lq * max(Dv, 1))
    if min(B, Hq, Lq) == 0 or Lk == 0:
        return (np.zeros((B, Hq, Lq, Dv), dtype=np.float32), np.full((B, Hq, Lq), -np.inf, dtype=np.float32))
    edges = np.array([chunks[0][0]] + [c[1] for c in chunks], dtype=np.int32)
    out = np.full((B, Hq, Lq, Dv), np.nan, dtype=np.float32)
    lse = np.full((B, Hq, Lq), np.nan, dtype=np.float32)
    out, lse = be.split_kv_attention(q, k, v, edges, out, lse, p)
    _check_written(out=out, lse=lse)
    return out, lse


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
    if D < 1 or Dv < 1:
        raise ValueError(f"q, v_pool: expected head dims D, Dv >= 1, got D = {D}, Dv = {Dv}")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"q, k_pool: expected Hq a positive multiple of Hkv, got Hq={Hq}, Hkv={Hkv}")
    if B * Hq > 65535:
        raise unsupported("q", "B * Hq <= 65535 (the grid's y dimension)", f"B * Hq = {B * Hq}")
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
        raise unsupported("window", "(left, 0) or (left, None) (decode attention is causal)", repr(win))
    left = _INT32_LIMIT // 4 if win is None or win[0] is None else min(win[0], _INT32_LIMIT // 4)
    scale_, softcap_, bq, bk = _launch_scalars(q, kp, D, scale, softcap, block_q, block_k)
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


def _launch_scalars(q, k, D, scale, softcap, block_q, block_k):
    """(scale, softcap, block_q, block_k) of a launch, checked: float32 scale (default 1 / sqrt(D)) and
    softcap (0: none), the scores within refimpl's overflow contract at float32's range (a softcap does
    not help: the kernels form the raw float32 score before capping it), and the tiles."""
    scale_ = float(np.float32(1.0 / math.sqrt(D))) if scale is None else _positive_float32(scale, "scale")
    softcap_ = 0.0 if softcap is None else _positive_float32(softcap, "softcap")
    V.check_score_range(q.astype(np.float64), k.astype(np.float64), scale_, None, None, limit=_F32_MAX / 2,
                        what="float32 (the kernels' precision)")
    return scale_, softcap_, _tile(block_q, "block_q", DEFAULT_BLOCK_Q), _tile(block_k, "block_k", DEFAULT_BLOCK_K)
