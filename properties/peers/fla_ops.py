"""flash-linear-attention (fla) Triton kernels: linear attention, simple GLA, GLA, delta rule and
gated delta rule, in their ``fused_recurrent`` and ``chunk`` forms.

Install with ``pip install -e '.[triton]'`` (fla 0.6.0, triton 3.9.0 checked). Without a GPU
the kernels run under Triton's interpreter (``properties.peers.triton_shims``); with one they
run compiled, unchanged. The adapters follow the kinds ``linear_attention`` and
``delta_rule`` (``properties/mixers_linear.py``):

    kind's argument          fla argument (fla/ops/<family>/{fused_recurrent,chunk}.py)
    q, k (B, H, L, K)        q, k (B, T, H, K): axes 1 and 2 swapped (fla's default layout)
    v (B, H, L, V)           v (B, T, H, V)
    g (B, H, L) log-gates    simple_gla / gated_delta_rule g (B, T, H); g None -> zeros
    g (B, H, L, K)           gla gk (B, T, H, K) (fused_recurrent_gla) / g (chunk_gla); None -> zeros
    beta (B, H, L)           beta (B, T, H); (B, H, L, V) -> (B, T, H, V) (fused_recurrent_delta_rule
                             IS_BETA_HEADWISE)
    scale                    scale
    final state (B,H,K,V)    output_final_state=True, state_v_first=False: (B, H, K, V)

The chunk forms use fla's own chunk size, 64 (``chunk_size: int = 64`` throughout
fla/ops/gla/chunk.py, common/chunk_h.py), declared as ``chunk_sizes=(64,)``: the suite
then draws lengths straddling multiples of 64. Precision: float32 (inputs cast to float32,
fla accumulates in float32); ``chunk_delta_rule`` asserts float32 is unsupported
(fla/ops/delta_rule/chunk.py chunk_delta_rule: "does not support float32. Please use
bfloat16"), so it is run in bfloat16, on a GPU only: under Triton's interpreter bfloat16
arithmetic is not supported (``UNSUPPORTED_INTERPRETED``). ``chunk_linear_attn`` is called with
``normalize=False`` (its default True divides by the running key sum) for ``forward`` and with
``normalize=True`` for the kind's ``normalized`` (scale q S_t / (scale q z_t + 1e-10),
fla/ops/linear_attn/utils.py StatefulNormalizeFunction), as is ``fused_recurrent_linear_attn``.

Not shipped: ``fused_recurrent_retention`` / ``chunk_retention`` fix the decay per head
(log(1 - 2^(-5 - h)), fla/ops/retention/*.py) and take no gate argument, so the kinds'
drawn gates cannot reach them; they call the simple-GLA kernels checked here with that
constant gate. No backward: the kinds have none.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core import Unsupported
from ..mixers_linear import DeltaRuleAdapter, LinearAttentionAdapter
from ._common import make, require, version
from .triton_shims import setup as triton_setup

#: kernels left out under Triton's interpreter, with the reason (they run on a GPU)
UNSUPPORTED_INTERPRETED = {
    "fla.chunk_delta_rule[bfloat16]": "bfloat16 only (fla/ops/delta_rule/chunk.py asserts float32 is unsupported), "
                                      "and Triton's interpreter cannot run bfloat16 arithmetic (properties/peers/"
                                      "triton_shims.py; its tl.dot multiplies the uint16 bit patterns: outputs ~1e10)",
}
CHUNK = 64  # fla's chunk size (BT) in every chunk form
PRESETS = {  # family -> the refimpl preset written from fla's naive reference of it
    "linear_attn": "refimpl.mixers.presets.fla_linear_attn",
    "simple_gla": "refimpl.mixers.presets.fla_gla (scalar gate broadcast over K)",
    "gla": "refimpl.mixers.presets.fla_gla",
    "delta_rule": "refimpl.mixers.presets.fla_delta_rule",
    "gated_delta_rule": "refimpl.mixers.presets.fla_gated_delta_rule",
}


def _fla():
    interpreted = triton_setup()  # before triton is imported: TRITON_INTERPRET=1 when no GPU
    with warnings.catch_warnings():  # "Triton is not supported on current platform, roll back to CPU"
        warnings.simplefilter("ignore")
        fla = require("fla", extra="triton")
    torch = require("torch")
    return torch, fla, interpreted


def _to(torch, x, dtype):
    """(B, H, L, ...) float64 array -> contiguous (B, L, H, ...) torch tensor of ``dtype`` (a copy)."""
    return None if x is None else torch.tensor(np.ascontiguousarray(np.swapaxes(np.asarray(x), 1, 2)), dtype=dtype)


def _back(t):
    return np.swapaxes(t.double().numpy(), 1, 2).copy()


def _la(torch, call, dtype, gate):
    """forward(q, k, v, g, scale, chunk_size) for a linear-attention family."""

    def forward(q, k, v, g, scale, chunk_size):
        B, H, L, K = np.shape(q)
        tq, tk, tv = (_to(torch, a, dtype) for a in (q, k, v))
        if gate == "channel" and g is None:
            g = np.zeros((B, H, L, K))
        if gate == "scalar" and g is None:
            g = np.zeros((B, H, L))
        tg = _to(torch, g, dtype) if gate else None
        with torch.no_grad():
            o, S = call(tq, tk, tv, tg, float(scale))
        return _back(o), S.double().numpy().copy()

    return forward


def _normalized(torch, call, dtype):
    """normalized(q, k, v, scale, eps, chunk_size): fla's normalize=True, whose eps is 1e-10."""

    def normalized(q, k, v, scale, eps, chunk_size):
        if eps != 1e-10:
            raise Unsupported(f"fla's normaliser eps is 1e-10 (fla/ops/linear_attn/utils.py), not {eps}")
        tq, tk, tv = (_to(torch, a, dtype) for a in (q, k, v))
        with torch.no_grad():
            o, _ = call(tq, tk, tv, float(scale))
        return _back(o)

    return normalized


def _delta(torch, call, dtype, gated):
    def forward(q, k, v, beta, g, scale, chunk_size):
        B, H, L, K = np.shape(q)
        tq, tk, tv, tb = (_to(torch, a, dtype) for a in (q, k, v, beta))
        tg = _to(torch, np.zeros((B, H, L)) if g is None else g, dtype) if gated else None
        with torch.no_grad():
            o, S = call(tq, tk, tv, tb, tg, float(scale))
        return _back(o), S.double().numpy().copy()

    return forward


def _adapters(torch, fla, interpreted):
    from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    from fla.ops.gla import chunk_gla, fused_recurrent_gla
    from fla.ops.linear_attn import chunk_linear_attn, fused_recurrent_linear_attn
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

    f32, bf16 = torch.float32, torch.bfloat16
    normalized = {  # linear_attn with normalize=True: o / (scale q . cumsum(k) + 1e-10), fla/ops/linear_attn/utils.py
        "fused_recurrent_linear_attn": lambda q, k, v, s: fused_recurrent_linear_attn(q, k, v, scale=s, normalize=True),
        "chunk_linear_attn": lambda q, k, v, s: chunk_linear_attn(q, k, v, scale=s, normalize=True),
    }
    la = {  # name: (call(q, k, v, g, scale) -> (o, S), gate, chunked, dtype)
        "fused_recurrent_linear_attn": (lambda q, k, v, g, s: fused_recurrent_linear_attn(
            q, k, v, scale=s, output_final_state=True, normalize=False), None, False, f32),
        "chunk_linear_attn": (lambda q, k, v, g, s: chunk_linear_attn(
            q, k, v, scale=s, output_final_state=True, normalize=False), None, True, f32),
        "fused_recurrent_simple_gla": (lambda q, k, v, g, s: fused_recurrent_simple_gla(
            q, k, v, g, scale=s, output_final_state=True), "scalar", False, f32),
        "chunk_simple_gla": (lambda q, k, v, g, s: chunk_simple_gla(
            q, k, v, g, scale=s, output_final_state=True), "scalar", True, f32),
        "fused_recurrent_gla": (lambda q, k, v, g, s: fused_recurrent_gla(
            q, k, v, gk=g, scale=s, output_final_state=True), "channel", False, f32),
        "chunk_gla": (lambda q, k, v, g, s: chunk_gla(
            q, k, v, g, scale=s, output_final_state=True), "channel", True, f32),
    }
    delta = {  # name: (call(q, k, v, beta, g, scale), gated, chunked, per-channel beta, dtype)
        "fused_recurrent_delta_rule": (lambda q, k, v, b, g, s: fused_recurrent_delta_rule(
            q, k, v, b, scale=s, output_final_state=True), False, False, True, f32),
        "chunk_delta_rule": (lambda q, k, v, b, g, s: chunk_delta_rule(
            q, k, v, b, scale=s, output_final_state=True), False, True, False, bf16),
        "fused_recurrent_gated_delta_rule": (lambda q, k, v, b, g, s: fused_recurrent_gated_delta_rule(
            q, k, v, g, beta=b, scale=s, output_final_state=True), True, False, False, f32),
        "chunk_gated_delta_rule": (lambda q, k, v, b, g, s: chunk_gated_delta_rule(
            q, k, v, g, b, scale=s, output_final_state=True), True, True, False, f32),
    }
    lib = f"fla {version(fla)} (triton {version(require('triton'))})"
    if interpreted:
        for name in [n for n, spec in delta.items() if spec[-1] == bf16]:
            del delta[name]  # UNSUPPORTED_INTERPRETED
    out = []
    for name, (call, gate, chunked, dtype) in la.items():
        prec = str(dtype).removeprefix("torch.")
        caps = {"final_state"} | ({"gate_scalar"} if gate == "scalar" else set()) | (
            {"gate_channel"} if gate == "channel" else set()) | ({"chunked"} if chunked else set()) | (
            {"normalize"} if name in normalized else set())
        norm = _normalized(torch, normalized[name], dtype) if name in normalized else None
        out.append(make(LinearAttentionAdapter, name=f"fla.{name}[{prec}]", forward=_la(torch, call, dtype, gate),
                        normalized=norm,
                        capabilities=frozenset(caps), chunk_sizes=(CHUNK,) if chunked else None, precision=prec,
                        preset=PRESETS[name.split("_", 1)[1].removeprefix("recurrent_")], library=lib))
    for name, (call, gated, chunked, per_channel, dtype) in delta.items():
        prec = str(dtype).removeprefix("torch.")
        caps = {"final_state"} | ({"gated"} if gated else set()) | ({"chunked"} if chunked else set()) | (
            {"beta_per_channel"} if per_channel else set())
        out.append(make(DeltaRuleAdapter, name=f"fla.{name}[{prec}]", forward=_delta(torch, call, dtype, gated),
                        capabilities=frozenset(caps), chunk_sizes=(CHUNK,) if chunked else None, precision=prec,
                        preset=PRESETS[name.split("_", 1)[1].removeprefix("recurrent_")], library=lib))
    return out


def fla_linear() -> list:
    """fla's linear-attention, GLA and delta-rule kernels (Triton; interpreted without a GPU)."""
    torch, fla, interpreted = _fla()
    return _adapters(torch, fla, interpreted)
