"""Hybrid stacks: attention blocks, linear-attention mixers and Mamba layers interleaved in one residual stream.

docs/hybrid.md#hybrid-stacks. Each layer reads and writes the residual stream x (B, L, d):

* :class:`refimpl.block.Block`: a pre-norm transformer block (attention then FFN,
  :func:`refimpl.block.block`), with its own self-attention mask (``masks[i]``: a window for a
  sliding-window layer, None for a full one; ANDed with ``causal``);
* :class:`MambaLayer`: x + MambaMixer(norm(x)) (mamba_ssm ``modules/block.py`` ``Block`` with
  ``mlp_cls`` Identity; Jamba / Zamba style SSM layers);
* :class:`LinearAttentionLayer`: x + (linear attention over the heads of norm(x) W_q, W_k, W_v) W_o,
  causal, with a feature map and the normaliser (:func:`refimpl.mixers.linear_attention.linear_attention`).

The composition is the definition: layer i + 1 reads exactly what layer i wrote. The stack's
receptive field is that of its attention layers (:func:`refimpl.receptive_field.receptive_field`
with one mask per layer); Mamba and linear-attention layers are causal and see the whole prefix.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from . import block as _block
from ._validate import as_float_array, finite_result, flag, instance
from ._validate import layers as _V
from .mamba_block import MambaWeights, mamba_mixer
from .mixers.linear_attention import FEATURE_MAPS, linear_attention


@dataclasses.dataclass(frozen=True)
class MambaLayer:
    """x + mamba_mixer(norm(x), mixer): a pre-norm residual SSM layer."""

    norm: _block.Norm
    mixer: MambaWeights

    def __post_init__(self):
        instance(self.norm, "norm", _block.Norm)
        instance(self.mixer, "mixer", MambaWeights)

    def num_params(self) -> int:
        return self.norm.num_params() + self.mixer.num_params()


@dataclasses.dataclass(frozen=True)
class LinearAttentionLayer:
    """x + LinAttn(norm(x)) W_o with the projections of ``attn`` (a :class:`refimpl.block.Attention`, no GQA,
    no rope) and ``feature_map`` (a name of ``refimpl.mixers.linear_attention.FEATURE_MAPS``); causal, normalised."""

    norm: _block.Norm
    attn: _block.Attention
    feature_map: str = "elu+1"

    def __post_init__(self):
        instance(self.norm, "norm", _block.Norm)
        instance(self.attn, "attn", _block.Attention)
        _V.linear_attention_layer(self.attn, self.feature_map, FEATURE_MAPS)

    def num_params(self) -> int:
        return self.norm.num_params() + self.attn.num_params()


LAYER_TYPES = (_block.Block, MambaLayer, LinearAttentionLayer)


def _linear_attention_branch(h, layer: LinearAttentionLayer):
    a = layer.attn
    B, L, _ = h.shape
    H = a.num_heads
    heads = lambda W: (h @ W).reshape(B, L, H, W.shape[1] // H).transpose(0, 2, 1, 3)  # noqa: E731  (not -1:
    # ambiguous for an empty batch or sequence)
    with np.errstate(over="ignore", invalid="ignore"):
        q, k, v = (finite_result(heads(W), "a projection", "x, layers") for W in (a.W_q, a.W_k, a.W_v))
    o = linear_attention(q, k, v, feature_map=layer.feature_map, causal=True)
    with np.errstate(over="ignore", invalid="ignore"):
        return finite_result(o.transpose(0, 2, 1, 3).reshape(B, L, a.W_o.shape[0]) @ a.W_o, "the output projection",
                             "x, layers")


def hybrid_stack(x, layers: Sequence, *, masks=None, causal: bool = True, final_norm: Optional[_block.Norm] = None):
    """The layers applied in order to x (B, L, d), then ``final_norm`` (module doc). ``masks``: one entry per
    layer, None or a self-attention mask for a Block (a ``refimpl.masks.Mask`` or bool (L, L)); it must be None
    for the other layer types, which are causal by construction."""
    x = as_float_array(x, "x", ndim=3)
    layers = _V.hybrid_layers(layers, LAYER_TYPES)
    masks = _block.layer_masks(masks, len(layers))
    causal = flag(causal, "causal")
    if final_norm is not None:
        instance(final_norm, "final_norm", _block.Norm)
    h = x
    for i, (layer, m) in enumerate(zip(layers, masks)):
        if isinstance(layer, _block.Block):
            with _V.renamed(_V.prefix("mask:", f"masks[{i}]:")):  # the block's mask is the caller's masks[i]
                h = _block.block(h, layer, causal=causal, mask=m)
            continue
        _V.causal_layer(i, layer, m, h.shape[2])
        branch = (mamba_mixer(layer.norm(h), layer.mixer) if isinstance(layer, MambaLayer)
                  else _linear_attention_branch(layer.norm(h), layer))
        with np.errstate(over="ignore", invalid="ignore"):
            h = finite_result(h + branch, "the residual stream", "x, layers")
    return h if final_norm is None else final_norm(h)


__all__ = ["LAYER_TYPES", "LinearAttentionLayer", "MambaLayer", "hybrid_stack"]
