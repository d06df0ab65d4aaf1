"""Position arguments (``refimpl.rope``, ``refimpl.positional``, ``refimpl.alibi``): exact integer
positions, the rotary width, RoPE scaling dicts and keyword dicts, sinusoidal widths, ALiBi slopes.

The tuples of names (layouts, scalings) are the spec modules' own, passed in: this module imports
nothing above the package."""

from __future__ import annotations

import numbers
from typing import Mapping

import numpy as np

from .arrays import as_float_array
from .scalars import _type, choice, count, fail, flag, instance, positive_float, positive_int, real_number

MAX_POSITION = 2**53  # integers below this convert to float64 exactly

SCALING_KEYS = {  # rope_type: (required keys, optional keys), as HF ``rope_parameters`` names them
    "linear": (("factor",), ()),
    "dynamic": (("factor", "max_position_embeddings", "seq_len"), ()),
    "yarn": (("factor", "original_max_position_embeddings"),
             ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor", "truncate")),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"), ()),
}

_SCALING_ENTRY = {  # each scaling entry, checked by name ("scaling['factor']: expected ...")
    "factor": positive_float, "max_position_embeddings": positive_int, "seq_len": positive_int,
    "original_max_position_embeddings": positive_int, "low_freq_factor": positive_float,
    "high_freq_factor": positive_float, "beta_fast": positive_float, "beta_slow": positive_float,
    "mscale": real_number, "mscale_all_dim": real_number, "attention_factor": positive_float, "truncate": flag,
}


def int_positions(positions, name: str = "positions") -> np.ndarray:
    """An integer array of exact positions 0 <= m < 2^53 (any shape; bool and float rejected)."""
    if positions is None or isinstance(positions, (str, bytes)):
        fail(name, "an integer array (exact positions)", _type(positions), error=TypeError)
    p = np.asarray(positions)
    if p.dtype == np.bool_ or not np.issubdtype(p.dtype, np.integer):
        fail(name, "an integer array (exact positions)", f"dtype {p.dtype}", error=TypeError)
    if p.size and (p.min() < 0 or p.max() >= MAX_POSITION):
        fail(name, "0 <= m < 2^53", f"range [{p.min()}, {p.max()}]")
    return p


def batch_positions(positions, B: int, L: int) -> np.ndarray:
    """Integer positions (L,) or (B, L) as an int64 (B, L) view; rejects floats, bools, negatives, >= 2^53,
    and a (B, L) shape NumPy cannot index."""
    B, L = count(B, "B"), count(L, "L")
    p = int_positions(positions)
    if p.shape not in ((L,), (B, L)):
        fail("positions", f"shape (L,) = ({L},) or (B, L) = ({B}, {L})", str(p.shape))
    if max(B, 1) * max(L, 1) * 8 > np.iinfo(np.intp).max:  # a broadcast view allocates nothing, but NumPy
        # cannot shape it: it counts a zero axis as 1 in this check ((2^60, 0) int64 is "too big")
        fail("B, L", "a (B, L) int64 array NumPy can index (max(B, 1) * max(L, 1) * 8 <= 2^63 - 1 bytes)",
             f"B = {B}, L = {L}")
    return np.broadcast_to(p.astype(np.int64), (B, L))


def rotary_dim(rotary_dim, D: int, dim_name: str = "x", *, prefix: str = "") -> int:
    """rotary_dim (default: the head dim D, full rotary) even and <= D; ``dim_name`` names where D came
    from; ``prefix`` ("rope, ") names the dict the value came from."""
    if rotary_dim is None:
        if D % 2 or D == 0:  # D = 0 (an empty head axis) would reach base_frequencies as rotary_dim 0
            fail(f"{prefix}{dim_name}", "an even head dim >= 2 for full rotary (rotary_dim None)", D)
        return D
    d = positive_int(rotary_dim, "rotary_dim")
    if d % 2 or d > D:
        fail(f"{prefix}rotary_dim, {dim_name}", f"an even rotary_dim <= the head dim {D} (of {dim_name})", d)
    return d


def even_count(d, name: str, expected: str) -> int:
    """A positive even count; ``expected`` words the evenness ("an even number (d/2 rotated pairs)")."""
    d = positive_int(d, name)
    if d % 2:
        fail(name, expected, d)
    return d


def sinusoidal_width(d_model, frequencies: str, options: tuple) -> tuple:
    """(d, frequencies) of a sinusoidal encoding: d even (d/2 sin-cos pairs), >= 4 for the
    tensor2tensor frequencies (they divide by d/2 - 1)."""
    d = positive_int(d_model, "d_model")
    choice(frequencies, "frequencies", options)
    even_count(d, "d_model", "an even width (d/2 sin-cos pairs)")
    if frequencies == "tensor2tensor" and d < 4:
        fail("d_model", "d >= 4 (the tensor2tensor frequencies divide by d/2 - 1)", d)
    return d, frequencies


def rope_scaling(scaling, scalings: tuple, name: str = "scaling") -> dict | None:
    """A scaling dict (HF ``rope_parameters`` keys plus "rope_type" in ``scalings``), each entry checked;
    ``name`` names the dict ("rope['scaling']" inside a dict of keywords)."""
    if scaling is None:
        return None
    if not isinstance(scaling, Mapping) or scaling.get("rope_type") not in scalings:
        fail(name, f"None or a dict with rope_type in {scalings}", repr(scaling))
    kind = scaling["rope_type"]
    required, optional = SCALING_KEYS[kind]
    missing = [k for k in required if scaling.get(k) is None]
    unknown = set(scaling) - {"rope_type", *required, *optional}
    if missing or unknown:
        fail(name, f"keys {list(required + optional)} for {kind!r}", f"missing {missing}, unknown {sorted(unknown)}")
    out = dict(scaling)
    for key, check in _SCALING_ENTRY.items():
        if scaling.get(key) is not None:
            out[key] = check(scaling[key], f"{name}[{key!r}]")
    if kind == "llama3" and not out["high_freq_factor"] > out["low_freq_factor"]:
        fail(name, "llama3 high_freq_factor > low_freq_factor",
             f"{out['high_freq_factor']!r} <= {out['low_freq_factor']!r}")
    return out


def rope_frequency_inputs(rotary_dim, base, scaling, scalings: tuple) -> tuple:
    """(d, base, scaling) of ``rope_frequencies``: d even, base > 0, the scaling checked, and what a
    scaling needs of them: dynamic NTK's exponent d / (d - 2) needs d >= 4, YaRN's ramp log(...) /
    log(base) needs base != 1."""
    d = positive_int(rotary_dim, "rotary_dim")
    sc = rope_scaling(scaling, scalings)
    d, base = even_count(d, "rotary_dim", "an even number (d/2 rotated pairs)"), positive_float(base, "base")
    kind = None if sc is None else sc["rope_type"]
    if kind == "dynamic" and d < 4:
        fail("rotary_dim", "rotary_dim >= 4 for the dynamic scaling (exponent d / (d - 2))", d)
    if kind == "yarn" and base == 1.0:
        fail("base", "base != 1 (the yarn ramp's dims are log(...) / log(base))", 1)
    return d, base, sc


def rope_kwargs(rope, head_dim, layouts: tuple, scalings: tuple) -> dict:
    """A dict of apply_rope keywords (layout, rotary_dim, base, scaling); messages name ``rope``. With
    ``head_dim`` (the rotated vectors' width) rotary_dim is checked against it too."""
    instance(rope, "rope", Mapping, "dict of apply_rope keywords")
    unknown = set(rope) - {"layout", "rotary_dim", "base", "scaling"}
    if unknown:
        fail("rope", "keywords among layout, rotary_dim, base, scaling", f"unknown keywords {sorted(unknown)}")
    if "layout" in rope:
        choice(rope["layout"], "rope['layout']", layouts)
    if rope.get("rotary_dim") is not None:
        positive_int(rope["rotary_dim"], "rope['rotary_dim']")
    if head_dim is not None:  # the head dim's type under its own name, its value under the dict's
        if isinstance(head_dim, (bool, np.bool_)) or not isinstance(head_dim, (numbers.Integral, np.integer)):
            count(head_dim, "head_dim")  # its TypeError
        rotary_dim(rope.get("rotary_dim"), positive_int(head_dim, "rope, head_dim"), "head_dim", prefix="rope, ")
    if "base" in rope:
        positive_float(rope["base"], "rope['base']")
    if rope.get("scaling") is not None:
        rope_scaling(rope["scaling"], scalings, "rope['scaling']")
    return dict(rope)


def last_axis(x, name: str = "x") -> np.ndarray:
    """``x`` as a float64 array with a last axis of at least one column (a head_dim)."""
    x = as_float_array(x, name)
    if x.ndim == 0 or x.shape[-1] == 0:
        fail(name, "a last axis of head_dim >= 1 columns", f"shape {x.shape}")
    return x


def slope_array(slopes, name: str = "slopes", heads: tuple | None = None) -> np.ndarray:
    """ALiBi slopes as float64 (H,) or (B, H); with ``heads`` = (B, Hq) the shape must be (Hq,) or (B, Hq)."""
    s = as_float_array(slopes, name)
    if heads is None and s.ndim not in (1, 2):
        fail(name, "shape (H,) or (B, H)", str(s.shape))
    if heads is not None and s.shape not in ((heads[1],), tuple(heads)):
        fail(name, f"shape (Hq,) = ({heads[1]},) or (B, Hq) = {tuple(heads)}", str(s.shape))
    return s
