"""The facade's contract: clear errors, untouched inputs, unwritten outputs caught,
``python -m gpu.bench`` without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpu
from gpu import mutants
from gpu.backends import CSourceBackend, NumbaBackend
from gpu.errors import BackendUnavailable, UnsupportedOption

from .support import opencl_backend_or_missing

ROOT = Path(__file__).resolve().parents[2]


def _qkv(B=1, Hq=2, Hkv=1, Lq=5, Lk=6, D=4, Dv=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, Hq, Lq, D)), rng.standard_normal((B, Hkv, Lk, D)),
            rng.standard_normal((B, Hkv, Lk, Dv)))


def _has_gpu() -> bool:
    from gpu.bench import gpu_or_reason

    return gpu_or_reason()[0] is not None


# ---------------------------------------------------------------------------
# unsupported options and bad input: raised before any runtime is touched

@pytest.mark.parametrize("kwargs, word", [
    ({"mask": np.ones((5, 6), dtype=bool)}, "mask"),
    ({"bias": np.zeros((5, 6))}, "bias"),
    ({"dropout_p": 0.1, "dropout_mask": np.ones((5, 6), dtype=bool)}, "dropout"),
])
@pytest.mark.parametrize("backend", gpu.BACKENDS)
def test_unsupported_attention_option(backend, kwargs, word):
    q, k, v = _qkv()
    with pytest.raises(UnsupportedOption, match=word):
        gpu.flash_attention(q, k, v, backend=backend, **kwargs)


def test_head_dim_above_128_is_unsupported():
    q, k, v = _qkv(D=129)
    with pytest.raises(UnsupportedOption, match=r"^D: expected a head dim <= 128 .*, got 129$"):
        gpu.flash_attention(q, k, v, backend="opencl")


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"window": (-1, 0)}, ValueError, "window left"),
    ({"window": (1,)}, ValueError, "window"),
    ({"align": "middle"}, ValueError, "align"),
    ({"scale": 0.0}, ValueError, "scale"),
    ({"softcap": -1.0}, ValueError, "softcap"),
    ({"causal": "yes"}, TypeError, "causal"),
    ({"block_q": 64, "block_k": 32}, ValueError, "threads"),
    ({"block_q": 0}, ValueError, "block_q"),
])
def test_bad_attention_arguments(kwargs, exc, word):
    q, k, v = _qkv()
    with pytest.raises(exc, match=word):
        gpu.flash_attention(q, k, v, backend="opencl", **kwargs)


def test_bad_shapes_and_values():
    q, k, v = _qkv(Hq=3, Hkv=2)
    with pytest.raises(ValueError, match="multiple of Hkv"):
        gpu.flash_attention(q, k, v, backend="opencl")
    q, k, v = _qkv()
    q[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="q: expected finite entries, got an entry NaN"):
        gpu.flash_attention(q, k, v, backend="opencl")
    with pytest.raises(ValueError, match="overflows float32"):
        gpu.flash_attention(np.full((1, 1, 2, 2), 1e300), *_qkv(Hq=1, Lq=2, D=2)[1:], backend="opencl")
    with pytest.raises(ValueError, match="backend"):
        gpu.flash_attention(*_qkv(), backend="cuda")


@pytest.mark.parametrize("kwargs, word", [
    ({"selection_bias": np.zeros(4)}, "selection_bias"),
    ({"n_groups": 2, "topk_groups": 1}, "n_groups"),
    ({"drop_order": "priority", "capacity": 2}, "drop_order"),
    ({"drop_order": "per_expert_top_prob", "capacity": 2}, "drop_order"),
    ({"drop_order": "random", "capacity": 2, "seed": 0}, "drop_order"),
])
def test_unsupported_routing_option(kwargs, word):
    z = np.zeros((6, 4))
    with pytest.raises(UnsupportedOption, match=word):
        gpu.route(z, 2, backend="opencl", **kwargs)


def test_bad_routing_arguments():
    z = np.zeros((6, 4))
    with pytest.raises(ValueError, match="k"):
        gpu.route(z, 5, backend="opencl")
    with pytest.raises(TypeError, match="unknown keyword"):
        gpu.route(z, 2, backend="opencl", normalise="after_drop")
    with pytest.raises(ValueError, match="normalize"):
        gpu.route(z, 2, backend="opencl", normalize="sometimes")
    bad = z.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gpu.route(bad, 2, backend="opencl")


# ---------------------------------------------------------------------------
# missing runtimes

def test_cupy_without_gpu_says_so():
    if _has_gpu():
        pytest.skip("a CUDA GPU is present: the cupy backend is available")
    q, k, v = _qkv()
    with pytest.raises(BackendUnavailable, match="cupy"):
        gpu.flash_attention(q, k, v, backend="cupy")
    with pytest.raises(BackendUnavailable, match="cupy"):
        gpu.route(np.zeros((4, 3)), 1, backend="cupy")


def test_numba_without_gpu_or_simulator_says_how_to_simulate():
    if _has_gpu():
        pytest.skip("a CUDA GPU is present: the numba backend is available")
    # this (parent) process never enables the simulator; the child of test_simulator does
    with pytest.raises(BackendUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        gpu.flash_attention(*_qkv(), backend=NumbaBackend())


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopencl", None)  # import pyopencl -> ImportError
    with pytest.raises(BackendUnavailable, match=r"pyopencl is not installed.*\[gpu\]"):
        gpu.flash_attention(*_qkv(), backend=CSourceBackend("opencl"))
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(BackendUnavailable, match="numba"):
        gpu.flash_attention(*_qkv(), backend=NumbaBackend())


def test_missing_opencl_platform(monkeypatch):
    opencl_backend_or_missing()
    monkeypatch.setenv("GPU_OPENCL_PLATFORM", "no-such-platform")
    with pytest.raises(BackendUnavailable, match="pocl-opencl-icd"):
        gpu.flash_attention(*_qkv(), backend=CSourceBackend("opencl"))


# ---------------------------------------------------------------------------
# inputs, outputs

def test_inputs_not_mutated_and_any_layout_accepted():
    opencl_backend_or_missing()
    q, k, v = _qkv(Lq=6, Lk=6)
    qt = np.ascontiguousarray(q.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # non-contiguous view
    copies = [a.copy() for a in (qt, k, v)]
    out, lse = gpu.flash_attention(qt, k, v.astype(np.float32), backend="opencl", causal=True)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    for a, b in zip((qt, k, v), copies):
        assert np.array_equal(a, b)
    z = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    z0 = z.copy()
    r = gpu.route(z, 2, backend="opencl", capacity=3)
    assert np.array_equal(z, z0)
    assert r.indices.dtype == np.int64 and r.kept.dtype == bool and r.probs.dtype == np.float64


def test_unwritten_output_is_caught():
    """Outputs start as NaN: a kernel that forgets to write some lse entries is
    reported by the facade, not returned as numbers."""
    opencl_backend_or_missing()
    m = mutants.Mutation("skips_row_0_lse", "attention", "", numba=(),
                         c=(("if (c == 0) {", "if (c == 0 && i > 0) {", 1),))
    be = CSourceBackend("opencl", attention_source=mutants.c_source(m), label="opencl[skips row 0]")
    with pytest.raises(RuntimeError, match=r"lse: 2 element\(s\) never written"):
        gpu.flash_attention(*_qkv(), backend=be)


def test_mutation_edit_must_match():
    with pytest.raises(AssertionError, match="expected 1 occurrence"):
        mutants.apply_edits("abc", (("xyz", "q", 1),), "demo")


# ---------------------------------------------------------------------------
# benchmark script

def test_bench_without_gpu_says_so_and_exits_0():
    if _has_gpu():
        pytest.skip("a CUDA GPU is present: tests/gpu/test_on_device.py runs the benchmark")
    proc = subprocess.run([sys.executable, "-m", "gpu.bench"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "no GPU" in proc.stdout
    print(proc.stdout.strip())


# ---------------------------------------------------------------------------
# the attention backward through the facade

@pytest.mark.parametrize("kwargs, exc, word", [
    ({"mask": np.ones((5, 6), dtype=bool)}, UnsupportedOption, "mask"),
    ({"bias": np.zeros((5, 6))}, UnsupportedOption, "bias"),
    ({"dropout_p": 0.1, "dropout_mask": np.ones((5, 6), dtype=bool)}, UnsupportedOption, "dropout"),
    ({"block_q": 64, "block_k": 32}, ValueError, "threads"),
    ({"dout_shape": (1, 2, 5, 4)}, ValueError, "dout: expected shape"),
])
def test_backward_refusals(kwargs, exc, word):
    q, k, v = _qkv()
    shape = kwargs.pop("dout_shape", (1, 2, 5, 3))
    with pytest.raises(exc, match=word):
        gpu.flash_attention_backward(q, k, v, np.ones(shape), backend="opencl", **kwargs)


def test_backward_inputs_not_mutated_and_unwritten_gradient_caught():
    opencl_backend_or_missing()
    q, k, v = _qkv(Lq=6, Lk=6)
    dout = np.random.default_rng(1).standard_normal((1, 2, 6, 3))
    copies = [a.copy() for a in (q, k, v, dout)]
    grads = gpu.flash_attention_backward(q, k, v, dout, backend="opencl", causal=True)
    assert [g.dtype for g in grads] == [np.float32] * 3 and [g.shape for g in grads] == [q.shape, k.shape, v.shape]
    for a, b in zip((q, k, v, dout), copies):
        assert np.array_equal(a, b)
    m = mutants.Mutation("skips_last_dk_row", "attention_backward", "", numba=(),
                         c=(("    if (j < Lk) {\n        GLOBAL float* dkr", "    if (j < Lk - 1) {\n        GLOBAL float* dkr", 1),))
    be = CSourceBackend("opencl", label="opencl[skips a dk row]", attention_backward=mutants.c_source(m))
    with pytest.raises(RuntimeError, match=r"dk: 4 element\(s\) never written"):
        gpu.flash_attention_backward(q, k, v, dout, backend=be)


# ---------------------------------------------------------------------------
# split-KV and paged decode through the facade

def test_split_kv_refusals():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="boundaries, num_splits: expected exactly one"):
        gpu.split_kv_attention(q, k, v, backend="opencl")
    with pytest.raises(ValueError, match="boundaries"):
        gpu.split_kv_attention(q, k, v, backend="opencl", boundaries=(4, 2))
    with pytest.raises(UnsupportedOption, match="mask"):
        gpu.split_kv_attention(q, k, v, backend="opencl", boundaries=(2,), mask=np.ones((5, 6), dtype=bool))
    with pytest.raises(UnsupportedOption, match="key chunks"):
        gpu.split_kv_attention(q, k, v, backend="opencl", boundaries=(3,) * 1100)


def _pool(NB=4, Hkv=1, bs=2, D=4, Dv=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((NB, Hkv, bs, D)), rng.standard_normal((NB, Hkv, bs, Dv))


@pytest.mark.parametrize("table, lens, kwargs, exc, word", [
    ([[0, 1]], [3], {}, ValueError, "block_table, seq_lens"),
    ([[0, 1], [2, 3]], [5, 3], {}, ValueError, "seq_lens: expected lengths"),
    ([[0, 1], [2, 3]], [0, 3], {}, ValueError, "seq_lens: expected lengths"),
    ([[0, 4], [2, 3]], [3, 3], {}, ValueError, r"block_table: expected blocks of the pool \[0, 4\) in row 0"),
    ([[0.0, 1.0], [2, 3]], [3, 3], {}, TypeError, "block_table: expected an integer array"),
    ([[0, 1], [2, 3]], [3, 3], {"window": (1, 1)}, UnsupportedOption, "decode attention is causal"),
])
def test_paged_refusals(table, lens, kwargs, exc, word):
    q = np.zeros((2, 2, 1, 4))
    kp, vp = _pool()
    with pytest.raises(exc, match=word):
        gpu.paged_attention(q, kp, vp, np.asarray(table), np.asarray(lens), backend="opencl", **kwargs)


def test_paged_inputs_not_mutated_and_unread_table_entries_ignored():
    opencl_backend_or_missing()
    q = np.random.default_rng(1).standard_normal((2, 2, 1, 4))
    kp, vp = _pool()
    table = np.array([[3, 1, -7], [0, 2, 99]])  # entries past ceil(len / bs) are never read
    lens = np.array([3, 4])
    copies = [a.copy() for a in (q, kp, vp, table, lens)]
    out, lse = gpu.paged_attention(q, kp, vp, table, lens, backend="opencl")
    for a, b in zip((q, kp, vp, table, lens), copies):
        assert np.array_equal(a, b)
    K0 = np.concatenate([kp[3, :, :2], kp[1, :, :1]], axis=1)[None]
    V0 = np.concatenate([vp[3, :, :2], vp[1, :, :1]], axis=1)[None]
    ref, _ = __import__("refimpl").attention(q[:1], K0, V0, causal=True)
    assert np.allclose(out[:1], ref, atol=1e-6)


# ---------------------------------------------------------------------------
# norms and RoPE through the facade

@pytest.mark.parametrize("call, exc, word", [
    (lambda: gpu.rms_norm(np.ones((2, 4)), np.ones(3), backend="opencl"), ValueError, "weight: expected shape"),
    (lambda: gpu.rms_norm(np.ones((2, 4)), backend="opencl", eps=0.0), UnsupportedOption, "^eps: expected > 0"),
    (lambda: gpu.rms_norm(np.ones((2, 4)), backend="opencl", eps_placement="nowhere"), ValueError, "eps_placement"),
    (lambda: gpu.rms_norm(np.ones((2, 4)), backend="opencl", threads=6), ValueError, "power of two"),
    (lambda: gpu.layer_norm(np.ones((2, 0)), backend="opencl"), ValueError, "at least one feature"),
    (lambda: gpu.apply_rope(np.ones((1, 1, 2, 3)), np.arange(2), backend="opencl"), ValueError, "even"),
    (lambda: gpu.apply_rope(np.ones((1, 1, 2, 4)), np.arange(3), backend="opencl"), ValueError, "positions"),
])
def test_block_refusals(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_block_inputs_not_mutated_and_unwritten_norm_caught():
    opencl_backend_or_missing()
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 2, 7)), rng.standard_normal(7)
    x0, w0 = x.copy(), w.copy()
    y = gpu.rms_norm(x, w, backend="opencl", threads=4)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.array_equal(x, x0) and np.array_equal(w, w0)
    xr = rng.standard_normal((1, 2, 3, 8))
    xr0 = xr.copy()
    out = gpu.apply_rope(xr, np.arange(3), backend="opencl", layout="interleaved")
    assert np.array_equal(xr, xr0) and out is not xr  # rotated in place on a copy, never the caller's array
    m = mutants.Mutation("skips_last_element", "norm", "", numba=(),
                         c=(("for (int e = tid; e < d; e += NT) y[row * d + e] = (xr[e]",
                             "for (int e = tid; e < d - 1; e += NT) y[row * d + e] = (xr[e]", 1),))
    be = CSourceBackend("opencl", label="opencl[skips an element]", norm=mutants.c_source(m))
    with pytest.raises(RuntimeError, match=r"y: 6 element\(s\) never written"):
        gpu.rms_norm(x, w, backend=be, threads=4)


# ---------------------------------------------------------------------------
# MoE experts through the facade

def _moe_problem(T=6, E=3, k=2, D=4):
    from refimpl.moe import random_experts
    from refimpl.moe import route as ref_route

    rng = np.random.default_rng(0)
    r = ref_route(rng.integers(-64, 64, (T, E)) / 16.0, k, capacity=2)
    return rng.standard_normal((T, D)), r, random_experts(E, D, 5, kind="ffn", act="gelu", bias=True, seed=1)


def test_moe_refusals():
    from refimpl.moe import random_experts

    x, r, ex = _moe_problem()
    with pytest.raises(ValueError, match="x: expected shape"):
        gpu.moe_experts(x[:3], r, ex, backend="opencl")
    with pytest.raises(ValueError, match="experts: expected 3 experts"):
        gpu.moe_experts(x, r, ex[:2], backend="opencl")
    with pytest.raises(UnsupportedOption, match="one type"):
        gpu.moe_experts(x, r, ex[:2] + random_experts(1, 4, 5, kind="swiglu"), backend="opencl")
    with pytest.raises(ValueError, match="layout"):
        gpu.moe_experts(x, r, ex, backend="opencl", layout="dense")
    with pytest.raises(ValueError, match="block"):
        gpu.moe_experts(x, r, ex, backend="opencl", block=(64, 32, 8))


def test_moe_inputs_not_mutated_and_unwritten_output_caught():
    opencl_backend_or_missing()
    x, r, ex = _moe_problem()
    x0 = x.copy()
    y = gpu.moe_experts(x, r, ex, backend="opencl", threads=4, block=(4, 3, 2))
    assert y.shape == x.shape and y.dtype == np.float32 and np.array_equal(x, x0)
    m = mutants.Mutation("skips_last_token", "moe", "", numba=(),
                         c=(("        y[t * D + col] = acc;", "        if (t > 0) y[t * D + col] = acc;", 1),))
    be = CSourceBackend("opencl", label="opencl[combine skips token 0]", moe=mutants.c_source(m))
    with pytest.raises(RuntimeError, match=r"y: 4 element\(s\) never written"):
        gpu.moe_experts(x, r, ex, backend=be, threads=4, block=(4, 3, 2))


# ---------------------------------------------------------------------------
# chunked GLA: the kernel is gpu.mixers_api's (tests/gpu/test_mixer_kernels.py); the older import path
# gpu.gated_linear_attention (README) is a deprecated alias of it


def test_deprecated_gla_alias_warns_and_equals_the_mixers_kernel():
    from gpu import mixers_api

    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 5, 3)), rng.standard_normal((1, 1, 5, 3)), rng.standard_normal((1, 1, 5, 2))
    with pytest.warns(DeprecationWarning, match="gpu.mixers_api.gated_linear_attention"):
        with pytest.raises(ValueError, match="g: expected log-space gates <= 0"):
            gpu.gated_linear_attention(q, k, v, np.ones((1, 1, 5)), backend="opencl")
    opencl_backend_or_missing()
    g = -rng.random((1, 1, 5, 3))
    with pytest.warns(DeprecationWarning):
        o, S = gpu.gated_linear_attention(q, k, v, g, backend="opencl", chunk_size=2, threads=16)
    o2, S2 = mixers_api.gated_linear_attention(q, k, v, g, backend="opencl", chunk_size=2, threads=16)
    assert np.array_equal(o, o2) and np.array_equal(S, S2)
