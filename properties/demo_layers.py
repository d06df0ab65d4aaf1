"""Low-precision adapters of the layer kinds on real libraries (torch 2.13 CPU, transformers),
correct and wrong, for the README's precision examples and tests/test_precision_layers.py.

Each factory takes a precision ("float32", "bfloat16"; "float16" where torch's CPU kernels
have it) and returns an adapter declaring it; the inputs reach the library as tensors of that
dtype. Zero-argument groups for ``REFIMPL_IMPLS`` (each returns float32 and bfloat16 adapters,
correct and wrong)::

    REFIMPL_IMPLS=properties.demo_layers:norms python -m properties --kind norm --impl "torch.norms[float32]"
    REFIMPL_IMPLS=properties.demo_layers:losses ...   REFIMPL_IMPLS=properties.demo_layers:ropes ...

Importing this module imports no library; a missing one is an ``ImportError`` naming the
extra that brings it (``pip install -e ".[peers]"``).
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from refimpl import ffn as Fn

from . import block as _block
from . import ffn as _ffn
from . import formats as _formats
from . import losses as _losses
from . import norms as _norms
from . import rope as _rope

_CAST_DT = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")


def _need(name):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{name} is not installed: these adapters need it (pip install -e \".[peers]\")") from e


def _dt(precision):
    torch = _need("torch")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def _t(a, precision, grad=False):
    torch = _need("torch")
    if a is None:
        return None
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=_dt(precision), requires_grad=grad)


def _np(t):
    return None if t is None else t.detach().double().numpy()


def torch_norms(precision):
    torch = _need("torch")
    F = torch.nn.functional

    def ln(x, w, b, eps):
        return _np(F.layer_norm(_t(x, precision), (np.shape(x)[-1],), _t(w, precision), _t(b, precision), eps))

    def rms(x, w, eps):
        return _np(F.rms_norm(_t(x, precision), (np.shape(x)[-1],), _t(w, precision), eps))

    def grads(fn, x, dy, *params):
        ts = [_t(a, precision, grad=True) for a in (x, *params)]
        fn(*ts).backward(_t(dy, precision))
        return tuple(None if t is None else _np(t.grad) for t in ts)

    def ln_bwd(x, dy, w, b, eps):
        return grads(lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, eps), x, dy, w, b)

    def rms_bwd(x, dy, w, eps):
        return grads(lambda x, w: F.rms_norm(x, (x.shape[-1],), w, eps), x, dy, w)

    def bn(x, w, b, eps):
        return _np(F.batch_norm(_t(x, precision), None, None, _t(w, precision), _t(b, precision), training=True, eps=eps))

    def gn(x, G, w, b, eps):
        return _np(F.group_norm(_t(x, precision), G, _t(w, precision), _t(b, precision), eps))

    return _norms.NormAdapter(f"torch.norms[{precision}]", ln, rms, ln_bwd, rms_bwd, bn, gn,
                             frozenset({"backward", "channel_norms"}), precision=precision)


def torch_losses(precision):
    """torch's F.cross_entropy on logits of the precision (its log_softmax accumulates in float32,
    the loss has the logits' dtype); the all-ignored batch (torch: NaN) is the spec's 0.0."""
    torch = _need("torch")
    F = torch.nn.functional

    def ce(z, t, ii):
        if not (np.asarray(t) != ii).any():
            return 0.0
        return float(F.cross_entropy(_t(z, precision), torch.tensor(t), ignore_index=int(ii)).item())

    def ce_grad(z, t, ii):
        if not (np.asarray(t) != ii).any():
            return np.zeros_like(z)
        zt = _t(z, precision, grad=True)
        F.cross_entropy(zt, torch.tensor(t), ignore_index=int(ii)).backward()
        return _np(zt.grad)

    def lm(z, tok):
        V = z.shape[-1]
        return ce(z[:, :-1].reshape(-1, V), np.asarray(tok)[:, 1:].reshape(-1), -100)

    return _losses.LossAdapter(f"torch.cross_entropy[{precision}]", ce, ce_grad, lm,
                              lambda z, tok, m: lm(z, np.where(m, tok, -100)), precision=precision)


def hf_causal_lm_loss(precision):
    """transformers' ``ForCausalLMLoss`` (transformers/loss/loss_utils.py; upcasts the logits to
    float32, pads and shifts the labels, F.cross_entropy mean over counted labels) on logits of
    the precision; SFT through labels = tokens where the response mask holds, else -100 (HF's
    convention for prompt masking). The all-ignored batch (NaN there) is the spec's 0.0."""
    torch = _need("torch")
    _need("transformers")
    from transformers.loss.loss_utils import ForCausalLMLoss

    def lm(z, labels):
        labels = np.asarray(labels)
        if not (labels[:, 1:] != -100).any():
            return 0.0
        return float(ForCausalLMLoss(_t(z, precision), torch.tensor(labels), vocab_size=z.shape[-1]).item())

    def ce(z, t, ii):  # cross_entropy is required by the kind: HF's fixed_cross_entropy
        from transformers.loss.loss_utils import fixed_cross_entropy

        if not (np.asarray(t) != ii).any():
            return 0.0
        return float(fixed_cross_entropy(_t(z, precision).float(), torch.tensor(t), ignore_index=int(ii)).item())

    return _losses.LossAdapter(f"hf.ForCausalLMLoss[{precision}]", ce, None, lm,
                              lambda z, tok, m: lm(z, np.where(m, tok, -100)), frozenset({"lm"}), precision=precision)


def hf_llama_rope(precision):
    """HF Llama's RoPE (transformers/models/llama/modeling_llama.py: ``LlamaRotaryEmbedding``,
    ``apply_rotary_pos_emb``; the frequencies from modeling_rope_utils' ``ROPE_INIT_FUNCTIONS``)
    on x of the precision: half layout, full rotary dim. "dynamic" builds its frequencies with
    ``_compute_dynamic_ntk_parameters(config, seq_len=...)`` and the forward's four lines, since
    the module would take seq_len from the positions instead of the case's ``seq_len``."""
    torch = _need("torch")
    _need("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    def apply(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
        B, H, L, D = np.shape(x)
        params = {"rope_type": "default", "rope_theta": base}
        if scaling:
            params.update({k: v for k, v in scaling.items() if k not in ("seq_len", "max_position_embeddings")})
        config = LlamaConfig(hidden_size=D * H, num_attention_heads=H, num_key_value_heads=H, head_dim=D,
                             max_position_embeddings=(scaling or {}).get(
                                 "max_position_embeddings",
                                 max(4096, int((scaling or {}).get("original_max_position_embeddings", 0)
                                               * (scaling or {}).get("factor", 1)))),
                             rope_parameters=params)
        xt = _t(x, precision)
        pos = torch.tensor(np.broadcast_to(np.asarray(positions), (B, L)).copy())
        if scaling and scaling["rope_type"] == "dynamic":
            inv_freq, attn = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=scaling["seq_len"])
            freqs = pos[..., None].float() * inv_freq.float()
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = (emb.cos() * attn).to(xt.dtype), (emb.sin() * attn).to(xt.dtype)
        else:
            cos, sin = LlamaRotaryEmbedding(config)(xt, pos)
        y, _ = apply_rotary_pos_emb(xt, xt, cos, sin)
        return _np(y)

    return _rope.RopeAdapter(f"hf.LlamaRotaryEmbedding[{precision}]", apply, frozenset({"scaling"}),
                            precision=precision)


def torch_ffn(precision):
    """torch.nn.functional activations and an MLP / GLU written with torch ops in the precision
    (x @ W + b, act, gate, h * mask / (1 - p)); gradients by autograd."""
    torch = _need("torch")
    F = torch.nn.functional
    acts = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda u: F.gelu(u, approximate="tanh"), "silu": F.silu,
            "sigmoid": torch.sigmoid}

    def act(name, u):
        return _np(acts[name](_t(u, precision)))

    def forward(x, params, tensors, activation, keep, p):
        glu = isinstance(params, Fn.GLUParams)
        P = dict(zip([f.name for f in dataclasses.fields(params)], tensors))
        lin = (lambda h, W, b: h @ W if b is None else h @ W + b)
        W1, b1, W2, b2 = ((P["W_gate"], P["b_gate"], P["W_down"], P["b_down"]) if glu else
                          (P["W1"], P["b1"], P["W2"], P["b2"]))
        h = acts[activation](lin(x, W1, b1))
        if glu:
            h = h * lin(x, P["W_up"], P["b_up"])
        if keep is not None:
            h = h * torch.tensor(keep).to(h.dtype) / (1 - p)
        return lin(h, W2, b2)

    def run(x, params, activation, keep, p):
        return _np(forward(_t(x, precision), params,
                           [_t(getattr(params, f.name), precision) for f in dataclasses.fields(params)], activation, keep, p))

    def backward(x, dy, params, activation, keep, p):
        xt = _t(x, precision, grad=True)
        ps = [None if getattr(params, f.name) is None else _t(getattr(params, f.name), precision, grad=True)
              for f in dataclasses.fields(params)]
        forward(xt, params, ps, activation, keep, p).backward(_t(dy, precision))
        return _np(xt.grad), type(params)(*(None if t is None else _np(t.grad) for t in ps))

    return _ffn.FFNAdapter(f"torch.ffn[{precision}]", act, run, backward, precision=precision)


def torch_block(precision):
    """A transformer stack written with torch ops in the precision: F.layer_norm / F.rms_norm
    (g = offset + w), F.scaled_dot_product_attention (GQA, is_causal), the MLP / GLU of
    ``torch_ffn``, residual adds; pre-norm, parallel and decoder (cross-attention) blocks."""
    torch = _need("torch")
    F = torch.nn.functional
    acts = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda u: F.gelu(u, approximate="tanh"), "silu": F.silu,
            "sigmoid": torch.sigmoid}

    def T(a):
        return _t(a, precision)

    def norm(n, h):
        if n.kind == "layernorm":
            return F.layer_norm(h, (h.shape[-1],), T(n.weight), T(n.bias), n.eps)
        return F.rms_norm(h, (h.shape[-1],), T(n.weight_offset + np.asarray(n.weight)), n.eps)

    def attn(hq, hkv, a, causal):
        B, Lq, _ = hq.shape
        H, Hkv = a.num_heads, a.num_kv_heads or a.num_heads

        def heads(x, W, n):
            return (x @ T(W)).reshape(B, x.shape[1], n, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(hq, a.W_q, H), heads(hkv, a.W_k, Hkv), heads(hkv, a.W_v, Hkv),
                                             is_causal=causal, enable_gqa=H != Hkv)
        return out.transpose(1, 2).reshape(B, Lq, -1) @ T(a.W_o)

    def ff(h, blk):
        P = {f.name: None if getattr(blk.ffn, f.name) is None else T(getattr(blk.ffn, f.name))
             for f in dataclasses.fields(blk.ffn)}

        def lin(v, W, b):
            return v @ W if b is None else v @ W + b

        if isinstance(blk.ffn, Fn.GLUParams):
            g = acts[blk.activation](lin(h, P["W_gate"], P["b_gate"])) * lin(h, P["W_up"], P["b_up"])
            return lin(g, P["W_down"], P["b_down"])
        return lin(acts[blk.activation](lin(h, P["W1"], P["b1"])), P["W2"], P["b2"])

    def stack(x, blocks, arrangement, causal, memory, scale, final_norm):
        h, mem = T(x), T(memory)
        for blk in blocks:
            n1 = norm(blk.norm1, h)
            if arrangement == "parallel":
                h = h + scale * (attn(n1, n1, blk.attn, causal) + ff(n1, blk))
                continue
            h = h + attn(n1, n1, blk.attn, causal)
            if mem is not None:
                h = h + attn(norm(blk.norm_cross, h), mem, blk.cross_attn, False)
            h = h + ff(norm(blk.norm2, h), blk)
        return _np(h if final_norm is None else norm(final_norm, h))

    return _block.BlockAdapter(f"torch.stack[{precision}]", stack, precision=precision)


def torch_cast(precision, declared=None):
    """torch's Tensor.to(fmt) from a tensor of the precision (a kernel taking bf16 / fp16 input):
    e4m3fn saturates in torch 2.13 (declared), the others follow the format's rule."""
    torch = _need("torch")
    dts = {f: getattr(torch, f) for f in _CAST_DT}

    def cast(x, fmt):
        return _np(_t(x, precision).to(dts[fmt]))

    return [_formats.CastAdapter(f"torch.to_float8_e4m3fn[{precision}]", cast,
                                frozenset({"float8_e4m3fn", "saturate"}), precision=declared or precision),
            _formats.CastAdapter(f"torch.to_float8_e5m2[{precision}]", cast, frozenset({"float8_e5m2"}),
                                precision=declared or precision)]


def torch_matmul(precision):
    """torch CPU matmul of bf16 / fp16 tensors (float32 accumulation, the output in the input
    dtype) and of their float32 upcasts (output float32)."""
    torch = _need("torch")

    def matmul(a, b, inp, out):
        A, B = _t(a, precision).to(getattr(torch, inp)), _t(b, precision).to(getattr(torch, inp))
        if out == "float32":
            return _np(A.float() @ B.float())
        return _np(A @ B)

    return _formats.MatmulAdapter(f"torch.matmul[{precision}]", matmul,
                                 frozenset({"bfloat16->float32", "bfloat16->bfloat16", "float16->float16",
                                            "float16->float32"}), precision=precision)


# ----------------------------------------------------------------------------
# wrong adapters (each a real bug class, made in the precision)


def torch_layer_norm_by_moments(precision):
    """torch's norms, but LayerNorm with var = E[x^2] - E[x]^2 (one pass) in the precision."""
    torch = _need("torch")
    good = torch_norms(precision)

    def ln(x, w, b, eps):
        t = _t(x, precision)
        mu = t.mean(-1, keepdim=True)
        var = (t * t).mean(-1, keepdim=True) - mu * mu
        y = (t - mu) / torch.sqrt(var.clamp_min(0) + eps)
        y = y if w is None else y * _t(w, precision)
        return _np(y if b is None else y + _t(b, precision))

    return dataclasses.replace(good, name=f"torch.layer_norm_by_moments[{precision}]", layer_norm=ln)


def hf_causal_lm_loss_double_shift(precision):
    """HF's ForCausalLMLoss handed labels already shifted (it shifts them again: t pairs with t + 2)."""
    good = hf_causal_lm_loss(precision)

    def shifted(z, tok):
        tok = np.asarray(tok)
        return good.causal_lm_loss(z, np.concatenate([tok[:, 1:], np.full((len(tok), 1), -100)], 1))

    return dataclasses.replace(good, name=f"hf.ForCausalLMLoss_double_shift[{precision}]", causal_lm_loss=shifted,
                               sft_loss=lambda z, tok, m: shifted(z, np.where(m, tok, -100)))


def hf_llama_rope_llama3_band_divided(precision):
    """HF's RoPE with llama3's smoothed band divided by the factor (as its low-frequency band)."""
    torch = _need("torch")
    good = hf_llama_rope(precision)
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    def apply(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
        if not scaling or scaling["rope_type"] != "llama3":
            return good.apply(x, positions, layout=layout, rotary_dim=rotary_dim, base=base, scaling=scaling)
        B, H, L, D = np.shape(x)
        inv = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        wavelen = 2 * np.pi / inv
        inv = torch.where(wavelen < scaling["original_max_position_embeddings"] / scaling["high_freq_factor"], inv,
                          inv / scaling["factor"])
        pos = torch.tensor(np.broadcast_to(np.asarray(positions), (B, L)).copy())
        freqs = pos[..., None].float() * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        xt = _t(x, precision)
        y, _ = apply_rotary_pos_emb(xt, xt, emb.cos().to(xt.dtype), emb.sin().to(xt.dtype))
        return _np(y)

    return dataclasses.replace(good, name=f"hf.LlamaRotaryEmbedding_llama3_band_divided[{precision}]", apply=apply)


# ----------------------------------------------------------------------------
# groups for REFIMPL_IMPLS

_PRECISIONS = ("float32", "bfloat16")


def norms():
    return [f(p) for f in (torch_norms, torch_layer_norm_by_moments) for p in _PRECISIONS]


def losses():
    return [f(p) for f in (torch_losses, hf_causal_lm_loss, hf_causal_lm_loss_double_shift) for p in _PRECISIONS]


def ropes():
    return [f(p) for f in (hf_llama_rope, hf_llama_rope_llama3_band_divided) for p in _PRECISIONS]



#: the factories whose adapters carry a bug (the README's failing examples)
WRONG_FACTORIES = (torch_layer_norm_by_moments, hf_causal_lm_loss_double_shift, hf_llama_rope_llama3_band_divided)
