"""refimpl.int_formats (INT8 / INT4 quantisation and the integer matmul): ranges, steps, groups and
the half-step error bound; torch checked on CPU. The int_quant / int_matmul properties run in
tests/test_conformance.py (bundled implementations pass, each wrong implementation is rejected)."""

import numpy as np
import pytest

from refimpl import int_formats as I


def test_ranges_and_steps():
    assert I.int_range(8) == (-127, 127) and I.int_range(4) == (-7, 7)  # docs/notes.md#number-formats: +-127 / +-7
    assert I.int_range(8, symmetric=False) == (0, 255) and I.int_range(4, symmetric=False) == (0, 15)
    x = np.array([[1.0, -0.5, 0.25]])
    assert I.quant_params(x)[0][0, 0] == 1 / 127 and I.quant_params(x, bits=4)[0][0, 0] == 1 / 7
    s, z = I.quant_params(np.array([[-1.0, 3.0]]), symmetric=False)
    assert s[0, 0] == 4 / 255 and z[0, 0] == round(255 / 4)  # rint(1 / (4/255)) = rint(63.75) = 64
    s, z = I.quant_params(np.array([[2.0, 3.0]]), symmetric=False)  # one-signed: the range still holds 0
    assert s[0, 0] == 3 / 255 and z[0, 0] == 0
    s, z = I.quant_params(np.zeros((2, 2)), granularity="row")
    assert (s == 1).all() and (z == 0).all()


def test_zero_is_exact_and_the_error_is_half_a_step():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 16)) * 10.0 ** rng.uniform(-3, 3, (6, 1))
    x[:, 3] = 0.0
    for bits in (8, 4):
        for symmetric in (True, False):
            for gran in I.GRANULARITY:
                q, s, z = I.quantize(x, bits=bits, symmetric=symmetric, granularity=gran, group_size=4)
                xh = I.dequantize(q, s, z)
                assert (xh[:, 3] == 0).all()
                half = I._expand(I.quantization_error_bound(s), x.shape)
                assert (np.abs(x - xh) <= half * (1 + 2.0**-50)).all()
                assert np.abs(x - xh).max() > 0.5 * half.min()  # the bound is not vacuous


def test_group_scales_follow_contiguous_groups():
    x = np.array([[1.0, 2.0, 127.0, 64.5]])
    q, s, z = I.quantize(x, granularity="group", group_size=2)
    assert s.tolist() == [[2 / 127, 1.0]] and q[0, 1:].tolist() == [127, 127, 64]  # 64.5 ties to even
    with pytest.raises(ValueError, match="group_size"):
        I.quantize(x, granularity="group", group_size=3)


def test_int_matmul_exact_where_float32_is_not():
    K = 2048
    a, b = np.full((1, K), 127), np.full((K, 1), 127)
    assert I.int_matmul(a, b)[0, 0] == K * 127 * 127 == 33_032_192  # > 2^24
    f32 = np.float32(0)
    for _ in range(K):
        f32 = np.float32(f32 + np.float32(127 * 127))
    assert int(f32) != 33_032_192  # a float32 running sum drifts past 2^24
    assert I.int32_safe_depth(8, 8) == 131071 and I.int32_safe_depth(4, 4) == (2**31 - 1) // 64
    big = np.full((1, I.int32_safe_depth() + 1), -128)
    with pytest.raises(ValueError, match="a_q, b_q"):
        I.int_matmul(big, big.T)
    assert I.int_matmul(big[:, :-1], big[:, :-1].T)[0, 0] == 131071 * 16384 <= 2**31 - 1


def test_quantized_matmul_within_bound():
    rng = np.random.default_rng(9)
    for bits in (8, 4):
        a, b = rng.standard_normal((5, 300)), rng.standard_normal((300, 7)) * 1e-3
        err = np.abs(I.quantized_matmul(a, b, bits=bits) - a @ b)
        B = I.quantized_matmul_bound(a, b, bits=bits)
        assert (err <= B).all() and (err > 0.01 * B).any()


def test_torch_rounds_half_to_even_like_the_spec():
    torch = pytest.importorskip("torch")  # the peers extra (CI installs it)
    r = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5])
    out = torch.fake_quantize_per_tensor_affine(torch.tensor(r, dtype=torch.float32), 1.0, 0, -127, 127)
    assert out.tolist() == np.clip(np.rint(r), -127, 127).tolist() == [0, 2, 2, -0, -2, -2, 126]


def test_argument_checks():
    with pytest.raises(ValueError, match="bits"):
        I.int_range(1)
    with pytest.raises(TypeError, match="x"):
        I.quantize(np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="granularity"):
        I.quantize(np.ones((2, 2)), granularity="channel")
    with pytest.raises(TypeError, match="a_q"):
        I.int_matmul(np.ones((2, 2)), np.ones((2, 2), int))
    with pytest.raises(ValueError, match="b_q"):
        I.int_matmul(np.ones((2, 3), int), np.ones((2, 2), int))
    with pytest.raises(ValueError, match="x"):
        I.quantize(np.array([[1e308, -1e308]]), symmetric=False)
