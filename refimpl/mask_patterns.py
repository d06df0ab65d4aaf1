"""Structured sparse attention patterns as masks (re-exported by ``refimpl.masks``; built on ``refimpl.mask_core``).

Global tokens (Longformer / BigBird), dilated and strided windows (Sparse
Transformer), block-sparse layouts, prefix-LM, document (packed sequences),
DSA and the dual-chunk pair, and BigBird's block pattern: each a
``refimpl.masks.Mask`` predicate over (query index i, key index j) with the
alignment conventions of ``refimpl.masks`` (query i at key position
p = i + offset). Every pattern here counts in closed form (``count`` allocates nothing
that Lq, Lk size; ``row_counts`` only its (Lq,) result); BigBird replays its seeded
random draw only when a partial last block makes the draw matter (budgeted). The
dual-chunk strided branch is a predicate: its counts materialise it, within the budget.

A facade over three lower modules: ``refimpl.mask_sparse`` (GlobalTokens, Dilated, Strided,
BlockSparse, PrefixLM, DSA, dual_chunk_masks), ``refimpl.mask_bigbird`` (BigBird) and
``refimpl.mask_packed`` (Document, Varlen); their argument checks are in ``refimpl._validate.masks``.
"""

from .mask_bigbird import BigBird
from .mask_packed import Document, Varlen
from .mask_sparse import DSA, BlockSparse, Dilated, GlobalTokens, PrefixLM, Strided, dual_chunk_masks

__all__ = ["GlobalTokens", "Dilated", "Strided", "BlockSparse", "PrefixLM", "Document", "DSA", "Varlen",
           "dual_chunk_masks", "BigBird"]
