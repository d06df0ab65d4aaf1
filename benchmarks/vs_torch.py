"""refimpl (NumPy, float64) beside torch (CPU, float64): speed ratios, peak memory, a plot.

    pip install -e ".[bench]"              # torch==2.13.0 (CPU wheel) and matplotlib
    python benchmarks/vs_torch.py          # the whole table and benchmarks/vs_torch.png
    python benchmarks/vs_torch.py --quick  # small sizes, under two minutes
    python benchmarks/vs_torch.py --threads 1 --rounds 5 --only flash_fwd
    git archive <commit> refimpl | tar -x -C /tmp/before && python benchmarks/vs_torch.py --refimpl /tmp/before

What is timed (float64, B = 1, Hq = 8, D = Dv = 64; GQA is Hkv = 2):

    flash_fwd   refimpl.flash_attention (fa2; best of --blocks)  vs  torch SDPA
    flash_bwd   refimpl.flash_attention_backward (best block)    vs  torch autograd of SDPA (backward only)
    dense_fwd   refimpl.attention                                vs  torch SDPA
    dense_bwd   refimpl.attention_backward                       vs  torch autograd of SDPA
    route       refimpl.moe.route(E = 64, k = 2, capacity 1.25)  vs  torch softmax + topk + cumsum slots

Ratio = torch time / refimpl time (> 1: refimpl faster). GFLOP/s: the useful floating-point
operations of the fastest refimpl contender (forward 4 B Hq Lq Lk D, backward 10 B Hq Lq Lk D,
times the visible fraction under a causal mask), and that figure as a share of NumPy's own float64
GEMM throughput (2048 x 2048 x 2048, the ceiling of this machine), raced in every attention row
as a third contender, so that load hits all three alike; the header names the machine (CPU,
NumPy's BLAS and its kernel, threads). A causal / non-causal time line follows each table.
Method: threads pinned
(``--threads``, default all cores) for NumPy's BLAS through OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS, set *before* NumPy is imported, and
for torch through ``torch.set_num_threads`` with the same count (refimpl's
own pool of threads, ``refimpl._parallel``, takes BLAS's count); contenders
interleaved within each round (refimpl, torch, refimpl, ...) so that load
from other processes hits both alike; each figure is the minimum over
``--rounds`` rounds. Peak memory (the plot's second panel) is the growth of
the peak resident set size of a fresh subprocess during one call, inputs
already allocated: the same method for NumPy and torch. Without torch the
refimpl figures are printed alone. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 2**20


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (L <= 2048, T <= 16384): under two minutes")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for NumPy's BLAS and torch")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per figure (minimum taken); default 3, quick 2")
    ap.add_argument("--L", type=int, nargs="+", default=None, help="sequence lengths for flash (Lq = Lk)")
    ap.add_argument("--dense-max-L", type=int, default=None, help="largest L for the dense paths (memory: 8 H L^2 bytes per score matrix)")
    ap.add_argument("--blocks", type=int, nargs="+", default=None, help="block sizes tried for flash (block_q = block_k)")
    ap.add_argument("--T", type=int, nargs="+", default=None, help="token counts for route")
    ap.add_argument("--only", nargs="+", default=None,
                    choices=["flash_fwd", "flash_bwd", "dense_fwd", "dense_bwd", "route"], help="run only these")
    ap.add_argument("--plot", default=os.path.join(HERE, "vs_torch.png"), help="PNG path ('' for none)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--refimpl", default=os.path.dirname(HERE),
                    help="directory holding the refimpl package to time (default: this checkout); e.g. an older "
                         "commit's `git archive`, for before/after tables from the same script on the same machine")
    ap.add_argument("--_memory", nargs=3, help=argparse.SUPPRESS)  # internal: contender L H
    a = ap.parse_args(argv)
    quick = a.quick
    a.rounds = a.rounds or (2 if quick else 3)
    a.L = a.L or ([1024, 2048] if quick else [2048, 4096, 8192])
    a.dense_max_L = a.dense_max_L or (2048 if quick else 4096)
    a.blocks = a.blocks or ([512] if quick else [256, 512, 1024])
    a.T = a.T or ([4096, 16384] if quick else [4096, 65536])
    return a


ARGS = _parse(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before NumPy (and torch) load their thread pools

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.abspath(ARGS.refimpl))
import refimpl  # noqa: E402
from refimpl.flash import flash_attention, flash_attention_backward  # noqa: E402
from refimpl.moe import route  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(ARGS.threads)
    F = torch.nn.functional
except ImportError:  # refimpl-only figures
    torch = None

H, D, E, K, CF = 8, 64, 64, 2, 1.25
GEMM_N = 2048
_GEMM_A = []  # the operand, made on first use


def _gemm():
    if not _GEMM_A:
        _GEMM_A.append(np.random.default_rng(1).standard_normal((GEMM_N, GEMM_N)))
    return _GEMM_A[0] @ _GEMM_A[0]


def _gflops(kind, L, causal) -> float:
    """Useful GFLOP of one call: 2 (forward) or 5 (backward) GEMMs of B Hq L L D multiply-adds,
    times the visible fraction (L + 1) / 2L of a causal mask."""
    frac = (L + 1) / (2 * L) if causal else 1.0
    return (4 if kind.endswith("fwd") else 10) * H * L * L * D * frac / 1e9


def machine() -> str:
    """CPU model, NumPy's BLAS with its kernel and thread count, torch's BLAS."""
    from threadpoolctl import threadpool_info

    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = [f"{_owner(i['filepath'])} BLAS {i['internal_api']} {i['version']} (kernel {i.get('architecture', '?')}, "
            f"{i['num_threads']} threads)" for i in threadpool_info() if i["user_api"] == "blas"]
    tb = "" if torch is None else f"; torch BLAS {'MKL' if torch.backends.mkl.is_available() else 'other'}"
    return f"CPU {model}, {os.cpu_count()} logical cores; {', '.join(blas) or 'BLAS ?'}{tb}"


def _owner(path: str) -> str:
    """The package a BLAS library ships with, from its path (numpy.libs/..., scipy.libs/...)."""
    for name in ("numpy", "scipy"):
        if f"{name}.libs" in path or f"{os.sep}{name}{os.sep}" in path:
            return {"numpy": "NumPy", "scipy": "SciPy"}[name]
    return os.path.basename(path)


def _qkv(L, Hkv, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, H, L, D))
    k = rng.standard_normal((1, Hkv, L, D))
    v = rng.standard_normal((1, Hkv, L, D))
    return q, k, v, rng.standard_normal((1, H, L, D))


def _t(x, grad=False):
    return torch.from_numpy(x).requires_grad_(grad)


def _sdpa(q, k, v, causal):
    # torch SDPA wants equal head counts unless enable_gqa (top_left causal = bottom_right here: Lq = Lk)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _race(contenders: dict, rounds: int, repeat: int = 1) -> dict:
    """Minimum time of each contender over ``rounds`` rounds, contenders interleaved in each
    round; a contender's turn is ``repeat`` consecutive calls (for millisecond calls: the first
    call after the other contender pays for waking threads and refilling caches, the later
    ones show the steady state a caller in a loop sees)."""
    best = {name: float("inf") for name in contenders}
    for r in range(rounds):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in names:
            for _ in range(repeat):
                best[name] = min(best[name], _timed(contenders[name]))
    return best


# ----------------------------------------------------------------------------
# the contenders of each row


def attention_rows(kind, L, Hkv, causal):
    """{name: callable} for one row; 'refimpl ...' names and 'torch'."""
    q, k, v, do = _qkv(L, Hkv)
    rows = {}
    if kind == "flash_fwd":
        for b in ARGS.blocks:
            rows[f"refimpl b={b}"] = lambda b=b: flash_attention(q, k, v, block_q=b, block_k=b, causal=causal)
        if torch is not None:
            tq, tk, tv = _t(q), _t(k), _t(v)
            rows["torch"] = lambda: _sdpa(tq, tk, tv, causal)
    elif kind == "dense_fwd":
        rows["refimpl"] = lambda: refimpl.attention(q, k, v, causal=causal)
        if torch is not None:
            tq, tk, tv = _t(q), _t(k), _t(v)
            rows["torch"] = lambda: _sdpa(tq, tk, tv, causal)
    else:
        out, lse = refimpl.attention(q, k, v, causal=causal) if L <= 4096 else \
            flash_attention(q, k, v, block_q=512, block_k=512, causal=causal)
        if kind == "flash_bwd":
            for b in ARGS.blocks:
                rows[f"refimpl b={b}"] = lambda b=b: flash_attention_backward(
                    q, k, v, out, lse, do, block_q=b, block_k=b, causal=causal)
        else:
            rows["refimpl"] = lambda: refimpl.attention_backward(q, k, v, do, causal=causal)
        if torch is not None:
            tq, tk, tv = _t(q, True), _t(k, True), _t(v, True)
            tout, tdo = _sdpa(tq, tk, tv, causal), _t(do)
            rows["torch"] = lambda: torch.autograd.grad(tout, (tq, tk, tv), tdo, retain_graph=True)
    rows["gemm"] = _gemm  # the ceiling, raced with the row
    return rows


def _torch_route(z, k, C):
    """GShard-style top-k routing in plain torch: softmax, top-k, k-major cumsum slots, capacity."""
    T, E_ = z.shape
    p = torch.softmax(z, dim=-1)
    w, idx = torch.topk(p, k, dim=-1)
    onehot = F.one_hot(idx.t().reshape(-1), E_)  # k-major order of assignments
    pos = (torch.cumsum(onehot, dim=0) - 1).gather(1, idx.t().reshape(-1, 1)).view(k, T).t()
    kept = pos < C
    return w * kept, idx, torch.where(kept, pos, -1)


def route_rows(T):
    z = np.random.default_rng(0).standard_normal((T, E))
    rule = refimpl.moe.CapacityRule(factor=CF)
    rows = {"refimpl": lambda: route(z, K, capacity=rule)}
    if torch is not None:
        tz, C = _t(z), rule(T, E, K)
        rows["torch"] = lambda: _torch_route(tz, K, C)
    return rows


# ----------------------------------------------------------------------------
# peak memory of one call in a fresh process


def _peak_rss_growth(contender: str, L: int) -> float:
    """Run ``contender`` once at length L in a subprocess; return its peak RSS growth in MiB."""
    cmd = [sys.executable, __file__, "--threads", str(ARGS.threads), "--refimpl", ARGS.refimpl,
           "--_memory", contender, str(L), str(H)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _memory_child(contender: str, L: int) -> None:
    q, k, v, _ = _qkv(L, H)
    if contender == "torch":
        q, k, v = _t(q), _t(k), _t(v)
        fn = lambda: _sdpa(q, k, v, False)  # noqa: E731
    elif contender == "flash":
        fn = lambda: flash_attention(q, k, v, block_q=512, block_k=512)  # noqa: E731
    else:
        fn = lambda: refimpl.attention(q, k, v)  # noqa: E731
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) left by the imports
    rss0 = _status_kib("VmRSS")
    fn()
    print((_status_kib("VmHWM") - rss0) / 1024)


# ----------------------------------------------------------------------------
# main


def _fmt_row(label, best, gflop=None):
    ref = {n: t for n, t in best.items() if n.startswith("refimpl")}
    rname = min(ref, key=ref.get)
    t_ref = ref[rname]
    t_torch = best.get("torch")
    ratio = f"{t_torch / t_ref:6.2f}" if t_torch else "     -"
    ts = f"{t_torch * 1e3:10.1f}" if t_torch else "         -"
    rate = "          -"
    if gflop is not None and "gemm" in best:
        ceiling = 2 * GEMM_N**3 / best["gemm"] / 1e9
        rate = f"{gflop / t_ref:6.1f} {100 * gflop / t_ref / ceiling:3.0f}%"
    return f"{label:<34} {t_ref * 1e3:10.1f} {ts} {ratio} {rate}  {rname}", t_ref, t_torch


def main():
    if ARGS._memory:
        _memory_child(ARGS._memory[0], int(ARGS._memory[1]))
        return
    only = set(ARGS.only or ["flash_fwd", "flash_bwd", "dense_fwd", "dense_bwd", "route"])
    load = os.getloadavg()
    print(f"refimpl vs torch {torch.__version__ if torch else '(not installed)'}, numpy {np.__version__}, "
          f"float64, threads={ARGS.threads}, rounds={ARGS.rounds} (min), load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(machine())
    print(f"refimpl from {os.path.dirname(refimpl.__file__)}")
    print(f"B=1 Hq={H} D={D}; GQA Hkv=2; blocks tried {ARGS.blocks}; route E={E} k={K} capacity factor {CF}")
    head = f"{'row':<34} {'refimpl ms':>10} {'torch ms':>10} {'ratio':>6} {'GFLOP/s gemm%':>11}  best"
    print(head + "\n" + "-" * len(head))
    times, ceiling = {}, 0.0
    for kind in ("flash_fwd", "flash_bwd", "dense_fwd", "dense_bwd"):
        if kind not in only:
            continue
        for L in ARGS.L:
            if kind.startswith("dense") and L > ARGS.dense_max_L:
                continue
            for Hkv, causal in ((H, False), (H, True), (2, False), (2, True)):
                if kind.endswith("bwd") and Hkv != H and ARGS.quick:
                    continue
                label = f"{kind} L={L} {'MHA' if Hkv == H else 'GQA'}{' causal' if causal else ''}"
                best = _race(attention_rows(kind, L, Hkv, causal), ARGS.rounds)
                line, t_ref, t_torch = _fmt_row(label, best, _gflops(kind, L, causal))
                times[(kind, L, Hkv, causal)] = (t_ref, t_torch)
                ceiling = max(ceiling, 2 * GEMM_N**3 / best["gemm"] / 1e9)
                print(line, flush=True)
    if "route" in only:
        for T in ARGS.T:
            line, *_ = _fmt_row(f"route T={T} E={E} k={K}", _race(route_rows(T), max(ARGS.rounds, 10), repeat=10))
            print(line, flush=True)
    for (kind, L, Hkv, causal), (t, t_torch) in sorted(times.items()):
        if causal and (kind, L, Hkv, False) in times:
            base = times[(kind, L, Hkv, False)]
            torch_part = f" (torch {t_torch / base[1]:.2f})" if t_torch and base[1] else ""
            print(f"causal / non-causal time, {kind} L={L} {'MHA' if Hkv == H else 'GQA'}: {t / base[0]:.2f}{torch_part}")
    if ceiling:
        print(f"NumPy float64 GEMM ({GEMM_N}^3) ceiling, best in this run: {ceiling:.1f} GFLOP/s")
    print("ratio = torch time / refimpl time (>= 1: refimpl as fast); gemm% = refimpl GFLOP/s over the GEMM raced in "
          "the same row; times: min over rounds (route: 10 rounds of 10 calls)")
    if ARGS.plot:
        _plot(times)


def _plot(times):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    Ls = sorted({L for (kind, L, Hkv, c) in times if kind == "flash_fwd" and Hkv == H and not c})
    if not Ls:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = {"flash": "C0", "torch": "C1", "dense": "C2"}
    series = {"refimpl flash (fa2)": [times[("flash_fwd", L, H, False)][0] for L in Ls]}
    dense_L = [L for L in Ls if ("dense_fwd", L, H, False) in times]
    if torch is not None:
        series["torch SDPA"] = [times[("flash_fwd", L, H, False)][1] for L in Ls]
    for name, ys in series.items():
        ax1.loglog(Ls, ys, "o-", label=name, color=colors["torch" if name.startswith("torch") else "flash"])
    if dense_L:
        ax1.loglog(dense_L, [times[("dense_fwd", L, H, False)][0] for L in dense_L], "s--", label="refimpl dense",
                   color=colors["dense"])
    ax1.set(xlabel="L", ylabel="forward time, s", title=f"float64, B=1 H={H} D={D}, non-causal")
    ax1.legend(fontsize=8)
    if not ARGS.no_memory:
        mem_L = sorted(set(Ls) | set(dense_L))
        for contender, label, Lmax in (("flash", "refimpl flash (fa2)", max(mem_L)), ("dense", "refimpl dense", ARGS.dense_max_L),
                                       ("torch", "torch SDPA", max(mem_L))):
            if contender == "torch" and torch is None:
                continue
            xs = [L for L in mem_L if L <= Lmax]
            mem = [max(_peak_rss_growth(contender, L), 0.1) for L in xs]
            print(f"peak RSS growth, {label}: " + ", ".join(f"L={L}: {m:.1f} MiB" for L, m in zip(xs, mem)))
            ax2.loglog(xs, mem, "o-" if contender != "dense" else "s--", label=label, color=colors[contender])
        ax2.set(xlabel="L", ylabel="peak RSS growth, MiB", title="one forward call")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ARGS.plot, dpi=80)
    print(f"plot: {ARGS.plot}")


if __name__ == "__main__":
    main()
