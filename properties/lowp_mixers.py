"""Mixer adapters in float32 and bfloat16: correct ones the suite must pass, wrong ones it must fail.

Correct (``correct(kind, precision)``): each reads its inputs in ``precision``, computes in float32
arithmetic by a form other than the naive recurrence the bound is measured with, and stores its
outputs in ``precision`` (as a fused kernel does):

* linear_attention: the parallel form o = scale (Q K^T * exp(G_t - G_j), j <= t) V, G the
  cumulative log-gate (fla's ``naive_*`` parallel references, chunk_size = L), final state
  S_L = sum_j exp(G_L - G_j) k_j v_j^T;
* delta_rule: the recurrence with the erase term as k (k^T S) subtracted after the decay;
* wkv: the running-max recurrence of the RWKV-4 CUDA kernel (refimpl.mixers.rwkv4 form "stable");
* ssm_scan: the segment-sum form x_t = sum_{j<=t} exp(cum_t - cum_j) delta_j B_j u_j, cum the
  cumulative delta A (Mamba-2's SSD with one chunk).

Wrong (``wrong(kind, precision)``): the bundled wrong implementations (``properties.mixers_linear``
and ``properties.mixers_scan`` ``WRONG``: decay after the write, the decay applied after the delta
update, the bonus also on the previous token, Euler for A) run from inputs in ``precision`` with
outputs stored in it. Try them (``python -m properties``; the README shows the output)::

    REFIMPL_IMPLS=properties.lowp_mixers:CORRECT python -m properties --kind ssm_scan --profile ci
    REFIMPL_IMPLS=properties.lowp_mixers:WRONG python -m properties --kind ssm_scan --profile ci
"""

from __future__ import annotations

import numpy as np

from . import mixers_linear as ML
from . import mixers_scan as MS
from .tolerance import round_to

KINDS = ("linear_attention", "delta_rule", "wkv", "ssm_scan")
F = np.float32


def _f32(x):
    return None if x is None else np.asarray(x, dtype=F)


def _store(p, *xs):
    out = tuple(None if x is None else round_to(np.asarray(x, np.float64), p) for x in xs)
    return out if len(out) > 1 else out[0]


def _gla_parallel(p):
    def forward(q, k, v, g, scale, chunk_size):
        q, k, v = _f32(q), _f32(k), _f32(v)
        B, H, L, K = q.shape
        gg = np.zeros((B, H, L, K), F) if g is None else np.broadcast_to(_f32(g)[..., None] if g.ndim == 3 else _f32(g),
                                                                        (B, H, L, K))
        G = np.cumsum(gg, axis=2, dtype=F)
        causal = np.tril(np.ones((L, L), bool))[None, None, :, :, None]
        with np.errstate(over="ignore", under="ignore"):
            dec = np.exp(np.where(causal, G[:, :, :, None] - G[:, :, None], -np.inf)).astype(F)  # (B,H,t,j,K)
            A = np.einsum("bhtk,bhjk,bhtjk->bhtj", q, k, dec) * F(scale)
            o = A @ v
            S = np.einsum("bhjk,bhjk,bhjv->bhkv", np.exp(G[:, :, -1:] - G).astype(F), k, v)
        return _store(p, o, S)
    return forward


def _delta32(p):
    def forward(q, k, v, beta, g, scale, chunk_size):
        q, k, v = _f32(q), _f32(k), _f32(v)
        beta = _f32(beta if np.ndim(beta) == 4 else np.asarray(beta)[..., None])
        B, H, L, K = q.shape
        S = np.zeros((B, H, K, v.shape[3]), F)
        o = np.empty(v.shape, F)
        with np.errstate(under="ignore"):
            for t in range(L):
                kt = k[:, :, t]
                if g is not None:
                    S = np.exp(_f32(g)[:, :, t])[..., None, None] * S
                kS = np.einsum("bhk,bhkv->bhv", kt, S)
                S = S - kt[..., :, None] * (beta[:, :, t] * kS)[..., None, :] + kt[..., :, None] * (beta[:, :, t] * v[:, :, t])[..., None, :]
                o[:, :, t] = F(scale) * np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
        return _store(p, o, S)
    return forward


def _wkv_stable32(p):
    def forward(w, u, k, v):
        w, u, k, v = _f32(w), _f32(u), _f32(k), _f32(v)
        out = np.empty(k.shape, F)
        a = b = np.zeros(k.shape[:2] + k.shape[3:], F)
        o = np.full(a.shape, -np.inf, F)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            for t in range(k.shape[2]):
                kt, vt = k[:, :, t], v[:, :, t]
                no = np.maximum(o, u + kt)
                A, Bc = np.exp(o - no), np.exp(u + kt - no)
                out[:, :, t] = (A * a + Bc * vt) / (A * b + Bc)
                no = np.maximum(w + o, kt)
                A, Bc = np.exp(w + o - no), np.exp(kt - no)
                a, b, o = A * a + Bc * vt, A * b + Bc, no
        return _store(p, out)
    return forward


def _scan_segsum(p):
    def forward(u, dl, A, Bm, Cm, D, z, x0):
        u, dl, A, Bm, Cm = (_f32(x) for x in (u, dl, A, Bm, Cm))
        b, H, L, P = u.shape
        G = Bm.shape[1]
        Bg, Cg = np.repeat(Bm, H // G, axis=1), np.repeat(Cm, H // G, axis=1)
        cum = np.cumsum(dl[..., None] * A[None, :, None], axis=2, dtype=F)  # (b, H, L, P, N)
        causal = np.tril(np.ones((L, L), bool))[None, None, :, :, None, None]
        with np.errstate(over="ignore", under="ignore"):
            seg = np.exp(np.where(causal, cum[:, :, :, None] - cum[:, :, None], -np.inf)).astype(F)
            xs = np.einsum("bhtjpn,bhjpn->bhtpn", seg, dl[..., None] * Bg[:, :, :, None, :] * u[..., None])
            if x0 is not None:
                xs = xs + np.exp(cum) * _f32(x0)[:, :, None]
        y = np.einsum("bhlpn,bhln->bhlp", xs, Cg)
        if D is not None:
            y = y + _f32(D)[None, :, None] * u
        if z is not None:
            zz = _f32(z)
            y = y * (zz / (1 + np.exp(-zz)))
        return _store(p, y, xs[:, :, -1])
    return forward


def correct(kind: str, precision: str = "float32"):
    """A correct ``kind`` adapter computing in float32, inputs and outputs in ``precision``."""
    name = f"lowp.{kind}[{precision}]"
    if kind == "linear_attention":
        return ML.LinearAttentionAdapter(name, _gla_parallel(precision), capabilities=frozenset(
            {"gate_scalar", "gate_channel", "final_state"}), precision=precision)
    if kind == "delta_rule":
        return ML.DeltaRuleAdapter(name, _delta32(precision), frozenset({"gated", "final_state", "beta_per_channel"}),
                                   precision=precision)
    if kind == "wkv":
        return MS.WKVAdapter(name, _wkv_stable32(precision), frozenset({"large_keys"}), precision=precision)
    if kind == "ssm_scan":
        return MS.ScanAdapter(name, _scan_segsum(precision), MS._ALL, precision=precision)
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


_WRONG_OF = {"linear_attention": (ML, "decay_after_write"), "delta_rule": (ML, "delta_decay_after_update"),
             "wkv": (MS, "wkv_u_on_past"), "ssm_scan": (MS, "scan_euler_a")}


def wrong(kind: str, precision: str = "float32"):
    """The bundled wrong ``kind`` implementation (module docstring) run in ``precision``."""
    import dataclasses

    mod, bug = _WRONG_OF[kind]
    base = mod.WRONG[bug]

    def forward(*args):
        out = base.forward(*(round_to(a, precision) if isinstance(a, np.ndarray) else a for a in args))
        return tuple(None if x is None else _store(precision, x) for x in out) if isinstance(out, tuple) \
            else _store(precision, out)
    return dataclasses.replace(base, name=f"wrong[{bug},{precision}]", forward=forward, precision=precision)


CORRECT = [correct(k, p) for k in KINDS for p in ("float32", "bfloat16")]
WRONG = [wrong(k, p) for k in KINDS for p in ("float32", "bfloat16")]
