"""Rotary position embeddings (RoPE): layouts, partial rotary, frequency scalings.

RoPE (Su et al. 2021; docs/notes.md#rope) rotates each pair of the first
``d = rotary_dim`` columns of a query or key at integer position m:

    theta_i  = base^(-2i/d),                         i = 0 .. d/2 - 1
    alpha_i  = m * theta_i                            (angle, radians)
    [y_a]   [cos alpha_i  -sin alpha_i] [x_a]
    [y_b] = [sin alpha_i   cos alpha_i] [x_b]        for the pair (a, b) of frequency i
    columns d .. D - 1 pass through unchanged          (partial rotary)

so <R_m q, R_n k> = <q, R_(n-m) k> depends on m - n only. Which columns form
pair i is the *layout*, where real libraries disagree:

    "half"        (a, b) = (i, i + d/2)   GPT-NeoX (transformers/models/gpt_neox/modeling_gpt_neox.py,
                  ``rotary_ndims``), HF Llama ``rotate_half`` / ``apply_rotary_pos_emb``
                  (transformers/models/llama/modeling_llama.py)
    "interleaved" (a, b) = (2i, 2i + 1)   GPT-J ``rotate_every_two`` (transformers/models/gptj/
                  modeling_gptj.py), Meta llama ``apply_rotary_emb`` (model.py: x viewed as d/2
                  complex numbers times exp(i m theta)), DeepSeek-V3 inference/model.py

The layouts are one fixed column permutation apart (``layout_permutation``):
HF's Llama conversion script permutes W_q and W_k rows the same way.

Scalings (``scaling`` = None or a dict keyed as HF ``rope_parameters``, each
following transformers 5.23 ``modeling_rope_utils``; the spec computes in
float64 where HF uses float32):

    "linear"   theta_i / factor                   (position interpolation, Chen et al. 2023;
                                                   ``_compute_linear_scaling_rope_parameters``)
    "dynamic"  base' = base * (factor * s / P - (factor - 1))^(d / (d - 2)),
               s = max(seq_len, P), P = max_position_embeddings
                                                  (dynamic NTK; ``_compute_dynamic_ntk_parameters``;
                                                   seq_len is explicit here: HF takes max(position)+1
                                                   at run time, so keys cached earlier were rotated
                                                   with another base)
    "yarn"     theta_i' = theta_i / factor * r_i + theta_i * (1 - r_i), with the ramp
               r_i = clamp((i - low) / (high - low), 0, 1) between the dims where a period fits
               beta_fast and beta_slow times into the original context; cos and sin are
               multiplied by the attention factor 0.1 ln(factor) + 1 (or the mscale ratio)
                                                  (Peng et al. 2023; ``_compute_yarn_parameters``,
                                                   ``get_mscale``, ``find_correction_range``)
    "llama3"   wavelength 2 pi / theta_i: below P / high_freq_factor kept, above
               P / low_freq_factor divided by factor, smooth in between
                                                  (``_compute_llama3_parameters``; Meta Llama 3.1)

Positions are integers (int dtype, 0 <= m < 2^53): the angle is one float64
product of the exact integer m and theta_i, so there is no drift with m (an
angle accumulated step by step, or a float32 product, is off by up to ~0.06 rad
at m = 2^20). The attention factor multiplies the rotated columns only (HF
multiplies its cos and sin tables).
"""

from __future__ import annotations

import math
import numpy as np

from ._validate import as_float_array, check_budget, choice, finite_result, positive_float, positive_int, real_number
from ._validate import positions as _VP

LAYOUTS = ("half", "interleaved")
SCALINGS = ("linear", "dynamic", "yarn", "llama3")
MAX_POSITION = _VP.MAX_POSITION  # 2**53: integers below this convert to float64 exactly


def rope_definition(x, positions, *, layout: str = "half", rotary_dim: int | None = None, base: float = 10000.0,
                    scaling=None):
    """y = R(m) x for x (B, H, L, D) at integer positions (L,) or (B, L): the rotation written as a
    D x D matrix per position, the formula of the module docstring (docs/notes.md#rope). ``apply_rope``
    (pairs sliced out and recombined) is tested equal to it (tests/test_definition_rope.py)."""
    x = as_float_array(x, "x", ndim=4)
    d, pos = check_rotary_dim(rotary_dim, x.shape[3]), check_positions(positions, x.shape[0], x.shape[2])
    check_budget("x, positions", shape=pos.shape + (x.shape[3],) * 2, what="the rotation matrices R(m)")
    theta, f = rope_frequencies(d, base, scaling)                       # theta_i (scaled), attention factor f
    i = np.arange(d // 2)
    a, b = (i, i + d // 2) if check_layout(layout) == "half" else (2 * i, 2 * i + 1)  # the pair of frequency i
    alpha = pos.astype(np.float64)[..., None] * theta                    # alpha_i = m theta_i  (B, L, d/2)
    R = np.broadcast_to(np.eye(x.shape[3]), pos.shape + (x.shape[3],) * 2).copy()  # columns >= d pass through
    R[..., a, a], R[..., a, b] = f * np.cos(alpha), -f * np.sin(alpha)   # [y_a]   [cos  -sin] [x_a]
    R[..., b, a], R[..., b, b] = f * np.sin(alpha), f * np.cos(alpha)    # [y_b] = [sin   cos] [x_b]  (times f)
    return finite_result(np.einsum("blij,bhlj->bhli", R, x), "a rotated entry", "x, scaling")  # y = R(m) x


def check_layout(layout, name: str = "layout") -> str:
    """``layout``: one of LAYOUTS ("half", "interleaved")."""
    return choice(layout, name, LAYOUTS)


def check_rotary_dim(rotary_dim, D: int, dim_name: str = "x") -> int:
    """rotary_dim (default: the head dim D, full rotary) even and <= D; ``dim_name`` names where D came from."""
    return _VP.rotary_dim(rotary_dim, D, dim_name)


def int_positions(positions, name: str = "positions") -> np.ndarray:
    """An integer array of exact positions 0 <= m < 2^53 (any shape)."""
    return _VP.int_positions(positions, name)


def check_positions(positions, B: int, L: int) -> np.ndarray:
    """Integer positions (L,) or (B, L) as int64 (B, L); rejects floats, bools, negatives, >= 2^53."""
    return _VP.batch_positions(positions, B, L)


def check_scaling(scaling) -> dict | None:
    """Validate a scaling dict (HF ``rope_parameters`` keys plus "rope_type"; the keys each type takes:
    ``refimpl._validate.positions.SCALING_KEYS``)."""
    return _VP.rope_scaling(scaling, SCALINGS)


def base_frequencies(rotary_dim: int, base: float) -> np.ndarray:
    """theta_i = 1 / base^(2i/d), i = 0 .. d/2 - 1 (float64; HF's ``1.0 / (base ** (arange(0, d, 2) / d))``).

    ``rotary_dim`` is even (d/2 pairs); ``base`` > 0. A base below 1 so small that a theta_i
    exceeds float64 range is an error (never inf).
    """
    d = _VP.even_count(rotary_dim, "rotary_dim", "an even number (d/2 rotated pairs)")
    check_budget("rotary_dim", shape=(d,), itemsize=16, what=f"{d // 2} frequencies")
    return _base_frequencies(d, positive_float(base, "base"))


def _base_frequencies(d: int, base: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        theta = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    return finite_result(theta, "a frequency theta_i = base^(-2i/d)", "base")


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1 (HF ``get_mscale``).

    ``scale`` (the context extension factor) > 0, ``mscale`` a finite real.
    """
    return _mscale(positive_float(scale, "scale"), real_number(mscale, "mscale"))


def _mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else finite_result(0.1 * mscale * math.log(scale) + 1.0, "the mscale", "scale, mscale")


def rope_frequencies(rotary_dim: int, base: float = 10000.0, scaling=None) -> tuple[np.ndarray, float]:
    """(theta (d/2,), attention_factor): the per-pair frequencies after ``scaling``.

    ``rotary_dim`` even, ``base`` > 0, ``scaling`` None or a dict (see ``check_scaling``);
    a scaled frequency or factor beyond float64 range is an error.

    Mirrors HF's ``ROPE_INIT_FUNCTIONS[rope_type](config)`` -> (inv_freq, attention_factor).
    """
    d, base, sc = _VP.rope_frequency_inputs(rotary_dim, base, scaling, SCALINGS)
    check_budget("rotary_dim", shape=(d,), itemsize=16, what=f"{d // 2} frequencies")
    theta = _base_frequencies(d, base)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # non-finite results reported below
        theta, attn = _scaled(theta, d, base, sc)
    return finite_result(theta, "a scaled frequency", "base, scaling"), finite_result(attn, "the attention factor",
                                                                                       "scaling")


def _scaled(theta: np.ndarray, d: int, base: float, sc: dict | None) -> tuple[np.ndarray, float]:
    if sc is None:
        return theta, 1.0
    kind, factor = sc["rope_type"], sc["factor"]
    if kind == "linear":
        return theta / factor, 1.0
    if kind == "dynamic":
        P, s = sc["max_position_embeddings"], max(sc["seq_len"], sc["max_position_embeddings"])
        with np.errstate(over="ignore"):
            new_base = base * (factor * s / P - (factor - 1)) ** (d / (d - 2))  # d >= 4 (validated)
        return _base_frequencies(d, finite_result(new_base, "the dynamic NTK base", "base, scaling")), 1.0
    if kind == "llama3":
        P = sc["original_max_position_embeddings"]
        lo, hi = sc["low_freq_factor"], sc["high_freq_factor"]
        wavelen = 2 * math.pi / theta
        scaled = np.where(wavelen > P / lo, theta / factor, theta)
        smooth = (P / wavelen - lo) / (hi - lo)
        medium = ~(wavelen < P / hi) & ~(wavelen > P / lo)
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled), 1.0
    # yarn
    P = sc["original_max_position_embeddings"]
    beta_fast, beta_slow = sc.get("beta_fast") or 32, sc.get("beta_slow") or 1
    attn = sc.get("attention_factor")
    if attn is None:
        m, m_all = sc.get("mscale"), sc.get("mscale_all_dim")
        attn = _mscale(factor, m) / _mscale(factor, m_all) if (m and m_all) else _mscale(factor, 1.0)

    def correction_dim(rotations):  # the dim index whose period fits `rotations` times into P (base != 1)
        return d * math.log(P / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if sc.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001  # HF: prevent a singular ramp
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return theta / factor * ramp + theta * (1 - ramp), float(attn)


def layout_permutation(head_dim: int, rotary_dim: int | None = None) -> np.ndarray:
    """Column order taking a "half"-layout vector to the "interleaved" layout.

    ``x_interleaved = x_half[..., perm]``: interleaved column 2i holds half column i and
    2i + 1 holds i + d/2; columns >= rotary_dim stay. ``np.argsort(perm)`` goes back.
    """
    D = positive_int(head_dim, "head_dim")
    d = check_rotary_dim(rotary_dim, D, "head_dim")
    check_budget("head_dim", shape=(D,), itemsize=32, what=f"a permutation of {D} columns")
    half = np.arange(d // 2)
    return np.concatenate([np.stack([half, half + d // 2], axis=1).reshape(-1), np.arange(d, D)])


def convert_layout(x, src: str, dst: str, rotary_dim: int | None = None) -> np.ndarray:
    """Permute the last axis of ``x`` (a q, a k, or the output rows of W_q / W_k) from layout src to dst."""
    check_layout(src, "src"), check_layout(dst, "dst")
    x = _VP.last_axis(x, "x")
    perm = layout_permutation(x.shape[-1], rotary_dim)
    if src == dst:
        return x.copy()
    return x[..., perm] if src == "half" else x[..., np.argsort(perm)]


def _pairs(x: np.ndarray, d: int, layout: str):
    """The two columns of each pair, (..., d/2) each."""
    return (x[..., : d // 2], x[..., d // 2 : d]) if layout == "half" else (x[..., 0:d:2], x[..., 1:d:2])


def _unpair(a: np.ndarray, b: np.ndarray, layout: str) -> np.ndarray:
    if layout == "half":
        return np.concatenate([a, b], axis=-1)
    return np.stack([a, b], axis=-1).reshape(*a.shape[:-1], 2 * a.shape[-1])


def rope_angles(positions: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """alpha[..., l, i] = m_l * theta_i: one float64 product of an exact integer and theta_i.

    positions: integers 0 <= m < 2^53 (any shape); theta: finite (d/2,). An angle beyond
    float64 range is an error.
    """
    return _angles(int_positions(positions), as_float_array(theta, "theta", ndim=1))


def _angles(pos: np.ndarray, theta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        alpha = pos.astype(np.float64)[..., None] * theta
    return finite_result(alpha, "an angle m * theta_i", "positions, theta")


def apply_rope(x, positions, *, layout: str = "half", rotary_dim: int | None = None, base: float = 10000.0, scaling=None):
    """Rotate the first ``rotary_dim`` columns of x (B, H, L, D) at integer ``positions`` (L,) or (B, L).

    Returns float64 (B, H, L, D); see the module docstring for the formula, the
    layouts and the scalings. Columns >= rotary_dim are returned unchanged; the
    rotated ones are multiplied by the scaling's attention factor (1 except YaRN).
    """
    x = as_float_array(x, "x", ndim=4)
    B, H, L, D = x.shape
    layout = check_layout(layout)
    d = check_rotary_dim(rotary_dim, D)
    pos = check_positions(positions, B, L)
    theta, attn = rope_frequencies(d, base, scaling)
    alpha = _angles(pos, theta)[:, None]  # (B, 1, L, d/2)
    cos, sin = attn * np.cos(alpha), attn * np.sin(alpha)
    xa, xb = _pairs(x, d, layout)
    with np.errstate(over="ignore", invalid="ignore"):
        rotated = _unpair(xa * cos - xb * sin, xb * cos + xa * sin, layout)
    return np.concatenate([finite_result(rotated, "a rotated entry", "x, scaling"), x[..., d:]], axis=-1)


def check_rope_kwargs(rope, head_dim: int | None = None) -> dict:
    """Validate a dict of apply_rope keywords (layout, rotary_dim, base, scaling); messages name ``rope``.

    With ``head_dim`` (the rotated vectors' width) rotary_dim is checked against it too.
    """
    return _VP.rope_kwargs(rope, head_dim, LAYOUTS, SCALINGS)


__all__ = [
    "LAYOUTS", "SCALINGS", "apply_rope", "rope_definition", "base_frequencies", "check_positions", "check_rope_kwargs", "convert_layout",
    "layout_permutation", "rope_angles", "rope_frequencies", "yarn_get_mscale",
]
