"""Properties of transformer blocks and stacks (kind "block"), against the unrolled
composition of refimpl's pieces (refimpl.mha.multi_head_attention, refimpl.ffn, the norms).

Adapter: ``stack(x (B, L, d), blocks: list of refimpl.block.Block, arrangement, causal,
memory, parallel_scale, final_norm) -> (B, L, d)``. Capabilities: "parallel" (the parallel
attention + FFN arrangement), "cross_attention" (decoder blocks attending to ``memory``).

Tolerance: a different but exact-in-math order of the same float64 operations. Each layer's
matmuls and reductions have at most d + d_ff + L + 4 terms; a norm multiplies an absolute
error by at most r = 1 / rms of its input. With m the largest |h| and R the largest r seen
in the unrolled pass, the error after n layers is below 64 n (d + d_ff + L + 4) u (1 + m) R^n
(R is about 1 for these well-scaled cases, so the bound stays near 1e-12).

Precision (``properties.precision``): x, memory and every parameter are drawn representable in
the adapter's precision; lower precisions are held to 2x the error of ``naive_stack`` (the
same unrolled stack computed naively in the precision: projections and FFN matmuls
accumulated in float32 and rounded, the naive attention of ``properties.tolerance``
(``float32_naive_attention`` / ``lowp_naive_attention``), the naive norms of
``properties.norms``, each residual add rounded) plus ``precision.layer_floor`` (the bound
above at u = u32, plus 4 u_p |y|); the decoder's causality invariant by
``precision.invariant_bound``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from refimpl import block as Bk
from refimpl import ffn as Fn
from refimpl.mha import multi_head_attention

from . import ffn_naive as _ffn_naive
from . import norms_naive as _norms_naive
from .core import Property
from .precision import compare_layer, invariant_bound, naive_ops, precision_of, round_inputs
from .protocol import Capability, Kind
from .tolerance import U64, compare_close, float32_naive_attention, lowp_naive_attention
from .strategy_cache import sampled

KINDS = (
    Kind("block", "residual blocks and stacks; compared with the unrolled composition of refimpl's pieces",
         {"stack": "stack(x (B, L, d), blocks: [refimpl.block.Block], arrangement: 'pre_norm' | 'post_norm' | "
                   "'parallel', causal: bool, memory (B, L_enc, d) | None, parallel_scale: float, "
                   "final_norm: refimpl.block.Norm | None) -> (B, L, d). x, memory float64. Block (refimpl.block): "
                   "attn Attention (W_q (d, H hd), W_k, W_v (d, Hkv hd), W_o (H hd, d), num_heads, num_kv_heads; no "
                   "biases; head h reads kv head h // (H / Hkv); RoPE none), ffn refimpl.ffn.MLPParams (W1 (d, d_ff), "
                   "W2 (d_ff, d), optional b1, b2) or GLUParams (W_gate, W_up (d, d_ff), W_down (d_ff, d)), "
                   "activation a name in refimpl.ffn.ACTIVATIONS, norm1, norm2 (None in the parallel arrangement), "
                   "cross_attn and norm_cross (both or neither: a decoder block). Norm: weight (d,), bias (d,) | None, "
                   "kind 'rmsnorm' | 'layernorm', eps, weight_offset (1 for Gemma)"},
         ("stack",),
         {"parallel": Capability("supports arrangement='parallel' with a parallel_scale"),
          "cross_attention": Capability("supports decoder blocks with cross-attention to memory")}),
)


@dataclasses.dataclass(frozen=True)
class BlockAdapter:
    name: str
    stack: Callable
    capabilities: frozenset = frozenset({"parallel", "cross_attention"})
    kind: str = "block"
    precision: str = "float64"


@dataclasses.dataclass(frozen=True)
class StackCase:
    x: np.ndarray
    blocks: tuple
    causal: bool
    final_norm: object
    memory: object
    scale: float
    seed: int

    def __repr__(self):
        b = self.blocks[0]
        return (f"StackCase(x{self.x.shape}, layers={len(self.blocks)}, heads={b.attn.num_heads}, "
                f"ffn={type(b.ffn).__name__}/{b.activation}, norm={b.norm1.kind}, causal={self.causal}, "
                f"final_norm={self.final_norm is not None}, scale={self.scale:.4g}, seed={self.seed})")


def _round_tree(obj, precision):
    """A dataclass (Block, Norm, Attention, FFN params) with every array rounded to ``precision``."""
    if isinstance(obj, np.ndarray):
        return round_inputs(precision, obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _round_tree(getattr(obj, f.name), precision)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


@st.composite
def stack_case(draw, caps=None, cross=False):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    H = draw(sampled([1, 2]))
    d = H * draw(sampled([2, 3]))
    kw = dict(d_model=d, num_heads=H, d_ff=draw(st.integers(1, 10)), ffn_kind=draw(sampled(["mlp", "glu"])),
              activation=draw(sampled(["gelu", "silu", "relu"])), norm=draw(sampled(["rmsnorm", "layernorm"])),
              cross=cross)
    kw["norm_bias"] = kw["norm"] == "layernorm" and draw(st.booleans())
    n = draw(st.integers(1, 3))
    blocks = tuple(Bk.init_block(int(rng.integers(2**31)), **kw) for _ in range(n))
    B, Lq = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    x = rng.standard_normal((B, Lq, d))
    final = Bk.Norm(1 + 0.1 * rng.standard_normal(d), kind=kw["norm"]) if draw(st.booleans()) else None
    memory = rng.standard_normal((B, draw(st.integers(1, 4)), d)) if cross else None
    scale = draw(sampled([1.0, 1 / np.sqrt(2)]))
    prec = getattr(caps, "precision", "float64")
    blocks, final = tuple(_round_tree(b, prec) for b in blocks), _round_tree(final, prec)
    x, memory = round_inputs(prec, x, memory)
    return StackCase(x, blocks, draw(st.booleans()), final, memory, scale, seed)


def _attn(h, kv, a, causal):
    return multi_head_attention(h, kv, a.W_q, a.W_k, a.W_v, a.W_o, num_heads=a.num_heads,
                                num_kv_heads=a.num_kv_heads, causal=causal)


def _ff(h, blk):
    return Fn.ffn(h, blk.ffn, activation=blk.activation)


def _unrolled(case, arrangement):
    """The stack written out layer by layer; returns the output, max |h| and max 1/rms seen."""
    h, m, R = case.x, np.abs(case.x).max(), 1.0

    def norm(nrm, v):
        nonlocal R
        spread = np.var(v, axis=-1) if nrm.kind == "layernorm" else np.mean(v * v, axis=-1)
        R = max(R, float(1 / np.sqrt(spread.min() + nrm.eps)))
        return nrm(v)

    for blk in case.blocks:
        if arrangement == "parallel":
            n1 = norm(blk.norm1, h)
            h = h + case.scale * (_attn(n1, n1, blk.attn, case.causal) + _ff(n1, blk))
        else:
            n1 = norm(blk.norm1, h)
            h = h + _attn(n1, n1, blk.attn, case.causal)
            if case.memory is not None:
                h = h + _attn(norm(blk.norm_cross, h), case.memory, blk.cross_attn, False)
            h = h + _ff(norm(blk.norm2, h), blk)
        m = max(m, np.abs(h).max())
    if case.final_norm is not None:
        h = norm(case.final_norm, h)
    return h, m, R


def naive_stack(precision, case, arrangement):
    """``_unrolled`` computed naively in ``precision`` (module docstring)."""
    ops = naive_ops(precision)

    def norm(nrm, v):
        if nrm.kind == "layernorm":
            return _norms_naive.naive_layer_norm(precision, v, nrm.weight, nrm.bias, nrm.eps)
        return _norms_naive.naive_rms_norm(precision, v, nrm.weight, nrm.eps, weight_offset=nrm.weight_offset)

    def attn(hq, hkv, a, causal):
        B, Lq, _ = hq.shape
        Lk = hkv.shape[1]
        H, Hkv = a.num_heads, a.num_kv_heads or a.num_heads

        def heads(x, W, n):
            return ops.matmul(x, ops.r(W)).reshape(B, x.shape[1], n, -1).transpose(0, 2, 1, 3)

        Q, K, V = heads(hq, a.W_q, H), heads(hkv, a.W_k, Hkv), heads(hkv, a.W_v, Hkv)
        scale = 1 / np.sqrt(Q.shape[-1])
        mask = np.tril(np.ones((Lq, Lk), bool), Lk - Lq) if causal else np.ones((Lq, Lk), bool)
        if precision == "float32":
            out, _ = float32_naive_attention(Q, K, V, mask, scale)
        else:
            out, _ = lowp_naive_attention(Q, K, V, mask, scale, precision)
        return ops.matmul(out.transpose(0, 2, 1, 3).reshape(B, Lq, -1), ops.r(a.W_o))

    def ff(v, blk):
        return _ffn_naive._naive_forward(ops, x=v, params=blk.ffn, activation=blk.activation)["y"]

    h = ops.r(case.x)
    for blk in case.blocks:
        if arrangement == "parallel":
            n1 = norm(blk.norm1, h)
            h = ops.r(h + ops.r(ops.compute(case.scale) * ops.r(attn(n1, n1, blk.attn, case.causal) + ff(n1, blk))))
        else:
            n1 = norm(blk.norm1, h)
            h = ops.r(h + attn(n1, n1, blk.attn, case.causal))
            if case.memory is not None:
                h = ops.r(h + attn(norm(blk.norm_cross, h), ops.r(case.memory), blk.cross_attn, False))
            h = ops.r(h + ff(norm(blk.norm2, h), blk))
    if case.final_norm is not None:
        h = norm(case.final_norm, h)
    return ops.out(h)


def _terms(case, m, R):
    """n (1 + m) max(R, 1): one rounding of the residual stream (max |h| = m) per layer, read
    through a norm (gain at most R): the size of the terms for ``precision.layer_floor``."""
    return len(case.blocks) * (1 + m) * max(R, 1.0)


def _compare(impl, name, got, want, tol, case, arrangement, m, R):
    p = precision_of(impl)
    compare_layer(name, got, want, precision=p, float64_bound=tol, naive=lambda: naive_stack(p, case, arrangement),
                  magnitude=_terms(case, m, R), context=f"{impl.name}; {case!r}")


def _tol(case, m, R):
    b = case.blocks[0]
    dff = (b.ffn.W_gate if isinstance(b.ffn, Fn.GLUParams) else b.ffn.W1).shape[1]
    n = len(case.blocks)
    return 64 * n * (case.x.shape[-1] + dff + case.x.shape[1] + 4) * U64 * (1 + m) * max(R, 1.0) ** (2 * n + 1)


def check_pre_norm_unrolled(impl, case: StackCase):
    """A pre-norm stack is h <- h + Attn(N1 h); h <- h + FFN(N2 h) per layer, then the final norm."""
    want, m, R = _unrolled(case, "pre_norm")
    got = impl.stack(case.x, list(case.blocks), "pre_norm", case.causal, None, 1.0, case.final_norm)
    _compare(impl, "pre-norm stack", got, want, _tol(case, m, R), case, "pre_norm", m, R)


def check_parallel_block(impl, case: StackCase):
    """Parallel block: h <- h + s (Attn(N1 h) + FFN(N1 h)), one norm shared (docs/notes.md#transformer-block)."""
    want, m, R = _unrolled(case, "parallel")
    got = impl.stack(case.x, list(case.blocks), "parallel", case.causal, None, case.scale, case.final_norm)
    _compare(impl, "parallel stack", got, want, _tol(case, m, R), case, "parallel", m, R)


def check_decoder(impl, case: StackCase):
    """Decoder stack (causal self-attention, cross-attention to memory, FFN) equals its unrolling,
    and its output at t does not depend on decoder inputs after t."""
    case = dataclasses.replace(case, causal=True)
    want, m, R = _unrolled(case, "pre_norm")
    got = impl.stack(case.x, list(case.blocks), "pre_norm", True, case.memory, 1.0, case.final_norm)
    tol = _tol(case, m, R)
    p = precision_of(impl)
    ctx = f"{impl.name}; {case!r}; precision {p}"
    _compare(impl, "decoder stack", got, want, tol, case, "pre_norm", m, R)
    Lq = case.x.shape[1]
    if Lq > 1:
        x2 = case.x.copy()
        x2[:, -1] += 3.0
        x2 = round_inputs(p, x2)  # an input of the adapter's precision, as every drawn input
        got2 = impl.stack(x2, list(case.blocks), "pre_norm", True, case.memory, 1.0, case.final_norm)
        if p != "float64":
            case2 = dataclasses.replace(case, x=x2)
            want2 = _unrolled(case2, "pre_norm")[0]
            tol = invariant_bound(p, tol, lambda: np.concatenate([naive_stack(p, c, "pre_norm")[:, :-1].ravel()
                                                                  for c in (case, case2)]),
                                  np.concatenate([want[:, :-1].ravel(), want2[:, :-1].ravel()]), magnitude=_terms(case, m, R))
        compare_close("decoder output before the changed last position", got2[:, :-1], got[:, :-1], tol, ctx)


# ----------------------------------------------------------------------------
# adapters


def _ref_stack(x, blocks, arrangement, causal, memory, scale, final_norm):
    return Bk.stack(x, blocks, arrangement=arrangement, causal=causal, memory=memory, parallel_scale=scale,
                    final_norm=final_norm)


def _fused_stack(x, blocks, arrangement, causal, memory, scale, final_norm):
    return Bk.pre_norm_stack_fused_residual(x, blocks, causal=causal, final_norm=final_norm)


def _post_norm(x, blocks, arrangement, causal, memory, scale, final_norm):
    arrangement = "post_norm" if arrangement == "pre_norm" else arrangement
    return _ref_stack(x, blocks, arrangement, causal, memory, scale, final_norm)


def _fused_missing_last_add(x, blocks, arrangement, causal, memory, scale, final_norm):
    """The fused-residual loop returns the residual without adding the last block's FFN output."""
    residual, hidden = np.asarray(x, dtype=np.float64), None
    for blk in blocks:
        residual = residual if hidden is None else residual + hidden
        n1 = blk.norm1(residual)
        residual = residual + _attn(n1, n1, blk.attn, causal)
        hidden = _ff(blk.norm2(residual), blk)
    return residual if final_norm is None else final_norm(residual)


def _parallel_unscaled(x, blocks, arrangement, causal, memory, scale, final_norm):
    return _ref_stack(x, blocks, arrangement, causal, memory, 1.0, final_norm)


def _parallel_two_norms(x, blocks, arrangement, causal, memory, scale, final_norm):
    h = x
    for blk in blocks:
        h = h + scale * (_attn(blk.norm1(h), blk.norm1(h), blk.attn, causal) + _ff(blk.norm2(h), blk))
    return h if final_norm is None else final_norm(h)


def _decoder_not_causal(x, blocks, arrangement, causal, memory, scale, final_norm):
    return _ref_stack(x, blocks, arrangement, False, memory, scale, final_norm)


REFIMPL = BlockAdapter("refimpl.block.stack", _ref_stack)
REFIMPL_FUSED = BlockAdapter("refimpl.block.pre_norm_stack_fused_residual", _fused_stack, frozenset())
BUNDLED = [REFIMPL, REFIMPL_FUSED]

WRONG = {
    "post_norm_for_pre_norm": BlockAdapter("wrong[post_norm_for_pre_norm]", _post_norm),
    "fused_residual_missing_last_add": BlockAdapter("wrong[fused_residual_missing_last_add]", _fused_missing_last_add,
                                                    frozenset()),
    "parallel_scale_ignored": BlockAdapter("wrong[parallel_scale_ignored]", _parallel_unscaled),
    "parallel_two_norms": BlockAdapter("wrong[parallel_two_norms]", _parallel_two_norms),
    "decoder_self_attention_not_causal": BlockAdapter("wrong[decoder_self_attention_not_causal]", _decoder_not_causal),
}

def in_precision(adapter, precision: str, name: str | None = None):
    """``adapter`` declaring ``precision``, its output stored in that precision."""
    return dataclasses.replace(adapter, name=name or f"{adapter.name}[{precision}]", precision=precision,
                               stack=lambda *a: round_inputs(precision, adapter.stack(*a)))


# the same mistakes in float32 / bfloat16 kernels: the low-precision bound still rejects them
WRONG.update({f"{b}_{p}": in_precision(WRONG[b], p, f"wrong[{b}][{p}]") for b, p in (
    ("post_norm_for_pre_norm", "bfloat16"), ("fused_residual_missing_last_add", "float32"),
    ("parallel_scale_ignored", "float32"), ("parallel_two_norms", "bfloat16"),
    ("decoder_self_attention_not_causal", "float32"), ("decoder_self_attention_not_causal", "bfloat16"))})

PROPERTIES = [
    Property("pre_norm_stack_equals_unrolled", "block", check_pre_norm_unrolled, lambda caps: stack_case(caps),
             "a pre-norm stack equals h <- h + Attn(N1 h); h <- h + FFN(N2 h) unrolled, then the final norm",
             rejects=("post_norm_for_pre_norm", "fused_residual_missing_last_add", "post_norm_for_pre_norm_bfloat16",
                      "fused_residual_missing_last_add_float32")),
    Property("parallel_block_scaled_sum", "block", check_parallel_block, lambda caps: stack_case(caps),
             "parallel block: h + s (Attn(N h) + FFN(N h)) with one shared norm (s = 1 or 1/sqrt 2)",
             requires=frozenset({"parallel"}), rejects=("parallel_scale_ignored", "parallel_two_norms",
                                                        "parallel_scale_ignored_float32", "parallel_two_norms_bfloat16")),
    Property("decoder_stack_causal_with_cross_attention", "block", check_decoder,
             lambda caps: stack_case(caps, cross=True),
             "decoder: causal self-attention, cross-attention to memory, FFN; output at t ignores inputs after t",
             requires=frozenset({"cross_attention"}),
             rejects=("decoder_self_attention_not_causal", "decoder_self_attention_not_causal_float32",
                      "decoder_self_attention_not_causal_bfloat16")),
]
