"""Linear-time sequence mixers: one module per family, each opening with its recurrence.

* :mod:`.gated`: the decayed outer-product recurrence (linear attention core, RetNet, GLA)
* :mod:`.linear_attention`: feature maps, the normaliser, Performer FAVOR+
* :mod:`.random_features`: trigonometric random Fourier features (Bochner)
* :mod:`.gated_kernel`: linear attention with data-dependent forget / input gates
* :mod:`.linformer`: Linformer's length projections of K and V
* :mod:`.delta_rule`: DeltaNet and gated DeltaNet (recurrent and WY/UT chunked)
* :mod:`.rwkv4`: RWKV-4 WKV (exact, numerically stable, parallel, log-depth prefix scan)
* :mod:`.ssm`: selective state-space scan (Mamba), associative scan, convolution form, Mamba-2 SSD
  (scalar decay per head, chunked), causal conv1d
* :mod:`.cost`: state size and FLOPs per token beside softmax attention
* :mod:`.presets`: library conventions (flash-linear-attention, mamba, RWKV-4)

Layout (B, H, L, D) as attention throughout; every form of a family shares one setup.
"""

from . import cost, delta_rule, gated, gated_kernel, linear_attention, linformer, presets, random_features, rwkv4, ssm
from .delta_rule import delta_rule as delta_rule_attention
from .gated import gated_linear_attention, retention, retnet_gammas
from .linear_attention import favor_features, linear_attention as linear_attention_fn, orthogonal_gaussian, performer_attention
from .rwkv4 import wkv
from .ssm import causal_conv1d, selective_scan, ssd

__all__ = ["cost", "delta_rule", "gated", "gated_kernel", "linear_attention", "linformer", "presets", "random_features",
           "rwkv4", "ssm",
           "delta_rule_attention", "gated_linear_attention", "retention", "retnet_gammas", "favor_features",
           "linear_attention_fn", "orthogonal_gaussian", "performer_attention", "wkv", "causal_conv1d",
           "selective_scan", "ssd"]
