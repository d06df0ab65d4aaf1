"""FlashAttention-2 backward: gradients recomputed tile by tile from (out, lse).

Backward (Dao 2023, Algorithm 2; flash-attn ``flash_bwd_preprocess_kernel.h::
compute_dot_do_o`` for D, ``flash_bwd_kernel.h`` for the loop). Scores and
probabilities are recomputed tile by tile from the saved lse:

    D_i  = rowsum(dO_i * O_i)                                   (preprocessing pass)
    for each key tile j:  dK_j = dV_j = 0                       (on chip)
        for each query tile i:
            P    = exp(S_ij - lse_i)                            (0 where hidden, 0 if lse_i = -inf)
            dV_j += (P * Z)^T dO_i
            dP   = (dO_i V_j^T) * Z
            dS   = P * (dP - D_i),  times (1 - tanh^2(R / c)) with softcap c
            dQ_i += scale dS K_j                                (read-modify-write in slow memory)
            dK_j += scale dS^T Q_i
        write dK_j, dV_j

Every tile, mask, dropout and softcap convention, the slow-memory counts and
the threads are those of ``refimpl.flash`` (see its docstring): the (batch, kv
head) pairs run concurrently, each with its own thread-block counters, and
the sums of their counts equal one pass over all heads at once. Tiles are
skipped by the whole problem's mask, as in the forward.
"""

from __future__ import annotations

import numpy as np

from ._exp import exp
from ._parallel import map_blocks
from ._problem import _exponent, _fold, _merge_heads, _real_4d, _split_heads
from ._validate import as_float_array, same_shape
from ._tiled import _check_flag, _pv, _setup, _SlowMemory, _tiles, _TiledSetup
from ._problem import _grads_back_to_scale, _softcap_grad, _unit_scaled


def _tn(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """A^T X summed over the group: (B, Hkv, G, nq, nk), (B, Hkv, G, nq, d) -> (B, Hkv, nk, d)."""
    return np.matmul(_fold(A).swapaxes(-1, -2), _fold(X))


def flash_attention_backward(
    q,
    k,
    v,
    out,
    lse,
    dout,
    *,
    block_q,
    block_k,
    mask=None,
    causal=False,
    align="bottom_right",
    window=None,
    scale=None,
    softcap=None,
    bias=None,
    dropout_mask=None,
    dropout_p=0.0,
    skip_masked_tiles=True,
    return_stats=False,
):
    """FA2 backward: (dq, dk, dv) of ``sum(dout * out)``, recomputing scores tile by tile.

    ``out`` (B, Hq, Lq, Dv) and ``lse`` (B, Hq, Lq) are the forward's results
    (``flash_attention`` or ``refimpl.attention``; -inf in lse marks a fully
    masked row); the keywords must be those the forward used. The gradient
    formulas are ``refimpl.attention_backward``'s, with P recomputed as
    exp(S - lse) and D = rowsum(dout * out) (see the module docstring). Key
    tiles outer: dK_j, dV_j accumulate on chip and are written once; dQ_i is
    read, updated and written back in slow memory at every step. Never
    materialises an (Lq, Lk) array. ``return_stats=True`` returns
    ((dq, dk, dv), FlashStats).
    """
    skip = _check_flag(skip_masked_tiles, "skip_masked_tiles")
    _check_flag(return_stats, "return_stats")
    st = _setup(q, k, v, block_q, block_k, dict(
        mask=mask, causal=causal, align=align, window=window, scale=scale, softcap=softcap,
        bias=bias, dropout_mask=dropout_mask, dropout_p=dropout_p))
    B, Hq, Hkv, Lq, Lk, D, Dv = st.B, st.Hq, st.Hkv, st.Lq, st.Lk, st.D, st.Dv
    out, dout = _real_4d(out, "out"), _real_4d(dout, "dout")
    for name, arr in (("out", out), ("dout", dout)):
        same_shape(arr, (B, Hq, Lq, Dv), name)
    lse = as_float_array(lse, "lse", allow_neg_inf=True)
    same_shape(lse, (B, Hq, Lq), "lse")
    # out and dout / 2^e (exact; see refimpl._problem._unit_scaled): no intermediate overflows
    dout, e_do = _unit_scaled(dout)
    out, e_v = np.ldexp(out, -_exponent(st.v)), _exponent(st.v)
    V_all = np.ldexp(st.v, -e_v)
    O5, dO5, lse5 = _split_heads(out, Hkv), _split_heads(dout, Hkv), _split_heads(lse, Hkv)
    q_tiles, k_tiles = _tiles(0, Lq, block_q), _tiles(0, Lk, block_k)
    # a tile is skipped when hidden for every batch entry and head (the stats count tiles so)
    hidden = {(i, j) for j, ks in enumerate(k_tiles) for i, qs in enumerate(q_tiles) if skip and st.hidden(qs, ks)}
    dq = np.zeros((B, Hkv, st.G, Lq, D))
    dk, dv = np.zeros((B, Hkv, Lk, D)), np.zeros((B, Hkv, Lk, Dv))

    def unit(bh):  # one (batch entry, kv head): the loops below for its G query heads alone
        b, h = bh
        u, sl = st.unit(b, h), (slice(b, b + 1), slice(h, h + 1))
        u.memory = _SlowMemory()
        # an out or lse that is not the forward of q, k, v can overflow exp(S - lse) into inf and
        # NaN: no warning here, the check below raises a ValueError naming them
        with np.errstate(over="ignore", invalid="ignore"):
            _backward_unit(u, O5[sl], dO5[sl], lse5[sl], V_all[sl], dq[sl], dk[sl], dv[sl], q_tiles, k_tiles, hidden)
        return u.memory

    # the loads of the units add up to those of one pass over all heads (a tile of every head at once)
    for mem in map_blocks(unit, [(b, h) for b in range(B) for h in range(Hkv)],
                          work=B * Hq * Lq * Lk * (3 * D + 2 * Dv)):
        st.memory.absorb(mem)
    # out and lse not the forward of q, k, v make P = exp(S - lse) > 1 and can overflow too
    grads = _grads_back_to_scale(_merge_heads(dq), dk, dv, e_do, e_v, culprits="dout, v, out, lse")
    if return_stats:
        return grads, st.stats((len(q_tiles), len(k_tiles)), len(hidden))
    return grads


def _backward_unit(st: _TiledSetup, O5, dO5, lse5, V_all, dq, dk, dv, q_tiles, k_tiles, hidden) -> None:
    """The FA2 backward loops (module docstring) for one batch entry and kv head (B = Hkv = 1),
    tiles in ``hidden`` skipped; dq, dk, dv (views of the results) are written in place."""
    mem = st.memory
    # preprocessing (compute_dot_do_o): D_i = rowsum(dO_i * O_i), one pass over query tiles
    Dsum = np.zeros(lse5.shape)
    for qs in q_tiles:
        mem.new_block()
        dO_i, O_i = mem.load("dO", qs, dO5[..., qs, :]), mem.load("O", qs, O5[..., qs, :])
        Dsum[..., qs] = mem.store("D", np.sum(dO_i * O_i, axis=-1))
    # P = exp(S - lse): a row with lse = -inf (fully masked) has every S = -inf and P = 0;
    # reading its lse as +inf keeps P = 0 even for scores that are not -inf
    L_shift = np.where(np.isneginf(lse5), np.inf, lse5)

    mem.store("dQ", dq)  # initialised to 0 in slow memory
    for j, ks in enumerate(k_tiles):  # one thread block per key tile
        mem.new_block()
        dK_j = np.zeros((1, 1, ks.stop - ks.start, st.D))
        dV_j = np.zeros((1, 1, ks.stop - ks.start, st.Dv))
        for i, qs in enumerate(q_tiles):
            if (i, j) in hidden:
                continue
            Q_i, K, _ = st.load(mem, qs, ks)  # K_j, V_j once per thread block
            S, R = st.scores_of(Q_i, K, qs, ks)
            V = V_all[:, :, ks]
            dO_i = mem.load("dO", qs, dO5[..., qs, :])
            L_i = mem.load("lse", qs, L_shift[..., qs])[..., None]
            D_i = mem.load("D", qs, Dsum[..., qs])[..., None]
            P = exp(np.subtract(S, L_i, out=S), out=S)  # P = exp(S - lse)
            Z = st.dropout_scale(qs, ks)
            dV_j += _tn(P if Z is None else P * Z, dO_i)  # dV_j += (P * Z)^T dO_i
            dP = np.matmul(_fold(dO_i), V.swapaxes(-1, -2)).reshape(P.shape)  # dP = dO_i V_j^T
            if Z is not None:
                dP *= Z
            dS = np.multiply(P, np.subtract(dP, D_i, out=dP), out=dP)  # dS = P * (dP - D_i)
            if st.softcap is not None:
                dS *= _softcap_grad(R, st.softcap)
            dQ_i = mem.load("dQ", qs, dq[..., qs, :]) + st.scale * _pv(dS, K)  # dQ_i += scale dS K_j
            dq[..., qs, :] = mem.store("dQ", dQ_i)
            dK_j += st.scale * _tn(dS, Q_i)  # dK_j += scale dS^T Q_i
            del S, R, P, dP, dS  # one tile of each alive at a time
        dk[:, :, ks] = mem.store("dK", dK_j)
        dv[:, :, ks] = mem.store("dV", dV_j)
