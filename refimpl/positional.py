"""Sinusoidal position encoding (docs/positional.md).

For an even width d and pair index i = 0 .. d/2 - 1, position m gets the angles m theta_i:

    frequencies="paper"          theta_i = base^(-2i/d)          (Vaswani et al. 2017, section 3.5;
                                                                   the same theta_i as RoPE)
    frequencies="tensor2tensor"  theta_i = base^(-i/(d/2 - 1))    (tensor2tensor get_timing_signal_1d,
                                                                   fairseq / HF M2M100 get_embedding); d >= 4

    layout="interleaved"  PE[m, 2i] = sin(m theta_i), PE[m, 2i + 1] = cos(m theta_i)   (the paper; HF XLM
                          create_sinusoidal_embeddings)
    layout="half"         PE[m, i] = sin(m theta_i), PE[m, d/2 + i] = cos(m theta_i)   (HF Marian; with
                          "tensor2tensor" frequencies, fairseq / M2M100)

base = 10000. Angles are one float64 product of the exact integer position and theta_i (as in
``refimpl.rope``). For any offset k, PE(m + k) is a fixed rotation of PE(m) (per pair, by the angle
k theta_i), so PE(m) . PE(n) = sum_i cos((m - n) theta_i) depends on m - n only.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_budget, choice, finite_result, positive_float
from ._validate.positions import int_positions, sinusoidal_width
from .rope import base_frequencies

LAYOUTS = ("interleaved", "half")
FREQUENCIES = ("paper", "tensor2tensor")


def sinusoidal_frequencies(d_model: int, *, base: float = 10000.0, frequencies: str = "paper") -> np.ndarray:
    """theta_i, i = 0 .. d/2 - 1, for the named frequency convention (module docstring)."""
    d, frequencies = sinusoidal_width(d_model, frequencies, FREQUENCIES)
    check_budget("d_model", shape=(d,), itemsize=16, what=f"{d // 2} frequencies")
    base = positive_float(base, "base")
    if frequencies == "paper":
        return base_frequencies(d, base)
    with np.errstate(over="ignore"):
        theta = base ** (-np.arange(d // 2, dtype=np.float64) / (d // 2 - 1))
    return finite_result(theta, "a frequency theta_i = base^(-i/(d/2 - 1))", "base")


def sinusoidal_encoding(positions, d_model: int, *, base: float = 10000.0, layout: str = "interleaved",
                        frequencies: str = "paper") -> np.ndarray:
    """PE of shape positions.shape + (d_model,), float64; positions are integers 0 <= m < 2^53."""
    p = int_positions(positions)
    theta = sinusoidal_frequencies(d_model, base=base, frequencies=frequencies)
    choice(layout, "layout", LAYOUTS)
    check_budget("positions, d_model", shape=p.shape + (2 * theta.size,), itemsize=32, what="an encoding")
    with np.errstate(over="ignore"):
        angle = finite_result(p.astype(np.float64)[..., None] * theta, "an angle m theta_i", "positions, base")
    s, c = np.sin(angle), np.cos(angle)
    if layout == "half":
        return np.concatenate([s, c], axis=-1)
    return np.stack([s, c], axis=-1).reshape(p.shape + (2 * theta.size,))


__all__ = ["sinusoidal_frequencies", "sinusoidal_encoding", "LAYOUTS", "FREQUENCIES"]
