"""refimpl: the executable specification (pure NumPy + SciPy, float64).

Read the module docstrings for formulas, shapes, conventions and sources. They cite the
project's own documents as ``docs/<file>.md#<section>`` (docs/notes.md, docs/errata.md,
docs/conventions.md), paths from the repository root; an installed wheel carries the same files
under ``<sys.prefix>/share/transformer-refimpl/docs/``. Each family opens with its
definition, and every fast form is tested equal to it: attention in ``refimpl.definition``
(``attention_definition``, ``attention_backward_definition``), the mixers' recurrences at the top of
each ``refimpl.mixers`` module, softmax and log-sum-exp in ``refimpl.softmax``, and
``refimpl.moe.forward.moe_definition``, ``refimpl.kv_cache.decode_definition``,
``refimpl.mla.mla_definition``, ``refimpl.rope.rope_definition``, ``refimpl.norms.norm_definition``,
``refimpl.sinks.attention_with_sinks_definition`` (README "Reading the spec").
"""

from . import accounting, distributed, flash, io_accounting, kv_cache, masks, mla, mixers, moe, receptive_field, rope, split_kv
from . import block, definition, ffn, formats, losses, norms
from . import gated, int_formats, latent, model_configs, pooled_memory, positional, roofline, scaling, vision
from . import hybrid, mamba_block, vision_objectives
from .kv_cache import ContiguousCache, PagedCache, RingCache, decode, decode_step, make_cache
from .mla import MLALatentCache, MLAWeights, mla_attention
from .receptive_field import receptive_field as receptive_field_matrix, window_receptive_interval
from .rope import apply_rope, convert_layout, layout_permutation, rope_frequencies
from .flash import FlashStats, flash_attention, flash_attention_backward
from .alibi import alibi_bias, alibi_slopes
from .mha import multi_head_attention
from .sdpa import attention, attention_backward, attention_probs
from .definition import attention_backward_definition, attention_definition
from .split_kv import attention_partials, even_boundaries, split_kv_attention
from .softmax import (
    OnlineSoftmaxState,
    logsumexp,
    merge_attention_states,
    online_logsumexp,
    online_softmax_merge,
    online_softmax_update,
    softmax,
)

__all__ = [
    "accounting",
    "definition",
    "attention_definition",
    "attention_backward_definition",
    "distributed",
    "block",
    "ffn",
    "formats",
    "losses",
    "norms",
    "flash",
    "io_accounting",
    "masks",
    "mixers",
    "moe",
    "split_kv",
    "kv_cache",
    "mla",
    "receptive_field",
    "rope",
    "model_configs",
    "int_formats",
    "roofline",
    "positional",
    "vision",
    "latent",
    "scaling",
    "pooled_memory",
    "gated",
    "mamba_block",
    "hybrid",
    "vision_objectives",
    "ContiguousCache",
    "PagedCache",
    "RingCache",
    "decode",
    "decode_step",
    "make_cache",
    "MLALatentCache",
    "MLAWeights",
    "mla_attention",
    "receptive_field_matrix",
    "window_receptive_interval",
    "apply_rope",
    "convert_layout",
    "layout_permutation",
    "rope_frequencies",
    "FlashStats",
    "flash_attention",
    "flash_attention_backward",
    "attention_partials",
    "even_boundaries",
    "split_kv_attention",
    "alibi_bias",
    "alibi_slopes",
    "attention",
    "attention_backward",
    "attention_probs",
    "multi_head_attention",
    "OnlineSoftmaxState",
    "logsumexp",
    "merge_attention_states",
    "online_logsumexp",
    "online_softmax_merge",
    "online_softmax_update",
    "softmax",
]
