"""The block facade: ``rms_norm`` and ``layer_norm`` (``gpu.norm_numba`` / ``gpu.norm_c``) and
``apply_rope`` (``gpu.rope_numba`` / ``gpu.rope_c``, with its host-built float32 cos/sin table).
Reached through ``gpu.api`` (whose docstring states the shared rules)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .api_common import (DEFAULT_ROW_THREADS, MAX_THREADS_PER_BLOCK, _check_written, _float_4d, _positive_float32,
                         _row_threads, _rows, _tile)
from .errors import unsupported


@dataclasses.dataclass(frozen=True)
class NormLaunch:
    """Threads per row (a power of two) and the scalars of the norm kernels (``gpu.norm_numba``)."""

    threads: int
    eps: float
    outside: int = 0  # RMSNorm: 1 = eps outside the sqrt
    offset: float = 0.0  # RMSNorm: weight offset (1 for HF Gemma)


def _vector(p, name: str, d: int, default: float) -> np.ndarray:
    """weight / bias as float32 (d,); ``default`` everywhere when None."""
    if p is None:
        return np.full(d, default, dtype=np.float32)
    if np.shape(p) != (d,):
        raise ValueError(f"{name}: expected shape ({d},) (the last axis of x), got {np.shape(p)}")
    return _rows(p, name).reshape(-1)


def _norm_eps(eps) -> float:
    if eps == 0:
        raise unsupported("eps", "> 0 (the float32 kernels divide a zero row by sqrt(eps))", 0.0)
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
    with np.errstate(over="ignore"):
        off32 = 0.0 if weight is None else float(np.float32(offset))
    if not np.isfinite(off32):
        raise ValueError(f"weight_offset: expected a value within float32 range (the kernels' precision), got {offset!r}")
    p = NormLaunch(_row_threads(threads), _norm_eps(eps), int(placement == "outside_sqrt"), off32)
    if rows.shape[0] == 0:
        return np.zeros(shape, np.float32)
    y = np.full(rows.shape, np.nan, dtype=np.float32)
    y = be.norm("rms_norm", rows, w, np.zeros(d, np.float32), y, p)
    _output_in_float32(y, "x, weight, weight_offset")
    _check_written(y=y)
    return y.reshape(shape)


def _output_in_float32(y: np.ndarray, names: str) -> None:
    """A norm's output beyond float32 (a weight near float32's top times a normalised entry up to
    sqrt(d)) is an error naming the arguments, never inf."""
    if np.isinf(y).any():
        raise ValueError(f"{names}: expected outputs within float32 range (the kernels' precision), got one beyond it")


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
    _output_in_float32(y, "x, weight, bias")
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
        raise unsupported("x", "B * H <= 65535 (the grid's y dimension)", f"B * H = {B * H}")
    p = RopeLaunch(_tile(threads, "threads", DEFAULT_ROW_THREADS), int(lay == "interleaved"))
    if p.threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"threads: expected at most {MAX_THREADS_PER_BLOCK}, got {p.threads}")
    if x32.size == 0 or d == 0:
        return x32
    x32 = be.rope(x32, cos, sin, p)
    if not np.isfinite(x32).all():
        raise ValueError("x, scaling: expected rotated entries within float32 range, got one that overflows")
    return x32
