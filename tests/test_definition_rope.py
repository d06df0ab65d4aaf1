"""RoPE's fast form equals the definition (``refimpl.rope.rope_definition``) within a derived bound.

The definition builds R(m), a D x D matrix per position (2 x 2 rotations on the pairs of the layout,
the identity on columns >= rotary_dim), and multiplies. Forms tested equal to it: ``apply_rope`` (the
pairs sliced out, rotated, put back) in both layouts, any even ``rotary_dim`` (partial rotary), every
scaling, positions (L,) or (B, L) up to 2^40; ``convert_layout`` (one layout's rotation is the other's
conjugated by ``layout_permutation``: exactly); and two library forms written in torch float64 from
their sources: Meta llama ``apply_rotary_emb`` (model.py: x viewed as d/2 complex numbers times
``torch.polar(1, m theta)``; interleaved, full rotary) and HF ``apply_rotary_pos_emb`` with
``rotate_half`` (transformers/models/llama/modeling_llama.py: cos and sin of ``cat(freqs, freqs)``;
half layout; GPT-NeoX's partial rotary concatenates the pass-through columns).

The bound. Both computations use theta_i from ``rope_frequencies`` (the scalings' formulas) and the
angle m theta_i as one float64 product of the exact integer m; with c = f cos(alpha), s = f sin(alpha)
(f the attention factor) each rotated entry y = c x_a -+ s x_b is two products and a sum, the
pass-through columns are exact, and one computation errs by at most

    (gamma_2 + 3 u) (|c| |x_a| + |s| |x_b|) + 2^-1060

(3 u: the cos / sin evaluation, within an ulp in libm and torch, and the product by f), against the
rotation by the float64 angle. The test asserts |form - definition| <= 2 x (the sum of both bounds)
(the factor 2 for second-order terms); ``test_the_bound_holds_against_a_50_digit_rotation`` checks
the bound itself against mpmath. Worst observed fraction (``test_worst_fraction_report``, -s):
0 for ``apply_rope`` (the same float64 operations: bit for bit equal), 0.10 for the torch forms (thorough).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from refimpl import rope as R
from refimpl.rope import rope_definition

from . import _definitions as D
from ._definitions import FLOOR, U, gamma

SCALINGS = [
    None, None,
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 2048, "seq_len": 4096},
    {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
     "mscale_all_dim": 0.707},
    {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 2048, "truncate": False},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
]


def bound(x, positions, layout="half", rotary_dim=None, base=10000.0, scaling=None):
    """|computed - exact| per entry of one computation (see the module docstring)."""
    B, H, L, Dh = x.shape
    d = Dh if rotary_dim is None else rotary_dim
    theta, f = R.rope_frequencies(d, base, scaling)
    alpha = np.broadcast_to(np.asarray(positions).astype(np.float64), (B, L))[:, None, :, None] * theta
    c, s = np.abs(f * np.cos(alpha)), np.abs(f * np.sin(alpha))
    i = np.arange(d // 2)
    a, b = (i, i + d // 2) if layout == "half" else (2 * i, 2 * i + 1)
    out = np.full(x.shape, FLOOR)
    err = (gamma(2) + 3 * U) * (c * np.abs(x[..., a]) + s * np.abs(x[..., b]))
    out[..., a] += err
    out[..., b] += (gamma(2) + 3 * U) * (s * np.abs(x[..., a]) + c * np.abs(x[..., b]))
    return out


@st.composite
def rope_cases(draw):
    B, H, L = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5))
    Dh = draw(st.integers(1, 5)) * 2 + draw(st.integers(0, 1))
    rotary_dim = draw(st.one_of(st.none(), st.integers(1, Dh // 2).map(lambda h: 2 * h))) if Dh % 2 == 0 else \
        2 * draw(st.integers(1, Dh // 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = 2 ** draw(st.sampled_from([4, 12, 20, 40]))
    shape = draw(st.sampled_from([(L,), (B, L)]))
    positions = rng.integers(0, top, shape)
    x = rng.standard_normal((B, H, L, Dh)) * 10.0 ** draw(st.sampled_from([0, 0, -300, -150, 150, 300]))
    kw = dict(layout=draw(st.sampled_from(R.LAYOUTS)), rotary_dim=rotary_dim,
              base=draw(st.sampled_from([10000.0, 500000.0, 1.5])), scaling=draw(st.sampled_from(SCALINGS)))
    if kw["scaling"] is not None and kw["scaling"]["rope_type"] == "dynamic" and (rotary_dim or Dh) < 4:
        kw["scaling"] = None
    note(f"x {x.shape} positions < {top} {kw}")
    return x, positions, kw


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@SETTINGS
@given(rope_cases())
def test_apply_rope_equals_the_definition(case):
    x, positions, kw = case
    want = rope_definition(x, positions, **kw)
    b = 2 * bound(x, positions, **kw)
    D.assert_within("RoPE apply_rope", f"apply_rope {kw['layout']}", R.apply_rope(x, positions, **kw), want, b)
    other = "interleaved" if kw["layout"] == "half" else "half"  # the other layout, conjugated by the permutation
    via = R.convert_layout(R.apply_rope(R.convert_layout(x, kw["layout"], other, kw["rotary_dim"]), positions,
                                        **{**kw, "layout": other}), other, kw["layout"], kw["rotary_dim"])
    np.testing.assert_array_equal(via, R.apply_rope(x, positions, **kw))


def meta_apply_rotary_emb(x, positions, theta, f):
    """Meta llama model.py ``precompute_freqs_cis`` / ``apply_rotary_emb`` in torch float64 (f: the
    attention factor, multiplied into freqs_cis as HF multiplies its cos and sin)."""
    import torch

    freqs = torch.outer(torch.as_tensor(positions, dtype=torch.float64), torch.as_tensor(theta))  # (L, d/2)
    freqs_cis = torch.polar(torch.full_like(freqs, f), freqs)
    xt = torch.as_tensor(x)
    x_ = torch.view_as_complex(xt.reshape(*xt.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(x_ * freqs_cis).flatten(3).numpy()


def hf_apply_rotary_pos_emb(x, positions, theta, f, d):
    """transformers modeling_llama.py ``LlamaRotaryEmbedding.forward`` + ``apply_rotary_pos_emb`` /
    ``rotate_half`` in torch float64, with GPT-NeoX's partial rotary (first d columns rotated)."""
    import torch

    freqs = torch.as_tensor(theta)[:, None] @ torch.as_tensor(positions, dtype=torch.float64)[None, :]  # (d/2, L)
    emb = torch.cat((freqs.T, freqs.T), dim=-1)
    cos, sin = emb.cos() * f, emb.sin() * f
    xt = torch.as_tensor(x)
    rot, pas = xt[..., :d], xt[..., d:]
    x1, x2 = rot[..., : d // 2], rot[..., d // 2:]
    rotate_half = torch.cat((-x2, x1), dim=-1)
    return torch.cat((rot * cos + rotate_half * sin, pas), dim=-1).numpy()


@SETTINGS
@given(rope_cases())
def test_library_forms_equal_the_definition(case):
    pytest.importorskip("torch")
    x, positions, kw = case
    positions = positions.reshape(-1)[: x.shape[2]] % 2**20  # one row of positions; torch's cos within an ulp
    d = kw["rotary_dim"] or x.shape[3]
    theta, f = R.rope_frequencies(d, kw["base"], kw["scaling"])
    b = 2 * bound(x, positions, **kw)
    if kw["layout"] == "half":
        got = hf_apply_rotary_pos_emb(x, positions, theta, f, d)
    else:
        x = x[..., :d]  # Meta rotates every column
        b = 2 * bound(x, positions, **{**kw, "rotary_dim": None})
        got = meta_apply_rotary_emb(x, positions, theta, f)
        kw = {**kw, "rotary_dim": None}
    D.assert_within("RoPE library forms", kw["layout"], got, rope_definition(x, positions, **kw), b)


# ----------------------------------------------------------------------------
# the bound rejects wrong forms (meta-tests)


@pytest.mark.parametrize("wrong", ["layout_swapped", "negative_angle", "theta_base_i_over_d"])
def test_the_bound_rejects_wrong_forms(wrong):
    rng = np.random.default_rng(4)
    x, positions = rng.standard_normal((1, 2, 5, 8)), np.arange(5)
    want, b = rope_definition(x, positions), 2 * bound(x, positions)
    D.assert_within("meta", "right", R.apply_rope(x, positions), want, b)
    if wrong == "layout_swapped":  # interleaved pairs on a half-layout vector
        got = R.apply_rope(x, positions, layout="interleaved")
    elif wrong == "negative_angle":  # R(-m): sin's sign flipped
        got = _rotate(x, -positions[:, None] * R.base_frequencies(8, 1e4))
    else:  # theta_i = base^(-i/d): the notes' 2i read as i
        got = _rotate(x, positions[:, None] * 1e4 ** (-np.arange(4) / 8))
    with pytest.raises(AssertionError):
        D.assert_within("meta", wrong, got, want, b)


def _rotate(x, alpha):
    """The half layout's rotation by the angles alpha (L, d/2), d = D."""
    h = x.shape[-1] // 2
    c, s = np.cos(alpha), np.sin(alpha)
    return np.concatenate([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], axis=-1)


def test_definition_worked_example():
    """docs/notes.md#rope: d = 4, m = 5 (interleaved): the first pair turns by 5 rad, the second by 0.05."""
    x = np.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    y = rope_definition(x, np.array([5]), layout="interleaved", base=10000.0)[0, 0, 0]
    np.testing.assert_allclose(y, [np.cos(5), np.sin(5), np.cos(0.05), np.sin(0.05)], rtol=1e-15)


@SETTINGS
@given(rope_cases())
def test_the_bound_holds_against_a_50_digit_rotation(case):
    """The derivation checked: the definition is within (2 x) its one-computation bound of the rotation
    by the float64 angle computed with mpmath at 50 digits (cos, sin, the products and the sum), plus
    the final rounding u |exact| / 2."""
    import mpmath

    x, positions, kw = case
    x = x[:1, :1]  # one head of one sequence: 50-digit arithmetic is slow
    positions = positions[:1] if positions.ndim == 2 else positions
    d = kw["rotary_dim"] or x.shape[3]
    theta, f = R.rope_frequencies(d, kw["base"], kw["scaling"])
    i = np.arange(d // 2)
    a, b = (i, i + d // 2) if kw["layout"] == "half" else (2 * i, 2 * i + 1)
    exact = x.copy()
    with mpmath.workdps(50):
        for l, m in enumerate(np.asarray(positions).reshape(-1)):
            for ia, ib, th in zip(a, b, theta):
                alpha = mpmath.mpf(float(m * th))  # the float64 angle, as both computations form it
                c, s_ = mpmath.mpf(float(f)) * mpmath.cos(alpha), mpmath.mpf(float(f)) * mpmath.sin(alpha)
                xa, xb = mpmath.mpf(float(x[0, 0, l, ia])), mpmath.mpf(float(x[0, 0, l, ib]))
                exact[0, 0, l, ia], exact[0, 0, l, ib] = float(c * xa - s_ * xb), float(s_ * xa + c * xb)
    want = rope_definition(x, positions, **kw)
    D.assert_within("RoPE vs 50 digits", "definition", want, exact,
                    bound(x, positions, **kw) + U * np.abs(exact) / 2 + 2.0**-1075)


def test_worst_fraction_report():
    D.report("RoPE apply_rope")
    D.report("RoPE library forms")
    D.report("RoPE vs 50 digits")
