"""Attention presets reproduce each library's alignment, window counting and fully-masked rows.

Visibility is read off the output: with all-zero queries every visible key gets
the same weight, so with one-hot values out[i, j] = 1/count_i if key j is visible.
"""

import numpy as np
import pytest

import refimpl
from refimpl import conventions as C


def visibility(preset, Lq, Lk, **kw):
    q = np.zeros((1, 1, Lq, 4))
    k = np.random.default_rng(0).standard_normal((1, 1, Lk, 4))
    v = np.eye(Lk).reshape(1, 1, Lk, Lk)
    out, lse = preset.attention(q, k, v, **kw)
    return (out[0, 0] > 0).astype(int), out, lse


def test_flash_attn_docstring_example_bottom_right():
    # flash_attn_interface.py flash_attn_func: seqlen_q = 2, seqlen_k = 5, causal
    vis, _, _ = visibility(C.FLASH_ATTN2, 2, 5, causal=True)
    assert vis.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("preset", [C.TORCH_SDPA, C.FLEX_ATTENTION, C.JAX, C.XFORMERS])
def test_top_left_libraries(preset):
    vis, _, _ = visibility(preset, 2, 5, causal=True)
    assert vis.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]


@pytest.mark.parametrize(
    "preset, native, keys_in_last_row",
    [
        (C.FLASH_ATTN2, (3, 0), 4),  # left + 1 + right
        (C.FLASH_ATTN2, (3, -1), 4),  # -1 unbounded right, but causal hides the future
        (C.HF_MISTRAL, 3, 3),  # sliding_window = W: W keys including self
        (C.XFORMERS, 3, 3),  # make_local_attention(W): W keys
        (C.FLEX_ATTENTION, 3, 4),  # generate_sliding_window(W): W + 1 keys
        (C.XFORMERS_BR, (3, 0), 4),
        (C.JAX, (3, 0), 4),
    ],
)
def test_window_counting(preset, native, keys_in_last_row):
    vis, _, _ = visibility(preset, 10, 10, causal=True, window=native)
    assert vis[-1].sum() == keys_in_last_row
    assert vis[-1, -keys_in_last_row:].all()


def test_same_window_word_means_different_widths():
    """'window 3' is 3 keys in HF/xformers and 4 in FlexAttention and flash-attn (3, 0)."""
    widths = {p.name: visibility(p, 8, 8, window=w)[0][-1].sum()
              for p, w in ((C.HF_MISTRAL, 3), (C.FLEX_ATTENTION, 3), (C.FLASH_ATTN2, (3, 0)))}
    assert widths == {"hf_mistral": 3, "flex_attention": 4, "flash_attn2": 4}


def test_jax_window_is_symmetric_for_an_int_and_top_left():
    vis, _, _ = visibility(C.JAX, 3, 6, window=1)
    assert vis.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]]


def test_torch_sdpa_has_no_window():
    with pytest.raises(ValueError, match="no window"):
        visibility(C.TORCH_SDPA, 3, 3, window=2)


def _fully_masked(preset):
    # Lq = 4 > Lk = 2 bottom-right causal, or an explicit mask, leaves row 0 empty
    mask = np.array([[False, False], [True, False], [True, True], [True, True]])
    r = np.random.default_rng(1)
    q, k, v = r.standard_normal((1, 2, 4, 3)), r.standard_normal((1, 1, 2, 3)), r.standard_normal((1, 1, 2, 3))
    return preset.attention(q, k, v, mask=mask), v


def test_fully_masked_rows_per_library():
    (out, lse), v = _fully_masked(C.SPEC)
    assert np.all(out[:, :, 0] == 0) and np.all(np.isneginf(lse[:, :, 0]))
    (out, lse), _ = _fully_masked(C.FLASH_ATTN2)
    assert np.all(out[:, :, 0] == 0) and np.all(np.isposinf(lse[:, :, 0]))
    (out, lse), _ = _fully_masked(C.FLASH_ATTN3)
    assert np.all(out[:, :, 0] == 0) and np.all(np.isneginf(lse[:, :, 0]))
    (out, lse), _ = _fully_masked(C.TORCH_SDPA)
    assert np.all(out[:, :, 0] == 0) and lse is None
    (out, lse), _ = _fully_masked(C.XFORMERS)
    assert np.all(np.isnan(out[:, :, 0])) and not np.isnan(out[:, :, 1:]).any()
    (out, lse), v = _fully_masked(C.JAX)
    assert np.allclose(out[:, :, 0], v.mean(axis=2)) and np.all(lse[:, :, 0] == C.JAX_MASK_VALUE + np.log(2))
    # HF_MISTRAL: see test_hf_eager_fully_masked_row_is_nan_for_float64_and_uniform_for_float32
    # rows that are not fully masked are the spec's in every preset
    ref, _ = refimpl.attention(*_inputs(), mask=np.array([[False, False], [True, False], [True, True], [True, True]]))
    for p in C.PRESETS.values():
        (out, _), _ = _fully_masked(p)
        assert np.allclose(out[:, :, 1:], ref[:, :, 1:], rtol=0, atol=1e-15)


def _inputs():
    r = np.random.default_rng(1)
    return r.standard_normal((1, 2, 4, 3)), r.standard_normal((1, 1, 2, 3)), r.standard_normal((1, 1, 2, 3))


def test_flash_attn_causal_alibi_lse_shift():
    """flash-attn adds +slope*j under causal: same output, lse larger by slope*(i + Lk - Lq)."""
    r = np.random.default_rng(3)
    q, k, v = r.standard_normal((1, 2, 3, 4)), r.standard_normal((1, 2, 5, 4)), r.standard_normal((1, 2, 5, 4))
    slopes = np.array([0.25, 0.5])
    out_f, lse_f = C.FLASH_ATTN2.attention(q, k, v, causal=True, alibi_slopes=slopes)
    out_s, lse_s = C.SPEC.attention(q, k, v, causal=True, alibi_slopes=slopes)
    assert np.allclose(out_f, out_s, rtol=0, atol=1e-15)
    shift = slopes[:, None] * (np.arange(3) + 2)[None, :]
    assert np.allclose(lse_f[0] - lse_s[0], shift, rtol=0, atol=1e-12)


def test_every_preset_cites_its_source():
    for p in C.PRESETS.values():
        assert len(p.source) > 20, p.name


# --- flash-attn 2's host code rewrites the window (csrc/flash_attn/flash_api.cpp) -------------


def _fa2_kernel_visibility(Lq, Lk, left, right, causal=False):
    """flash_api.cpp mha_fwd + set_params_fprop, then mask.h's bounds, transcribed."""
    if left >= Lk:
        left = -1
    if right >= Lk:
        right = -1
    if causal:
        right = 0
    if left < 0 and right < 0:
        return np.ones((Lq, Lk), int)
    if left < 0:
        left = Lk
    if right < 0:
        right = Lk
    i, j = np.arange(Lq)[:, None], np.arange(Lk)[None, :]
    o = Lk - Lq
    vis = (j >= i + o - left) & (j <= i + o + right)
    return vis.astype(int)


def test_flash_attn2_lone_minus_one_becomes_seqlen_k():
    # Lq = 10, Lk = 3, window (2, -1): right becomes 3, j <= i + 6 - 10: rows 0-3 see nothing
    vis, out, lse = visibility(C.FLASH_ATTN2, 10, 3, window=(2, -1))
    assert not vis[:4].any() and vis[4:].any(axis=1).all()
    assert np.all(out[0, 0, :4] == 0) and np.all(np.isposinf(lse[0, 0, :4]))
    # the "unbounded right side" reading (FA3) lets row 0 see key 0
    assert visibility(C.FLASH_ATTN3, 10, 3, window=(2, -1))[0][:4].any()


@pytest.mark.parametrize("Lq, Lk", [(10, 3), (6, 4), (4, 4), (3, 7), (1, 5), (9, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn2_matches_host_code_transcription(Lq, Lk, causal):
    for left in (-1, 0, 1, 2, 3, 5, 8):
        for right in (-1, 0, 1, 2, 3, 5, 8):
            vis = visibility(C.FLASH_ATTN2, Lq, Lk, window=(left, right), causal=causal)[0]
            want = _fa2_kernel_visibility(Lq, Lk, left, right, causal)
            if causal:  # mha_fwd also sets right = 0; the spec's causal mask is the same bound
                want &= _fa2_kernel_visibility(Lq, Lk, -1, 0)
            np.testing.assert_array_equal(vis, want, err_msg=f"window ({left}, {right}), Lq={Lq}, Lk={Lk}")


def test_flash_attn3_minus_one_is_unbounded():
    # hopper/flash_api.cpp: -1 left -> seqlen_k - 1, -1 right -> seqlen_q - 1: no bound
    for Lq, Lk in ((10, 3), (3, 10), (5, 5)):
        vis = visibility(C.FLASH_ATTN3, Lq, Lk, window=(-1, -1))[0]
        assert vis.all()
        vis = visibility(C.FLASH_ATTN3, Lq, Lk, window=(1, -1))[0]
        i, j = np.arange(Lq)[:, None], np.arange(Lk)[None, :]
        np.testing.assert_array_equal(vis, (j >= i + Lk - Lq - 1).astype(int))


def test_hf_eager_fully_masked_row_is_nan_for_float64_and_uniform_for_float32():
    (out, lse), v = _fully_masked(C.HF_MISTRAL)  # float64 inputs
    assert np.all(np.isnan(out[:, :, 0])) and lse is None
    q, k, v = (a.astype(np.float32) for a in _inputs())
    mask = np.array([[False, False], [True, False], [True, True], [True, True]])
    out, _ = C.HF_MISTRAL.attention(q, k, v, mask=mask)
    assert np.allclose(out[:, :, 0], v.astype(np.float64).mean(axis=2))


# --- every preset registry has one shape (refimpl.preset_registry) ------------------------------


def _registries():
    from refimpl import model_configs, norms
    from refimpl.mixers import presets as mixer_presets
    from refimpl.moe import presets as moe_presets

    return {"attention": C.PRESETS, "moe": moe_presets.ALL, "rmsnorm": norms.RMSNORM_PRESETS,
            "mixers": mixer_presets.PRESETS, "model_configs": model_configs.PUBLISHED}


@pytest.mark.parametrize("name", sorted(_registries()))
def test_every_preset_registry_has_one_shape_and_cites_each_preset(name):
    import pathlib

    from refimpl.preset_registry import Registry, Source

    reg = _registries()[name]
    assert isinstance(reg, Registry) and len(reg) > 0
    root = pathlib.Path(__file__).resolve().parents[1]
    for key in reg:
        src = reg.source(key)
        assert isinstance(src, Source) and all(getattr(src, f) for f in ("library", "file", "function", "version")), key
        doc, _, anchor = src.section.partition("#")
        text = (root / doc).read_text()
        assert not anchor or f'<a id="{anchor}"></a>' in text, (key, src.section)
        assert reg.lookup(key) is reg[key]
    with pytest.raises(ValueError, match=rf"^{reg.argument}: expected .*one of \[.*\], got 'no_such_preset'$"):
        reg.lookup("no_such_preset")
    with pytest.raises(KeyError):
        reg["no_such_preset"]
    assert reg.get("no_such_preset") is None and "no_such_preset" not in reg


def test_unknown_presets_are_reported_in_the_one_wording():
    import numpy as np

    from refimpl import norms
    from refimpl.moe import presets as moe_presets

    with pytest.raises(ValueError, match=r"^preset: expected a Preset or one of \['deepseek_v2'.*\], got 'nope'$"):
        moe_presets.get("nope")
    with pytest.raises(ValueError, match=r"^preset: expected one of \['hf_gemma'.*\], got 'nope'$"):
        norms.rms_norm(np.ones((2, 3)), preset="nope")
    assert moe_presets.get(moe_presets.mixtral) is moe_presets.mixtral
