"""The per-tile device code the tiled attention kernels share, in the neutral dialect (``gpu.dialect``).

The C twins of ``gpu.tile_numba`` (whose docstring gives the formulas), as text a kernel body
includes after its compile-time constants and before its kernels:

  SCORE_FUNCTIONS     tile_score (scale <q_r, k_c>, float32 in d order), softcapped, softcap_slope
                      (sech^2, the backward's chain factor), in_band (the causal/window band);
                      needs DMAX. Used by gpu.attention_c, gpu.split_kv_c, gpu.paged_c and
                      gpu.attention_backward_c.
  SOFTMAX_FUNCTIONS   online_softmax_tile: one key tile's update of a query row's running state
                      (m, l, acc), with the block barrier between the writes of P and the reads of
                      its row; needs BC, DVMAX, ACC. Used by the three forward kernels.

Each function does the operations of the inlined code it replaced, in the same order (DEVICE_FN
inlines it), so the results are those of the kernels before the factoring. A mutant's C edit
(``gpu.mutants``) applies to the kernel's whole text, these functions included.
"""

from __future__ import annotations

SCORE_FUNCTIONS = r"""
/* ---- shared per-tile device code (gpu/tile_c.py): scores ---- */
/* scale * <Qs[r], Ks[c]>, summed in float32 over d = 0, 1, ..., D - 1 (rows of DMAX floats) */
DEVICE_FN float tile_score(SHARED_PTR const float* Qs, SHARED_PTR const float* Ks, int r, int c, int D, float scale)
{
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += Qs[r * DMAX + d] * Ks[c * DMAX + d];
    return s * scale;
}

/* softcap * tanh(s / softcap), or s when softcap is 0 (off) */
DEVICE_FN float softcapped(float s, float softcap)
{
    if (softcap > 0.0f) s = softcap * TANHF(s / softcap);
    return s;
}

/* d softcapped(s) / d s = sech^2(s / softcap) = 1 / cosh^2 (1 when softcap is 0) */
DEVICE_FN float softcap_slope(float s, float softcap)
{
    float tp = 1.0f;
    if (softcap > 0.0f) {
        const float ch = COSHF(s / softcap);
        tp = 1.0f / (ch * ch);
    }
    return tp;
}

/* key j inside query i's band [i + offset - left, i + offset + right] */
DEVICE_FN int in_band(int i, int j, int offset, int left, int right)
{
    return j >= i + offset - left && j <= i + offset + right;
}
"""

SOFTMAX_FUNCTIONS = r"""
/* ---- shared per-tile device code (gpu/tile_c.py): the online softmax ---- */
/* one key tile's update of query row r's running state (m, *l, acc[ACC]; columns c, c + BC, ...),
   replicated on the BC threads of the row; S holds the tile's scores (-inf where hidden); returns
   the new m. Every thread of the block calls it (a barrier between the writes of P and the reads) */
DEVICE_FN float online_softmax_tile(SHARED_PTR const float* S, SHARED_PTR float* P, SHARED_PTR const float* Vs,
                                    float* acc, int r, int c, float m, float* l, int Dv)
{
    float m_tile = NEG_INF;
    for (int cc = 0; cc < BC; ++cc) m_tile = FMAXF(m_tile, S[r * BC + cc]);
    const float m_new = FMAXF(m, m_tile);
    float alpha;
    if (m_new == NEG_INF) { /* nothing visible so far: keep (m, l, acc) = (-inf, 0, 0) */
        alpha = 1.0f;
        P[r * BC + c] = 0.0f;
    } else {
        alpha = EXPF(m - m_new);
        P[r * BC + c] = EXPF(S[r * BC + c] - m_new);
    }
    BARRIER();

    float row_sum = 0.0f;
    for (int cc = 0; cc < BC; ++cc) row_sum += P[r * BC + cc];
    *l = alpha * *l + row_sum;
    for (int a = 0; a < ACC; ++a) {
        const int col = c + a * BC;
        if (col < Dv) {
            float pv = 0.0f;
            for (int cc = 0; cc < BC; ++cc) pv += P[r * BC + cc] * Vs[cc * DVMAX + col];
            acc[a] = alpha * acc[a] + pv;
        }
    }
    return m_new;
}
"""
