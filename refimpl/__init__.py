"""refimpl: the executable specification (pure NumPy + SciPy, float64).

Read the module docstrings for formulas, shapes, conventions and sources.
"""

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
    "OnlineSoftmaxState",
    "logsumexp",
    "merge_attention_states",
    "online_logsumexp",
    "online_softmax_merge",
    "online_softmax_update",
    "softmax",
]
