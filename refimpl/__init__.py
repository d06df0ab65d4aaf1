"""refimpl: the executable specification (pure NumPy + SciPy, float64).

Read the module docstrings for formulas, shapes, conventions and sources.
"""

from . import accounting, flash, io_accounting, masks, moe, split_kv
from . import block, ffn, formats, losses, norms
from .flash import FlashStats, flash_attention, flash_attention_backward
from .sdpa import (
    alibi_bias,
    alibi_slopes,
    attention,
    attention_backward,
    attention_probs,
    multi_head_attention,
)
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
    "block",
    "ffn",
    "formats",
    "losses",
    "norms",
    "flash",
    "io_accounting",
    "masks",
    "moe",
    "split_kv",
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
