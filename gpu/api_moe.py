"""The MoE expert facade: ``moe_permute`` (tokens permuted by expert) and ``moe_experts`` (permute,
two grouped GEMMs, the gated combine) over ``gpu.moe_numba`` / ``gpu.moe_c``. Reached through
``gpu.api`` (whose docstring states the shared rules)."""

from __future__ import annotations

import dataclasses

import numpy as np

from refimpl import validation as V

from .api_common import (_INT32_LIMIT, MAX_STATIC_SHARED_BYTES, MAX_THREADS_PER_BLOCK, _check_written, _row_threads,
                         _rows, _tile)
from .constants import INT_UNWRITTEN
from .errors import unsupported


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
        raise unsupported("x, routing", f"rows * D <= {_INT32_LIMIT} (the kernels index with int32)", rows * max(D, 1))
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

    from refimpl import validation as RV

    experts = RV.experts(experts, "experts", E, D)  # a sequence of E callables of d_model D
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
    raise unsupported("experts", "a list of refimpl.moe.FFNExpert or of SwiGLUExpert (one type: what the kernels run)",
                      "other experts")


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
