"""Attention conventions and the attention core's own checks: the library presets of
``refimpl.conventions`` (their fields, each library's native window argument, ALiBi slopes with a
bias), the online-softmax states and split-KV parts of ``refimpl.softmax``, the float64 range of the
scores and gradients of ``refimpl.definition`` / ``refimpl._problem``, and the thread count of
``refimpl._parallel``.

Option tuples and classes are passed in: this module imports nothing above the package."""

from __future__ import annotations

import numbers

import numpy as np

from .arrays import as_float_array
from .attention import check_window
from .positions import slope_array
from .scalars import _type, axis_index, choice, count, fail, flag, instance, plain

# --- refimpl.conventions -------------------------------------------------------------------------


def convention_fields(name, source, align, window_rule, fully_masked, fully_masked_float64, masked_lse,
                      alibi_causal_lse_shift, *, alignments: tuple, window_rules: tuple, outputs: tuple) -> None:
    """The fields of an ``AttentionConvention``: names are str, the choices among the options given,
    ``masked_lse`` None, +inf, -inf or "finite"."""
    for field, value in (("name", name), ("source", source)):
        instance(value, field, str)
    choice(align, "align", alignments)
    choice(window_rule, "window_rule", window_rules)
    choice(fully_masked, "fully_masked", outputs)
    if fully_masked_float64 is not None:
        choice(fully_masked_float64, "fully_masked_float64", outputs)
    lse = masked_lse
    if not (lse is None or (isinstance(lse, str) and lse == "finite")
            or (isinstance(lse, (float, np.floating)) and np.isinf(lse))):
        fail("masked_lse", "None, +inf, -inf or 'finite'", repr(plain(lse)))
    flag(alibi_causal_lse_shift, "alibi_causal_lse_shift")


def _window_int(x, what: str) -> int:
    """An int window parameter; ``what`` is the library's own name, reported as window (name)."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)):
        fail(f"window ({what})", "an int", _type(x), error=TypeError)
    return int(x)


def _window_pair(native, what: str) -> tuple:
    if not isinstance(native, (tuple, list)) or len(native) != 2:
        fail(f"window ({what})", "a pair (left, right)", repr(native), error=TypeError)
    return native


def native_window(native, rule: str, Lq=None, Lk=None) -> tuple:
    """A library's own window argument, checked as that library takes it (``rule``, one of the
    ``window_rule`` names of ``refimpl.conventions``); returns the arguments of the rule's mapping:

        spec                 (window (left, right) or None,)
        flash                (left, right), ints (negative: unbounded)
        flash2               (left, right, Lq, Lk), ints (the host code rewrites by the lengths)
        keys_including_self  (W,), W >= 1
        flex                 (W,), W >= 0
        xformers_br, jax     (left, right), ints >= 0 (jax: an int w is (w, w))
        none                 refused: the library has no window parameter
    """
    if rule == "spec":
        return (check_window(native),)
    if rule == "flash":
        left, right = _window_pair(native, "window_size")
        return _window_int(left, "window_size[0]"), _window_int(right, "window_size[1]")
    if rule == "flash2":
        if Lq is None or Lk is None:
            fail("Lq, Lk", "both (flash_attn2's host code rewrites the window by the problem's lengths)", "None")
        Lq, Lk = count(Lq, "Lq"), count(Lk, "Lk")
        native = _window_pair(native, "window_size")
        return _window_int(native[0], "window_size[0]"), _window_int(native[1], "window_size[1]"), Lq, Lk
    if rule == "keys_including_self":
        W = _window_int(native, "window")
        if W < 1:
            fail("window (W keys including self)", "W >= 1", W)
        return (W,)
    if rule == "flex":
        W = _window_int(native, "window_size")
        if W < 0:
            fail("window (window_size)", ">= 0", W)
        return (W,)
    if rule == "xformers_br":
        left, right = (_window_int(x, "window_left, window_right") for x in _window_pair(native, "window_left, window_right"))
        if left < 0 or right < 0:
            fail("window (window_left, window_right)", "non-negative (left, right)", str(native))
        return left, right
    if rule == "jax":
        if isinstance(native, (tuple, list)):
            left, right = (_window_int(x, "local_window_size") for x in _window_pair(native, "local_window_size"))
        else:
            left = right = _window_int(native, "local_window_size")
        if left < 0 or right < 0:
            fail("window (local_window_size)", "non-negative", str(native))
        return left, right
    fail("window", "None (this library has no window parameter: pass an explicit boolean mask)", "a window")


def alibi_with_bias(alibi_slopes, bias, full_shape: tuple):
    """(slopes, bias) of a preset's ``attention``: slopes (Hq,) or (B, Hq); a bias (None, or finite / -inf
    entries) that broadcasts with the ALiBi bias to (B, Hq, Lq, Lk) = ``full_shape``, as float64."""
    B, Hq, Lq, Lk = full_shape
    s = slope_array(alibi_slopes, "alibi_slopes", heads=(B, Hq))
    if bias is not None:
        bias = as_float_array(bias, "bias", allow_neg_inf=True)
        try:
            np.broadcast_shapes(bias.shape, tuple(full_shape))  # the ALiBi bias broadcasts to full_shape too
        except ValueError:
            fail("bias", f"a shape that broadcasts to (B, Hq, Lq, Lk) = {tuple(full_shape)}", str(bias.shape))
    return s, bias


# --- refimpl._parallel ---------------------------------------------------------------------------


def thread_count(env: str) -> int:
    """``$REFIMPL_NUM_THREADS``: a positive integer."""
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        fail("REFIMPL_NUM_THREADS", "a positive integer", repr(env))
    return n


# --- refimpl.softmax -----------------------------------------------------------------------------


def online_state(m, l) -> tuple:
    """(m, l) of an online-softmax state: m finite or -inf (nothing seen), l of m's shape, finite, >= 0."""
    m = as_float_array(m, "m", allow_neg_inf=True)
    l = as_float_array(l, "l", shape=m.shape, shape_doc="the same shape as m")
    if (l < 0).any():
        fail("l", "sums of exponentials >= 0", float(np.min(l)))
    return m, l


def state_and_block(state, block, axis, cls) -> tuple:
    """(block, axis) for folding ``block`` into ``state`` (a ``cls``): the state's shape is the
    block's with ``axis`` removed."""
    instance(state, "state", cls)
    block = as_float_array(block, "block", allow_neg_inf=True)
    axis = axis_index(axis, block.ndim)
    rest = block.shape[:axis] + block.shape[axis + 1:]
    if state.m.shape != rest:
        fail("block", f"shape {state.m.shape} (the state's) with the axis {axis} added", str(block.shape))
    return block, axis


def two_states(a, b, cls) -> None:
    """Two ``cls`` states of one shape (to merge)."""
    instance(a, "a", cls), instance(b, "b", cls)
    if a.m.shape != b.m.shape:
        fail("a, b", "states of the same shape", f"{a.m.shape} and {b.m.shape}")


def cut_points(boundaries, n: int) -> list:
    """[0, sorted cuts in [0, n] ..., n]: the block edges of a split axis of n entries."""
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        fail("boundaries", "a sequence of ints", _type(boundaries), error=TypeError)
    return [0, *sorted(count(b, "boundaries", maximum=n, what=f"a cut in [0, n={n}]") for b in boundaries), n]


def attention_parts(outs, lses) -> tuple:
    """(outs, lses) of split-KV parts as float64 lists: one or more parts, each out (..., Dv) with
    Dv >= 1 and one shape for all, each lse (...) (finite or -inf) its out's shape without Dv."""
    for name, seq in (("outs", outs), ("lses", lses)):
        if isinstance(seq, (str, bytes, np.ndarray)) or not hasattr(seq, "__len__"):
            fail(name, "a list of arrays", _type(seq), error=TypeError)
    outs = [as_float_array(o, f"outs[{i}]", min_size={-1: 1} if np.ndim(o) else None) for i, o in enumerate(outs)]
    lses = [as_float_array(l, f"lses[{i}]", allow_neg_inf=True) for i, l in enumerate(lses)]
    if not outs or len(outs) != len(lses):
        fail("outs, lses", "the same positive number of parts", f"{len(outs)} and {len(lses)}")
    for i, (o, l) in enumerate(zip(outs, lses)):
        if o.ndim < 1 or o.shape != outs[0].shape:
            fail(f"outs[{i}]", f"shape (..., Dv) = {outs[0].shape} as outs[0]", str(o.shape))
        if o.shape[:-1] != l.shape:
            fail(f"lses[{i}]", f"shape {o.shape[:-1]} (outs[{i}] without Dv)", str(l.shape))
    return outs, lses


# --- the float64 range of scores and gradients (refimpl.definition, refimpl._problem) -------------


def definition_scores_finite(bad: np.ndarray) -> None:
    """No visible score of the definition (plain float64 arithmetic) beyond float64: ``bad`` marks them."""
    if bad.any():
        fail("q, k, scale", "every visible score of the definition (plain float64 arithmetic) to be finite",
             "one beyond the float64 range; rescale q, k or scale, pass softcap=, or use refimpl.attention, "
             "which forms scores near the float64 limits exactly")


def tile_scores_finite(bad: np.ndarray) -> None:
    """No visible final score of a tile beyond float64 (the rescaled path): ``bad`` marks them."""
    if bad.any():
        fail("q, k, scale", "every visible score scale * <q_i, k_j> (plus bias) within float64 range",
             "one beyond it (|s| > 1.8e308); rescale q, k or scale, or pass softcap= to bound the scores")


def gradients_finite(grads: dict, culprits: str) -> None:
    """Every gradient {name: array} finite (an exact gradient beyond float64 is an error naming ``culprits``)."""
    for name, g in grads.items():
        if not np.isfinite(g).all():
            fail(culprits, f"the gradient {name} within float64 range",
                 f"one beyond it (|{name}| > 1.8e308) or NaN; rescale dout or v")
