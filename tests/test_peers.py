"""The shipped peer adapters (properties/peers) and the presets side by side with the real
libraries on the CPU. Every test needing a library skips, naming it, when the ``peers``
extra is not installed (``pip install -e '.[peers]'``)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import refimpl
from properties import registry
from properties.core import run_property
from properties.peers import FACTORIES, TRITON, Unavailable, availability
from properties.pytest_plugin import conformance_params
from refimpl import conventions as C
from refimpl import moe as M
from refimpl.moe import presets as P


def _need(module):
    return pytest.importorskip(module, reason=f"{module} not installed (pip install -e '.[peers]')")


def test_importing_the_peers_package_imports_no_library():
    code = ("import sys, properties.peers, properties.peers.run; "
            "import properties.peers.sdpa, properties.peers.flex, properties.peers.jax_dpa, properties.peers.deepspeed_gating, properties.peers.hf_moe, properties.peers.gpu_only; "
            "import properties.peers.fla_ops, properties.peers.fla_attn, properties.peers.liger_ops, properties.peers.mamba_ssu, properties.peers.sglang_ops, properties.peers.triton_shims; "
            "print(sorted(m for m in ('torch', 'jax', 'transformers', 'deepspeed', 'triton', 'fla', 'liger_kernel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_factory_gives_adapters_or_a_reason():
    for name, state in availability().items():
        assert state == "available" or state.startswith("unavailable: "), (name, state)
        if state == "available":
            got = getattr(__import__("properties.peers", fromlist=[name]), name)()
            for impl in got if isinstance(got, list) else [got]:
                assert impl.kind in {"attention", "moe", "linear_attention", "delta_rule", "ssm_scan", "norm", "loss", "rope",
                                     "contrastive_loss", "ffn"}, impl.name
                assert impl.preset and impl.library, impl.name


def test_gpu_only_adapters_say_what_is_missing():
    torch = _need("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from properties.peers import flash_attn

    with pytest.raises(Unavailable, match="unavailable: flash-attn needs a CUDA GPU"):
        flash_attn()


def test_xfail_entries_name_a_property_and_cite_the_library():
    from properties.report import PEERS_XFAIL_FILE

    names = {p.name for p in registry.all_properties()}
    entries = json.loads(PEERS_XFAIL_FILE.read_text())["entries"]
    for e in entries:
        assert set(e) == {"property", "implementation", "adapter", "reason"} and e["property"] in names, e
        assert e["adapter"].split(":")[1] in FACTORIES, e
        assert ".py" in e["reason"], e  # the library's file (and function) is cited


def test_peer_xfail_entries_skipped_unless_their_adapter_is_loaded(monkeypatch):
    from properties.report import xfail_entries

    monkeypatch.delenv("REFIMPL_IMPLS", raising=False)
    assert not any(impl.startswith(("hf.", "jax.", "deepspeed.")) for _, impl in xfail_entries())


def test_peer_xfail_entry_with_unknown_property_is_an_error(monkeypatch, tmp_path):
    from properties import report

    bad = {"entries": [{"property": "no_such_property", "implementation": "x", "adapter": "properties.peers:hf_mixtral",
                        "reason": "x.py"}]}
    (tmp_path / "xfail.json").write_text(json.dumps(bad))
    monkeypatch.setattr(report, "PEERS_XFAIL_FILE", tmp_path / "xfail.json")
    with pytest.raises(report.XfailError, match="unknown property"):
        report.xfail_entries(set())


# --- every peer through every property of its kind, by the same binding as any adapter ----------
# (smoke size; the full run is python -m properties.peers --profile ci, see the README)

# Smoke size: 3 examples a pair (CI time); FlexAttention's eager CPU path builds a BlockMask per
# call and XLA compiles jax.nn.dot_product_attention for every new shape (~1-4 s an example on 2
# shared cores), so outside REFIMPL_PROFILE=thorough they run two properties, 2 examples each.
# The full-size run of every pair: python -m properties.peers --profile ci (README).
EXAMPLES = 3
XFAIL_EXAMPLES = 100
SLOW = {"torch.flex_attention[float64]", "jax.nn.dot_product_attention"}
SLOW_SMOKE = {"matches_reference", "gqa_equals_repeated_mha"}
THOROUGH = os.environ.get("REFIMPL_PROFILE") == "thorough"


def _peer_impls():
    if os.environ.get("REFIMPL_PEERS") == "0":
        return []
    out = []
    for factory in FACTORIES:
        if factory in TRITON:  # interpreted Triton kernels: tests/test_triton_peers.py
            continue
        try:
            got = getattr(__import__("properties.peers", fromlist=[factory]), factory)()
        except Unavailable:
            continue
        out += [pytest.param(i, id=i.name) for i in (got if isinstance(got, list) else [got])]
    return out


def _peer_pairs():
    impls = _peer_impls()
    if not impls:
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason="no peer library installed (pip install -e '.[peers]') or REFIMPL_PEERS=0"))]
    monkey = os.environ.get("REFIMPL_IMPLS")  # the peer xfail entries apply to loaded peers only
    os.environ["REFIMPL_IMPLS"] = ",".join(filter(None, [monkey, *(
        f"properties.peers:{f}" for f in FACTORIES if f not in TRITON and availability()[f] == "available")]))
    try:
        return conformance_params(registry.all_properties(), [p.values[0] for p in impls])
    finally:
        if monkey is None:
            del os.environ["REFIMPL_IMPLS"]
        else:
            os.environ["REFIMPL_IMPLS"] = monkey


@pytest.mark.parametrize("prop, impl", _peer_pairs())
def test_peer_property(prop, impl, request):
    # A pair of the xfail file is a strict xfail (its XPASS fails the run, as the docs say), so
    # its examples are drawn derandomised in every profile: the known deviation is drawn, or
    # not, the same way on every machine and profile (never a verdict of the example database).
    # The deviations are rare cases (ties, underflow), so such a pair runs the ci profile's 100
    # examples, as python -m properties.peers --profile ci does (the slow peers: 2).
    xfail = request.node.get_closest_marker("xfail") is not None
    fixed = dict(derandomize=True, database=None) if xfail else {}
    if THOROUGH:
        run_property(prop, impl, **fixed)
    elif impl.name in SLOW:
        if prop.name not in SLOW_SMOKE:
            pytest.skip(f"{impl.name} is slow on the CPU: {prop.name} runs under REFIMPL_PROFILE=thorough "
                        f"and in python -m properties.peers")
        run_property(prop, impl, max_examples=2, **fixed)
    else:
        run_property(prop, impl, max_examples=XFAIL_EXAMPLES if xfail else EXAMPLES, **fixed)


# --- presets side by side with the real libraries (item 7) -------------------------------------


def _qkv(seed, B=1, Hq=2, Hkv=1, Lq=4, Lk=3, D=4):
    r = np.random.default_rng(seed)
    return r.standard_normal((B, Hq, Lq, D)), r.standard_normal((B, Hkv, Lk, D)), r.standard_normal((B, Hkv, Lk, D))


def test_deepspeed_topkgating_matches_presets():
    torch = _need("torch")
    sm = _need("deepspeed.moe.sharded_moe")
    rng = np.random.default_rng(5)
    for i in range(40):
        T, E = int(rng.integers(2, 12)), int(rng.integers(2, 8))
        k, C = int(rng.integers(1, E + 1)), int(rng.integers(1, 4))
        z = rng.standard_normal((T, E)) * 2  # continuous: no ties, no underflow
        for policy, preset in (("probs", "deepspeed_topk"), ("position", "deepspeed_topk_position")):
            l_aux, combine, dispatch, counts = sm.topkgating(torch.tensor(z), k, 0.0, C, drop_policy=policy)
            r = M.route(z, k, preset=preset, capacity=C)
            want = np.zeros((T, E, C))
            for t, j in zip(*np.nonzero(r.kept)):
                want[t, r.indices[t, j], r.position[t, j]] = r.gates[t, j]
            np.testing.assert_allclose(combine.numpy(), want, rtol=1e-13, atol=1e-15, err_msg=f"{preset} case {i}")
            np.testing.assert_array_equal(counts.numpy(), r.counts)
            # ce = mean(mask.float()) is float32 (one rounding of count / T): rel. error <= 2^-24 each
            assert float(l_aux) == pytest.approx(P.ALL[preset].balance_loss(r), rel=4 * 2.0**-24)


def test_deepspeed_installed_version_ranks_probabilities_not_logits():
    torch = _need("torch")
    sm = _need("deepspeed.moe.sharded_moe")
    z = np.array([[-1.0, -2.0], [-3.0, 5.0]])  # deepspeed_topk_v0_15 drops token 0 (see test_moe_presets)
    _, _, dispatch, _ = sm.topkgating(torch.tensor(z), 1, 0.0, 1, drop_policy="probs")
    assert dispatch.numpy()[0, 0].any()
    assert M.route(z, 1, preset="deepspeed_topk", capacity=1).kept[0, 0]
    assert not M.route(z, 1, preset="deepspeed_topk_v0_15", capacity=1).kept[0, 0]


def test_hf_eager_attention_fully_masked_row_matches_hf_mistral_preset():
    torch = _need("torch")
    mm = _need("transformers.models.mistral.modeling_mistral")

    class Module(torch.nn.Module):
        num_key_value_groups, training = 2, False

    mask = np.array([[False, False, False], [True, False, False], [True, True, False], [True, True, True]])
    for dtype in (np.float64, np.float32):
        q, k, v = (a.astype(dtype) for a in _qkv(1))
        add = torch.zeros(1, 1, 4, 3, dtype=getattr(torch, np.dtype(dtype).name))
        add[0, 0][~torch.tensor(mask)] = torch.finfo(add.dtype).min
        out, _ = mm.eager_attention_forward(Module(), *(torch.tensor(a) for a in (q, k, v)), add, scaling=0.5)
        lib = out.transpose(1, 2).double().numpy()
        want, _ = C.HF_MISTRAL.attention(q, k, v, mask=mask, scale=0.5)
        assert np.array_equal(np.isnan(lib), np.isnan(want)), dtype
        assert np.isnan(want[:, :, 0]).all() == (dtype == np.float64)
        # HF's softmax runs in float32 for either input dtype: rows 1..3 agree to float32 size
        np.testing.assert_allclose(lib[:, :, 1:], want[:, :, 1:], rtol=0, atol=1e-6)


def test_torch_sdpa_matches_torch_sdpa_preset():
    torch = _need("torch")
    for seed, (Lq, Lk) in enumerate(((4, 3), (3, 5), (4, 4))):
        q, k, v = _qkv(seed, Lq=Lq, Lk=Lk)
        t = [torch.tensor(a) for a in (q, k, v)]
        lib = torch.nn.functional.scaled_dot_product_attention(*t, is_causal=True, enable_gqa=True).numpy()
        want, _ = C.TORCH_SDPA.attention(q, k, v, causal=True)
        np.testing.assert_allclose(lib, want, rtol=0, atol=1e-14)
        mask = np.zeros((Lq, Lk), bool)
        mask[1:, 0] = True  # row 0 fully masked: 0 (aten _safe_softmax)
        lib = torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=torch.tensor(mask), enable_gqa=True)
        want, _ = C.TORCH_SDPA.attention(q, k, v, mask=mask)
        np.testing.assert_allclose(lib.numpy(), want, rtol=0, atol=1e-14)


def test_jax_matches_jax_preset_including_fully_masked_rows():
    from properties.peers import jax_attention

    _need("jax")
    impl = jax_attention()
    q, k, v = _qkv(3, Lq=5, Lk=3)
    mask = np.ones((5, 3), bool)
    mask[0] = False
    for kw in (dict(causal=True, align="top_left"), dict(mask=mask), dict(window=(1, 0), align="top_left")):
        out, lse = impl.forward(q, k, v, **kw)
        native = {"causal": True} if "causal" in kw else ({"mask": mask} if "mask" in kw else {"window": (1, 0)})
        want, want_lse = C.JAX.attention(q, k, v, **native)
        # JAX's softmax runs in float32 (_dot_product_attention_core): float32-sized differences
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
        np.testing.assert_allclose(lse, want_lse, rtol=1e-6, atol=1e-6)


def test_flex_attention_matches_flex_preset():
    from properties.peers import torch_flex

    _need("torch")
    impl = torch_flex()
    q, k, v = _qkv(4, Lq=6, Lk=6)
    out, lse = impl.forward(q, k, v, causal=True, window=(2, 0), align="top_left")
    want, want_lse = C.FLEX_ATTENTION.attention(q, k, v, window=2)  # generate_sliding_window(2): 3 keys, causal
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(lse, want_lse, rtol=0, atol=1e-14)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_hf_load_balancing_loss_matches_preset(family):
    torch = _need("torch")
    mod = _need(f"transformers.models.{family}.modeling_{family}")
    rng = np.random.default_rng(7)
    for _ in range(10):
        layers = [rng.standard_normal((int(rng.integers(2, 20)), 6)) * 2 for _ in range(2)]
        lib = float(mod.load_balancing_loss_func(tuple(torch.tensor(z) for z in layers), 6, top_k=2))
        want = P.ALL[family].balance_loss(M.route(np.concatenate(layers), 2, preset=family))  # pool="concat"
        # float32 sums over T E terms of O(1) values: relative error <= 64 (T + E) 2^-24
        assert lib == pytest.approx(want, rel=64 * 50 * 2.0**-24)
