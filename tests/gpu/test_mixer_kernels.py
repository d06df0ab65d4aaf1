"""The linear-time mixer kernels (gpu.mixers_numba, gpu.mixers_c): selective scan, chunked
gated linear attention and the chunked (gated) delta rule, verified by every route without a GPU.

* ptx: the Numba kernels through ``numba.cuda.compile_ptx`` for cc 8.0 / 9.0: no float64, the
  shared memory of the budget (``gpu.mixers_api.gla_shared_bytes``), and the scan's state in
  registers (no ``.local`` array) at N <= 16;
* nvrtc: the C source to sm_80 / sm_90 cubins: no spills, no stack frame (the scan's state in
  registers at N <= 16 and N <= 64), shared memory as budgeted;
* simulator: tests/gpu/mixer_cases.py under the Numba CUDA simulator (a child process,
  tests/gpu/mixers_simulator_main.py), and every mutant of gpu.mixers_mutants rejected;
* opencl: the same problems and mutants on PoCL, and the conformance suite (kinds ssm_scan,
  linear_attention and delta_rule, float32) run against the kernels through ``gpu.mixers_adapters``;
* facade: options the kernels lack, bad input, inputs never mutated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpu import compile as gc
from gpu import mixers_api as MA
from gpu import mixers_c, mixers_mutants
from gpu.errors import UnsupportedOption
from properties import mixers_linear as ML
from properties import mixers_scan as MS
from properties.core import run_property, supports

from . import mixer_cases as MC
from .support import import_or_missing, missing, opencl_backend_or_missing

ROOT = Path(__file__).resolve().parents[2]
NVRTC_ARCHS = ("sm_80", "sm_90")
#: (name, defines) of the C variants compiled: the defaults, and the largest state / key dim
C_VARIANTS = {
    "default[N<=16,K<=64]": {"BLOCK": MA.DEFAULT_SCAN_BLOCK, "NMAX": 16, "BT": MA.DEFAULT_CHUNK,
                             "BV": MA.DEFAULT_BLOCK_V, "KMAX": 64, "NT": MA.DEFAULT_GLA_THREADS},
    "largest[N<=64,K<=128]": {"BLOCK": MA.DEFAULT_SCAN_BLOCK, "NMAX": 64, "BT": MA.DEFAULT_CHUNK,
                              "BV": MA.DEFAULT_BLOCK_V, "KMAX": 128, "NT": MA.DEFAULT_GLA_THREADS},
}
NUMBA_VARIANTS = ("selective_scan[BLOCK=64,N<=16]", "gla_forward[BT=16,BV=16,K<=64,NT=128]",
                  "delta_forward[BT=16,BV=16,K<=64,NT=128]")


# ---------------------------------------------------------------------------
# ptx (Numba -> NVVM) and nvrtc (C -> SASS)


def _numba_spec(name):
    from gpu import mixers_numba as MN

    if name.startswith("selective_scan"):
        return gc.NumbaKernelSpec(name, MN.make_selective_scan(MA.DEFAULT_SCAN_BLOCK, 16), MN.scan_signature())
    if name.startswith("delta_forward"):
        return gc.NumbaKernelSpec(name, MN.make_delta_forward(MA.DEFAULT_CHUNK, MA.DEFAULT_BLOCK_V, 64,
                                                              MA.DEFAULT_GLA_THREADS), MN.delta_signature())
    return gc.NumbaKernelSpec(name, MN.make_gla_forward(MA.DEFAULT_CHUNK, MA.DEFAULT_BLOCK_V, 64,
                                                        MA.DEFAULT_GLA_THREADS), MN.gla_signature())


@pytest.fixture(scope="module")
def numba_cuda():
    cuda = import_or_missing("numba.cuda", "pip install 'transformer-refimpl[gpu]'")
    try:
        cuda.compile_ptx(lambda a: None, "void(float32[::1])", cc=(8, 0))
    except Exception as e:  # noqa: BLE001 - any loader error means the route is unavailable
        missing(f"numba.cuda.compile_ptx unavailable ({type(e).__name__}: {str(e)[:200]})")


@pytest.mark.parametrize("name", NUMBA_VARIANTS)
def test_mixer_ptx_compiles(numba_cuda, name):
    """For each cc of gc.TARGET_CCS (the kernel lowered once, compiled by NVVM for each target)."""
    spec = _numba_spec(name)
    for cc in gc.TARGET_CCS:
        ptx = gc.compile_numba_ptx(spec, cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".entry" in ptx, f"cc {cc}"
        assert not gc.ptx_float64_instructions(ptx), (cc, gc.ptx_float64_instructions(ptx)[:5])
        if name.startswith("selective_scan"):
            assert gc.ptx_shared_bytes(ptx) == 0
            assert ".local" not in ptx, f"cc {cc}: the scan's state spilled to local memory (expected registers)"
        elif name.startswith("delta_forward"):
            assert gc.ptx_shared_bytes(ptx) == MA.delta_shared_bytes(MA.DEFAULT_CHUNK, MA.DEFAULT_BLOCK_V, 64)
        else:
            assert gc.ptx_shared_bytes(ptx) == MA.gla_shared_bytes(MA.DEFAULT_CHUNK, MA.DEFAULT_BLOCK_V, 64)


@pytest.fixture(scope="module")
def nvrtc():
    import_or_missing("cuda.bindings.nvrtc", "pip install cuda-bindings nvidia-cuda-nvrtc")
    try:
        gc.nvrtc_compile('extern "C" __global__ void f(float* a) { a[0] = 1.0f; }', "sm_80")
    except Exception as e:  # noqa: BLE001
        missing(f"NVRTC unavailable ({type(e).__name__}: {str(e)[:200]})")


@pytest.mark.parametrize("arch", NVRTC_ARCHS)
@pytest.mark.parametrize("variant", sorted(C_VARIANTS))
def test_mixer_nvrtc_compiles(nvrtc, variant, arch):
    defs = C_VARIANTS[variant]
    res = gc.nvrtc_compile(mixers_c.SOURCE, arch, defs)
    usage = res.resource_usage()
    assert set(usage) == set(mixers_c.KERNEL_NAMES), usage
    frames = [ln for ln in res.log.splitlines() if "spill stores" in ln]
    assert len(frames) == len(mixers_c.KERNEL_NAMES) and all(" 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in ln
                                    for ln in frames), res.log
    assert usage["gla_forward"]["smem"] == MA.gla_shared_bytes(defs["BT"], defs["BV"], defs["KMAX"])
    assert usage["delta_forward"]["smem"] == MA.delta_shared_bytes(defs["BT"], defs["BV"], defs["KMAX"])
    print(f"mixers_c {variant} {arch}: cubin {res.cubin_bytes} B, {usage}")


def test_mixer_c_source_builds_as_opencl_c():
    rt = opencl_backend_or_missing().runtime()
    for defs in C_VARIANTS.values():
        rt.build(mixers_c.SOURCE, defs)


# ---------------------------------------------------------------------------
# simulator (child process) and OpenCL: the fixed problems and the mutants


@pytest.fixture(scope="session")
def mixer_simulator_results(tmp_path_factory):
    import_or_missing("numba", "pip install 'transformer-refimpl[gpu]'")
    try:
        import numba_cuda  # noqa: F401
    except ImportError as e:
        missing(f"numba-cuda not installed ({e})")
    out = tmp_path_factory.mktemp("mixsim") / "results.json"
    proc = subprocess.run([sys.executable, "-m", "tests.gpu.mixers_simulator_main", "--json", str(out)], cwd=ROOT,
                          env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"simulator child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    results = json.loads(out.read_text())
    results["summary"] = proc.stdout.strip().splitlines()[-1]
    return results


def _problem_ids():
    return [f"{kernel}:{p.name}" for kernel in MC.KERNELS for p in MC.problems_for(kernel)]


def test_mixer_simulated_child_ran_everything(mixer_simulator_results):
    r = mixer_simulator_results
    print(r["summary"])
    assert r["environment"]["simulator"] is True
    assert set(r["cases"]) == set(_problem_ids())
    assert set(r["mutants"]) == set(mixers_mutants.MUTATIONS)


@pytest.mark.parametrize("key", _problem_ids())
def test_mixer_simulated_problem(mixer_simulator_results, key):
    res = mixer_simulator_results["cases"][key]
    assert res["ok"], f"{key} under the CUDA simulator: {res.get('error')}\n{res.get('traceback', '')}"


@pytest.mark.parametrize("name", sorted(mixers_mutants.MUTATIONS))
def test_mixer_simulated_mutant_rejected(mixer_simulator_results, name):
    res = mixer_simulator_results["mutants"][name]
    assert "error" not in res, f"mutant {name} crashed the child: {res['error']}\n{res.get('traceback', '')}"
    assert res["rejected_by"] is not None, f"mutant {name} ({mixers_mutants.MUTATIONS[name].doc}) passed every problem"
    print(f"mutant {name}: rejected by {res['rejected_by']}: {res['message']}")


@pytest.fixture(scope="module")
def opencl():
    return opencl_backend_or_missing()


@pytest.mark.parametrize("kernel, problem", [(k, p) for k in MC.KERNELS for p in MC.problems_for(k)],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_mixer_opencl_problem(opencl, kernel, problem):
    MC.check("opencl", kernel, problem)


@pytest.mark.parametrize("name", sorted(mixers_mutants.MUTATIONS))
def test_mixer_opencl_mutant_rejected(opencl, name):
    m = mixers_mutants.MUTATIONS[name]
    problem, message = MC.find_rejecting_problem(mixers_mutants.backend(name, "opencl"), m.kernel)
    assert problem is not None, f"mutant {name} ({m.doc}) passed every {m.kernel} problem: the checks are too weak"
    print(f"mutant {name}: rejected by {problem}: {message}")


def test_mutation_edits_match_the_sources_exactly():
    """Each edit applies to both kernel texts (a mutant that no longer matches fails loudly)."""
    pytest.importorskip("numba")
    for m in mixers_mutants.MUTATIONS.values():
        assert mixers_mutants.c_source(m) != mixers_c.SOURCE
        assert mixers_mutants.numba_module(m).__name__.endswith(m.name)  # the Numba edits applied too


# ---------------------------------------------------------------------------
# the conformance suite against the kernels (the protocol a user's kernel meets)


def _adapters():
    from gpu.mixers_adapters import opencl_mixers

    return opencl_mixers()


CONFORMANCE = [pytest.param(prop, impl, id=f"{prop.name}-{impl.name}")
               for prop in MS.PROPERTIES + ML.PROPERTIES for impl in _adapters() if supports(impl, prop)]


@pytest.mark.parametrize("prop, impl", CONFORMANCE)
def test_mixer_conformance_on_opencl(opencl, prop, impl):
    run_property(prop, impl)


@pytest.mark.parametrize("name", sorted(mixers_mutants.MUTATIONS))
def test_mixer_conformance_rejects_mutant(opencl, name):
    """The suite itself (the user's protocol, Hypothesis drawing the problems) rejects each mutant
    kernel run through the same adapter as the real one."""
    from gpu.mixers_adapters import delta_adapter, gla_adapter, scan_adapter
    from tests._meta import assert_rejects

    m = mixers_mutants.MUTATIONS[name]
    be = mixers_mutants.backend(name, "opencl")
    if m.kernel == "scan":
        impl, prop = scan_adapter(be, block=4), next(p for p in MS.PROPERTIES if p.name == "scan_matches_sequential")
    elif m.kernel == "delta":
        impl = delta_adapter(be, chunk_size=4, block_v=3, threads=32)
        prop = next(p for p in ML.PROPERTIES if p.name == "delta_matches_recurrent")
    else:
        impl = gla_adapter(be, chunk_size=4, block_v=3, threads=32)
        prop = next(p for p in ML.PROPERTIES if p.name == "la_matches_recurrent")
    assert_rejects(prop, impl, max_examples=100)


def test_mixer_conformance_covers_each_kernel():
    """Each kernel meets the kind's main property and its extreme-gate / extreme-decay one; the
    properties not run are those needing a feature the kernels do not declare (normalize)."""
    ran = {(p.values[0].name, p.values[1].name) for p in CONFORMANCE}
    names = {a.name for a in _adapters()}
    for a in names:
        if "scan" in a:
            assert {("scan_matches_sequential", a), ("scan_extreme_decays", a)} <= ran
        elif "delta" in a:
            assert {("delta_matches_recurrent", a), ("delta_extreme_gates", a), ("delta_memorises", a)} <= ran
        else:
            assert {("la_matches_recurrent", a), ("la_extreme_gates", a)} <= ran
    not_run = {p.name for p in ML.PROPERTIES if p.kind == "linear_attention"} - {n for n, _ in ran}
    assert not_run == {"la_normalized"}


# ---------------------------------------------------------------------------
# facade rules


def _scan_inputs(rng, b=1, H=2, L=5, P=3, N=4, G=1):
    return (rng.standard_normal((b, H, L, P)), np.abs(rng.standard_normal((b, H, L, P))),
            -np.exp(rng.standard_normal((H, P, N))), rng.standard_normal((b, G, L, N)), rng.standard_normal((b, G, L, N)))


def test_mixer_facade_refuses_what_the_kernels_lack():
    rng = np.random.default_rng(0)
    u, dl, A, B, C = _scan_inputs(rng)
    with pytest.raises(UnsupportedOption, match="delta_softplus"):
        MA.selective_scan(u, dl, A, B, C, backend="opencl", delta_softplus=True)
    with pytest.raises(UnsupportedOption, match="zoh"):
        MA.selective_scan(u, dl, A, B, C, backend="opencl", discretization="zoh")
    with pytest.raises(UnsupportedOption, match=r"^N: expected <= 64 .*, got 65$"):
        MA.selective_scan(*_scan_inputs(rng, N=65), backend="opencl")
    q = rng.standard_normal((1, 1, 4, 129))
    with pytest.raises(UnsupportedOption, match=r"^K: expected <= 128 .*, got 129$"):
        MA.gated_linear_attention(q, q, q, backend="opencl")
    q = rng.standard_normal((1, 1, 4, 3))
    with pytest.raises(UnsupportedOption, match="beta"):
        MA.delta_rule(q, q, q, np.ones((1, 1, 4, 3)) / 2, backend="opencl")
    q = rng.standard_normal((1, 1, 4, 128))
    with pytest.raises(ValueError, match="shared memory"):
        MA.gated_linear_attention(q, q, q, backend="opencl", chunk_size=64)
    # each kernel's own budget: chunk 28 at K = 128 overflows GLA's (3 BT K) but fits the delta rule's
    assert MA.gla_shared_bytes(28, 16, 128) > MA.MAX_STATIC_SHARED_BYTES >= MA.delta_shared_bytes(28, 16, 128)
    with pytest.raises(ValueError, match="got 56128 B"):
        MA.prepare_gla(q, q, q, chunk_size=28)
    MA.prepare_delta(q, q, q, np.ones((1, 1, 4)) / 2, chunk_size=28)
    with pytest.raises(ValueError, match="got 52736 B"):
        MA.prepare_delta(q[..., :32], q[..., :32], q, np.ones((1, 1, 4)) / 2, chunk_size=64, block_v=8)


def test_mixer_facade_rejects_bad_input_by_name():
    rng = np.random.default_rng(1)
    u, dl, A, B, C = _scan_inputs(rng)
    with pytest.raises(ValueError, match="^A:"):
        MA.selective_scan(u, dl, -A, B, C, backend="opencl")
    with pytest.raises(ValueError, match="^delta:"):
        MA.selective_scan(u, -dl, A, B, C, backend="opencl")
    with pytest.raises(ValueError, match="^B:"):
        MA.selective_scan(u, dl, A, B[:, :, :2], C, backend="opencl")
    q = rng.standard_normal((1, 2, 4, 3))
    with pytest.raises(ValueError, match="^g:"):
        MA.gated_linear_attention(q, q, q, np.ones((1, 2, 4)), backend="opencl")
    with pytest.raises(ValueError, match="^chunk_size:"):
        MA.gated_linear_attention(q, q, q, backend="opencl", chunk_size=0)
    with pytest.raises(ValueError, match="^g:"):
        MA.delta_rule(q, q, q, np.ones((1, 2, 4)) / 2, np.ones((1, 2, 4)), backend="opencl")
    with pytest.raises(ValueError, match="^beta:"):
        MA.delta_rule(q, q, q, np.ones((1, 2, 5)), backend="opencl")
    with pytest.raises(ValueError, match="^backend:"):
        MA.gated_linear_attention(q, q, q, backend="triton")


def test_mixer_facade_reports_float32_overflow_by_name(opencl):
    """Finite float32 inputs whose outputs overflow float32: a ValueError naming the inputs, never
    inf, NaN or the "never written" RuntimeError (the kernels' inf - inf is a NaN too)."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 1, 40, 4))
    with pytest.raises(ValueError, match="overflows float32.*q, k, v"):
        MA.gated_linear_attention(q, q * 1e18, q * 1e20, backend="opencl", chunk_size=4)
    with pytest.raises(ValueError, match="overflows float32.*q, k, v, beta"):
        MA.delta_rule(q, q * 1e18, q * 1e20, np.ones((1, 1, 40)), backend="opencl", chunk_size=4)
    u, dl, A, B, C = _scan_inputs(rng, L=30)
    with pytest.raises(ValueError, match="overflows float32.*u, delta"):
        MA.selective_scan(u * 1e30, dl, A * 0, B * 1e9, C, backend="opencl")


def test_mixer_facade_never_mutates_inputs_and_handles_empty(opencl):
    rng = np.random.default_rng(2)
    args = [x.astype(np.float32) for x in _scan_inputs(rng)]
    before = [a.copy() for a in args]
    y, x = MA.selective_scan(*args, backend="opencl")
    assert all(np.array_equal(a, b) for a, b in zip(args, before)) and y.dtype == np.float32
    q = rng.standard_normal((1, 1, 6, 3)).astype(np.float32)
    g = -rng.random((1, 1, 6)).astype(np.float32)
    qc, gc_ = q.copy(), g.copy()
    o, S = MA.gated_linear_attention(q, q, q, g, backend="opencl", chunk_size=4)
    assert np.array_equal(q, qc) and np.array_equal(g, gc_) and not np.shares_memory(o, q)
    s0 = rng.standard_normal((1, 1, 3, 3))
    o, S = MA.gated_linear_attention(q[:, :, :0], q[:, :, :0], q[:, :, :0], backend="opencl", initial_state=s0)
    assert o.shape == (1, 1, 0, 3) and np.array_equal(S, s0.astype(np.float32))


def _naive32(kind, q, k, v, g, beta, S0, scale, absolute=False):
    """The recurrence in float32 NumPy, one token at a time, from S0 (``absolute``: on |q|, |k|, |v|,
    |S0| in float64, the magnitude M of every path, properties.mixers_common)."""
    f = np.float64 if absolute else np.float32
    A = (lambda x: np.abs(x).astype(f)) if absolute else (lambda x: np.asarray(x, f))
    q, k, v, S = A(q), A(k), A(v), A(S0)
    o = np.empty(v.shape, f)
    for t in range(q.shape[2]):
        # (B, H, K, 1) per key channel (GLA) or (B, H, 1, 1) per token (delta rule)
        decay = np.exp(np.asarray(g[:, :, t], f))[..., None] if g is not None else f(1)
        if kind == "gla":
            S = decay * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        else:
            S = decay[..., None] * S
            kS = np.einsum("bhk,bhkv->bhv", k[:, :, t], S)
            u = np.asarray(beta[:, :, t, None], f) * ((v[:, :, t] + kS) if absolute else (v[:, :, t] - kS))
            S = S + k[:, :, t, :, None] * u[..., None, :]
        o[:, :, t] = f(scale) * np.einsum("bhk,bhkv->bhv", q[:, :, t], S)
    return o, S


@pytest.mark.parametrize("kind", ["gla", "delta"])
def test_mixer_initial_state_matches_refimpl(opencl, kind):
    """The initial-state path (not in the linear_attention / delta_rule kinds' protocol): kernel
    against refimpl within 2x the naive float32 recurrence's error plus 8 u32 of the path magnitude."""
    from refimpl.mixers import delta_rule as DR
    from refimpl.mixers import gated as GL

    rng = np.random.default_rng(4)
    B, H, L, K, V = 1, 2, 13, 5, 6
    q, k = rng.standard_normal((2, B, H, L, K)).astype(np.float32).astype(np.float64)
    v = rng.standard_normal((B, H, L, V)).astype(np.float32).astype(np.float64)
    S0 = rng.standard_normal((B, H, K, V)).astype(np.float32).astype(np.float64)
    scale = float(np.float32(K ** -0.5))
    if kind == "gla":
        g = -rng.random((B, H, L, K)).astype(np.float32).astype(np.float64)
        beta = None
        ref = GL.gated_linear_attention(q, k, v, g, scale=scale, initial_state=S0)
        got = MA.gated_linear_attention(q, k, v, g, backend="opencl", scale=scale, initial_state=S0, chunk_size=4,
                                        block_v=4, threads=32)
    else:
        q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
        q, k = (x.astype(np.float32).astype(np.float64) for x in (q, k))
        g = -rng.random((B, H, L)).astype(np.float32).astype(np.float64)
        beta = rng.random((B, H, L)).astype(np.float32).astype(np.float64)
        ref = DR.delta_rule(q, k, v, beta, g, scale=scale, initial_state=S0)
        got = MA.delta_rule(q, k, v, beta, g, backend="opencl", scale=scale, initial_state=S0, chunk_size=4,
                            block_v=4, threads=32)
    naive = _naive32(kind, q, k, v, g, beta, S0, scale)
    mag = _naive32(kind, q, k, v, g, beta, S0, scale, absolute=True)
    for name, x, r, n, m in zip(("o", "final state"), got, ref, naive, mag):
        bound = 2 * np.max(np.abs(n - r)) + 8 * 2.0**-24 * m
        err = np.abs(x - r)
        assert (err <= bound).all(), f"{kind} {name}: error {err.max():.3g} > bound at {np.unravel_index(np.argmax(err - bound), err.shape)}"
