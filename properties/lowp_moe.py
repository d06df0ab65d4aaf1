"""MoE adapters in float32 and bfloat16: correct ones the suite must pass, wrong ones it must fail.

``router(precision)`` is a router kernel as a low-precision GPU kernel computes it: logits read
in ``precision``, softmax (or sigmoid) in float32 arithmetic as exp(z - max) times 1 / sum (not
the naive baseline's division of every entry: a different order of operations), top-k on those float32 scores (equal
float32 scores to the lower expert id: near-ties the float32 scores cannot resolve go either
way), slots by refimpl's rule on the kernel's own scores, gates normalised in float32, probs and
gates stored in ``precision``. Every MoE function of ``moe(precision)`` is refimpl's float64
computation from inputs rounded to ``precision``, outputs stored in ``precision`` (a kernel that
accumulates wider than it stores).

Wrong ones (each must fail under its declared precision):
``router(p, bug="softmax_over_tokens")``: the softmax taken over the token axis (a dim mix-up),
so the selection picks clearly worse experts; ``router(p, bug="no_renormalize")``: gates left
unnormalised although before/after_drop was asked; ``router(p, bug="topk_unsorted")``: the right
k experts in expert-id order (``torch.topk(sorted=False)``), so choice j holds a clearly worse
expert than the spec's j-th.

Try them (``python -m properties``; the README shows the output)::

    REFIMPL_IMPLS=properties.lowp_moe:ROUTERS python -m properties --kind moe --profile ci
    REFIMPL_IMPLS=properties.lowp_moe:WRONG_ROUTERS python -m properties --kind moe --profile ci
"""

from __future__ import annotations

import dataclasses

import numpy as np

import refimpl.moe as M
from refimpl.moe.slots import assign_slots

from .moe_protocol import MOE_KIND, REFIMPL, MoEAdapter
from .tolerance import round_to

BUGS = (None, "softmax_over_tokens", "no_renormalize", "topk_unsorted")
_ROUTE_CAPS = frozenset({"route", "route.drop_orders", "route.padding"})


def _store(x, precision):
    return round_to(np.asarray(x, dtype=np.float64), precision)


def _scores32(z, score, axis=-1):
    """float32 scores: softmax as exp(z - m) times the reciprocal of its sum (one division per
    row, as fused kernels do), or sigmoid as exp(-log1p(exp(-z))). (exp(z - lse) with
    lse = m + log(sum) rounded to float32 would err by u32 |z|: 1e-5 at |z| ~ 1e4, where z - m is
    exact; the suite rejects that, as the logits are exact inputs.)"""
    z = np.asarray(z, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        if score == "sigmoid":
            return np.exp(-np.logaddexp(np.float32(0), -z)).astype(np.float32)
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return (e * (np.float32(1) / np.sum(e, axis=axis, keepdims=True, dtype=np.float32))).astype(np.float32)


def _route(precision, bug):
    def route(logits, k, *, padding_mask=None, seed=None, **options):
        opts = M.router.resolve_options(**options)
        if opts.n_groups is not None or opts.normalize_eps:
            raise NotImplementedError("this example router has no group-limited selection or normalize_eps")
        z = np.asarray(_store(logits, precision), dtype=np.float32)
        T, E = z.shape
        p = _scores32(z, opts.score, axis=0 if bug == "softmax_over_tokens" else -1)
        idx = np.argsort(-p, axis=-1, kind="stable")[:, :k].astype(np.int64)  # equal float32 scores: lower id
        if bug == "topk_unsorted":  # torch.topk(sorted=False) / argpartition: the k best, in expert order
            idx = np.sort(idx, axis=-1)
        mask = np.ones(T, bool) if padding_mask is None else np.asarray(padding_mask, bool)
        C = M.router.resolve_capacity(opts.capacity, T, E, k)
        kept, position = assign_slots(idx, mask, E, C, opts.drop_order, p.astype(np.float64), seed, logits=z)
        w = np.take_along_axis(p, idx, axis=-1)
        norm = "none" if bug == "no_renormalize" else opts.normalize
        if norm == "none":
            g = np.where(kept, w, np.float32(0))
        else:
            num = w if norm == "before_drop" else np.where(kept, w, np.float32(0))
            den = num.sum(axis=-1, keepdims=True, dtype=np.float32)
            g = np.where(kept & (den > 0), num / np.where(den > 0, den, np.float32(1)), np.float32(0))
        g = g * np.float32(opts.route_scale)
        counts = np.bincount(idx[mask].ravel(), minlength=E).astype(np.int64)
        return M.Routing(probs=_store(p, precision), indices=idx, gates=_store(g, precision), kept=kept,
                         position=position, capacity=C, counts=counts, token_mask=mask, options=opts)
    return route


def router(precision: str = "float32", bug=None) -> MoEAdapter:
    """A float32 or bfloat16 router kernel (module docstring); ``bug`` one of ``BUGS``."""
    name = f"lowp.router[{precision}]" if bug is None else f"lowp.router[{precision},{bug}]"
    return MoEAdapter(name=name, route=_route(precision, bug), capabilities=_ROUTE_CAPS, precision=precision)


def _stored(fn, precision):
    """``fn`` with float array inputs rounded to ``precision`` and float outputs stored in it."""
    def out(x):
        if isinstance(x, M.Routing):
            return dataclasses.replace(x, probs=_store(x.probs, precision), gates=_store(x.gates, precision))
        if isinstance(x, tuple):
            return tuple(out(v) for v in x)
        if isinstance(x, M.losses.NoisyTopK):
            return dataclasses.replace(x, gates=_store(x.gates, precision), noisy_logits=_store(x.noisy_logits, precision))
        if isinstance(x, (float, np.floating)) or (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
            return float(_store(x, precision)) if np.ndim(x) == 0 else _store(x, precision)
        return x

    def inp(x):
        return _store(x, precision) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x

    def wrapped(*args, **kw):
        return out(fn(*(inp(a) for a in args), **{k: inp(v) for k, v in kw.items()}))
    return wrapped


def moe(precision: str = "float32", base: MoEAdapter = REFIMPL) -> MoEAdapter:
    """Every MoE capability in ``precision``, each ``base``'s function (refimpl's by default; a wrong
    adapter of ``properties.moe.WRONG`` to run that bug in p) from inputs rounded to p with its
    float outputs stored in p (presets, group-limited routing included)."""
    fns = {m: _stored(getattr(base, m), precision) for m in MOE_KIND.methods if getattr(base, m) is not None}
    name = f"lowp.moe[{precision}]" if base is REFIMPL else f"{base.name}[{precision}]"
    return dataclasses.replace(base, name=name, precision=precision, **fns)


ROUTERS = [router("float32"), router("bfloat16")]
WRONG_ROUTERS = [router("float32", "topk_unsorted"), router("bfloat16", "no_renormalize")]
