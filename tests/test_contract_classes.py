"""The failure classes of the contract's third round (README "Contract"), one pinned example each.

The fuzz (tests/test_contract_fuzz.py) guards each class in general; these are the named
instances, so that a regression names its class: bounded work, exact tails, no aliasing,
exceptions inside the contract, one wording, gpu.route at the float32 bound.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import refimpl
from properties.mp_oracle import mp_act, mp_act_grad, mp_layer_norm, mp_rms_norm
from refimpl import _validate as V
from refimpl import block, conventions, formats, losses, moe
from refimpl import masks as M
from refimpl.distributed import expert_parallel, sharding
from refimpl.mixers import gated, linear_attention, rwkv4

FMAX = float(np.finfo(np.float64).max)


@pytest.fixture
def budget(monkeypatch):
    monkeypatch.setenv("REFIMPL_MAX_BYTES", str(2**26))


# ---------------------------------------------------------------------------
# bounded work: beyond the budget a ValueError naming the sizing arguments, never MemoryError or a hang


@pytest.mark.parametrize("call, names", [
    (lambda: M.Causal().materialize(10**6, 10**6), "Lq, Lk"),
    (lambda: M.Causal().materialize(0, 2**62), "Lq, Lk"),  # the index vector of the empty tile's other axis
    (lambda: M.SlidingWindow(2, 0).row_counts(10**10, 10**10), "Lq"),
    (lambda: refimpl.PagedCache(2, 4, block_size=2**40, num_blocks=2), "num_blocks, block_size"),
    (lambda: refimpl.PagedCache(1, 2, batch=2**53 + 1), "batch"),
    (lambda: refimpl.RingCache(2, 4, capacity=2**40), "capacity"),
    (lambda: refimpl.make_cache("paged", 8, 128, num_blocks=10**9), "num_blocks"),
    (lambda: M.BigBird(2).block_layout(10**6), "n_blocks"),
    (lambda: refimpl.layout_permutation(2**40), "head_dim"),
    (lambda: gated.retnet_gammas(10**10), "num_heads"),
    (lambda: linear_attention.orthogonal_gaussian(10**5, 10**5, 0), "m, d"),
    (lambda: linear_attention.orthogonal_gaussian(2**53 + 1, 1, 0), "m, d"),
    (lambda: refimpl.mla.init_mla_weights(np.random.default_rng(0), 10**6, 4, 8, 8, 8, 8), "d_model"),
    (lambda: block.init_block(0, d_model=10**9 + 7, num_heads=1, d_ff=4), "d_model"),
    (lambda: expert_parallel.contiguous_placement(10**11, 2), "E"),
    (lambda: refimpl.alibi_bias(refimpl.alibi_slopes(2), 2**53 + 1, 3), "Lq, Lk"),
    (lambda: refimpl.ContiguousCache(1, 2, batch=2**40).update(
        np.broadcast_to(np.ones(1), (2**40, 1, 1, 2)), np.broadcast_to(np.ones(1), (2**40, 1, 1, 2))), "k"),
    (lambda: moe.route(np.broadcast_to(np.ones(1), (10**9, 4)), 2), "logits"),
])
def test_work_beyond_the_budget_is_a_value_error_naming_the_arguments(budget, call, names):
    with pytest.raises(ValueError, match=rf"{names}.*: expected work within the budget REFIMPL_MAX_BYTES = 67108864 "
                                         r"bytes, got .* needing \d+ bytes"):
        call()


def test_scatter_combine_sized_by_num_tokens_is_budgeted(budget):
    r = moe.route(np.random.default_rng(0).normal(size=(4, 3)), 1)
    sa = moe.sort_by_expert(r)
    with pytest.raises(ValueError, match="num_tokens, rows: expected work within"):
        moe.scatter_combine(np.ones((sa.token.shape[0], 2)), sa, 2**53 + 1)


def test_the_budget_is_a_setting(monkeypatch):
    monkeypatch.setenv("REFIMPL_MAX_BYTES", "1000")
    assert V.max_bytes() == 1000
    with pytest.raises(ValueError, match="Lq, Lk: expected work within the budget REFIMPL_MAX_BYTES = 1000"):
        M.Causal().materialize(10, 10)
    monkeypatch.setenv("REFIMPL_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="REFIMPL_MAX_BYTES: expected an int"):
        V.max_bytes()
    monkeypatch.delenv("REFIMPL_MAX_BYTES")
    assert V.max_bytes() >= 2**28  # half the machine's memory


@pytest.mark.parametrize("mask", [M.Full(), M.Causal(), M.Strided(1), M.Strided(3, "top_left"), M.Dilated(0, 2),
                                  M.Dilated(2, 3), M.Dilated(4, 1, "top_left"), M.PrefixLM(0), M.PrefixLM(3),
                                  M.PrefixLM(50, "top_left")])
def test_counts_are_closed_forms_equal_to_the_materialised_mask(budget, mask):
    for Lq in range(9):
        for Lk in range(9):
            assert mask.count(Lq, Lk) == int(mask.materialize(Lq, Lk).sum()), (mask, Lq, Lk)
    mask.count(10**18, 10**18)  # no allocation: within the 64 MiB budget at any length


def test_io_counts_are_closed_forms(budget):
    a = refimpl.io_accounting.forward_io(Lq=2**53 + 1, Lk=4, D=4, block_q=2, block_k=2)
    assert a.tile_pairs == (2**52 + 1) * 2
    small = refimpl.io_accounting.forward_io(Lq=7, Lk=5, D=3, block_q=2, block_k=2, loop_order="kv_outer")
    grid = refimpl.io_accounting.forward_io(Lq=7, Lk=5, D=3, block_q=2, block_k=2, loop_order="kv_outer",
                                            computed=np.ones((4, 3), bool))
    assert small == grid


# ---------------------------------------------------------------------------
# exceptions inside the contract (ValueError / TypeError naming the argument)


@pytest.mark.parametrize("call, err, match", [
    (lambda: refimpl.flash.tile_grid(5, 7, np.uint64(3), 2), None, None),
    (lambda: moe.router.group_limited_scores(np.ones((2, 4)), 0, 1, "max"), ValueError, "n_groups: expected an int >= 1"),
    (lambda: moe.slots.rank_within_expert([0, 1, 0], 2), None, None),
    (lambda: moe.slots.rank_within_expert([0, 5], 2), ValueError, "experts_in_order: expected ids in"),
    (lambda: moe.router.effective_options(None, 2), TypeError, "opts: expected a refimpl.moe.RouteOptions"),
    (lambda: refimpl.sdpa.check_qkv_shapes([[[[1.0]]]], [[[[1.0]]]], [[[[1.0]]]]), None, None),
    (lambda: M.BigBird(2).tile(0, 2, 0, 9, 4, 4), ValueError, "k_start, k_stop: expected 0 <= k_start <= k_stop <= Lk"),
    (lambda: M.Causal().tile(0, 2, 0, 9, 4, 4), ValueError, "k_start, k_stop"),
    (lambda: M.Document([0, 0, 1])(5, 0, 3, 3), ValueError, r"i: expected indices in \[0, Lq\)"),
    (lambda: M.predicate(lambda i, j: i), TypeError, "fn: expected a callable of four arguments"),
    (lambda: conventions.AttentionConvention("x", "top_left", "bogus", "zero", None, "s"), ValueError,
     "window_rule: expected one of"),
    (lambda: block.MacCounter().add("x"), TypeError, "n: expected an int"),
    (lambda: block.MacCounter().add(-1), ValueError, "n: expected an int >= 0"),
    (lambda: M.BigBird(2).block_layout(1.5), TypeError, "n_blocks: expected an int"),
    (lambda: M.BigBird(2).block_layout(-1), ValueError, "n_blocks: expected an int >= 0"),
    (lambda: losses.CollapseResult(np.ones((3, 2))).final_loads(2.5), TypeError, "last: expected an int"),
    (lambda: sharding.GlobalMask(np.uint64(4)).visible([0, 3], [1, 4]), ValueError, r"kpos: expected global positions"),
    (lambda: refimpl.PagedCache(1, 2).append(0, [[[1.0, 2.0]]], [[[1.0, 2.0]]]), None, None),
    (lambda: refimpl.PagedCache(1, 2).append(0, [[1.0, 2.0]], [[1.0, 2.0]]), ValueError, "k: expected 3 dimensions"),
])
def test_exceptions_are_inside_the_contract(call, err, match):
    if err is None:
        call()
        return
    with pytest.raises(err, match=match):
        call()


def test_block_attention_keeps_validated_copies():
    rng = np.random.default_rng(0)
    W = [rng.normal(size=s) for s in ((4, 4), (4, 4), (4, 4), (4, 4))]
    a = block.Attention(W[0].tolist(), W[1], W[2], W[3], 2)
    W[1][0, 0] = 99.0  # the caller's later write does not reach the block
    assert isinstance(a.W_q, np.ndarray) and a.W_k[0, 0] != 99.0


def test_exhausted_paged_pool_is_a_value_error_naming_num_blocks():
    c = refimpl.PagedCache(1, 2, block_size=2, num_blocks=1)
    with pytest.raises(ValueError, match="num_blocks: expected 2 free blocks"):
        c.update(np.zeros((1, 1, 3, 2)), np.zeros((1, 1, 3, 2)))


def test_recurrent_wkv_overflow_is_a_value_error():
    w, u = -np.ones((1, 2)) * 0.5, np.zeros((1, 2))
    k, v = np.full((1, 1, 3, 2), 800.0), np.ones((1, 1, 3, 2))
    with pytest.raises(ValueError, match="k, u, w: expected exp"):
        rwkv4.wkv(w, u, k, v, form="recurrent")


# ---------------------------------------------------------------------------
# one wording: "<name>: expected ..., got ..."


@pytest.mark.parametrize("call, match", [
    (lambda: refimpl.attention(np.ones((1, 5, 2, 2)), np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2))),
     r"^q, k: expected Hq a positive multiple of Hkv .*got Hq = 5, Hkv = 2"),
    (lambda: losses.causal_lm_loss(np.ones((1, 3, 4)), np.array([[0, 1, 9]])), r"^tokens: expected values in \[0, V\)"),
    (lambda: formats.quantize(np.full(3, 1e-310), "float8_e4m3fn"), r"^x: expected an amax"),
    (lambda: formats.fp8_matmul(np.full((2, 2), 1e-310), np.ones((2, 2))), r"^a: expected an amax"),
    (lambda: refimpl.attention(np.full((1, 1, 1, 1), np.nan), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))),
     r"^q: expected finite entries, got an entry NaN"),
    (lambda: linear_attention.performer_attention(np.full((1, 1, 2, 2), 1e200), np.ones((1, 1, 2, 2)),
                                                  np.ones((1, 1, 2, 2)), np.ones((3, 2))),
     r"^q, W: expected FAVOR\+ logits"),
])
def test_messages_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_messages_print_plain_numbers():
    with pytest.raises(ValueError) as e:
        refimpl.flash_attention(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)),
                                block_q=np.int64(0), block_k=1)
    assert "np." not in str(e.value)


def test_scaled_gradient_beyond_float64_overflows_the_format_as_documented():
    g = formats.scaled_gradient_in(np.array([1e300, -1e300, 1.0]), "float8_e5m2", 1e300)
    assert np.isposinf(g[0]) and np.isneginf(g[1])


# ---------------------------------------------------------------------------
# exact where float64 allows


def test_norms_at_any_magnitude_match_the_oracle():
    x = np.array([[1e-200, 2e-200, -3e-200], [1e300, -1e300, 5e299], [5e-324, 0.0, 1e-320], [1.0, 2.0, 4.0]])
    for fn, mp, eps in ((refimpl.norms.rms_norm, mp_rms_norm, 1e-6), (refimpl.norms.layer_norm, mp_layer_norm, 1e-5)):
        got, exact = fn(x), mp(x, eps)
        scale = np.abs(exact).max(axis=1, keepdims=True)
        assert (np.abs(got - exact) <= 48 * 2.0**-52 * scale + np.finfo(float).tiny).all(), (fn.__name__, got, exact)
    np.testing.assert_allclose(refimpl.norms.rms_norm([[1e-200, 2e-200, -3e-200]]),
                               [[1e-197, 2e-197, -3e-197]], rtol=1e-12)
    g = refimpl.norms.group_norm(np.full((1, 2, 3), 1e-200) * [[[1], [2]]], 1)
    assert np.abs(g).max() > 0  # not flushed to zero


@pytest.mark.parametrize("name, u, grad", [("gelu", -10.0, False), ("gelu_tanh", -12.0, False),
                                           ("sigmoid", 40.0, True), ("gelu", -10.0, True), ("silu", 40.0, True),
                                           ("gelu_tanh", -12.0, True),
                                           # scipy's expit is 0 below -709.8; the products are normal numbers
                                           ("silu", -711.0, False), ("silu", -711.0, True), ("gelu_tanh", -21.2, True),
                                           # the oracle's own tail: 1 - sigmoid(100) kept 7 of 50 digits
                                           ("sigmoid", 100.0, True), ("sigmoid", 700.0, True)])
def test_activation_tails_match_the_oracle(name, u, grad):
    fn, mp = (refimpl.ffn.act_grad, mp_act_grad) if grad else (refimpl.ffn.act, mp_act)
    got, exact = fn(name, np.array([u])), mp(name, np.array([u]))
    assert exact[0] != 0 and abs(got[0] - exact[0]) <= 1e-12 * abs(exact[0]), (got, exact)


def test_tiled_attention_at_the_top_of_the_range():
    q, k = np.ones((1, 1, 2, 2)), np.ones((1, 1, 5, 2))
    v = np.full((1, 1, 5, 2), FMAX)
    v[..., 1] = -FMAX
    ref = refimpl.attention(q, k, v)[0]
    for out in (refimpl.flash_attention(q, k, v, block_q=1, block_k=2)[0],
                refimpl.flash_attention(q, k, v, block_q=1, block_k=2, variant="fa1")[0],
                refimpl.split_kv_attention(q, k, v, block_q=1, block_k=2, num_splits=1)[0],
                refimpl.split_kv_attention(q, k, v, block_q=1, block_k=1, num_splits=3)[0],
                refimpl.attention_partials(q, k, v, block_q=1, block_k=4, num_splits=1)[0][0]):
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, ref, rtol=4 * 2.0**-52)  # exact: +-finfo.max (one rounding of the mean)


# ---------------------------------------------------------------------------
# no aliasing


def test_cache_results_are_the_callers_copies():
    c = refimpl.ContiguousCache(1, 2)
    K, V = c.update(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)))
    K[...] = 7.0
    assert (c.contents()[0] == 1.0).all()
    Kc = c.contents()[0]
    Kc[...] = 5.0
    assert (c.contents()[0] == 1.0).all()


def test_bigbird_block_layout_is_a_new_array_each_call():
    m = M.BigBird(2)
    a = m.block_layout(4)
    a[...] = False
    assert m.block_layout(4).any() and m.materialize(8, 8).any()


# ---------------------------------------------------------------------------
# gpu.route at the float32 bound: equal to the spec, or a refusal naming the argument


def _opencl():
    from gpu.backends import get_backend
    from gpu.errors import BackendUnavailable

    try:
        get_backend("opencl").runtime()  # built lazily: a missing pyopencl or platform shows here
    except BackendUnavailable as e:
        pytest.skip(f"no OpenCL runtime: {e}")


@pytest.mark.parametrize("kw, match", [
    (dict(logits=np.full((3, 4), -100.0), score="sigmoid", normalize="after_drop"), "logits: expected a largest selected"),
    (dict(logits=np.ones((3, 4)), route_scale=1e300), "route_scale: expected a value representable as a normal float32"),
    (dict(logits=np.full((3, 4), 1e39)), "logits: expected values within float32 range"),
])
def test_gpu_route_refuses_by_name_what_float32_cannot_compute(kw, match):
    _opencl()
    import gpu

    with pytest.raises(ValueError, match=match):
        gpu.route(k=2, backend="opencl", **kw)


@pytest.mark.parametrize("kw", [
    dict(logits=np.random.default_rng(0).normal(size=(5, 6)) * 1e30),  # float64 softmax ties (underflow)
    dict(logits=np.array([[0.0, -800.0, -790.0, -795.0]])),
    dict(logits=np.full((3, 4), -100.0), score="sigmoid", normalize="none"),
])
def test_gpu_route_equals_the_spec_at_the_float32_bound(kw):
    _opencl()
    import gpu

    got, want = gpu.route(k=2, backend="opencl", **kw), moe.route(k=2, **kw)
    for f in ("indices", "kept", "position", "counts"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    assert np.abs(got.gates - want.gates).max() <= 1e-6


def _attn_args(seed=0, Lq=3, Lk=4, D=2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 1, Lq, D)), rng.standard_normal((1, 1, Lk, D)), rng.standard_normal((1, 1, Lk, D))


def test_gpu_backward_refuses_saved_results_of_another_forward_by_name():
    """out, lse saved from a forward at another scale make P = exp(S - lse) overflow float32: a ValueError
    naming out, lse (it was the kernel-check's RuntimeError "dq: never written"; found by the gpu facade's
    fuzz recipes with scale broken to 2**70). Saved results of this forward still pass."""
    _opencl()
    import gpu

    q, k, v = _attn_args()
    dout = np.ones((1, 1, 3, 2))
    out, lse = refimpl.attention(q, k, v)
    with pytest.raises(ValueError, match=r"^out, lse: expected the forward's saved results"):
        gpu.flash_attention_backward(q, k, v, dout, backend="opencl", scale=2.0**70, out=out, lse=lse)
    want = refimpl.attention_backward(q, k, v, dout)
    got = gpu.flash_attention_backward(q, k, v, dout, backend="opencl", out=out, lse=lse)
    assert all(np.abs(g - w).max() < 1e-5 for g, w in zip(got, want))


@pytest.mark.parametrize("kw, exc, match", [
    (dict(lse=object()), TypeError, r"^lse: expected a real floating-point array"),
    (dict(lse="abc"), TypeError, r"^lse: expected a real floating-point array"),
    (dict(lse=np.full((1, 1, 3), 1e39)), ValueError, r"^lse: expected entries within float32 range"),
])
def test_gpu_backward_names_a_bad_saved_lse(kw, exc, match):
    _opencl()
    import gpu

    q, k, v = _attn_args()
    out, _ = refimpl.attention(q, k, v)
    with pytest.raises(exc, match=match):
        gpu.flash_attention_backward(q, k, v, np.ones((1, 1, 3, 2)), backend="opencl", out=out, **kw)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(align="nope", bias=np.zeros((1, 1, 3, 4))), ValueError, r"^align: expected one of"),
    (dict(block_k=-1, mask=np.ones((3, 4), bool)), ValueError, r"^block_k: expected a positive int, got -1$"),
    (dict(block_k=np.float64(2.0)), ValueError, r"^block_k: expected a positive int, got 2\.0$"),
    (dict(dropout_p=-0.1), ValueError, r"^dropout_p: expected a finite number >= 0"),
    (dict(bias=np.zeros((1, 1, 3, 4))), "unsupported", r"^bias: expected None \(.*\), got ndarray$"),
    (dict(dropout_p=0.1), "unsupported", r"^dropout_mask, dropout_p: expected no dropout .*, got dropout_p = 0.1$"),
])
def test_gpu_attention_validates_every_argument_before_refusing_an_option(kw, exc, match):
    """A bad argument is named even beside an option the kernels lack (the option was refused first and the
    bad argument went unnamed); the refusal itself is in the contract's wording."""
    _opencl()
    import gpu
    from gpu.errors import UnsupportedOption

    with pytest.raises(UnsupportedOption if exc == "unsupported" else exc, match=match):
        gpu.flash_attention(*_attn_args(), backend="opencl", **kw)


def test_gpu_moe_experts_names_bad_experts():
    _opencl()
    import gpu

    r = moe.route(np.random.default_rng(0).standard_normal((4, 3)), 2)
    with pytest.raises(TypeError, match=r"^experts: expected a sequence of 3 experts, got NoneType$"):
        gpu.moe_experts(np.ones((4, 2)), r, None, backend="opencl")


def test_the_moe_permute_oracle_rejects_a_wrong_permutation():
    """The fuzz's exact oracle for gpu.moe_permute (tests/contract_recipes_gpu.py) accepts the kernel's
    result and rejects it with two rows swapped, a dropped choice kept, or a row not copied exactly."""
    _opencl()
    import dataclasses

    import gpu

    from .contract_recipes_gpu import same_rows_as_routing

    x = np.random.default_rng(1).standard_normal((6, 3))
    r = moe.route(np.random.default_rng(2).standard_normal((6, 4)), 2, capacity=2)
    kw = dict(x=x, routing=r)
    p = gpu.moe_permute(x, r, backend="opencl")
    same_rows_as_routing(kw, p)
    kept_rows = p.row_of[r.kept]
    a, b = int(kept_rows[0]), int(kept_rows[-1])
    swapped = p.x_perm.copy()
    swapped[[a, b]] = swapped[[b, a]]
    nudged = p.x_perm.copy()
    nudged[a, 0] = np.nextafter(nudged[a, 0], np.float32(np.inf))
    dropped = np.argwhere(~r.kept)[0]
    kept_anyway = p.row_of.copy()
    kept_anyway[tuple(dropped)] = a
    for bad in (dataclasses.replace(p, x_perm=swapped), dataclasses.replace(p, x_perm=nudged),
                dataclasses.replace(p, row_of=kept_anyway)):
        with pytest.raises(AssertionError, match="moe_permute"):
            same_rows_as_routing(kw, bad)


def test_patch_size_from_weight_is_named_by_the_callers_arguments():
    """patch_embed / conv2d_stride / vit_embeddings take the patch size from ``weight``: an image side it does
    not divide names ``images, weight`` (it named patchify's ``patch_size``, an argument they do not have;
    found by the randomised fuzz of vit_embeddings), and an empty kernel names ``weight`` (no ZeroDivisionError)."""
    from refimpl import vision

    x, w, b = np.ones((1, 1, 2, 3)), np.ones((2, 1, 2, 2)), np.ones(2)
    for call in (lambda w: vision.patch_embed(x, w, b), lambda w: vision.conv2d_stride(x, w, b),
                 lambda w: vision.vit_embeddings(x, w, b, np.ones(2), np.ones((2, 2)))):
        with pytest.raises(ValueError, match=r"^images, weight: expected H and W divisible by weight's patch size "
                                             r"P = 2, got \(H, W\) = \(2, 3\)$"):
            call(w)
        with pytest.raises(ValueError, match=r"^weight: expected "):
            call(np.ones((2, 1, 0, 0)))


def test_found_by_the_dynamic_wording_oracle():
    """The three messages the fuzz's wording oracle found once it gated the run: NumPy reprs in two
    messages (np.uint64(3)), and a NumPy reshape error from interpolate_pos_embed at d = 0 (now exact: empty)."""
    from refimpl import moe, vision

    with pytest.raises(ValueError, match=r"^n_groups, topk_groups: expected both or neither, got 3 and None$"):
        moe.RouteOptions(n_groups=np.uint64(3))
    with pytest.raises(ValueError, match=r"^capacity: expected an int in \[0, T=1\], got 3$"):
        moe.route_expert_choice(np.ones((1, 2)), np.uint64(3))
    assert vision.interpolate_pos_embed(np.ones((5, 0)), (2, 2), (3, 3)).shape == (10, 0)


def test_check_positions_beyond_numpys_largest_array_is_named():
    """check_positions broadcasts (L,) positions to (B, L) as a view (no allocation): a B in the band of valid
    counts (2^62) reached NumPy's 'array is too big' (found by the thorough fuzz); now named."""
    from refimpl import rope

    with pytest.raises(ValueError, match=r"^B, L: expected a \(B, L\) int64 array NumPy can index"):
        rope.check_positions(np.arange(3), 2**62, 3)
    assert rope.check_positions(np.arange(3), 10**9, 3).shape == (10**9, 3)  # a view: nothing allocated
    # no positions (L = 0): NumPy still refuses a (2^60, 0) int64 shape (a zero axis counts as 1 there)
    with pytest.raises(ValueError, match=r"^B, L: expected a \(B, L\) int64 array NumPy can index"):
        rope.check_positions(np.arange(0), 2**62, 0)
    assert rope.check_positions(np.arange(0), 2**59, 0).shape == (2**59, 0)


def test_shift_mask_names_window_with_shift():
    """shift < window: a shift beyond a (broken) window named only shift (found by the thorough fuzz)."""
    from refimpl import vision

    with pytest.raises(ValueError, match=r"^shift, window: expected 0 <= shift < window = 3, got shift = 3$"):
        vision.shift_mask(6, 6, np.uint64(3), 3)


@pytest.mark.parametrize("call, names", [
    (lambda: refimpl.moe.router.group_limited_scores(np.zeros((2, 4)), 2, 3, "max"), "topk_groups, n_groups"),
    (lambda: refimpl.vision_objectives.dino_momentum(5, 5), "step, total_steps"),
    (lambda: refimpl.distributed.comm_volume.ring_forward([2, 2], 3, 1, 1, 1, 1), "num_steps, sizes"),
])
def test_a_bound_set_by_another_argument_names_both(call, names):
    """The class of shift_mask's: an upper bound that is another argument's value names both arguments."""
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value).startswith(f"{names}: expected "), e.value


def test_loss_means_and_scales_at_the_top_of_the_range():
    """Found by the thorough fuzz (part 11/20): sft_loss(normalize='sequences') averaged per-sequence losses
    near finfo.max by their sum (+inf for a finite mean); cv_squared_loss returned alpha CV^2 = +inf at
    alpha = 1e308 (now a ValueError naming alpha)."""
    z = np.zeros((2, 3, 2))
    z[:, :, 0] = FMAX  # the target (token 1) has logit 0: each loss lse - z_1 = finfo.max
    tokens, resp = np.ones((2, 3), np.int64), np.ones((2, 3), bool)
    assert refimpl.losses.sft_loss(z, tokens, resp, normalize="sequences") == FMAX
    r = refimpl.moe.route(np.array([[5.0, 0.0, 0.0]] * 4), 1)
    with pytest.raises(ValueError, match=r"^alpha, routing: expected "):
        refimpl.moe.cv_squared_loss(r, alpha=1e308)


def test_rope_on_an_empty_head_axis_names_the_head_dim():
    """decode_definition(k with D = 0, rope=...) named rotary_dim, an argument the caller did not pass
    (found by the thorough fuzz, part 16/20)."""
    from refimpl import rope

    with pytest.raises(ValueError, match=r"^head_dim: expected an even head dim >= 2 for full rotary"):
        rope.check_rotary_dim(None, 0, "head_dim")


def test_norm_definition_names_weight_offset_and_takes_an_empty_batch():
    """norm_definition (found by the thorough fuzz, part 17/20): an output beyond float64 through
    weight_offset named only x, dy; an empty batch reached NumPy's reshape error (-1 is ambiguous for
    size 0). Now the offset is named and the empty batch gives an empty result, as group_norm does."""
    import warnings

    from refimpl import norms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"^x, weight, bias, weight_offset: expected the output within float64"):
            norms.norm_definition(np.array([[1.0, 0, 0, 0]]), np.ones(4), kind="rms", eps=1e-6, weight_offset=1e308)
    x = np.zeros((0, 4, 3))
    assert norms.norm_definition(x, kind="group", eps=1e-5, num_groups=2).shape == (0, 4, 3)
    assert norms.group_norm(x, num_groups=2, eps=1e-5).shape == (0, 4, 3)


def test_cv_squared_grad_at_the_top_of_its_range():
    """cv_squared_grad (found by the thorough fuzz, part 10/20): at max |x| ~ 1e150, n den^2 overflowed
    and the second term became inf / inf = NaN. Dividing by den twice gives the mpmath values
    (50 digits: 3.8233955393718706e-151, -1.2744651797906235e-150)."""
    from refimpl.moe.grads import cv_squared_grad

    got = cv_squared_grad(np.array([1e150, 3e149]))
    np.testing.assert_allclose(got, [3.8233955393718706e-151, -1.2744651797906235e-150], rtol=1e-14)
    np.testing.assert_allclose(cv_squared_grad(np.array([1.0, 3.0])), [-0.375, 0.125], rtol=1e-9)  # eps moves it 3e-11


def test_ring_attention_backward_refuses_gradients_beyond_float64():
    """ring_attention_backward (found by the thorough fuzz, part 12/20): dout at finfo.max made the
    ring steps' partial sums overflow, and -inf came out (gather admits -inf as 'hidden') or +inf was
    blamed on gather's parts[1]. Now a named refusal, as attention_backward refuses the same case."""
    import warnings

    import refimpl
    from refimpl.distributed import ring as R
    from refimpl.distributed import sharding as S

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 3, 1)) for _ in range(3))
    dout = np.full((1, 1, 3, 1), np.finfo(float).max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"^q, k, v, dout: expected a gradient summed over the ring steps"):
            R.ring_attention_backward(q, k, v, dout, S.contiguous(S.even_sizes(3, 2)))
        with pytest.raises(ValueError, match=r"within float64 range"):
            refimpl.attention_backward(q, k, v, dout)


@pytest.mark.parametrize("B, L", [(0, 3), (2, 0)])
def test_naive_attention_grads_name_their_sizes_for_an_empty_batch(B, L):
    """refimpl.testing._naive_attention_grads (issue 21 leftover): dk and dv were summed over the GQA
    groups through reshape(B, Hkv, G, Lk, -1), ambiguous for an empty batch (NumPy's "cannot reshape
    array of size 0"); with Lk = 0 the row max of an empty row was NumPy's zero-size reduction error.
    Both reshapes now name D and Dv: empty gradients of the input shapes."""
    from refimpl import testing as T

    rng = np.random.default_rng(0)
    q, dout = rng.standard_normal((B, 4, L, 3)), rng.standard_normal((B, 4, L, 5))
    k, v = rng.standard_normal((B, 2, L, 3)), rng.standard_normal((B, 2, L, 5))
    dq, dk, dv = T._naive_attention_grads(q, k, v, dout, np.ones((B, 4, L, L), bool), 0.5, None, None, "bfloat16")
    assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
    assert not (dq.size or dk.size or dv.size)


@pytest.mark.parametrize("check", ["assert_softmax_close", "assert_logsumexp_close"])
def test_lowp_softmax_checks_take_empty_rows(check):
    """refimpl.testing (issue 21 leftover): a row of length 0 at a precision below float64 reached
    NumPy's zero-size reduction error in the naive softmax; now it is a fully masked row (softmax
    entries: none, logsumexp -inf), as at float64."""
    from refimpl import testing as T

    x = np.zeros((3, 0))
    want = np.zeros((3, 0)) if check == "assert_softmax_close" else np.full(3, -np.inf)
    getattr(T, check)(want, x, precision="bfloat16")
    wrong = np.zeros(3) if check == "assert_logsumexp_close" else np.zeros((3, 1))  # lse 0; a row of 1 entry
    with pytest.raises(AssertionError):
        getattr(T, check)(wrong, x, precision="bfloat16")


def test_cost_flops_beyond_float64_is_a_value_error():
    """roofline.Cost: an int count of FLOPs from 2**1024 on made float() raise OverflowError before the
    range check could (whose message formatted the int as a float again). Now a ValueError naming flops."""
    from refimpl import roofline as R

    with pytest.raises(ValueError, match=r"^flops: expected a count within float64 range, got an int of 1025 bits"):
        R.Cost(2**1024, 1.0)
    assert R.Cost(int(np.finfo(float).max), 1.0).intensity == np.finfo(float).max


@pytest.mark.parametrize("b, dim", [(0, 4), (1, 0)])
def test_mamba_selective_scan_preset_takes_an_empty_batch_or_no_channels(b, dim):
    """mamba_selective_scan (issue 21's audit of reshape(..., -1) in refimpl/mixers/presets.py): A (D, N)
    reshaped to (G, D / G, -1) and the last state to (B, D, -1) reached NumPy's reshape error for D = 0
    or B = 0 (-1 is ambiguous for size 0). Both name N now: empty results of the documented shapes."""
    from refimpl.mixers import presets

    L, N = 3, 2
    u = np.zeros((b, dim, L))
    out, last = presets.mamba_selective_scan(u, u, -np.ones((dim, N)), np.zeros((b, N, L)), np.zeros((b, N, L)),
                                             return_last_state=True)
    assert out.shape == (b, dim, L) and last.shape == (b, dim, N)


def test_ssd_takes_no_heads_with_a_per_head_skip():
    """ssd's D (H,) was broadcast through reshape(H, -1): with H = 0 NumPy's reshape error reached the user.
    Now an empty result of the documented shapes."""
    from refimpl.mixers import ssm

    out, last = ssm.ssd(np.zeros((1, 0, 3, 2)), np.zeros((1, 0, 3)), np.zeros(0), np.zeros((1, 1, 3, 4)),
                        np.zeros((1, 1, 3, 4)), D=np.zeros(0))
    assert out.shape == (1, 0, 3, 2) and last.shape == (1, 0, 2, 4)


@pytest.mark.parametrize("precision", ["float64", "float32", "bfloat16"])
def test_attention_grads_bounds_take_an_empty_key_axis(precision):
    """Lk = 0 (every row sees no key: zero gradients) in any precision: the low-precision naive forward's row
    maximum had no identity (NumPy's zero-size reduction error reached the user; found by the formats helper)."""
    from refimpl import testing

    q, dout = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
    k = v = np.ones((1, 1, 0, 2))
    grads, bounds = testing.attention_grads_bounds(q, k, v, dout, precision=precision)
    assert all(not np.any(g) for g in grads) and all(np.isfinite(b) and b > 0 for b in bounds)


# ---------------------------------------------------------------------------
# issue 21 leftovers in the layers (reshape by named sizes; a refusal without NumPy's warnings)


def test_ffn_keep_mask_with_zero_hidden_width():
    """ffn / ffn_backward with d_ff = 0 and an activation keep-mask (B, 0): reshape(-1, 0) reached NumPy's
    "cannot reshape array of size 0". With the sizes named the FFN is the bias-free zero map: y = 0, dx = 0."""
    from refimpl import ffn

    p = ffn.MLPParams(np.zeros((3, 0)), np.zeros((0, 3)))
    x, keep = np.ones((2, 3)), np.zeros((2, 0), bool)
    assert ffn.ffn(x, p, activation="relu", keep_mask=keep, dropout_p=0.5).tolist() == [[0.0] * 3] * 2
    dx, grads = ffn.ffn_backward(x, np.ones((2, 3)), p, activation="relu", keep_mask=keep, dropout_p=0.5)
    assert dx.tolist() == [[0.0] * 3] * 2 and grads.W1.shape == (3, 0) and grads.W2.shape == (0, 3)


def test_causal_lm_loss_of_an_empty_sequence():
    """causal_lm_loss on L = 0 (found auditing issue 21's empty-batch reshapes): shift_labels gave one
    ignore_index label per row for a sequence with no position, and the loss failed on a (B,) target for
    (0, V) logits. Now no position has a label: the mean over no counted row is 0.0, its gradient empty."""
    z, tok = np.zeros((2, 0, 4)), np.zeros((2, 0), int)
    assert losses.shift_labels(tok).shape == (2, 0) and losses.shift_right(tok, 1).shape == (2, 0)
    assert losses.causal_lm_loss(z, tok) == 0.0
    assert losses.causal_lm_loss_grad(z, tok).shape == (2, 0, 4)
    assert losses.output_z_loss(z, tok) == 0.0
    assert losses.shift_labels(np.array([[5]])).tolist() == [[-100]]  # L = 1: the one label is ignored
    assert losses.shift_right(np.array([[5]]), 1).tolist() == [[1]]


@pytest.mark.parametrize("x, kw, names", [
    (np.array([[1e200, -1e200]]), dict(kind="layer", eps=1e-5), "x"),  # x^2 overflows: was silently 0
    (np.array([[1e200, 3e200]]), dict(kind="rms", eps=1e-5), "x"),
    (np.array([[1.0, 1.0]]), dict(kind="layer", eps=0.0), "x, eps"),  # 1 / sqrt(0): was a divide warning
    (np.zeros((1, 2)), dict(kind="rms", eps=0.0, dy=np.ones((1, 2))), "x, eps"),
])
def test_norm_definition_refuses_without_numpy_warnings(x, kw, names):
    """norm_definition (issue 21): eps = 0 on a zero-variance group printed NumPy's divide-by-zero and
    invalid-value warnings before its refusal, and a variance beyond float64 (|x| ~ 1e200) returned zeros
    after an overflow warning. Now both are named refusals, checked before r is formed, with no warning."""
    import warnings

    from refimpl import norms

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^{re.escape(names)}: expected "):
            norms.norm_definition(x, **kw)
    np.testing.assert_allclose(norms.layer_norm(np.array([[1e200, -1e200]]), eps=1e-5), [[1.0, -1.0]])  # the fast form


def test_apply_sinks_names_its_arguments():
    """apply_sinks read out and lse with np.asarray: a 1-D lse was an IndexError, a str NumPy's conversion
    error, a NaN lse went through, a mismatched lse NumPy's broadcast error. Now each is named; -inf (a row
    with no visible key) is accepted and gives lse = s_h, out = 0."""
    from refimpl import sinks

    out, lse, s = np.ones((1, 2, 3, 4)), np.zeros((1, 2, 3)), np.zeros(2)
    for args, err, names in [((out, np.ones(3), s), ValueError, "lse"), (("a", lse, s), TypeError, "out"),
                             ((out, np.full((1, 2, 3), np.nan), s), ValueError, "lse"),
                             ((out, np.zeros((1, 2, 5)), s), ValueError, "lse"), ((out, lse, np.zeros(3)), ValueError, "sinks")]:
        with pytest.raises(err, match=rf"^{names}: expected "):
            sinks.apply_sinks(*args)
    o, l = sinks.apply_sinks(out, np.full((1, 2, 3), -np.inf), np.array([0.5, -1.0]))
    assert not o.any() and l[0, :, 0].tolist() == [0.5, -1.0]


def test_softmax_across_the_whole_range_warns_nothing():
    """x - max(x) overflows only towards -inf (exact: its exp underflows to 0 too), so softmax and logsumexp of
    [-finfo.max, finfo.max] are [0, 1] and finfo.max without a RuntimeWarning (training_loss's z-loss printed
    one; found by the fuzz run with warnings as errors)."""
    import warnings

    from refimpl.softmax import softmax_and_logsumexp

    big = np.finfo(np.float64).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, lse = softmax_and_logsumexp(np.array([-big, big]))
    assert p.tolist() == [0.0, 1.0] and lse == big


def test_importance_loss_refuses_an_overflowing_column_sum_by_name_without_a_warning():
    """Finite gates whose column sum (the importance) is beyond float64: a ValueError naming gates and
    saying what overflowed, with no RuntimeWarning from the sum first (seen with -W error)."""
    import warnings

    from refimpl.moe.losses import importance_loss

    big = np.finfo(np.float64).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^gates: expected column sums"):
            importance_loss(np.array([[big, 1.0], [big, 0.0]]))
        assert importance_loss(np.array([[0.25, 0.75], [0.75, 0.25]])) == 0.0


@pytest.mark.parametrize("call, names", [
    (lambda big: refimpl.mixers.ssm.causal_conv1d(np.full((1, 1, 3, 1), big), np.full((1, 1, 2), 2.0)),
     "x, weight, bias"),
    (lambda big: refimpl.mixers.linear_attention.favor_features(np.full((1, 1, 2, 4), 1e150), np.full((3, 4), big),
                                                                 is_query=True), "x, W"),
    (lambda big: refimpl.mixers.linear_attention.favor_features(np.full((1, 1, 2, 4), big), np.ones((3, 4)),
                                                                 is_query=True), "x, W"),
])
def test_overflowing_conv_and_favor_bounds_are_refused_without_a_warning(call, names):
    """An overflow in causal_conv1d's sum or in the FAVOR+ logit bound (|x| |w| beyond float64) is
    the named ValueError, with no RuntimeWarning first (seen in the contract fuzz)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=re.escape(names)):
            call(np.finfo(np.float64).max)


@pytest.mark.parametrize("left", [2**63, 2**62, 10**9])
def test_a_ring_cache_too_large_for_its_window_names_window(left):
    """make_cache("ring", window=(left, 0)) sizes the ring from the window: beyond int64's slot count or
    the work budget the refusal names window, which the caller passed, not the ring's capacity (found by
    the thorough fuzz: window = (2**63, 0) named capacity)."""
    from refimpl import kv_cache as KV

    with pytest.raises(ValueError, match=r"^window"):
        KV.make_cache("ring", 2, 4, 4, window=(left, 0))


@pytest.mark.parametrize("left", [2**63, 2**63 - 1, 10**30])
def test_decode_step_takes_a_window_wider_than_int64(left):
    """A valid window (left, 0) beyond int64 (found by the thorough fuzz: window = (2**63, 0) raised
    OverflowError from the single-pass step's mask, p - left) hides nothing on a short cache: the same
    output as no window."""
    from refimpl import kv_cache as KV

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 2, 4)) for _ in range(3))
    outs = []
    for window in (None, (left, 0)):
        cache = KV.make_cache("contiguous", 2, 4, 4, batch=1, window=window)
        outs.append(KV.decode_step(q, k, v, cache, window=window))
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------
# found by the thorough fuzz on this round's final code (parts 3, 6, 7, 12 of 20)


@pytest.mark.parametrize("form_call", [
    lambda q, k, v, c: refimpl.mixers.performer_attention(q, k, v, np.ones((4, 3)), form="chunked", chunk_size=c),
    lambda q, k, v, c: linear_attention.linear_attention(q, k, v, form="chunked", chunk_size=c),
    lambda q, k, v, c: gated.retention(q, k, v, form="chunked", chunk_size=c),
    lambda q, k, v, c: refimpl.mixers.delta_rule_attention(q, k / np.linalg.norm(k, axis=-1, keepdims=True), v,
                                                          np.full(q.shape[:3], 0.5), form="chunked", chunk_size=c),
])
def test_a_chunk_longer_than_the_sequence_is_the_sequence(form_call):
    """chunk_size = 2**40 on L = 5: the batched chunked forms padded the sequence to one chunk of 2**40 tokens
    (MemoryError, 8 TiB); a chunk beyond L is the sequence, the result equal to chunk_size = L."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 5, 3)) for _ in range(3))
    got = form_call(q, k, v, 2**40)
    want = form_call(q, k, v, 5)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(g, w)


def test_roofline_names_the_sizes_of_an_empty_problem():
    from refimpl import roofline

    with pytest.raises(ValueError, match=r"^Lq, Lk, D, Dv, batch, heads_q: expected a problem that moves data"):
        roofline.attention_cost(0, 4, 2)


def test_gpu_paged_attention_refuses_an_empty_head_dim_by_name():
    """v_pool with Dv = 0 reached OpenCL's create_buffer (LogicError INVALID_BUFFER_SIZE)."""
    _opencl()
    import gpu

    q, kp = np.ones((1, 1, 1, 2)), np.ones((2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"^q, v_pool: expected head dims D, Dv >= 1, got D = 2, Dv = 0$"):
        gpu.paged_attention(q, kp, np.ones((2, 1, 2, 0)), np.array([[0, 1]]), np.array([3]), backend="opencl")


@pytest.mark.parametrize("call, names", [
    (lambda gpu: gpu.rms_norm(np.ones((1, 4)), np.ones(4), weight_offset=1e308, backend="opencl"), "weight_offset"),
    (lambda gpu: gpu.rms_norm(np.array([[1.0, -1.0]]), np.full(2, 3e38), weight_offset=3e38, backend="opencl"),
     "x, weight, weight_offset"),
    (lambda gpu: gpu.layer_norm(np.array([[1.0, -1.0]]), np.full(2, 3e38), np.full(2, 3e38), backend="opencl"),
     "x, weight, bias"),
])
def test_gpu_norms_refuse_outputs_beyond_float32_by_name(call, names):
    """weight_offset = 1e308 became inf in float32 and the output +-inf; a weight and offset near float32's top
    overflow the product: a ValueError naming the arguments, never inf."""
    _opencl()
    import gpu

    with pytest.raises(ValueError, match="^" + re.escape(names) + ": expected "):
        call(gpu)


def test_moe_vjp_refuses_gradients_beyond_float64_by_name():
    """router_weight at finfo.max with a tiny x: z is moderate, but dx = dz W is beyond float64 (the old code
    returned -inf; the thorough fuzz, part 18, scaled router_weight to the top of the range)."""
    big = np.finfo(np.float64).max
    experts = moe.random_experts(2, 2, 3, seed=0)
    x, W, dy = np.array([[1e-308, 1.0]]), np.array([[big, 0.0], [-big, 0.0]]), np.array([[1e3, -1e3]])
    with pytest.raises(ValueError, match=r"^x, router_weight, experts, dy: expected gradients dx within float64"):
        moe.moe_vjp(x, W, experts, 1, dy)
    dx, dz, dW = moe.moe_vjp(x, np.array([[1.0, 0.0], [-1.0, 0.0]]), experts, 1, dy)
    assert np.isfinite(dx).all() and np.isfinite(dz).all() and np.isfinite(dW).all()


def test_dino_loss_refuses_a_loss_beyond_float64_by_name():
    """A student row [finfo.max, -finfo.max] at temperature 1: its log-probability -2 finfo.max is beyond
    float64 and the loss was +inf (the thorough fuzz, part 20, scaled student_output to the top of the range)."""
    from refimpl import vision_objectives as VO

    big = np.finfo(np.float64).max
    s = np.array([[big, -big], [1.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    t, c = np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros(2)
    with pytest.raises(ValueError, match=r"^student_output, student_temp, teacher_output, center: expected the loss"):
        VO.dino_loss(s, t, c, n_crops=4, student_temp=1.0)
    assert np.isfinite(VO.dino_loss(s / 1e300, t, c, n_crops=4, student_temp=1.0))
