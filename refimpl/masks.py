"""Attention masks as predicates over (query index, key index).

A facade over two layers: ``refimpl.mask_core`` (the ``Mask`` base, combinators, causal, sliding
window) and ``refimpl.mask_patterns`` (structured sparse patterns, built on the core).

A mask says which keys each query *may attend to* (True = visible). It is a
predicate ``mask(i, j, Lq, Lk)`` evaluated on integer index arrays that
broadcast against each other, so a kernel can evaluate it on one tile without
materialising the whole (Lq, Lk) matrix. Masks compose with ``&``, ``|``, ``~``.

Positional conventions (pinned by this spec):

* Alignment. When Lq != Lk the query rows are aligned to the key columns with
  an offset ``o``: query ``i`` sits at key position ``p = i + o``.
  ``align="bottom_right"`` (default; flash-attn >= 2.1, xformers
  ``...FromBottomRight``): ``o = Lk - Lq``, so the last query sees the last key
  (decoding with a KV cache). ``align="top_left"`` (torch SDPA ``is_causal``,
  FlexAttention, JAX): ``o = 0``. The two agree when Lq == Lk.
* Causal: key ``j`` is visible to query ``i`` iff ``j <= p``. (The causal mask
  printed in the notes is inverted, docs/errata.md#e1: it hides the past and
  shows the future; ``seed_inverted_causal`` keeps it so tests can show it leaks.)
* Sliding window ``(left, right)`` in the flash-attn sense: visible iff
  ``p - left <= j <= p + right`` (both ends inclusive, ``left + 1 + right`` keys
  in the interior); ``None`` on a side means unbounded. Converters:
  ``window_from_keys_including_self(W) = (W - 1, 0)`` (HF Mistral
  ``sliding_window=W``) and ``window_from_seed_mw(w) = (w, 0)`` (the notes'
  ``M_w``, ``max(0, i-w) <= j <= i``: w + 1 keys; their worked fraction instead
  counts w keys per row, docs/errata.md#e2; docs/notes.md#sliding-window).

Every mask has ``materialize(Lq, Lk)`` -> bool (Lq, Lk), ``count(Lq, Lk)`` (number
of visible pairs) and ``row_counts(Lq, Lk)``. The structured masks (Full, causal,
window, Strided, Dilated, PrefixLM, GlobalTokens, DSA, BlockSparse, BigBird,
Document) count in closed form, without an (Lq, Lk) allocation (``row_counts``
allocates its (Lq,) result, within the work budget); the tests check each closed
form against the materialised count. A predicate (``predicate``, ``And``, ``Or``,
``Not``) has no closed form: its counts materialise it, within the work budget
(``refimpl._validate.check_budget``: a ValueError naming Lq, Lk beyond it).
"""

from .mask_core import (ALIGNMENTS, And, Causal, Full, Mask, Not, Or, SlidingWindow, offset, predicate,
                        seed_inverted_causal, window_from_keys_including_self, window_from_seed_mw)
from .mask_patterns import (BigBird, BlockSparse, Dilated, Document, DSA, GlobalTokens, PrefixLM, Strided, Varlen,
                            dual_chunk_masks)

__all__ = ["ALIGNMENTS", "offset", "Mask", "And", "Or", "Not", "Full", "SlidingWindow", "Causal",
           "window_from_keys_including_self", "window_from_seed_mw", "seed_inverted_causal", "predicate",
           "GlobalTokens", "Dilated", "Strided", "BlockSparse", "PrefixLM", "Document", "DSA", "Varlen",
           "dual_chunk_masks", "BigBird"]
