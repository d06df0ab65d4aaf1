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

from refimpl import validation as _V

from .attention_problem import Problem, exp_shift as _exp_shift, merge_heads as _merge_heads

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
    st = Problem(q, k, v, dict(mask=mask, causal=causal, align=align, window=window, scale=scale, softcap=softcap,
                               bias=bias))  # the spec's arguments, the scores computed here
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
            if not st.trivial:
                rows = slice(q0, q0 + 1) if bug == "skip_by_first_row" else qs
                if not st.visible_tile(rows, ks).any():
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



# ----------------------------------------------------------------------------
# a low-precision backward, as flash-attn's kernel computes it


def lowp_attention_backward(q, k, v, dout, *, precision="float32", bug=None, mask=None, causal=False,
                            align="bottom_right", window=None, scale=None, softcap=None, bias=None):
    """FA2's backward in ``precision`` from the saved (out, lse) of ``tiled_attention``:
    inputs in the precision, scores, P = exp(S - lse), dP, D = rowsum(dO * O) and dS in float32,
    P and dS rounded to the precision before their GEMMs (flash-attn's ``flash_bwd_kernel.h``
    converts both to the input type), every GEMM accumulated in float32, dq, dk, dv rounded to
    the precision at the end. ``bug``: "no_D" (dS = P dP: the rowsum(dO * O) term dropped),
    "no_softcap_grad" (tanh' forgotten), "dtanh_one_minus_t" (tanh' taken as 1 - t, not 1 - t^2),
    "dk_one_head" (dk, dv from the first head of each group).
    """
    from refimpl.sdpa import AttentionMask

    f, io = np.float32, numpy_dtype(precision)

    def r(x):  # to the precision, held in float32
        return np.asarray(x, f).astype(io).astype(f)

    out, lse = tiled_attention(q, k, v, precision=precision, mask=mask, causal=causal, align=align, window=window,
                               scale=scale, softcap=softcap, bias=bias)
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    sc = f(1.0 / np.sqrt(D) if scale is None else scale)
    Q, dO, O = r(q), r(dout), r(out)
    K, V = r(np.repeat(k, G, axis=1)), r(np.repeat(v, G, axis=1))
    raw = (Q @ np.swapaxes(K, -1, -2)) * sc
    s = raw if softcap is None else f(softcap) * np.tanh(raw / f(softcap))
    vis = np.broadcast_to(AttentionMask(mask, causal, align, window, (B, Hq, Lq, Lk)).tile(slice(None), slice(None)),
                          (B, Hq, Lq, Lk))
    if bias is not None:
        s = s + np.asarray(np.where(np.isfinite(bias), bias, 0.0), f)
        vis = vis & np.isfinite(bias)
    L = np.asarray(lse, f)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        P = np.where(vis & np.isfinite(L), np.exp(s - np.where(np.isfinite(L), L, f(0))), f(0))
    dV = np.swapaxes(r(P), -1, -2) @ dO
    dP = dO @ np.swapaxes(V, -1, -2)
    Drow = f(0) if bug == "no_D" else np.sum(dO * O, axis=-1, keepdims=True, dtype=f)
    dS = P * (dP - Drow)
    if softcap is not None and bug != "no_softcap_grad":
        t = np.tanh(raw / f(softcap))
        dS = dS * (f(1) - t if bug == "dtanh_one_minus_t" else f(1) - t * t)
    dS = r(dS)
    dq = (dS @ K) * sc
    dK = (np.swapaxes(dS, -1, -2) @ Q) * sc
    grouped = (lambda x: x.reshape(B, Hkv, G, Lk, -1)[:, :, 0]) if bug == "dk_one_head" else \
        (lambda x: x.reshape(B, Hkv, G, Lk, -1).sum(axis=2, dtype=f))
    return tuple(r(x).astype(np.float64) for x in (dq, grouped(dK), grouped(dV)))


def lowp_backward_adapter(precision="float32", bug=None) -> AttentionAdapter:
    """``tiled_attention`` and ``lowp_attention_backward`` in ``precision`` as an attention adapter."""
    name = f"properties.tiled.lowp_attention_backward[{precision}]" + (f"[bug={bug}]" if bug else "")
    return AttentionAdapter(
        name=name, forward=lambda q, k, v, **kw: tiled_attention(q, k, v, precision=precision, **kw),
        backward=lambda q, k, v, do, **kw: lowp_attention_backward(q, k, v, do, precision=precision, bug=bug, **kw),
        capabilities=BASE_CAPS - {"dropout"}, precision=precision)


BACKWARD_BUGS = ("no_D", "no_softcap_grad", "dtanh_one_minus_t", "dk_one_head")



#: a correct float32 and bfloat16 attention forward + backward (README: "Attention backward in low precision")
LOWP_BACKWARD = [lowp_backward_adapter("float32"), lowp_backward_adapter("bfloat16")]
#: the same with the rowsum(dO * O) term dropped
LOWP_BACKWARD_WRONG = [lowp_backward_adapter("float32", "no_D"), lowp_backward_adapter("bfloat16", "no_D")]

__all__ = ["CORRECT", "WRONG", "tiled_attention", "tiled_adapter", "lowp_attention_backward", "lowp_backward_adapter",
           "LOWP_BACKWARD", "LOWP_BACKWARD_WRONG",
           "BACKWARD_BUGS"]
