"""Transformer blocks and stacks: pre-norm, post-norm and parallel residual blocks,
encoder and decoder stacks with cross-attention, DropPath (docs/notes.md#transformer-block,
docs/notes.md#encoder-decoder, docs/notes.md#layer-parameters).

    post-norm (Vaswani 2017):   h = N1(x + Attn(x));            y = N2(h + FFN(h))
    pre-norm (GPT-2 onwards):   h = x + Attn(N1(x));            y = h + FFN(N2(h))
    parallel (GPT-J, PaLM):     y = x + s (Attn(N1(x)) + FFN(N1(x)))     one norm;
                                s = 1 (GPT-J, PaLM) or 1/sqrt(2) (docs/notes.md#transformer-block: two summed
                                unit-variance branches have variance 2)
    decoder (encoder-decoder):  self-attention causal, then cross-attention with
                                queries from the decoder and keys/values from the encoder
                                output M (pre-norm: h = h + XAttn(Nc(h), M)), then the FFN.

Learnable per-branch scales (docs/hybrid.md#per-branch-scales; CaiT's LayerScale, timm
``LayerScale``): a block's ``attn_scale`` and ``ffn_scale`` (a scalar or one value per channel,
shape (d,)) multiply the attention and FFN branch outputs before they join the residual, in every
arrangement: pre-norm h = x + a_attn * Attn(N1(x)), y = h + a_ffn * FFN(N2(h)); parallel
y = x + s (a_attn * Attn(N1(x)) + a_ffn * FFN(N1(x))). They are parameters (counted by
``num_params``); None is a scale of 1 with no parameter.

Positions (docs/hybrid.md#a-pre-norm-block-with-rope): an ``Attention`` with ``rope`` (a dict
of ``refimpl.rope.apply_rope`` keywords) rotates its queries and keys at positions 0..L-1 after the
projections (Llama's decoder layer: pre-norm RMSNorm, RoPE "half" layout, SwiGLU; checked against
transformers 5.25.0 ``models/llama/modeling_llama.py`` ``LlamaDecoderLayer``).

Per-layer masks: ``block(mask=...)`` and ``stack(masks=[...])`` give each layer's self-attention
its own mask (a ``refimpl.masks.Mask`` or a bool (L, L) array, ANDed with ``causal``), e.g. sliding
windows interleaved with full layers (Gemma 2, Mistral-style hybrids); ``refimpl.receptive_field``
takes the same per-layer list (docs/hybrid.md#interleaved-windowed-and-full-layers).

A pre-norm stack usually ends with a final norm ("final LN" of GPT-2, Llama's norm before
the head). Fused kernels carry the residual stream separately (vLLM ``fused_add_rms_norm``:
residual <- residual + hidden; hidden <- norm(residual)); :func:`pre_norm_stack_fused_residual`
is that form, equal to the plain composition.

DropPath / stochastic depth (timm ``drop_path``): a branch's output is kept or dropped per
sample: branch * keep_b / (1 - p), keep (B,) bool, passed in explicitly; in a parallel block
attention and FFN have independent masks.

MAC accounting: every weight matmul adds rows x weights to an optional :class:`MacCounter`,
and attention adds 2 H hd Lq Lk (q.k and p.v, every pair counted, masked or not, as
``refimpl.accounting`` does); tests check the tally against ``refimpl.accounting``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from . import accounting, ffn as _ffn, masks as _masks, norms
from ._validate import as_float_array, bool_array, check_budget, choice, count, flag, instance, positive_int, real_number
from ._validate import layers as _V
from ._validate.losses import token_ids
from .mha import multi_head_attention
from .rope import check_rope_kwargs

ARRANGEMENTS = ("pre_norm", "post_norm", "parallel")
NORM_KINDS = ("layernorm", "rmsnorm")


@dataclasses.dataclass(frozen=True)
class Norm:
    """A LayerNorm (weight, optional bias) or an RMSNorm (weight; ``weight_offset`` 1 for Gemma)."""

    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    kind: str = "rmsnorm"
    eps: float = 1e-6
    weight_offset: float = 0.0

    def __call__(self, x):
        if _V.norm_call(self.kind, self.bias, NORM_KINDS) == "layernorm":
            return norms.layer_norm(x, self.weight, self.bias, eps=self.eps)
        return norms.rms_norm(x, self.weight, eps=self.eps, weight_offset=self.weight_offset)

    def num_params(self) -> int:
        return int(np.size(self.weight)) + (0 if self.bias is None else int(np.size(self.bias)))


@dataclasses.dataclass(frozen=True)
class Attention:
    """W_q (d, H hd), W_k, W_v (d, Hkv hd), W_o (H hd, d); no biases; ``rope``: None or a dict of
    ``refimpl.rope.apply_rope`` keywords applied to q and k (module doc)."""

    W_q: np.ndarray
    W_k: np.ndarray
    W_v: np.ndarray
    W_o: np.ndarray
    num_heads: int
    num_kv_heads: Optional[int] = None
    rope: Optional[dict] = None

    def __post_init__(self):
        _, _, hd, W = _V.attention_weights(self.W_q, self.W_k, self.W_v, self.W_o, self.num_heads, self.num_kv_heads)
        if self.rope is not None:
            object.__setattr__(self, "rope", check_rope_kwargs(self.rope, hd))
        for name, w in W.items():  # the validated float64 arrays, the block's own copies (no aliasing)
            object.__setattr__(self, name, w.copy())

    def num_params(self) -> int:
        return int(sum(np.size(w) for w in (self.W_q, self.W_k, self.W_v, self.W_o)))


@dataclasses.dataclass(frozen=True)
class Block:
    """One layer's parameters. ``cross_attn``/``norm_cross`` only in a decoder of an
    encoder-decoder model; ``norm2`` unused by the parallel arrangement."""

    attn: Attention
    ffn: object  # refimpl.ffn.MLPParams or GLUParams
    activation: str
    norm1: Norm
    norm2: Optional[Norm] = None
    cross_attn: Optional[Attention] = None
    norm_cross: Optional[Norm] = None
    attn_scale: Optional[np.ndarray] = None
    ffn_scale: Optional[np.ndarray] = None

    def __post_init__(self):
        scales = _V.block_parts(self, attention_cls=Attention, norm_cls=Norm,
                                ffn_classes=(_ffn.MLPParams, _ffn.GLUParams), activations=_ffn.ACTIVATIONS)
        for name, a in scales.items():  # validated float64 copies
            object.__setattr__(self, name, a)

    def num_params(self) -> int:
        parts = [self.attn.num_params(), _ffn.num_params(self.ffn)]
        parts += [int(np.size(a)) for a in (self.attn_scale, self.ffn_scale) if a is not None]
        parts += [m.num_params() for m in (self.norm1, self.norm2, self.cross_attn, self.norm_cross) if m is not None]
        return int(sum(parts))


class MacCounter:
    """Multiply-accumulates of one forward pass (weights and attention scores)."""

    def __init__(self):
        self.total = 0

    def add(self, n: int):
        """Count n more multiply-accumulates (a non-negative int)."""
        self.total += count(n, "n", maximum=None)


def _attend(x_q, x_kv, a: Attention, counter, **kw):
    if counter is not None:
        B, Lq, _ = x_q.shape
        Lk = x_kv.shape[1]
        counter.add(B * Lq * (a.W_q.size + a.W_o.size) + B * Lk * (a.W_k.size + a.W_v.size))
        hd = a.W_q.shape[1] // a.num_heads
        counter.add(2 * B * a.num_heads * hd * Lq * Lk)
    with _V.renamed(_V.sublayer_names, errors=(ValueError,)):  # name the block's inputs, not the sub-layer's q, k
        return multi_head_attention(x_q, x_kv, a.W_q, a.W_k, a.W_v, a.W_o, num_heads=a.num_heads,
                                    num_kv_heads=a.num_kv_heads, rope=a.rope, **kw)


def _feed_forward(x, blk: Block, counter, keep_mask, dropout_p):
    if counter is not None:
        counter.add(x.shape[0] * x.shape[1] * _ffn.ffn_macs_per_token(blk.ffn))
    f = _ffn._Forward(x, blk.ffn, blk.activation, keep_mask, dropout_p, "act_keep_mask", "act_dropout_p")
    return f.output()


def drop_path(branch, keep, p: float) -> np.ndarray:
    """Stochastic depth: branch (B, ...) * keep_b / (1 - p); keep (B,) bool; keep=None is identity."""
    return _drop_path(as_float_array(branch, "branch"), keep, p, "keep", "p")


def _drop_path(branch, keep, p, keep_name, p_name):
    """drop_path, the messages naming the caller's arguments."""
    keep, p = _V.drop_path_args(branch, keep, p, keep_name, p_name)
    if keep is None:
        return branch
    with np.errstate(over="ignore"):
        out = branch * (keep / (1.0 - p)).reshape(keep.shape + (1,) * (branch.ndim - 1))
    return _V.beyond_float64(out, f"branch, {p_name}", "branch / (1 - p) within float64 range")


@dataclasses.dataclass(frozen=True)
class Stochastic:
    """Explicit randomness of one block call: DropPath keep masks (B,) per branch and the
    activation-dropout keep-mask (B, L, d_ff) of the FFN."""

    drop_path_p: float = 0.0
    keep_attn: Optional[np.ndarray] = None
    keep_cross: Optional[np.ndarray] = None
    keep_ffn: Optional[np.ndarray] = None
    act_keep_mask: Optional[np.ndarray] = None
    act_dropout_p: float = 0.0

    def __post_init__(self):
        for name in ("drop_path_p", "act_dropout_p"):
            real_number(getattr(self, name), name, minimum=0.0, maximum=1.0)
        for name in ("keep_attn", "keep_cross", "keep_ffn", "act_keep_mask"):
            if getattr(self, name) is not None:
                bool_array(getattr(self, name), name)


_NONE = Stochastic()


def block(x, blk: Block, *, arrangement: str = "pre_norm", causal: bool = False, memory=None,
          parallel_scale: float = 1.0, rand: Stochastic = _NONE, counter: Optional[MacCounter] = None,
          mask=None) -> np.ndarray:
    """One residual block on x (B, L, d) (module docstring); ``memory`` (B, L_enc, d) turns on
    the cross-attention sub-layer (the block must have ``cross_attn``); ``mask`` (a
    ``refimpl.masks.Mask`` or bool (L, L), True = may attend) restricts the self-attention."""
    arrangement, x, causal, memory = _V.block_inputs(x, blk, rand, counter, memory, arrangement=arrangement,
                                                     causal=causal, block_cls=Block, rand_cls=Stochastic,
                                                     counter_cls=MacCounter, arrangements=ARRANGEMENTS)
    dp = rand.drop_path_p
    mask = _layer_mask(mask, x.shape[1], "mask")
    s = _V.block_scale(parallel_scale, arrangement, memory is not None)

    def scaled(a, branch):
        return branch if a is None else a * branch

    def attn(h):
        return _drop_path(scaled(blk.attn_scale, _attend(h, h, blk.attn, counter, causal=causal, mask=mask)),
                          rand.keep_attn, dp, "keep_attn", "drop_path_p")

    def cross(h):
        return _drop_path(_attend(h, memory, blk.cross_attn, counter), rand.keep_cross, dp, "keep_cross", "drop_path_p")

    def ff(h):
        return _drop_path(scaled(blk.ffn_scale, _feed_forward(h, blk, counter, rand.act_keep_mask, rand.act_dropout_p)),
                          rand.keep_ffn, dp, "keep_ffn", "drop_path_p")

    if arrangement == "parallel":
        h = blk.norm1(x)
        with np.errstate(over="ignore", invalid="ignore"):
            y = x + s * (attn(h) + ff(h))
        return _V.beyond_float64(y, "x, parallel_scale, blk", "the block's output x + s (Attn + FFN) within float64 range")
    if arrangement == "pre_norm":
        h = _residual(x, attn(blk.norm1(x)))
        if memory is not None:
            h = _residual(h, cross(blk.norm_cross(h)))
        return _residual(h, ff(blk.norm2(h)))
    h = blk.norm1(_residual(x, attn(x)))
    if memory is not None:
        h = blk.norm_cross(_residual(h, cross(h)))
    return blk.norm2(_residual(h, ff(h)))


def _residual(h, branch):
    """h + branch; a sum beyond float64 range is an error naming the block's inputs (never an inf handed
    on to the next sub-layer, which would blame its own input)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = h + branch
    return _V.beyond_float64(out, "x, blk", "the block's residual sums within float64 range")


def _layer_mask(mask, L: int, name: str):
    """None, or a bool (L, L) array from a Mask predicate or an array (True = may attend)."""
    if mask is None:
        return None
    if isinstance(mask, _masks.Mask):
        return mask.materialize(L, L)
    return bool_array(mask, name, shape=(L, L), shape_doc=f"(L, L) = ({L}, {L})")


def layer_masks(masks, n_layers: int, name: str = "masks") -> list:
    """A per-layer list of masks (None, a ``refimpl.masks.Mask`` or a bool (L, L) array), one per layer;
    ``name`` is the argument the messages name."""
    return _V.layer_mask_list(masks, n_layers, name, _masks.Mask)


def stack(x, blocks: Sequence[Block], *, arrangement: str = "pre_norm", causal: bool = False, memory=None,
          final_norm: Optional[Norm] = None, parallel_scale: float = 1.0, rands: Optional[Sequence[Stochastic]] = None,
          counter: Optional[MacCounter] = None, masks=None) -> np.ndarray:
    """blocks applied in order, then ``final_norm`` if given; ``rands`` one per block; ``masks`` one
    self-attention mask per block (None entries: ``causal`` alone), e.g. windowed and full layers interleaved."""
    blocks = _blocks(blocks, "blocks")
    masks = layer_masks(masks, len(blocks))
    _final(final_norm, "final_norm")
    rands = _V.stochastic_list(rands, len(blocks), Stochastic) or [_NONE] * len(blocks)
    h = x
    for i, (blk, r, m) in enumerate(zip(blocks, rands, masks)):
        with _V.renamed(_V.prefix("mask:", f"masks[{i}]:")):  # the layer's mask is the caller's masks[i]
            h = block(h, blk, arrangement=arrangement, causal=causal, memory=memory, parallel_scale=parallel_scale,
                      rand=r, counter=counter, mask=m)
    return h if final_norm is None else final_norm(h)


def pre_norm_stack_fused_residual(x, blocks: Sequence[Block], *, causal: bool = False,
                                  final_norm: Optional[Norm] = None) -> np.ndarray:
    """The residual-stream form of a pre-norm stack (vLLM's Llama with fused add + RMSNorm):
    each norm takes (hidden, residual), adds, normalises, and passes the sum on."""
    residual = as_float_array(x, "x", ndim=3)
    blocks = _blocks(blocks, "blocks")
    _final(final_norm, "final_norm")
    causal = flag(causal, "causal")
    _V.fused_residual_blocks(blocks)
    hidden = None
    for blk in blocks:
        residual = residual if hidden is None else residual + hidden
        normed = blk.norm1(residual)
        hidden = _attend(normed, normed, blk.attn, None, causal=causal)
        residual = residual + hidden
        hidden = _feed_forward(blk.norm2(residual), blk, None, None, 0.0)
    out = residual if hidden is None else residual + hidden
    return out if final_norm is None else final_norm(out)


def encoder(x, blocks: Sequence[Block], *, arrangement: str = "pre_norm", final_norm: Optional[Norm] = None,
            counter: Optional[MacCounter] = None) -> np.ndarray:
    """Encoder stack: bidirectional self-attention (no mask); returns the memory M = H^{N_enc}."""
    x = as_float_array(x, "x", ndim=3)
    return stack(x, blocks, arrangement=arrangement, causal=False, final_norm=final_norm, counter=counter)


def decoder(y_in, memory, blocks: Sequence[Block], *, arrangement: str = "pre_norm",
            final_norm: Optional[Norm] = None, counter: Optional[MacCounter] = None) -> np.ndarray:
    """Decoder stack of an encoder-decoder model: causal self-attention, cross-attention to
    ``memory``, FFN. ``y_in`` is the embedded shifted-right target (``refimpl.losses.shift_right``)."""
    y_in = as_float_array(y_in, "y_in", ndim=3)
    memory = as_float_array(memory, "memory", ndim=3)
    blocks = _blocks(blocks, "blocks")
    _V.decoder_width(blocks, y_in.shape[2])
    return stack(y_in, blocks, arrangement=arrangement, causal=True, memory=memory, final_norm=final_norm,
                 counter=counter)


def seq2seq_logits(src_tokens, tgt_tokens, embedding, enc_blocks, dec_blocks, *, bos: int,
                   enc_norm: Optional[Norm] = None, dec_norm: Optional[Norm] = None) -> np.ndarray:
    """Teacher-forced encoder-decoder: logits (B, L_dec, V) for predicting tgt_tokens[:, t] at t,
    the decoder reading [BOS, y_1, ..., y_{L-1}]; tied embedding (V, d) as the output head."""
    from .losses import shift_right

    E = as_float_array(embedding, "embedding", ndim=2, shape_doc="(V, d)", min_size={0: 1, 1: 1})
    V = E.shape[0]
    src = token_ids(src_tokens, "src_tokens", V)
    tgt = token_ids(tgt_tokens, "tgt_tokens", V)
    bos = count(bos, "bos", maximum=V - 1)
    enc_blocks, dec_blocks = _blocks(enc_blocks, "enc_blocks"), _blocks(dec_blocks, "dec_blocks")
    _final(enc_norm, "enc_norm"), _final(dec_norm, "dec_norm")
    _V.embedding_width(enc_blocks, "enc_blocks", E.shape[1])
    _V.embedding_width(dec_blocks, "dec_blocks", E.shape[1])
    _V.same_batch(src, tgt)
    # the arguments are valid here: what fails inside is an activation beyond float64 range, named for this
    # function's arguments, not the inner stacks' x, memory, blk
    with _V.renamed(_V.wrapped("embedding, enc_blocks, dec_blocks: expected the encoder and decoder activations "
                               "within float64 range, got (", ")"), errors=(ValueError,)):
        M = encoder(E[src], enc_blocks, final_norm=enc_norm)
        h = decoder(E[shift_right(tgt, bos)], M, dec_blocks, final_norm=dec_norm)
    with np.errstate(over="ignore", invalid="ignore"):
        logits = h @ E.T
    return _V.beyond_float64(logits, "embedding", "the logits h E^T within float64 range")


def _blocks(blocks, name: str) -> list:
    """A sequence of :class:`Block`, named per entry in messages."""
    return _V.block_list(blocks, name, Block)


def _final(norm, name: str):
    if norm is not None:
        instance(norm, name, Norm)


def block_config(blk: Block, *, n_layers: int = 1) -> accounting.TransformerConfig:
    """The ``refimpl.accounting`` config describing a decoder-only stack of ``blk``
    (norm weights counted as vectors: a LayerNorm with bias is two)."""
    instance(blk, "blk", Block)
    n_layers = positive_int(n_layers, "n_layers")
    f = blk.ffn
    _V.decoder_only_block(blk, any(getattr(f, n.name) is not None for n in dataclasses.fields(f)
                                          if n.name.startswith("b")))
    d = blk.attn.W_q.shape[0]
    glu = isinstance(f, _ffn.GLUParams)
    d_ff = (f.W_gate if glu else f.W1).shape[1]
    norm_vectors = sum(m.num_params() // d for m in (blk.norm1, blk.norm2) if m is not None)
    H = blk.attn.num_heads
    return accounting.TransformerConfig(
        d_model=d, n_layers=n_layers, n_heads=H, n_kv_heads=blk.attn.num_kv_heads,
        head_dim=blk.attn.W_q.shape[1] // H, d_ff=d_ff, ffn_kind="glu" if glu else "mlp",
        norms_per_layer=norm_vectors)


def init_block(seed: int, *, d_model: int, num_heads: int, d_ff: int, num_kv_heads: Optional[int] = None,
               ffn_kind: str = "mlp", activation: str = "gelu", norm: str = "rmsnorm", norm_bias: bool = False,
               cross: bool = False) -> Block:
    """A block with weights drawn from ``seed``: N(0, 1/fan_in) matrices, norm weights 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(count(seed, "seed", maximum=None))
    choice(norm, "norm", NORM_KINDS)
    choice(ffn_kind, "ffn_kind", ("mlp", "glu"))
    choice(activation, "activation", _ffn.ACTIVATIONS)
    norm_bias, cross = flag(norm_bias, "norm_bias"), flag(cross, "cross")
    d_model, num_heads, d_ff, Hkv = _V.init_block_sizes(norm, norm_bias, d_model, num_heads, d_ff, num_kv_heads)

    hd = d_model // num_heads
    n_attn = 2 if cross else 1
    n_weights = n_attn * 2 * d_model * (num_heads + Hkv) * hd + (3 if ffn_kind == "glu" else 2) * d_model * d_ff
    check_budget("d_model, num_heads, num_kv_heads, d_ff", nbytes=16 * n_weights + 32 * d_model,
                 what=f"a block of {n_weights} weights")

    def mat(r, c):
        return rng.standard_normal((r, c)) / np.sqrt(r)

    def attn():
        return Attention(mat(d_model, num_heads * hd), mat(d_model, Hkv * hd), mat(d_model, Hkv * hd),
                         mat(num_heads * hd, d_model), num_heads, num_kv_heads)

    def nrm():
        w = 1.0 + 0.1 * rng.standard_normal(d_model)
        b = 0.1 * rng.standard_normal(d_model) if norm_bias else None
        return Norm(w, b, kind=norm, eps=1e-5 if norm == "layernorm" else 1e-6)

    f = (_ffn.GLUParams(mat(d_model, d_ff), mat(d_model, d_ff), mat(d_ff, d_model)) if ffn_kind == "glu"
         else _ffn.MLPParams(mat(d_model, d_ff), mat(d_ff, d_model)))
    return Block(attn(), f, activation, nrm(), nrm(), attn() if cross else None, nrm() if cross else None)


__all__ = [
    "ARRANGEMENTS", "Attention", "Block", "MacCounter", "NORM_KINDS", "Norm", "Stochastic", "block",
    "block_config", "decoder", "drop_path", "encoder", "init_block", "layer_masks", "pre_norm_stack_fused_residual",
    "seq2seq_logits", "stack",
]
