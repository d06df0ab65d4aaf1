"""The validation layer's checks, public: for the gpu facade, adapters and the properties.

Every function here is ``refimpl._validate``'s (their one home; see its docstring for the wording
``<name>: expected <what>, got <what was given>``). Other packages import them from here so that
no private name crosses a package boundary.
"""

from ._validate import (FLOAT_MAX, MAX_COUNT, as_float_array, attention_bias, attention_bool_mask,  # noqa: F401
                        attention_dropout, attention_scale, bool_array, broadcastable, check_budget,
                        check_qkv_shapes, check_real_4d, check_score_range, check_window, choice, count, experts,
                        finite_result, flag, index_array, instance, int_array, leading_shape, max_bytes, plain,
                        positive_float, positive_int, real_number, routing)

__all__ = ["FLOAT_MAX", "MAX_COUNT", "as_float_array", "attention_bias", "attention_bool_mask", "attention_dropout",
           "attention_scale", "bool_array", "broadcastable", "check_budget", "check_qkv_shapes", "check_real_4d",
           "check_score_range", "check_window", "choice", "count", "experts", "finite_result", "flag", "index_array",
           "instance", "int_array", "leading_shape", "max_bytes", "plain", "positive_float", "positive_int", "real_number",
           "routing"]
