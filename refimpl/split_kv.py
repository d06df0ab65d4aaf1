"""Split-KV attention (flash-decoding): partial results over key chunks, then a merge.

When there are few queries (decoding: Lq = 1) one thread block per query tile
leaves the GPU idle, so the keys are cut into chunks [k_0, k_1), [k_1, k_2), ...
that run in parallel. Chunk c runs the FA2 loop over its own keys only, under
the *full* problem's mask and alignment (a chunk is a column range of the
(Lq, Lk) problem, not a shorter problem of its own), and produces a normalised
partial result

    out_c = softmax(S[:, chunk c]) V[chunk c],    lse_c = logsumexp(S[:, chunk c])

and the partials combine exactly (``refimpl.merge_attention_states``):

    lse = logsumexp_c(lse_c),     out = sum_c exp(lse_c - lse) out_c.

``split_kv_attention`` merges each chunk's online-softmax state (m_c, l_c),
lse_c = m_c + log l_c, in the equivalent form

    m = max_c m_c,   w_c = exp(m_c - m) l_c,   l = sum_c w_c,
    out = sum_c (w_c / l) out_c,   lse = m + log l

because it stays exact at any score magnitude: m_c - m is a difference of two
computed scores, whereas lse_c carries a rounding of u |lse_c| (u = 2^-53)
that exp(lse_c - lse) turns into a relative error of about 2 u |lse| in each
weight, i.e. 3e-5 at scores near 1e12 (see ``merge_attention_states``).

A chunk a row cannot see at all gives (out 0, lse -inf), the identity of the
merge; so does an empty chunk. Sources: Dao et al., "Flash-Decoding for
long-context inference" (2023); flash-attn ``csrc/flash_attn/src/flash_fwd_kernel.h``
(``compute_attn_1rowblock_splitkv`` for the partials, ``combine_attn_seqk_parallel``
for the merge), whose even split gives each of ``num_splits`` splits
``ceil(ceil(Lk / block_k) / num_splits)`` key tiles (``even_boundaries``).

Pitfall this module exists to show: computing a chunk as attention over
``k[:, :, a:b]`` with the same ``causal=True`` re-aligns the causal diagonal
to the chunk (bottom-right alignment is relative to the chunk's own length)
and gives a wrong answer; the chunk must be a column range of the full mask.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._validate import count, positive_int
from ._validate.caches import attention_keywords, split_rule
from .flash import _forward_fa2, _setup
from .softmax import _exp_shift, merge_attention_states, online_softmax_merge  # noqa: F401

MAX_SPLITS = 2**20
"""Largest num_splits accepted (flash-attn caps its own at 128)."""


def even_boundaries(Lk: int, num_splits: int, block_k: int) -> tuple[int, ...]:
    """flash-attn's even split: ``num_splits`` chunks of ``ceil(ceil(Lk/block_k)/num_splits)`` key tiles.

    Returns the num_splits - 1 inner boundaries (the last chunks may be empty).
    At most ``MAX_SPLITS`` splits; empty chunks cost nothing (see attention_partials).
    """
    Lk = positive_int(Lk, "Lk", allow_zero=True)
    num_splits = count(num_splits, "num_splits", minimum=1, maximum=MAX_SPLITS)
    block_k = positive_int(block_k, "block_k")
    per_split = math.ceil(math.ceil(Lk / block_k) / num_splits)
    return tuple(min(s * per_split * block_k, Lk) for s in range(1, num_splits))


def split_chunks(boundaries, num_splits, Lk, block_k) -> list[tuple[int, int]]:
    """The key ranges [k0, k1) of the splits: explicit ``boundaries`` or flash-attn's even split into
    ``num_splits`` (exactly one of them), validated; used by ``split_kv_attention`` and the gpu facade."""
    cuts = split_rule(boundaries, num_splits, Lk)
    if cuts is None:
        cuts = even_boundaries(Lk, num_splits, block_k)
    edges = (0, *cuts, Lk)
    return list(zip(edges[:-1], edges[1:]))


def attention_partials(q, k, v, *, block_q, block_k, boundaries=None, num_splits=None, **attention_kwargs):
    """The partial results [(out_c, lse_c), ...] of each key chunk, in key order.

    Chunks are cut at ``boundaries`` (non-decreasing ints in [0, Lk]; repeated
    cuts make empty chunks) or by ``num_splits`` (flash-attn's even split in
    whole key tiles). ``attention_kwargs`` are those of ``refimpl.attention``;
    masks, alignment, bias and dropout refer to the full (Lq, Lk) problem.
    out_c (B, Hq, Lq, Dv), lse_c (B, Hq, Lq); (0, -inf) for rows that see no
    key of the chunk.
    """
    st = _setup(q, k, v, block_q, block_k, attention_keywords(attention_kwargs, _DEFAULTS))
    parts, empty = [], None
    for k0, k1 in split_chunks(boundaries, num_splits, st.Lk, block_k):
        if k0 == k1:  # an empty chunk is the merge identity (0, -inf): no work, one shared read-only copy
            if empty is None:
                empty = _forward_fa2(st, block_q, block_k, (k0, k1), skip=True)[:2]
                for a in empty:
                    a.flags.writeable = False
            parts.append(empty)
            continue
        out_c, lse_c, _, _ = _forward_fa2(st, block_q, block_k, (k0, k1), skip=True)
        parts.append((st.unshift(out_c), lse_c))
    return parts


def split_kv_attention(q, k, v, *, block_q, block_k, boundaries=None, num_splits=None, **attention_kwargs):
    """Attention by split-KV: each chunk's FA2 state (m_c, l_c, out_c), merged as in the module docstring.

    Returns (out, lse), equal to ``refimpl.attention`` (up to rounding) for
    any partition of the keys, including chunks some or all rows cannot see.
    """
    st = _setup(q, k, v, block_q, block_k, attention_keywords(attention_kwargs, _DEFAULTS))
    chunks = split_chunks(boundaries, num_splits, st.Lk, block_k)
    # an empty chunk is the merge identity (m -inf, l 0): skip it, keeping one when all are empty
    chunks = [c for c in chunks if c[0] < c[1]] or chunks[:1]
    outs, states = [], []
    for k0, k1 in chunks:
        out_c, _, _, _ = _forward_fa2(st, block_q, block_k, (k0, k1), skip=True, state=states)
        outs.append(out_c)
    merged = functools.reduce(online_softmax_merge, states)  # m = max_c m_c, l = sum_c exp(m_c - m) l_c
    out = np.zeros_like(outs[0])
    nonempty = merged.l > 0  # rows no chunk could see stay (0, -inf)
    for out_c, s_c in zip(outs, states):
        w_c = _exp_shift(s_c.m, merged.m) * s_c.l  # exp(m_c - m) l_c
        out += np.where(nonempty, w_c / np.where(nonempty, merged.l, 1.0), 0.0)[..., None] * out_c
    return st.unshift(out), merged.lse


_DEFAULTS = dict(mask=None, causal=False, align="bottom_right", window=None, scale=None, softcap=None,
                 bias=None, dropout_mask=None, dropout_p=0.0)
"""The keywords of ``refimpl.attention`` a split-KV call takes, with their defaults."""
