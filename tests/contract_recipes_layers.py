"""Fuzz recipes of the "layers" family: refimpl.norms, refimpl.ffn, refimpl.block,
refimpl.losses, refimpl.formats and refimpl.moe.reroute_dropped (see contract_recipes.py).

Parameter records (Norm, Attention, Block, Stochastic, MLPParams, GLUParams,
DelayedScaling) are fuzzed by constructing them from the drawn fields and then
using them, so a bad field must be reported by name where it is used.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from scipy.special import ndtr

from refimpl import block as B
from refimpl import ffn as F
from refimpl import formats as FM
from refimpl import losses as LS
from refimpl import norms as N

from .contract_recipes import R, Recipe, arr, recipe, routing, tails

small = st.integers(1, 4)


# --- norms -------------------------------------------------------------------

def _feat(draw, *, bias=True):
    d = draw(small)
    shape = (draw(small),) + ((draw(small),) if draw(st.booleans()) else ()) + (d,)
    kw = dict(x=arr(draw, shape))
    if draw(st.booleans()):
        kw["weight"] = arr(draw, (d,))
    if bias and draw(st.booleans()):
        kw["bias"] = arr(draw, (d,))
    if draw(st.booleans()):
        kw["eps"] = draw(st.floats(1e-8, 1e-2))
    if draw(st.booleans()):
        kw["eps_placement"] = draw(st.sampled_from(N.EPS_PLACEMENTS))
    return kw


LN_KINDS = dict(x="array", weight="array", bias="array", eps="nonneg_float", eps_placement="name")
RMS_KINDS = dict(x="array", weight="array", eps="nonneg_float", eps_placement="name", weight_offset="real",
                 preset="name")


def _with_dy(build):
    def b(draw):
        kw = build(draw)
        kw["dy"] = arr(draw, kw["x"].shape)
        return kw
    return b


def _rms(draw):
    kw = _feat(draw, bias=False)
    if draw(st.booleans()):
        kw["weight_offset"] = draw(st.sampled_from([0.0, 1.0]))
    if draw(st.booleans()):
        kw["preset"] = draw(st.sampled_from(sorted(N.RMSNORM_PRESETS)))
    return kw


def _at_any_magnitude(build):
    """The recipe's x, each row scaled by 10^U(-320, 300): the norms' magnitudes class."""
    def b(draw):
        kw = build(draw)
        if draw(st.booleans()):
            x = kw["x"]
            kw["x"] = x * 10.0 ** np.random.default_rng(draw(st.integers(0, 2**32 - 1))).uniform(
                -320, 300, size=x.shape[:-1] + (1,))
        return kw
    return b


def norm_oracle(kind: str):
    """rms_norm / layer_norm (no weight, bias or preset; eps inside the sqrt) against the 50-digit
    oracle at any magnitude. Bound: 16 d eps max|exact row| + tiny (the statistics are sums of d
    terms; an exact zero in a tiny row, a flushed square, fails it by the whole row), plus for
    layer_norm the centering's condition: x - mean carries the rounding of the mean, eps |mean|, which
    the normalisation divides by sqrt(var + eps) (any float64 layer_norm has it: found by the thorough
    fuzz at d = 2, a row whose mean is large against its spread)."""
    from properties.mp_oracle import mp_layer_norm, mp_rms_norm

    def oracle(kw, result):
        if any(kw.get(n) is not None for n in ("weight", "bias", "preset")) or \
                kw.get("eps_placement", "inside_sqrt") != "inside_sqrt" or kw.get("weight_offset", 0.0):
            return
        x = np.asarray(kw["x"], dtype=np.float64)
        if x.size > 64:
            return
        eps = kw.get("eps", 1e-5 if kind == "layer" else 1e-6)
        flat = x.reshape(-1, x.shape[-1])
        exact = (mp_layer_norm if kind == "layer" else mp_rms_norm)(flat, eps).reshape(x.shape)
        d = x.shape[-1]
        bound = 16 * d * _EPS * np.max(np.abs(exact), axis=-1, keepdims=True) + _TINY
        if kind == "layer":  # the centering: eps |mean| / sqrt(var + eps), with var, mean of the row (sizes, not errors)
            with np.errstate(over="ignore", invalid="ignore"):  # a var that overflows: a spread so large cond is 0
                mean = np.mean(flat / 2, axis=-1) * 2
                cond = np.nan_to_num(np.abs(mean) / np.sqrt(np.var(flat / 2, axis=-1) * 4 + eps), nan=0.0)
            bound = bound + 4 * _EPS * cond.reshape(x.shape[:-1] + (1,))
        err = np.abs(np.asarray(result) - exact)
        assert (err <= bound).all(), f"{kind}_norm: error {err.max():.3g} beyond 16 d eps max|y| (50-digit oracle)"
    return oracle


recipe("refimpl.norms.layer_norm", kinds=LN_KINDS, oracle=norm_oracle("layer"))(_at_any_magnitude(_feat))
recipe("refimpl.norms.layer_norm_backward", kinds=dict(LN_KINDS, dy="array"))(_with_dy(_feat))
recipe("refimpl.norms.rms_norm", kinds=RMS_KINDS, oracle=norm_oracle("rms"))(_at_any_magnitude(_rms))
recipe("refimpl.norms.rms_norm_backward", kinds=dict(RMS_KINDS, dy="array"))(_with_dy(_rms))


def _chan(draw, G=1):
    C = G * draw(st.integers(1, 3))
    shape = (draw(st.integers(2, 3)), C) + ((draw(small),) if draw(st.booleans()) else ())
    kw = dict(x=arr(draw, shape))
    if draw(st.booleans()):
        kw["weight"] = arr(draw, (C,))
    if draw(st.booleans()):
        kw["bias"] = arr(draw, (C,))
    if draw(st.booleans()):
        kw["eps"] = draw(st.floats(1e-8, 1e-2))
    return kw


BN_KINDS = dict(x="array", weight="array", bias="array", eps="nonneg_float")


@recipe("refimpl.norms.batch_norm", kinds=dict(BN_KINDS, running_mean="array", running_var="array", momentum="prob"))
def _(draw):
    kw = _chan(draw)
    C = kw["x"].shape[1]
    if draw(st.booleans()):
        kw.update(running_mean=arr(draw, (C,)), running_var=arr(draw, (C,), 0.1, 3.0),
                  momentum=draw(st.floats(0.0, 1.0)))
    return kw


@recipe("refimpl.norms.batch_norm_inference", kinds=dict(BN_KINDS, running_mean="array", running_var="array"))
def _(draw):
    kw = _chan(draw)
    C = kw["x"].shape[1]
    return dict(kw, running_mean=arr(draw, (C,)), running_var=arr(draw, (C,), 0.1, 3.0))


recipe("refimpl.norms.batch_norm_backward", kinds=dict(BN_KINDS, dy="array"))(_with_dy(_chan))


def _gn(draw):
    G = draw(st.integers(1, 3))
    return dict(_chan(draw, G), num_groups=G)


recipe("refimpl.norms.group_norm", kinds=dict(BN_KINDS, num_groups="count"))(_gn)
recipe("refimpl.norms.group_norm_backward", kinds=dict(BN_KINDS, num_groups="count", dy="array"))(_with_dy(_gn))


@recipe("refimpl.norms.norm_definition", kinds=dict(LN_KINDS, kind="name", weight_offset="real", num_groups="count",
                                                    dy="array"))
def _(draw):
    kind = draw(st.sampled_from(N.NORM_KINDS))
    kw = {"layer": _feat, "rms": lambda d: _feat(d, bias=False), "batch": _chan, "group": _gn}[kind](draw)
    kw = dict(kw, kind=kind, eps=kw.get("eps", 1e-5))
    if kind in ("batch", "group"):
        kw.pop("eps_placement", None)
    if kind == "rms" and draw(st.booleans()):
        kw["weight_offset"] = 1.0
    if draw(st.booleans()):
        kw["dy"] = arr(draw, kw["x"].shape)
    return kw


@recipe("refimpl.norms.rms_norm_cast_order", kinds=dict(x="array", weight="array", preset="name", dtype="name"),
        finite=None)  # values beyond the dtype's largest value round to inf (round_to, overflow="format")
def _(draw):
    d = draw(small)
    dtype = draw(st.sampled_from(["bfloat16", "float16"]))
    return dict(x=FM.round_to(arr(draw, (draw(small), d)), dtype), weight=FM.round_to(arr(draw, (d,)), dtype),
                preset=draw(st.sampled_from(["hf_llama", "hf_t5", "hf_gemma"])), dtype=dtype)


R["refimpl.norms.RMSNormConvention"] = Recipe(
    lambda draw: dict(eps=draw(st.floats(1e-8, 1e-2)), eps_placement=draw(st.sampled_from(N.EPS_PLACEMENTS)),
                      weight_offset=draw(st.sampled_from([0.0, 1.0])), source="test"),
    dict(eps="nonneg_float", eps_placement="name", weight_offset="real", source="str"))


# --- ffn ---------------------------------------------------------------------

ACT = st.sampled_from(F.ACTIVATIONS)
recipe("refimpl.ffn.act", "refimpl.ffn.act_grad", kinds=dict(name="name", u="array"))(
    lambda draw: dict(name=draw(ACT), u=draw(st.sampled_from([arr(draw, (draw(small), draw(small)), -8, 8),
                                                               tails(draw, (draw(small), draw(small)))]))))

_EPS, _TINY = 2.0**-52, float(np.finfo(np.float64).tiny)


def act_oracle(grad: bool):
    """The tails class: act / act_grad against the 50-digit oracle at any float64 input.

    Bound: 4 eps (4 + |t|) |exact| + tiny, t the argument of the exponential (u^2 / 2 for gelu,
    2y for gelu_tanh, u for the sigmoids): rounding t costs |t| eps relative in e^t; below the
    normal range an absolute tiny. The derivatives that cross 0 add the size of their two terms (silu' at
    u ~ -1.28, gelu' and gelu_tanh' at u ~ -0.75, where a sum of two terms of ~0.3 cancels: a few eps of
    the terms is what any float64 evaluation of the sum can promise).
    A form that cancels (1 + erf(u / sqrt 2), 1 - sigmoid(u)) fails it by orders of magnitude."""
    from properties.mp_oracle import mp_act, mp_act_grad

    def oracle(kw, result):
        name, u = kw["name"], np.asarray(kw["u"], dtype=np.float64)
        exact = (mp_act_grad if grad else mp_act)(name, u)
        with np.errstate(over="ignore"):
            t = {"gelu": np.minimum(u * u / 2, 800), "gelu_tanh": np.minimum(np.abs(1.6 * (u + 0.044715 * u**3)), 800),
                 "silu": np.minimum(np.abs(u), 800), "sigmoid": np.minimum(np.abs(u), 800)}.get(name, 0 * u)
        size = np.abs(exact)
        if grad and name == "silu":
            size = size + np.abs(u) / (1 + np.exp(np.minimum(-u, 700)))
        uc = np.clip(u, -50.0, 50.0)  # beyond, the second terms are 0 in float64
        with np.errstate(over="ignore", under="ignore"):
            if grad and name == "gelu":  # Phi(u) + u phi(u)
                size = size + ndtr(u) + np.abs(uc) * np.exp(-uc * uc / 2) / np.sqrt(2 * np.pi)
            if grad and name == "gelu_tanh":  # s + 2 u s (1 - s) c (1 + 3 a u^2), s = sigmoid(2y)
                s = 1 / (1 + np.exp(-1.6 * (uc + 0.044715 * uc**3)))
                size = size + s + 2 * np.abs(uc) * s * (1 - s) * 0.8 * (1 + 3 * 0.044715 * uc * uc)
        bound = 4 * _EPS * (4 + t) * size + _TINY
        err = np.abs(np.asarray(result) - exact)
        assert (err <= bound).all(), (f"act{'_grad' if grad else ''}({name!r}): error {err.max():.3g} at u = "
                                      f"{float(u.flat[int(np.argmax(err - bound))])!r} exceeds the bound (50-digit oracle)")
    return oracle


R["refimpl.ffn.act"].oracle = act_oracle(False)
R["refimpl.ffn.act_grad"] = Recipe(R["refimpl.ffn.act"].build, dict(R["refimpl.ffn.act"].kinds), oracle=act_oracle(True))


@recipe("refimpl.ffn.dropout", kinds=dict(h="array", keep_mask="bool_array", p="prob"))
def _(draw):
    h = arr(draw, (draw(small), draw(small)))
    if draw(st.booleans()):
        return dict(h=h, keep_mask=None, p=0.0)
    return dict(h=h, keep_mask=np.random.default_rng(draw(st.integers(0, 9))).random(h.shape) < 0.7,
                p=draw(st.floats(0.0, 0.9)))


recipe("refimpl.ffn.glu_split", kinds=dict(h2="array", activation="name", gate_half="name"))(
    lambda draw: dict(h2=arr(draw, (draw(small), 2 * draw(small))), activation=draw(ACT),
                      gate_half=draw(st.sampled_from(["first", "second"]))))
recipe("refimpl.ffn.llama_hidden_dim", kinds=dict(dim="count", multiple_of="count", ffn_dim_multiplier="nonneg_float",
                                                  hidden_dim="count"))(
    lambda draw: dict(dim=draw(st.integers(1, 4096)), multiple_of=draw(st.sampled_from([1, 32, 256])),
                      ffn_dim_multiplier=draw(st.none() | st.floats(0.5, 2.0))))


def _params(draw, d, glu=None, bias=None):
    glu = draw(st.booleans()) if glu is None else glu
    bias = draw(st.booleans()) if bias is None else bias
    n = draw(small)
    if glu:
        p = dict(W_gate=arr(draw, (d, n)), W_up=arr(draw, (d, n)), W_down=arr(draw, (n, d)))
        if bias:
            p.update(b_gate=arr(draw, (n,)), b_up=arr(draw, (n,)), b_down=arr(draw, (d,)))
        return F.GLUParams(**p)
    p = dict(W1=arr(draw, (d, n)), W2=arr(draw, (n, d)))
    if bias:
        p.update(b1=arr(draw, (n,)), b2=arr(draw, (d,)))
    return F.MLPParams(**p)


def _d_ff(p):
    return (p.W_gate if isinstance(p, F.GLUParams) else p.W1).shape[1]


FFN_KINDS = dict(x="array", params="object", activation="name", variant="name", keep_mask="bool_array",
                 dropout_p="prob")


def _ffn(draw):
    d = draw(small)
    x = arr(draw, (draw(small), draw(small), d))
    p = _params(draw, d)
    kw = dict(x=x, params=p, activation=draw(ACT))
    if isinstance(p, F.GLUParams) and draw(st.booleans()):
        kw["variant"] = draw(st.sampled_from(sorted(F.GLU_VARIANTS)))
        kw["activation"] = F.GLU_VARIANTS[kw["variant"]]
    if draw(st.booleans()):
        kw["keep_mask"] = np.random.default_rng(draw(st.integers(0, 9))).random(x.shape[:-1] + (_d_ff(p),)) < 0.7
        kw["dropout_p"] = draw(st.floats(0.0, 0.9))
    return kw


recipe("refimpl.ffn.ffn", kinds=FFN_KINDS)(_ffn)
recipe("refimpl.ffn.ffn_backward", kinds=dict(FFN_KINDS, dy="array"))(_with_dy(_ffn))
recipe("refimpl.ffn.num_params", "refimpl.ffn.ffn_macs_per_token", kinds=dict(params="object"))(
    lambda draw: dict(params=_params(draw, draw(small))))


def _params_call(fn, kw):
    kw = dict(kw)
    x, act = kw.pop("_x"), kw.pop("_activation")
    return F.ffn(x, fn(**kw), activation=act)


def _params_build(glu):
    def b(draw):
        d = draw(small)
        p = _params(draw, d, glu=glu)
        kw = {f: getattr(p, f) for f in p.__dataclass_fields__ if getattr(p, f) is not None}
        return dict(kw, _x=arr(draw, (2, d)), _activation=draw(ACT))
    return b


R["refimpl.ffn.MLPParams"] = Recipe(_params_build(False), dict(W1="array", W2="array", b1="array", b2="array"),
                                    call=_params_call)
R["refimpl.ffn.GLUParams"] = Recipe(_params_build(True), dict(W_gate="array", W_up="array", W_down="array",
                                                              b_gate="array", b_up="array", b_down="array"),
                                    call=_params_call)


# --- block ---------------------------------------------------------------------

def _init_args(draw):
    Hkv = draw(st.integers(1, 2))
    H = Hkv * draw(st.integers(1, 2))
    norm = draw(st.sampled_from(B.NORM_KINDS))
    return dict(seed=draw(st.integers(0, 99)), d_model=H * draw(st.integers(1, 2)), num_heads=H,
                d_ff=draw(small), num_kv_heads=Hkv, ffn_kind=draw(st.sampled_from(["mlp", "glu"])),
                activation=draw(ACT), norm=norm, norm_bias=norm == "layernorm" and draw(st.booleans()))


def _blk(draw, cross=False):
    a = _init_args(draw)
    if a["norm"] == "rmsnorm":
        a["norm_bias"] = False
    return B.init_block(**a, cross=cross)


recipe("refimpl.block.init_block", kinds=dict(seed="count", d_model="count", num_heads="count", d_ff="count",
                                              num_kv_heads="count", ffn_kind="name", activation="name", norm="name",
                                              norm_bias="bool", cross="bool"),
       call=lambda fn, kw: (lambda b: B.block(np.ones((1, 2, b.attn.W_q.shape[0])), b,
                                              memory=np.ones((1, 1, b.attn.W_q.shape[0])) if b.cross_attn else None))(
           fn(**kw)))(
    lambda draw: dict(_init_args(draw), cross=draw(st.booleans())))

BLOCK_KINDS = dict(x="array", blk="object", arrangement="name", causal="bool", memory="array",
                   parallel_scale="nonneg_float", rand="object", counter="object")


def _x(draw, blk, L=None):
    return arr(draw, (draw(st.integers(1, 2)), draw(small) if L is None else L, blk.attn.W_q.shape[0]))


@recipe("refimpl.block.block", kinds=BLOCK_KINDS)
def _(draw):
    cross = draw(st.booleans())
    blk = _blk(draw, cross)
    x = _x(draw, blk)
    kw = dict(x=x, blk=blk, arrangement="pre_norm" if cross else draw(st.sampled_from(B.ARRANGEMENTS)),
              causal=draw(st.booleans()), counter=B.MacCounter())
    if cross:
        kw["memory"] = arr(draw, (x.shape[0], draw(small), x.shape[2]))
    if draw(st.booleans()):
        kw["parallel_scale"] = draw(st.floats(0.0, 2.0))
    return kw


def _stoch(draw, x, blk):
    p = draw(st.floats(0.0, 0.9))
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    return dict(drop_path_p=p, keep_attn=rng.random(x.shape[:1]) < 0.7, keep_ffn=rng.random(x.shape[:1]) < 0.7,
                act_keep_mask=rng.random(x.shape[:2] + (_d_ff(blk.ffn),)) < 0.7, act_dropout_p=p)


@recipe("refimpl.block.Stochastic", kinds=dict(drop_path_p="prob", keep_attn="bool_array", keep_cross="bool_array",
                                               keep_ffn="bool_array", act_keep_mask="bool_array", act_dropout_p="prob"),
        call=lambda fn, kw: B.block(kw["_x"], kw["_blk"], rand=fn(**{n: v for n, v in kw.items() if n[0] != "_"})),
        names_ok=("x", "blk"))  # the block the recipe runs the object through
def _(draw):
    blk = _blk(draw)
    x = _x(draw, blk)
    return dict(_stoch(draw, x, blk), _x=x, _blk=blk)


def _blocks(draw, n=None, cross=False):
    a = _init_args(draw)
    a["norm_bias"] = a["norm_bias"] and a["norm"] == "layernorm"
    return [B.init_block(**dict(a, seed=s), cross=cross) for s in range(draw(st.integers(0, 2)) if n is None else n)]


STACK_KINDS = dict(x="array", blocks="routing_list", arrangement="name", causal="bool", final_norm="object",
                   parallel_scale="nonneg_float", rands="routing_list", counter="object")


def _stack(draw, *, rands=True, arrangement=True):
    blocks = _blocks(draw, n=1)  # one block: the composition is what stack adds, and time is budgeted
    x = _x(draw, blocks[0])
    kw = dict(x=x, blocks=blocks)
    if arrangement:
        kw["arrangement"] = draw(st.sampled_from(B.ARRANGEMENTS))
    if draw(st.booleans()):
        kw["final_norm"] = blocks[0].norm1
    if rands and draw(st.booleans()):
        kw["rands"] = [B.Stochastic(**_stoch(draw, x, b)) for b in blocks]
    return kw


recipe("refimpl.block.stack", kinds=STACK_KINDS)(_stack)
recipe("refimpl.block.pre_norm_stack_fused_residual", kinds=dict(x="array", blocks="routing_list", causal="bool",
                                                                 final_norm="object"))(
    lambda draw: dict(_stack(draw, rands=False, arrangement=False), causal=draw(st.booleans())))
recipe("refimpl.block.encoder", kinds=dict(x="array", blocks="routing_list", arrangement="name", final_norm="object",
                                           counter="object"))(lambda draw: _stack(draw, rands=False))


@recipe("refimpl.block.decoder", kinds=dict(y_in="array", memory="array", blocks="routing_list", arrangement="name",
                                            final_norm="object", counter="object"))
def _(draw):
    blocks = _blocks(draw, n=1, cross=True)
    y = _x(draw, blocks[0])
    return dict(y_in=y, memory=arr(draw, (y.shape[0], draw(small), y.shape[2])), blocks=blocks,
                arrangement=draw(st.sampled_from(["pre_norm", "post_norm"])))


@recipe("refimpl.block.seq2seq_logits", kinds=dict(src_tokens="int_array", tgt_tokens="int_array", embedding="array",
                                                   enc_blocks="routing_list", dec_blocks="routing_list", bos="count",
                                                   enc_norm="object", dec_norm="object"))
def _(draw):
    enc = _blocks(draw, n=1)
    d = enc[0].attn.W_q.shape[0]
    a = _init_args(draw)
    dec = [B.init_block(**dict(a, d_model=d, num_heads=1, num_kv_heads=1, norm_bias=False, norm="rmsnorm"),
                        cross=True)]
    V, b = draw(st.integers(2, 6)), draw(st.integers(1, 2))
    tok = lambda L: np.random.default_rng(draw(st.integers(0, 99))).integers(0, V, size=(b, L))  # noqa: E731
    return dict(src_tokens=tok(draw(small)), tgt_tokens=tok(draw(small)), embedding=arr(draw, (V, d)),
                enc_blocks=enc, dec_blocks=dec, bos=draw(st.integers(0, V - 1)))


recipe("refimpl.block.block_config", kinds=dict(blk="object", n_layers="count"))(
    lambda draw: dict(blk=B.init_block(**dict(_init_args(draw), norm_bias=False)), n_layers=draw(small)))
recipe("refimpl.block.drop_path", kinds=dict(branch="array", keep="bool_array", p="prob"))(
    lambda draw: (lambda b: dict(branch=b, keep=np.random.default_rng(draw(st.integers(0, 9))).random(b.shape[:1]) < .5,
                                 p=draw(st.floats(0.0, 0.9))))(arr(draw, (draw(small), draw(small)))))
R["refimpl.block.MacCounter"] = Recipe(lambda draw: {}, {}, call=lambda fn, kw: (lambda c: (c.add(3), c.total))(fn()))


def _norm_call(fn, kw):
    kw = dict(kw)
    x = kw.pop("_x")
    return fn(**kw)(x)


@recipe("refimpl.block.Norm", kinds=dict(weight="array", bias="array", kind="name", eps="nonneg_float",
                                         weight_offset="real"), call=_norm_call)
def _(draw):
    d = draw(small)
    kind = draw(st.sampled_from(B.NORM_KINDS))
    kw = dict(weight=arr(draw, (d,)), kind=kind, eps=draw(st.floats(1e-8, 1e-2)), _x=arr(draw, (2, d)))
    if kind == "layernorm" and draw(st.booleans()):
        kw["bias"] = arr(draw, (d,))
    if kind == "rmsnorm":
        kw["weight_offset"] = draw(st.sampled_from([0.0, 1.0]))
    return kw


@recipe("refimpl.block.Attention", kinds=dict(W_q="array", W_k="array", W_v="array", W_o="array", num_heads="count",
                                              num_kv_heads="count"),
        call=lambda fn, kw: B.block(kw["_x"], B.Block(fn(**{n: v for n, v in kw.items() if n[0] != "_"}),
                                                      kw["_blk"].ffn, kw["_blk"].activation, kw["_blk"].norm1,
                                                      kw["_blk"].norm2)),
        names_ok=("x", "blk"))  # the block the recipe runs the weights through
def _(draw):
    blk = _blk(draw)
    a = blk.attn
    return dict(W_q=a.W_q, W_k=a.W_k, W_v=a.W_v, W_o=a.W_o, num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                _x=_x(draw, blk), _blk=blk)


@recipe("refimpl.block.Block", kinds=dict(attn="object", ffn="object", activation="name", norm1="object",
                                          norm2="object", cross_attn="object", norm_cross="object"),
        call=lambda fn, kw: B.block(kw["_x"], fn(**{n: v for n, v in kw.items() if n[0] != "_"}),
                                    memory=kw.get("_memory")))
def _(draw):
    cross = draw(st.booleans())
    blk = _blk(draw, cross)
    x = _x(draw, blk)
    kw = dict(attn=blk.attn, ffn=blk.ffn, activation=blk.activation, norm1=blk.norm1, norm2=blk.norm2, _x=x)
    if cross:
        kw.update(cross_attn=blk.cross_attn, norm_cross=blk.norm_cross, _memory=arr(draw, (x.shape[0], 2, x.shape[2])))
    return kw


# --- losses --------------------------------------------------------------------

def _ce(draw):
    Nn, V = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    t = np.random.default_rng(draw(st.integers(0, 99))).integers(0, V, size=Nn)
    t[np.random.default_rng(draw(st.integers(0, 9))).random(Nn) < 0.2] = LS.IGNORE_INDEX
    return dict(logits=arr(draw, (Nn, V)), targets=t)


CE_KINDS = dict(logits="array", targets="int_array", ignore_index="count", reduction="name")
recipe("refimpl.losses.cross_entropy", kinds=CE_KINDS)(
    lambda draw: dict(_ce(draw), reduction=draw(st.sampled_from(LS.REDUCTIONS))))
recipe("refimpl.losses.cross_entropy_grad", kinds=CE_KINDS)(
    lambda draw: dict(_ce(draw), reduction=draw(st.sampled_from(["mean", "sum"]))))


def _tokens(draw, V=5):
    return np.random.default_rng(draw(st.integers(0, 99))).integers(0, V, size=(draw(small), draw(small)))


recipe("refimpl.losses.shift_labels", kinds=dict(tokens="int_array", ignore_index="count"))(
    lambda draw: dict(tokens=_tokens(draw)))
recipe("refimpl.losses.shift_right", kinds=dict(tokens="int_array", start_token="count"))(
    lambda draw: dict(tokens=_tokens(draw), start_token=draw(st.integers(0, 4))))


def _lm(draw):
    tok = _tokens(draw)
    return dict(logits=arr(draw, tok.shape + (5,)), tokens=tok)


LM_KINDS = dict(logits="array", tokens="int_array", ignore_index="count")
recipe("refimpl.losses.causal_lm_loss", "refimpl.losses.causal_lm_loss_grad", kinds=LM_KINDS)(_lm)


def _resp(draw, tok):
    return np.random.default_rng(draw(st.integers(0, 99))).random(tok.shape) < 0.6


recipe("refimpl.losses.sft_labels", kinds=dict(tokens="int_array", response_mask="bool_array", ignore_index="count"))(
    lambda draw: (lambda t: dict(tokens=t, response_mask=_resp(draw, t)))(_tokens(draw)))
recipe("refimpl.losses.sft_loss", kinds=dict(LM_KINDS, response_mask="bool_array", normalize="name"))(
    lambda draw: (lambda kw: dict(kw, response_mask=_resp(draw, kw["tokens"]),
                                  normalize=draw(st.sampled_from(["tokens", "sequences"]))))(_lm(draw)))


@recipe("refimpl.losses.output_z_loss", kinds=LM_KINDS)
def _(draw):
    kw = _lm(draw)
    if draw(st.booleans()):
        kw.pop("tokens")
    return kw


@recipe("refimpl.losses.training_loss", kinds=dict(LM_KINDS, routings="routing_list", router_logits="array_list",
                                                   z_coef="nonneg_float", aux_coef="nonneg_float",
                                                   router_z_coef="nonneg_float", balance_options="object"))
def _(draw):
    kw = _lm(draw)
    r, z = routing(draw)
    return dict(kw, routings=[r], router_logits=[z], z_coef=draw(st.floats(0, 1)), aux_coef=draw(st.floats(0, 1)),
                router_z_coef=draw(st.floats(0, 1)))


recipe("refimpl.losses.router_collapse_simulation",
       kinds=dict(aux_coef="nonneg_float", seed="count", steps="count", tokens="count", d="count", num_experts="count",
                  lr="float"))(
    lambda draw: dict(aux_coef=draw(st.floats(0, 1)), seed=draw(st.integers(0, 9)), steps=draw(small),
                      tokens=draw(st.integers(1, 8)), d=draw(small), num_experts=draw(small),
                      lr=draw(st.floats(0.01, 1.0))))


# --- formats ---------------------------------------------------------------------

FMT = st.sampled_from(sorted(FM.FORMATS))
LOWP = st.sampled_from(["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "float32"])
recipe("refimpl.formats.get_format", kinds=dict(fmt="name"))(lambda draw: dict(fmt=draw(FMT)))
recipe("refimpl.formats.format_table", kinds=dict(names="mask_list"))(
    lambda draw: dict(names=draw(st.lists(FMT, max_size=3))))
# values beyond a format's largest value round to inf, or NaN for e4m3fn (overflow="format", documented)
recipe("refimpl.formats.round_to", kinds=dict(x="array", fmt="name", overflow="name"), finite=None)(
    lambda draw: dict(x=arr(draw, (draw(small), draw(small)), -500, 500), fmt=draw(FMT),
                      overflow=draw(st.sampled_from(FM.OVERFLOW))))
recipe("refimpl.formats.amax", kinds=dict(x="array", channel_axis="axis"))(
    lambda draw: dict(x=arr(draw, (draw(small), draw(small))), channel_axis=draw(st.sampled_from([None, 0, 1, -1]))))
recipe("refimpl.formats.scale_from_amax", kinds=dict(amax_value="array", fmt="name", margin="count"))(
    lambda draw: dict(amax_value=arr(draw, (draw(small),), 0, 5), fmt=draw(FMT.filter(lambda f: f != "float64")),
                      margin=draw(st.integers(0, 3))))
recipe("refimpl.formats.quantize", kinds=dict(x="array", fmt="name", channel_axis="axis", margin="count",
                                              overflow="name"))(
    lambda draw: dict(x=arr(draw, (draw(small), draw(small))), fmt=draw(LOWP),
                      channel_axis=draw(st.sampled_from([None, 0, 1])), margin=draw(st.integers(0, 3)),
                      overflow=draw(st.sampled_from(FM.OVERFLOW))))
recipe("refimpl.formats.dequantize", kinds=dict(q="array", scale="array"))(
    lambda draw: (lambda x: dict(q=x, scale=arr(draw, (1, x.shape[1]), 0.5, 100)))(arr(draw, (draw(small), draw(small)))))


@recipe("refimpl.formats.DelayedScaling", kinds=dict(fmt="name", history_len="count", algo="name", margin="count",
                                                     x="array", history="array"),
        call=lambda fn, kw: (lambda d: (d.scale(kw["history"]), d.step(kw["x"], kw["history"])))(
            fn(**{n: kw[n] for n in ("fmt", "history_len", "algo", "margin")})))
def _(draw):
    return dict(fmt=draw(st.sampled_from(["float8_e4m3fn", "float8_e5m2"])), history_len=draw(small),
                algo=draw(st.sampled_from(["max", "most_recent"])), margin=draw(st.integers(0, 2)),
                x=arr(draw, (draw(small),)), history=arr(draw, (draw(st.integers(1, 4)),), 0.1, 5))


recipe("refimpl.formats.loss_scale_update", kinds=dict(scale="float", grads_finite="bool", good_steps="count",
                                                       growth_factor="float", backoff_factor="float",
                                                       growth_interval="count"))(
    lambda draw: dict(scale=draw(st.floats(1.0, 2.0**24)), grads_finite=draw(st.booleans()),
                      good_steps=draw(st.integers(0, 5)), growth_interval=draw(st.integers(1, 5))))
# round_to's documented overflow: a scaled gradient beyond the format's range is inf (the loss-scaler's signal)
recipe("refimpl.formats.scaled_gradient_in", kinds=dict(grad="array", fmt="name", loss_scale="float"), finite=None)(
    lambda draw: dict(grad=arr(draw, (draw(small),), -1e-3, 1e-3), fmt=draw(LOWP), loss_scale=draw(st.floats(1, 2**16))))


def _mm(draw):
    M, K, Nn = draw(small), draw(small), draw(small)
    return dict(a=arr(draw, (M, K)), b=arr(draw, (K, Nn)))


MM_KINDS = dict(a="array", b="array", input_dtype="name", accumulate="name", output_dtype="name")
# overflow="format": products or sums beyond the output format's range are inf/NaN, as on the hardware (documented)
recipe("refimpl.formats.lowp_matmul", kinds=dict(MM_KINDS, overflow="name"), finite=None)(
    lambda draw: dict(_mm(draw), input_dtype=draw(LOWP), output_dtype=draw(LOWP),
                      accumulate=draw(st.sampled_from(FM.ACCUMULATE))))
recipe("refimpl.formats.lowp_matmul_bound", kinds=MM_KINDS)(
    lambda draw: dict(_mm(draw), input_dtype=draw(LOWP), output_dtype=draw(LOWP),
                      accumulate=draw(st.sampled_from(FM.ACCUMULATE))))
# the fp32-accumulated result beyond the output format's range is inf (documented)
recipe("refimpl.formats.fp8_matmul", kinds=dict(a="array", b="array", fmt="name", per_channel="bool",
                                                output_dtype="name"), finite=None)(
    lambda draw: dict(_mm(draw), fmt=draw(st.sampled_from(["float8_e4m3fn", "float8_e5m2"])),
                      per_channel=draw(st.booleans()), output_dtype=draw(st.sampled_from(["float32", "bfloat16"]))))


# --- moe.reroute_dropped ------------------------------------------------------------

recipe("refimpl.moe.reroute_dropped", kinds=dict(routing="routing"))(
    lambda draw: dict(routing=routing(draw, capacity_factor=draw(st.floats(0.25, 2.0)))[0]))
