"""Library conventions as presets: same arguments, layout and defaults as each library's reference.

Each preset takes and returns arrays in the library's own layout and argument order and calls
the spec underneath, so a user comparing against a library reads one line. Checked against the
sources named (the tests run the pure-PyTorch references beside these when their source is
present, see ``tests/test_mixers_libraries.py``):

| preset                          | library function (version / commit)                                   | layout        | scale       | state vs output    | normaliser eps |
|---------------------------------|------------------------------------------------------------------------|---------------|-------------|--------------------|----------------|
| fla_linear_attn                 | fla 0.5.2 ``fla/ops/linear_attn/naive.py`` ``naive_recurrent_linear_attn`` | (B, L, H, D) | K^-0.5     | update, then read  | 1e-10 (normalize=True; default False) |
| fla_gla                         | ``fla/ops/gla/naive.py`` ``naive_recurrent_gla``                       | (B, L, H, D)  | K^-0.5      | decay+write, read  | none           |
| fla_retention                   | ``fla/ops/retention/naive.py`` ``naive_retention``                     | (B, H, L, D)  | D^-0.5      | (parallel form)    | none           |
| fla_delta_rule                  | ``fla/ops/delta_rule/naive.py`` ``delta_rule_recurrence``              | (B, H, L, D)  | K^-0.5      | update, then read  | none           |
| fla_gated_delta_rule            | ``fla/ops/gated_delta_rule/naive.py`` ``naive_recurrent_gated_delta_rule`` (q, k, v, beta, g); the chunk version takes (q, k, v, g, beta) | (B, L, H, D) | K^-0.5 | decay, delta, read | none |
| mamba_selective_scan            | mamba_ssm 2.3.2 ``ops/selective_scan_interface.py`` ``selective_scan_ref`` | u (B, D, L); B, C (B, N, L) or (B, G, N, L) | - | x_t then y_t = C x_t | - |
| causal_conv1d_ref               | causal-conv1d 1.6.1 ``causal_conv1d_interface.py`` ``causal_conv1d_ref`` | x (B, D, L); weight (D, W) | - | weight[W-1] on x_t | - |
| rwkv4_wkv                       | RWKV-LM ``RWKV-v4/cuda/wkv_cuda.cu`` ``kernel_forward`` (524481d)     | (B, T, C); w = -exp(time_decay) | - | read past, then write | none (exact division) |

The spec's own defaults: layout (B, H, L, D); linear attention scale 1 (Katharopoulos et al.),
gated / delta forms K^-0.5 (as fla); eps 1e-10.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array, flag, leading_shape
from .._validate import mixers as VX
from .._validate.layers import prefix, renamed
from ..preset_registry import Registry, Source
from .delta_rule import delta_rule
from .gated import gated_linear_attention, retention
from .linear_attention import NORMALISER_EPS, linear_attention
from .rwkv4 import wkv
from .ssm import causal_conv1d, selective_scan


def _bhld(x, name=None, ndim=4):
    """(B, L, H, D) <-> (B, H, L, D); with a name, validated first (messages name the library's argument)."""
    if name is not None:
        x = as_float_array(x, name, ndim=ndim)
    return np.swapaxes(x, 1, 2)


def fla_linear_attn(q, k, v, scale=None, normalize=False):
    """fla ``naive_recurrent_linear_attn``: q, k (B, L, H, K) already feature-mapped; returns o (B, L, H, V)."""
    q, k, v = _bhld(q, "q"), _bhld(k, "k"), _bhld(v, "v")
    if scale is None:
        VX.default_scale_features(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o = linear_attention(q, k, v, feature_map="identity", normalize=normalize, eps=NORMALISER_EPS, scale=scale)
    return _bhld(o)


def fla_gla(q, k, v, gk, initial_state=None):
    """fla ``naive_recurrent_gla``: (B, L, H, D) inputs, per-channel log gate gk; returns (o, final state)."""
    q, k, v, gk = _bhld(q, "q"), _bhld(k, "k"), _bhld(v, "v"), _bhld(gk, "gk")
    with renamed(prefix("g:", "gk:")):  # the spec's g is fla's gk
        o, S = gated_linear_attention(q, k, v, gk, initial_state=initial_state)
    return _bhld(o), S


def fla_retention(q, k, v):
    """fla ``naive_retention``: (B, H, L, D); gamma_h = 1 - 2^(-5-h); returns o."""
    return retention(q, k, v, form="parallel")


def fla_delta_rule(q, k, v, beta, initial_state=None):
    """fla ``delta_rule_recurrence``: (B, H, L, D), beta (B, H, L); returns (o, final state)."""
    return delta_rule(q, k, v, beta, initial_state=initial_state)


def fla_gated_delta_rule(q, k, v, beta, g, scale=None, initial_state=None):
    """fla ``naive_recurrent_gated_delta_rule``: (B, L, H, D); beta, g (B, L, H); returns (o, final state)."""
    q, k, v = _bhld(q, "q"), _bhld(k, "k"), _bhld(v, "v")
    beta = _bhld(beta, "beta", as_float_array(beta, "beta").ndim if np.ndim(beta) in (3, 4) else 3)
    o, S = delta_rule(q, k, v, beta, _bhld(g, "g", 3), scale=scale, initial_state=initial_state)
    return _bhld(o), S


def mamba_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    """mamba ``selective_scan_ref`` for real A (D, N) and variable B, C (B, N, L) or (B, G, N, L):
    u, delta, z (B, D, L); D, delta_bias (D,). Channels map to one head of P = D channels per group."""
    u = as_float_array(u, "u", ndim=3)
    b, dim, L = u.shape
    delta = as_float_array(delta, "delta", shape=u.shape, shape_doc="(B, D, L) of u")
    A = as_float_array(A, "A", ndim=2)
    leading_shape(A, "A", (dim,), "(D,) of u")
    Bm, Cm = as_float_array(B, "B"), as_float_array(C, "C")
    VX.mamba_B(Bm)
    Bm = Bm[:, None] if Bm.ndim == 3 else Bm  # (B, G, N, L)
    G = Bm.shape[1]
    leading_shape(Bm, "B", (b, G, A.shape[1], L), "(B, G, N, L)")
    Cm = as_float_array(Cm[:, None] if Cm.ndim == 3 else Cm, "C", shape=Bm.shape, shape_doc="(B, G, N, L) of B")
    VX.head_groups(G, dim, f"channels D = {dim}")
    flag(return_last_state, "return_last_state")

    def heads(x, name):  # (B, D, L) -> (B, G, L, D / G): channel d = g (D / G) + p, as Mamba's repeat
        if x is None:
            return None
        x = as_float_array(x, name, shape=u.shape, shape_doc="(B, D, L) of u")
        return x.reshape(b, G, dim // G, L).transpose(0, 1, 3, 2)

    def per_ch(x, name):
        return None if x is None else as_float_array(x, name, shape=(dim,), shape_doc="(D,)").reshape(G, dim // G)

    out, last = selective_scan(heads(u, "u"), heads(delta, "delta"), A.reshape(G, dim // G, A.shape[1]),
                               Bm.transpose(0, 1, 3, 2), Cm.transpose(0, 1, 3, 2), per_ch(D, "D"), heads(z, "z"),
                               delta_bias=per_ch(delta_bias, "delta_bias"), delta_softplus=delta_softplus)
    out = out.transpose(0, 1, 3, 2).reshape(b, dim, L)
    return (out, last.reshape(b, dim, A.shape[1])) if return_last_state else out


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    """causal-conv1d ``causal_conv1d_ref``: x (B, D, L), weight (D, W), bias (D,); returns (B, D, L)."""
    x = as_float_array(x, "x", ndim=3)
    weight = as_float_array(weight, "weight", ndim=2)
    leading_shape(weight, "weight", (x.shape[1],), "(D,) of x")
    if bias is not None:
        bias = as_float_array(bias, "bias", shape=(x.shape[1],), shape_doc="(D,) of x")[None]
    out = causal_conv1d(np.swapaxes(x, 1, 2)[:, None], weight[None], bias, activation=activation)
    return np.swapaxes(out[:, 0], 1, 2)


def rwkv4_wkv(w, u, k, v):
    """RWKV-4 ``kernel_forward``: k, v (B, T, C); w (C,) = -exp(time_decay), u (C,); returns y (B, T, C)."""
    k, v = as_float_array(k, "k", ndim=3)[:, None], as_float_array(v, "v", ndim=3)[:, None]
    w, u = as_float_array(w, "w", ndim=1), as_float_array(u, "u", ndim=1)
    return wkv(w[None], u[None], k, v, form="stable")[:, 0]


def _src(library, file, function, version) -> Source:
    return Source("docs/conventions.md#mixer-presets", library, file, function, version)


_FLA = "0.5.2 and 0.6.0 reference"
#: name -> preset function, each with its Source (``PRESETS.source(name)``); refimpl.preset_registry.
PRESETS = Registry("preset", [
    ("fla_linear_attn", fla_linear_attn, _src("fla", "fla/ops/linear_attn/naive.py", "naive_recurrent_linear_attn", _FLA)),
    ("fla_gla", fla_gla, _src("fla", "fla/ops/gla/naive.py", "naive_recurrent_gla", _FLA)),
    ("fla_retention", fla_retention, _src("fla", "fla/ops/retention/naive.py", "naive_retention", _FLA)),
    ("fla_delta_rule", fla_delta_rule, _src("fla", "fla/ops/delta_rule/naive.py", "delta_rule_recurrence", _FLA)),
    ("fla_gated_delta_rule", fla_gated_delta_rule, _src("fla", "fla/ops/gated_delta_rule/naive.py",
                                                        "naive_recurrent_gated_delta_rule", _FLA)),
    ("mamba_selective_scan", mamba_selective_scan, _src("mamba_ssm", "mamba_ssm/ops/selective_scan_interface.py",
                                                        "selective_scan_ref", "2.3.2 reference")),
    ("causal_conv1d_ref", causal_conv1d_ref, _src("causal-conv1d", "causal_conv1d/causal_conv1d_interface.py",
                                                  "causal_conv1d_ref", "1.6.1 reference")),
    ("rwkv4_wkv", rwkv4_wkv, _src("RWKV-LM", "RWKV-v4/cuda/wkv_cuda.cu", "kernel_forward", "commit 524481d read")),
])

__all__ = ["PRESETS", "causal_conv1d_ref", "fla_delta_rule", "fla_gated_delta_rule", "fla_gla", "fla_linear_attn",
           "fla_retention", "mamba_selective_scan", "rwkv4_wkv"]
