"""Linear-time mixer worked examples from the notes (docs/notes.md#rwkv), computed by refimpl.mixers.

The notes give the decay of a token 100 steps back at w = 0.1 as e^-10, about 0.000045. The spec
computes it from RWKV-4's WKV weights (:func:`refimpl.mixers.rwkv4.log_weights`, kernel
w = -0.1, k = 0, u = 0): two past tokens 100 steps apart differ by e^{100 w} = e^-10. Beside it,
what RWKV-4 actually gives a token at t - j = 100: the most recent past token (j = t - 1) is
undecayed, so the factor is e^{(t-1-j) w} = e^-9.9, and the current token carries the bonus e^u
instead (docs/errata.md#e9 covers the rest of the notes' RWKV formula).
"""

from __future__ import annotations

import numpy as np

from refimpl.mixers import rwkv4

from . import WorkedExample


def _weights(t: int, w: float = -0.1):
    """Unnormalised WKV weights of query t over j = 0..t (one channel, k = 0, u = 0)."""
    lw = rwkv4.log_weights(np.array([[w]]), np.array([[0.0]]), np.zeros((1, 1, t + 1, 1)))
    return np.exp(lw[0, 0, t, : t + 1, 0])


def _decay_100_steps():
    t = 101
    wts = _weights(t)
    return float(wts[0] / wts[100])  # j = 0 against j = 100: 100 steps of decay apart


def _rwkv4_exact():
    wts = _weights(100)
    return (f"RWKV-4 WKV at t - j = 100: weight e^((t-1-j) w) = {wts[0]:.4g} (= e^-9.9) relative to the undecayed "
            f"token t-1; the current token gets e^(u + k_t) instead of e^0")


EXAMPLES = [
    WorkedExample(
        "rwkv_decay_w01_100_steps", "docs/notes.md#rwkv", "e^-10 ≈ 0.000045 (w = 0.1, t - j = 100)",
        _decay_100_steps, 4.54e-5, 1.2e-3,
        "100 steps of RWKV-4 per-channel decay with rate 0.1 (kernel w = -0.1); tolerance: half a unit in 4.54e-5's last digit",
        beside=_rwkv4_exact,
    ),
]
