"""refimpl.formats: the table against ml_dtypes / numpy finfo, rounding against ml_dtypes and
torch with each library's overflow convention named, FP8 scaling, delayed scaling, fp16 loss
scaling, and the emulated low-precision matmul."""

import ml_dtypes
import numpy as np
import pytest

from refimpl import formats as F

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed: comparison with torch's CPU casts")

LIB = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
       "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2}


@pytest.mark.parametrize("name", sorted(LIB))
def test_table_matches_finfo(name):
    f = F.FORMATS[name]
    fi = np.finfo(LIB[name]) if name in ("float32", "float16") else ml_dtypes.finfo(LIB[name])
    assert (f.bits, f.exponent_bits, f.mantissa_bits) == (fi.bits, fi.nexp, fi.nmant)
    assert (f.max, f.smallest_normal, f.smallest_subnormal, f.ulp_at_1) == (
        float(fi.max), float(fi.smallest_normal), float(fi.smallest_subnormal), float(fi.eps))
    assert f.emin == fi.minexp


def test_seed_table_errata_16():
    assert F.FORMATS["float8_e4m3fn"].smallest_normal == 2.0**-6 and F.FORMATS["float8_e5m2"].smallest_normal == 2.0**-14
    assert F.FORMATS["float8_e4m3fn"].max == 448 and F.FORMATS["float8_e5m2"].max == 57344
    assert not F.FORMATS["float8_e4m3fn"].has_inf


def _sample(n=100000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp(rng.uniform(-40, 40, n))
    return x.astype(np.float32).astype(np.float64)  # float32 values: one rounding in every library


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"])
def test_round_to_matches_ml_dtypes_bit_for_bit(name):
    x = _sample()
    with np.errstate(over="ignore", invalid="ignore"):
        lib = x.astype(np.float32).astype(LIB[name]).astype(np.float64)
    mine = F.round_to(x, name)
    assert np.array_equal(mine, lib, equal_nan=True)


def _ml_dtypes_rounds_float64_once() -> bool:
    """ml_dtypes 0.7 casts float64 -> bfloat16 in one rounding; 0.5 and 0.6 went through float32."""
    major, minor = (int(p) for p in ml_dtypes.__version__.split(".")[:2])
    return (major, minor) >= (0, 7)


def test_float64_to_bfloat16_rounds_once_in_the_spec_twice_through_float32():
    """A named difference, branched on the installed ml_dtypes: the spec rounds float64 -> bf16
    once. ml_dtypes >= 0.7 does the same; ml_dtypes 0.5-0.6 and torch 2.13 (``Tensor.to``) go
    through float32 (two roundings), which differs in rare near-tie cases, e.g.
    1 + 2^-8 + 2^-30: once -> 1 + 2^-7, twice -> 1 (the float32 step lands on the tie)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200000) * np.exp(rng.uniform(-30, 14, 200000)) * 0.01
    x = np.concatenate([x, [1 + 2.0**-8 + 2.0**-30]])
    once = F.round_to(x, "bfloat16")
    twice = F.round_to(x.astype(np.float32).astype(np.float64), "bfloat16")
    assert not np.array_equal(once, twice) and once[-1] == 1 + 2.0**-7 and twice[-1] == 1.0
    lib = x.astype(ml_dtypes.bfloat16).astype(np.float64)
    assert np.array_equal(lib, once if _ml_dtypes_rounds_float64_once() else twice), ml_dtypes.__version__


def test_torch_rounds_float64_to_bfloat16_through_float32():
    torch = pytest.importorskip("torch")
    x = np.array([1 + 2.0**-8 + 2.0**-30, 1 - 2.0**-9 - 2.0**-40, 3.0])
    got = torch.from_numpy(x).to(torch.bfloat16).double().numpy()
    assert np.array_equal(got, F.round_to(x.astype(np.float32).astype(np.float64), "bfloat16"))
    assert not np.array_equal(got, F.round_to(x, "bfloat16"))


def test_ties_to_even_and_the_top_tie():
    e4 = "float8_e4m3fn"
    assert F.round_to([1 + 2.0**-4], e4)[0] == 1.0  # tie between 1 and 1.125: even mantissa
    assert F.round_to([1 + 3 * 2.0**-4], e4)[0] == 1.25
    assert F.round_to([464.0], e4)[0] == 448.0  # (448 + 480) / 2: 448 has the even mantissa
    assert np.isnan(F.round_to([464.5], e4)[0]) and F.round_to([464.5], e4, overflow="saturate")[0] == 448
    assert F.round_to([2.0**-10], e4)[0] == 0.0 and F.round_to([3 * 2.0**-10], e4)[0] == 2.0**-8  # subnormal ties
    assert F.round_to([65520.0], "float16")[0] == np.inf and F.round_to([65519.99], "float16")[0] == 65504
    assert np.signbit(F.round_to([-1e-30], "float16")[0])


@needs_torch
def test_torch_fp8_casts_follow_the_named_conventions():
    """torch 2.13: e4m3fn casts saturate (even inf -> 448); e5m2 follows the format (inf)."""
    x = _sample(20000, seed=1)
    xt = torch.tensor(x, dtype=torch.float32)
    e4 = xt.to(torch.float8_e4m3fn).double().numpy()
    e5 = xt.to(torch.float8_e5m2).double().numpy()
    assert np.array_equal(e4, F.round_to(x, "float8_e4m3fn", overflow="saturate"))
    assert np.array_equal(e5, F.round_to(x, "float8_e5m2"))
    assert torch.tensor([float("inf")]).to(torch.float8_e4m3fn).item() == 448.0
    bf = xt.to(torch.bfloat16).double().numpy()
    with np.errstate(over="ignore"):
        assert np.array_equal(bf, F.round_to(x, "bfloat16"))


def test_fp8_scaling_per_tensor_and_per_channel():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 16)) * np.array([[1e-3], [1.0], [30.0], [1e4]])  # loud and quiet rows
    qt, St = F.quantize(W, "float8_e4m3fn")
    qc, Sc = F.quantize(W, "float8_e4m3fn", channel_axis=0)
    assert St.shape == (1, 1) and Sc.shape == (4, 1)
    assert np.abs(qt).max() == 448 and (np.abs(qc).max(axis=1) == 448).all()  # amax maps to max
    err_t = np.abs(F.dequantize(qt, St) - W).max(axis=1) / np.abs(W).max(axis=1)
    err_c = np.abs(F.dequantize(qc, Sc) - W).max(axis=1) / np.abs(W).max(axis=1)
    assert (err_c <= 2.0**-4 + 1e-15).all()  # half an ulp of e4m3 relative to each row's amax
    assert err_t[0] > 0.5  # the quiet row underflows under one per-tensor scale
    assert F.scale_from_amax(0.0, "float8_e4m3fn") == 1.0
    assert F.scale_from_amax(448.0, "float8_e4m3fn", margin=1) == 0.5


def test_delayed_scaling_uses_the_history_and_overflows_on_a_spike():
    rec = F.DelayedScaling("float8_e4m3fn", history_len=3, algo="max")
    hist = np.array([])
    for amax in (1.0, 2.0, 1.0):
        x = np.array([amax, -amax / 3])
        q, S, hist = rec.step(x, hist)
    assert hist.tolist() == [1.0, 2.0, 1.0] and S == 448 / 2.0
    q, S, hist = rec.step(np.array([10.0]), hist)  # a spike is cast with the stale scale: saturates
    assert S == 224.0 and q[0] == 448.0 and hist.tolist() == [2.0, 1.0, 10.0]
    assert F.DelayedScaling(history_len=3, algo="most_recent").scale(hist) == 44.8


def test_fp16_loss_scaling_recovers_small_gradients():
    g = np.array([1e-8, 3e-9, -2e-7])
    assert (F.round_to(g, "float16")[:2] == 0).all()  # below fp16's smallest subnormal 6e-8 / 2
    back = F.scaled_gradient_in(g, "float16", 2.0**16)
    assert np.all(np.abs(back - g) <= np.abs(g) * 2.0**-11 + 2.0**-24 / 2 / 2.0**16)
    assert F.loss_scale_update(65536.0, False, 7) == (32768.0, 0, False)  # inf/NaN: back off and skip
    assert F.loss_scale_update(65536.0, True, 1999) == (131072.0, 0, True)  # growth_interval clean steps


@pytest.mark.parametrize("inp, out", [("bfloat16", "float32"), ("float16", "float16"), ("float8_e4m3fn", "bfloat16")])
def test_lowp_matmul_bound_holds_and_is_not_vacuous(inp, out):
    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(20):
        a, b = rng.standard_normal((3, 96)), rng.standard_normal((96, 2))
        C = F.lowp_matmul(a, b, input_dtype=inp, output_dtype=out)
        B = F.lowp_matmul_bound(a, b, input_dtype=inp, output_dtype=out)
        ratios.append(np.max(np.abs(C - a @ b) / B))
    assert max(ratios) <= 1.0 and max(ratios) > 0.05  # the bound is within 20x of the worst error seen


def test_argument_checks():
    with pytest.raises(ValueError, match="fmt"):
        F.round_to([1.0], "float4")
    with pytest.raises(ValueError, match="overflow"):
        F.round_to([1.0], "float16", overflow="clip")
    with pytest.raises(ValueError, match="b"):
        F.lowp_matmul(np.ones((2, 3)), np.ones((2, 3)), input_dtype="bfloat16", output_dtype="float32")
    with pytest.raises(ValueError, match="accumulate"):
        F.lowp_matmul(np.ones((2, 3)), np.ones((3, 3)), input_dtype="bfloat16", accumulate="bfloat16", output_dtype="float32")


def test_fp8_matmul_unscales_and_per_channel_helps_uneven_rows():
    """O = FP8GEMM(a S_a, b S_b) / (S_a S_b); error within the lowp bound of the scaled problem, unscaled."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((4, 64)) * np.array([[1e-4], [1.0], [50.0], [1e3]])
    b = rng.standard_normal((64, 3))
    for per_channel in (False, True):
        O, Sa, Sb = F.fp8_matmul(a, b, per_channel=per_channel)
        bound = F.lowp_matmul_bound(a * Sa, b * Sb, input_dtype="float8_e4m3fn", output_dtype="float32") / (Sa * Sb)
        assert np.all(np.abs(O - a @ b) <= bound * (1 + 2.0**-20) + np.abs(a @ b) * 2.0**-24)
    rel = lambda O: np.abs(O - a @ b).max(axis=1) / np.abs(a @ b).max(axis=1)  # noqa: E731
    assert rel(F.fp8_matmul(a, b)[0])[0] > 10 * rel(F.fp8_matmul(a, b, per_channel=True)[0])[0]
