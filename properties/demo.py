"""Adapters for trying the suite's reports (README, docs/conformance.md).

``wrong_attention``: a deliberately wrong attention (causal aligned top-left
although bottom-right was asked, a real bug class), to see a failure with its
reproduction snippet::

    REFIMPL_IMPLS=properties.demo:wrong_attention python -m properties --impl demo.wrong_attention

``misspelled``: an adapter declaring the capability "masks" (there is none;
"mask_array" is meant), to see the load-time error listing the valid names::

    REFIMPL_IMPLS=properties.demo:misspelled python -m properties --impl demo.misspelled
"""

from __future__ import annotations

from .attention_impls import AttentionAdapter, naive_attention


def _wrong_forward(q, k, v, **kw):
    return naive_attention(q, k, v, bug="top_left_for_bottom_right", **kw)


def _forward(q, k, v, **kw):
    return naive_attention(q, k, v, **kw)


wrong_attention = AttentionAdapter(
    name="demo.wrong_attention", forward=_wrong_forward,
    capabilities=frozenset({"lse", "causal", "lq_ne_lk", "gqa"}),
)

misspelled = AttentionAdapter(
    name="demo.misspelled", forward=_forward,
    capabilities=frozenset({"lse", "causal", "masks"}),
)
