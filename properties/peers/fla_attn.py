"""flash-linear-attention (fla) ``parallel_attn``: a FlashAttention-2 forward and backward written in
Triton (fla/ops/attn/parallel.py), as an attention adapter (kind ``attention``).

Install with ``pip install -e '.[triton]'`` (fla 0.6.0, triton 3.9.0 checked). Without a GPU the
kernels run under Triton's interpreter (``properties.peers.triton_shims``), with one compiled and
unchanged. What the kernel computes, and what the adapter declares for it:

    causal only          parallel_attn has no causal switch (the mask ``o_q >= o_k`` is always applied,
                         parallel_attn_fwd_kernel): capability ``causal`` with ``declines={"causal":
                         {"non_causal"}}``, so every case is drawn causal and the suite lists
                         ``causal=non_causal`` as not drawn
    Lq == Lk             one length T for q, k, v: no ``lq_ne_lk``; ``top_left`` is then the same set
                         of keys as bottom_right (o = 0) and is declared
    window               ``window_size`` W: keys [i - W + 1, i]; the kind's window=(left, right) with
                         causal maps to W = left + 1 (right has no effect once causal hides j > i;
                         left None -> W None). A window always comes with causal: declines
                         ``window_causal`` "without_causal"
    gqa, dv_ne_d, scale  q (B, T, HQ, K), k (B, T, H, K), v (B, T, H, V), ``scale``
    sinks                ``sink_bias`` (HQ,) natural-log logits (the autograd Function scales them by
                         1/ln 2 for the kernel's exp2); a second adapter, ``fla.parallel_attn[float32,sinks]``
                         (forward only), declares them: the kernel adds exp2(sink - m) to the
                         denominator with m the running max of the scores only, which overflows float32
                         once the sink exceeds every score by ~88.7 (128 in base 2): lse +inf (xfail)
    varlen               ``cu_seqlens`` (B = 1; q and k share them)
    lse                  ``parallel_attn_fwd`` (the launcher ``ParallelAttentionFunction.forward``
                         calls) returns it in base 2 (scores times 1/ln 2): lse = ln 2 * lse2
    backward             ``parallel_attn(...)`` then ``.backward(dout)`` (parallel_attn_bwd)

Not declared (never drawn; listed by the runner): softcap, bias, alibi_slopes, dropout, mask arrays
and predicates, key_padding, Lq != Lk. The forward is called through ``parallel_attn_fwd`` (with the
sink scaled as the Function does) to get the lse, the backward through the public ``parallel_attn``.
Tiles: the forward's BT = 128 queries by BS = 32 keys, the backward's BT = 64 by BS = 32 (the sizes
fla picks without Ampere/Hopper shared memory, parallel_attn_fwd / parallel_attn_bwd; a GPU picks
BS = 64 on Hopper), declared as ``tiles=(32, 64)``: lengths 1, 31-33, 63-65, 95-97, 127-129 and
191-193, which cross every 32 and 64 boundary and the forward's 128 one (128 = 2 x 64) at about
half the interpreter time of also drawing 3 x 128 + 1. Head dims 4, 16, 24, 64:
partial and full BK tiles (BK = max(16, next power of 2 of K)). Precision float32 (the interpreter
cannot run bfloat16; its float32 tl.dot is IEEE, a GPU's default TF32: see ``triton_shims``).

Why this kernel and not the other Triton FlashAttentions (checked 2026-12-07):
- flash-attn's ``flash_attn/flash_attn_triton.py`` (Dao-AILab/flash-attention 0251105a) asserts
  fp16/bf16 and ``q.is_cuda`` (flash_attn_func), and its kernels call ``tl.dot(q, k, trans_b=True)``,
  an argument Triton removed in 2.1: under triton 3.9.0 it fails compiled or interpreted
  ("dot() got an unexpected keyword argument 'trans_b'").
- flash-attn's AMD Triton backend ``flash_attn/flash_attn_triton_amd`` left the repository at
  3f94643f (2026-03-12, moved to aiter); its last version calls ``get_arch()`` =
  ``triton.runtime.driver.active.get_current_target()`` on every forward (fwd_prefill.py
  attention_forward_prefill_triton_impl), which has no driver without a GPU.
- The Triton tutorial ``python/tutorials/06-fused-attention.py`` (triton-lang/triton 003da478)
  reads ``triton.runtime.driver.active.get_active_torch_device()`` at import, loads unmasked block
  pointers (N_CTX must be a multiple of BLOCK_M = 128 and BLOCK_N), casts P to float16 in the
  forward and the backward, and has no GQA, lse output or Lq != Lk: a teaching kernel, not one
  people run.
fla's parallel_attn runs unchanged under the interpreter, masks partial tiles, and is what fla's
attention layers call.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..attention_impls import AttentionAdapter
from ._common import make, require, version
from .triton_shims import setup as triton_setup

TILES = (32, 64)  # BS, and the backward's BT; the forward's BT = 128 = 2 x 64 is crossed too
HEAD_DIMS = (4, 16, 24, 64)
CAPABILITIES = frozenset({"causal", "top_left", "window", "gqa", "dv_ne_d", "scale", "varlen", "lse", "backward"})
#: the sink adapter: sinks on the causal forward only (the kind's backward never passes sinks), kept apart
#: so that its known deviation (properties/peers/xfail.json) does not hide the other cases' verdicts
SINK_CAPABILITIES = frozenset({"causal", "top_left", "gqa", "scale", "sinks", "lse"})
DECLINES = {"causal": {"non_causal"}, "window_causal": {"without_causal"}}


def _window_size(window):
    """The kind's window=(left, right) under causal -> fla's window_size (keys [i - W + 1, i])."""
    if window is None or window[0] is None:
        return None
    return int(window[0]) + 1


def _to(torch, x, grad=False):
    """(B, H, L, D) float64 -> contiguous (B, L, H, D) float32 tensor (a copy)."""
    return torch.tensor(np.ascontiguousarray(np.swapaxes(np.asarray(x), 1, 2)), dtype=torch.float32,
                        requires_grad=grad)


def _back(t):
    return np.swapaxes(t.detach().double().numpy(), 1, 2).copy()


def fla_attention():
    """fla's parallel_attn (Triton FlashAttention-2 forward and backward; causal only)."""
    triton_setup()  # before triton is imported: TRITON_INTERPRET=1 when no GPU
    with warnings.catch_warnings():  # "Triton is not supported on current platform, roll back to CPU"
        warnings.simplefilter("ignore")
        fla = require("fla", extra="triton")
        from fla.ops.attn.parallel import parallel_attn, parallel_attn_fwd
        from fla.ops.utils.constant import RCP_LN2
    torch = require("torch")

    def args(q, kw):
        D = np.shape(q)[-1]
        scale = float(kw["scale"]) if kw.get("scale") is not None else D ** -0.5
        cu = kw.get("cu_seqlens_q")
        if cu is not None and not np.array_equal(cu, kw.get("cu_seqlens_k")):
            raise ValueError("cu_seqlens_q, cu_seqlens_k: expected equal offsets (fla parallel_attn; lq_ne_lk is not "
                             f"declared), got {np.asarray(cu).tolist()} and {np.asarray(kw.get('cu_seqlens_k')).tolist()}")
        cu = None if cu is None else torch.tensor(np.asarray(cu), dtype=torch.int64)
        sinks = kw.get("sinks")
        sinks = None if sinks is None else torch.tensor(np.asarray(sinks, dtype=np.float64), dtype=torch.float32)
        return scale, _window_size(kw.get("window")), cu, sinks

    def forward(q, k, v, **kw):
        scale, W, cu, sinks = args(q, kw)
        with torch.no_grad():
            o, lse2 = parallel_attn_fwd(_to(torch, q), _to(torch, k), _to(torch, v), None,
                                        None if sinks is None else sinks * RCP_LN2, scale, W, cu)
        return _back(o), np.swapaxes(lse2.double().numpy(), 1, 2) * math.log(2.0)

    def backward(q, k, v, dout, **kw):
        scale, W, cu, sinks = args(q, kw)
        tq, tk, tv = _to(torch, q, True), _to(torch, k, True), _to(torch, v, True)
        parallel_attn(tq, tk, tv, scale=scale, window_size=W, cu_seqlens=cu, sink_bias=sinks).backward(
            _to(torch, dout))
        return _back(tq.grad), _back(tk.grad), _back(tv.grad)

    lib = f"fla {version(fla)} (triton {version(require('triton'))})"
    common = dict(forward=forward, declines=DECLINES, precision="float32", tiles=TILES, head_dims=HEAD_DIMS,
                  preset="refimpl.attention (causal)", library=lib)
    return [make(AttentionAdapter, name="fla.parallel_attn[float32]", backward=backward, capabilities=CAPABILITIES,
                 **common),
            make(AttentionAdapter, name="fla.parallel_attn[float32,sinks]", capabilities=SINK_CAPABILITIES, **common)]
