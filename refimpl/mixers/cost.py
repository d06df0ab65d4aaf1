"""State size and multiply-accumulates (MACs) per token of each mixer, beside softmax attention.

Convention: one MAC = one multiply (with or without its add); ``2 * macs`` is the usual FLOP count
(docs/errata.md#e3's convention). Counts are per head and per sequence, float values (not bytes); exps,
divisions and feature maps are listed separately where they matter, never mixed into MACs.

Per generated token at step t (t tokens already in context, recurrent / decoding form):

| mixer                       | state values              | MACs per token                 |
|-----------------------------|---------------------------|--------------------------------|
| softmax attention (KV cache)| t (d + d_v)  (grows)      | t d (q.k) + t d_v (p.v)        |
| linear attention            | d_phi d_v (+ d_phi z)     | 2 d_phi d_v (+ 2 d_phi)        |
| gated linear attention      | d_k d_v                   | 3 d_k d_v (decay, write, read) |
| DeltaNet (gated: + decay)   | d_k d_v                   | 3 d_k d_v (+ d_k d_v)          |
| RWKV-4 WKV (stable)         | 3 per channel (p, q, o)   | 6 per channel, 4 exps          |
| Mamba selective scan        | P N per head              | 4 P N (+ P for D), P N exps    |

Whole sequences of length n (docs/notes.md#linear-attention: O(n d_phi d_v) against O(n^2 d)):
causal softmax attention n (n + 1) / 2 (d + d_v) MACs; linear attention 2 n d_phi d_v.
The notes' cost tables as exact counts (docs/notes.md#mixer-costs): :func:`attention_table` (cross-attention
costs B H Lq Lk d_head; the notes' extra factor L is docs/errata.md#e18).
"""

from __future__ import annotations

import dataclasses

from .._validate import flag, positive_int


@dataclasses.dataclass(frozen=True)
class MixerCost:
    """state: values held per head between tokens; macs: per token; exps: exponentials per token."""

    state: int
    macs: int
    exps: int = 0


def softmax_attention(t: int, d: int, d_v: int) -> MixerCost:
    """Decoding step with t cached tokens (the new one included): KV cache t (d + d_v)."""
    t, d, d_v = positive_int(t, "t"), positive_int(d, "d"), positive_int(d_v, "d_v")
    return MixerCost(state=t * (d + d_v), macs=t * d + t * d_v, exps=t)


def linear_attention(d_phi: int, d_v: int, *, normalize: bool = True) -> MixerCost:
    d_phi, d_v = positive_int(d_phi, "d_phi"), positive_int(d_v, "d_v")
    z = d_phi if flag(normalize, "normalize") else 0
    return MixerCost(state=d_phi * d_v + z, macs=2 * d_phi * d_v + 2 * z)


def gated_linear_attention(d_k: int, d_v: int) -> MixerCost:
    d_k, d_v = positive_int(d_k, "d_k"), positive_int(d_v, "d_v")
    return MixerCost(state=d_k * d_v, macs=3 * d_k * d_v, exps=d_k)


def delta_rule(d_k: int, d_v: int, *, gated: bool = False) -> MixerCost:
    d_k, d_v = positive_int(d_k, "d_k"), positive_int(d_v, "d_v")
    return MixerCost(state=d_k * d_v, macs=(4 if flag(gated, "gated") else 3) * d_k * d_v, exps=int(gated))


def rwkv4(channels: int) -> MixerCost:
    c = positive_int(channels, "channels")
    return MixerCost(state=3 * c, macs=6 * c, exps=4 * c)


def selective_scan(P: int, N: int, *, d_skip: bool = True) -> MixerCost:
    P, N = positive_int(P, "P"), positive_int(N, "N")
    return MixerCost(state=P * N, macs=4 * P * N + (P if flag(d_skip, "d_skip") else 0), exps=P * N)


def sequence_macs_softmax(n: int, d: int, d_v: int, *, causal: bool = True) -> int:
    """Score and value MACs of softmax attention over n tokens: O(n^2 d)."""
    n, d, d_v = positive_int(n, "n"), positive_int(d, "d"), positive_int(d_v, "d_v")
    pairs = n * (n + 1) // 2 if flag(causal, "causal") else n * n
    return pairs * (d + d_v)


def sequence_macs_linear(n: int, d_phi: int, d_v: int) -> int:
    """Linear attention over n tokens: build S (n d_phi d_v) and read it (n d_phi d_v): O(n d_phi d_v)."""
    return positive_int(n, "n") * linear_attention(d_phi, d_v, normalize=False).macs


def attention_table(B: int, H: int, L: int, d_head: int, *, Lq=None, Lk=None, t=None) -> dict:
    """The notes' cost tables (docs/notes.md#mixer-costs) as exact MAC / value counts (d_model = H d_head).

    Keys: "projections" (Q, K, V: 3 B L d_model^2), "scores" (B H L^2 d_head), "softmax"
    (B H L^2 exps), "weighted_sum" (B H L^2 d_head), "output_projection" (B L d_model^2),
    "scores_memory" (B H L^2), "cross_attention" (B H Lq Lk d_head time, B H Lq Lk memory),
    "decode_step" (2 H t d_head MACs at step t), "kv_cache" (2 L d_model values per layer).
    """
    B, H, L, dh = (positive_int(x, n) for x, n in ((B, "B"), (H, "H"), (L, "L"), (d_head, "d_head")))
    Lq = L if Lq is None else positive_int(Lq, "Lq")
    Lk = L if Lk is None else positive_int(Lk, "Lk")
    t = L if t is None else positive_int(t, "t")
    dm = H * dh
    return {
        "projections": 3 * B * L * dm * dm,
        "scores": B * H * L * L * dh,
        "softmax": B * H * L * L,
        "weighted_sum": B * H * L * L * dh,
        "output_projection": B * L * dm * dm,
        "scores_memory": B * H * L * L,
        "cross_attention": (2 * B * H * Lq * Lk * dh, B * H * Lq * Lk),
        "decode_step": 2 * H * t * dh,
        "kv_cache": 2 * L * dm,
    }


__all__ = ["MixerCost", "attention_table", "delta_rule", "gated_linear_attention", "linear_attention", "rwkv4",
           "selective_scan", "sequence_macs_linear", "sequence_macs_softmax", "softmax_attention"]
