"""refimpl: the executable specification (pure NumPy + SciPy, float64).

Read the module docstrings for formulas, shapes, conventions and sources.
"""

from . import accounting, masks, moe
from .sdpa import (
    alibi_bias,
    alibi_slopes,
    attention,
    attention_backward,
    attention_probs,
    multi_head_attention,
)
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
    "masks",
    "moe",
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
