"""Memory: the tiled forward and backward use O(L) memory, the dense path O(L^2).

Peak traced memory (tracemalloc; NumPy reports its buffers to it) of one call,
with B = H = 1, D = 4 and 512 x 512 tiles, so the constant part is the handful
of tile-sized temporaries (~10 MiB forward, ~15 MiB backward) and the part
that grows with L is the O(L) output, lse and per-row statistics. Measured
with one thread (``REFIMPL_NUM_THREADS=1``): with n threads, n thread blocks
hold their tile temporaries at once.

* Linear growth: doubling L must add about twice what the previous doubling
  added (increments ratio ~2; a quadratic term would push it towards 4). The
  same measurement on ``refimpl.attention_probs`` shows the ratio 4, so
  the check can tell the two apart.
* At L = 8192 the dense float64 score matrix alone is 8192^2 * 8 B = 512 MiB;
  the tiled peak must stay below 1/20 of it (25.6 MiB).
Figures measured when this was written (forward / backward peak):
L = 1024: 10.33 / 14.41 MiB ... L = 8192: 10.60 / 15.12 MiB; forward increments
40,043 B, 82,872 B, 165,792 B (ratio 2.07, 2.00).
"""

import tracemalloc

import numpy as np
import pytest

import refimpl
from refimpl.flash import flash_attention, flash_attention_backward

BLOCK = 512
D = 4
MiB = 2**20


def _peak(fn):
    """Peak traced bytes allocated while ``fn()`` runs (inputs allocated before are not counted)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


def _qkv(L, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 1, L, D)) for _ in range(3)]


def _tiled_peaks(L):
    q, k, v = _qkv(L)
    fwd, (out, lse) = _peak(lambda: flash_attention(q, k, v, block_q=BLOCK, block_k=BLOCK))
    fa1, _ = _peak(lambda: flash_attention(q, k, v, block_q=BLOCK, block_k=BLOCK, variant="fa1"))
    dout = np.random.default_rng(1).standard_normal(out.shape)
    bwd, _ = _peak(lambda: flash_attention_backward(q, k, v, out, lse, dout, block_q=BLOCK, block_k=BLOCK))
    return {"fa2 forward": fwd, "fa1 forward": fa1, "backward": bwd}


@pytest.fixture(scope="module")
def tiled_peaks():
    # one thread: the memory of the algorithm, one thread block at a time (with n threads, n
    # thread blocks hold their tile temporaries at once, and the peak depends on scheduling)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REFIMPL_NUM_THREADS", "1")
        return {L: _tiled_peaks(L) for L in (1024, 2048, 4096, 8192)}


def _increment_ratios(peaks_by_L):
    Ls = sorted(peaks_by_L)
    inc = [peaks_by_L[b] - peaks_by_L[a] for a, b in zip(Ls, Ls[1:])]
    assert all(i > 0 for i in inc), f"peaks do not grow with L: {peaks_by_L}"
    return [b / a for a, b in zip(inc, inc[1:])]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fa2 forward", "fa1 forward", "backward"])
def test_tiled_peak_grows_linearly_in_L(tiled_peaks, which):
    peaks = {L: p[which] for L, p in tiled_peaks.items()}
    ratios = _increment_ratios(peaks)
    assert all(1.6 <= r <= 2.5 for r in ratios), (
        f"{which}: peak memory {peaks} bytes; increments per doubling of L grow by {ratios} "
        f"(linear: 2, quadratic: 4)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fa2 forward", "fa1 forward", "backward"])
def test_tiled_peak_is_below_a_twentieth_of_the_dense_score_matrix(tiled_peaks, which):
    L = 8192
    dense_scores = L * L * 8  # float64 (L, L) score matrix
    assert dense_scores >= 512 * MiB
    peak = tiled_peaks[L][which]
    assert peak < dense_scores / 20, (
        f"{which} at L={L}: tiled peak {peak / MiB:.1f} MiB is not below 1/20 of the "
        f"{dense_scores / MiB:.0f} MiB dense score matrix"
    )


def test_the_measurement_sees_quadratic_growth_of_the_dense_path():
    """Meta-check: the same measurement on refimpl.attention_probs (which returns the (L, L)
    weights) gives ratio ~4. (``refimpl.attention`` itself forms the scores a chunk of rows
    at a time, about 8 MiB, so at these sizes it too holds one (L, L) array.) One thread, as the
    tiled peaks: with two, the blocks' temporaries overlap or not by scheduling (the ratio read exactly
    3.50 in 3 of 12 runs at L = 256-1024). From L = 512 the (L, L) terms dominate the O(L) ones: one
    thread reads 3.71 (3.50 at L = 256-1024)."""
    peaks = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REFIMPL_NUM_THREADS", "1")
        for L in (512, 1024, 2048):
            q, k, _ = _qkv(L)
            peaks[L], _ = _peak(lambda: refimpl.attention_probs(q, k))
    (ratio,) = _increment_ratios(peaks)
    assert ratio > 3.5, f"dense peaks {peaks}: increment ratio {ratio:.2f}, expected ~4 (quadratic)"
    assert peaks[2048] >= 2048 * 2048 * 8, "the dense path must hold at least one float64 (L, L) array"
