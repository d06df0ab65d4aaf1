"""Attention sinks: one learned logit per query head in the softmax denominator, with no value.

For query head h with sink logit s_h (not scaled, not masked, not capped), and the
row's visible final scores S_ij (after scale, softcap, bias, mask):

    P_ij   = exp(S_ij) / (exp(s_h) + sum_j' exp(S_ij'))
    out_i  = sum_j P_ij v_j
    lse_i  = log(exp(s_h) + sum_j exp(S_ij)) = logaddexp(lse0_i, s_h)

(``attention_with_sinks_definition``: the sink appended as one more score column, softmax, the
column dropped), so, from the sink-free (out0, lse0) of ``refimpl.attention``,

    out_i = out0_i * exp(lse0_i - lse_i) = out0_i * sigmoid(lse0_i - s_h).

The weights sum to sigmoid(lse0_i - s_h) < 1: the sink absorbs the rest. A row
with no visible key has lse0 = -inf, so out 0 and lse = s_h (never NaN).

Source: openai/gpt-oss (commit 7b58334, Jul 2026) gpt_oss/torch/model.py ``sdpa``:
``QK = torch.cat([QK, S], dim=-1); W = torch.softmax(QK, dim=-1); W = W[..., :-1]``
with S the per-head sinks, appended after ``QK *= sm_scale`` and the mask; and
huggingface/transformers 5.25.0 models/gpt_oss/modeling_gpt_oss.py
``eager_attention_forward`` (the same concatenation, sinks of shape (num_attention_heads,),
max subtracted first; checked on CPU in
tests/test_attention_options.py::test_sinks_match_hf_gpt_oss_eager_attention). StreamingLLM's
"sink tokens" are real keys kept in the cache, not this logit; see docs/conformance.md.
"""

from __future__ import annotations

import numpy as np

from . import _validate as _V
from ._validate import layers as _L
from .definition import attention_arguments
from .sdpa import attention


def attention_with_sinks_definition(q, k, v, sinks, *, mask=None, causal=False, align="bottom_right", window=None,
                                    scale=None, softcap=None, bias=None):
    """(out, lse), float64: the sink as one more column of the final scores (gpt-oss ``sdpa``;
    docs/notes.md#attention-sinks), written out.
    ``attention_with_sinks`` / ``apply_sinks`` are tested equal to it (tests/test_definition_sinks.py)."""
    q, k, v, scale, softcap, visible, bias, _ = attention_arguments(q, k, v, mask, causal, align, window, scale,
                                                                    softcap, bias, work=64)
    s_h = check_sinks(sinks, q.shape[1])[None, :, None, None]
    k, v = np.repeat(k, q.shape[1] // k.shape[1], axis=1), np.repeat(v, q.shape[1] // k.shape[1], axis=1)  # GQA
    with np.errstate(over="ignore", invalid="ignore"):
        r = scale * (q @ k.swapaxes(-1, -2))                              # r = scale <q_i, k_j>
        S = r if softcap is None else softcap * np.tanh(r / softcap)      # S = c tanh(r / c)
        S = np.where(visible, S if bias is None else S + bias, -np.inf)   # + bias; -inf where hidden
    _L.visible_scores(visible, r, S, bias)
    S = np.concatenate([S, np.broadcast_to(s_h, S.shape[:3] + (1,))], axis=-1)  # [S_i, s_h]: the sink column
    m = np.max(S, axis=-1, keepdims=True)                                 # m_i (finite: the sink is)
    e = np.exp(S - m)
    l = np.sum(e, axis=-1, keepdims=True)                                 # l_i = exp(s_h - m) + sum_j exp(S_ij - m)
    out = (e[..., :-1] / l) @ v                                           # the sink column dropped: no value
    return _V.finite_result(out, "the output", "v"), (m + np.log(l))[..., 0]  # lse_i = m_i + log l_i


def check_sinks(sinks, Hq: int) -> np.ndarray:
    """``sinks`` as a float64 (Hq,) array of finite logits."""
    return _L.sink_logits(sinks, Hq)


def apply_sinks(out, lse, sinks):
    """(out, lse) of sink-free attention -> (out, lse) with per-head sink logits.

    out (B, Hq, Lq, Dv), lse (B, Hq, Lq) from ``refimpl.attention``; sinks (Hq,).
    Returns new arrays (float64): out * sigmoid(lse - s_h) and logaddexp(lse, s_h).
    """
    out, lse, s = _L.sink_inputs(out, lse, sinks)
    s = s[None, :, None]
    new_lse = np.logaddexp(lse, s)
    keep = np.exp(lse - new_lse)  # sigmoid(lse - s): 0 for a fully masked row (lse = -inf)
    return out * keep[..., None], new_lse


def attention_with_sinks(q, k, v, sinks, **kwargs):
    """``refimpl.attention(q, k, v, **kwargs)`` with one sink logit per query head.

    sinks: (Hq,) finite floats. Returns (out (B, Hq, Lq, Dv), lse (B, Hq, Lq)); see the
    module docstring for the formula. Dropout keywords are not accepted (the
    gpt-oss reference applies dropout after dropping the sink column).
    """
    _L.no_dropout_with_sinks(kwargs.get("dropout_mask"))
    out, lse = attention(q, k, v, **kwargs)
    return apply_sinks(out, lse, sinks)


__all__ = ["apply_sinks", "attention_with_sinks", "attention_with_sinks_definition", "check_sinks"]
