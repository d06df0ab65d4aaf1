"""refimpl.positional (sinusoidal position encoding): against HF transformers' three implementations on
CPU, the relative-position rotation, and wrong implementations each check rejects (meta-tests)."""

import math

import numpy as np
import pytest

from refimpl import positional as P

torch = pytest.importorskip("torch")  # the peers extra (CI installs it)
transformers = pytest.importorskip("transformers")

N_POS, D = 64, 16


def _xlm():
    from transformers.models.xlm.modeling_xlm import create_sinusoidal_embeddings
    return create_sinusoidal_embeddings(N_POS, D, torch.empty(N_POS, D)).double().numpy()


def _marian():
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding
    return MarianSinusoidalPositionalEmbedding(N_POS, D).create_weight().double().numpy()


def _m2m100():
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
    return M2M100SinusoidalPositionalEmbedding.get_embedding(N_POS, D).double().numpy()


# (library table, layout, frequencies, tolerance). XLM and Marian compute in float64 and round once to
# float32: half an ulp of a value <= 1 (2^-24) plus the float64 angle difference. M2M100 computes the
# angle in float32 (exp of a float32 exponent, then a float32 product): 4 u32 |angle| + 2^-23.
LIBRARIES = {
    "xlm": (_xlm, "interleaved", "paper", lambda a: 2.0**-24 + 1e-13),
    "marian": (_marian, "half", "paper", lambda a: 2.0**-24 + 1e-13),
    "m2m100": (_m2m100, "half", "tensor2tensor", lambda a: 4 * 2.0**-24 * a + 2.0**-23),
}


def check_libraries(encode):
    m = np.arange(N_POS)
    for name, (table, layout, freqs, tol) in LIBRARIES.items():
        want = table()
        got = encode(m, D, layout=layout, frequencies=freqs)
        angle = m[:, None] * P.sinusoidal_frequencies(D, frequencies=freqs)
        bound = tol(np.concatenate([angle, angle], axis=1))
        assert (np.abs(got - want) <= bound).all(), (name, np.abs(got - want).max())


def check_zero_and_formula(encode):
    pe = encode(np.array([0, 5]), 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[1] == pytest.approx([math.sin(5), math.cos(5), math.sin(0.05), math.cos(0.05)], rel=1e-14)


def check_relative_rotation(encode):
    """PE(m + k) = R(k) PE(m), R(k) per pair [[cos, sin], [-sin, cos]](k theta_i): linear in PE(m), the same for every m."""
    theta = P.sinusoidal_frequencies(D)
    rng = np.random.default_rng(6)
    for _ in range(20):
        m, k = (int(v) for v in rng.integers(0, 5000, 2))
        a, b = encode(np.array([m, m + k]), D)
        sa, ca, sb, cb = a[0::2], a[1::2], b[0::2], b[1::2]
        ck, sk = np.cos(k * theta), np.sin(k * theta)
        tol = 4e-16 * (m + k) * theta + 4e-16
        assert (np.abs(sb - (ck * sa + sk * ca)) <= tol + 2e-16).all()
        assert (np.abs(cb - (-sk * sa + ck * ca)) <= tol + 2e-16).all()


CHECKS = [check_libraries, check_zero_and_formula, check_relative_rotation]


def _swapped(positions, d, **kw):
    pe = P.sinusoidal_encoding(positions, d, **kw)
    out = pe.copy()
    if kw.get("layout", "interleaved") == "interleaved":
        out[..., 0::2], out[..., 1::2] = pe[..., 1::2], pe[..., 0::2]
    else:
        out[..., : d // 2], out[..., d // 2:] = pe[..., d // 2:], pe[..., : d // 2]
    return out


def _exponent_i_over_d(positions, d, layout="interleaved", frequencies="paper", **kw):
    theta = 10000.0 ** (-np.arange(d // 2) / d)
    ang = np.asarray(positions, float)[..., None] * theta
    s, c = np.sin(ang), np.cos(ang)
    return np.concatenate([s, c], -1) if layout == "half" else np.stack([s, c], -1).reshape(ang.shape[:-1] + (d,))


def _t2t_over_half(positions, d, layout="interleaved", frequencies="paper", **kw):
    if frequencies == "paper":
        return P.sinusoidal_encoding(positions, d, layout=layout)
    theta = 10000.0 ** (-np.arange(d // 2) / (d // 2))  # d/2 instead of d/2 - 1
    ang = np.asarray(positions, float)[..., None] * theta
    return np.concatenate([np.sin(ang), np.cos(ang)], -1)


def _float32_angles(positions, d, layout="interleaved", frequencies="paper", **kw):
    """Angles m theta_i rounded to float32 (a float32 position buffer): off by up to 2^-24 m theta_i."""
    theta = P.sinusoidal_frequencies(d, frequencies=frequencies).astype(np.float32)
    ang = (np.asarray(positions).astype(np.float32)[..., None] * theta).astype(np.float64)
    s, c = np.sin(ang), np.cos(ang)
    return np.concatenate([s, c], -1) if layout == "half" else np.stack([s, c], -1).reshape(ang.shape[:-1] + (d,))


WRONG = {
    "sin_cos_swapped": (_swapped, check_zero_and_formula),
    "exponent_i_over_d": (_exponent_i_over_d, check_libraries),
    "tensor2tensor_divides_by_half_width": (_t2t_over_half, check_libraries),
    "float32_angles": (_float32_angles, check_relative_rotation),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(P.sinusoidal_encoding)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    impl, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(impl)


def test_dot_product_depends_on_the_offset_only():
    pe = P.sinusoidal_encoding(np.arange(200), D)
    theta = P.sinusoidal_frequencies(D)
    for m, n in [(3, 10), (110, 117), (150, 143)]:
        assert pe[m] @ pe[n] == pytest.approx(np.cos((m - n) * theta).sum(), abs=1e-12)


def test_shapes_and_argument_checks():
    assert P.sinusoidal_encoding(np.zeros((2, 3), int), 8).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="d_model"):
        P.sinusoidal_encoding(np.arange(3), 7)
    with pytest.raises(ValueError, match="d_model"):
        P.sinusoidal_encoding(np.arange(3), 2, frequencies="tensor2tensor")
    with pytest.raises(TypeError, match="positions"):
        P.sinusoidal_encoding(np.arange(3.0), 8)
    with pytest.raises(ValueError, match="layout"):
        P.sinusoidal_encoding(np.arange(3), 8, layout="split")
