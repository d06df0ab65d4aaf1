"""Fuzz recipes for refimpl.mixers (linear-time sequence mixers), registered into contract_recipes.R.

Each recipe builds one valid call in the spec's layout (B, H, L, D) or, for the presets, in the
library's own layout; the engine in tests/test_contract_fuzz.py breaks one argument at a time.
Shapes are small (L <= 5) so the whole family runs in a few seconds under the ci profile.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from refimpl import mixers
from refimpl.mixers import cost

from .contract_recipes import R, arr, recipe

P = "refimpl.mixers."
FORM_KINDS = dict(form="name", chunk_size="count")


def dims(draw):
    return dict(B=draw(st.integers(1, 2)), H=draw(st.integers(1, 2)), L=draw(st.integers(0, 5)),
                K=draw(st.integers(1, 3)), V=draw(st.integers(1, 3)))


def qkv(draw, d, *, same_v=False):
    B, H, L, K, V = (d[n] for n in "BHLKV")
    return dict(q=arr(draw, (B, H, L, K)), k=arr(draw, (B, H, L, K)), v=arr(draw, (B, H, L, K if same_v else V)))


def forms(draw, options):
    out = {}
    if draw(st.booleans()):
        out["form"] = draw(st.sampled_from(options))
    if draw(st.booleans()):
        out["chunk_size"] = draw(st.integers(1, 6))
    return out


# --- gated linear attention, retention --------------------------------------------


@recipe(P + "gated_linear_attention", kinds=dict(q="array", k="array", v="array", g="array", scale="float",
                                                 initial_state="array", **FORM_KINDS))
def _(draw):
    d = dims(draw)
    out = qkv(draw, d)
    B, H, L, K, V = (d[n] for n in "BHLKV")
    gshape = draw(st.sampled_from([None, (B, H, L), (B, H, L, K)]))
    if gshape is not None:
        out["g"] = arr(draw, gshape, -2.0, 0.0)
    if draw(st.booleans()):
        out["scale"] = draw(st.floats(0.01, 4.0))
    if draw(st.booleans()):
        out["initial_state"] = arr(draw, (B, H, K, V))
    return dict(out, **forms(draw, ["recurrent", "parallel", "chunked"]))


@recipe(P + "retention", kinds=dict(q="array", k="array", v="array", scale="float", **FORM_KINDS))
def _(draw):
    out = qkv(draw, dims(draw))
    if draw(st.booleans()):
        out["scale"] = draw(st.floats(0.01, 4.0))
    return dict(out, **forms(draw, ["recurrent", "parallel", "chunked"]))


recipe(P + "retnet_gammas", kinds=dict(num_heads="count"))(lambda draw: dict(num_heads=draw(st.integers(1, 9))))

# --- linear attention, FAVOR+ --------------------------------------------------------


@recipe(P + "linear_attention_fn", kinds=dict(q="array", k="array", v="array", feature_map="name", causal="bool",
                                              normalize="bool", eps="nonneg_float", scale="float", **FORM_KINDS))
def _(draw):
    out = qkv(draw, dims(draw))
    for n, s in (("feature_map", st.sampled_from(sorted(mixers.linear_attention.FEATURE_MAPS))), ("causal", st.booleans()),
                 ("normalize", st.booleans()), ("eps", st.sampled_from([0.0, 1e-10, 1e-3])),
                 ("scale", st.floats(0.01, 4.0))):
        if draw(st.booleans()):
            out[n] = draw(s)
    return dict(out, **forms(draw, ["recurrent", "parallel", "chunked"]))


recipe(P + "linear_attention.apply_feature_map", kinds=dict(x="array", feature_map="name"))(
    lambda draw: dict(x=arr(draw, (1, draw(st.integers(1, 2)), draw(st.integers(0, 4)), draw(st.integers(1, 3)))),
                      feature_map=draw(st.sampled_from(sorted(mixers.linear_attention.FEATURE_MAPS)))))
# --- trigonometric random features, data-dependent gates, Linformer, the WKV scan -----------------

RF = P + "random_features."
recipe(RF + "gaussian_frequencies", kinds=dict(m="count", d="count", seed="count"))(
    lambda draw: dict(m=draw(st.integers(1, 9)), d=draw(st.integers(1, 4)), seed=draw(st.integers(0, 99))))


@recipe(RF + "trig_features", RF + "softmax_trig_features", kinds=dict(x="array", W="array"))
def _(draw):
    D = draw(st.integers(1, 3))
    return dict(x=arr(draw, (1, draw(st.integers(1, 2)), draw(st.integers(0, 4)), D)),
                W=mixers.random_features.gaussian_frequencies(draw(st.integers(1, 6)), D, seed=draw(st.integers(0, 9))))


@recipe(RF + "gaussian_kernel", kinds=dict(x="array", y="array"))
def _(draw):
    D, H = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    return dict(x=arr(draw, (1, H, draw(st.integers(0, 4)), D)), y=arr(draw, (1, H, draw(st.integers(0, 4)), D)))


recipe(RF + "hoeffding_radius", kinds=dict(m="count", delta="prob"))(
    lambda draw: dict(m=draw(st.integers(1, 10**6)), delta=draw(st.floats(1e-12, 0.5))))


def _gate_weights(draw, d):
    H, K = d["H"], d["K"]
    return {n: arr(draw, draw(st.sampled_from([(G, K), (H, G, K)])))
            for n, G in (("W_gamma", draw(st.sampled_from([1, K]))), ("W_beta", draw(st.sampled_from([1, K]))))}


@recipe(P + "gated_kernel.gated_kernel_attention", kinds=dict(q="array", k="array", v="array", W_gamma="array",
                                                              W_beta="array", feature_map="name", eps="nonneg_float",
                                                              **FORM_KINDS))
def _(draw):
    d = dims(draw)
    out = dict(qkv(draw, d), **_gate_weights(draw, d))
    if draw(st.booleans()):
        out["feature_map"] = draw(st.sampled_from(["elu+1", "relu", "squared_relu", "exp_normalised"]))
    return dict(out, **forms(draw, ["recurrent", "parallel", "chunked"]))


@recipe(P + "gated_kernel.data_dependent_gates", kinds=dict(q="array", k="array", W_gamma="array", W_beta="array"))
def _(draw):
    d = dims(draw)
    out = qkv(draw, d)
    del out["v"]
    return dict(out, **_gate_weights(draw, d))


@recipe(P + "linformer.linformer_attention", kinds=dict(q="array", k="array", v="array", E="array", F="array",
                                                        scale="float"))
def _(draw):
    d = dims(draw)
    d["L"] = max(d["L"], 1)
    out = qkv(draw, d)
    kp = draw(st.integers(1, 4))
    out["E"] = arr(draw, (kp, d["L"]), -1.0, 1.0)
    if draw(st.booleans()):
        out["F"] = arr(draw, (kp, d["L"]), -1.0, 1.0)
    if draw(st.booleans()):
        out["scale"] = draw(st.floats(0.01, 4.0))
    return out


recipe(P + "linformer.linformer_macs", kinds=dict(n="count", k_proj="count", d="count", d_v="count",
                                                  include_projections="bool"))(
    lambda draw: dict(n=draw(st.integers(1, 10**6)), k_proj=draw(st.integers(1, 512)), d=draw(st.integers(1, 256)),
                      d_v=draw(st.integers(1, 256)), include_projections=draw(st.booleans())))
recipe(P + "rwkv4.prefix_scan_steps", kinds=dict(L="count"))(lambda draw: dict(L=draw(st.integers(0, 10**6))))


recipe(P + "orthogonal_gaussian", kinds=dict(m="count", d="count", seed="count"))(
    lambda draw: dict(m=draw(st.integers(1, 9)), d=draw(st.integers(1, 4)), seed=draw(st.integers(0, 99))))


@recipe(P + "favor_features", kinds=dict(x="array", W="array", is_query="bool", stabilize="bool"))
def _(draw):
    D = draw(st.integers(1, 3))
    out = dict(x=arr(draw, (1, draw(st.integers(1, 2)), draw(st.integers(0, 4)), D)),
               W=mixers.orthogonal_gaussian(draw(st.integers(1, 6)), D, seed=draw(st.integers(0, 9))),
               is_query=draw(st.booleans()))
    if draw(st.booleans()):
        out["stabilize"] = draw(st.booleans())
    return out


@recipe(P + "performer_attention", kinds=dict(q="array", k="array", v="array", W="array", causal="bool",
                                              eps="nonneg_float", **FORM_KINDS))
def _(draw):
    d = dims(draw)
    out = qkv(draw, d)
    out["W"] = mixers.orthogonal_gaussian(draw(st.integers(1, 6)), d["K"], seed=draw(st.integers(0, 9)))
    if draw(st.booleans()):
        out["causal"] = draw(st.booleans())
    return dict(out, **forms(draw, ["recurrent", "parallel", "chunked"]))


# --- delta rule -----------------------------------------------------------------------


@recipe(P + "delta_rule_attention", kinds=dict(q="array", k="array", v="array", beta="array", g="array",
                                               scale="float", initial_state="array", **FORM_KINDS))
def _(draw):
    d = dims(draw)
    B, H, L, K, V = (d[n] for n in "BHLKV")
    out = qkv(draw, d)
    out["k"] = out["k"] / np.maximum(np.linalg.norm(out["k"], axis=-1, keepdims=True), 1e-3)  # fla: L2-normalised keys
    out["beta"] = arr(draw, draw(st.sampled_from([(B, H, L), (B, H, L, V)])), 0.0, 1.0)
    if draw(st.booleans()):
        out["g"] = arr(draw, (B, H, L), -2.0, 0.0)
    if draw(st.booleans()):
        out["initial_state"] = arr(draw, (B, H, K, V))
    return dict(out, **forms(draw, ["recurrent", "chunked"]))


# --- RWKV-4 ---------------------------------------------------------------------------


def _wkv_args(draw):
    d = dims(draw)
    B, H, L, K = (d[n] for n in "BHLK")
    wshape = draw(st.sampled_from([(H, K), (K,)]))
    return dict(w=-np.exp(arr(draw, wshape, -2.0, 1.0)), u=arr(draw, wshape), k=arr(draw, (B, H, L, K)),
                v=arr(draw, (B, H, L, K)))


WKV_KINDS = dict(w="array", u="array", k="array", v="array")
recipe(P + "wkv", kinds=dict(WKV_KINDS, form="name"), raises=(ValueError, TypeError, OverflowError))(
    lambda draw: dict(_wkv_args(draw), form=draw(st.sampled_from(["stable", "recurrent", "parallel", "scan"]))))
# lw = -inf for the future keys j > t: the docstring's masked entries
recipe(P + "rwkv4.wkv_prefix_scan", kinds=WKV_KINDS)(_wkv_args)
recipe(P + "rwkv4.log_weights", kinds=dict(w="array", u="array", k="array"), finite="no_nan_posinf")(
    lambda draw: {n: v for n, v in _wkv_args(draw).items() if n != "v"})
recipe(P + "rwkv4.rwkv4_w", kinds=dict(time_decay="array"))(
    lambda draw: dict(time_decay=arr(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 4))))))


@recipe(P + "rwkv4.rwkv4_time_mixing_output", kinds=dict(r="array", wkv_out="array"))
def _(draw):
    d = dims(draw)
    shape = tuple(d[n] for n in "BHLK")
    return dict(r=arr(draw, shape), wkv_out=arr(draw, shape))


# --- selective scan, causal conv1d ----------------------------------------------------

SCAN_KINDS = dict(u="array", delta="array", A="array", B="array", C="array", D="array", z="array",
                  delta_bias="array", delta_softplus="bool", discretization="name", initial_state="array", form="name")


@recipe(P + "selective_scan", kinds=SCAN_KINDS)
def _(draw):
    b, G, L, P_, N = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 2), (0, 4), (1, 3), (1, 3)))
    H = G * draw(st.integers(1, 2))
    invariant = draw(st.booleans())
    Lb = 1 if invariant else L

    def seq(shape_last, lo=-2.0, hi=2.0, groups=None):
        a = arr(draw, (b, groups or H, Lb, shape_last), lo, hi)
        return np.repeat(a, L, axis=2) if invariant else a

    out = dict(u=arr(draw, (b, H, L, P_)), delta=seq(P_, 0.0, 1.5), A=-np.exp(arr(draw, (H, P_, N), -2.0, 1.0)),
               B=seq(N, groups=G), C=seq(N, groups=G))
    for n, shape in (("D", (H, P_)), ("z", (b, H, L, P_)), ("delta_bias", (H, P_)), ("initial_state", (b, H, P_, N))):
        if draw(st.booleans()):
            out[n] = arr(draw, shape, 0.0 if n == "delta_bias" else -3.0, 3.0)
    for n, s in (("delta_softplus", st.booleans()), ("discretization", st.sampled_from(["zoh_a_euler_b", "zoh"]))):
        if draw(st.booleans()):
            out[n] = draw(s)
    out["form"] = draw(st.sampled_from(["sequential", "associative"] + (["convolution"] if invariant else [])))
    return out


@recipe(P + "ssd", kinds=dict(x="array", dt="array", A="array", B="array", C="array", D="array", z="array",
                              initial_state="array", form="name", chunk_size="count"))
def _(draw):
    b, G, L, P_, N = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 2), (0, 6), (1, 3), (1, 3)))
    H = G * draw(st.integers(1, 2))
    out = dict(x=arr(draw, (b, H, L, P_)), dt=arr(draw, (b, H, L), 0.0, 1.5), A=-np.exp(arr(draw, (H,), -2.0, 1.0)),
               B=arr(draw, (b, G, L, N)), C=arr(draw, (b, G, L, N)))
    for n, shape in (("D", draw(st.sampled_from([(H,), (H, P_)]))), ("z", (b, H, L, P_)), ("initial_state", (b, H, P_, N))):
        if draw(st.booleans()):
            out[n] = arr(draw, shape, -3.0, 3.0)
    out["form"] = draw(st.sampled_from(["sequential", "chunked"]))
    if draw(st.booleans()):
        out["chunk_size"] = draw(st.integers(1, 5))
    return out


@recipe(P + "causal_conv1d", kinds=dict(x="array", weight="array", bias="array", activation="name"))
def _(draw):
    b, H, L, P_, W = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 2), (0, 5), (1, 3), (1, 4)))
    out = dict(x=arr(draw, (b, H, L, P_)), weight=arr(draw, (H, P_, W)))
    if draw(st.booleans()):
        out["bias"] = arr(draw, (H, P_))
    if draw(st.booleans()):
        out["activation"] = draw(st.sampled_from([None, "silu"]))
    return out


recipe(P + "ssm.silu", P + "ssm.softplus", kinds=dict(x="array"))(
    lambda draw: dict(x=arr(draw, (draw(st.integers(0, 3)), draw(st.integers(1, 4))), -50.0, 50.0)))

# --- cost -----------------------------------------------------------------------------

C = P + "cost."
pos = st.integers(1, 10**6)
recipe(C + "softmax_attention", kinds=dict(t="count", d="count", d_v="count"))(
    lambda draw: dict(t=draw(pos), d=draw(pos), d_v=draw(pos)))
recipe(C + "linear_attention", kinds=dict(d_phi="count", d_v="count", normalize="bool"))(
    lambda draw: dict(d_phi=draw(pos), d_v=draw(pos), normalize=draw(st.booleans())))
recipe(C + "gated_linear_attention", kinds=dict(d_k="count", d_v="count"))(
    lambda draw: dict(d_k=draw(pos), d_v=draw(pos)))
recipe(C + "delta_rule", kinds=dict(d_k="count", d_v="count", gated="bool"))(
    lambda draw: dict(d_k=draw(pos), d_v=draw(pos), gated=draw(st.booleans())))
recipe(C + "rwkv4", kinds=dict(channels="count"))(lambda draw: dict(channels=draw(pos)))
recipe(C + "selective_scan", kinds=dict(P="count", N="count", d_skip="bool"))(
    lambda draw: dict(P=draw(pos), N=draw(pos), d_skip=draw(st.booleans())))
recipe(C + "sequence_macs_softmax", kinds=dict(n="count", d="count", d_v="count", causal="bool"))(
    lambda draw: dict(n=draw(pos), d=draw(pos), d_v=draw(pos), causal=draw(st.booleans())))
recipe(C + "sequence_macs_linear", kinds=dict(n="count", d_phi="count", d_v="count"))(
    lambda draw: dict(n=draw(pos), d_phi=draw(pos), d_v=draw(pos)))


@recipe(C + "attention_table", kinds=dict(B="count", H="count", L="count", d_head="count", Lq="count", Lk="count",
                                          t="count"))
def _(draw):
    out = dict(B=draw(pos), H=draw(pos), L=draw(pos), d_head=draw(pos))
    for n in ("Lq", "Lk", "t"):
        if draw(st.booleans()):
            out[n] = draw(pos)
    return out


# --- presets: the libraries' layouts ----------------------------------------------------

PR = P + "presets."


def blhd(draw, d, *, same_v=False):
    B, H, L, K, V = (d[n] for n in "BHLKV")
    return dict(q=arr(draw, (B, L, H, K)), k=arr(draw, (B, L, H, K)), v=arr(draw, (B, L, H, K if same_v else V)))


@recipe(PR + "fla_linear_attn", kinds=dict(q="array", k="array", v="array", scale="float", normalize="bool"))
def _(draw):
    out = blhd(draw, dims(draw))
    out["q"], out["k"] = np.abs(out["q"]), np.abs(out["k"])  # fla takes feature-mapped q, k
    if draw(st.booleans()):
        out["scale"] = draw(st.floats(0.01, 4.0))
    if draw(st.booleans()):
        out["normalize"] = draw(st.booleans())
    return out


@recipe(PR + "fla_gla", kinds=dict(q="array", k="array", v="array", gk="array", initial_state="array"))
def _(draw):
    d = dims(draw)
    out = blhd(draw, d)
    out["gk"] = arr(draw, (d["B"], d["L"], d["H"], d["K"]), -2.0, 0.0)
    if draw(st.booleans()):
        out["initial_state"] = arr(draw, (d["B"], d["H"], d["K"], d["V"]))
    return out


recipe(PR + "fla_retention", kinds=dict(q="array", k="array", v="array"))(lambda draw: qkv(draw, dims(draw)))


@recipe(PR + "fla_delta_rule", kinds=dict(q="array", k="array", v="array", beta="array", initial_state="array"))
def _(draw):
    d = dims(draw)
    out = qkv(draw, d)
    out["beta"] = arr(draw, (d["B"], d["H"], d["L"]), 0.0, 1.0)
    if draw(st.booleans()):
        out["initial_state"] = arr(draw, (d["B"], d["H"], d["K"], d["V"]))
    return out


@recipe(PR + "fla_gated_delta_rule", kinds=dict(q="array", k="array", v="array", beta="array", g="array",
                                                scale="float", initial_state="array"))
def _(draw):
    d = dims(draw)
    out = blhd(draw, d)
    out["beta"] = arr(draw, (d["B"], d["L"], d["H"]), 0.0, 1.0)
    out["g"] = arr(draw, (d["B"], d["L"], d["H"]), -2.0, 0.0)
    if draw(st.booleans()):
        out["scale"] = draw(st.floats(0.01, 4.0))
    return out


@recipe(PR + "mamba_selective_scan", kinds=dict(u="array", delta="array", A="array", B="array", C="array",
                                                D="array", z="array", delta_bias="array", delta_softplus="bool",
                                                return_last_state="bool"))
def _(draw):
    b, G, L, N = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 2), (0, 4), (1, 3)))
    dim = G * draw(st.integers(1, 2))
    bc = (b, N, L) if G == 1 and draw(st.booleans()) else (b, G, N, L)
    out = dict(u=arr(draw, (b, dim, L)), delta=arr(draw, (b, dim, L), 0.0, 1.5), A=-np.exp(arr(draw, (dim, N))),
               B=arr(draw, bc), C=arr(draw, bc))
    for n, shape in (("D", (dim,)), ("z", (b, dim, L)), ("delta_bias", (dim,))):
        if draw(st.booleans()):
            out[n] = arr(draw, shape, 0.0 if n == "delta_bias" else -3.0, 3.0)  # delta + delta_bias >= 0
    for n in ("delta_softplus", "return_last_state"):
        if draw(st.booleans()):
            out[n] = draw(st.booleans())
    return out


@recipe(PR + "causal_conv1d_ref", kinds=dict(x="array", weight="array", bias="array", activation="name"))
def _(draw):
    b, dim, L, W = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 3), (0, 5), (1, 4)))
    out = dict(x=arr(draw, (b, dim, L)), weight=arr(draw, (dim, W)))
    if draw(st.booleans()):
        out["bias"] = arr(draw, (dim,))
    if draw(st.booleans()):
        out["activation"] = draw(st.sampled_from([None, "silu"]))
    return out


@recipe(PR + "rwkv4_wkv", kinds=WKV_KINDS)
def _(draw):
    b, T, Cn = draw(st.integers(1, 2)), draw(st.integers(0, 5)), draw(st.integers(1, 4))
    return dict(w=-np.exp(arr(draw, (Cn,), -2.0, 1.0)), u=arr(draw, (Cn,)), k=arr(draw, (b, T, Cn)),
                v=arr(draw, (b, T, Cn)))
