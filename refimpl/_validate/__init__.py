"""The one validation layer shared by every public function (README "Contract").

Each argument is checked once, by name, with one wording:

    <name>: expected <what>, got <what was given>

* arrays: real floating point (integers accepted and converted; bool, complex,
  object and strings rejected with TypeError); rank and shape agreement stated
  in the message (``expected shape (T, E) = (4, 3)``); NaN and +inf rejected,
  -inf only where it means "hidden" (masked scores, log-sum-exps);
* counts: Python or NumPy integers (bool is not a count, a float is not a
  count even when integral); a range; counts that size arrays are at most
  ``MAX_COUNT`` = 2**62 (NumPy's int64 indices);
* real numbers: Python or NumPy reals (bool and complex rejected), finite
  unless stated, with a range;
* names: one of the listed values (the message lists them);
* objects: an instance of the expected class (``refimpl.moe.Routing``...).

Bounded work: every allocation an argument sizes is estimated first (``check_budget``);
one beyond the byte budget (``$REFIMPL_MAX_BYTES``, default half the machine's physical
memory, ``max_bytes()``) is a ValueError naming the sizing arguments and the bytes it would
take, never a MemoryError; a Python loop an argument bounds is bounded by the same budget
(one step counted as ``STEP_BYTES`` bytes), never a hang. Counting functions count in closed
form.

Extremes: an exact value outside float64 range is an error, never inf
(``finite_result``); attention rejects inputs whose scores may overflow
float64 (``check_score_range``) unless a softcap bounds them.

The package: ``budget`` (sizes, the work budget), ``scalars`` (counts, reals, flags, names, ``fail``),
``arrays``, ``attention``, ``objects``; each family's own checks sit in a module named for it.
Every module imports only NumPy and its siblings: the package is a leaf of refimpl.
"""

from __future__ import annotations

from .budget import MAX_COUNT, FLOAT_MAX, STEP_BYTES, max_bytes, check_budget  # noqa: F401
from .scalars import (fail, _type, plain, count, positive_int, real_number, positive_float, flag,  # noqa: F401
                      choice, instance, axis_index, finite_result)
from .arrays import (as_float_array, entries_first, finite_entries, bool_array, leading_shape, chunk_starts, same_shape,  # noqa: F401
                     index_array, int_array)
from .attention import (check_score_range, check_real_4d, real_4d_extent, check_qkv_shapes, check_window,  # noqa: F401
                        broadcastable, attention_scale, attention_bias, attention_dropout,
                        attention_bool_mask)
from .objects import capacity_factor, register_class, routing, experts  # noqa: F401
