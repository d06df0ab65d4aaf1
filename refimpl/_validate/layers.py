"""The layers' checks: blocks and stacks (``refimpl.block``, ``refimpl.hybrid``, ``refimpl.mamba_block``),
feed-forward networks, multi-head attention, sinks and gated blends (norms: ``norms.py``; losses: ``losses.py``).

The classes a check needs (``Block``, ``Norm``...) are passed in by the caller: this module imports only
NumPy and its siblings. ``renamed`` is the one re-raise of an inner function's error under the caller's
argument names.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .arrays import as_float_array, bool_array, same_shape
from .scalars import _type, choice, count, fail, flag, instance, positive_int, real_number


# ----------------------------------------------------------------------------
# shared: results beyond float64, errors renamed for the caller


def beyond_float64(value, names: str, expected: str):
    """``value`` (a float or an array) if finite; else ``<names>: expected <expected>, got one beyond it``."""
    if not np.isfinite(np.asarray(value)).all():
        fail(names, expected, "one beyond it")
    return value


@contextlib.contextmanager
def renamed(rewrite, errors=(ValueError, TypeError)):
    """Errors of ``errors`` raised inside, re-raised as their own class with the message ``rewrite(message)``
    (an inner function names its own arguments; the caller's user passed others). ``rewrite`` returning
    None re-raises the error unchanged."""
    try:
        yield
    except errors as e:
        msg = rewrite(str(e))
        if msg is None:
            raise
        raise type(e)(msg) from None


def prefix(old: str, new: str):
    """A ``renamed`` rewrite: a message starting with ``old`` starts with ``new`` instead; others unchanged."""
    return lambda msg: new + msg[len(old):] if msg.startswith(old) else None


def wrapped(head: str, tail: str = ""):
    """A ``renamed`` rewrite: ``head + message + tail`` (head in the wording ``<names>: expected ..., got ``)."""
    return lambda msg: head + msg + tail


def caller_names(projected: dict):
    """A ``renamed`` rewrite for "<names>: ..." messages: each name in ``projected`` replaced by the caller's
    arguments it was computed from (``{"q": "x_q, W_q"}``), each name once; messages naming none unchanged."""
    def rewrite(msg):
        head, sep, rest = msg.partition(": ")
        names = head.split(", ")
        if not sep or not set(names) & set(projected):
            return msg
        out = []
        for n in names:
            out += [m for m in projected.get(n, n).split(", ") if m not in out]
        return ", ".join(out) + sep + rest
    return rewrite


def sublayer_names(msg: str):
    """A ``renamed`` rewrite for a block's attention sub-layer: a score or a projection (in or out) beyond
    float64, worded for the block's inputs (the sub-layer's q, k, x_q, x_kv are internal); others unchanged."""
    if msg.startswith("q, k, scale"):
        return f"x (y_in), memory, blk: expected an attention sub-layer's scores within float64 range, got ({msg})"
    if msg.startswith(("x_q, ", "x_kv, ", "x_q:", "x_kv:", "W_o:")) and "within float64 range" in msg:
        return (f"x (y_in), memory, blk: expected an attention sub-layer's projections within float64 range, got one "
                f"beyond it ({msg})")
    return None


def sequence_of(x, name: str, what: str, *, excluded=()) -> list:
    """``x`` (an iterable, not a str, bytes or one of ``excluded``) as a list; else TypeError
    ``<name>: expected <what>, got <type>``."""
    if isinstance(x, (str, bytes) + tuple(excluded)) or not hasattr(x, "__iter__"):
        fail(name, what, _type(x), error=TypeError)
    return list(x)


# ----------------------------------------------------------------------------
# refimpl.block


def norm_call(kind: str, bias, kinds) -> str:
    """A ``Norm``'s ``kind`` (one of ``kinds``); an RMSNorm has no bias."""
    kind = choice(kind, "kind", kinds)
    if kind != "layernorm" and bias is not None:
        fail("bias", "None for an RMSNorm (it has no bias)", "an array")
    return kind


def attention_weights(W_q, W_k, W_v, W_o, num_heads, num_kv_heads) -> tuple:
    """``refimpl.block.Attention``'s weights: (H, Hkv, hd, {name: float64 array}); W_q (d, H hd),
    W_k, W_v (d, Hkv hd), W_o (H hd, d)."""
    H = positive_int(num_heads, "num_heads")
    Hkv = H if num_kv_heads is None else positive_int(num_kv_heads, "num_kv_heads")
    Wq = as_float_array(W_q, "W_q", ndim=2, shape_doc="(d, H hd)")
    d, cols = Wq.shape
    if cols % H:
        fail("W_q, num_heads", f"num_heads to divide W_q's {cols} columns", f"num_heads = {H}")
    hd = cols // H
    W = {"W_q": Wq}
    for name, w in (("W_k", W_k), ("W_v", W_v)):
        W[name] = as_float_array(w, name, shape=(d, Hkv * hd),
                                 shape_doc=f"(d, num_kv_heads * head_dim) with num_kv_heads = {Hkv}, head_dim = {hd}")
    W["W_o"] = as_float_array(W_o, "W_o", shape=(cols, d), shape_doc="(H hd, d)")
    return H, Hkv, hd, W


def block_parts(blk, *, attention_cls, norm_cls, ffn_classes, activations) -> dict:
    """``refimpl.block.Block``'s parts: their classes, cross-attention with its norm or neither, and the branch
    scales (a scalar or (d_model,)) as float64 copies, returned {name: array}."""
    instance(blk.attn, "attn", attention_cls)
    instance(blk.ffn, "ffn", ffn_classes)
    choice(blk.activation, "activation", activations)
    instance(blk.norm1, "norm1", norm_cls)
    for name in ("norm2", "cross_attn", "norm_cross"):
        if getattr(blk, name) is not None:
            instance(getattr(blk, name), name, attention_cls if name == "cross_attn" else norm_cls)
    if (blk.cross_attn is None) != (blk.norm_cross is None):
        fail("cross_attn, norm_cross", "both (a decoder block) or neither",
             f"only {'cross_attn' if blk.norm_cross is None else 'norm_cross'}")
    d = blk.attn.W_q.shape[0]
    scales = {}
    for name in ("attn_scale", "ffn_scale"):
        if getattr(blk, name) is not None:
            a = as_float_array(getattr(blk, name), name)
            if a.shape not in ((), (d,)):
                fail(name, f"a scalar or shape (d_model,) = ({d},)", f"shape {a.shape}")
            scales[name] = a.copy()
    return scales


def drop_path_args(branch: np.ndarray, keep, p, keep_name: str, p_name: str) -> tuple:
    """(keep (B,) bool or None, p): DropPath's keep mask for ``branch`` (B, ...) and its rate, 0 <= p < 1
    with a mask (``keep_name``, ``p_name``: the caller's arguments)."""
    p = real_number(p, p_name, minimum=0.0, maximum=1.0)
    if keep is None:
        return None, p
    if branch.ndim < 1:
        fail("branch", "shape (B, ...)", str(branch.shape))
    keep = bool_array(keep, keep_name, shape=branch.shape[:1], shape_doc="(B,)")
    if p >= 1.0:
        fail(p_name, "< 1 when a keep mask is given", str(p))
    return keep, p


def block_inputs(x, blk, rand, counter, memory, *, arrangement, causal, block_cls, rand_cls, counter_cls,
                 arrangements) -> tuple:
    """``refimpl.block.block``'s arguments: (arrangement, x (B, L, d) float64, causal, memory or None)."""
    arrangement = choice(arrangement, "arrangement", arrangements)
    x = as_float_array(x, "x", ndim=3)
    instance(blk, "blk", block_cls)
    d = blk.attn.W_q.shape[0]
    if d != x.shape[2]:
        fail("x, blk", f"x's last axis to equal the block's d_model {d}", str(x.shape[2]))
    instance(rand, "rand", rand_cls)
    causal = flag(causal, "causal")
    if counter is not None:
        instance(counter, "counter", counter_cls)
    if (memory is None) != (blk.cross_attn is None):
        fail("memory", "an array exactly when the block has cross_attn",
             f"{'None' if memory is None else 'an array'} for a block "
             f"{'without' if blk.cross_attn is None else 'with'} cross_attn")
    if arrangement != "parallel" and blk.norm2 is None:
        fail("norm2", f"the block's norm2 for the {arrangement} arrangement (only 'parallel' has one norm)", "None")
    if memory is not None:
        memory = as_float_array(memory, "memory", ndim=3)
        if memory.shape[0] != x.shape[0] or memory.shape[2] != x.shape[2]:
            fail("memory", f"shape (B, L_enc, d) with B, d of x {x.shape}", str(memory.shape))
    return arrangement, x, causal, memory


def block_scale(parallel_scale, arrangement: str, has_memory: bool) -> float:
    """The parallel block's branch scale s >= 0; a block with cross-attention is not parallel."""
    s = real_number(parallel_scale, "parallel_scale", minimum=0.0)
    if arrangement == "parallel" and has_memory:
        fail("arrangement", "'pre_norm' or 'post_norm' for a block with cross-attention (the parallel block has none)",
             "'parallel'")
    return s


def layer_mask_list(masks, n_layers, name, mask_cls) -> list:
    """One mask per layer (None, a ``mask_cls`` or a bool (L, L) array); ``name`` the argument the messages name."""
    instance(name, "name", str)
    n_layers = count(n_layers, "n_layers")
    if masks is None:
        return [None] * n_layers
    masks = sequence_of(masks, name, "a sequence with one mask (or None) per layer", excluded=(np.ndarray, mask_cls))
    if len(masks) != n_layers:
        fail(f"{name}, n_layers", f"one mask per layer ({n_layers} layers)", str(len(masks)))
    for i, m in enumerate(masks):
        if m is not None and not isinstance(m, (mask_cls, np.ndarray)):
            fail(f"{name}[{i}]", "None, a refimpl.masks.Mask or a bool array", _type(m), error=TypeError)
    return masks


def block_list(blocks, name: str, block_cls) -> list:
    """A sequence of ``refimpl.block.Block``, named per entry in messages."""
    blocks = sequence_of(blocks, name, "a sequence of refimpl.block.Block", excluded=(block_cls,))
    for i, b in enumerate(blocks):
        instance(b, f"{name}[{i}]", block_cls)
    return blocks


def stochastic_list(rands, n_blocks: int, rand_cls) -> list:
    """``rands``: None (no randomness) or one ``refimpl.block.Stochastic`` per block."""
    if rands is None:
        return None
    rands = sequence_of(rands, "rands", "a sequence of refimpl.block.Stochastic")
    for i, r in enumerate(rands):
        instance(r, f"rands[{i}]", rand_cls)
    if len(rands) != n_blocks:
        fail("rands, blocks", f"one Stochastic per block ({n_blocks} blocks)", str(len(rands)))
    return rands


def fused_residual_blocks(blocks) -> None:
    """The residual-stream form's blocks: decoder-only, each with norm2."""
    for i, blk in enumerate(blocks):
        if blk.norm2 is None or blk.cross_attn is not None:
            fail(f"blocks[{i}]", "a decoder-only block with norm2",
                 f"one {'without norm2' if blk.norm2 is None else 'with cross_attn'}")


def decoder_width(blocks, d: int) -> None:
    """Every decoder block's d_model equals y_in's width ``d`` (named here: the stack would name its own x)."""
    for i, b in enumerate(blocks):
        if b.attn.W_q.shape[0] != d:
            fail("y_in, blocks", f"y_in's last axis to equal blocks[{i}]'s d_model {b.attn.W_q.shape[0]}", str(d))


def embedding_width(blocks, name: str, d: int) -> None:
    """Every block of ``name`` has the embedding's width ``d`` as its d_model."""
    for i, b in enumerate(blocks):
        if b.attn.W_q.shape[0] != d:
            fail(f"embedding, {name}", f"{name}[{i}]'s d_model to equal the embedding width d = {d}",
                 str(b.attn.W_q.shape[0]))


def same_batch(src: np.ndarray, tgt: np.ndarray) -> None:
    """src_tokens and tgt_tokens of one batch."""
    if src.shape[0] != tgt.shape[0]:
        fail("tgt_tokens", f"batch size {src.shape[0]} (src_tokens)", f"shape {tgt.shape}")


def decoder_only_block(blk, ffn_has_bias: bool) -> None:
    """A block ``refimpl.accounting.TransformerConfig`` describes: no cross-attention, no FFN biases."""
    if blk.cross_attn is not None:
        fail("blk", "a decoder-only block (accounting.TransformerConfig has no cross-attention)",
             "one with cross_attn")
    if ffn_has_bias:
        fail("blk", "bias-free FFNs (accounting counts FFN biases only together with attention biases)",
             "FFN biases")


def init_block_sizes(norm: str, norm_bias: bool, d_model, num_heads, d_ff, num_kv_heads) -> tuple:
    """``init_block``'s sizes (d_model, num_heads, d_ff, num_kv_heads): positive, num_kv_heads | num_heads | d_model;
    an RMSNorm has no bias."""
    if norm_bias and norm == "rmsnorm":
        fail("norm_bias", "False with norm='rmsnorm' (an RMSNorm has no bias)", "True")
    d_model, num_heads, d_ff = (positive_int(v, n) for v, n in ((d_model, "d_model"), (num_heads, "num_heads"),
                                                                   (d_ff, "d_ff")))
    Hkv = num_heads if num_kv_heads is None else positive_int(num_kv_heads, "num_kv_heads")
    if d_model % num_heads or num_heads % Hkv:
        fail("num_heads, num_kv_heads", "num_kv_heads | num_heads | d_model",
             f"d_model={d_model}, num_heads={num_heads}, num_kv_heads={Hkv}")
    return d_model, num_heads, d_ff, Hkv


# ----------------------------------------------------------------------------
# refimpl.hybrid, refimpl.mamba_block


def linear_attention_layer(attn, feature_map, feature_maps) -> None:
    """A linear-attention layer's projections (one K/V head per query head, no rope) and feature map."""
    if attn.num_kv_heads not in (None, attn.num_heads) or attn.rope is not None:
        fail("attn", "one key/value head per query head and no rope (a linear-attention layer)",
             f"num_kv_heads={attn.num_kv_heads}, rope={attn.rope!r}")
    if not isinstance(feature_map, str) or feature_map not in feature_maps:
        fail("feature_map", f"one of {sorted(feature_maps)}", repr(feature_map))


def hybrid_layers(layers, layer_types) -> list:
    """A sequence of layers, each a Block, MambaLayer or LinearAttentionLayer."""
    layers = sequence_of(layers, "layers", "a sequence of layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, layer_types):
            fail(f"layers[{i}]", "a refimpl.block.Block, refimpl.hybrid.MambaLayer or refimpl.hybrid.LinearAttentionLayer",
                 _type(layer), error=TypeError)
    return layers


def causal_layer(i: int, layer, mask, d: int) -> None:
    """A Mamba or linear-attention layer: no mask (causal by construction), width d."""
    if mask is not None:
        fail(f"masks[{i}]", f"None for a {_type(layer)} (it is causal by construction)", _type(mask))
    if d != layer.norm.weight.shape[-1]:
        fail(f"layers[{i}]", f"d_model = {d} (x's last axis)", f"a layer of width {layer.norm.weight.shape[-1]}")


def mamba_weights(w) -> dict:
    """``refimpl.mamba_block.MambaWeights``' fields as float64 copies {name: array} (module doc's shapes)."""
    W_in = as_float_array(w.in_proj, "in_proj", ndim=2, shape_doc="(d_model, 2 d_inner)")
    d_model, two = W_in.shape
    if two % 2 or two == 0:
        fail("in_proj", "shape (d_model, 2 d_inner) with d_inner >= 1", str(W_in.shape))
    di = two // 2
    A_log = as_float_array(w.A_log, "A_log", ndim=2, shape=(di, None), shape_doc=f"(d_inner = {di}, d_state)")
    N = A_log.shape[1]
    conv = as_float_array(w.conv_weight, "conv_weight", ndim=2, shape=(di, None), shape_doc=f"(d_inner = {di}, d_conv)")
    if conv.shape[1] == 0:
        fail("conv_weight", "a width d_conv >= 1", f"shape {conv.shape}")
    W_x = as_float_array(w.x_proj, "x_proj", ndim=2, shape=(di, None), shape_doc=f"(d_inner = {di}, dt_rank + 2 d_state)")
    R = W_x.shape[1] - 2 * N
    if R < 1:
        fail("x_proj", f"shape (d_inner, dt_rank + 2 d_state) with d_state = {N} and dt_rank >= 1", str(W_x.shape))
    fields = dict(in_proj=W_in, A_log=A_log, conv_weight=conv, x_proj=W_x,
                  dt_proj=as_float_array(w.dt_proj, "dt_proj", shape=(R, di), shape_doc=f"(dt_rank, d_inner) = {(R, di)}"),
                  dt_bias=as_float_array(w.dt_bias, "dt_bias", shape=(di,), shape_doc="(d_inner,)"),
                  D=as_float_array(w.D, "D", shape=(di,), shape_doc="(d_inner,)"),
                  out_proj=as_float_array(w.out_proj, "out_proj", ndim=2, shape=(di, d_model),
                                          shape_doc=f"(d_inner, d_model) = {(di, d_model)}"))
    for name, shape in (("conv_bias", (di,)), ("in_proj_bias", (2 * di,)), ("out_proj_bias", (d_model,))):
        if getattr(w, name) is not None:
            fields[name] = as_float_array(getattr(w, name), name, shape=shape, shape_doc=str(shape))
    return {name: a.copy() for name, a in fields.items()}


# ----------------------------------------------------------------------------
# refimpl.ffn


def dropout_args(h_shape: tuple, keep_mask, p, mask_name: str, p_name: str) -> tuple:
    """(keep mask or None, p): inverted dropout's explicit keep mask (shape of h) and rate; p > 0 needs a mask,
    a mask needs p < 1 (``mask_name``, ``p_name``: the caller's arguments)."""
    p = real_number(p, p_name, minimum=0.0, maximum=1.0)
    if keep_mask is None:
        if p != 0:
            fail(mask_name, f"a keep-mask when {p_name} > 0 (randomness is passed in explicitly)", "None")
        return None, p
    if p >= 1.0:
        fail(p_name, f"< 1 when a {mask_name} is given", str(p))
    return bool_array(keep_mask, mask_name, shape=h_shape), p


def fused_gate_up(h2) -> np.ndarray:
    """A fused projection h2 (..., 2 n): an even last axis."""
    h2 = as_float_array(h2, "h2")
    if h2.ndim < 1 or h2.shape[-1] % 2:
        fail("h2", "an even last axis", f"shape {h2.shape}")
    return h2


def _matrix(W, name, rows):
    W = as_float_array(W, name, ndim=2)
    if W.shape[0] != rows:
        fail(name, f"{rows} rows", f"shape {W.shape}")
    return W


def _vector(b, name, n):
    if b is None:
        return None
    b = as_float_array(b, name, ndim=1)
    same_shape(b, (n,), name)
    return b


def ffn_arrays(x, params, *, glu_cls, mlp_cls) -> tuple:
    """An FFN's x (..., d), d >= 1, and its parameters' arrays: (x, glu?, W1, Wv, W2, b1, bv, b2) with W1 the
    gate (GLU) or first matrix (MLP), Wv the up matrix (GLU; None for an MLP)."""
    glu = isinstance(params, glu_cls)
    if not glu and not isinstance(params, mlp_cls):
        fail("params", "MLPParams or GLUParams", _type(params), error=TypeError)
    x = as_float_array(x, "x")
    if x.ndim < 1 or x.shape[-1] < 1:
        fail("x", "shape (..., d) with d >= 1", str(x.shape))
    d = x.shape[-1]
    if glu:
        W1 = _matrix(params.W_gate, "W_gate", d)
        Wv = _matrix(params.W_up, "W_up", d)
        same_shape(Wv, W1.shape, "W_up")
        W2 = _matrix(params.W_down, "W_down", W1.shape[1])
        b1, bv = _vector(params.b_gate, "b_gate", W1.shape[1]), _vector(params.b_up, "b_up", W1.shape[1])
        b2 = _vector(params.b_down, "b_down", W2.shape[1])
    else:
        W1 = _matrix(params.W1, "W1", d)
        W2 = _matrix(params.W2, "W2", W1.shape[1])
        b1, bv, Wv = _vector(params.b1, "b1", W1.shape[1]), None, None
        b2 = _vector(params.b2, "b2", W2.shape[1])
    if W2.shape[1] != d:
        fail("W_down" if glu else "W2", f"{d} columns", f"shape {W2.shape}")
    return x, glu, W1, Wv, W2, b1, bv, b2


def ffn_activation(is_glu: bool, activation, variant, variants: dict, activations) -> str:
    """The activation of an FFN call: a GLU's ``variant`` (a key of ``variants``) fixes it (an ``activation``
    given too must agree); else ``activation`` (one of ``activations``) is required."""
    if is_glu and variant is not None:
        choice(variant, "variant", tuple(variants))
        if activation is not None and activation != variants[variant]:
            fail("activation", f"{variants[variant]!r} or None with variant {variant!r}",
                 f"{activation!r}, which contradicts it")
        return variants[variant]
    if activation is None:
        fail("activation", "an activation name (or variant= for a GLU)", "None")
    return choice(activation, "activation", activations)


# ----------------------------------------------------------------------------
# refimpl.mha


def mha_inputs(x_q, x_kv, weights: dict, num_heads, num_kv_heads) -> tuple:
    """``multi_head_attention``'s arguments: (Hq, Hkv, x_q, x_kv, {name: weight}, D, Dv); x_q (B, Lq, d_model),
    x_kv (B, Lk, d_model), W_q (d_model, Hq D), W_k (d_model, Hkv D), W_v (d_model, Hkv Dv), W_o (Hq Dv, d_out)."""
    Hq = count(num_heads, "num_heads", minimum=1)
    Hkv = Hq if num_kv_heads is None else count(num_kv_heads, "num_kv_heads", minimum=1)
    if Hq % Hkv:
        fail("num_heads, num_kv_heads", "num_heads a positive multiple of num_kv_heads", f"{num_heads} and {num_kv_heads}")
    x_q = as_float_array(x_q, "x_q", ndim=3, shape_doc="(B, Lq, d_model)")
    x_kv = as_float_array(x_kv, "x_kv", shape=(x_q.shape[0], None, x_q.shape[2]),
                          shape_doc="(B, Lk, d_model) with B, d_model from x_q")
    W = {n: as_float_array(w, n, ndim=2) for n, w in weights.items()}
    d_model = x_q.shape[2]
    for name, heads in (("W_q", Hq), ("W_k", Hkv), ("W_v", Hkv)):
        if W[name].shape[0] != d_model or W[name].shape[1] % heads:
            hn = "num_heads" if name == "W_q" else "num_kv_heads"
            fail(f"{name}, {hn}", f"{name} of shape (d_model, heads * head_dim) with d_model = {d_model}, heads = {heads}",
                 str(W[name].shape))
    D, Dv = W["W_q"].shape[1] // Hq, W["W_v"].shape[1] // Hkv
    if W["W_k"].shape[1] != Hkv * D:
        fail("W_k", f"(d_model, {Hkv * D}) to match W_q's head dim {D}", str(W["W_k"].shape))
    if W["W_o"].shape[0] != Hq * Dv:
        fail("W_o", f"({Hq * Dv}, d_out)", str(W["W_o"].shape))
    return Hq, Hkv, x_q, x_kv, W, D, Dv


# ----------------------------------------------------------------------------
# refimpl.sinks, refimpl.gated


def sink_logits(sinks, Hq: int) -> np.ndarray:
    """``sinks`` as a float64 (Hq,) array of finite logits."""
    s = as_float_array(sinks, "sinks")
    if s.shape != (Hq,):
        fail("sinks", f"one logit per query head, shape ({Hq},)", str(s.shape))
    return s


def sink_inputs(out, lse, sinks) -> tuple:
    """``apply_sinks``' out (B, Hq, Lq, Dv) finite, lse (B, Hq, Lq) finite or -inf (a row with no visible key),
    sinks (Hq,), each float64."""
    out = as_float_array(out, "out", ndim=4, shape_doc="(B, Hq, Lq, Dv)")
    lse = as_float_array(lse, "lse", shape=out.shape[:3], shape_doc="(B, Hq, Lq) of out", allow_neg_inf=True)
    return out, lse, sink_logits(sinks, out.shape[1])


def no_dropout_with_sinks(dropout_mask) -> None:
    if dropout_mask is not None:
        fail("dropout_mask", "None together with sinks (not defined here)", "a mask")


def visible_scores(visible: np.ndarray, r: np.ndarray, S: np.ndarray, bias) -> None:
    """Every visible score of the sink definition finite (a -inf bias hides a key)."""
    if (visible & ~(np.isfinite(r) & np.isfinite(S)) & (True if bias is None else ~np.isneginf(bias))).any():
        fail("q, k, scale", "every visible score of the definition to be finite",
             "one beyond the float64 range; rescale q, k or scale, or pass softcap=")


def positive_entries(s: np.ndarray, name: str, what: str) -> np.ndarray:
    """Every entry of ``s`` > 0."""
    if not (s > 0).all():
        fail(name, what, repr(float(np.min(s))))
    return s
