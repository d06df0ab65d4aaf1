"""The precision rule (properties/precision.py) for the layer kinds: correct float32 and
bfloat16 implementations pass every property of their kind, and the same kinds' low-precision
wrong adapters (in each module's WRONG, bound by ``rejects``) fail (tests/test_layer_properties.py,
test_rope_properties.py run those meta-tests).

Correct implementations: torch 2.13 CPU in float32 / bfloat16 (the real kernels users compare
with: ``F.layer_norm``, ``F.rms_norm``, ``F.cross_entropy``, HF ``ForCausalLMLoss``, HF Llama
RoPE, ...), skipped without torch (or transformers); and, always, the float64 spec with its
outputs stored in the precision (``in_precision``: the most accurate kernel of that precision).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import settings

from properties import block, ffn, formats, losses, norms, rope
from properties.core import run_property, supports

PRECISIONS = ("float32", "bfloat16")
# a cross-check, not the suite's main run: 10 examples a pair under dev/ci, all under thorough
_N = settings.default.max_examples if settings.default.max_examples > 100 else min(10, settings.default.max_examples)


def _pairs(props, adapters):
    return [pytest.param(p, a, id=f"{p.name}-{a.name}") for p in props for a in adapters if supports(a, p)]


SPEC_LOWP = [m.in_precision(m.REFIMPL, p) for m in (norms, losses, ffn, block) for p in PRECISIONS] + [
    rope.in_precision(rope.BUNDLED[0], p) for p in PRECISIONS]
SPEC_PROPS = norms.PROPERTIES + losses.PROPERTIES + ffn.PROPERTIES + block.PROPERTIES + rope.PROPERTIES


@pytest.mark.parametrize("prop, impl", _pairs(SPEC_PROPS, SPEC_LOWP))
def test_spec_rounded_to_precision_passes(prop, impl):
    run_property(prop, impl, max_examples=_N)


# ----------------------------------------------------------------------------
# torch


def _torch():
    return pytest.importorskip("torch", reason="torch not installed: the torch low-precision adapters need it")


def _dt(precision):
    torch = _torch()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def _t(a, precision, grad=False):
    torch = _torch()
    if a is None:
        return None
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=_dt(precision), requires_grad=grad)


def _np(t):
    return None if t is None else t.detach().double().numpy()


def torch_norms(precision):
    torch = _torch()
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

    return norms.NormAdapter(f"torch.nn.functional norms[{precision}]", ln, rms, ln_bwd, rms_bwd, bn, gn,
                             frozenset({"backward", "channel_norms"}), precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", norms.PROPERTIES, ids=[p.name for p in norms.PROPERTIES])
def test_torch_norms_pass(prop, precision):
    run_property(prop, torch_norms(precision), max_examples=_N)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_norm_with_variance_by_moments_fails(precision):
    """The same torch LayerNorm with var = E[x^2] - E[x]^2 (in the precision) is rejected."""
    torch = _torch()
    good = torch_norms(precision)

    def ln(x, w, b, eps):
        t = _t(x, precision)
        mu = t.mean(-1, keepdim=True)
        var = (t * t).mean(-1, keepdim=True) - mu * mu
        y = (t - mu) / torch.sqrt(var.clamp_min(0) + eps)
        y = y if w is None else y * _t(w, precision)
        return _np(y if b is None else y + _t(b, precision))

    bad = dataclasses.replace(good, name=f"torch layer_norm by moments[{precision}]", layer_norm=ln)
    prop = next(p for p in norms.PROPERTIES if p.name == "layer_norm_matches")
    with pytest.raises(AssertionError, match="layer_norm"):
        run_property(prop, bad, max_examples=200)


def torch_losses(precision):
    """torch's F.cross_entropy on logits of the precision (its log_softmax accumulates in float32,
    the loss has the logits' dtype); the all-ignored batch (torch: NaN) is the spec's 0.0."""
    torch = _torch()
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

    return losses.LossAdapter(f"torch.nn.functional.cross_entropy[{precision}]", ce, ce_grad, lm,
                              lambda z, tok, m: lm(z, np.where(m, tok, -100)), precision=precision)


def hf_causal_lm_loss(precision):
    """transformers' ``ForCausalLMLoss`` (transformers/loss/loss_utils.py; upcasts the logits to
    float32, pads and shifts the labels, F.cross_entropy mean over counted labels) on logits of
    the precision; SFT through labels = tokens where the response mask holds, else -100 (HF's
    convention for prompt masking). The all-ignored batch (NaN there) is the spec's 0.0."""
    torch = _torch()
    pytest.importorskip("transformers", reason="transformers not installed: the HF loss adapter needs it")
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

    return losses.LossAdapter(f"transformers.ForCausalLMLoss[{precision}]", ce, None, lm,
                              lambda z, tok, m: lm(z, np.where(m, tok, -100)), frozenset({"lm"}), precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", losses.PROPERTIES, ids=[p.name for p in losses.PROPERTIES])
def test_torch_losses_pass(prop, precision):
    run_property(prop, torch_losses(precision), max_examples=_N)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", [p for p in losses.PROPERTIES if p.requires <= {"lm"}], ids=lambda p: p.name)
def test_hf_causal_lm_loss_passes(prop, precision):
    run_property(prop, hf_causal_lm_loss(precision), max_examples=_N)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_hf_causal_lm_loss_without_shift_fails(precision):
    """HF's loss handed labels it shifts again (a double shift: t paired with t + 2) is rejected."""
    good = hf_causal_lm_loss(precision)
    bad = dataclasses.replace(good, name=f"HF loss, labels pre-shifted[{precision}]",
                              causal_lm_loss=lambda z, tok: good.causal_lm_loss(
                                  z, np.concatenate([np.asarray(tok)[:, 1:], np.full((len(tok), 1), -100)], 1)))
    prop = next(p for p in losses.PROPERTIES if p.name == "causal_lm_label_shift")
    with pytest.raises(AssertionError, match="causal_lm_loss"):
        run_property(prop, bad, max_examples=200)


def hf_llama_rope(precision):
    """HF Llama's RoPE (transformers/models/llama/modeling_llama.py: ``LlamaRotaryEmbedding``,
    ``apply_rotary_pos_emb``; the frequencies from modeling_rope_utils' ``ROPE_INIT_FUNCTIONS``)
    on x of the precision: half layout, full rotary dim. "dynamic" builds its frequencies with
    ``_compute_dynamic_ntk_parameters(config, seq_len=...)`` and the forward's four lines, since
    the module would take seq_len from the positions instead of the case's ``seq_len``."""
    torch = _torch()
    pytest.importorskip("transformers", reason="transformers not installed: the HF RoPE adapter needs it")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    def apply(x, positions, *, layout="half", rotary_dim=None, base=10000.0, scaling=None):
        B, H, L, D = np.shape(x)
        params = {"rope_type": "default", "rope_theta": base}
        if scaling:
            params.update({k: v for k, v in scaling.items() if k not in ("seq_len", "max_position_embeddings")})
        config = LlamaConfig(hidden_size=D * H, num_attention_heads=H, num_key_value_heads=H, head_dim=D,
                             max_position_embeddings=(scaling or {}).get("max_position_embeddings", 4096),
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

    return rope.RopeAdapter(f"transformers.LlamaRotaryEmbedding[{precision}]", apply, frozenset({"scaling"}),
                            precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", rope.PROPERTIES, ids=[p.name for p in rope.PROPERTIES])
def test_hf_rope_passes(prop, precision):
    impl = hf_llama_rope(precision)
    if not supports(impl, prop):
        pytest.skip(f"{impl.name} does not declare what {prop.name} needs")
    run_property(prop, impl, max_examples=_N)


def test_hf_rope_llama3_smooth_band_divided_fails():
    """HF's float32 llama3 RoPE with its smoothed band divided by the factor is rejected."""
    torch = _torch()
    good = hf_llama_rope("float32")

    def apply(x, positions, **kw):
        sc = kw.get("scaling")
        if sc and sc["rope_type"] == "llama3":
            y = rope.WRONG["llama3_smooth_band_divided"].apply(x, positions, **kw)
            return _np(torch.tensor(y, dtype=torch.float32))
        return good.apply(x, positions, **kw)

    bad = dataclasses.replace(good, name="HF llama3, smoothed band divided[float32]", apply=apply)
    prop = next(p for p in rope.PROPERTIES if p.name == "rope_matches_reference")
    with pytest.raises(AssertionError, match="refimpl.apply_rope"):
        run_property(prop, bad, max_examples=200)


def torch_ffn(precision):
    """torch.nn.functional activations and an MLP / GLU written with torch ops in the precision
    (x @ W + b, act, gate, h * mask / (1 - p)); gradients by autograd."""
    torch = _torch()
    F = torch.nn.functional
    acts = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda u: F.gelu(u, approximate="tanh"), "silu": F.silu,
            "sigmoid": torch.sigmoid}

    def act(name, u):
        return _np(acts[name](_t(u, precision)))

    def forward(x, params, tensors, activation, keep, p):
        glu = isinstance(params, ffn.Fn.GLUParams)
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

    return ffn.FFNAdapter(f"torch ffn[{precision}]", act, run, backward, precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", ffn.PROPERTIES, ids=[p.name for p in ffn.PROPERTIES])
def test_torch_ffn_passes(prop, precision):
    run_property(prop, torch_ffn(precision), max_examples=_N)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_ffn_without_dropout_rescale_fails(precision):
    """The torch FFN forgetting the 1 / (1 - p) dropout scale is rejected in the precision."""
    good = torch_ffn(precision)
    bad = dataclasses.replace(good, name=f"torch ffn, dropout not rescaled[{precision}]",
                              ffn=lambda x, params, activation, keep, p: good.ffn(x, params, activation, keep, 0.0))
    prop = next(p for p in ffn.PROPERTIES if p.name == "ffn_matches")
    with pytest.raises(AssertionError, match="ffn"):
        run_property(prop, bad, max_examples=200)


def torch_block(precision):
    """A transformer stack written with torch ops in the precision: F.layer_norm / F.rms_norm
    (g = offset + w), F.scaled_dot_product_attention (GQA, is_causal), the MLP / GLU of
    ``torch_ffn``, residual adds; pre-norm, parallel and decoder (cross-attention) blocks."""
    torch = _torch()
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

        if isinstance(blk.ffn, ffn.Fn.GLUParams):
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

    return block.BlockAdapter(f"torch stack[{precision}]", stack, precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("prop", block.PROPERTIES, ids=[p.name for p in block.PROPERTIES])
def test_torch_block_passes(prop, precision):
    run_property(prop, torch_block(precision), max_examples=_N)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_block_ignoring_norm_weight_fails(precision):
    """The torch stack ignoring its first norm's weight and bias is rejected in the precision."""
    good = torch_block(precision)
    def stack(x, blocks, arrangement, causal, memory, scale, final_norm):
        post = [dataclasses.replace(b, norm1=dataclasses.replace(b.norm1, weight=np.ones_like(b.norm1.weight),
                                                                 bias=None if b.norm1.bias is None else 0 * b.norm1.bias))
                for b in blocks]
        return good.stack(x, post, arrangement, causal, memory, scale, final_norm)

    bad = dataclasses.replace(good, name=f"torch stack, first norm's weight ignored[{precision}]", stack=stack)
    prop = next(p for p in block.PROPERTIES if p.name == "pre_norm_stack_equals_unrolled")
    with pytest.raises(AssertionError, match="pre-norm stack"):
        run_property(prop, bad, max_examples=200)


_CAST_DT = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")


def torch_cast(precision, declared=None):
    """torch's Tensor.to(fmt) from a tensor of the precision (a kernel taking bf16 / fp16 input):
    e4m3fn saturates in torch 2.13 (declared), the others follow the format's rule."""
    torch = _torch()
    dts = {f: getattr(torch, f) for f in _CAST_DT}

    def cast(x, fmt):
        return _np(_t(x, precision).to(dts[fmt]))

    return [formats.CastAdapter(f"torch Tensor.to(float8_e4m3fn) from {precision}", cast,
                                frozenset({"float8_e4m3fn", "saturate"}), precision=declared or precision),
            formats.CastAdapter(f"torch Tensor.to(float8_e5m2) from {precision}", cast, frozenset({"float8_e5m2"}),
                                precision=declared or precision)]


def torch_matmul(precision):
    """torch CPU matmul of bf16 / fp16 tensors (float32 accumulation, the output in the input
    dtype) and of their float32 upcasts (output float32)."""
    torch = _torch()

    def matmul(a, b, inp, out):
        A, B = _t(a, precision).to(getattr(torch, inp)), _t(b, precision).to(getattr(torch, inp))
        if out == "float32":
            return _np(A.float() @ B.float())
        return _np(A @ B)

    return formats.MatmulAdapter(f"torch matmul from {precision}", matmul,
                                 frozenset({"bfloat16->float32", "bfloat16->bfloat16", "float16->float16",
                                            "float16->float32"}), precision=precision)


@pytest.mark.parametrize("precision", ("bfloat16", "float16"))
def test_torch_casts_and_matmul_from_low_precision_pass(precision):
    for impl in torch_cast(precision) + [torch_matmul(precision)]:
        for prop in formats.PROPERTIES:
            if supports(impl, prop):
                run_property(prop, impl, max_examples=_N)


def test_torch_cast_through_bfloat16_declared_float32_fails():
    """A cast that takes its input as bf16 (a double rounding of float32 values) but declares
    float32 inputs is rejected: the precision sets what the suite draws."""
    impl = torch_cast("bfloat16", declared="float32")[1]
    prop = next(p for p in formats.PROPERTIES if p.name == "cast_round_nearest_even")
    with pytest.raises(AssertionError, match="round-to-nearest-even"):
        run_property(prop, impl, max_examples=200)
