"""A tiled attention at a kernel's own scale (64 x 64 tiles), in float64 and in
bfloat16 arithmetic, and its cross-tile mistakes.

The FA2 forward loop (refimpl/flash.py states it; Dao 2023, Algorithm 1), one
query tile at a time, key tiles inner:

    m = -inf, l = 0, acc = 0
    for each key tile j (skipped if the mask hides it for every row of the query tile):
        S     = scores of the tile (scaled, softcapped, biased, masked)
        m_new = max(m, rowmax(S))
        P     = exp(S - m_new)
        alpha = exp(m - m_new)
        l     = alpha l + rowsum(P)
        acc   = alpha acc + P V_j
        m     = m_new
    out = acc / l,  lse = m + log l

``precision="bfloat16"`` runs it as a bf16 kernel does: inputs in bf16, scores,
m, l and acc in float32, P rounded to bf16 for the P V product (flash-attn's
``flash_fwd_kernel.h`` converts P to the input type before the second GEMM),
the output rounded to bf16, lse kept in float32.

The adapters (``CORRECT``; run them with ``REFIMPL_IMPLS=properties.tiled:CORRECT``)
declare ``tiles=(64,)``, so the strategies draw lengths
1, 63, 64, 65, 127, 128, 129, 191, 192, 193 (``properties.sizes``): more than one
key tile, partial last tiles, tile skipping at those sizes. The wrong variants
(``WRONG``) each make one cross-tile mistake that never shows with one tile:

    tile64_no_rescale          acc not multiplied by alpha when the running max grows
    tile64_drop_last_partial   key loop over whole tiles only: a partial last tile is dropped
    tile64_stale_max           m not stored after a tile: later tiles rescale from the first tile's max
    tile64_lse_last_tile       lse from the last key tile's m and rowsum only (out is right)
    tile64_skip_by_first_row   a key tile skipped when the query tile's first row cannot see it
                               (causal/window/mask tile skipping one tile too eagerly)
    bf16_tile64_no_rescale, bf16_tile64_drop_last_partial, bf16_tile64_lse_last_tile
                               the same mistakes in the bfloat16 kernel
"""

from __future__ import annotations


import numpy as np

from refimpl import _validate as _V
from refimpl.sdpa import _merge_heads, _Setup
from refimpl.softmax import _exp_shift

from .attention_cases import BASE_CAPS
from .attention_impls import AttentionAdapter
from .tolerance import UNIT_ROUNDOFF, numpy_dtype

TILE = 64
#: the mistakes ``bug`` can inject (each rejected by a property: tests/test_tile_scale.py)
BUGS = ("drop_last_partial", "lse_last_tile", "no_rescale", "skip_by_first_row")
#: what the tiled adapters implement: every forward feature (no dropout, no backward)
TILED_CAPS = BASE_CAPS - {"dropout", "backward"}


def tiled_attention(q, k, v, *, tile=TILE, precision="float64", bug=None, mask=None, causal=False,
                    align="bottom_right", window=None, scale=None, softcap=None, bias=None):
    """The FA2 loop above with square ``tile`` x ``tile`` tiles; ``bug`` injects one mistake."""
    tile = _V.count(tile, "tile", minimum=1)  # a bool is not a tile size; 0 or -1 would skip every tile
    _V.choice(precision, "precision", tuple(UNIT_ROUNDOFF))
    if bug is not None:
        _V.choice(bug, "bug", BUGS)
    st = _Setup(q, k, v, mask, causal, align, window, scale, softcap, bias, None, 0.0)
    lowp = precision != "float64"
    acc_t = np.float32 if lowp else np.float64
    io = numpy_dtype(precision)

    def acc(x):  # a value held in the accumulator type
        return np.asarray(x, dtype=acc_t).astype(np.float64)

    B, Hkv, G, Lq, Lk, Dv = st.B, st.Hkv, st.G, st.Lq, st.Lk, st.Dv
    out = np.zeros((B, Hkv, G, Lq, Dv))
    lse = np.full((B, Hkv, G, Lq), -np.inf)
    k_stop = Lk - Lk % tile if bug == "drop_last_partial" else Lk
    for q0 in range(0, Lq, tile):
        qs = slice(q0, min(q0 + tile, Lq))
        m = np.full((B, Hkv, G, qs.stop - q0), -np.inf)
        l = np.zeros_like(m)
        a = np.zeros(m.shape + (Dv,))
        l_tile = np.zeros_like(m)
        m_tile = np.full_like(m, -np.inf)
        for k0 in range(0, k_stop, tile):
            ks = slice(k0, min(k0 + tile, Lk))
            if not st.mask.trivial:
                rows = slice(q0, q0 + 1) if bug == "skip_by_first_row" else qs
                if not st.mask.tile(rows, ks).any():
                    continue
            S = acc(st.scores(qs, ks)[0])
            m_new = np.maximum(m, S.max(axis=-1))
            P = acc(_exp_shift(S, m_new[..., None]))
            alpha = acc(_exp_shift(m, m_new))
            l = acc(alpha * l + P.sum(axis=-1))
            Pv = P.astype(io).astype(np.float64) if lowp else P
            a = acc((1.0 if bug == "no_rescale" else alpha[..., None]) * a
                    + np.einsum("bhgqk,bhkd->bhgqd", Pv, st.kv(ks)[1]))
            l_tile, m_tile = P.sum(axis=-1), m_new
            if bug != "stale_max":
                m = m_new
            elif np.isneginf(m).all():
                m = m_new  # the first tile does set it
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., qs, :] = np.where(l[..., None] > 0, a / np.where(l > 0, l, 1.0)[..., None], 0.0)
            if bug == "lse_last_tile":
                m, l = m_tile, l_tile
            lse[..., qs] = np.where(l > 0, m + np.log(np.where(l > 0, l, 1.0)), -np.inf)
    out = _merge_heads(out)
    if lowp:
        out = out.astype(io).astype(np.float64)
        lse = acc(lse)
    return out, _merge_heads(lse)


def tiled_adapter(precision="float64", bug=None) -> AttentionAdapter:
    tag = "" if precision == "float64" else f",{precision}"
    name = f"properties.tiled_attention[{TILE}x{TILE}{tag}]" + (f"[bug={bug}]" if bug else "")

    def forward(q, k, v, **kw):
        return tiled_attention(q, k, v, precision=precision, bug=bug, **kw)

    return AttentionAdapter(name=name, forward=forward, capabilities=TILED_CAPS, precision=precision,
                            tiles=(TILE,), head_dims=(8, 64), tiling=(TILE, 1) if precision == "float64" else None)


BUGS = ("no_rescale", "drop_last_partial", "stale_max", "lse_last_tile", "skip_by_first_row")
BF16_BUGS = ("no_rescale", "drop_last_partial", "lse_last_tile")

#: correct 64 x 64 tiled adapters, float64 and bfloat16 (not in the default bundled run:
#: lengths up to 193 cost time; tests/test_tile_scale.py runs them on fewer examples)
CORRECT = [tiled_adapter("float64"), tiled_adapter("bfloat16")]
WRONG = {
    **{f"tile64_{b}": tiled_adapter("float64", b) for b in BUGS},
    **{f"bf16_tile64_{b}": tiled_adapter("bfloat16", b) for b in BF16_BUGS},
}

__all__ = ["CORRECT", "WRONG", "tiled_attention", "tiled_adapter"]
