"""Conformance properties of multi-head latent attention (kind "mla").

An adapter supplies ``forward(x, weights, *, absorbed)`` -> y (B, L, d_model)
(causal self-attention over positions 0..L-1, refimpl.mla_attention's
conventions: refimpl.mla.MLAWeights, interleaved decoupled RoPE, scale
(d_nope + d_rope)^(-1/2)) and, with capability "decode",
``decode(x, weights, *, absorbed, chunks)`` feeding the tokens in chunks through
its cache (naive: per-head k, v; absorbed: the latent c_KV and k_pe).

The bundled ``deepseek_einsum`` follows DeepSeek-V3 inference/model.py's
einsums ("bshd,hdc->bshc", "bshc,btc->bsht", ...) with its own caches, mask by
position and softmax, independent of refimpl.attention.

Bound (``_bound``) for two float64 computations of one MLA output that may
associate differently (naive vs absorbed): with u = 2^-53, g(n) = n u / (1 - n u),
    score  |ds| <= g(d_nope + d_c + d_rope + 4) scale (sum |q_nope||W_UK||c| + sum |q_pe||k_pe|) =: Delta
    probs  ||dP||_1 <= 2 Delta per side
    output |do| <= (8 Delta + 2 g(Lk + d_c + 8)) max_t sum_j |c_tj| |W_UV[h, e, j]|
    y      |dy| <= sum |do| |W_o| + 2 g(H d_v + 2) sum |o| |W_o|,   times a safety factor 2.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import refimpl
from refimpl import mla as MLA

from .attention_lowp import naive_attention, rounding_floor
from .core import Property
from .precision import FACTOR, naive_error, naive_ops, output_floor, precision_of
from .protocol import Capability, Kind
from .tolerance import compare_close, round_to
from .strategy_cache import sampled

U = 2.0**-53

KINDS = (
    Kind(
        "mla",
        "multi-head latent attention (DeepSeek-V2/V3), naive and absorbed; compared with refimpl.mla_attention",
        {
            "forward": "forward(x, weights: refimpl.mla.MLAWeights, *, absorbed: bool) -> y (B, L, d_model). x (B, L, "
                       "d_model) float64, causal self-attention over positions 0..L-1. MLAWeights: W_q (d_model, "
                       "H (d_nope + d_rope)) with head h's columns [h (dn + dr), (h + 1)(dn + dr)) as [q_nope | q_pe]; "
                       "W_dkv (d_model, d_c + d_rope) as [c_KV | k_pe]; W_ukv (d_c, H (d_nope + d_v)) with head h's "
                       "columns [h (dn + dv), (h + 1)(dn + dv)) as [W_uk | W_uv] (DeepSeek wkv_b transposed); W_o "
                       "(H d_v, d_model); num_heads, d_nope, d_rope (even), d_v ints. RoPE on q_pe and the shared "
                       "k_pe at positions 0..L-1, layout 'interleaved' (pairs (2i, 2i+1), DeepSeek), base 10000; "
                       "scale (d_nope + d_rope)^-1/2 in both forms",
            "decode": "decode(x, weights, *, absorbed, chunks) -> y (B, L, d_model), tokens fed through a cache; "
                      "chunks a list of positive ints summing to L (RoPE at absolute positions)",
        },
        ("forward",),
        {"decode": Capability("decodes in chunks with a per-head (naive) or latent (absorbed) cache", ("decode",))},
    ),
)


@dataclasses.dataclass(frozen=True)
class MLAAdapter:
    name: str
    forward: Callable
    capabilities: frozenset
    decode: Callable | None = None
    kind: str = "mla"
    precision: str = "float64"


def _softmax_rows(s):
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def _deepseek(x, Wt: MLA.MLAWeights, *, absorbed, chunks=None, bug=None, precision="float64"):
    """DeepSeek-V3 MLA.forward's einsums over chunks (start_pos), caches as growing arrays;
    ``precision``: every product, RoPE and softmax result rounded to it (a low-precision run)."""
    def r(a):
        return round_to(a, precision)

    B, L, _ = x.shape
    H, dn, dr, dv, dc = Wt.num_heads, Wt.d_nope, Wt.d_rope, Wt.d_v, Wt.d_c
    wkv_b = Wt.W_ukv.T.reshape(H, dn + dv, dc)  # DeepSeek's wkv_b.weight.view(H, -1, kv_lora_rank)
    if bug == "ukv_split_wrong":
        wkv_b = Wt.W_ukv.T.reshape(dn + dv, H, dc).transpose(1, 0, 2)
    scale = (dn + dr) ** -0.5
    if absorbed and bug == "absorbed_missing_scale":
        scale = (dc + dr) ** -0.5  # the latent width is not the attention head dim
    caches = {"k": np.zeros((B, 0, H, dn + dr)), "v": np.zeros((B, 0, H, dv)), "kv": np.zeros((B, 0, dc)),
              "pe": np.zeros((B, 0, dr))}
    outs, start = [], 0
    for n in chunks or [L]:
        xs = x[:, start : start + n]
        pos = np.arange(start, start + n) if bug != "decode_rope_from_zero" else np.arange(n)
        q = r(xs @ Wt.W_q).reshape(B, n, H, dn + dr)
        q_nope = q[..., :dn]
        q_pe = r(refimpl.apply_rope(q[..., dn:].transpose(0, 2, 1, 3), pos, layout="interleaved")).transpose(0, 2, 1, 3)
        kv = r(xs @ Wt.W_dkv)
        c, k_pe = kv[..., :dc], r(refimpl.apply_rope(kv[:, None, :, dc:], pos, layout="interleaved")[:, 0])
        if absorbed:
            caches["kv"] = np.concatenate([caches["kv"], c], axis=1)
            caches["pe"] = np.concatenate([caches["pe"], k_pe], axis=1)
            q_lat = r(np.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :dn]))
            s = r(np.einsum("bshc,btc->bsht", q_lat, caches["kv"]))
            if bug != "absorbed_no_rope":
                s = r(s + r(np.einsum("bshr,btr->bsht", q_pe, caches["pe"])))
        else:
            kvb = r(np.einsum("btc,hdc->bthd", c, wkv_b))
            k = np.concatenate([kvb[..., :dn], np.broadcast_to(k_pe[:, :, None], (B, n, H, dr))], axis=-1)
            caches["k"] = np.concatenate([caches["k"], k], axis=1)
            caches["v"] = np.concatenate([caches["v"], kvb[..., dn:]], axis=1)
            s = r(np.einsum("bshd,bthd->bsht", np.concatenate([q_nope, q_pe], axis=-1), caches["k"]))
        T = start + n
        future = np.arange(T)[None, :] > np.arange(start, T)[:, None]  # (n, T): key after query
        P = r(_softmax_rows(np.where(future[None, :, None, :], -np.inf, r(s * scale))))
        if absorbed:
            o = r(np.einsum("bshc,hdc->bshd", r(np.einsum("bsht,btc->bshc", P, caches["kv"])), wkv_b[:, dn:]))
        else:
            o = r(np.einsum("bsht,bthd->bshd", P, caches["v"]))
        outs.append(r(o.reshape(B, n, H * dv) @ Wt.W_o))
        start = T
    return np.concatenate(outs, axis=1)


def _ref_forward(x, weights, *, absorbed):
    return MLA.mla_attention(x, weights, absorbed=absorbed)


def _ref_decode(x, weights, *, absorbed, chunks):
    W = weights
    cache = (MLA.MLALatentCache(W.d_c, W.d_rope, batch=x.shape[0]) if absorbed
             else refimpl.ContiguousCache(W.num_heads, W.d_nope + W.d_rope, W.d_v, batch=x.shape[0]))
    outs, s = [], 0
    for n in chunks:
        outs.append(MLA.mla_attention(x[:, s : s + n], W, absorbed=absorbed, cache=cache))
        s += n
    return np.concatenate(outs, axis=1)


def _ds_forward(x, weights, *, absorbed, bug=None):
    return _deepseek(x, weights, absorbed=absorbed, bug=bug)


def _ds_decode(x, weights, *, absorbed, chunks, bug=None):
    return _deepseek(x, weights, absorbed=absorbed, chunks=chunks, bug=bug)


def lowp_mla_adapter(precision: str, bug=None) -> MLAAdapter:
    """``deepseek_einsum`` with every product rounded to ``precision`` (correct; with ``bug`` wrong)."""
    name = f"deepseek_einsum[{precision}]" + (f"[bug={bug}]" if bug else "")
    return MLAAdapter(name, lambda x, W, **kw: _deepseek(x, W, bug=bug, precision=precision, **kw), CAPS,
                      decode=lambda x, W, **kw: _deepseek(x, W, bug=bug, precision=precision, **kw),
                      precision=precision)


CAPS = frozenset({"decode"})
BUNDLED = [
    MLAAdapter("refimpl.mla_attention", _ref_forward, CAPS, decode=_ref_decode),
    MLAAdapter("deepseek_einsum", _ds_forward, CAPS, decode=_ds_decode),
]
_BUGS = ("absorbed_missing_scale", "absorbed_no_rope", "ukv_split_wrong", "decode_rope_from_zero")
WRONG = {
    b: MLAAdapter(f"wrong:{b}", (lambda bug: lambda *a, **k: _ds_forward(*a, bug=bug, **k))(b), CAPS,
                  decode=(lambda bug: lambda *a, **k: _ds_decode(*a, bug=bug, **k))(b))
    for b in _BUGS
}


@dataclasses.dataclass(frozen=True)
class MLACase:
    x: np.ndarray
    weights: MLA.MLAWeights
    chunks: tuple
    seed: int

    def __repr__(self):
        W = self.weights
        return (f"MLACase(x{self.x.shape}, H={W.num_heads}, d_c={W.d_c}, d_nope={W.d_nope}, d_rope={W.d_rope}, "
                f"d_v={W.d_v}, chunks={list(self.chunks)}, seed={self.seed})")


@st.composite
def mla_case(draw, caps=frozenset()):
    """x and the weights representable in the adapter's precision."""
    precision = getattr(caps, "precision", "float64")
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    B, L, d_model, H = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(2, 10)), draw(st.integers(1, 3))
    d_c, dn, dr, dv = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(sampled((2, 4))), draw(st.integers(1, 4))
    chunks, rest = [], L
    while rest:
        chunks.append(min(rest, draw(sampled((1, 1, 2, 3, 7)))))
        rest -= chunks[-1]
    mag = draw(sampled((1.0, 3.0)))
    x = round_to(mag * rng.standard_normal((B, L, d_model)), precision)
    W = MLA.init_mla_weights(rng, d_model, H, d_c, dn, dr, dv)
    if precision != "float64":
        W = dataclasses.replace(W, **{n: round_to(getattr(W, n), precision) for n in ("W_q", "W_dkv", "W_ukv", "W_o")})
    return MLACase(x, W, tuple(chunks), seed)


def _g(n):
    return n * U / (1 - n * U)


def _bound(case) -> np.ndarray:
    """Elementwise bound on |y_1 - y_2| for two float64 MLA computations (module docstring)."""
    W, x = case.weights, case.x
    B, L, _ = x.shape
    H, dn, dr, dv, dc = W.num_heads, W.d_nope, W.d_rope, W.d_v, W.d_c
    pos = np.arange(L)
    q = (x @ W.W_q).reshape(B, L, H, dn + dr).transpose(0, 2, 1, 3)
    kv = x @ W.W_dkv
    c = np.abs(kv[..., :dc])
    q_pe = refimpl.apply_rope(q[..., dn:], pos, layout="interleaved")
    k_pe = refimpl.apply_rope(kv[:, None, :, dc:], pos, layout="interleaved")
    scale = MLA.mla_softmax_scale(dn, dr)
    S = np.einsum("bhli,hij,btj->bhlt", np.abs(q[..., :dn]), np.abs(W.W_uk()), c)
    S = S + np.einsum("bhlr,bktr->bhlt", np.abs(q_pe), np.abs(k_pe))
    delta = _g(dn + dc + dr + 4) * scale * np.max(S, axis=-1)  # (B, H, L)
    Vabs = np.einsum("btj,hej->bhte", c, np.abs(W.W_uv()))
    eps_o = (8 * delta[..., None] + 2 * _g(L + dc + 8)) * np.max(Vabs, axis=2)[:, :, None, :]  # (B, H, L, dv)
    o_abs = np.broadcast_to(np.max(Vabs, axis=2)[:, :, None, :], eps_o.shape)  # |o| <= max_t |v_t| (convex)
    Wo = np.abs(W.W_o).reshape(H, dv, -1)
    eps_y = np.einsum("bhle,hem->blm", eps_o, Wo) + 2 * _g(H * dv + 2) * np.einsum("bhle,hem->blm", o_abs, Wo)
    return 2 * eps_y


def _naive_mla(case, precision, order):
    """The naive MLA in ``precision`` (properties.precision.naive_ops): every projection
    accumulated in float32 and rounded, RoPE rounded, attention by the eager baseline."""
    o = naive_ops(precision)
    W, x = case.weights, case.x
    B, L, _ = x.shape
    H, dn, dr, dv, dc = W.num_heads, W.d_nope, W.d_rope, W.d_v, W.d_c
    pos = np.arange(L)
    q = o.out(o.matmul(x, W.W_q)).reshape(B, L, H, dn + dr).transpose(0, 2, 1, 3)
    kv = o.out(o.matmul(x, W.W_dkv))
    q_pe = round_to(refimpl.apply_rope(q[..., dn:], pos, layout="interleaved"), precision)
    k_pe = round_to(refimpl.apply_rope(kv[:, None, :, dc:], pos, layout="interleaved"), precision)
    kvb = o.out(o.matmul(kv[..., :dc], W.W_ukv)).reshape(B, L, H, dn + dv).transpose(0, 2, 1, 3)
    qf = np.concatenate([q[..., :dn], q_pe], axis=-1)
    kf = np.concatenate([kvb[..., :dn], np.broadcast_to(k_pe, (B, H, L, dr))], axis=-1)
    vis = np.tril(np.ones((L, L), dtype=bool))
    att, _ = naive_attention(qf, kf, kvb[..., dn:], vis, MLA.mla_softmax_scale(dn, dr), precision, order=order)
    return o.out(o.matmul(att.transpose(0, 2, 1, 3).reshape(B, L, H * dv), W.W_o))


def _lowp_bound(case, precision, ref) -> float:
    """FACTOR x the larger naive error of the two attention orders + the floor: the attention
    floor of properties.attention_lowp on the spec's q, k, v, carried through W_o
    (max_m sum_(h,e) |W_o[(h,e), m]|), plus the output projection's own floor
    (properties.precision.output_floor, H d_v float32 terms)."""
    W, x = case.weights, case.x
    B, L, _ = x.shape
    H, dn, dr, dv, dc = W.num_heads, W.d_nope, W.d_rope, W.d_v, W.d_c
    pos = np.arange(L)
    q = (x @ W.W_q).reshape(B, L, H, dn + dr).transpose(0, 2, 1, 3)
    kv = x @ W.W_dkv
    kvb = (kv[..., :dc] @ W.W_ukv).reshape(B, L, H, dn + dv).transpose(0, 2, 1, 3)
    qf = np.concatenate([q[..., :dn], refimpl.apply_rope(q[..., dn:], pos, layout="interleaved")], axis=-1)
    k_pe = refimpl.apply_rope(kv[:, None, :, dc:], pos, layout="interleaved")
    kf = np.concatenate([kvb[..., :dn], np.broadcast_to(k_pe, (B, H, L, dr))], axis=-1)
    vis = np.tril(np.ones((L, L), dtype=bool))
    fl_att, _ = rounding_floor(qf, kf, kvb[..., dn:], vis, MLA.mla_softmax_scale(dn, dr), precision)
    att = refimpl.attention(qf, kf, kvb[..., dn:], causal=True, scale=MLA.mla_softmax_scale(dn, dr))[0]
    Wo = np.abs(W.W_o)
    terms = float(np.max(np.abs(att.transpose(0, 2, 1, 3).reshape(B, L, H * dv)) @ Wo, initial=0.0))
    floor = fl_att * float(np.max(Wo.sum(axis=0), initial=0.0)) + output_floor(
        precision, float(np.max(np.abs(ref), initial=0.0)), H * dv, terms)
    return FACTOR * max(naive_error(_naive_mla(case, precision, order), ref) for order in ("q", "k")) + floor


def _compare(impl, case, got, ref, what, relation=False):
    """|got - ref| within the float64 bound, or the adapter's precision bound (twice it when
    both sides are the adapter's, ``relation``)."""
    got = np.asarray(got, dtype=np.float64)
    tol = _bound(case)
    precision = precision_of(impl)
    if precision != "float64":
        spec = MLA.mla_attention(case.x, case.weights)
        tol = np.maximum(tol, (2 if relation else 1) * _lowp_bound(case, precision, spec))
    err = np.abs(got - ref)
    if got.shape != ref.shape or not np.all(err <= tol):
        i = np.unravel_index(np.argmax(err - tol), err.shape) if got.shape == ref.shape else None
        detail = f"max excess at {i}: |diff| {err[i]:.3e} > {tol[i]:.3e}" if i is not None else f"shape {got.shape}"
        raise AssertionError(f"{impl.name}: {what}: {detail}; {case!r}")
    # passed: record how close it came (error / its elementwise bound, against 1) for the reports
    compare_close(f"{what} (error / elementwise bound)", err / np.maximum(tol, 1e-300), np.zeros_like(err), 1.0,
                  f"{impl.name}; {case!r}")


def check_matches_reference(impl, case):
    """Both forms equal refimpl.mla_attention's naive form within the derived bound."""
    ref = MLA.mla_attention(case.x, case.weights)
    for absorbed in (False, True):
        _compare(impl, case, impl.forward(case.x, case.weights, absorbed=absorbed), ref,
                 f"absorbed={absorbed} vs refimpl naive")


def check_absorbed_equals_naive(impl, case):
    """W_UK folded into the query and W_UV into the output change nothing beyond the derived bound."""
    naive = np.asarray(impl.forward(case.x, case.weights, absorbed=False), dtype=np.float64)
    _compare(impl, case, impl.forward(case.x, case.weights, absorbed=True), naive, "absorbed vs naive", relation=True)


def check_decode_equals_prefill(impl, case):
    """Chunked decoding with the per-head or latent cache equals the full causal forward."""
    ref = MLA.mla_attention(case.x, case.weights)
    for absorbed in (False, True):
        got = impl.decode(case.x, case.weights, absorbed=absorbed, chunks=list(case.chunks))
        _compare(impl, case, got, ref, f"decode in chunks {list(case.chunks)} (absorbed={absorbed})")


PROPERTIES = [
    Property("mla_matches_reference", "mla", check_matches_reference, mla_case,
             "naive and absorbed MLA equal refimpl.mla_attention within the derived bound",
             rejects=("absorbed_missing_scale", "absorbed_no_rope", "ukv_split_wrong")),
    Property("mla_absorbed_equals_naive", "mla", check_absorbed_equals_naive, mla_case,
             "the absorbed form equals the naive one within the derived bound",
             rejects=("absorbed_missing_scale", "absorbed_no_rope")),
    Property("mla_decode_equals_prefill", "mla", check_decode_equals_prefill, mla_case,
             "decoding through the per-head or latent cache equals the full forward",
             requires=frozenset({"decode"}), rejects=("decode_rope_from_zero",)),
]
