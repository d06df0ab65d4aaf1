"""jax.nn.dot_product_attention (XLA implementation, CPU, float64 inputs, float32 softmax), with lse.

Preset: ``refimpl.conventions.JAX``. Read in jax 0.10.2 jax/_src/nn/functions.py
(dot_product_attention, _dot_product_attention_core, _apply_masks,
_get_causal_mask, _get_window_mask, _get_large_negative). Layout BTNH; this
adapter transposes from the spec's (B, H, L, D). float64 needs
``jax_enable_x64``, which the factory turns on (process-wide).

    spec keyword            jax argument
    causal, top_left        is_causal=True (tril, no Lk - Lq offset)
    window, top_left        local_window_size=(left, right) (j in [i - left, i + right]);
                            a None side is passed as Lk (covers every key)
    causal/window,          mask= the bool tril / band with offset o = Lk - Lq (JAX has no
      bottom_right          bottom-right flag; its mask argument is the documented way)
    mask= bool array        mask= (True = attend), broadcast to (B, N, T, S)
    bias=                   bias=
    Hkv < Hq                K kv heads, N = G K query heads (query head h reads kv head h // G)
    scale=                  scale=
    lse                     return_residual=True: logsumexp of the masked logits

The softmax "is always carried out in fp32" (_dot_product_attention_core casts the
masked logits to float32): the adapter is held to the float32 bound (precision
"float32") although its inputs, logits and P V products are float64.

Not declared: dv_ne_d (value's head dim must equal query's), softcap, dropout,
backward (jax.grad would work; not wired), mask predicates. Masked logits are
replaced by a large finite negative, not -inf: a fully masked row averages all
values and its lse is mask value + log Lk. The adapter declares ``convention="jax"``,
so the properties expect exactly that (``AttentionConvention.apply``) and check
everything else as for any adapter: no xfail entry is needed.
"""

from __future__ import annotations

import numpy as np

from ..attention_impls import AttentionAdapter
from ..core import Unsupported
from ._common import make, require, version

PRESET = "refimpl.conventions.JAX"
CAPABILITIES = frozenset({"lse", "causal", "top_left", "window", "mask_array", "bias", "gqa", "lq_ne_lk", "scale"})


def jax_attention():
    jax = require("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def forward(q, k, v, *, mask=None, causal=False, align="bottom_right", window=None, scale=None, bias=None, **rest):
        if any(val is not None for val in rest.values()):
            raise Unsupported(f"jax adapter: {sorted(rest)} not supported")
        if mask is not None and not isinstance(mask, np.ndarray):
            raise Unsupported("jax adapter: mask predicates not supported (pass a bool array)")
        B, Hq, Lq, _ = q.shape
        Lk = k.shape[2]
        kw = {}
        full = None if mask is None else np.broadcast_to(mask, (B, Hq, Lq, Lk))
        if align == "top_left":
            kw["is_causal"] = bool(causal)
            if window is not None:
                kw["local_window_size"] = tuple(Lk if w is None else int(w) for w in window)
        elif causal or window is not None:
            i, j, o = np.arange(Lq)[:, None], np.arange(Lk)[None, :], Lk - Lq
            band = np.ones((Lq, Lk), bool)
            if causal:
                band &= j <= i + o
            if window is not None and window[0] is not None:
                band &= j >= i + o - window[0]
            if window is not None and window[1] is not None:
                band &= j <= i + o + window[1]
            full = band[None, None] if full is None else full & band
        if full is not None:
            kw["mask"] = jnp.asarray(np.ascontiguousarray(full))
        if bias is not None:
            kw["bias"] = jnp.asarray(np.broadcast_to(bias, (B, Hq, Lq, Lk)))
        t = [jnp.asarray(np.swapaxes(np.asarray(a, np.float64), 1, 2)) for a in (q, k, v)]  # BHLD -> BLHD
        out, lse = jax.nn.dot_product_attention(*t, scale=scale, implementation="xla", return_residual=True, **kw)
        return np.swapaxes(np.asarray(out), 1, 2), np.swapaxes(np.asarray(lse), 1, 2)

    return make(AttentionAdapter, name="jax.nn.dot_product_attention", forward=forward,
                capabilities=CAPABILITIES, precision="float32", preset=PRESET, convention="jax",
                library=f"jax {version(jax)}")
