"""Dense refimpl.attention versus tiled refimpl.flash_attention: time and peak memory, side by side.

    python benchmarks/flash_vs_dense.py                      # L = 1024 .. 8192, float64 and float32
    python benchmarks/flash_vs_dense.py --L 512 1024 --D 32 --block 128 --causal

Both are the NumPy specification (they compute in float64 whatever the input
dtype; float32 inputs are converted on entry), so this measures the cost of
forming the scores of whole rows (the dense path takes about 8 MiB of rows at
a time) versus streaming tiles with the online softmax, not a GPU kernel. Time
is the best of ``--repeat`` runs (perf_counter); peak memory is the peak of
memory traced by tracemalloc during one more run (NumPy reports its buffers to
tracemalloc), inputs excluded. B = H = 1 unless given. Not a test: nothing is
asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import refimpl
from refimpl.flash import flash_attention

MiB = 2**20


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="sequence lengths (Lq = Lk)")
    ap.add_argument("--D", type=int, default=64, help="head dimension (D = Dv)")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=1)
    ap.add_argument("--block", type=int, default=256, help="block_q = block_k of the tiled path")
    ap.add_argument("--variant", default="fa2", choices=["fa1", "fa2"])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    print(f"B={args.B} H={args.H} D={args.D} block={args.block} variant={args.variant} causal={args.causal} "
          f"(numpy {np.__version__}; time = best of {args.repeat}; peak = tracemalloc)")
    head = (f"{'dtype':>8} {'L':>6} | {'dense s':>9} {'dense MiB':>10} | {'flash s':>9} {'flash MiB':>10} | "
            f"{'time x':>7} {'mem /':>8} | {'S f64 MiB':>9} {'max|diff|':>9}")
    print(head)
    print("-" * len(head))
    for dtype in args.dtypes:
        for L in args.L:
            rng = np.random.default_rng(0)
            q = rng.standard_normal((args.B, args.H, L, args.D)).astype(dtype)
            k = rng.standard_normal((args.B, args.H, L, args.D)).astype(dtype)
            v = rng.standard_normal((args.B, args.H, L, args.D)).astype(dtype)

            def dense():
                return refimpl.attention(q, k, v, causal=args.causal)

            def tiled():
                return flash_attention(q, k, v, block_q=args.block, block_k=args.block, variant=args.variant, causal=args.causal)

            t_dense, t_flash = _best_time(dense, args.repeat), _best_time(tiled, args.repeat)
            m_dense, m_flash = _peak_bytes(dense), _peak_bytes(tiled)
            diff = float(np.max(np.abs(dense()[0] - tiled()[0])))
            S = args.B * args.H * L * L * 8 / MiB
            print(f"{dtype:>8} {L:>6} | {t_dense:>9.2f} {m_dense / MiB:>10.1f} | {t_flash:>9.2f} {m_flash / MiB:>10.1f} | "
                  f"{t_flash / t_dense:>7.2f} {m_dense / m_flash:>8.1f} | {S:>9.0f} {diff:>9.1e}", flush=True)
    print("time x = flash time / dense time; mem / = dense peak / flash peak; "
          "S f64 MiB = size of one float64 (L, L) score matrix; max|diff| = max |out_dense - out_flash|")


if __name__ == "__main__":
    main()
