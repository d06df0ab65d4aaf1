"""The helpers every attention check shares (moved from ``properties/attention.py``, which
re-exports ``_bounds``): ``_run`` calls an adapter's forward and returns float64 (out, lse);
``_bounds`` is the adapter's (atol_out, atol_lse) against the float64 spec (the derived float64
bound, plus the online-rescaling term for tiled adapters, or the one low-precision rule of
``properties.precision``); ``_close`` / ``_close_lse`` compare within it, with a convention's
NaN / +inf entries for fully masked rows required exactly (``_split_nonfinite``);
``_assert_matches`` compares both outputs of one run with the reference's.
"""

from __future__ import annotations

import numpy as np

import refimpl

from . import attention_cases as C
from .attention_lowp import kernel_bounds
from .precision import precision_of
from .tolerance import attention_forward_bounds, compare_close, compare_lse, flash_forward_bounds


def _run(impl, case: C.AttnCase, **override):
    kw = {**case.kwargs, **override}
    out, lse = impl.forward(case.q, case.k, case.v, **kw)
    return np.asarray(out, dtype=np.float64), (None if lse is None else np.asarray(lse, dtype=np.float64))


def _bounds(impl, case: C.AttnCase):
    """(atol_out, atol_lse) for comparing ``impl`` on ``case`` with the float64 spec.

    float64 adapters: the derived float64 bound (``attention_forward_bounds``),
    plus the online-rescaling term for tiled ones (``flash_forward_bounds``).
    float32, bfloat16 and float16 adapters: the one precision rule (``properties.precision``),
    FACTOR x the error of the naive eager computation in that precision (the worse of its two
    orders) plus the rounding floor, ``properties.attention_lowp.kernel_bounds``, on the
    dropout-free problem.
    Declared ``tiles`` without ``tiling``: the tiled bound with the smallest tile
    (the most online steps), which only widens the float64 bound by the
    rescaling term.
    """
    kw = C.spec_kwargs(case)
    precision = precision_of(impl)
    if precision != "float64":  # the naive errors against the float64 (out, lse) the bound forms itself
        return kernel_bounds(case.q, case.k, case.v, None, None, C.visible(case), _scale(case), precision,
                             kw.get("softcap"), kw.get("bias"))
    spec_kw = {k: v for k, v in kw.items() if k not in ("dropout_mask", "dropout_p")}
    ref_out, ref_lse = refimpl.attention(case.q, case.k, case.v, **spec_kw)
    tiling = getattr(impl, "tiling", None)
    if tiling is None and getattr(impl, "tiles", None):
        tiling = (min(impl.tiles), 1)
    if tiling is not None:
        block_k, chunks = tiling
        return flash_forward_bounds(case.q, case.k, case.v, block_k=block_k, chunks=chunks, scale=kw.get("scale"),
                                    softcap=kw.get("softcap"), bias=kw.get("bias"), lse=ref_lse)
    return attention_forward_bounds(case.q, case.k, case.v, scale=kw.get("scale"), bias=kw.get("bias"), lse=ref_lse)


def _scale(case) -> float:
    return case.kwargs.get("scale") or 1.0 / np.sqrt(case.q.shape[-1])


#: unit roundoff of each precision (relative rounding error of one operation)
_UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}


def _split_nonfinite(name, got, ref, ctx, lse=False, precision="float64"):
    """(got, ref) with the entries where ``ref`` is NaN or +inf (a convention's fully masked
    rows: xformers' NaN, flash-attn 2's lse +inf) checked for equality and set to 0 in both,
    so the bound compares the rest. -inf in an lse is left to ``compare_lse``. An lse of
    magnitude >= 1e30 (JAX's mask value + log Lk) is the library's mask constant rounded
    to its precision: relative error <= 4 u there."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {ref.shape}; {ctx}")
    huge = np.isfinite(ref) & (np.abs(ref) >= 1e30) if lse else np.zeros(ref.shape, bool)
    special = np.isnan(ref) | np.isposinf(ref) | (np.isneginf(ref) if not lse else False) | huge
    if not special.any():
        return got, ref
    with np.errstate(invalid="ignore"):
        near = huge & (np.abs(got - ref) <= 4 * _UNIT_ROUNDOFF[precision] * np.abs(ref))
    same = (np.isnan(got) & np.isnan(ref)) | (got == ref) | near
    bad = special & ~same
    if bad.any():
        w = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{name}{list(map(int, w))} = {got[w]!r}, expected {ref[w]!r} (the adapter's "
                             f"convention for a fully masked row); {ctx}")
    got_nan = np.isnan(got) & ~special
    if got_nan.any():
        w = tuple(np.argwhere(got_nan)[0])
        raise AssertionError(f"{name}{list(map(int, w))} is NaN, expected {ref[w]!r}; {ctx}")
    return np.where(special, 0.0, got), np.where(special, 0.0, ref)


def _close(name, got, ref, atol, ctx):
    """compare_close, with a convention's NaN / +inf entries of ``ref`` required exactly."""
    got, ref = _split_nonfinite(name, got, ref, ctx)
    compare_close(name, got, ref, atol, ctx)


def _close_lse(name, got, ref, atol, ctx, precision="float64"):
    got, ref = _split_nonfinite(name, got, ref, ctx, lse=True, precision=precision)
    compare_lse(name, got, ref, atol, ctx)


def _empty_rows_move(impl) -> bool:
    """Whether ``impl``'s fully masked rows depend on keys they do not see (a convention whose
    row is the mean of all values: JAX, HF eager); such rows are left out of the invariances
    about hidden keys and checked by matches_reference / fully_masked_rows instead."""
    conv = C.convention(impl)
    if conv is None:
        return False
    fm = conv.fully_masked_float64 if conv.fully_masked_float64 and getattr(impl, "precision", "float64") == "float64" else conv.fully_masked
    return fm == "uniform"


def _assert_matches(impl, case, out, lse, ref_out, ref_lse, what="", relation=False):
    """out/lse within ``impl``'s bound of the reference values for ``case``.

    ``relation=True`` when both sides come from ``impl`` (two runs that must agree):
    each may err by the bound, so they may differ by twice it.
    """
    atol_out, atol_lse = _bounds(impl, case)
    if relation:
        atol_out, atol_lse = 2 * atol_out, 2 * atol_lse
    ctx = f"{impl.name}{what} on {case!r}"
    _close("out", out, ref_out, atol_out, ctx)
    if lse is not None and "lse" in impl.capabilities:
        _close_lse("lse", lse, ref_lse, atol_lse, ctx, getattr(impl, "precision", "float64"))
