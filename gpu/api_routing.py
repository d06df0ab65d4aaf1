"""The routing facade: ``route`` (MoE token-choice routing, ``gpu.routing_numba`` /
``gpu.routing_c``), its argument rules (``prepare_route``, refimpl's own routing setup) and the
float32 logits the kernels get (``_route_logits_float32``: a refusal, by name, of what float32
cannot compute as the float64 spec does). Reached through ``gpu.api``."""

from __future__ import annotations

import dataclasses

import numpy as np

from .api_common import (_F32_MAX, _INT32_LIMIT, MAX_THREADS_PER_BLOCK, _check_written, _positive_float32, _tile)
from .constants import INT_UNWRITTEN
from .errors import unsupported


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
        raise unsupported("selection_bias", "None (the kernels have no selection-only bias; use refimpl.moe.route)",
                          "an array")
    if opts.n_groups is not None:
        raise unsupported("n_groups, topk_groups", "None (the kernels have no group-limited selection; use "
                          "refimpl.moe.route)", f"n_groups = {opts.n_groups}")
    if opts.score not in SUPPORTED_SCORES:
        raise unsupported("score", f"one of {SUPPORTED_SCORES} (what the kernels implement)", repr(opts.score))
    if opts.drop_order not in SUPPORTED_DROP_ORDERS:
        raise unsupported("drop_order", f"one of the position orders {SUPPORTED_DROP_ORDERS} (what the kernels "
                          f"implement)", repr(opts.drop_order))
    C = resolve_capacity(opts.capacity, T, E, k)
    if T * max(E, k) > _INT32_LIMIT:
        raise unsupported("logits", "T * E within int32 (the kernels' indices)", f"T * E = {T * E}")
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
