"""refimpl.roofline: each check holds for the spec and rejects a wrong implementation (the meta-tests),
and the counts agree with what refimpl's instrumented code actually moves."""

import dataclasses
import types

import numpy as np
import pytest

from refimpl import accounting as A
from refimpl import io_accounting as IO
from refimpl import kv_cache as KV
from refimpl import roofline as R
from refimpl.model_configs import LLAMA_2_70B

SMALL_GQA = A.TransformerConfig(d_model=16, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=24, ffn_kind="glu",
                                vocab_size=11, norms_per_layer=2, final_norm=True)


def check_time_bound(impl):
    """T = max(F / P, B / W), and the bound names the larger term."""
    rng = np.random.default_rng(9)
    for _ in range(50):
        c = R.Cost(int(rng.integers(1, 10**15)), float(10 ** rng.uniform(3, 13)))
        want = max(c.flops / R.H100_SEED.peak_flops, c.bytes / R.H100_SEED.bandwidth)
        assert impl.time_bound(c) == want
        assert impl.bound(c) == ("memory" if c.intensity < R.H100_SEED.ridge else "compute")


def check_gemm(impl):
    """FLOPs = 2 x the multiply-adds of the triple loop; bytes = each operand and the result once."""
    for M, N, K in [(1, 1, 1), (2, 3, 5), (7, 1, 4)]:
        macs = sum(1 for _ in range(M) for _ in range(N) for _ in range(K))
        c = impl.gemm_cost(M, N, K, bytes_per_value=2)
        assert c.flops == 2 * macs and c.bytes == 2 * (M * K + K * N + M * N)


def check_attention_bytes(impl):
    """Bytes of the tiled schedule = what refimpl.flash_attention's instrumentation moved."""
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((1, 2, 7, 3)), rng.standard_normal((1, 1, 9, 3)), rng.standard_normal((1, 1, 9, 2))
    io = IO.measured_io(q, k, v, block_q=2, block_k=4)
    c = impl.attention_cost(7, 9, 3, 2, heads_q=2, heads_kv=1, block_q=2, block_k=4, bytes_per_value=2)
    assert c.bytes == 2 * (io.elements_read + io.elements_written)
    assert c.flops == 2 * 2 * 7 * 9 * (3 + 2)


def check_decode_bytes(impl):
    """KV bytes = the values a real cache holds after `context` tokens, per layer; weights once."""
    context, batch = 5, 3
    cfg = SMALL_GQA
    cache = KV.ContiguousCache(cfg.kv_heads, cfg.hd, batch=batch)
    rng = np.random.default_rng(2)
    cache.update(rng.standard_normal((batch, cfg.kv_heads, context, cfg.hd)),
                 rng.standard_normal((batch, cfg.kv_heads, context, cfg.hd)))
    kv_bytes = 2 * cfg.n_layers * cache.stored_values
    c = impl.decode_step_cost(cfg, context, batch=batch)
    assert c.bytes == 2 * A.parameter_count(cfg).total + kv_bytes
    assert c.flops == 2 * batch * A.compute_per_token(cfg, context_length=context).total
    assert impl.kv_cache_read_time(cfg, context, batch=batch) == kv_bytes / R.H100_SEED.bandwidth


CHECKS = [check_time_bound, check_gemm, check_attention_bytes, check_decode_bytes]


def _wrong(**overrides):
    return types.SimpleNamespace(**{**{n: getattr(R, n) for n in R.__all__}, **overrides})


def _sum_time(c, hw=R.H100_SEED):
    return c.flops / hw.peak_flops + c.bytes / hw.bandwidth


def _macs_gemm(M, N, K, *, bytes_per_value=2):
    return R.Cost(M * N * K, (M * K + K * N + M * N) * bytes_per_value)


def _kv_once(Lq, Lk, D, Dv=None, *, batch=1, heads_q=1, heads_kv=None, block_q=128, block_k=128, bytes_per_value=2, **kw):
    """K and V counted once, as if every query tile found them on chip."""
    Dv = D if Dv is None else Dv
    hk = heads_q if heads_kv is None else heads_kv
    vals = batch * (heads_q * Lq * (D + Dv + 1) + hk * Lk * (D + Dv))
    return R.Cost(2 * batch * heads_q * Lq * Lk * (D + Dv), vals * bytes_per_value)


def _query_heads_cached(cfg, context, *, batch=1, **kw):
    return R.decode_step_cost(dataclasses.replace(cfg, n_kv_heads=None), context, batch=batch, **kw)


def _query_heads_read(cfg, context, *, batch=1, **kw):
    return R.kv_cache_read_time(dataclasses.replace(cfg, n_kv_heads=None), context, batch=batch, **kw)


WRONG = {
    "time_is_the_sum": (_wrong(time_bound=_sum_time), check_time_bound),
    "flops_are_macs": (_wrong(gemm_cost=_macs_gemm), check_gemm),
    "kv_tiles_read_once": (_wrong(attention_cost=_kv_once), check_attention_bytes),
    "cache_counts_query_heads": (_wrong(decode_step_cost=_query_heads_cached), check_decode_bytes),
    "read_time_counts_query_heads": (_wrong(kv_cache_read_time=_query_heads_read), check_decode_bytes),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_spec_passes(check):
    check(R)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_wrong_implementation(name):
    impl, check = WRONG[name]
    with pytest.raises(AssertionError):
        check(impl)


def test_ridge_and_regimes():
    assert R.H100_SEED.ridge == 1000e12 / 3e12
    assert R.gemm_cost(999, 999, 999).intensity < R.H100_SEED.ridge <= R.gemm_cost(1000, 1000, 1000).intensity
    assert R.bound(R.gemm_cost(1, 4096, 4096)) == "memory" and R.bound(R.gemm_cost(4096, 4096, 4096)) == "compute"
    # decode: about 1 FLOP per byte at batch 1; the weights amortise over the batch, the cache does not
    one = R.decode_step_cost(LLAMA_2_70B, 4096)
    assert 0.9 < one.intensity < 1.2 and R.bound(one) == "memory"
    assert R.bound(R.decode_step_cost(LLAMA_2_70B, 0, batch=512)) == "compute"
    assert R.bound(R.decode_step_cost(LLAMA_2_70B, 4096, batch=512)) == "memory"
    flash, std = (R.attention_cost(4096, 4096, 128, schedule=s) for s in R.SCHEDULES)
    assert flash.flops == std.flops and flash.bytes < std.bytes


def test_llama2_70b_cache_read_time():
    t = R.kv_cache_read_time(LLAMA_2_70B, 4096)
    assert t == 2 * 80 * 8 * 128 * 4096 * 2 / 3e12  # 1.34 GB at 3 TB/s: 0.447 ms


def test_argument_checks():
    with pytest.raises(TypeError, match="cost"):
        R.time_bound((1, 2))
    with pytest.raises(ValueError, match="schedule"):
        R.attention_cost(4, 4, 2, schedule="fast")
    with pytest.raises(ValueError, match="peak_flops"):
        R.Hardware("x", 0.0, 1.0)
    with pytest.raises(TypeError, match="hw"):
        R.kv_cache_read_time(LLAMA_2_70B, 4, hw="H100")
