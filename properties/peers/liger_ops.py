"""Liger-Kernel Triton kernels: RMSNorm, LayerNorm, cross-entropy, RoPE, SwiGLU and GeGLU.

Install with ``pip install -e '.[triton]'`` (liger-kernel 0.8.5, triton 3.9.0 checked).
Without a GPU the kernels run under Triton's interpreter (``properties.peers.triton_shims``;
Liger's RMSNorm needs the scalar-argument shim: ``offset.to(...)`` on a Python float), with one
compiled and unchanged. Each adapter calls the library's ``torch.autograd.Function`` (the
kernels' own entry points, liger_kernel/ops/*.py) on float32 tensors; gradients by
``.backward()`` through them. Precision: float32 (the interpreter cannot run bfloat16
arithmetic: see ``triton_shims``).

    adapter                          library entry point                            kind
    liger.norms[llama]               LigerRMSNormFunction (rms_norm.py; offset 0,   norm
                                     casting_mode "llama"), LigerLayerNormFunction
                                     (layer_norm.py)
    liger.norms[gemma]               the same RMSNorm with offset 1.0, casting "gemma"  norm (gemma_offset)
    liger.cross_entropy              LigerCrossEntropyFunction (cross_entropy.py;    loss
                                     reduction "mean"; the gradient is computed in the
                                     forward and scaled in backward)
    liger.fused_linear_cross_entropy LigerFusedLinearCrossEntropyFunction           loss
                                     (fused_linear_cross_entropy.py) with hidden = the
                                     logits and head weight I (V x V): logits = h I^T = z
                                     exactly (products by 0 and 1, sums with zeros), and the
                                     gradient w.r.t. h is that w.r.t. z
    liger.rope                       LigerRopeFunction (rope.py; HF rotate_half      rope
                                     layout; cos/sin tables built as HF Llama builds them,
                                     in float32: inv_freq = 1 / base^(2i/d), emb = cat(f, f))

    liger.swiglu                     LigerSiLUMulFunction (swiglu.py; gate_multiplier  ffn, partial:
                                     and down_multiplier 1): silu(a) * b                 gated_only
    liger.geglu                      LigerGELUMulFunction (geglu.py): gelu_tanh(a) * b   (declines every
                                     (libdevice.tanh: the interpreter shim, NumPy tanh)  other activation)

Weights the kind passes as None are ones (RMSNorm/LayerNorm weight) and zeros (LayerNorm bias):
the kernels take tensors; x * 1 and x + 0 are exact. The causal-LM and SFT losses are the
cross-entropy kernel on the shifted logits and labels (-100 where the response mask is False),
as Liger's ``LigerForCausalLMLoss`` does. SwiGLU and GeGLU compute only the gated product of a GLU
(Liger's LigerSwiGLUMLP does the projections in torch): they declare the ffn kind's partial
capability ``gated_only`` (``gated``, ``gated_backward``), and each declines the activations it
does not compute; the properties of the whole MLP and of ``act`` are unsupported for them.
"""

from __future__ import annotations

import numpy as np

from refimpl.ffn import ACTIVATIONS

from ..ffn import FFNAdapter
from ..losses import LossAdapter
from ..norms import NormAdapter
from ..rope import RopeAdapter
from ._common import make, require, version
from .triton_shims import setup as triton_setup


def _lib():
    triton_setup()  # before triton is imported: TRITON_INTERPRET=1 when no GPU
    torch = require("torch")
    liger = require("liger_kernel", extra="triton")
    from importlib.metadata import version as dist_version

    return torch, liger, f"liger-kernel {dist_version('liger-kernel')} (triton {version(require('triton'))})"


def _np(t):
    return None if t is None else t.detach().double().numpy().copy()


def _norms(torch, lib, conv: str):
    from liger_kernel.ops.layer_norm import LigerLayerNormFunction
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    f32 = torch.float32
    offset = 1.0 if conv == "gemma" else 0.0

    def T(a, grad=False):
        return torch.tensor(np.asarray(a, dtype=np.float64), dtype=f32, requires_grad=grad)

    def params(x, w, b=None, grad=False, off=0.0):
        d = np.shape(x)[-1]
        tw = T(np.ones(d) - off if w is None else w, grad)  # None: the identity scale, (1 - off) + off
        tb = T(np.zeros(d) if b is None else b, grad)
        return tw, tb

    def rms(x, w, eps):
        tw, _ = params(x, w, off=offset)
        with torch.no_grad():
            return _np(LigerRMSNormFunction.apply(T(x), tw, float(eps), offset, conv, False))

    def ln(x, w, b, eps):
        tw, tb = params(x, w, b)
        with torch.no_grad():
            return _np(LigerLayerNormFunction.apply(T(x), tw, tb, float(eps)))

    def rms_bwd(x, dy, w, eps):
        tx = T(x, True)
        tw, _ = params(x, w, grad=True, off=offset)
        LigerRMSNormFunction.apply(tx, tw, float(eps), offset, conv, False).backward(T(dy))
        return _np(tx.grad), None if w is None else _np(tw.grad)

    def ln_bwd(x, dy, w, b, eps):
        tx = T(x, True)
        tw, tb = params(x, w, b, grad=True)
        LigerLayerNormFunction.apply(tx, tw, tb, float(eps)).backward(T(dy))
        return _np(tx.grad), None if w is None else _np(tw.grad), None if b is None else _np(tb.grad)

    caps = {"backward"} | ({"gemma_offset"} if conv == "gemma" else set())
    return make(NormAdapter, name=f"liger.norms[{conv}]", layer_norm=ln, rms_norm=rms, layer_norm_backward=ln_bwd,
                rms_norm_backward=rms_bwd, capabilities=frozenset(caps), precision="float32",
                preset=f"refimpl.norms (rms_norm weight_offset={offset})", library=lib)


def _cross_entropy(torch, lib, fused: bool):
    from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    def call(z, t, ii, grad=False):
        zt = torch.tensor(np.asarray(z, dtype=np.float64), dtype=torch.float32, requires_grad=grad)
        tt = torch.tensor(np.asarray(t, dtype=np.int64))
        if fused:  # hidden = z, head W = I: logits = z W^T = z exactly, d hidden = d logits I = d logits
            eye = torch.eye(zt.shape[-1], dtype=torch.float32)
            return zt, LigerFusedLinearCrossEntropyFunction.apply(zt, eye, tt, None, None, int(ii), 0.0, 0.0, "mean")[0]
        return zt, LigerCrossEntropyFunction.apply(zt, tt, None, int(ii), 0.0, 0.0, "mean")[0]

    def ce(z, t, ii):
        with torch.no_grad():
            return float(call(z, t, ii)[1])

    def ce_grad(z, t, ii):
        zt, loss = call(z, t, ii, grad=True)
        loss.backward()
        return _np(zt.grad)

    def lm(z, tok):
        V = np.shape(z)[-1]
        return ce(np.asarray(z)[:, :-1].reshape(-1, V), np.asarray(tok)[:, 1:].reshape(-1), -100)

    def sft(z, tok, mask):
        return lm(z, np.where(mask, tok, -100))

    name = "liger.fused_linear_cross_entropy" if fused else "liger.cross_entropy"
    return make(LossAdapter, name=name, cross_entropy=ce, cross_entropy_grad=ce_grad,
                causal_lm_loss=lm, sft_loss=sft, capabilities=frozenset({"grad", "lm"}), precision="float32",
                preset="refimpl.losses (mean over counted rows)", library=lib)


def _rope(torch, lib):
    from liger_kernel.ops.rope import LigerRopeFunction

    def apply(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
        B, H, L, D = np.shape(x)
        d = D if rotary_dim is None else int(rotary_dim)
        inv_freq = 1.0 / (float(base) ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # HF Llama, float32
        pos = torch.tensor(np.broadcast_to(np.asarray(positions), (B, L)).copy()).float()
        freqs = pos[..., None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        xt = torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)
        with torch.no_grad():
            q, _ = LigerRopeFunction.apply(xt, xt.clone(), emb.cos(), emb.sin(), None, 1, d)
        return _np(q)

    return make(RopeAdapter, name="liger.rope", apply=apply, capabilities=frozenset({"partial"}), precision="float32",
                preset="refimpl.apply_rope (layout 'half')", library=lib)


def _glu(torch, lib, activation: str):
    """SwiGLU (silu) or GeGLU (gelu_tanh): c = act(a) * b and its gradients (a partial ffn)."""
    from liger_kernel.ops.geglu import LigerGELUMulFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    fn = {"silu": LigerSiLUMulFunction, "gelu_tanh": LigerGELUMulFunction}[activation]

    def T(x, grad=False):
        return torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32, requires_grad=grad)

    def check(name):
        if name != activation:  # never drawn: the adapter declines it
            raise ValueError(f"activation: expected {activation!r} (all liger {fn.__name__} computes), got {name!r}")

    def gated(name, a, b):
        check(name)
        with torch.no_grad():
            return _np(fn.apply(T(a), T(b)))

    def gated_backward(name, a, b, dc):
        check(name)
        ta, tb = T(a, True), T(b, True)
        fn.apply(ta, tb).backward(T(dc))
        return _np(ta.grad), _np(tb.grad)

    label = {"silu": "swiglu", "gelu_tanh": "geglu"}[activation]
    return make(FFNAdapter, name=f"liger.{label}", act=None, ffn=None, gated=gated, gated_backward=gated_backward,
                capabilities=frozenset({"gated_only", "gated_backward"}), precision="float32",
                declines={"activation": {a for a in ACTIVATIONS if a != activation}},
                preset=f"refimpl.ffn.glu_split (activation {activation!r})", library=lib)


def liger() -> list:
    """Liger-Kernel's RMSNorm/LayerNorm (llama and gemma RMSNorm), cross-entropy (plain and fused
    linear), RoPE, SwiGLU and GeGLU."""
    torch, _, lib = _lib()
    return [_norms(torch, lib, "llama"), _norms(torch, lib, "gemma"), _cross_entropy(torch, lib, False),
            _cross_entropy(torch, lib, True), _rope(torch, lib), _glu(torch, lib, "silu"), _glu(torch, lib, "gelu_tanh")]
