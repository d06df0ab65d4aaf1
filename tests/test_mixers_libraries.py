"""The spec beside the libraries' own pure-PyTorch references, run on the CPU.

Nothing of the libraries is in this project: point ``REFIMPL_LIBRARY_SOURCES`` at a directory
holding checkouts (or just these files) of
``flash-linear-attention/fla/ops/{linear_attn,gla,retention,delta_rule,gated_delta_rule}/naive.py``
(fla 0.5.2), ``mamba/mamba_ssm/ops/selective_scan_interface.py`` (mamba_ssm 2.3.2),
``causal-conv1d/causal_conv1d/causal_conv1d_interface.py`` (1.6.1) and
``RWKV-LM/RWKV-v4/src/model_run.py`` (commit 524481d); each test skips, saying which file is
missing, otherwise. Needs torch (and einops for fla).

The references compute in float32 (they call ``.float()``); the spec in float64. Bound: a float32
evaluation of a sum of n products of magnitude M (the same computation on |inputs|) is within
gamma_n u32 M (Higham eq. 3.5); with the exps and the recurrent products, n = L + K + 8 and a
factor 4 covers both; measured ratios are printed with ``-s``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib

import numpy as np
import pytest

from refimpl.mixers import presets
from refimpl.mixers.gated import gated_linear_attention

torch = pytest.importorskip("torch", reason="torch is needed to run the libraries' references")
U32 = 2.0**-24
ROOT = os.environ.get("REFIMPL_LIBRARY_SOURCES", "")


def _source(rel: str) -> pathlib.Path:
    p = pathlib.Path(ROOT) / rel
    if not ROOT or not p.is_file():
        pytest.skip(f"library source {rel} not found (set REFIMPL_LIBRARY_SOURCES to a directory holding it)")
    return p


def _module(rel: str):
    pytest.importorskip("einops", reason="fla's naive references import einops")
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_")[:-3], _source(rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _function(rel: str, name: str, namespace: dict):
    """One function (or method) of a file that cannot be imported whole (CUDA extensions at import)."""
    tree = ast.parse(_source(rel).read_text())
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        pytest.skip(f"{rel} has no function {name}")
    exec(compile(ast.Module(body=[node], type_ignores=[]), rel, "exec"), namespace)
    return namespace[name]


def _check(name, got, ref, magnitude, n):
    bound = 4 * (n + 8) * U32 * np.maximum(magnitude, 1e-300)
    err = np.abs(np.asarray(got, dtype=np.float64) - ref)
    ratio = float(np.max(err / bound))
    print(f"{name}: max |lib - spec| = {err.max():.3g}, max ratio to bound {ratio:.3f}")
    assert ratio <= 1.0, f"{name}: library and spec differ by {err.max():.3g} (ratio {ratio:.2f} to the float32 bound)"


def _t(x):
    return torch.tensor(np.ascontiguousarray(x))


rng = np.random.default_rng(20261123)
B, L, H, K, V = 2, 13, 3, 8, 5


def _mag(q, k, v, g=None):
    """|q|^T (decayed) |k| |v| summed causally: the magnitude of every output (float64)."""
    return gated_linear_attention(np.abs(q), np.abs(k), np.abs(v), g)[0]


def test_fla_linear_attn_normalized():
    mod = _module("flash-linear-attention/fla/ops/linear_attn/naive.py")
    q, k = np.exp(rng.standard_normal((2, B, L, H, K)) * 0.3)  # positive features, as after a feature map
    v = rng.standard_normal((B, L, H, V))
    for normalize in (False, True):
        ref, _ = mod.naive_recurrent_linear_attn(_t(q), _t(k), _t(v), normalize=normalize)
        got = presets.fla_linear_attn(q, k, v, normalize=normalize)
        mag = np.swapaxes(_mag(*(np.swapaxes(x, 1, 2) for x in (q, k, v))), 1, 2)
        if normalize:  # |y| <= max|v|; relative error of num and den both ~ gamma_n u32
            mag = np.broadcast_to(2 * np.abs(v).max(), got.shape)
        _check(f"fla naive_recurrent_linear_attn normalize={normalize}", ref.numpy(), got, mag, L + K)


def test_fla_gla():
    mod = _module("flash-linear-attention/fla/ops/gla/naive.py")
    q, k = rng.standard_normal((2, B, L, H, K))
    v = rng.standard_normal((B, L, H, V))
    gk = -rng.random((B, L, H, K))
    ref, S_ref = mod.naive_recurrent_gla(_t(q), _t(k), _t(v), _t(gk), output_final_state=True)
    got, S = presets.fla_gla(q, k, v, gk)
    bhld = [np.swapaxes(x, 1, 2) for x in (q, k, v, gk)]
    mag = np.swapaxes(_mag(*bhld), 1, 2) * K ** -0.5
    _check("fla naive_recurrent_gla", ref.numpy(), got, mag, L + K)
    _check("fla naive_recurrent_gla final state", S_ref.numpy(), S, np.abs(S) + 1, L + K)


def test_fla_retention():
    mod = _module("flash-linear-attention/fla/ops/retention/naive.py")
    q, k = rng.standard_normal((2, B, H, L, K))
    v = rng.standard_normal((B, H, L, V))
    ref = mod.naive_retention(_t(q), _t(k), _t(v)).numpy()
    got = presets.fla_retention(q, k, v)
    _check("fla naive_retention", ref, got, _mag(q, k, v) * K ** -0.5, L + K)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_fla_delta_rule_recurrence_and_chunkwise():
    mod = _module("flash-linear-attention/fla/ops/delta_rule/naive.py")
    Lc = 16  # fla's chunkwise reference needs L % chunk == 0
    q, k = _unit(rng.standard_normal((2, B, H, Lc, K)))
    v = rng.standard_normal((B, H, Lc, V))
    beta = rng.random((B, H, Lc))
    got, S = presets.fla_delta_rule(q, k, v, beta)
    # |o_t| <= scale |q_t| sum_j |beta_j v_j| (contraction, see refimpl.mixers.delta_rule)
    mag = K ** -0.5 * np.cumsum(np.linalg.norm(v, axis=-1), axis=2)[..., None] * np.ones(V)
    ref, S_ref = mod.delta_rule_recurrence(_t(q), _t(k), _t(v), _t(beta))
    _check("fla delta_rule_recurrence", ref.numpy(), got, mag, Lc + K)
    ref_c, S_c = mod.delta_rule_chunkwise(_t(q).float(), _t(k).float(), _t(v).float(), _t(beta).float(), chunk_size=8)
    _check("fla delta_rule_chunkwise (chunk 8)", ref_c.numpy(), got, mag, Lc + K)
    _check("fla delta_rule final state", S_ref.numpy(), S, np.abs(S) + 1, Lc + K)


def test_fla_gated_delta_rule():
    mod = _module("flash-linear-attention/fla/ops/gated_delta_rule/naive.py")
    q, k = _unit(rng.standard_normal((2, B, L, H, K)))
    v = rng.standard_normal((B, L, H, V))
    beta, g = rng.random((B, L, H)), -rng.random((B, L, H))
    got, S = presets.fla_gated_delta_rule(q, k, v, beta, g)
    mag = K ** -0.5 * np.cumsum(np.linalg.norm(v, axis=-1), axis=1)[..., None] * np.ones(V)
    ref, S_ref = mod.naive_recurrent_gated_delta_rule(_t(q), _t(k), _t(v), _t(beta), _t(g), output_final_state=True)
    _check("fla naive_recurrent_gated_delta_rule", ref.numpy(), got, mag, L + K)
    # the chunk reference takes (q, k, v, g, beta): the argument order differs from the recurrent one
    ref_c, _ = mod.naive_chunk_gated_delta_rule(_t(q), _t(k), _t(v), _t(g), _t(beta), chunk_size=4)
    _check("fla naive_chunk_gated_delta_rule (chunk 4, L = 13)", ref_c.numpy(), got, mag, L + K)
    _check("fla gated delta rule final state", S_ref.numpy(), S, np.abs(S) + 1, L + K)


def _mamba_namespace():
    import torch.nn.functional as F
    einops = pytest.importorskip("einops", reason="mamba's reference uses einops")
    return {"torch": torch, "F": F, "rearrange": einops.rearrange, "repeat": einops.repeat}


@pytest.mark.parametrize("groups", [0, 1, 2])
def test_mamba_selective_scan_ref(groups):
    ref_fn = _function("mamba/mamba_ssm/ops/selective_scan_interface.py", "selective_scan_ref", _mamba_namespace())
    dim, N = 6, 4
    u, delta, z = rng.standard_normal((3, B, dim, L))
    A = -np.exp(rng.standard_normal((dim, N)))
    shape = (B, N, L) if groups == 0 else (B, groups, N, L)
    Bm, Cm = rng.standard_normal((2,) + shape)
    D, dbias = rng.standard_normal((2, dim))
    f32 = [_t(a).float() for a in (u, delta, A, Bm, Cm, D, z, dbias)]  # the reference is float32 throughout
    out_ref, last_ref = ref_fn(*f32, True, True)
    out, last = presets.mamba_selective_scan(u, delta, A, Bm, Cm, D, z, dbias, True, True)
    mag = presets.mamba_selective_scan(np.abs(u), delta, A, np.abs(Bm), np.abs(Cm), np.abs(D), None, dbias, True)
    mag = mag * np.abs(z) / (1 + np.exp(-z))  # |silu(z)| bounds the gate
    _check(f"mamba selective_scan_ref (groups={groups})", out_ref.numpy(), out, mag + 1e-3, L + N)
    _check("mamba last state", last_ref.numpy(), last, np.abs(last) + 1, L + N)


def test_causal_conv1d_ref():
    ref_fn = _function("causal-conv1d/causal_conv1d/causal_conv1d_interface.py", "causal_conv1d_ref",
                       _mamba_namespace())
    x = rng.standard_normal((B, 6, L))
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(6)
    for act in (None, "silu"):
        ref = ref_fn(_t(x), _t(w), _t(b), activation=act).numpy()  # float64 throughout
        got = presets.causal_conv1d_ref(x, w, b, activation=act)
        np.testing.assert_allclose(got, ref, rtol=0, atol=16 * 2.0**-53 * (np.abs(x).max() * np.abs(w).sum(1).max() + 3))


def test_rwkv4_rnn_time_mixing():
    """RWKV-4's own float64-capable RNN step (``model_run.py`` ``RWKV_RNN.SA``, the running-max form)
    driven with identity projections: k_t = x_t, v_t = x_{t-1} (time_mix_v = 0), r = 0 so the
    output is wkv / 2."""
    import types

    sa = _function("RWKV-LM/RWKV-v4/src/model_run.py", "SA", {"torch": torch})
    C, T = 5, 12
    x = rng.standard_normal((T, C)) * 3
    time_decay, time_first = -np.exp(rng.standard_normal(C)), rng.standard_normal(C)
    eye = types.SimpleNamespace(weight=torch.eye(C, dtype=torch.float64))
    w = types.SimpleNamespace(time_mix_k=torch.ones(C, dtype=torch.float64), time_mix_v=torch.zeros(C, dtype=torch.float64),
                              time_mix_r=torch.ones(C, dtype=torch.float64), receptance=types.SimpleNamespace(weight=torch.zeros((C, C), dtype=torch.float64)),
                              key=eye, value=eye, output=eye, time_decay=_t(time_decay), time_first=_t(time_first))
    me = types.SimpleNamespace(xx={}, aa={}, bb={}, pp={}, n_embd=C, RUN_DEVICE="cpu")
    me.xx["a"] = torch.zeros(C, dtype=torch.float64)
    me.aa["a"], me.bb["a"] = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    me.pp["a"] = torch.zeros(C, dtype=torch.float64) - 1e30
    ref = np.stack([2 * sa(me, _t(x[t]), w, "a").numpy() for t in range(T)])
    v = np.concatenate([np.zeros((1, C)), x[:-1]])
    got = presets.rwkv4_wkv(time_decay, time_first, x[None], v[None])[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=8 * (T + 8) * 2.0**-53 * (np.abs(x).max() * 4 + 1))


# ---------------------------------------------------------------------------------------------
# The libraries' float32 references as adapters (precision "float32"): each passes the suite's
# properties under properties.precision (before it, every run failed against the float64 bound).


def _run_props(adapter, names, n=60):
    from properties import mixers_common, mixers_linear, mixers_scan
    from properties.core import run_property

    props = {p.name: p for p in mixers_linear.PROPERTIES + mixers_scan.PROPERTIES}
    mixers_common.MEASURED.clear()
    for name in names:
        run_property(props[name], adapter, max_examples=n, derandomize=True, database=None, deadline=None)
    for k, v in sorted(mixers_common.MEASURED.items()):
        print(f"{adapter.name} {k}: max error / bound = {v:.3g}")


def test_fla_gla_float32_passes_the_properties():
    from properties.mixers_linear import LinearAttentionAdapter

    mod = _module("flash-linear-attention/fla/ops/gla/naive.py")

    def forward(q, k, v, g, scale, chunk_size):  # fla: (B, T, H, K) layout, scale K^-0.5, channel gates
        K = q.shape[-1]
        gk = np.zeros(q.shape) if g is None else np.broadcast_to(g[..., None] if g.ndim == 3 else g, q.shape)
        t = [_t(np.swapaxes(x, 1, 2)) for x in (q * (scale * K ** 0.5), k, v, gk)]
        o, S = mod.naive_recurrent_gla(*t, output_final_state=True)
        return np.swapaxes(o.numpy(), 1, 2), S.double().numpy()

    ad = LinearAttentionAdapter("fla.naive_recurrent_gla[float32]", forward,
                                capabilities=frozenset({"gate_scalar", "gate_channel", "final_state"}), precision="float32")
    _run_props(ad, ["la_matches_recurrent", "la_extreme_gates"])


def test_fla_gated_delta_rule_float32_passes_the_properties():
    from properties.mixers_linear import DeltaRuleAdapter

    mod = _module("flash-linear-attention/fla/ops/gated_delta_rule/naive.py")

    def forward(q, k, v, beta, g, scale, chunk_size):
        g = np.zeros(beta.shape) if g is None else g
        t = [_t(np.swapaxes(x, 1, 2)) for x in (q, k, v, beta, g)]
        o, S = mod.naive_recurrent_gated_delta_rule(*t, scale=scale, output_final_state=True)
        return np.swapaxes(o.double().numpy(), 1, 2), S.double().numpy()

    ad = DeltaRuleAdapter("fla.naive_recurrent_gated_delta_rule[float32]", forward, frozenset({"gated", "final_state"}),
                          precision="float32")
    _run_props(ad, ["delta_matches_recurrent", "delta_extreme_gates", "delta_memorises"])


def test_mamba_selective_scan_ref_float32_passes_the_properties():
    from properties.mixers_scan import ScanAdapter

    ref_fn = _function("mamba/mamba_ssm/ops/selective_scan_interface.py", "selective_scan_ref", _mamba_namespace())

    def forward(u, dl, A, Bm, Cm, D, z, x0):  # heads and head channels flattened to mamba's D = H P channels
        b, H, L, P = u.shape
        ch = lambda x: _t(np.swapaxes(x, 2, 3).reshape(b, H * P, L)).float()  # noqa: E731
        args = [ch(u), ch(dl), _t(A.reshape(H * P, -1)).float(), _t(np.swapaxes(Bm, 2, 3)).float(),
                _t(np.swapaxes(Cm, 2, 3)).float(), None if D is None else _t(D.reshape(-1)).float(),
                None if z is None else ch(z)]
        y, last = ref_fn(*args, None, False, True)
        y = np.swapaxes(y.double().numpy().reshape(b, H, P, L), 2, 3)
        return y, last.double().numpy().reshape(b, H, P, -1)

    ad = ScanAdapter("mamba.selective_scan_ref[float32]", forward,
                     frozenset({"time_varying", "grouped", "skip_and_gate", "final_state"}), precision="float32")
    _run_props(ad, ["scan_matches_sequential", "scan_extreme_decays"])
