"""Every family of the spec beside what a user would otherwise run as the oracle on a CPU.

    python benchmarks/families.py --quick                 # small sizes, a few minutes
    python benchmarks/families.py                          # the issue-23 sizes (L up to 4096)
    python benchmarks/families.py --only gla decode --rounds 5 --no-memory

Families and contenders (float64 inputs; "peer" = the library's own reference as it ships):

    attention_fwd   refimpl.flash_attention (best block), refimpl.attention   vs torch SDPA
    attention_bwd   refimpl.flash_attention_backward, attention_backward      vs torch autograd of SDPA
    gla             gated_linear_attention chunked / recurrent                vs fla naive_recurrent_gla
    retention       retention chunked / parallel                              vs fla naive_retention,
                                                                                 naive_chunk_simple_gla
    linear_attn     linear_attention chunked / recurrent (identity map)       vs fla naive_recurrent_linear_attn,
                                                                                 naive_chunk_linear_attn
    delta_rule      delta_rule chunked / recurrent                            vs fla delta_rule_recurrence,
                                                                                 delta_rule_chunkwise
    selective_scan  selective_scan sequential / associative / chunked         vs mamba selective_scan_ref
    moe             moe_forward (mixtral preset, SwiGLU experts)              vs HF MixtralSparseMoeBlock
                    (and, as a floor, the experts' three GEMMs on their routed rows alone)
    decode          refimpl.decode, one token a step after a prefill          vs SDPA on the cache per step

fla's and mamba's references cast to float32 inside (``.float()``): they run as shipped, which
favours them; torch SDPA, autograd and the HF block compute in float64. Method: BLAS and torch
pinned to ``--threads`` (set before NumPy loads); the contenders of a row interleaved in every round
(order reversed on odd rounds), each call after 0.2 s idle (``SETTLE_S``: OpenBLAS's threads spin
~0.1 s after a multi-threaded product and would slow whichever contender came next), each figure the
minimum over ``--rounds``; the load average is
printed with every row. Ratio = the fastest peer / the fastest refimpl form (>= 1: refimpl as fast).
GFLOP/s of the fastest refimpl form against NumPy's own float64 GEMM measured at the start of the
run (the ceiling of this machine). Peak memory: growth of the peak RSS of a fresh subprocess during
one call, inputs allocated (``--no-memory`` skips it). Plots: ``benchmarks/families_<family>.png``
(time and peak memory against L). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ("attention_fwd", "attention_bwd", "gla", "retention", "linear_attn", "delta_rule", "selective_scan",
            "moe", "decode")


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for NumPy's BLAS and torch")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per figure, minimum taken (default 3, quick 2)")
    ap.add_argument("--only", nargs="+", choices=FAMILIES, default=None)
    ap.add_argument("--L", type=int, nargs="+", default=None, help="lengths (tokens T for moe)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--refimpl", default=os.path.dirname(HERE),
                    help="directory holding the refimpl package to time (default: this checkout); e.g. an older "
                         "commit's export, for before/after figures from the same script")
    ap.add_argument("--tag", default="", help="suffix of the plot files (e.g. 'before')")
    ap.add_argument("--_memory", nargs=3, help=argparse.SUPPRESS)  # internal: family contender L
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (2 if a.quick else 3)
    return a


ARGS = _parse(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.abspath(ARGS.refimpl))
import refimpl  # noqa: E402
from refimpl import mixers  # noqa: E402
from refimpl.flash import flash_attention, flash_attention_backward  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
F = torch.nn.functional


def lengths(family):
    if ARGS.L:
        return ARGS.L
    if family == "moe":
        return [1024, 4096] if ARGS.quick else [1024, 4096, 16384]
    if family.startswith("attention"):
        return [1024, 2048] if ARGS.quick else [2048, 4096]
    if family == "decode":
        return [512, 1024] if ARGS.quick else [1024, 2048]
    return [1024, 2048] if ARGS.quick else [1024, 2048, 4096]


# ----------------------------------------------------------------------------
# the machine


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    core = "?"
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")):
        for sym in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(ctypes.CDLL(lib), sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                core = fn().decode()
                break
    simd = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found", [])
    return (f"CPU {model}, {os.cpu_count()} logical cores; numpy {np.__version__} with {blas['name']} "
            f"{blas.get('version', '?')} (kernel {core}), SIMD {'/'.join(simd)}; torch {torch.__version__} "
            f"(BLAS: {'MKL' if torch.backends.mkl.is_available() else 'other'}); threads {ARGS.threads}")


def load() -> str:
    return "load %.2f" % os.getloadavg()[0]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


SETTLE_S = 0.2  # idle before each timed call: OpenBLAS's workers spin ~0.1 s after a multi-threaded product


def race(contenders: dict, rounds: int) -> dict:
    """Minimum time of each contender over ``rounds``, contenders interleaved in each round. Each call
    starts after ``SETTLE_S`` idle, so no contender shares the cores with the previous one's spinning
    BLAS threads (measured: a 2-thread NumPy GEMM leaves ~0.1 s of a core's CPU spent after it)."""
    best = {n: float("inf") for n in contenders}
    for r in range(rounds):
        for n in (list(contenders) if r % 2 == 0 else list(reversed(contenders))):
            time.sleep(SETTLE_S)
            best[n] = min(best[n], _timed(contenders[n]))
    return best


def gemm_ceiling() -> float:
    """NumPy's float64 GEMM throughput, GFLOP/s (n = 2048, best of 5)."""
    a = np.random.default_rng(0).standard_normal((2048, 2048))
    a @ a
    t = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / t / 1e9


# ----------------------------------------------------------------------------
# peers loaded as they ship


def _fla(path: str, name: str):
    mod = importlib.import_module("fla.ops." + path)
    return getattr(mod, name)


def _mamba_ref():
    root = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")
    rel = "mamba/mamba_ssm/ops/selective_scan_interface.py"
    if root and os.path.isfile(os.path.join(root, rel)):
        import ast

        tree = ast.parse(open(os.path.join(root, rel)).read())
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref")
        from einops import rearrange, repeat

        ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
        exec(compile(ast.Module(body=[node], type_ignores=[]), rel, "exec"), ns)
        return ns["selective_scan_ref"], rel
    raise SystemExit(f"selective_scan: mamba's selective_scan_ref is read from its source, which this project does "
                     f"not carry; point REFIMPL_LIBRARY_SOURCES at a directory holding {rel} (state-spaces/mamba, "
                     f"checked at 2.3.2.post1, e9594ce), or leave the family out with --only")


def _t(x, grad=False):
    return torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(grad)


def _blhd(x):
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 1, 2)))


# ----------------------------------------------------------------------------
# the families: build(L, variant) -> (contenders {name: fn}, flops of one call)

H_ATT, D_ATT = 8, 64


def _sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])


def attention_fwd(L, variant):
    Hkv, causal = variant
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, h, L, D_ATT)) for h in (H_ATT, Hkv, Hkv))
    tq, tk, tv = _t(q), _t(k), _t(v)
    rows = {f"refimpl flash b={b}": (lambda b=b: flash_attention(q, k, v, block_q=b, block_k=b, causal=causal))
            for b in (256, 512)}
    if L <= 4096:
        rows["refimpl dense"] = lambda: refimpl.attention(q, k, v, causal=causal)
    rows["peer torch SDPA"] = lambda: _sdpa(tq, tk, tv, causal)
    return rows, 4 * H_ATT * L * L * D_ATT * (0.5 if causal else 1.0)


def attention_bwd(L, variant):
    Hkv, causal = variant
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, h, L, D_ATT)) for h in (H_ATT, Hkv, Hkv))
    do = rng.standard_normal(q.shape)
    out, lse = flash_attention(q, k, v, block_q=512, block_k=512, causal=causal)
    rows = {f"refimpl flash b={b}": (lambda b=b: flash_attention_backward(q, k, v, out, lse, do, block_q=b,
                                                                           block_k=b, causal=causal))
            for b in (256, 512)}
    if L <= 4096:
        rows["refimpl dense"] = lambda: refimpl.attention_backward(q, k, v, do, causal=causal)
    tq, tk, tv = _t(q, True), _t(k, True), _t(v, True)
    tout, tdo = _sdpa(tq, tk, tv, causal), _t(do)
    rows["peer torch autograd"] = lambda: torch.autograd.grad(tout, (tq, tk, tv), tdo, retain_graph=True)
    return rows, 10 * H_ATT * L * L * D_ATT * (0.5 if causal else 1.0)  # 5 matmuls of 2 L^2 D


H_MIX, D_MIX = 4, 64  # the GLA size: B1 H4 D64


def _mixer_inputs(L, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, H_MIX, L, D_MIX)) for _ in range(3))
    return rng, q, k, v


def _chunked_flops(L, c=64):  # per head: intra 2 c^2 (K + V) / 2 ... read/write 4 c K V per chunk
    return H_MIX * L * (2 * c * 2 * D_MIX + 6 * D_MIX * D_MIX)


def gla(L, variant):
    rng, q, k, v = _mixer_inputs(L)
    g = np.log(1 / (1 + np.exp(-rng.standard_normal(q.shape)))) / 16  # fla's logsigmoid / 16 gates
    peer = _fla("gla.naive", "naive_recurrent_gla")
    tq, tk, tv, tg = (_blhd(x) for x in (q, k, v, g))
    rows = {"refimpl chunked": lambda: mixers.gated_linear_attention(q, k, v, g, form="chunked"),
            "refimpl recurrent": lambda: mixers.gated_linear_attention(q, k, v, g, form="recurrent"),
            "peer fla naive_recurrent_gla": lambda: peer(tq, tk, tv, tg, output_final_state=True)}
    return rows, _chunked_flops(L)


def retention(L, variant):
    _, q, k, v = _mixer_inputs(L)
    naive = _fla("retention.naive", "naive_retention")
    chunk = _fla("simple_gla.naive", "naive_chunk_simple_gla")
    g = np.broadcast_to(np.log(mixers.retnet_gammas(H_MIX))[None, None, :], (1, L, H_MIX))
    tq, tk, tv = _t(q), _t(k), _t(v)
    bq, bk, bv, bg = _blhd(q), _blhd(k), _blhd(v), torch.from_numpy(np.ascontiguousarray(g))
    rows = {"refimpl chunked": lambda: mixers.retention(q, k, v, form="chunked"),
            "refimpl parallel": lambda: mixers.retention(q, k, v, form="parallel"),
            "peer fla naive_retention": lambda: naive(tq, tk, tv),
            "peer fla naive_chunk_simple_gla": lambda: chunk(bq, bk, bv, bg, output_final_state=True)}
    return rows, _chunked_flops(L)


def linear_attn(L, variant):
    _, q, k, v = _mixer_inputs(L)
    q, k = np.abs(q), np.abs(k)  # feature-mapped (non-negative)
    rec = _fla("linear_attn.naive", "naive_recurrent_linear_attn")
    chunk = _fla("linear_attn.naive", "naive_chunk_linear_attn")
    bq, bk, bv = _blhd(q), _blhd(k), _blhd(v)
    s = D_MIX ** -0.5
    rows = {"refimpl chunked": lambda: mixers.linear_attention_fn(q, k, v, feature_map="identity", normalize=False,
                                                                  scale=s, form="chunked"),
            "refimpl recurrent": lambda: mixers.linear_attention_fn(q, k, v, feature_map="identity", normalize=False,
                                                                    scale=s, form="recurrent"),
            "peer fla naive_recurrent_linear_attn": lambda: rec(bq, bk, bv),
            "peer fla naive_chunk_linear_attn": lambda: chunk(bq, bk, bv)}
    return rows, _chunked_flops(L)


def delta_rule(L, variant):
    rng, q, k, v = _mixer_inputs(L)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    beta = 1 / (1 + np.exp(-rng.standard_normal((1, H_MIX, L))))
    rec = _fla("delta_rule.naive", "delta_rule_recurrence")
    chunk = _fla("delta_rule.naive", "delta_rule_chunkwise")
    tq, tk, tv, tb = _t(q), _t(k), _t(v), _t(beta)
    rows = {"refimpl chunked": lambda: mixers.delta_rule_attention(q, k, v, beta, form="chunked"),
            "refimpl recurrent": lambda: mixers.delta_rule_attention(q, k, v, beta, form="recurrent"),
            "peer fla delta_rule_recurrence": lambda: rec(tq, tk, tv, tb),
            "peer fla delta_rule_chunkwise": lambda: chunk(tq, tk, tv, tb, chunk_size=64)}
    return rows, _chunked_flops(L) * 2


D_INNER, N_SSM = 256, 16  # the selective-scan size


def selective_scan(L, variant):
    rng = np.random.default_rng(0)
    u, dt, z = (rng.standard_normal((1, D_INNER, L)) for _ in range(3))
    dt = np.log1p(np.exp(dt - 4))  # softplus: step sizes ~ 0.02
    A = -np.exp(rng.standard_normal((D_INNER, N_SSM)))
    Bm, Cm = rng.standard_normal((1, N_SSM, L)), rng.standard_normal((1, N_SSM, L))
    Dp = rng.standard_normal(D_INNER)
    ref, _src = _mamba_ref()
    targs = [_t(x) for x in (u, dt, A, Bm, Cm, Dp, z)]
    targs[2] = targs[2].float()  # the reference's einsum('bdl,dn->bdln', delta.float(), A) needs one dtype
    pres = mixers.presets.mamba_selective_scan
    rows = {"refimpl sequential": lambda: pres(u, dt, A, Bm, Cm, Dp, z),
            "refimpl associative": lambda: _mamba_form("associative", u, dt, A, Bm, Cm, Dp, z),
            "refimpl chunked": lambda: _mamba_form("chunked", u, dt, A, Bm, Cm, Dp, z),
            "peer mamba selective_scan_ref": lambda: ref(*targs)}
    return rows, 9 * D_INNER * N_SSM * L


def _mamba_form(form, u, dt, A, Bm, Cm, Dp, z):
    """The preset's layout change, then the associative or chunked form."""
    L = u.shape[2]
    hd = lambda x: x.reshape(1, 1, D_INNER, L).transpose(0, 1, 3, 2)  # noqa: E731
    return mixers.selective_scan(hd(u), hd(dt), A[None], Bm.transpose(0, 2, 1)[:, None],
                                 Cm.transpose(0, 2, 1)[:, None], Dp[None], hd(z), form=form)[0]


D_MOE, E_MOE, K_MOE, H_MOE = 512, 8, 2, 1024


def moe(T, variant):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(hidden_size=D_MOE, intermediate_size=H_MOE, num_local_experts=E_MOE,
                        num_experts_per_tok=K_MOE)
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(cfg).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, D_MOE ** -0.5)
    Wg = block.gate.weight.detach().numpy()
    gu = block.experts.gate_up_proj.detach().numpy()  # (E, 2H, D): gate rows then up rows
    dn = block.experts.down_proj.detach().numpy()  # (E, D, H)
    experts = [refimpl.moe.SwiGLUExpert(Wg=gu[e, :H_MOE].T.copy(), Wu=gu[e, H_MOE:].T.copy(), Wd=dn[e].T.copy())
               for e in range(E_MOE)]
    x = np.random.default_rng(0).standard_normal((T, D_MOE))
    tx = _t(x)[None]

    def hf():
        with torch.no_grad():
            return block(tx)

    def ref():
        return refimpl.moe.moe_forward(x, Wg, experts, K_MOE, preset="mixtral")[0]

    routing = refimpl.moe.moe_forward(x, Wg, experts, K_MOE, preset="mixtral")[1]
    rows = [x[np.nonzero((routing.indices == e) & routing.kept)[0]] for e in range(E_MOE)]

    def gemms():  # the floor: the three GEMMs of each expert on its routed rows, nothing else
        for e, r in zip(experts, rows):
            (r @ e.Wg * (r @ e.Wu)) @ e.Wd

    return ({"refimpl moe_forward": ref, "peer HF MixtralSparseMoeBlock": hf, "floor: expert GEMMs alone": gemms},
            2 * T * K_MOE * 3 * D_MOE * H_MOE)


DEC_STEPS, DEC_HQ, DEC_HKV = 256, 8, 2


def decode(L, variant):
    """Prefill L tokens, then DEC_STEPS single-token steps; both are timed, for refimpl and the peer alike
    (the issue's row: prefill and steps together)."""
    rng = np.random.default_rng(0)
    n = L + DEC_STEPS
    q = rng.standard_normal((1, DEC_HQ, n, D_ATT))
    k, v = (rng.standard_normal((1, DEC_HKV, n, D_ATT)) for _ in range(2))

    def ref():
        cache = refimpl.make_cache("contiguous", DEC_HKV, D_ATT)
        refimpl.decode_step(q[:, :, :L], k[:, :, :L], v[:, :, :L], cache)
        for t in range(L, n):
            refimpl.decode_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache)

    tq, tk, tv = _t(q), _t(k), _t(v)

    def sdpa():  # a preallocated cache, written in place; SDPA on the filled part each step
        K = torch.empty((1, DEC_HKV, n, D_ATT), dtype=torch.float64)
        V = torch.empty_like(K)
        K[:, :, :L], V[:, :, :L] = tk[:, :, :L], tv[:, :, :L]
        _sdpa(tq[:, :, :L], K[:, :, :L], V[:, :, :L], True)
        for t in range(L, n):
            K[:, :, t], V[:, :, t] = tk[:, :, t], tv[:, :, t]
            _sdpa(tq[:, :, t:t + 1], K[:, :, :t + 1], V[:, :, :t + 1], False)

    return {"refimpl decode_step": ref, "peer torch SDPA on a cache": sdpa}, 4 * DEC_HQ * D_ATT * (
        L * L / 2 + DEC_STEPS * (L + DEC_STEPS / 2))


BUILDERS = {"attention_fwd": attention_fwd, "attention_bwd": attention_bwd, "gla": gla, "retention": retention,
            "linear_attn": linear_attn, "delta_rule": delta_rule, "selective_scan": selective_scan, "moe": moe,
            "decode": decode}


def variants(family):
    if family.startswith("attention"):
        return [(H_ATT, False), (H_ATT, True), (2, False), (2, True)]
    return [None]


def vlabel(family, variant):
    if variant is None:
        return ""
    return f" {'MHA' if variant[0] == H_ATT else 'GQA'}{' causal' if variant[1] else ''}"


# ----------------------------------------------------------------------------
# peak memory in a fresh process


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _memory_child(family, contender, L):
    rows, _ = BUILDERS[family](L, variants(family)[0])
    fn = rows[contender]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status_kib("VmRSS")
    fn()
    print((_status_kib("VmHWM") - rss0) / 1024)


def peak_mib(family, contender, L):
    cmd = [sys.executable, __file__, "--threads", str(ARGS.threads), "--refimpl", ARGS.refimpl,
           "--_memory", family, contender, str(L)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


# ----------------------------------------------------------------------------


def main():
    if ARGS._memory:
        _memory_child(ARGS._memory[0], ARGS._memory[1], int(ARGS._memory[2]))
        return
    print(machine())
    print(f"refimpl from {os.path.dirname(refimpl.__file__)}")
    ceiling = gemm_ceiling()
    print(f"NumPy float64 GEMM (2048^3): {ceiling:.1f} GFLOP/s ({load()}); rounds {ARGS.rounds} (min)")
    head = f"{'family / size':<30} {'fastest refimpl':<22} {'ms':>9} {'fastest peer':<36} {'ms':>9} {'ratio':>6} {'GF/s':>6} {'%GEMM':>6}  load"
    print(head + "\n" + "-" * len(head))
    results = {}
    for family in ARGS.only or FAMILIES:
        ceiling = max(ceiling, gemm_ceiling())  # re-measured per family: the best seen is the machine's ceiling
        for variant in variants(family):
            for L in lengths(family):
                rows, flops = BUILDERS[family](L, variant)
                best = race(rows, ARGS.rounds)
                results[(family, variant, L)] = best
                ref = {n: t for n, t in best.items() if n.startswith("refimpl")}
                peer = {n: t for n, t in best.items() if n.startswith("peer")}
                rn, pn = min(ref, key=ref.get), min(peer, key=peer.get)
                gf = flops / ref[rn] / 1e9
                label = f"{family}{vlabel(family, variant)} {'T' if family == 'moe' else 'L'}={L}"
                print(f"{label:<30} {rn[8:]:<22} {ref[rn] * 1e3:9.1f} {pn[5:]:<36} {peer[pn] * 1e3:9.1f} "
                      f"{peer[pn] / ref[rn]:6.2f} {gf:6.1f} {100 * gf / ceiling:5.0f}%  {load()}", flush=True)
                others = [f"{n} {t * 1e3:.1f}" for n, t in best.items() if n not in (rn, pn)]
                if others:
                    print(f"{'':<30} others (ms): " + "; ".join(others))
        if not ARGS.no_plot:
            plot(family, results)
    print(f"ratio = fastest peer time / fastest refimpl time (>= 1: refimpl as fast); GF/s of the fastest refimpl "
          f"form; %GEMM against the best GEMM of the run, {ceiling:.1f} GFLOP/s (re-measured before each family)")


def plot(family, results):
    try:
        import matplotlib
    except ImportError:
        print("  matplotlib not installed (pip install -e '.[bench]'): no plot")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variant = variants(family)[0]
    Ls = lengths(family)
    names = list(results[(family, variant, Ls[0])])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, n in enumerate(names):
        style = "o-" if n.startswith("refimpl") else "s--"
        ax1.loglog(Ls, [results[(family, variant, L)][n] for L in Ls], style, label=n, color=f"C{i}")
        if not ARGS.no_memory:
            mem = [max(peak_mib(family, n, L), 0.1) for L in Ls]
            print(f"  peak RSS growth {family} {n}: " + ", ".join(f"{L}: {m:.1f} MiB" for L, m in zip(Ls, mem)))
            ax2.loglog(Ls, mem, style, label=n, color=f"C{i}")
    xl = "T (tokens)" if family == "moe" else "L"
    ax1.set(xlabel=xl, ylabel="time, s", title=f"{family}{vlabel(family, variant)}, float64, {ARGS.threads} threads")
    ax1.legend(fontsize=7)
    ax2.set(xlabel=xl, ylabel="peak RSS growth, MiB", title="one call")
    if not ARGS.no_memory:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(HERE, f"families_{family}{'_' + ARGS.tag if ARGS.tag else ''}.png")
    fig.savefig(path, dpi=70)
    plt.close(fig)
    print(f"  plot: {path}")


if __name__ == "__main__":
    main()
